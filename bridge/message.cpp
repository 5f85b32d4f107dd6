// Frees the messages that enl_guard hands to Rust.
#include <cstdlib>

extern "C" void enl_free_message(char* message) { std::free(message); }

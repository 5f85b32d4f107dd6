// Frees the messages that enl_guard hands to Rust; and the one libstdc++ symbol the bridge would
// otherwise need from a newer libstdc++ than the GPU validation machine has.
#include <cstdlib>
#include <new>

extern "C" void enl_free_message(char* message) { std::free(message); }

// g++ 12's std::allocator throws through std::__throw_bad_array_new_length, which libstdc++
// exports only from GLIBCXX_3.4.29; the validation machine stops at 3.4.26 (TOOLCHAIN.md). This
// object is always linked (Rust calls enl_free_message), so its definition wins over the versioned
// one and the binaries keep to 3.4.26. It throws what libstdc++'s own does.
namespace std {
[[noreturn]] void __throw_bad_array_new_length() { throw std::bad_array_new_length(); }
}  // namespace std

// The one rule of the bridge: no C++ exception crosses into Rust. Every exported function runs
// its body through enl_guard, which turns an exception into a return code and a message that
// Rust takes over (and frees with enl_free_message).
#pragma once

#include <c10/util/Exception.h>

#include <cstdlib>
#include <cstring>
#include <exception>
#include <string>

namespace enlighten {

// A malloc'ed copy, so Rust can hand it back to enl_free_message whatever allocator C++ uses.
inline char* copy_message(const std::string& text) {
    char* out = static_cast<char*>(std::malloc(text.size() + 1));
    if (out != nullptr) std::memcpy(out, text.c_str(), text.size() + 1);
    return out;
}

// Runs `body`; returns 0, or 1 with *message set (c10::Error without its C++ backtrace).
template <class Body>
int enl_guard(char** message, Body&& body) noexcept {
    *message = nullptr;
    try {
        body();
        return 0;
    } catch (const c10::Error& e) {
        *message = copy_message(e.what_without_backtrace());
    } catch (const std::exception& e) {
        *message = copy_message(e.what());
    } catch (...) {
        *message = copy_message("unknown C++ exception");
    }
    return 1;
}

}  // namespace enlighten

// Page-locked host memory for non-blocking uploads, asked of libtorch without naming a device:
// tch exposes only Tensor::is_pinned(device) and pin_memory(device), whose device argument
// libtorch deprecated and warns about on every call (thousands of lines in a trainer's log).
#include <ATen/ATen.h>

#include "guard.h"

// *out = `t` itself when its memory is pinned already, else a pinned copy; a new tensor owned
// by the caller.
extern "C" int enl_pinned(const at::Tensor* t, at::Tensor** out, char** message) noexcept {
    return enlighten::enl_guard(message, [&] { *out = new at::Tensor(t->is_pinned() ? *t : t->pin_memory()); });
}

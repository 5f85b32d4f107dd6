// UBSan's checks in emulated kernels: build.rs compiles the kernels with
// -fsanitize=alignment,signed-integer-overflow and links no UBSan runtime; these are the
// handlers the compiler calls (GCC's and Clang's data layouts), and each fails the launch with
// the kernel's source line, as the checker's reports do. A GPU traps on a misaligned access; a
// signed overflow is undefined behaviour nvcc may optimise on.
#include <stdint.h>
#include <stdio.h>

#include "checker.h"

namespace {

struct SourceLocation {
    const char* file;
    uint32_t line, column;
};

// The type's name comes quoted: 'int'.
struct TypeDescriptor {
    uint16_t kind, info;
    char name[1];
};

struct TypeMismatchData {
    SourceLocation loc;
    const TypeDescriptor* type;
    unsigned char log_alignment, type_check_kind;
};

struct OverflowData {
    SourceLocation loc;
    const TypeDescriptor* type;
};

void overflow(const OverflowData* d, const char* op) {
    if (emu::in_kernel())
        emu::fail_running("signed integer overflow in %s of %s at %s:%u:%u (undefined behaviour)", op, d->type->name,
                          d->loc.file, d->loc.line, d->loc.column);
}

}  // namespace

extern "C" {
void __ubsan_handle_type_mismatch_v1(const TypeMismatchData* d, uintptr_t ptr) {
    if (!emu::in_kernel()) return;
    const uintptr_t align = uintptr_t(1) << d->log_alignment;
    if (ptr == 0)
        emu::fail_running("null pointer used as %s at %s:%u:%u", d->type->name, d->loc.file, d->loc.line,
                          d->loc.column);
    else if (ptr & (align - 1))
        emu::fail_running("misaligned access at %s:%u:%u: address 0x%llx as %s, which needs %llu-byte alignment",
                          d->loc.file, d->loc.line, d->loc.column, (unsigned long long)ptr, d->type->name,
                          (unsigned long long)align);
}
void __ubsan_handle_add_overflow(const OverflowData* d, uintptr_t, uintptr_t) { overflow(d, "+"); }
void __ubsan_handle_sub_overflow(const OverflowData* d, uintptr_t, uintptr_t) { overflow(d, "-"); }
void __ubsan_handle_mul_overflow(const OverflowData* d, uintptr_t, uintptr_t) { overflow(d, "*"); }
void __ubsan_handle_negate_overflow(const OverflowData* d, uintptr_t) { overflow(d, "negation"); }
void __ubsan_handle_divrem_overflow(const OverflowData* d, uintptr_t, uintptr_t) { overflow(d, "/ or %"); }
}

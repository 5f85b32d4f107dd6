// The CUDA execution model for host compilers, so that kernels/*.cu compile unchanged as C++ and
// run on the CPU (emulator/build.rs). Included before the kernels; runtime.cpp and checker.cpp
// implement what is declared here.
//
// - Qualifiers: __global__, __device__, __host__ and __forceinline__ become plain C++;
//   __shared__ variables become statics in the section `emu_shared`, each after a red zone of
//   EMU_RED_ZONE bytes (build.rs compiles with -fno-toplevel-reorder, so the section holds them
//   in declaration order and ends with a red zone; it reads the layout from the object file).
//   The runtime poisons the section before each block (a block reads nothing another block or
//   launch left behind); the checker refuses any access to a red zone.
// - Dynamic shared memory: kernels take it through dynamic_shared<T>() (kernels/common.cuh), which
//   here returns the launch's own buffer: as many bytes as the launch asked for, ending at an
//   inaccessible guard page and poisoned before each block; the checker refuses the bytes
//   between its end and the page, and those before its start.
// - __launch_bounds__ compiles to nothing here: the bound is data of the kernel's entry, read by
//   build.rs from the PTX the GPU compiler makes of the same source (with ptxas's registers and
//   static shared memory), and the launch rules (emulator/src/rules.rs) refuse a larger block.
// - Built-in variables: globals the scheduler sets before it resumes each thread's fiber.
// - Barriers and warp primitives: calls into the scheduler; the calling fiber waits there until
//   every thread the primitive names has arrived, and exchanges values on release.
// - Loads and stores: the kernels' translation unit is compiled with GCC's ThreadSanitizer
//   instrumentation, whose hooks (checker.cpp, not libtsan) see every access; see checker.cpp.
// - Atomics: plain read-modify-writes (one OS thread runs every fiber, and a fiber is never
//   interrupted between two barriers), announced to the checker as atomic and themselves not
//   instrumented.
// - Intrinsics: host definitions. The _rn arithmetic is exact (IEEE round-to-nearest, and the
//   build passes -ffp-contract=off); __expf and friends are the libm functions, so results can
//   differ from a GPU's approximations in the last bits.
#pragma once

#include <cuda_runtime_api.h>  // vector types: uint3, dim3, uint4, make_uint4
#include <cuda_bf16.h>         // host-mode conversions for __half and __nv_bfloat16
#include <cuda_fp16.h>
#include <math.h>
#include <stdint.h>
#include <string.h>

#include <type_traits>

#undef __global__
#undef __device__
#undef __host__
#undef __shared__
#undef __forceinline__
#undef __noinline__
#undef __launch_bounds__
#define __global__
#define __device__
#define __host__
#define __forceinline__ inline __attribute__((always_inline))
#define __noinline__ __attribute__((noinline))
#define __launch_bounds__(...)
#define EMU_CAT2(a, b) a##b
#define EMU_CAT(a, b) EMU_CAT2(a, b)
#define EMU_RED_ZONE 32
// A red zone of the shared memory section: build.rs finds it by its name.
#define EMU_SHARED_RED_ZONE \
    __attribute__((section("emu_shared"), used, unused)) static char EMU_CAT(emu_red_zone_, __COUNTER__)[EMU_RED_ZONE];
#define __shared__ EMU_SHARED_RED_ZONE __attribute__((section("emu_shared"))) static

extern uint3 threadIdx;
extern uint3 blockIdx;
extern dim3 blockDim;
extern dim3 gridDim;
static constexpr int warpSize = 32;

namespace emu {

// What a warp-level call asks of the scheduler.
enum class Exchange : int { SyncWarp, ShflIdx, ShflUp, ShflDown, ShflXor, Ballot, Any, All, MatchAny };

// Waits until every live thread of the block is at a block barrier (the site names the line).
void sync_block(const char* file, int line);
// Waits until every lane of `mask` is at the same warp call; returns the lane's result bits.
uint64_t exchange(Exchange op, unsigned mask, uint64_t value, int arg, int width, const char* file, int line);
// The mask of this warp's lanes that have not exited.
unsigned active_mask();
// The block's dynamic shared memory (null when the launch asked for none).
void* dynamic_shared();

template <typename T>
uint64_t bits_of(T v) {
    static_assert(std::is_trivially_copyable<T>::value && sizeof(T) <= 8, "warp exchanges move up to 8 bytes");
    uint64_t b = 0;
    memcpy(&b, &v, sizeof(T));
    return b;
}

template <typename T>
T from_bits(uint64_t b) {
    T v;
    memcpy(&v, &b, sizeof(T));
    return v;
}

// A call site (file, line) that the warp primitives carry into the scheduler's messages.
struct Site {
    const char* file;
    int line;
    template <typename T>
    T shuffle(Exchange op, unsigned mask, T v, int arg, int width) const {
        return from_bits<T>(exchange(op, mask, bits_of(v), arg, width, file, line));
    }
    template <typename T> T shfl(unsigned mask, T v, int lane, int width = 32) const {
        return shuffle(Exchange::ShflIdx, mask, v, lane, width);
    }
    template <typename T> T shfl_up(unsigned mask, T v, unsigned delta, int width = 32) const {
        return shuffle(Exchange::ShflUp, mask, v, (int)delta, width);
    }
    template <typename T> T shfl_down(unsigned mask, T v, unsigned delta, int width = 32) const {
        return shuffle(Exchange::ShflDown, mask, v, (int)delta, width);
    }
    template <typename T> T shfl_xor(unsigned mask, T v, int lanes, int width = 32) const {
        return shuffle(Exchange::ShflXor, mask, v, lanes, width);
    }
    unsigned vote(Exchange op, unsigned mask, int pred) const {
        return (unsigned)exchange(op, mask, pred != 0 ? 1 : 0, 0, 32, file, line);
    }
    void syncwarp(unsigned mask = 0xffffffffu) const { exchange(Exchange::SyncWarp, mask, 0, 0, 32, file, line); }
    template <typename T> unsigned match_any(unsigned mask, T v) const {
        return (unsigned)exchange(Exchange::MatchAny, mask, bits_of(v), 0, 32, file, line);
    }
};

}  // namespace emu

// Kernel code that must differ on the host (kernels/common.cuh: dynamic_shared<T>() asks the
// emulator instead of declaring an extern array; exp2_ftz is exp2f, not inline PTX) tests this.
#define ENLIGHTEN_EMULATED 1

#define EMU_SITE (::emu::Site{__FILE__, __LINE__})
#define __syncthreads() ::emu::sync_block(__FILE__, __LINE__)
#define __syncwarp(...) EMU_SITE.syncwarp(__VA_ARGS__)
#define __shfl_sync(...) EMU_SITE.shfl(__VA_ARGS__)
#define __shfl_up_sync(...) EMU_SITE.shfl_up(__VA_ARGS__)
#define __shfl_down_sync(...) EMU_SITE.shfl_down(__VA_ARGS__)
#define __shfl_xor_sync(...) EMU_SITE.shfl_xor(__VA_ARGS__)
#define __ballot_sync(mask, pred) EMU_SITE.vote(::emu::Exchange::Ballot, mask, pred)
#define __any_sync(mask, pred) ((int)EMU_SITE.vote(::emu::Exchange::Any, mask, pred))
#define __all_sync(mask, pred) ((int)EMU_SITE.vote(::emu::Exchange::All, mask, pred))
#define __match_any_sync(...) EMU_SITE.match_any(__VA_ARGS__)
#define __activemask() ::emu::active_mask()

// Memory ordering: one thread of execution at a time, so fences only stop compiler reordering.
inline void __threadfence() { __atomic_signal_fence(__ATOMIC_SEQ_CST); }
inline void __threadfence_block() { __atomic_signal_fence(__ATOMIC_SEQ_CST); }

// ---- atomics ---------------------------------------------------------------------------------
// Each tells the checker it is atomic and then updates uninstrumented (noinline, so that its
// plain load and store are never inlined into instrumented code).
extern "C" void emu_atomic_access(const void* address, unsigned size);
#define EMU_ATOMIC template <typename T> __attribute__((noinline, no_sanitize_thread)) T
EMU_ATOMIC atomicAdd(T* a, T v) { emu_atomic_access(a, sizeof(T)); const T old = *a; *a = old + v; return old; }
EMU_ATOMIC atomicSub(T* a, T v) { emu_atomic_access(a, sizeof(T)); const T old = *a; *a = old - v; return old; }
EMU_ATOMIC atomicExch(T* a, T v) { emu_atomic_access(a, sizeof(T)); const T old = *a; *a = v; return old; }
EMU_ATOMIC atomicMax(T* a, T v) { emu_atomic_access(a, sizeof(T)); const T old = *a; *a = old < v ? v : old; return old; }
EMU_ATOMIC atomicMin(T* a, T v) { emu_atomic_access(a, sizeof(T)); const T old = *a; *a = v < old ? v : old; return old; }
EMU_ATOMIC atomicOr(T* a, T v) { emu_atomic_access(a, sizeof(T)); const T old = *a; *a = old | v; return old; }
EMU_ATOMIC atomicAnd(T* a, T v) { emu_atomic_access(a, sizeof(T)); const T old = *a; *a = old & v; return old; }
EMU_ATOMIC atomicCAS(T* a, T cmp, T v) {
    emu_atomic_access(a, sizeof(T));
    const T old = *a;
    if (old == cmp) *a = v;
    return old;
}
#undef EMU_ATOMIC

// ---- intrinsics ------------------------------------------------------------------------------
inline float __fadd_rn(float a, float b) { return a + b; }
inline float __fsub_rn(float a, float b) { return a - b; }
inline float __fmul_rn(float a, float b) { return a * b; }
inline float __fdiv_rn(float a, float b) { return a / b; }
inline float __frcp_rn(float a) { return 1.0f / a; }
inline float __fsqrt_rn(float a) { return sqrtf(a); }
inline float __fmaf_rn(float a, float b, float c) { return fmaf(a, b, c); }
inline double __dadd_rn(double a, double b) { return a + b; }
inline double __dmul_rn(double a, double b) { return a * b; }
inline float __expf(float a) { return expf(a); }
inline float __logf(float a) { return logf(a); }
inline float __log2f(float a) { return log2f(a); }
inline float __exp2f(float a) { return exp2f(a); }
inline float __fdividef(float a, float b) { return a / b; }
inline float __saturatef(float a) { return a != a ? 0.0f : (a < 0.0f ? 0.0f : (a > 1.0f ? 1.0f : a)); }
inline unsigned __float_as_uint(float v) { return emu::from_bits<unsigned>(emu::bits_of(v)); }
inline float __uint_as_float(unsigned v) { return emu::from_bits<float>(emu::bits_of(v)); }
inline int __float_as_int(float v) { return emu::from_bits<int>(emu::bits_of(v)); }
inline float __int_as_float(int v) { return emu::from_bits<float>(emu::bits_of(v)); }
inline long long __double_as_longlong(double v) { return emu::from_bits<long long>(emu::bits_of(v)); }
inline double __longlong_as_double(long long v) { return emu::from_bits<double>(emu::bits_of(v)); }
inline int __popc(unsigned v) { return __builtin_popcount(v); }
inline int __popcll(unsigned long long v) { return __builtin_popcountll(v); }
inline int __clz(unsigned v) { return v == 0 ? 32 : __builtin_clz(v); }
inline int __clzll(unsigned long long v) { return v == 0 ? 64 : __builtin_clzll(v); }
inline int __ffs(unsigned v) { return __builtin_ffs((int)v); }
inline int __ffsll(unsigned long long v) { return __builtin_ffsll((long long)v); }
template <typename T> inline T __ldg(const T* p) { return *p; }

// Shared device helpers: dtype conversion, 16-byte packs, grid-stride loops.
#pragma once
#include <cuda_bf16.h>
#include <cuda_fp16.h>

#include "prelude.cuh"  // fixed-width integers, NAN, INFINITY (libc headers, or NVRTC's stand-ins)

#include "kernel_constants.cuh"  // generated from kernels/constants.txt (PAIR_*, DT_*, table widths)

// Reads and writes happen in the storage type; all arithmetic is f32.
__device__ __forceinline__ float to_f32(float v) { return v; }
__device__ __forceinline__ float to_f32(__half v) { return __half2float(v); }
__device__ __forceinline__ float to_f32(__nv_bfloat16 v) { return __bfloat162float(v); }
__device__ __forceinline__ float to_f32(uint8_t v) { return (float)v; }

template <typename T> __device__ __forceinline__ T from_f32(float v);
template <> __device__ __forceinline__ float from_f32<float>(float v) { return v; }
template <> __device__ __forceinline__ __half from_f32<__half>(float v) { return __float2half_rn(v); }
template <> __device__ __forceinline__ __nv_bfloat16 from_f32<__nv_bfloat16>(float v) {
    return __float2bfloat16_rn(v);
}

// N elements moved as one aligned load/store (16 bytes for f32 x4, f16/bf16 x8).
template <typename T, int N> struct alignas(sizeof(T) * N) Pack {
    T v[N];
};

// A span of `len` elements starting at `start`, cut for 16-byte packs of N: [0, head) and
// [tail, len) are taken one element at a time, the `packs` packs between them are aligned. A
// row of a [B, C] tensor whose C is not a multiple of N starts inside a pack, so its head
// depends on the row; with N == 1 everything is packs.
struct PackSplit {
    int64_t head, packs, tail;
};

template <typename T, int N>
__device__ __forceinline__ PackSplit split_packs(const T* start, int64_t len) {
    const int64_t into_pack = (int64_t)((reinterpret_cast<uintptr_t>(start) / sizeof(T)) % N);
    const int64_t head = (N - into_pack) % N < len ? (N - into_pack) % N : len;
    const int64_t packs = (len - head) / N;
    return {head, packs, head + packs * N};
}

// The block's dynamic shared memory (the launch's shared_mem_bytes), 16-byte aligned. The
// emulator (emulator/cuda_emu.h) hands out its own guarded buffer instead of an extern array.
template <typename T>
__device__ __forceinline__ T* dynamic_shared() {
#ifdef ENLIGHTEN_EMULATED
    return static_cast<T*>(emu::dynamic_shared());
#else
    extern __shared__ __align__(16) unsigned char dynamic_smem[];
    return reinterpret_cast<T*>(dynamic_smem);
#endif
}

// 2^x with results below 2^-126 flushed to zero: one MUFU.EX2, where __expf without -ftz wraps
// it in a five-instruction scaling for denormal results. A term that small changes no softmax
// sum. The emulator computes exp2f (its denormals survive: a last-bits difference, like any
// intrinsic's there).
__device__ __forceinline__ float exp2_ftz(float x) {
#ifdef ENLIGHTEN_EMULATED
    return exp2f(x);
#else
    float y;
    asm("ex2.approx.ftz.f32 %0, %1;" : "=f"(y) : "f"(x));
    return y;
#endif
}

// a * x + b * y with each product and the sum rounded separately, exactly as the tch composite
// `x * lam + xp * (1 - lam)` computes it; the _rn intrinsics stop nvcc contracting it into an FMA.
__device__ __forceinline__ float blend(float x, float lam, float xp, float one_minus_lam) {
    return __fadd_rn(__fmul_rn(x, lam), __fmul_rn(xp, one_minus_lam));
}

// Partner of row i under the three pairings. Returns -1 for an out-of-range permutation entry
// so the caller can write NaN instead of reading out of bounds.
__device__ __forceinline__ int64_t partner_of(int64_t i, int64_t B, int mode, const int64_t* perm,
                                              int64_t shift) {
    if (mode == PAIR_FLIP) return B - 1 - i;
    if (mode == PAIR_ROLL) return ((i - shift) % B + B) % B;
    const int64_t p = perm[i];
    return (p >= 0 && p < B) ? p : -1;
}

// Sample i's lambda: a per-sample vector when given, else the batch scalar.
// one_minus_lam for the batch scalar comes from the host (f32(1 - lam) in f64, like tch's scalar
// op); for per-sample lambdas it is 1 - lam_i in f32, like the tch tensor op.
struct LamPair {
    float lam, one_minus;
};
__device__ __forceinline__ LamPair lambda_of(int64_t i, const float* lam_vec, float lam, float one_minus) {
    if (lam_vec == nullptr) return {lam, one_minus};
    const float l = lam_vec[i];
    return {l, __fsub_rn(1.0f, l)};
}

// Block-wide reductions and scans in a fixed order, so results are identical run to run.
#pragma once
#include <math.h>
#include <stdint.h>

#define FULL_MASK 0xffffffffu

// Softmax statistics of a set of logits: max m, `rest` = sum of exp(v - m) minus the max's own
// term 1 (so log1p(rest) keeps small losses precise; a set without a finite-or-+inf value has
// rest = -1), the sum of the values above -inf, whether a NaN and whether a -inf was seen, and
// the first index of the largest value (comparisons with `>`, so NaN never wins). -inf values
// (masked logits) add nothing to m, rest and sum, so the statistics do not depend on how a row
// is split between threads.
enum RowFlags : int { ROW_NAN = 1, ROW_NEG_INF = 2 };
struct RowStats {
    float m, rest, sum;
    int flags;  // RowFlags seen
    float best;
    int64_t arg;
};

__device__ __forceinline__ RowStats row_stats_identity() {
    return {-INFINITY, -1.0f, 0.0f, 0, -INFINITY, INT64_MAX};
}

// exp(a - m) that treats a == m (also +-inf) as exp(0) = 1 rather than NaN.
__device__ __forceinline__ float exp_shift(float a, float m) {
    return (a == m) ? 1.0f : __expf(a - m);
}

__device__ __forceinline__ bool row_stats_empty(const RowStats& r) { return r.rest == -1.0f && r.m == -INFINITY; }

// N values of one row at once (a 16-byte pack, columns c0 .. c0 + N - 1): the pack's maximum
// first, so the running statistics are rescaled at most once per pack, not once per new maximum.
template <int N>
__device__ __forceinline__ RowStats row_stats_push_pack(RowStats r, const float (&v)[N], int64_t c0) {
    float pm = -INFINITY;
#pragma unroll
    for (int k = 0; k < N; ++k) {
        const float x = v[k];
        if (isnan(x)) {
            r.flags |= ROW_NAN;
            continue;
        }
        if (x == -INFINITY) r.flags |= ROW_NEG_INF;
        else r.sum += x;
        pm = x > pm ? x : pm;
        if (x > r.best || (x == r.best && c0 + k < r.arg)) {
            r.best = x;
            r.arg = c0 + k;
        }
    }
    bool skip_max = false;  // whether the pack's first maximum is the new max's own (excluded) 1
    if (pm > r.m) {
        const float e = (r.m == -INFINITY) ? 0.0f : __expf(r.m - pm);
        r.rest = row_stats_empty(r) ? 0.0f : r.rest * e + e;
        r.m = pm;
        skip_max = true;
    }
#pragma unroll
    for (int k = 0; k < N; ++k) {
        const float x = v[k];
        if (isnan(x) || x == -INFINITY) continue;
        if (skip_max && x == r.m) {
            skip_max = false;
            continue;
        }
        r.rest += exp_shift(x, r.m);
    }
    return r;
}

__device__ __forceinline__ RowStats row_stats_merge(RowStats a, RowStats b) {
    RowStats r;
    if (row_stats_empty(b) || row_stats_empty(a)) {
        const bool keep_a = row_stats_empty(b);
        r.m = keep_a ? a.m : b.m;
        r.rest = keep_a ? a.rest : b.rest;
    } else {
        // Selected by value, not by reference: a reference to either struct would put both on the stack.
        const bool a_hi = a.m >= b.m;
        const float hi_m = a_hi ? a.m : b.m, lo_m = a_hi ? b.m : a.m;
        const float hi_rest = a_hi ? a.rest : b.rest, lo_rest = a_hi ? b.rest : a.rest;
        const float e = exp_shift(lo_m, hi_m);
        r.m = hi_m;
        r.rest = hi_rest + (lo_rest * e + e);
    }
    r.sum = a.sum + b.sum;
    r.flags = a.flags | b.flags;
    const bool take_b = b.best > a.best || (b.best == a.best && b.arg < a.arg);
    r.best = take_b ? b.best : a.best;
    r.arg = take_b ? b.arg : a.arg;
    return r;
}

__device__ __forceinline__ RowStats row_stats_shfl(RowStats r, int offset) {
    RowStats o;
    o.m = __shfl_down_sync(FULL_MASK, r.m, offset);
    o.rest = __shfl_down_sync(FULL_MASK, r.rest, offset);
    o.sum = __shfl_down_sync(FULL_MASK, r.sum, offset);
    o.flags = __shfl_down_sync(FULL_MASK, r.flags, offset);
    o.best = __shfl_down_sync(FULL_MASK, r.best, offset);
    o.arg = __shfl_down_sync(FULL_MASK, r.arg, offset);
    return o;
}

// The two kinds of value the block reductions combine: softmax statistics and plain sums.
__device__ __forceinline__ RowStats reduce_merge(RowStats a, RowStats b) { return row_stats_merge(a, b); }
__device__ __forceinline__ double reduce_merge(double a, double b) { return a + b; }
__device__ __forceinline__ RowStats shfl_down(RowStats v, int offset) { return row_stats_shfl(v, offset); }
__device__ __forceinline__ double shfl_down(double v, int offset) { return __shfl_down_sync(FULL_MASK, v, offset); }

// Reduces one value per thread over the block in a fixed tree order (warps, then the warps'
// results), so results are identical run to run; every thread gets the result. blockDim.x is a
// multiple of 32, at most 1024; `scratch` holds 32 values. Ends with a barrier, so scratch can be
// reused right away.
template <typename T>
__device__ T block_reduce(T v, T identity, T* scratch) {
    const int lane = threadIdx.x & 31, warp = threadIdx.x >> 5, warps = blockDim.x >> 5;
    for (int off = 16; off > 0; off >>= 1) v = reduce_merge(v, shfl_down(v, off));
    if (lane == 0) scratch[warp] = v;
    __syncthreads();
    if (warp == 0) {
        v = lane < warps ? scratch[lane] : identity;
        for (int off = 16; off > 0; off >>= 1) v = reduce_merge(v, shfl_down(v, off));
        if (lane == 0) scratch[0] = v;
    }
    __syncthreads();
    v = scratch[0];
    __syncthreads();
    return v;
}

__device__ __forceinline__ RowStats block_row_stats(RowStats r, RowStats* scratch) {
    return block_reduce(r, row_stats_identity(), scratch);
}

__device__ __forceinline__ double block_sum(double v, double* scratch) { return block_reduce(v, 0.0, scratch); }

// Exclusive prefix sum of one int64 per thread over the block; `scratch`: 32 int64.
__device__ int64_t block_exclusive_scan(int64_t v, int64_t* scratch) {
    const int lane = threadIdx.x & 31, warp = threadIdx.x >> 5, warps = blockDim.x >> 5;
    int64_t incl = v;
    for (int off = 1; off < 32; off <<= 1) {
        const int64_t o = __shfl_up_sync(FULL_MASK, incl, off);
        if (lane >= off) incl += o;
    }
    if (lane == 31) scratch[warp] = incl;
    __syncthreads();
    if (warp == 0) {
        int64_t w = lane < warps ? scratch[lane] : 0;
        for (int off = 1; off < 32; off <<= 1) {
            const int64_t o = __shfl_up_sync(FULL_MASK, w, off);
            if (lane >= off) w += o;
        }
        if (lane < warps) scratch[lane] = w;  // inclusive totals per warp
    }
    __syncthreads();
    const int64_t before = (warp == 0 ? 0 : scratch[warp - 1]) + incl - v;
    __syncthreads();
    return before;
}

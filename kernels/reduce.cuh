// Block-wide reductions and scans in a fixed order, so results are identical run to run.
#pragma once
#include "common.cuh"  // exp2_ftz; prelude.cuh  // exp2_ftz

#define FULL_MASK 0xffffffffu

// Softmax statistics of a set of logits: max m, `rest` = sum of exp(v - m) minus the max's own
// term 1 (so log1p(rest) keeps small losses precise; a set without a value has rest = -1), the
// sum of the values, whether a NaN and whether a -inf was seen, and the first column holding
// the largest value (a 32-bit column of the row; NaN never wins, and a set of -inf values
// points at its first). The values are only ever used where they mean what they say: a row
// with a NaN, or whose max is -inf, has no softmax and ignores rest; `sum` enters the loss only
// when no -inf was seen (kernels/loss.cu). So they may add -inf and NaN without a test per
// value, and the result does not depend on how a row is split between threads beyond the
// rounding of the sums.
enum RowFlags : int { ROW_NAN = 1, ROW_NEG_INF = 2 };
#define NO_COLUMN 0x7fffffff
struct RowStats {
    float m, rest, sum;
    int flags;  // RowFlags seen
    int arg;
};

__device__ __forceinline__ RowStats row_stats_identity() { return {-INFINITY, -1.0f, 0.0f, 0, NO_COLUMN}; }

#define LOG2E 1.44269504088896341f

// exp(a - m) that treats a == m (also +-inf) as exp(0) = 1 rather than NaN; results below
// 2^-126 are 0 (exp2_ftz).
__device__ __forceinline__ float exp_shift(float a, float m) {
    return (a == m) ? 1.0f : exp2_ftz((a - m) * LOG2E);
}

__device__ __forceinline__ bool row_stats_empty(const RowStats& r) { return r.rest == -1.0f && r.m == -INFINITY; }

// N values of one row at once (columns c0, c0 + step, ..., c0 + (N - 1) step: a 16-byte pack,
// or single values a thread loaded together), without a branch per value: the pack's maximum,
// its first column and the flags first, so the running statistics are rescaled at most once
// per pack, then the pack's terms of rest. Columns arrive in increasing order within a thread,
// so a later pack only takes the argmax with a larger value.
template <int N>
__device__ __forceinline__ RowStats row_stats_push_pack(RowStats r, const float (&v)[N], int c0, int step = 1) {
    float pm = v[0], lo = v[0], s = v[0];
    bool nan = isnan(v[0]);
#pragma unroll
    for (int k = 1; k < N; ++k) {
        pm = fmaxf(pm, v[k]);  // fmaxf and fminf pass NaN over
        lo = fminf(lo, v[k]);
        s += v[k];
        nan = nan || isnan(v[k]);
    }
    int first = -1;  // the pack's first column holding pm (none when every value is NaN)
#pragma unroll
    for (int k = N - 1; k >= 0; --k) first = v[k] == pm ? k : first;
    r.sum += s;
    r.flags |= (nan ? ROW_NAN : 0) | (lo == -INFINITY ? ROW_NEG_INF : 0);
    int own = -1;  // the pack column whose 1 is the new maximum's own, kept out of rest
    if (pm > r.m) {
        const float e = (r.m == -INFINITY) ? 0.0f : exp2_ftz((r.m - pm) * LOG2E);
        r.rest = row_stats_empty(r) ? 0.0f : r.rest * e + e;
        r.m = pm;
        r.arg = c0 + first * step;
        own = first;
    } else if (r.arg == NO_COLUMN && pm == -INFINITY) {
        r.arg = c0 + first * step;  // only -inf so far: the first of them
    }
    // Every term first, then the sum without the new maximum's own: a select, not a branch.
    float e[N];
#pragma unroll
    for (int k = 0; k < N; ++k) e[k] = exp_shift(v[k], r.m);
    float add = 0.0f;
#pragma unroll
    for (int k = 0; k < N; ++k) add += k == own ? 0.0f : e[k];
    r.rest += add;
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
    r.arg = (b.m > a.m || (b.m == a.m && b.arg < a.arg)) ? b.arg : a.arg;
    return r;
}

// Shuffles down within segments of `width` lanes (a lane past its segment's end keeps its own).
__device__ __forceinline__ RowStats row_stats_shfl(RowStats r, int offset, int width = 32) {
    RowStats o;
    o.m = __shfl_down_sync(FULL_MASK, r.m, offset, width);
    o.rest = __shfl_down_sync(FULL_MASK, r.rest, offset, width);
    o.sum = __shfl_down_sync(FULL_MASK, r.sum, offset, width);
    o.flags = __shfl_down_sync(FULL_MASK, r.flags, offset, width);
    o.arg = __shfl_down_sync(FULL_MASK, r.arg, offset, width);
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

// The same over each team of `width` lanes (a power of two up to 32; every lane of the warp
// calls it): the shfl_down tree of block_reduce's first level within the team, then the team's
// first lane's result to all of its lanes. A butterfly would leave lanes with sums rounded in
// different orders, and a row's gradient must use one set of statistics.
__device__ __forceinline__ RowStats team_row_stats(RowStats r, int width) {
    if (width == 1) return r;
    for (int off = width >> 1; off > 0; off >>= 1) r = row_stats_merge(r, row_stats_shfl(r, off, width));
    r.m = __shfl_sync(FULL_MASK, r.m, 0, width);
    r.rest = __shfl_sync(FULL_MASK, r.rest, 0, width);
    r.sum = __shfl_sync(FULL_MASK, r.sum, 0, width);
    r.flags = __shfl_sync(FULL_MASK, r.flags, 0, width);
    r.arg = __shfl_sync(FULL_MASK, r.arg, 0, width);
    return r;
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

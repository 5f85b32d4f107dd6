// Training-dynamics statistics over many tensors in one launch each.
//
// A "table" is an int64 array in device memory with one row per tensor; the kernels walk rows
// of work items so that every tensor of a list is handled by the same launch.
//   zero_counts: table rows (ptr, batch, per_sample, dtype, inner, units, flags_ptr)
//     counts, per layer and sample, the elements with x == 0 (|x| <= eps when eps >= 0; -0 is
//     zero, NaN is not) into counts[layer * B + sample], and ORs 1 into the int32 flags[unit] of
//     every unit (channel of [B, C, ...] or feature of [B, D]) that held a non-zero value
//     (dead-unit tracking).
//   zero_counts_chunked: the counts alone, rows split into chunks over the whole grid, 16-byte
//     loads for every dtype (the same table, and each layer's first work item).
//   multi_dot: table rows (a_ptr, b_ptr, numel, dtype) -> per-block partial dot, |a|^2, |b|^2.
//   multi_diff_sq: table rows (a_ptr, b_ptr, numel, dtype) -> per-block partial |a - b|^2, and
//     optionally b = a in the same pass (BENR's per-step update norm).
//   partials_sum: sums per-block partials in a fixed order (deterministic results).
#include "common.cuh"
#include "reduce.cuh"

__device__ __forceinline__ float widen(float v) { return v; }
__device__ __forceinline__ float widen(__half v) { return __half2float(v); }
__device__ __forceinline__ float widen(__nv_bfloat16 v) { return __bfloat162float(v); }

__device__ __forceinline__ float load_as_f32(const void* base, int64_t i, int dtype) {
    switch (dtype) {
        case DT_F16: return widen(reinterpret_cast<const __half*>(base)[i]);
        case DT_BF16: return widen(reinterpret_cast<const __nv_bfloat16*>(base)[i]);
        default: return reinterpret_cast<const float*>(base)[i];
    }
}

__device__ __forceinline__ void store_from_f32(void* base, int64_t i, int dtype, float v) {
    switch (dtype) {
        case DT_F16: reinterpret_cast<__half*>(base)[i] = __float2half_rn(v); break;
        case DT_BF16: reinterpret_cast<__nv_bfloat16*>(base)[i] = __float2bfloat16_rn(v); break;
        default: reinterpret_cast<float*>(base)[i] = v;
    }
}

// Units a block tracks in shared memory (one bit each); layers with more units set the global
// flags directly.
#define ZC_SHARED_UNITS 4096

// One block per (layer, sample) row, grid-stride over rows; rows are layer-major. Dead-unit
// flags: a block marks the units that held a non-zero value in a shared bit set and ORs them into
// the global flags once per row, so a non-zero element costs at most a shared atomic, not a
// global one. Many threads (and blocks) mark one unit, so every mark is an atomic OR: plain
// stores of the same 1 would still race. A thread reads the word first and skips the atomic once
// its bit is set (a plain read of a word others update atomically is no data race).
// The unit of element j (j / inner) is tracked incrementally: no 64-bit division per element.
extern "C" __global__ void zero_counts(const int64_t* table, int64_t layers, int64_t batch, float eps,
                                       int64_t* counts) {
    __shared__ double scratch[32];
    __shared__ uint32_t seen[ZC_SHARED_UNITS / 32];
    const int64_t rows = layers * batch;
    for (int64_t r = blockIdx.x; r < rows; r += gridDim.x) {
        const int64_t l = r / batch, i = r % batch;
        const int64_t* row = table + l * ZC_COLS;
        const void* base = reinterpret_cast<const void*>(row[0]);
        const int64_t per_sample = row[2];
        const int dtype = (int)row[3];
        const int64_t inner = row[4], units = row[5];
        int32_t* flags = reinterpret_cast<int32_t*>(row[6]);
        const bool local = flags != nullptr && units <= ZC_SHARED_UNITS;
        if (local)
            for (int64_t w = threadIdx.x; w < (units + 31) / 32; w += blockDim.x) seen[w] = 0u;
        __syncthreads();
        // j advances by blockDim.x: the unit by step_units and the offset in it by step_rest.
        const int64_t step_units = blockDim.x / inner, step_rest = blockDim.x % inner;
        int64_t unit = threadIdx.x / inner, rest = threadIdx.x % inner;
        double zeros = 0.0;
        for (int64_t j = threadIdx.x; j < per_sample; j += blockDim.x) {
            const float v = load_as_f32(base, i * per_sample + j, dtype);
            const bool is_zero = eps >= 0.0f ? fabsf(v) <= eps : v == 0.0f;
            zeros += is_zero ? 1.0 : 0.0;
            if (flags != nullptr && !is_zero && !isnan(v)) {
                if (local) {
                    const uint32_t bit = 1u << (unit & 31);
                    if (!(seen[unit >> 5] & bit)) atomicOr(&seen[unit >> 5], bit);
                } else {
                    atomicOr(&flags[unit], 1);
                }
            }
            unit += step_units;
            rest += step_rest;
            if (rest >= inner) {
                rest -= inner;
                ++unit;
            }
        }
        const double total = block_sum(zeros, scratch);  // ends with a barrier: `seen` is complete
        if (threadIdx.x == 0) counts[r] = (int64_t)total;
        if (local)
            for (int64_t u = threadIdx.x; u < units; u += blockDim.x)
                if (seen[u >> 5] >> (u & 31) & 1u) atomicOr(&flags[u], 1);
        __syncthreads();  // `seen` is cleared for the next row only after every thread has read it
    }
}

// Work is split into chunks of `chunk` elements; chunk c of tensor t is work item
// starts[t] + c. Blocks stride over work items; thread partials go to per-block partials.
__device__ __forceinline__ int64_t find_tensor(const int64_t* starts, int64_t tensors, int64_t item) {
    int64_t lo = 0, hi = tensors - 1;
    while (lo < hi) {  // the last t with starts[t] <= item
        const int64_t mid = (lo + hi + 1) / 2;
        if (starts[mid] <= item) lo = mid;
        else hi = mid - 1;
    }
    return lo;
}

__device__ __forceinline__ bool aligned16(const void* p) { return (reinterpret_cast<uintptr_t>(p) & 15u) == 0; }

// Elements of one 16-byte pack of T with |x| <= threshold.
template <class T>
__device__ __forceinline__ int pack_zeros(const uint4& w, float threshold) {
    const T* v = reinterpret_cast<const T*>(&w);
    int zeros = 0;
#pragma unroll
    for (int k = 0; k < (int)(16 / sizeof(T)); ++k) zeros += fabsf(widen(v[k])) <= threshold;
    return zeros;
}

// Elements of p[0, n) with |x| <= threshold, this thread's share: single values up to the first
// 16-byte boundary, then 16-byte packs (4 f32 or 8 f16/bf16), then single values after the last
// whole pack. `threshold` is 0 for exact zeros (|x| <= 0 holds for +-0 alone, never for NaN).
template <class T>
__device__ __forceinline__ int zeros_in(const T* p, int64_t n, float threshold) {
    constexpr int per_pack = 16 / sizeof(T);
    const int64_t to_boundary = (int64_t)(((16u - (reinterpret_cast<uintptr_t>(p) & 15u)) & 15u) / sizeof(T));
    const int64_t head = to_boundary < n ? to_boundary : n;
    const int64_t packs = (n - head) / per_pack, tail = head + packs * per_pack;
    int zeros = 0;
    for (int64_t j = threadIdx.x; j < head; j += blockDim.x) zeros += fabsf(widen(p[j])) <= threshold;
    const uint4* body = reinterpret_cast<const uint4*>(p + head);
    // Four packs a thread in flight before the first is counted (64 bytes; a bounds check per
    // pack would keep the compiler from issuing a load before the previous one is used), then
    // one at a time. __ldg: the table's pointers are generic, and this is global memory.
    int64_t q = threadIdx.x;
    for (; q + 3 * (int64_t)blockDim.x < packs; q += 4 * (int64_t)blockDim.x) {
        uint4 w[4];
#pragma unroll
        for (int u = 0; u < 4; ++u) w[u] = __ldg(body + q + u * (int64_t)blockDim.x);
#pragma unroll
        for (int u = 0; u < 4; ++u) zeros += pack_zeros<T>(w[u], threshold);
    }
    for (; q < packs; q += blockDim.x) zeros += pack_zeros<T>(__ldg(body + q), threshold);
    for (int64_t j = tail + threadIdx.x; j < n; j += blockDim.x) zeros += fabsf(widen(p[j])) <= threshold;
    return zeros;
}

// Counts alone (no dead-unit flags), over the whole grid: each (layer, sample) row is split into
// chunks of `chunk` elements, work item starts[l] + i * chunks_l + c being chunk c of sample i of
// layer l (chunks_l = ceil(per_sample_l / chunk)); blocks stride over items, and each adds its
// chunk's count to counts[l * B + i] atomically (integer adds: the same total in any order), so
// `counts` must hold zeros. The dtype is chosen once a chunk, not per element.
extern "C" __global__ void zero_counts_chunked(const int64_t* table, const int64_t* starts, int64_t layers,
                                               int64_t items, int64_t batch, int64_t chunk, float eps,
                                               int64_t* counts) {
    __shared__ double scratch[32];
    const float threshold = eps >= 0.0f ? eps : 0.0f;
    for (int64_t item = blockIdx.x; item < items; item += gridDim.x) {
        const int64_t l = find_tensor(starts, layers, item);
        const int64_t* row = table + l * ZC_COLS;
        const int64_t per_sample = row[2];
        const int64_t chunks = (per_sample + chunk - 1) / chunk;
        const int64_t local = item - starts[l], i = local / chunks, c = local % chunks;
        const int64_t first = i * per_sample + c * chunk;
        const int64_t n = per_sample - c * chunk < chunk ? per_sample - c * chunk : chunk;
        int zeros;
        switch ((int)row[3]) {
            case DT_F16: zeros = zeros_in(reinterpret_cast<const __half*>(row[0]) + first, n, threshold); break;
            case DT_BF16: zeros = zeros_in(reinterpret_cast<const __nv_bfloat16*>(row[0]) + first, n, threshold); break;
            default: zeros = zeros_in(reinterpret_cast<const float*>(row[0]) + first, n, threshold);
        }
        const double total = block_sum((double)zeros, scratch);  // ends with a barrier
        if (threadIdx.x == 0)
            atomicAdd(reinterpret_cast<unsigned long long*>(&counts[l * batch + i]), (unsigned long long)total);
    }
}

// dot, |a|^2, |b|^2 of one element pair, summed in f64.
struct DotSums {
    double dot = 0.0, aa = 0.0, bb = 0.0;
    __device__ __forceinline__ void add(double x, double y) {
        dot += x * y;
        aa += x * x;
        bb += y * y;
    }
};

// Elements in a 16-byte pack of a dtype code.
__device__ __forceinline__ int64_t pack_of(int dtype) { return dtype == DT_F16 || dtype == DT_BF16 ? 8 : 4; }

// dot, |a|^2, |b|^2 over the 16-byte packs [lo / P, hi / P) of a pair of T (P = 16 / sizeof(T)),
// this thread's share.
template <class T>
__device__ __forceinline__ void dot_packs(const void* a, const void* b, int64_t lo, int64_t hi, DotSums& s) {
    constexpr int per = 16 / sizeof(T);
    const uint4* a4 = reinterpret_cast<const uint4*>(a);
    const uint4* b4 = reinterpret_cast<const uint4*>(b);
    for (int64_t q = lo / per + threadIdx.x; q < hi / per; q += blockDim.x) {
        const uint4 x = a4[q], y = b4[q];
        const T* xv = reinterpret_cast<const T*>(&x);
        const T* yv = reinterpret_cast<const T*>(&y);
#pragma unroll
        for (int k = 0; k < per; ++k) s.add(widen(xv[k]), widen(yv[k]));
    }
}

// This thread's share of elements [lo, hi) of one tensor pair. Pairs whose pointers are 16-byte
// aligned move a 16-byte pack a load (4 f32 or 8 f16/bf16; lo is a multiple of 8, as chunks
// are); the rest, and the tail past the last whole pack, one at a time.
__device__ __forceinline__ void dot_range(const void* a, const void* b, int dtype, int64_t lo, int64_t hi,
                                          DotSums& s) {
    int64_t scalar_from = lo;
    if (aligned16(a) && aligned16(b)) {
        switch (dtype) {
            case DT_F16: dot_packs<__half>(a, b, lo, hi, s); break;
            case DT_BF16: dot_packs<__nv_bfloat16>(a, b, lo, hi, s); break;
            default: dot_packs<float>(a, b, lo, hi, s);
        }
        scalar_from = hi / pack_of(dtype) * pack_of(dtype);
    }
    for (int64_t k = scalar_from + threadIdx.x; k < hi; k += blockDim.x) s.add(load_as_f32(a, k, dtype), load_as_f32(b, k, dtype));
}

// |a - b|^2 over the 16-byte packs [lo / P, hi / P) of a pair of T, this thread's share, with
// b's pack overwritten by a's when `copy` (the same bits: no rounding in between).
template <class T>
__device__ __forceinline__ double diff_packs(const void* a, void* b, int64_t lo, int64_t hi, int copy) {
    constexpr int per = 16 / sizeof(T);
    const uint4* a4 = reinterpret_cast<const uint4*>(a);
    uint4* b4 = reinterpret_cast<uint4*>(b);
    double acc = 0.0;
    for (int64_t q = lo / per + threadIdx.x; q < hi / per; q += blockDim.x) {
        const uint4 x = a4[q], y = b4[q];
        const T* xv = reinterpret_cast<const T*>(&x);
        const T* yv = reinterpret_cast<const T*>(&y);
        double pack = 0.0;
#pragma unroll
        for (int k = 0; k < per; ++k) {
            const double d = (double)widen(xv[k]) - (double)widen(yv[k]);
            pack += d * d;
        }
        acc += pack;
        if (copy) b4[q] = x;
    }
    return acc;
}

// |a - b|^2 over this thread's share of [lo, hi), with b = a written in the same pass when
// `copy`; vectorised as dot_range.
__device__ __forceinline__ double diff_range(const void* a, void* b, int dtype, int64_t lo, int64_t hi, int copy) {
    double acc = 0.0;
    int64_t scalar_from = lo;
    if (aligned16(a) && aligned16(b)) {
        switch (dtype) {
            case DT_F16: acc = diff_packs<__half>(a, b, lo, hi, copy); break;
            case DT_BF16: acc = diff_packs<__nv_bfloat16>(a, b, lo, hi, copy); break;
            default: acc = diff_packs<float>(a, b, lo, hi, copy);
        }
        scalar_from = hi / pack_of(dtype) * pack_of(dtype);
    }
    for (int64_t k = scalar_from + threadIdx.x; k < hi; k += blockDim.x) {
        const float x = load_as_f32(a, k, dtype);
        const double d = (double)x - (double)load_as_f32(b, k, dtype);
        acc += d * d;
        if (copy) store_from_f32(b, k, dtype, x);
    }
    return acc;
}

// The element range [lo, hi) of work item w, and its tensor's table row.
struct WorkItem {
    const int64_t* row;
    int64_t lo, hi;
};

__device__ __forceinline__ WorkItem work_item(const int64_t* table, const int64_t* starts, int64_t tensors, int64_t w,
                                              int64_t chunk) {
    const int64_t t = find_tensor(starts, tensors, w);
    const int64_t* row = table + t * MT_COLS;
    const int64_t n = row[2];
    const int64_t lo = (w - starts[t]) * chunk;
    return {row, lo, lo + chunk < n ? lo + chunk : n};
}

extern "C" __global__ void multi_dot(const int64_t* table, const int64_t* starts, int64_t tensors, int64_t items,
                                     int64_t chunk, double* partials) {
    __shared__ double scratch[32];
    DotSums s;
    for (int64_t w = blockIdx.x; w < items; w += gridDim.x) {
        const WorkItem it = work_item(table, starts, tensors, w, chunk);
        dot_range(reinterpret_cast<const void*>(it.row[0]), reinterpret_cast<const void*>(it.row[1]), (int)it.row[3],
                  it.lo, it.hi, s);
    }
    const double s0 = block_sum(s.dot, scratch), s1 = block_sum(s.aa, scratch), s2 = block_sum(s.bb, scratch);
    if (threadIdx.x == 0) {
        partials[3 * blockIdx.x + 0] = s0;
        partials[3 * blockIdx.x + 1] = s1;
        partials[3 * blockIdx.x + 2] = s2;
    }
}

extern "C" __global__ void multi_diff_sq(const int64_t* table, const int64_t* starts, int64_t tensors, int64_t items,
                                         int64_t chunk, int copy, double* partials) {
    __shared__ double scratch[32];
    double acc = 0.0;
    for (int64_t w = blockIdx.x; w < items; w += gridDim.x) {
        const WorkItem it = work_item(table, starts, tensors, w, chunk);
        acc += diff_range(reinterpret_cast<const void*>(it.row[0]), reinterpret_cast<void*>(it.row[1]), (int)it.row[3],
                          it.lo, it.hi, copy);
    }
    const double s = block_sum(acc, scratch);
    if (threadIdx.x == 0) {
        partials[3 * blockIdx.x + 0] = s;
        partials[3 * blockIdx.x + 1] = 0.0;
        partials[3 * blockIdx.x + 2] = 0.0;
    }
}

// out[j] = sum over blocks of partials[3 * blk + j], j < 3, in a fixed order.
extern "C" __global__ void partials_sum(const double* partials, int64_t blocks, double* out) {
    __shared__ double scratch[32];
    double s[3] = {0.0, 0.0, 0.0};
    for (int64_t blk = threadIdx.x; blk < blocks; blk += blockDim.x)
        for (int j = 0; j < 3; ++j) s[j] += partials[3 * blk + j];
    for (int j = 0; j < 3; ++j) {
        const double total = block_sum(s[j], scratch);
        if (threadIdx.x == 0) out[j] = total;
    }
}

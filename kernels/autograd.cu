// The losses' autograd node (bridge/autograd.cpp) on the kernels' path: its backward scales the
// gradient kept from the forward by the incoming gradient, in place.
//
// grad_scale: g = g * s, s read from the device (the incoming gradient, an f32 scalar). When s is
//   exactly 1 (a plain `loss.backward()`) every block reads those 4 bytes and returns: the
//   gradient is neither read nor written, and the host never waited to learn that s was 1.
//   Otherwise each element is read and written once (computed in f32, rounded once to T, as
//   libtorch's `grad * incoming` with a 0-dim f32 factor). The node calls this only for a
//   gradient already in the input's dtype that nothing else holds (bridge/autograd.cpp).
//   Grid-stride over 16-byte packs, single values before and after them.
#include "common.cuh"

template <typename T>
__device__ __forceinline__ T scaled(T v, float s) {
    return from_f32<T>(to_f32(v) * s);
}

template <typename T>
__device__ void grad_scale(T* __restrict__ g, const float* __restrict__ incoming, int64_t n) {
    constexpr int N = 16 / sizeof(T);
    const float s = *incoming;
    if (s == 1.0f) return;  // the same for every thread of the grid
    const PackSplit sp = split_packs<T, N>(g, n);
    const int64_t first = (int64_t)blockIdx.x * blockDim.x + threadIdx.x;
    const int64_t stride = (int64_t)gridDim.x * blockDim.x;
    Pack<T, N>* packs = reinterpret_cast<Pack<T, N>*>(g + sp.head);
    for (int64_t q = first; q < sp.packs; q += stride) {
        Pack<T, N> pk = packs[q];
#pragma unroll
        for (int k = 0; k < N; ++k) pk.v[k] = scaled(pk.v[k], s);
        packs[q] = pk;
    }
    // The head and tail values (fewer than N each), by the grid's first threads.
    if (first < sp.head) g[first] = scaled(g[first], s);
    if (first < n - sp.tail) g[sp.tail + first] = scaled(g[sp.tail + first], s);
}

#define GRAD_SCALE_ENTRY(SUFFIX, T)                                                                  \
    extern "C" __global__ void grad_scale_##SUFFIX(T* g, const float* incoming, int64_t n) {         \
        grad_scale<T>(g, incoming, n);                                                               \
    }

GRAD_SCALE_ENTRY(f32, float)
GRAD_SCALE_ENTRY(f16, __half)
GRAD_SCALE_ENTRY(bf16, __nv_bfloat16)

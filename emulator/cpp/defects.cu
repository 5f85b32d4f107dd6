// Kernels with known defects, compiled into the emulator only: its own tests launch each one
// and expect the defect to be reported (emulator/src/tests.rs).
#include "common.cuh"

// Copies x to out, but the loop bound lets the last thread write one element past the end.
extern "C" __global__ void defect_write_past_end(const float* x, float* out, int64_t n) {
    for (int64_t i = blockIdx.x * (int64_t)blockDim.x + threadIdx.x; i <= n; i += (int64_t)gridDim.x * blockDim.x)
        out[i] = x[i < n ? i : n - 1];
}

// Sums x into out[0] with one block, but warp 0 reads the other warps' partial sums without
// waiting for them at a __syncthreads.
extern "C" __global__ void defect_block_sum_without_barrier(const float* x, float* out, int64_t n) {
    __shared__ float partial[32];
    const int lane = threadIdx.x & 31, warp = threadIdx.x >> 5, warps = blockDim.x >> 5;
    float v = 0.0f;
    for (int64_t i = threadIdx.x; i < n; i += blockDim.x) v += x[i];
    for (int off = 16; off > 0; off >>= 1) v += __shfl_down_sync(0xffffffffu, v, off);
    if (lane == 0) partial[warp] = v;
    // missing: __syncthreads();
    if (warp == 0) {
        v = lane < warps ? partial[lane] : 0.0f;
        for (int off = 16; off > 0; off >>= 1) v += __shfl_down_sync(0xffffffffu, v, off);
        if (lane == 0) out[0] = v;
    }
}

// Copies x to out but skips the middle element.
extern "C" __global__ void defect_skips_an_element(const float* x, float* out, int64_t n) {
    for (int64_t i = blockIdx.x * (int64_t)blockDim.x + threadIdx.x; i < n; i += (int64_t)gridDim.x * blockDim.x)
        if (i != n / 2) out[i] = x[i];
}

// Each half-warp sums its lanes, but the lower half reads from the upper half's lanes, which
// are not in its mask.
extern "C" __global__ void defect_shuffle_outside_mask(const float* x, float* out, int64_t n) {
    const int lane = threadIdx.x & 31;
    const int64_t i = blockIdx.x * (int64_t)blockDim.x + threadIdx.x;
    float v = i < n ? x[i] : 0.0f;
    const unsigned half = lane < 16 ? 0x0000ffffu : 0xffff0000u;
    v += __shfl_sync(half, v, lane + 16);
    if (i < n) out[i] = v;
}

// A correct copy, so the tests show a clean kernel passes the same checks.
extern "C" __global__ void defect_free_copy(const float* x, float* out, int64_t n) {
    for (int64_t i = blockIdx.x * (int64_t)blockDim.x + threadIdx.x; i < n; i += (int64_t)gridDim.x * blockDim.x)
        out[i] = x[i];
}

// Copies x to out through dynamic shared memory of blockDim.x floats, but every thread writes
// one slot up, so the last one writes past the buffer the launch asked for.
extern "C" __global__ void defect_dynamic_shared_past_end(const float* x, float* out, int64_t n) {
    float* buf = dynamic_shared<float>();
    for (int64_t i = blockIdx.x * (int64_t)blockDim.x + threadIdx.x; i < n; i += (int64_t)gridDim.x * blockDim.x) {
        buf[threadIdx.x + 1] = x[i];
        out[i] = x[i];
    }
}

// The same copy through dynamic shared memory without the defect: each thread its own slot.
extern "C" __global__ void defect_free_dynamic_copy(const float* x, float* out, int64_t n) {
    float* buf = dynamic_shared<float>();
    for (int64_t i = blockIdx.x * (int64_t)blockDim.x + threadIdx.x; i < n; i += (int64_t)gridDim.x * blockDim.x) {
        buf[threadIdx.x] = x[i];
        out[i] = buf[threadIdx.x];
    }
}

// Sums a window of 96 elements against its mirror image: every load is issued before the first
// product, so each thread keeps the 96 values in registers (ptxas reports about 100 a thread),
// more than a 1024-thread block can have on a 64K-register SM. Launched with 1024 threads, the
// driver refuses it (too many resources requested).
extern "C" __global__ void defect_too_many_registers(const float* x, float* out, int64_t n) {
    for (int64_t i = blockIdx.x * (int64_t)blockDim.x + threadIdx.x; i < n; i += (int64_t)gridDim.x * blockDim.x) {
        float v[96];
#pragma unroll
        for (int j = 0; j < 96; ++j) v[j] = x[(i + j * 7) % n];
        float s = 0.0f;
#pragma unroll
        for (int j = 0; j < 96; ++j) s += v[j] * v[95 - j];
        out[i] = s;
    }
}

// A copy whose __launch_bounds__ promise ptxas blocks of at most 128 threads: a larger block is
// refused by the driver.
extern "C" __global__ void __launch_bounds__(128) defect_bounded_copy(const float* x, float* out, int64_t n) {
    for (int64_t i = blockIdx.x * (int64_t)blockDim.x + threadIdx.x; i < n; i += (int64_t)gridDim.x * blockDim.x)
        out[i] = x[i];
}

// A copy through dynamic shared memory of blockDim.x floats beside 8 KiB of static shared
// memory (a lookup table): the two together must fit the block's shared memory.
extern "C" __global__ void defect_static_and_dynamic_copy(const float* x, float* out, int64_t n) {
    __shared__ float table[2048];
    float* buf = dynamic_shared<float>();
    for (int j = threadIdx.x; j < 2048; j += blockDim.x) table[j] = (float)j;
    __syncthreads();
    for (int64_t i = blockIdx.x * (int64_t)blockDim.x + threadIdx.x; i < n; i += (int64_t)gridDim.x * blockDim.x) {
        buf[threadIdx.x] = x[i] + table[threadIdx.x] - (float)threadIdx.x;
        out[i] = buf[threadIdx.x];
    }
}

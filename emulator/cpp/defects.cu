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

// ---- defects only the memory checker sees (every schedule gives the same outputs) ------------

// Flags whether any element exceeds 100 in one shared word: every thread that sees one stores
// the same 1, with no barrier between the stores, so the outputs never differ, but two plain
// writes of one byte between two barriers race on a GPU.
extern "C" __global__ void defect_shared_write_race(const float* x, float* out, int64_t n) {
    __shared__ int any_large;
    if (threadIdx.x == 0) any_large = 0;
    __syncthreads();
    for (int64_t i = blockIdx.x * (int64_t)blockDim.x + threadIdx.x; i < n; i += (int64_t)gridDim.x * blockDim.x)
        if (x[i] > 100.0f) any_large = 1;
    __syncthreads();
    for (int64_t i = blockIdx.x * (int64_t)blockDim.x + threadIdx.x; i < n; i += (int64_t)gridDim.x * blockDim.x)
        out[i] = any_large ? x[i] : -x[i];
}

// Stages a block's elements in shared memory, but only the lower half of the threads fill their
// slots while every thread reads its own: the upper half reads slots never written in this block
// (the value is then discarded, so no output shows it).
extern "C" __global__ void defect_reads_unwritten_shared(const float* x, float* out, int64_t n) {
    __shared__ float stage[128];
    for (int64_t base = blockIdx.x * (int64_t)blockDim.x; base < n; base += (int64_t)gridDim.x * blockDim.x) {
        const int64_t i = base + threadIdx.x;
        if (threadIdx.x < 64 && i < n) stage[threadIdx.x] = x[i];
        __syncthreads();
        const float v = stage[threadIdx.x];
        if (i < n) out[i] = threadIdx.x < 64 ? v : x[i];
        __syncthreads();
    }
}

// Copies x to out, but every block also writes the first element (the same value): two blocks
// write one byte without atomics.
extern "C" __global__ void defect_blocks_write_one_element(const float* x, float* out, int64_t n) {
    for (int64_t i = blockIdx.x * (int64_t)blockDim.x + threadIdx.x; i < n; i += (int64_t)gridDim.x * blockDim.x)
        out[i] = x[i];
    if (threadIdx.x == 0) out[0] = x[0];
}

// Copies x to out, then each block's first thread looks at an element the next block writes (a
// sentinel test that never fires): what it reads depends on which block ran first.
extern "C" __global__ void defect_block_reads_another_block(const float* x, float* out, int64_t n) {
    for (int64_t i = blockIdx.x * (int64_t)blockDim.x + threadIdx.x; i < n; i += (int64_t)gridDim.x * blockDim.x)
        out[i] = x[i];
    __syncthreads();
    const int64_t next = ((int64_t)blockIdx.x + 1) % gridDim.x * blockDim.x;
    if (threadIdx.x == 0 && next < n && out[next] == -12345.0f) out[blockIdx.x * (int64_t)blockDim.x] = 0.0f;
}

// Stages 128 elements in two shared arrays of 64, but the lower array is written with every
// thread's index: the upper threads write past its end (where its neighbour would be).
extern "C" __global__ void defect_shared_array_overrun(const float* x, float* out, int64_t n) {
    __shared__ float lower[64];
    __shared__ float upper[64];
    for (int64_t base = blockIdx.x * (int64_t)blockDim.x; base < n; base += (int64_t)gridDim.x * blockDim.x) {
        const int64_t i = base + threadIdx.x;
        const float v = i < n ? x[i] : 0.0f;
        if (threadIdx.x < 128) lower[threadIdx.x] = v;
        if (threadIdx.x >= 64 && threadIdx.x < 128) upper[threadIdx.x - 64] = v;
        __syncthreads();
        if (i < n) out[i] = threadIdx.x < 64 ? lower[threadIdx.x] : upper[(threadIdx.x - 64) & 63];
        __syncthreads();
    }
}

// Copies through dynamic shared memory, but each thread's slot is one below its index: thread 0
// writes the float before the buffer.
extern "C" __global__ void defect_dynamic_shared_before_start(const float* x, float* out, int64_t n) {
    float* buf = dynamic_shared<float>();
    for (int64_t i = blockIdx.x * (int64_t)blockDim.x + threadIdx.x; i < n; i += (int64_t)gridDim.x * blockDim.x) {
        buf[(int)threadIdx.x - 1] = x[i];
        out[i] = x[i];
    }
}

// Sums x in 16-byte packs, but starts them one float in: every pack is misaligned (a GPU
// refuses such a load).
extern "C" __global__ void defect_misaligned_pack(const float* x, float* out, int64_t n) {
    for (int64_t i = blockIdx.x * (int64_t)blockDim.x + threadIdx.x; i < n / 4 - 1; i += (int64_t)gridDim.x * blockDim.x) {
        const float4 v = *reinterpret_cast<const float4*>(x + 1 + 4 * i);
        out[i] = v.x + v.y + v.z + v.w;
    }
}

// Copies x to out through a byte offset computed in int: i * 2^24 overflows from i = 128.
extern "C" __global__ void defect_int_overflow(const float* x, float* out, int64_t n) {
    for (int64_t i = blockIdx.x * (int64_t)blockDim.x + threadIdx.x; i < n; i += (int64_t)gridDim.x * blockDim.x) {
        const int offset = (int)i * 16777216;
        out[i] = x[i] + (float)(offset >> 24) * 0.0f;
    }
}

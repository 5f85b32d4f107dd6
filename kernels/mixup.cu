// Mixup and CutMix: one pass over the batch. Rows are samples, a row holds F = numel / B elements.
// Grid: blockIdx.y strides over work items (a row, a pair of rows, a run of a roll cycle),
// x-threads stride over a row's packs, so no per-element integer division and any grid size is
// valid (the host sizes it to the device).
#include "common.cuh"  // prelude.cuh: NAN

// out[i] = lam_i * x[i] + (1 - lam_i) * x[p(i)], reading and writing N elements at a time.
// N > 1 only when the host has checked F % N == 0 and 16-byte alignment of x and out.
template <typename T, int N>
__device__ void mixup_rows(const T* __restrict__ x, T* __restrict__ out, const int64_t* perm,
                           const float* lam_vec, float lam, float one_minus, int pair_mode,
                           int64_t shift, int64_t B, int64_t F) {
    const int64_t packs = F / N;
    for (int64_t i = blockIdx.y; i < B; i += gridDim.y) {
        const int64_t p = partner_of(i, B, pair_mode, perm, shift);
        const LamPair l = lambda_of(i, lam_vec, lam, one_minus);
        const Pack<T, N>* xi = reinterpret_cast<const Pack<T, N>*>(x + i * F);
        Pack<T, N>* oi = reinterpret_cast<Pack<T, N>*>(out + i * F);
        if (p < 0) {  // invalid permutation entry: make the row visibly wrong, read nothing
            for (int64_t c = blockIdx.x * (int64_t)blockDim.x + threadIdx.x; c < packs;
                 c += (int64_t)gridDim.x * blockDim.x) {
                Pack<T, N> r;
#pragma unroll
                for (int k = 0; k < N; ++k) r.v[k] = from_f32<T>(NAN);
                oi[c] = r;
            }
            continue;
        }
        const Pack<T, N>* xp = reinterpret_cast<const Pack<T, N>*>(x + p * F);
        for (int64_t c = blockIdx.x * (int64_t)blockDim.x + threadIdx.x; c < packs;
             c += (int64_t)gridDim.x * blockDim.x) {
            const Pack<T, N> a = xi[c];
            const Pack<T, N> b = xp[c];
            Pack<T, N> r;
#pragma unroll
            for (int k = 0; k < N; ++k)
                r.v[k] = from_f32<T>(blend(to_f32(a.v[k]), l.lam, to_f32(b.v[k]), l.one_minus));
            oi[c] = r;
        }
    }
}

// Flip pairing, in place (out == x) or not: the thread that owns row i < B/2 also owns row
// B-1-i, so each element is read once and written once. The middle row of an odd batch blends
// with itself. x and out are not __restrict__: in place they are the same rows.
template <typename T, int N>
__device__ void mixup_flip_rows(const T* x, T* out, const float* lam_vec, float lam, float one_minus,
                                int64_t B, int64_t F) {
    const int64_t packs = F / N;
    const int64_t half_rows = (B + 1) / 2;
    for (int64_t i = blockIdx.y; i < half_rows; i += gridDim.y) {
        const int64_t j = B - 1 - i;
        const LamPair li = lambda_of(i, lam_vec, lam, one_minus);
        const LamPair lj = lambda_of(j, lam_vec, lam, one_minus);
        const Pack<T, N>* xi = reinterpret_cast<const Pack<T, N>*>(x + i * F);
        const Pack<T, N>* xj = reinterpret_cast<const Pack<T, N>*>(x + j * F);
        Pack<T, N>* oi = reinterpret_cast<Pack<T, N>*>(out + i * F);
        Pack<T, N>* oj = reinterpret_cast<Pack<T, N>*>(out + j * F);
        for (int64_t c = blockIdx.x * (int64_t)blockDim.x + threadIdx.x; c < packs;
             c += (int64_t)gridDim.x * blockDim.x) {
            const Pack<T, N> a = xi[c];
            const Pack<T, N> b = xj[c];
            Pack<T, N> ri, rj;
#pragma unroll
            for (int k = 0; k < N; ++k) {
                const float fa = to_f32(a.v[k]), fb = to_f32(b.v[k]);
                ri.v[k] = from_f32<T>(blend(fa, li.lam, fb, li.one_minus));
                rj.v[k] = from_f32<T>(blend(fb, lj.lam, fa, lj.one_minus));
            }
            oi[c] = ri;
            if (j != i) oj[c] = rj;
        }
    }
}

// gcd(a, b) for a > 0, b >= 0.
__device__ __forceinline__ int64_t gcd_of(int64_t a, int64_t b) {
    while (b != 0) {
        const int64_t r = a % b;
        a = b;
        b = r;
    }
    return a;
}

// Roll pairing out of place: row i's partner is i - s (mod B), so in the chain i, i + s, i + 2s,
// ... of one cycle (gcd(B, s) cycles of B / gcd rows each) every row is the next one's partner. A
// work item is a run of up to MIXUP_ROLL_RUN rows of one chain, which a thread walks pack by
// pack, keeping each row's pack for the next row: x is read (1 + 1 / MIXUP_ROLL_RUN) times
// instead of twice. Items: cycle c's runs are c * runs_per_cycle ... (c + 1) * runs_per_cycle - 1.
template <typename T, int N>
__device__ void mixup_roll_rows(const T* __restrict__ x, T* __restrict__ out, const float* lam_vec, float lam,
                                float one_minus, int64_t shift, int64_t B, int64_t F) {
    constexpr int R = MIXUP_ROLL_RUN;
    const int64_t s = (shift % B + B) % B;
    const int64_t cycles = gcd_of(B, s), cycle_len = B / cycles;
    const int64_t runs_per_cycle = (cycle_len + R - 1) / R, packs = F / N;
    for (int64_t item = blockIdx.y; item < cycles * runs_per_cycle; item += gridDim.y) {
        const int64_t t0 = item % runs_per_cycle * R;
        const int n = cycle_len - t0 < R ? (int)(cycle_len - t0) : R;
        const int64_t first = (item / runs_per_cycle + t0 * s) % B;
        const int64_t before = first - s < 0 ? first - s + B : first - s;  // the first row's partner
        for (int64_t c = blockIdx.x * (int64_t)blockDim.x + threadIdx.x; c < packs;
             c += (int64_t)gridDim.x * blockDim.x) {
            Pack<T, N> prev = reinterpret_cast<const Pack<T, N>*>(x + before * F)[c];
            Pack<T, N> cur[R];
            int64_t row = first;
#pragma unroll
            for (int u = 0; u < R; ++u) {  // every load of the run before the first store
                if (u < n) cur[u] = reinterpret_cast<const Pack<T, N>*>(x + row * F)[c];
                row = row + s < B ? row + s : row + s - B;
            }
            row = first;
#pragma unroll
            for (int u = 0; u < R; ++u) {
                if (u >= n) break;
                const LamPair l = lambda_of(row, lam_vec, lam, one_minus);
                Pack<T, N> r;
#pragma unroll
                for (int k = 0; k < N; ++k)
                    r.v[k] = from_f32<T>(blend(to_f32(cur[u].v[k]), l.lam, to_f32(prev.v[k]), l.one_minus));
                reinterpret_cast<Pack<T, N>*>(out + row * F)[c] = r;
                prev = cur[u];
                row = row + s < B ? row + s : row + s - B;
            }
        }
    }
}

// Out of place: flip and roll pairs share a thread (each row read once, or nearly), a
// permutation's partners are read where they lie.
template <typename T, int N>
__device__ void mixup_any(const T* x, T* out, const int64_t* perm, const float* lam_vec, float lam,
                          float one_minus, int pair_mode, int64_t shift, int64_t B, int64_t F) {
    if (pair_mode == PAIR_FLIP)
        mixup_flip_rows<T, N>(x, out, lam_vec, lam, one_minus, B, F);
    else if (pair_mode == PAIR_ROLL)
        mixup_roll_rows<T, N>(x, out, lam_vec, lam, one_minus, shift, B, F);
    else
        mixup_rows<T, N>(x, out, perm, lam_vec, lam, one_minus, pair_mode, shift, B, F);
}

// u8 images [B, C, inner] in, normalised float out: v = x * scale[c] + bias[c] with
// scale = 1 / (255 std_c), bias = -mean_c / std_c, then the blend. N u8 per load.
template <typename T, int N>
__device__ void mixup_u8_rows(const uint8_t* __restrict__ x, T* __restrict__ out, const int64_t* perm,
                              const float* lam_vec, float lam, float one_minus, int pair_mode,
                              int64_t shift, int64_t B, int64_t F, const float* scale,
                              const float* bias, int64_t inner) {
    const int64_t packs = F / N;
    for (int64_t i = blockIdx.y; i < B; i += gridDim.y) {
        const int64_t p = partner_of(i, B, pair_mode, perm, shift);
        const LamPair l = lambda_of(i, lam_vec, lam, one_minus);
        const Pack<uint8_t, N>* xi = reinterpret_cast<const Pack<uint8_t, N>*>(x + i * F);
        const Pack<uint8_t, N>* xp = reinterpret_cast<const Pack<uint8_t, N>*>(x + (p < 0 ? i : p) * F);
        Pack<T, N>* oi = reinterpret_cast<Pack<T, N>*>(out + i * F);
        // The channel of pack c, found by a division only when c enters a new channel: N divides
        // inner (checked on the host), so a pack never straddles two channels.
        int64_t channel_end = 0;  // first pack past the current channel
        float s = 0.0f, o = 0.0f;
        for (int64_t c = blockIdx.x * (int64_t)blockDim.x + threadIdx.x; c < packs;
             c += (int64_t)gridDim.x * blockDim.x) {
            if (c >= channel_end) {
                const int64_t ch = (c * N) / inner;
                channel_end = (ch + 1) * inner / N;
                s = scale[ch];
                o = bias[ch];
            }
            const Pack<uint8_t, N> a = xi[c];
            const Pack<uint8_t, N> b = xp[c];
            Pack<T, N> r;
#pragma unroll
            for (int k = 0; k < N; ++k) {
                const float va = __fadd_rn(__fmul_rn(to_f32(a.v[k]), s), o);
                const float vb = __fadd_rn(__fmul_rn(to_f32(b.v[k]), s), o);
                r.v[k] = from_f32<T>(p < 0 ? NAN : blend(va, l.lam, vb, l.one_minus));
            }
            oi[c] = r;
        }
    }
}

// dst[0, len) = src[0, len), or NaN where src is null (an invalid partner), by the threads
// lane, lane + lanes, ... N > 1: the aligned interior moves in 16-byte packs when src and dst
// sit at the same place in a pack, and the few elements before and after it one by one.
template <typename T, int N>
__device__ __forceinline__ void copy_span(const T* src, T* dst, int64_t len, int64_t lane, int64_t lanes) {
    const bool packed =
        N > 1 && (src == nullptr || (reinterpret_cast<uintptr_t>(src) - reinterpret_cast<uintptr_t>(dst)) % 16 == 0);
    const PackSplit sp = packed ? split_packs<T, N>(dst, len) : PackSplit{len, 0, len};
    for (int64_t c = lane; c < sp.head; c += lanes) dst[c] = src != nullptr ? src[c] : from_f32<T>(NAN);
    for (int64_t c = sp.tail + lane; c < len; c += lanes) dst[c] = src != nullptr ? src[c] : from_f32<T>(NAN);
    const Pack<T, N>* sp_packs = src != nullptr ? reinterpret_cast<const Pack<T, N>*>(src + sp.head) : nullptr;
    Pack<T, N>* dp = reinterpret_cast<Pack<T, N>*>(dst + sp.head);
    Pack<T, N> nan_pack;
#pragma unroll
    for (int k = 0; k < N; ++k) nan_pack.v[k] = from_f32<T>(NAN);
    for (int64_t q = lane; q < sp.packs; q += lanes) dp[q] = src != nullptr ? sp_packs[q] : nan_pack;
}

// CutMix on [B, C, H, W]: inside sample i's box the pixels come from its partner, outside from
// itself. boxes is [B, 4] (y0, y1, x0, x1; half-open) or null for the one batch box.
// Grid: a block's threads work in groups of `lanes` (a power of two), one image row a group;
// blockIdx.y strides over groups of the B * C * H rows (two divisions a row, none an element),
// blockIdx.x over the lanes of rows wider than one group. A row is at most three runs (own,
// partner, own), each copied in 16-byte packs where its alignment allows.
template <typename T, int N>
__device__ void cutmix_rows(const T* __restrict__ x, T* __restrict__ out, const int64_t* perm,
                            int pair_mode, int64_t shift, const int64_t* boxes, int64_t by0,
                            int64_t by1, int64_t bx0, int64_t bx1, int64_t B, int64_t C, int64_t H,
                            int64_t W, int lanes) {
    const int64_t rows = B * C * H;
    const int64_t groups = blockDim.x / lanes, group = threadIdx.x / lanes;
    const int64_t lane = blockIdx.x * (int64_t)lanes + threadIdx.x % lanes, all_lanes = (int64_t)gridDim.x * lanes;
    for (int64_t r = blockIdx.y * groups + group; r < rows; r += gridDim.y * groups) {
        const int64_t i = r / (C * H), h = r % H;
        const int64_t p = partner_of(i, B, pair_mode, perm, shift);
        int64_t y0 = by0, y1 = by1, x0 = bx0, x1 = bx1;
        if (boxes != nullptr) {
            y0 = boxes[4 * i + 0];
            y1 = boxes[4 * i + 1];
            x0 = boxes[4 * i + 2];
            x1 = boxes[4 * i + 3];
        }
        const T* own = x + r * W;
        T* dst = out + r * W;
        // The box's run of this row, [a, b) (empty outside the box's rows).
        const bool row_in_box = h >= y0 && h < y1;
        const int64_t a = row_in_box ? (x0 < 0 ? 0 : (x0 < W ? x0 : W)) : W;
        const int64_t b = row_in_box ? (x1 < a ? a : (x1 < W ? x1 : W)) : W;
        // The partner's pixel at the same (channel, h, w): row r shifted by whole samples.
        const T* other = p >= 0 ? x + (r + (p - i) * C * H) * W + a : nullptr;
        copy_span<T, N>(own, dst, a, lane, all_lanes);
        copy_span<T, N>(other, dst + a, b - a, lane, all_lanes);
        copy_span<T, N>(own + b, dst + b, W - b, lane, all_lanes);
    }
}

#define MIXUP_ENTRIES(SUFFIX, T)                                                                     \
    extern "C" __global__ void mixup_##SUFFIX(const T* x, T* out, const int64_t* perm,               \
                                              const float* lam_vec, float lam, float one_minus,       \
                                              int pair_mode, int64_t shift, int64_t B, int64_t F,     \
                                              int vectorized) {                                       \
        if (vectorized)                                                                               \
            mixup_any<T, 16 / sizeof(T)>(x, out, perm, lam_vec, lam, one_minus, pair_mode, shift, B, F); \
        else                                                                                          \
            mixup_any<T, 1>(x, out, perm, lam_vec, lam, one_minus, pair_mode, shift, B, F);          \
    }                                                                                                 \
    extern "C" __global__ void mixup_flip_inplace_##SUFFIX(T* x, const float* lam_vec, float lam,    \
                                                           float one_minus, int64_t B, int64_t F,     \
                                                           int vectorized) {                          \
        if (vectorized)                                                                               \
            mixup_flip_rows<T, 16 / sizeof(T)>(x, x, lam_vec, lam, one_minus, B, F);                 \
        else                                                                                          \
            mixup_flip_rows<T, 1>(x, x, lam_vec, lam, one_minus, B, F);                              \
    }                                                                                                 \
    extern "C" __global__ void mixup_u8_##SUFFIX(                                                    \
        const uint8_t* x, T* out, const int64_t* perm, const float* lam_vec, float lam,              \
        float one_minus, int pair_mode, int64_t shift, int64_t B, int64_t F, const float* scale,     \
        const float* bias, int64_t inner, int vectorized) {                                         \
        if (vectorized)                                                                               \
            mixup_u8_rows<T, 4>(x, out, perm, lam_vec, lam, one_minus, pair_mode, shift, B, F, scale, \
                                bias, inner);                                                      \
        else                                                                                          \
            mixup_u8_rows<T, 1>(x, out, perm, lam_vec, lam, one_minus, pair_mode, shift, B, F, scale, \
                                bias, inner);                                                      \
    }                                                                                                 \
    extern "C" __global__ void cutmix_##SUFFIX(const T* x, T* out, const int64_t* perm, int pair_mode, \
                                               int64_t shift, const int64_t* boxes, int64_t by0,      \
                                               int64_t by1, int64_t bx0, int64_t bx1, int64_t B,      \
                                               int64_t C, int64_t H, int64_t W, int vectorized,       \
                                               int lanes) {                                           \
        if (vectorized)                                                                               \
            cutmix_rows<T, 16 / sizeof(T)>(x, out, perm, pair_mode, shift, boxes, by0, by1, bx0, bx1, B, \
                                           C, H, W, lanes);                                          \
        else                                                                                          \
            cutmix_rows<T, 1>(x, out, perm, pair_mode, shift, boxes, by0, by1, bx0, bx1, B, C, H, W,  \
                              lanes);                                                                 \
    }

MIXUP_ENTRIES(f32, float)
MIXUP_ENTRIES(f16, __half)
MIXUP_ENTRIES(bf16, __nv_bfloat16)

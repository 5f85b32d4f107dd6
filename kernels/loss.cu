// Per-sample losses with their gradient in the same pass, and High-Loss Removal selection.
//
// ce_forward: a team of threads per row (grid-stride over rows): the block for long rows; for rows
//   of at most CE_TEAM_MAX_PACKS packs a team of lanes within a warp, about a lane a pack up to
//   32, many of which share a block (a block-wide reduction per short row would cost more than
//   its bytes, and a warp on a row of a few packs would leave most lanes idle). One online pass over the row gives the
//   softmax statistics (max, sum of exp, sum, argmax); the loss of the blended smoothed target
//   t = (1-eps) (lam e_ya + (1-lam) e_yb) + eps/C is  log1p(rest) - sum_c t_c (z_c - m), where
//   1 + rest = sum_c exp(z_c - m). A second pass over the same row writes
//   dlogits = (softmax - t) * w with w = 1 / n_kept, known before the launch (k = floor(r B) is
//   computed on the host). The gradient is stored as G: the logits' own dtype T, or f32 for half
//   logits under autograd, so that the node scales it by the incoming gradient (the loss scale
//   of mixed precision) before anything is rounded to 16 bits. The first pass keeps as much of the row as the block's shared memory
//   holds (all of a 50257-class f32 row on an H100) for the second, so a long row is read from
//   HBM once; what does not fit is read again. Rows move in 16-byte packs when C is a multiple
//   of the pack (else one value at a time, 4 in flight).
// mse_forward: per-sample mean squared error and its gradient in one pass; a long row is split
//   over several blocks whose partial sums mse_finish adds in a fixed order.
// loss_select: one block. Drops the k largest losses (ties: lower index first) with a radix
//   select over the range of the candidates' keys (at most three 11-bit passes), writes the
//   keep mask, the threshold, the mean over kept rows and the correct-prediction count.
// zero_removed: the gradient rows the selection dropped, zeroed by the whole grid after it.
// No host sync anywhere.
#include "common.cuh"
#include "reduce.cuh"

// Which rows count, passed by value: a row counts unless its label equals ignore_index (when
// has_ignore is set); without labels every row counts. The Rust twin is cuda::RowFilter.
struct RowFilter {
    const int64_t* labels;
    int64_t ignore_index;
    int32_t has_ignore;
};

__device__ __forceinline__ bool ignored(const RowFilter& f, int64_t label) {
    return f.has_ignore && label == f.ignore_index;
}

__device__ __forceinline__ bool row_valid(const RowFilter& f, int64_t i) {
    return f.labels == nullptr || !ignored(f, f.labels[i]);
}

// w * x, and exactly 0 when the weight is 0 (so 0 * -inf adds nothing); the CPU twin's `weighted`.
__device__ __forceinline__ float weighted(float w, float x) { return w != 0.0f ? w * x : 0.0f; }

// Packs of a row each thread loads before it uses the first: enough bytes in flight to cover
// HBM latency when a block that stages a long row has its SM to itself (1024 threads: 64 KB at
// 4 f32 packs, 32 KB at 2 f16/bf16 packs, whose 16 values a pack already take the 64 registers
// a thread of a 1024-thread block may have; 4 single values on the path for unaligned rows).
template <typename T, int N>
__host__ __device__ constexpr int ce_in_flight() {
    return N == 1 ? 4 : (sizeof(T) >= 4 ? 4 : 2);
}

static_assert(sizeof(RowStats) * 32 <= CE_SCRATCH_BYTES && CE_SCRATCH_BYTES % 16 == 0,
              "the block-reduction scratch fits in front of the staged row");

// One row's place in the block's dynamic shared memory (each row team's own slice): packs
// [0, staged) of the row are kept there by the statistics pass and read back by the gradient
// pass, so that they come from HBM once. Pack q is always the team's lane (q mod team size), in
// both passes and on every row, so a thread only reads back what it wrote itself: no barrier
// is needed between the passes.
template <typename T, int N>
struct Staging {
    Pack<T, N>* packs;
    int64_t staged;
};

// Keeps pack q of a row for the gradient pass when it is among the staged ones.
template <typename T, int N>
__device__ __forceinline__ void stage_pack(Staging<T, N> stage, int64_t q, const Pack<T, N>& pk) {
    if (q < stage.staged) stage.packs[q] = pk;
}

// One pack (N values from column c0) into the statistics.
template <typename T, int N>
__device__ __forceinline__ RowStats push_one_pack(RowStats st, const Pack<T, N>& pk, int c0) {
    float v[N];
#pragma unroll
    for (int k = 0; k < N; ++k) v[k] = to_f32(pk.v[k]);
    return row_stats_push_pack<N>(st, v, c0);
}

// The threads that share one row: the whole block, or `size` lanes of a warp. `lane` is a
// thread's place in the team.
struct RowTeam {
    int lane, size;
};

// The softmax statistics of one row of C / N packs: whole trips of ce_in_flight packs a thread,
// all loaded before the first is used, then the rest a pack at a time. Single values (N == 1)
// of a trip are pushed together as one pack whose columns lie a block apart, so they too pay
// one rescale per trip. Which thread takes which column depends on C alone, so equal rows give
// equal bits wherever they lie.
template <typename T, int N>
__device__ __forceinline__ RowStats row_stats_of(const T* z, int64_t C, Staging<T, N> stage, RowTeam team) {
    constexpr int F = ce_in_flight<T, N>();
    RowStats st = row_stats_identity();
    const Pack<T, N>* zp = reinterpret_cast<const Pack<T, N>*>(z);
    const int64_t packs = C / N, stride = team.size;
    int64_t q0 = team.lane;
    for (; q0 + (F - 1) * stride < packs; q0 += F * stride) {
        Pack<T, N> pk[F];
#pragma unroll
        for (int u = 0; u < F; ++u) pk[u] = zp[q0 + u * stride];
#pragma unroll
        for (int u = 0; u < F; ++u) stage_pack(stage, q0 + u * stride, pk[u]);
        if constexpr (N == 1) {
            float v[F];
#pragma unroll
            for (int u = 0; u < F; ++u) v[u] = to_f32(pk[u].v[0]);
            st = row_stats_push_pack<F>(st, v, (int)q0, (int)stride);
        } else {
#pragma unroll
            for (int u = 0; u < F; ++u) st = push_one_pack<T, N>(st, pk[u], (int)((q0 + u * stride) * N));
        }
    }
    for (; q0 < packs; q0 += stride) {
        const Pack<T, N> pk = zp[q0];
        stage_pack(stage, q0, pk);
        st = push_one_pack<T, N>(st, pk, (int)(q0 * N));
    }
    return st;
}

// What the gradient of one row needs besides its logits. Columns are 32-bit (C < 2^31, checked
// on the host); ya and yb are in range when `defined`.
struct GradRow {
    float m, rest, inv_s, l, on, off, w;
    int ya, yb;
    bool valid, defined;
};

// (softmax - t) * w at column c: 0 for a row that does not count, NaN for one without a softmax.
__device__ __forceinline__ float ce_grad_value(const GradRow& g, float x, int c) {
    const float e = exp_shift(x, g.m);
    const float t = g.off + (c == g.ya ? g.on * g.l : 0.0f) + (c == g.yb ? g.on * (1.0f - g.l) : 0.0f);
    // At a maximum (e == 1) p - t = (1 - t) - rest / (1 + rest): a confident row's p near 1
    // loses nothing to cancellation.
    const float v = (e == 1.0f ? (1.0f - t) - g.rest * g.inv_s : e * g.inv_s - t) * g.w;
    return !g.valid ? 0.0f : (g.defined ? v : NAN);
}

// Writes value(k), k < N, as G to pack q of N values of g, in 16-byte stores: one when G is the
// logits' dtype, two when an f32 gradient follows a pack of eight f16/bf16 logits. g is 16-byte
// aligned whenever N > 1 (checked on the host).
template <typename G, int N, typename V>
__device__ __forceinline__ void store_grad(G* g, int64_t q, V value) {
    constexpr int M = N * sizeof(G) > 16 ? 16 / (int)sizeof(G) : N;
    Pack<G, M>* gp = reinterpret_cast<Pack<G, M>*>(g) + q * (N / M);
#pragma unroll
    for (int j = 0; j < N / M; ++j) {
        Pack<G, M> out;
#pragma unroll
        for (int k = 0; k < M; ++k) out.v[k] = from_f32<G>(value(j * M + k));
        gp[j] = out;
    }
}

// Pack q of a row's gradient, from the pack of logits pk.
template <typename T, typename G, int N>
__device__ __forceinline__ void grad_pack(G* g, int64_t q, const GradRow& gr, const Pack<T, N>& pk) {
    const int c0 = (int)(q * N);
    store_grad<G, N>(g, q, [&](int k) { return ce_grad_value(gr, to_f32(pk.v[k]), c0 + k); });
}

// The loss gradient of one row, written N values at a time, in the statistics pass's trips;
// staged packs come from shared memory.
template <typename T, typename G, int N>
__device__ __forceinline__ void ce_grad_row(const T* z, G* g, int64_t C, Staging<T, N> stage, const GradRow& gr,
                                            RowTeam team) {
    constexpr int F = ce_in_flight<T, N>();
    const Pack<T, N>* zp = reinterpret_cast<const Pack<T, N>*>(z);
    const int64_t packs = C / N, stride = team.size;
    int64_t q0 = team.lane;
    for (; q0 + (F - 1) * stride < packs; q0 += F * stride) {
        Pack<T, N> pk[F];
#pragma unroll
        for (int u = 0; u < F; ++u) {
            const int64_t q = q0 + u * stride;
            pk[u] = q < stage.staged ? stage.packs[q] : zp[q];
        }
#pragma unroll
        for (int u = 0; u < F; ++u) grad_pack<T, G, N>(g, q0 + u * stride, gr, pk[u]);
    }
    for (; q0 < packs; q0 += stride) grad_pack<T, G, N>(g, q0, gr, q0 < stage.staged ? stage.packs[q0] : zp[q0]);
}

// N > 1 only when the host has checked C % N == 0 and 16-byte alignment of logits and grad;
// `staged` packs of each row are kept in shared memory between the passes (0 without a
// gradient, or when the device has no room), each team's behind the last's. G is the gradient's
// storage type. `lanes`: the threads of a row's team, a power of two up to 32, or 0 for the
// whole block (uniform over the launch, so the block-wide reduction's barriers are reached by
// every thread).
template <typename T, typename G, int N>
__device__ void ce_forward_rows(const T* __restrict__ logits, G* __restrict__ grad, float* __restrict__ losses,
                                int32_t* __restrict__ correct, RowFilter rows, const int64_t* y_b,
                                const float* lam_vec, float lam, float smoothing, const float* scale_ptr,
                                float scale, int64_t B, int64_t C, int write_grad, int64_t staged, int lanes) {
    RowStats* scratch = dynamic_shared<RowStats>();
    const bool block_rows = lanes == 0;
    const RowTeam team =
        block_rows ? RowTeam{(int)threadIdx.x, (int)blockDim.x} : RowTeam{(int)(threadIdx.x & (lanes - 1)), lanes};
    const int64_t teams = blockDim.x / team.size, t = threadIdx.x / team.size;
    const Staging<T, N> stage = {
        reinterpret_cast<Pack<T, N>*>(dynamic_shared<unsigned char>() + CE_SCRATCH_BYTES) + t * staged, staged};
    const float w_scale = scale_ptr != nullptr ? *scale_ptr : scale;
    // The teams of a warp take their trips together, led by the warp's first, so that its
    // shuffles see all 32 lanes; a team whose row is past the batch's end reduces nothing.
    const int64_t warp_teams = block_rows ? 1 : 32 / lanes, seat = t % warp_teams;
    for (int64_t lead = blockIdx.x * teams + t - seat; lead < B; lead += gridDim.x * teams) {
        const int64_t i = lead + seat;
        const bool live = i < B;
        const T* z = logits + (live ? i : lead) * C;
        const RowStats local = live ? row_stats_of<T, N>(z, C, stage, team) : row_stats_identity();
        const RowStats st = block_rows ? block_row_stats(local, scratch) : team_row_stats(local, lanes);
        if (!live) continue;

        const bool valid = row_valid(rows, i);
        const int64_t ya = rows.labels[i];
        // A partner whose label is ignored gives its weight to the row's own label.
        const int64_t yb = (y_b != nullptr && !ignored(rows, y_b[i])) ? y_b[i] : ya;
        const bool in_range = ya >= 0 && ya < C && yb >= 0 && yb < C;
        const float l = lam_vec != nullptr ? lam_vec[i] : lam;
        const float on = 1.0f - smoothing;
        const float off = smoothing / (float)C;
        const bool nan_row = (st.flags & ROW_NAN) || st.m == -INFINITY;
        float loss = 0.0f;
        if (valid) {
            if (in_range) {
                // loss = lse - t.z = log(s) - t.(z - m) (t sums to 1): no cancellation between m
                // and log(s), so small losses keep their relative precision. A zero target
                // weight adds nothing (0 log 0 = 0): a masked (-inf) logit matters only where the
                // target has weight, and then the loss is +inf, as PyTorch's.
                const float own = weighted(l, to_f32(z[ya]) - st.m) + weighted(1.0f - l, to_f32(z[yb]) - st.m);
                const float spread = (st.flags & ROW_NEG_INF) && off != 0.0f ? -INFINITY : st.sum - (float)C * st.m;
                const float shifted = weighted(on, own) + weighted(off, spread);
                // A row without a number (all -inf) or with a NaN has no softmax: NaN, as in PyTorch.
                loss = nan_row ? NAN : log1pf(st.rest) - shifted;
            } else {
                loss = NAN;  // a label out of range: visible, never a wild read (checked on the CPU path)
            }
        }
        if (team.lane == 0) {
            losses[i] = loss;
            correct[i] = (valid && !(st.flags & ROW_NAN) && st.arg == ya) ? 1 : 0;
        }
        if (write_grad) {
            const GradRow gr = {st.m, st.rest, 1.0f / (1.0f + st.rest), l, on, off, valid ? w_scale : 0.0f,
                                (int)ya, (int)yb, valid, in_range && !nan_row};
            ce_grad_row<T, G, N>(z, grad + i * C, C, stage, gr, team);
        }
    }
}

// Squared differences of one span of `len` elements (a multiple of N), N at a time with two
// packs of each input in flight, summed in f64 (each pack's squares in f32 first), with the
// gradient d * w written (as G) from the same loads when g is given.
template <typename T, typename G, int N>
__device__ __forceinline__ double mse_span(const T* p, const T* q, G* g, int64_t len, float w) {
    constexpr int U = 2;  // 64 bytes a thread in flight at 16-byte packs
    const Pack<T, N>* pp = reinterpret_cast<const Pack<T, N>*>(p);
    const Pack<T, N>* qp = reinterpret_cast<const Pack<T, N>*>(q);
    const int64_t packs = len / N, stride = blockDim.x;
    double acc = 0.0;
    for (int64_t k0 = threadIdx.x; k0 < packs; k0 += U * stride) {
        Pack<T, N> a[U], b[U];
#pragma unroll
        for (int u = 0; u < U; ++u)
            if (k0 + u * stride < packs) {
                a[u] = pp[k0 + u * stride];
                b[u] = qp[k0 + u * stride];
            }
#pragma unroll
        for (int u = 0; u < U; ++u) {
            if (k0 + u * stride >= packs) break;
            float d[N];
            float sq = 0.0f;
#pragma unroll
            for (int k = 0; k < N; ++k) {
                d[k] = to_f32(a[u].v[k]) - to_f32(b[u].v[k]);
                sq += d[k] * d[k];
            }
            acc += (double)sq;
            if (g != nullptr) store_grad<G, N>(g, k0 + u * stride, [&](int k) { return d[k] * w; });
        }
    }
    return acc;
}

// Per-sample mean squared error and its gradient 2 (p - q) / (F n_kept), one pass. Work items
// are (row, chunk) pairs, `chunks` to a row of `chunk` elements each (a multiple of 8), so that
// a long row is spread over many blocks. With one chunk a row the block writes the loss; with
// more it writes its f64 partial sum to partials[item], and mse_finish adds a row's partials in
// chunk order: the loss has the same bits on any grid (on one device and build; see the
// floating-point contract in docs/ARCHITECTURE.md). N > 1 only when F % N == 0
// and every tensor is 16-byte aligned. `scratch` is the entry's __shared__ double[32]: shared
// arrays are declared in the entries, never in templates (the emulator cannot place a template's
// static in its shared memory section; emulator/build.rs refuses one).
template <typename T, typename G, int N>
__device__ void mse_forward_rows(const T* __restrict__ pred, const T* __restrict__ target, G* __restrict__ grad,
                                 float* __restrict__ losses, double* __restrict__ partials, float scale, int64_t B,
                                 int64_t F, int64_t chunk, int64_t chunks, int write_grad, double* scratch) {
    const float w = 2.0f * scale / (float)F;
    for (int64_t item = blockIdx.x; item < B * chunks; item += gridDim.x) {
        const int64_t i = item / chunks, lo = item % chunks * chunk;
        const int64_t len = F - lo < chunk ? F - lo : chunk;
        const int64_t at = i * F + lo;
        const double acc = mse_span<T, G, N>(pred + at, target + at, write_grad ? grad + at : nullptr, len, w);
        const double total = block_sum(acc, scratch);
        if (threadIdx.x == 0) {
            if (partials != nullptr) partials[item] = total;
            else losses[i] = (float)(total / (double)F);
        }
    }
}

// losses[i] = (the sum of row i's `chunks` partials, in chunk order) / F; one thread a row.
extern "C" __global__ void mse_finish(const double* partials, int64_t chunks, int64_t B, int64_t F, float* losses) {
    for (int64_t i = blockIdx.x * (int64_t)blockDim.x + threadIdx.x; i < B; i += (int64_t)gridDim.x * blockDim.x) {
        double total = 0.0;
        for (int64_t j = 0; j < chunks; ++j) total += partials[i * chunks + j];
        losses[i] = (float)(total / (double)F);
    }
}

// Orders losses as unsigned keys: larger loss -> larger key. Key 0 marks rows that can never be
// dropped: ignored rows and NaN losses (a NaN must reach the mean, never be removed silently).
__device__ __forceinline__ uint32_t rank_key(float loss, bool candidate) {
    if (!candidate || isnan(loss)) return 0u;
    const uint32_t b = __float_as_uint(loss);
    return (b & 0x80000000u) ? ~b : (b | 0x80000000u);
}

__device__ __forceinline__ float key_to_float(uint32_t k) {
    return __uint_as_float((k & 0x80000000u) ? (k & 0x7fffffffu) : ~k);
}

// Block totals of the rows one block marked.
struct Marked {
    double kept_sum, kept_n, correct;
};

// Marks rows [lo, hi) (each thread a contiguous sub-range, in index order): keys above the
// k-th key `kth` are dropped; of the keys equal to it, those whose rank among the ties (the
// `ties_before` of earlier blocks, then index order) is below `remaining`. Writes keep[] and
// returns the block's kept-loss sum, kept count and correct count to every thread.
__device__ Marked mark_rows(const float* losses, RowFilter rows,
                            const int32_t* correct, int64_t lo, int64_t hi, uint32_t kth, int64_t k_eff,
                            int64_t remaining, int64_t ties_before, uint8_t* keep, double* dscratch,
                            int64_t* iscratch) {
    const int64_t sub = (hi - lo + blockDim.x - 1) / blockDim.x;
    const int64_t a = lo + threadIdx.x * sub < hi ? lo + threadIdx.x * sub : hi;
    const int64_t b = a + sub < hi ? a + sub : hi;
    int64_t eq = 0;
    if (k_eff > 0)
        for (int64_t i = a; i < b; ++i) eq += rank_key(losses[i], row_valid(rows, i)) == kth ? 1 : 0;
    int64_t eq_before = ties_before + block_exclusive_scan(eq, iscratch);
    double kept_sum = 0.0, kept_n = 0.0, n_correct = 0.0;
    for (int64_t i = a; i < b; ++i) {
        const bool valid = row_valid(rows, i);
        const uint32_t key = rank_key(losses[i], valid);
        bool dropped = false;
        if (k_eff > 0 && key != 0u) {
            if (key > kth) dropped = true;
            else if (key == kth) dropped = (eq_before++ < remaining);
        }
        const bool kept = valid && !dropped;
        keep[i] = kept ? 1 : 0;
        if (kept) {
            kept_sum += (double)losses[i];
            kept_n += 1.0;
        }
        n_correct += correct != nullptr ? (double)correct[i] : 0.0;
    }
    Marked m;
    m.kept_sum = block_sum(kept_sum, dscratch);
    m.kept_n = block_sum(kept_n, dscratch);
    m.correct = block_sum(n_correct, dscratch);
    return m;
}

// ---- Zeroing the gradient rows High-Loss Removal dropped ---------------------------------------
// ce_forward / mse_forward write every row's gradient before any threshold exists (it depends on
// every loss of the batch), so the rows dropped afterwards must be overwritten with 0. This is a
// launch of its own over the whole grid, after the selection: it reads keep[] (1 byte a row,
// plus the label where rows can be ignored) and writes the k dropped rows once, k x row_bytes in
// all. The alternatives move more: writing the gradient only after the selection would read
// every row of logits a second time (B x C x sizeof(T)) to save the k rows' writes, and the
// selection's own blocks (one SM for loss_select) cannot stream k x row_bytes at HBM speed.
// Grid: a block's threads work in groups of `lanes` (a power of two, about a row's 16-byte
// stores), one row a group; y strides over groups of rows, x over the stores of rows wider than a
// group. Short rows (a few classes) thus share a block instead of leaving 255 threads idle, and a
// group on a kept row moves on at once.

// Zeroes `units` values of U from `row`: this lane's stores of the grid-stride over the row.
template <typename U>
__device__ __forceinline__ void zero_units(uint8_t* row, int64_t units, int64_t lane, int64_t all_lanes) {
    U* r = reinterpret_cast<U*>(row);
    for (int64_t j = lane; j < units; j += all_lanes) r[j] = U{};
}

// 16-byte stores when the gradient and its rows are 16-byte aligned (f32 with C % 4 == 0,
// halves with C % 8 == 0); otherwise the widest store that divides both (elements are 2 or 4
// bytes, so 2 at the least). Launched with the row grid's 256 threads (launch.rs, BLOCK); the
// bound keeps it at 31 registers, 8 blocks an SM (40 without it: 6).
extern "C" __global__ void __launch_bounds__(256, 8) zero_removed(const uint8_t* keep, RowFilter rows, int64_t B,
                                                                  uint8_t* grad_bytes, int64_t row_bytes, int lanes) {
    const uint64_t align = (uint64_t)row_bytes | (uint64_t)(uintptr_t)grad_bytes;
    const int64_t groups = blockDim.x / lanes, group = threadIdx.x / lanes;
    const int64_t lane = blockIdx.x * (int64_t)lanes + threadIdx.x % lanes, all_lanes = (int64_t)gridDim.x * lanes;
    for (int64_t i = blockIdx.y * groups + group; i < B; i += gridDim.y * groups) {
        if (keep[i] || !row_valid(rows, i)) continue;  // the same for the whole group
        uint8_t* row = grad_bytes + i * row_bytes;
        if (align % 16 == 0) zero_units<uint4>(row, row_bytes / 16, lane, all_lanes);
        else if (align % 4 == 0) zero_units<uint32_t>(row, row_bytes / 4, lane, all_lanes);
        else zero_units<uint16_t>(row, row_bytes / 2, lane, all_lanes);
    }
}

// The radix select works on offsets o = key - lo from the smallest candidate key lo, over the
// bit length of hi - lo (hi the largest), RADIX_BITS at a time from the top. Losses fill a few
// of the 256 top-byte bins of the raw keys (all of [0.01, 20] is 11 exponents), while bins over
// [lo, hi] split the batch's own range; a range of 2^22 keys or fewer takes two passes, any
// range at most three.
#define RADIX_BINS (1 << RADIX_BITS)  // RADIX_BITS: kernels/constants.txt

// The candidates (key != 0) among the rows a thread visits, and their smallest and largest key.
struct KeyRange {
    uint32_t lo, hi;
    double n;
};

__device__ __forceinline__ KeyRange reduce_merge(KeyRange a, KeyRange b) {
    return {a.lo < b.lo ? a.lo : b.lo, a.hi > b.hi ? a.hi : b.hi, a.n + b.n};
}

__device__ __forceinline__ KeyRange shfl_down(KeyRange v, int offset) {
    return {__shfl_down_sync(FULL_MASK, v.lo, offset), __shfl_down_sync(FULL_MASK, v.hi, offset),
            __shfl_down_sync(FULL_MASK, v.n, offset)};
}

// This block's share of the rows (block-widths first_block, first_block + blocks, ...).
__device__ KeyRange key_range(const float* losses, RowFilter rows, int64_t B, int64_t first_block, int64_t blocks,
                              KeyRange* scratch) {
    KeyRange r = {0xffffffffu, 0u, 0.0};
    for (int64_t i = first_block * blockDim.x + threadIdx.x; i < B; i += blocks * blockDim.x) {
        const uint32_t key = rank_key(losses[i], row_valid(rows, i));
        if (key != 0u) r = reduce_merge(r, KeyRange{key, key, 1.0});
    }
    return block_reduce(r, KeyRange{0xffffffffu, 0u, 0.0}, scratch);
}

// Offset bits a range [lo, hi] needs: the bit length of hi - lo (0 when every key is lo).
__device__ __forceinline__ int range_bits(uint32_t lo, uint32_t hi) { return hi > lo ? 32 - __clz(hi - lo) : 0; }

// One radix pass: the digit is offset bits [shift, shift + width), and the bits above them must
// equal `prefix` (mask: the bits above shift + width).
struct RadixPass {
    uint32_t lo, prefix, mask;
    int shift, width;
};

__device__ __forceinline__ RadixPass radix_pass(uint32_t lo, uint32_t prefix, int bits_left) {
    const int width = bits_left < RADIX_BITS ? bits_left : RADIX_BITS;
    return {lo, prefix, (uint32_t)~((1ull << bits_left) - 1ull), bits_left - width, width};
}

// Adds this block's share of the candidates whose offset matches the pass's prefix to
// hist[digit]. Lanes of a warp with the same bin add once (__match_any_sync), so ties and
// crowded bins cost one shared atomic per warp, not one per row. Every thread runs the same
// number of iterations, so each warp call has its full warp.
__device__ void histogram_add(const float* losses, RowFilter rows, int64_t B, int64_t first_block, int64_t blocks,
                              const RadixPass& p, unsigned int* hist) {
    const int lane = threadIdx.x & 31;
    const int64_t step = blocks * blockDim.x;
    for (int64_t base = first_block * blockDim.x; base < B; base += step) {
        const int64_t i = base + threadIdx.x;
        const uint32_t key = i < B ? rank_key(losses[i], row_valid(rows, i)) : 0u;
        const uint32_t o = key - p.lo;
        const bool counted = key != 0u && (o & p.mask) == p.prefix;
        const uint32_t bin = counted ? (o >> p.shift) & ((1u << p.width) - 1u) : 0xffffffffu;
        const unsigned peers = __match_any_sync(FULL_MASK, bin);
        if (counted && lane == __ffs(peers) - 1) atomicAdd(&hist[bin], (unsigned)__popc(peers));
    }
}

// The digit d whose bin holds the remaining-th largest key, and how many keys of that bin are
// still to drop: the block scans the RADIX_BINS bins from the top together (thread t owns the
// RADIX_BINS / blockDim.x bins below RADIX_BINS - 1 - t * that many), no thread walks them all.
// Digit 0 takes whatever is left, as a serial walk that stops at 0 would. blockDim.x divides
// RADIX_BINS; ends with a barrier.
__device__ void pick_digit(const unsigned int* hist, int64_t remaining, uint32_t* digit, int64_t* left,
                           int64_t* iscratch) {
    const int per = RADIX_BINS / blockDim.x, top = RADIX_BINS - 1 - (int)threadIdx.x * per;
    int64_t mine = 0;
    for (int j = 0; j < per; ++j) mine += hist[top - j];
    int64_t above = block_exclusive_scan(mine, iscratch);  // keys in the bins above this thread's
    for (int j = 0; j < per; ++j) {
        const int d = top - j;
        const int64_t count = hist[d];
        if (above < remaining && (above + count >= remaining || d == 0)) {
            *digit = (uint32_t)d;
            *left = remaining - above;
        }
        above += count;
    }
    __syncthreads();
}

extern "C" __global__ void loss_select(const float* losses, RowFilter rows,
                                       const int32_t* correct, int64_t B, int64_t k, uint8_t* keep,
                                       float* threshold_out, float* mean_out, int64_t* correct_out) {
    __shared__ unsigned int hist[RADIX_BINS];
    __shared__ KeyRange rscratch[32];
    __shared__ double dscratch[32];
    __shared__ int64_t iscratch[32];
    __shared__ uint32_t s_digit;
    __shared__ int64_t s_remaining;
    const int tid = threadIdx.x, nt = blockDim.x;

    // How many rows can be dropped at all, and the range of their keys.
    const KeyRange range = key_range(losses, rows, B, 0, 1, rscratch);
    const int64_t n_cand = (int64_t)range.n;
    const int64_t k_eff = k < n_cand ? k : n_cand;

    // Radix select of the k_eff-th largest key: its offset from range.lo, digit by digit.
    uint32_t prefix = 0u;
    int64_t remaining = k_eff;
    if (k_eff > 0) {
        for (int bits_left = range_bits(range.lo, range.hi); bits_left > 0;) {
            const RadixPass p = radix_pass(range.lo, prefix, bits_left);
            for (int j = tid; j < RADIX_BINS; j += nt) hist[j] = 0u;
            __syncthreads();
            histogram_add(losses, rows, B, 0, 1, p, hist);
            __syncthreads();
            pick_digit(hist, remaining, &s_digit, &s_remaining, iscratch);
            prefix |= s_digit << p.shift;
            remaining = s_remaining;
            bits_left = p.shift;
            __syncthreads();
        }
    }
    const uint32_t kth = range.lo + prefix;
    const Marked m = mark_rows(losses, rows, correct, 0, B, kth, k_eff, remaining, 0, keep,
                               dscratch, iscratch);
    if (tid == 0) {
        *mean_out = (float)(m.kept_sum / m.kept_n);
        *threshold_out = k_eff > 0 ? key_to_float(kth) : INFINITY;
        *correct_out = (int64_t)m.correct;
    }
}

// ---- Multi-block selection for large B (token-level ranking, up to 2^24 rows) ----------------
// The same answer as loss_select, in launches over many blocks:
//   select_init -> select_range -> 3 x (select_hist over all blocks -> select_digit)
//   -> select_eq_count -> select_mark -> select_final.
// Passes the range does not need return at once. state: int64[SELECT_STATE_LEN], indexed by
// SelectState; hist: uint32[RADIX_BINS].
enum SelectState {
    ST_PREFIX,      // the offset bits of the k-th key found so far
    ST_REMAINING,   // keys still to drop among those that match the prefix
    ST_K_EFF,       // k until the candidates are counted, then min(k, candidates)
    ST_CANDIDATES,  // rows that can be dropped at all
    ST_LO,          // the smallest and largest candidate key
    ST_HI,
    ST_BITS_LEFT,   // offset bits still to find after the last pass
    ST_COUNT
};
static_assert(ST_COUNT == SELECT_STATE_LEN, "kernels/constants.txt sizes the state tensor");

// The k-th key once the passes are done.
__device__ __forceinline__ uint32_t kth_key(const int64_t* state) {
    return (uint32_t)state[ST_LO] + (uint32_t)state[ST_PREFIX];
}

// Offset bits still to find before pass `pass` (every block reads the same state).
__device__ __forceinline__ int bits_left_at(const int64_t* state, int pass) {
    return pass == 0 ? range_bits((uint32_t)state[ST_LO], (uint32_t)state[ST_HI]) : (int)state[ST_BITS_LEFT];
}

extern "C" __global__ void select_init(int64_t* state, unsigned int* hist, int64_t k) {
    for (int j = threadIdx.x; j < RADIX_BINS; j += blockDim.x) hist[j] = 0u;
    if (threadIdx.x == 0) {
        state[ST_PREFIX] = 0;
        state[ST_REMAINING] = k;
        state[ST_K_EFF] = k;
        state[ST_CANDIDATES] = 0;
        state[ST_LO] = 0xffffffffll;
        state[ST_HI] = 0;
        state[ST_BITS_LEFT] = 0;
    }
}

// Every block adds its candidate count and widens [lo, hi] with integer atomics, whose result
// does not depend on the order the blocks run in.
extern "C" __global__ void select_range(const float* losses, RowFilter rows, int64_t B, int64_t* state) {
    __shared__ KeyRange scratch[32];
    const KeyRange r = key_range(losses, rows, B, blockIdx.x, gridDim.x, scratch);
    if (threadIdx.x == 0 && r.n > 0.0) {
        atomicAdd(reinterpret_cast<unsigned long long*>(&state[ST_CANDIDATES]), (unsigned long long)r.n);
        atomicMin(reinterpret_cast<unsigned long long*>(&state[ST_LO]), (unsigned long long)r.lo);
        atomicMax(reinterpret_cast<unsigned long long*>(&state[ST_HI]), (unsigned long long)r.hi);
    }
}

extern "C" __global__ void select_hist(const float* losses, RowFilter rows,
                                       int64_t B, int64_t* state, unsigned int* hist, int pass) {
    __shared__ unsigned int local[RADIX_BINS];
    const int64_t k_eff = state[ST_K_EFF] < state[ST_CANDIDATES] ? state[ST_K_EFF] : state[ST_CANDIDATES];
    const int bits_left = bits_left_at(state, pass);
    if (k_eff == 0 || bits_left == 0) return;  // the same for every thread of every block
    for (int j = threadIdx.x; j < RADIX_BINS; j += blockDim.x) local[j] = 0u;
    __syncthreads();
    const RadixPass p = radix_pass((uint32_t)state[ST_LO], (uint32_t)state[ST_PREFIX], bits_left);
    histogram_add(losses, rows, B, blockIdx.x, gridDim.x, p, local);
    __syncthreads();
    for (int j = threadIdx.x; j < RADIX_BINS; j += blockDim.x)
        if (local[j] != 0u) atomicAdd(&hist[j], local[j]);
}

extern "C" __global__ void select_digit(int64_t* state, unsigned int* hist, int pass) {
    __shared__ int64_t iscratch[32];
    __shared__ uint32_t s_digit;
    __shared__ int64_t s_left;
    const int bits_left = bits_left_at(state, pass);  // read before thread 0 writes the state
    __syncthreads();
    if (pass == 0 && threadIdx.x == 0) {
        const int64_t k_eff = state[ST_K_EFF] < state[ST_CANDIDATES] ? state[ST_K_EFF] : state[ST_CANDIDATES];
        state[ST_K_EFF] = k_eff;
        state[ST_REMAINING] = k_eff;
    }
    __syncthreads();
    if (state[ST_K_EFF] > 0 && bits_left > 0) {  // the same for every thread of the block
        const RadixPass p = radix_pass((uint32_t)state[ST_LO], (uint32_t)state[ST_PREFIX], bits_left);
        pick_digit(hist, state[ST_REMAINING], &s_digit, &s_left, iscratch);
        if (threadIdx.x == 0) {
            state[ST_PREFIX] |= (int64_t)(s_digit << p.shift);
            state[ST_REMAINING] = s_left;
            state[ST_BITS_LEFT] = p.shift;
        }
        __syncthreads();
        for (int j = threadIdx.x; j < RADIX_BINS; j += blockDim.x) hist[j] = 0u;  // ready for the next pass
    } else if (threadIdx.x == 0) {
        state[ST_BITS_LEFT] = 0;  // nothing (more) to find: later passes return at once
    }
}

// Each block counts, in its rows [blockIdx.x * chunk, ...), the keys equal to the k-th key.
extern "C" __global__ void select_eq_count(const float* losses, RowFilter rows, int64_t B, int64_t chunk, const int64_t* state,
                                           int64_t* block_eq) {
    __shared__ double scratch[32];
    const uint32_t kth = kth_key(state);
    const int64_t lo = blockIdx.x * chunk < B ? blockIdx.x * chunk : B;
    const int64_t hi = lo + chunk < B ? lo + chunk : B;
    double eq = 0.0;
    if (state[ST_K_EFF] > 0)
        for (int64_t i = lo + threadIdx.x; i < hi; i += blockDim.x)
            eq += rank_key(losses[i], row_valid(rows, i)) == kth ? 1.0 : 0.0;
    const double total = block_sum(eq, scratch);
    if (threadIdx.x == 0) block_eq[blockIdx.x] = (int64_t)total;
}

// Each block owns rows [blockIdx.x * chunk, ...): from the tie counts of the blocks before it
// (select_eq_count), marks its rows (ties: lower index dropped first) and writes its partial
// sums (kept loss, kept count, correct) for select_final.
extern "C" __global__ void select_mark(const float* losses, RowFilter rows,
                                       const int32_t* correct, int64_t B, int64_t chunk, const int64_t* state,
                                       const int64_t* block_eq, uint8_t* keep, double* partials) {
    __shared__ double dscratch[32];
    __shared__ int64_t iscratch[32];
    const int tid = threadIdx.x, nt = blockDim.x;
    const uint32_t kth = kth_key(state);
    const int64_t k_eff = state[ST_K_EFF], remaining = state[ST_REMAINING];
    const int64_t lo = blockIdx.x * chunk < B ? blockIdx.x * chunk : B;
    const int64_t hi = lo + chunk < B ? lo + chunk : B;
    // Ties in the blocks before this one.
    double before = 0.0;
    for (int64_t blk = tid; blk < blockIdx.x; blk += nt) before += (double)block_eq[blk];
    const int64_t eq_blocks_before = (int64_t)block_sum(before, dscratch);
    const Marked m = mark_rows(losses, rows, correct, lo, hi, kth, k_eff, remaining,
                               eq_blocks_before, keep, dscratch, iscratch);
    if (tid == 0) {
        partials[3 * blockIdx.x + 0] = m.kept_sum;
        partials[3 * blockIdx.x + 1] = m.kept_n;
        partials[3 * blockIdx.x + 2] = m.correct;
    }
}

// Sums the blocks' partials in a fixed order: mean over kept rows, threshold, correct count.
extern "C" __global__ void select_final(const double* partials, int64_t blocks, const int64_t* state,
                                        float* threshold_out, float* mean_out, int64_t* correct_out) {
    __shared__ double scratch[32];
    double s[3] = {0.0, 0.0, 0.0};
    for (int64_t blk = threadIdx.x; blk < blocks; blk += blockDim.x)
        for (int j = 0; j < 3; ++j) s[j] += partials[3 * blk + j];
    const double total = block_sum(s[0], scratch);
    const double count = block_sum(s[1], scratch);
    const double right = block_sum(s[2], scratch);
    if (threadIdx.x == 0) {
        *mean_out = (float)(total / count);
        *threshold_out = state[ST_K_EFF] > 0 ? key_to_float(kth_key(state)) : INFINITY;
        *correct_out = (int64_t)right;
    }
}

// The number of non-ignored labels, and the gradient weight 1 / (n_valid - min(k, n_valid)).
extern "C" __global__ void loss_count_valid(const int64_t* y, int64_t ignore_index, int64_t B, int64_t k,
                                            float* scale_out) {
    __shared__ double scratch[32];
    double n = 0.0;
    for (int64_t i = threadIdx.x; i < B; i += blockDim.x) n += y[i] != ignore_index ? 1.0 : 0.0;
    const double n_valid = block_sum(n, scratch);
    if (threadIdx.x == 0) {
        const double kept = n_valid - (k < n_valid ? (double)k : n_valid);
        *scale_out = kept > 0.0 ? (float)(1.0 / kept) : 0.0f;
    }
}

// One entry per (logits dtype T, gradient dtype G): G = T for the plain forms, G = f32 for half
// logits whose gradient an autograd node scales before rounding (SUFFIX names both).
#define LOSS_ENTRIES(SUFFIX, T, G)                                                                        \
    extern "C" __global__ void __launch_bounds__(1024) ce_forward_##SUFFIX(                                \
        const T* logits, G* grad, float* losses, int32_t* correct, RowFilter rows, const int64_t* y_b,     \
        const float* lam_vec, float lam, float smoothing, const float* scale_ptr, float scale, int64_t B,   \
        int64_t C, int write_grad, int vectorized, int64_t staged, int lanes) {                            \
        if (vectorized)                                                                                    \
            ce_forward_rows<T, G, 16 / sizeof(T)>(logits, grad, losses, correct, rows, y_b, lam_vec, lam,  \
                                                  smoothing, scale_ptr, scale, B, C, write_grad, staged,    \
                                                  lanes);                                                  \
        else                                                                                               \
            ce_forward_rows<T, G, 1>(logits, grad, losses, correct, rows, y_b, lam_vec, lam, smoothing,    \
                                     scale_ptr, scale, B, C, write_grad, staged, lanes);                   \
    }                                                                                                      \
    extern "C" __global__ void __launch_bounds__(MSE_MAX_THREADS) mse_forward_##SUFFIX(                    \
        const T* pred, const T* target, G* grad, float* losses, double* partials, float scale, int64_t B,   \
        int64_t F, int64_t chunk, int64_t chunks, int write_grad, int vectorized) {                        \
        __shared__ double scratch[32];                                                                     \
        if (vectorized)                                                                                    \
            mse_forward_rows<T, G, 16 / sizeof(T)>(pred, target, grad, losses, partials, scale, B, F,      \
                                                   chunk, chunks, write_grad, scratch);                    \
        else                                                                                               \
            mse_forward_rows<T, G, 1>(pred, target, grad, losses, partials, scale, B, F, chunk, chunks,    \
                                      write_grad, scratch);                                                \
    }

LOSS_ENTRIES(f32, float, float)
LOSS_ENTRIES(f16, __half, __half)
LOSS_ENTRIES(bf16, __nv_bfloat16, __nv_bfloat16)
LOSS_ENTRIES(f16_g32, __half, float)
LOSS_ENTRIES(bf16_g32, __nv_bfloat16, float)

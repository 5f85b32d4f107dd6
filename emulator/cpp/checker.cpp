// The emulator's memory checker: it sees every load and store an emulated kernel makes, and
// refuses what a GPU would not promise.
//
// How it sees them. build.rs compiles the kernels' translation unit with GCC's ThreadSanitizer
// instrumentation (-fsanitize=thread, function entry and exit hooks off) but links no libtsan:
// the hooks the compiler calls before each access (__tsan_read4(addr), __tsan_write16(addr),
// __tsan_read_range(addr, n), ...) are defined here. Atomics announce themselves through
// emu_atomic_access (cuda_emu.h). Outside a launch the hooks return at once.
//
// What it tracks, one shadow cell per byte: the launch's written tensors, the static shared
// memory section and the dynamic shared buffer. A cell keeps the last write
// (interval, thread, the thread's warp-call count, atomic or not) and the last read (the same,
// and whether several threads, warps or blocks read it). An interval is the stretch of a block
// between two block barriers: every thread that runs is in the block's current interval, because
// a barrier releases only when all have arrived. Intervals are numbered across the process, so
// a cell written in an earlier block or launch is simply older than the block's first interval.
//
// What it refuses, naming kernel, block, thread, variable or argument, element and the other
// thread:
// - a data race inside a block: two threads touch a byte in the same interval, at least one of
//   them with a plain write, and no warp call orders them (lanes of one warp are ordered by a
//   warp call both passed: the later lane has passed more warp calls than the earlier had);
// - a read of shared memory this block has not written (static or dynamic);
// - between blocks of one launch: a byte of a tensor written by two blocks without atomics on
//   both sides, or read by one block and written by another (the result would depend on the
//   order blocks run in);
// - an access outside the bytes a kernel may touch: a static shared array's red zones (each array
//   is bounded at its exact size), the bytes before the dynamic buffer or after its exact end,
//   the bytes between a tensor and its guard page, and any write to an input.
#include "checker.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <algorithm>
#include <vector>

#include "cuda_emu.h"

// The section holding every __shared__ variable (linker-defined bounds).
extern "C" char __start_emu_shared[] __attribute__((weak));
extern "C" char __stop_emu_shared[] __attribute__((weak));

namespace emu {

namespace {

enum Access : int { READ, WRITE, ATOMIC };
enum : uint8_t { W_ATOMIC = 1, R_SEVERAL = 2, R_WARPS = 4, R_BLOCKS = 8 };

struct Cell {
    uint32_t w_interval, r_interval;
    uint32_t w_calls, r_calls;  // the thread's warp-call count at the access (readers: the most)
    uint16_t w_thread, r_thread;
    uint8_t flags;
};

enum class Kind { StaticShared, DynamicShared, Tensor };

// A range the hooks test: `lo..hi` is everything a stray access could reach (a tensor's whole
// mapping, the dynamic buffer's mapping), `data_lo..data_hi` what the kernel may touch.
struct Range {
    Kind kind;
    const char* name;
    uintptr_t lo, hi, data_lo, data_hi;
    uint32_t elem_size;  // for element numbers in messages
    bool writable;
    Cell* cells;         // null for inputs (reads are free, writes refused)
};

// Whether this OS thread runs a checked launch: the hooks also run in instrumented code outside
// launches (the entry table's lookup, on any thread), which must not read another thread's state.
thread_local bool t_active = false;

struct State {
    uint32_t interval = 0, block_first = 0, launch_first = 0;
    std::vector<std::pair<uint32_t, uint64_t>> blocks;  // (first interval, linear block)
    std::vector<uint32_t> warp_calls;                   // per thread of the running block
    std::vector<Range> ranges;
    std::vector<Cell*> tensor_cells;
    std::vector<Cell> static_cells, dynamic_cells;
    std::vector<uint16_t> owner;  // per byte of the section: shared array + 1, 0 in a red zone
    dim3 block_dim, grid_dim;
} g;

uint3 coords(uint64_t linear, dim3 d) {
    return {(unsigned)(linear % d.x), (unsigned)(linear / d.x % d.y), (unsigned)(linear / ((uint64_t)d.x * d.y))};
}

// "thread (x, y, z)" of this block, or "block (..), thread (..)" of the block owning `interval`.
void describe_thread(uint32_t interval, uint16_t t, char* out, size_t n) {
    const uint3 th = coords(t, g.block_dim);
    if (interval >= g.block_first) {
        snprintf(out, n, "thread (%u, %u, %u)", th.x, th.y, th.z);
        return;
    }
    auto it = std::upper_bound(g.blocks.begin(), g.blocks.end(), std::make_pair(interval, UINT64_MAX));
    const uint64_t block = it == g.blocks.begin() ? 0 : std::prev(it)->second;
    const uint3 b = coords(block, g.grid_dim);
    snprintf(out, n, "block (%u, %u, %u) thread (%u, %u, %u)", b.x, b.y, b.z, th.x, th.y, th.z);
}

// "element E of `out`", "byte B of shared `zero_counts::seen`" or "byte B of the dynamic shared
// memory".
void describe_place(const Range& r, uintptr_t a, char* out, size_t n) {
    switch (r.kind) {
        case Kind::Tensor:
            snprintf(out, n, "element %llu of `%s`", (unsigned long long)((a - r.data_lo) / r.elem_size), r.name);
            return;
        case Kind::DynamicShared:
            snprintf(out, n, "byte %llu of the dynamic shared memory", (unsigned long long)(a - r.data_lo));
            return;
        case Kind::StaticShared: {
            const uint16_t o = g.owner[a - r.lo];
            const SharedArray& s = shared_arrays[o - 1];
            snprintf(out, n, "byte %llu of shared `%s`", (unsigned long long)(a - r.lo - s.offset), s.name);
            return;
        }
    }
}

const char* verb(Access acc) { return acc == READ ? "reads" : acc == WRITE ? "writes" : "atomically updates"; }
const char* noun(Access acc) { return acc == READ ? "read" : acc == WRITE ? "write" : "atomic update"; }

bool same_warp_ordered(uint16_t other, uint32_t other_calls, int t) {
    return (other >> 5) == (t >> 5) && g.warp_calls[t] > other_calls;
}

void report(const Range& r, uintptr_t a, Access acc, const char* what, uint32_t interval, uint16_t other) {
    char place[256], who[96];
    describe_place(r, a, place, sizeof place);
    describe_thread(interval, other, who, sizeof who);
    fail_running("%s %s, %s %s", verb(acc), place, who, what);
}

// The rules for one cell; false once the launch has failed.
bool check_cell(const Range& r, Cell& c, uintptr_t a, int t, Access acc) {
    const uint32_t now = g.interval, first = g.block_first;
    const bool tensor = r.kind == Kind::Tensor, w_atomic = (c.flags & W_ATOMIC) != 0;
    const bool earlier_block_wrote = tensor && c.w_interval >= g.launch_first && c.w_interval < first;
    if (earlier_block_wrote && !(acc == ATOMIC && w_atomic)) {
        report(r, a, acc, "wrote it in the same launch (blocks run in no promised order; only atomics may share a "
                          "byte between blocks)", c.w_interval, c.w_thread);
        return false;
    }
    const bool earlier_block_read =
        tensor && ((c.r_interval >= g.launch_first && c.r_interval < first) || (c.flags & R_BLOCKS));
    if (acc != READ && earlier_block_read) {
        report(r, a, acc, "read it in the same launch (blocks run in no promised order)", c.r_interval, c.r_thread);
        return false;
    }
    if (!tensor && acc != WRITE && c.w_interval < first) {
        char place[256];
        describe_place(r, a, place, sizeof place);
        fail_running("%s uninitialised %s", verb(acc), place);
        return false;
    }
    if (c.w_interval == now && c.w_thread != t && !same_warp_ordered(c.w_thread, c.w_calls, t) &&
        (!w_atomic || acc == WRITE)) {
        report(r, a, acc, w_atomic ? "updated it atomically between the same two barriers (data race)"
                                   : "wrote it between the same two barriers (data race)",
               c.w_interval, c.w_thread);
        return false;
    }
    if (acc == WRITE && c.r_interval == now && (c.r_thread != t || (c.flags & R_SEVERAL)) &&
        ((c.flags & R_WARPS) || !same_warp_ordered(c.r_thread, c.r_calls, t))) {
        report(r, a, acc, "read it between the same two barriers (data race)", c.r_interval, c.r_thread);
        return false;
    }
    if (acc == READ) {
        if (tensor && c.r_interval >= g.launch_first && c.r_interval < first) c.flags |= R_BLOCKS;
        if (c.r_interval != now) {
            c.r_interval = now;
            c.r_thread = (uint16_t)t;
            c.r_calls = g.warp_calls[t];
            c.flags &= (uint8_t)~(R_SEVERAL | R_WARPS);
        } else {
            if (c.r_thread != t) c.flags |= R_SEVERAL;
            if ((c.r_thread >> 5) != (t >> 5)) c.flags |= R_WARPS;
            c.r_calls = std::max(c.r_calls, g.warp_calls[t]);
        }
    } else {
        c.w_interval = now;
        c.w_thread = (uint16_t)t;
        c.w_calls = g.warp_calls[t];
        c.flags = (uint8_t)((c.flags & ~W_ATOMIC) | (acc == ATOMIC ? W_ATOMIC : 0));
    }
    return true;
}

// The bytes [a, a + n) against what the kernel may touch in `r`; false when refused.
bool check_bounds(const Range& r, uintptr_t a, size_t n, Access acc) {
    const uintptr_t end = a + n;
    if (r.kind == Kind::StaticShared) {
        if (a < r.lo) {
            fail_running("%s of %zu bytes %llu bytes before the shared memory section", noun(acc), n,
                         (unsigned long long)(r.lo - a));
            return false;
        }
        const uint16_t o = g.owner[a - r.lo];
        bool inside = o != 0 && end <= r.hi;
        for (uintptr_t b = a; inside && b < end; ++b) inside = g.owner[b - r.lo] == o;
        if (inside) return true;
        // Name the array whose end the access runs past: the nearest one below it.
        uintptr_t b = a;
        while (b > r.lo && g.owner[b - r.lo] == 0) --b;
        const uint16_t near = g.owner[b - r.lo];
        if (near == 0) {
            fail_running("%s of %zu bytes at byte %llu of the shared memory section, before every shared array",
                         noun(acc), n, (unsigned long long)(a - r.lo));
        } else {
            const SharedArray& s = shared_arrays[near - 1];
            fail_running("%s of %zu bytes at byte %lld of shared `%s`, which has %u: past its end", noun(acc), n,
                         (long long)(a - r.lo) - (long long)s.offset, s.name, s.size);
        }
        return false;
    }
    if (a >= r.data_lo && end <= r.data_hi) {
        if (r.kind == Kind::Tensor && acc != READ && !r.writable) {
            fail_running("%s to element %llu of `%s`, an input the kernel must only read", noun(acc),
                         (unsigned long long)((a - r.data_lo) / r.elem_size), r.name);
            return false;
        }
        return true;
    }
    const char* what = r.kind == Kind::Tensor ? r.name : "the dynamic shared memory";
    const char* quote = r.kind == Kind::Tensor ? "`" : "";
    if (a < r.data_lo) {
        fail_running("%s of %zu bytes %llu bytes before the start of %s%s%s", noun(acc), n,
                     (unsigned long long)(r.data_lo - a), quote, what, quote);
    } else if (r.kind == Kind::Tensor) {
        fail_running("%s past the end of `%s`: element %llu, and it has %llu", noun(acc), r.name,
                     (unsigned long long)((a - r.data_lo) / r.elem_size),
                     (unsigned long long)((r.data_hi - r.data_lo) / r.elem_size));
    } else {
        fail_running("%s past the end of the dynamic shared memory: byte %llu, and the launch asked for %llu",
                     noun(acc), (unsigned long long)(a - r.data_lo), (unsigned long long)(r.data_hi - r.data_lo));
    }
    return false;
}

void on_access(const void* p, size_t n, Access acc) {
    if (!t_active || n == 0) return;
    const uintptr_t a = reinterpret_cast<uintptr_t>(p);
    for (const Range& r : g.ranges) {
        if (a >= r.hi || a + n <= r.lo) continue;
        if (!check_bounds(r, a, n, acc)) {
            t_active = false;  // the first report stands
            return;
        }
        if (r.cells == nullptr) return;
        const int t = running_thread();
        for (uintptr_t i = a - r.data_lo; i < a + n - r.data_lo; ++i) {
            if (!check_cell(r, r.cells[i], r.data_lo + i, t, acc)) {
                t_active = false;
                return;
            }
        }
        return;
    }
}

// The owner map of the static shared section, built once from build.rs's table.
bool prepare_static_layout(char* message, size_t n) {
    const size_t bytes = (size_t)(__stop_emu_shared - __start_emu_shared);
    if (bytes != shared_section_bytes) {
        snprintf(message, n, "emulator: the shared memory section has %zu bytes, build.rs read %llu from the object",
                 bytes, (unsigned long long)shared_section_bytes);
        return false;
    }
    if (!g.owner.empty() || bytes == 0) return true;
    g.owner.assign(bytes, 0);
    for (uint32_t i = 0; i < shared_array_count; ++i)
        for (uint32_t b = 0; b < shared_arrays[i].size; ++b) g.owner[shared_arrays[i].offset + b] = (uint16_t)(i + 1);
    g.static_cells.assign(bytes, Cell());
    return true;
}

}  // namespace

bool checker_begin_launch(const EmuLaunch& spec, const DynamicBuffer& dynamic, char* message, size_t n) {
    if (!prepare_static_layout(message, n)) return false;
    g.ranges.clear();
    g.blocks.clear();
    g.block_dim = dim3(spec.block[0], spec.block[1], spec.block[2]);
    g.grid_dim = dim3(spec.grid[0], spec.grid[1], spec.grid[2]);
    g.launch_first = g.interval + 1;
    if (!g.owner.empty()) {
        const uintptr_t lo = reinterpret_cast<uintptr_t>(__start_emu_shared);
        g.ranges.push_back({Kind::StaticShared, "", lo, lo + g.owner.size(), lo, lo + g.owner.size(), 1, true,
                            g.static_cells.data()});
    }
    if (dynamic.map != nullptr) {
        if (g.dynamic_cells.size() < dynamic.bytes) g.dynamic_cells.assign(dynamic.bytes, Cell());
        const uintptr_t lo = reinterpret_cast<uintptr_t>(dynamic.data);
        g.ranges.push_back({Kind::DynamicShared, "", reinterpret_cast<uintptr_t>(dynamic.map),
                            reinterpret_cast<uintptr_t>(dynamic.map) + dynamic.map_len, lo, lo + dynamic.bytes, 1, true,
                            g.dynamic_cells.data()});
    }
    for (uint32_t i = 0; i < spec.nregions; ++i) {
        const EmuRegion& t = spec.regions[i];
        const uint32_t es = t.elem_size ? t.elem_size : 1;
        Cell* cells = nullptr;
        if (t.writable && t.data_hi > t.data_lo) {
            cells = static_cast<Cell*>(calloc(t.data_hi - t.data_lo, sizeof(Cell)));
            if (cells == nullptr) {
                snprintf(message, n, "emulator: no memory for the shadow of `%s`", t.name);
                checker_end_launch();
                return false;
            }
            g.tensor_cells.push_back(cells);
        }
        g.ranges.push_back({Kind::Tensor, t.name, t.map_lo, t.map_hi, t.data_lo, t.data_hi, es, t.writable != 0,
                            cells});
    }
    t_active = true;
    return true;
}

void checker_begin_block(uint64_t block, int threads) {
    g.block_first = ++g.interval;
    g.blocks.emplace_back(g.interval, block);
    g.warp_calls.assign((size_t)threads, 0);
}

void checker_barrier() { ++g.interval; }

void checker_warp_call(int t) { ++g.warp_calls[t]; }

void checker_end_launch() {
    t_active = false;
    for (Cell* c : g.tensor_cells) free(c);
    g.tensor_cells.clear();
    g.ranges.clear();
}

}  // namespace emu

// ---- the hooks the instrumented kernels call --------------------------------------------------
using emu::on_access;

extern "C" {
void __tsan_init() {}
// The one atomic the instrumented code makes of its own: the guard of a function-local static
// (the entry table's), read on one OS thread.
uint8_t __tsan_atomic8_load(const volatile uint8_t* a, int) { return *a; }
void emu_atomic_access(const void* p, unsigned n) { on_access(p, n, emu::ATOMIC); }
void __tsan_read_range(void* p, unsigned long n) { on_access(p, n, emu::READ); }
void __tsan_write_range(void* p, unsigned long n) { on_access(p, n, emu::WRITE); }
#define EMU_HOOKS(N)                                                                   \
    void __tsan_read##N(void* p) { on_access(p, N, emu::READ); }                       \
    void __tsan_write##N(void* p) { on_access(p, N, emu::WRITE); }                     \
    void __tsan_unaligned_read##N(void* p) { on_access(p, N, emu::READ); }             \
    void __tsan_unaligned_write##N(void* p) { on_access(p, N, emu::WRITE); }
EMU_HOOKS(1)
EMU_HOOKS(2)
EMU_HOOKS(4)
EMU_HOOKS(8)
EMU_HOOKS(16)
#undef EMU_HOOKS
}

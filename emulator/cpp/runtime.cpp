// The emulator's scheduler: runs a grid block by block, a block's threads as fibers on the
// calling OS thread, and turns faults and broken CUDA rules into messages.
//
// Scheduling. A fiber runs until it reaches a barrier, a warp call or its end. The next fiber to
// run is drawn by the launch's order: lowest thread first, highest first, or from a seeded
// generator. Blocks run in the same order (ascending, descending or shuffled), one at a time.
// Code that relies on an order CUDA does not promise therefore sees different orders under
// different schedules, and its outputs differ between them.
//
// Rules checked, each an error naming the kernel, block, thread and source line:
// - a warp call whose mask leaves out the caller, names a lane that has exited or does not exist,
//   or whose lanes meet at different calls (other primitive, mask or line);
// - a shuffle reading a lane outside the mask;
// - lanes at different __syncthreads lines released together;
// - a deadlock (threads wait at a barrier that can never be released);
// - a memory fault (SIGSEGV/SIGBUS) or an integer division by zero (SIGFPE) inside a kernel: the
//   fault address is named against the launch's staged arguments and their guard pages, and
//   against the guard page after the dynamic shared memory.
// The memory checker (checker.cpp) follows the same launch: the scheduler tells it when a block
// starts, a barrier releases and a warp call releases a lane, and it reports through
// fail_running.
#include "emu_abi.h"

#include <setjmp.h>
#include <signal.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <ucontext.h>
#include <unistd.h>

#include <algorithm>
#include <mutex>
#include <vector>

#include "checker.h"
#include "cuda_emu.h"

uint3 threadIdx;
uint3 blockIdx;
dim3 blockDim;
dim3 gridDim;

// The section holding every __shared__ variable (linker-defined bounds).
extern "C" char __start_emu_shared[] __attribute__((weak));
extern "C" char __stop_emu_shared[] __attribute__((weak));

namespace emu {
namespace {

constexpr size_t STACK_BYTES = 64 * 1024;
constexpr int MAX_THREADS = 1024;
constexpr int MAX_MESSAGE = 1024;

// ---- fibers ----------------------------------------------------------------------------------
// x86-64: a switch saves the callee-saved registers on the old stack and restores them from the
// new one (a few nanoseconds; ucontext's switch makes a system call). Elsewhere: ucontext.
#if defined(__x86_64__)
extern "C" void emu_switch(void** save_sp, void* load_sp);
asm(R"(
    .text
    .p2align 4
    .type emu_switch,@function
emu_switch:
    pushq %rbp
    pushq %rbx
    pushq %r12
    pushq %r13
    pushq %r14
    pushq %r15
    movq %rsp, (%rdi)
    movq %rsi, %rsp
    popq %r15
    popq %r14
    popq %r13
    popq %r12
    popq %rbx
    popq %rbp
    ret
    .size emu_switch, .-emu_switch
)");

struct Context {
    void* sp = nullptr;
};

void context_start(Context& c, char* stack_lo, size_t bytes, void (*entry)()) {
    uintptr_t top = (reinterpret_cast<uintptr_t>(stack_lo) + bytes) & ~uintptr_t(15);
    void** a = reinterpret_cast<void**>(top - 16);  // the return slot: 16-aligned, so entry
    a[0] = reinterpret_cast<void*>(entry);            // starts as if called (rsp = 8 mod 16)
    a[1] = nullptr;
    for (int r = 1; r <= 6; ++r) a[-r] = nullptr;     // rbp rbx r12 r13 r14 r15
    c.sp = a - 6;
}

void context_switch(Context& from, Context& to) { emu_switch(&from.sp, to.sp); }
#else
struct Context {
    ucontext_t uc;
};

void context_start(Context& c, char* stack_lo, size_t bytes, void (*entry)()) {
    getcontext(&c.uc);
    c.uc.uc_stack.ss_sp = stack_lo;
    c.uc.uc_stack.ss_size = bytes;
    c.uc.uc_link = nullptr;
    makecontext(&c.uc, entry, 0);
}

void context_switch(Context& from, Context& to) { swapcontext(&from.uc, &to.uc); }
#endif

// ---- state of one block ----------------------------------------------------------------------
enum class Wait : int { Runnable, Block, Warp, Done };

struct Thread {
    Context ctx;
    uint3 tid;
    Wait wait = Wait::Done;
    const char* file = nullptr;  // where it waits
    int line = 0;
    // Warp call in flight: what this lane brought and what it gets back.
    Exchange op = Exchange::SyncWarp;
    unsigned mask = 0;
    uint64_t value = 0, result = 0;
    int arg = 0, width = 32;
};

// A warp call that lanes are gathering at: the lanes it names, how many have arrived, the first
// of them. Lanes with disjoint masks may gather at separate calls at the same time.
struct WarpCall {
    unsigned lanes = 0;
    int arrived = 0, first = -1, expected = 0;
};

struct Warp {
    WarpCall calls[32];
    int ncalls = 0;
    unsigned exited = 0;  // lanes that have returned

    // The call gathering lanes that overlap `mask`, or null.
    WarpCall* overlapping(unsigned mask) {
        for (int c = 0; c < ncalls; ++c)
            if (calls[c].lanes & mask) return &calls[c];
        return nullptr;
    }
    void remove(WarpCall* c) { *c = calls[--ncalls]; }
};

struct Launch {
    const EmuEntry* entry = nullptr;
    void** params = nullptr;
    const EmuRegion* regions = nullptr;
    uint32_t nregions = 0;
    uint32_t order = EMU_ORDER_ASCENDING;
    uint64_t rng = 0;

    int nthreads = 0, live = 0, at_block = 0, current = -1;
    std::vector<Thread> threads;
    std::vector<Warp> warps;
    std::vector<uint64_t> ready;  // bit set over threads
    Context scheduler;
    char message[MAX_MESSAGE] = {0};
    bool failed = false;
};

// Dynamic shared memory: one mapping reused by every launch, its last page inaccessible; a
// launch's buffer is its `bytes` (rounded up to 16) just below that guard page.
struct DynamicShared {
    char* map = nullptr;
    size_t map_len = 0;
    char* data = nullptr;
    size_t bytes = 0;  // what the launch asked for
    size_t span = 0;   // bytes rounded up to 16: [data, data + span) ends at the guard page
};

Launch* g_launch = nullptr;  // the launch in progress (one at a time, under g_mutex)
DynamicShared g_dynamic;
std::mutex g_mutex;
sigjmp_buf g_fault_jump;
volatile sig_atomic_t g_in_kernel = 0;
char* g_stacks = nullptr;  // MAX_THREADS stacks, each above a guard page
size_t g_stack_stride = 0;

uint64_t next_random(uint64_t& s) {  // splitmix64
    uint64_t z = (s += 0x9e3779b97f4a7c15ull);
    z = (z ^ (z >> 30)) * 0xbf58476d1ce4e5b9ull;
    z = (z ^ (z >> 27)) * 0x94d049bb133111ebull;
    return z ^ (z >> 31);
}

void where(const Launch& L, int t, char* out, size_t n) {
    const Thread& th = L.threads[t];
    snprintf(out, n, "kernel %s, block (%u, %u, %u), thread (%u, %u, %u)", L.entry->name, blockIdx.x, blockIdx.y,
             blockIdx.z, th.tid.x, th.tid.y, th.tid.z);
}

// Records the first error of the launch; later ones add nothing.
void fail(Launch& L, int t, const char* fmt, ...) {
    if (L.failed) return;
    L.failed = true;
    char head[256];
    where(L, t, head, sizeof head);
    va_list ap;
    va_start(ap, fmt);
    char body[MAX_MESSAGE - 258];
    vsnprintf(body, sizeof body, fmt, ap);
    va_end(ap);
    snprintf(L.message, sizeof L.message, "%s: %s", head, body);
}

// __FILE__ strings: usually the same pointer, compared as text only when not.
bool same_file(const char* a, const char* b) { return a == b || strcmp(a, b) == 0; }

void set_ready(Launch& L, int t) {
    L.threads[t].wait = Wait::Runnable;
    L.ready[t >> 6] |= 1ull << (t & 63);
}

// The next thread to run, by the launch's order; -1 when none can run.
int pick(Launch& L) {
    const int words = (int)L.ready.size();
    if (L.order == EMU_ORDER_DESCENDING) {
        for (int w = words - 1; w >= 0; --w)
            if (L.ready[w]) return w * 64 + 63 - __builtin_clzll(L.ready[w]);
        return -1;
    }
    if (L.order != EMU_ORDER_RANDOM) {
        for (int w = 0; w < words; ++w)
            if (L.ready[w]) return w * 64 + __builtin_ctzll(L.ready[w]);
        return -1;
    }
    const int start = (int)(next_random(L.rng) % (uint64_t)L.nthreads);
    for (int k = 0; k <= words; ++k) {  // from `start` upwards, wrapping once
        const int w = (start >> 6) + k < words ? (start >> 6) + k : (start >> 6) + k - words;
        uint64_t bits = L.ready[w];
        if (k == 0) bits &= ~0ull << (start & 63);
        else if (k == words) bits &= (start & 63) ? ~(~0ull << (start & 63)) : 0ull;
        if (bits) return w * 64 + __builtin_ctzll(bits);
    }
    return -1;
}

// Makes thread t the running one (its context is switched to next).
void enter(Launch& L, int t) {
    L.ready[t >> 6] &= ~(1ull << (t & 63));
    L.current = t;
    threadIdx = L.threads[t].tid;
}

// Gives the OS thread to the next fiber by the launch's order, switching to it directly (a trip
// through the scheduler would double the switches, the emulator's main cost); to the scheduler
// when none can run or the launch has failed. Resumes when this thread is picked again.
void yield_to_scheduler(Launch& L) {
    const int t = L.current;
    const int next = L.failed ? -1 : pick(L);
    if (next == t) {
        enter(L, t);
        return;
    }
    if (next < 0) {
        context_switch(L.threads[t].ctx, L.scheduler);
        return;
    }
    enter(L, next);
    context_switch(L.threads[t].ctx, L.threads[next].ctx);
}

void on_exit(Launch& L, int t);

void fiber_main() {
    Launch& L = *g_launch;
    L.entry->call(L.params);
    L.threads[L.current].wait = Wait::Done;
    on_exit(L, L.current);
    yield_to_scheduler(L);  // never picked again: Done threads are not ready
    __builtin_unreachable();
}

const char* exchange_name(Exchange op) {
    switch (op) {
        case Exchange::SyncWarp: return "__syncwarp";
        case Exchange::ShflIdx: return "__shfl_sync";
        case Exchange::ShflUp: return "__shfl_up_sync";
        case Exchange::ShflDown: return "__shfl_down_sync";
        case Exchange::ShflXor: return "__shfl_xor_sync";
        case Exchange::Ballot: return "__ballot_sync";
        case Exchange::Any: return "__any_sync";
        case Exchange::All: return "__all_sync";
        case Exchange::MatchAny: return "__match_any_sync";
    }
    return "?";
}

// The lane a shuffle reads, or -1 when the lane keeps its own value (CUDA's out-of-segment rule).
int source_lane(const Thread& th, int lane) {
    const int w = th.width, seg = lane & ~(w - 1), pos = lane & (w - 1);
    switch (th.op) {
        case Exchange::ShflIdx: return seg + (th.arg & (w - 1));
        case Exchange::ShflUp: return pos - th.arg < 0 ? -1 : lane - th.arg;
        case Exchange::ShflDown: return pos + th.arg >= w ? -1 : lane + th.arg;
        case Exchange::ShflXor: {
            const int s = lane ^ th.arg;
            return (s & ~(w - 1)) != seg ? -1 : s;
        }
        default: return -1;
    }
}

// Every lane of the call has arrived: compute each lane's result and release them.
void complete_warp_call(Launch& L, int warp, WarpCall& wc) {
    const int base = warp * 32;
    unsigned votes = 0;
    for (int lane = 0; lane < 32; ++lane)
        if (wc.lanes >> lane & 1u) votes |= (L.threads[base + lane].value != 0 ? 1u : 0u) << lane;
    for (int lane = 0; lane < 32; ++lane) {
        if (!(wc.lanes >> lane & 1u)) continue;
        Thread& th = L.threads[base + lane];
        switch (th.op) {
            case Exchange::SyncWarp: th.result = 0; break;
            case Exchange::Ballot: th.result = votes; break;
            case Exchange::Any: th.result = votes != 0; break;
            case Exchange::All: th.result = votes == wc.lanes; break;
            case Exchange::MatchAny: {
                unsigned same = 0;
                for (int other = 0; other < 32; ++other)
                    if ((wc.lanes >> other & 1u) && L.threads[base + other].value == th.value) same |= 1u << other;
                th.result = same;
                break;
            }
            default: {
                const int src = source_lane(th, lane);
                if (src >= 0 && !(wc.lanes >> src & 1u)) {
                    fail(L, base + lane, "%s at %s:%d reads lane %d, which is not in the mask 0x%08x",
                         exchange_name(th.op), th.file, th.line, src, wc.lanes);
                    return;
                }
                th.result = src < 0 ? th.value : L.threads[base + src].value;
            }
        }
    }
    for (int lane = 0; lane < 32; ++lane) {
        if (!(wc.lanes >> lane & 1u)) continue;
        checker_warp_call(base + lane);
        set_ready(L, base + lane);
    }
    L.warps[warp].remove(&wc);
}

// Releases the block barrier when every live thread waits at it (all at one line).
void try_release_block(Launch& L) {
    if (L.at_block == 0 || L.at_block != L.live) return;
    int first = -1;
    for (int t = 0; t < L.nthreads; ++t) {
        Thread& th = L.threads[t];
        if (th.wait != Wait::Block) continue;
        if (first < 0) first = t;
        else if (th.line != L.threads[first].line || !same_file(th.file, L.threads[first].file)) {
            char other[256];
            where(L, first, other, sizeof other);
            fail(L, t, "__syncthreads at %s:%d released together with %s at %s:%d: every thread of a block must "
                       "reach the same barrier", th.file, th.line, other, L.threads[first].file, L.threads[first].line);
            return;
        }
    }
    L.at_block = 0;
    checker_barrier();
    for (int t = 0; t < L.nthreads; ++t)
        if (L.threads[t].wait == Wait::Block) set_ready(L, t);
}

// A thread has exited: lanes waiting for it at a warp call can never be released.
void on_exit(Launch& L, int t) {
    --L.live;
    const int warp = t / 32, lane = t % 32;
    L.warps[warp].exited |= 1u << lane;
    if (const WarpCall* wc = L.warps[warp].overlapping(1u << lane)) {
        const Thread& waiter = L.threads[wc->first];
        fail(L, t, "exited while lanes of its warp wait for it at %s (%s:%d, mask 0x%08x)", exchange_name(waiter.op),
             waiter.file, waiter.line, wc->lanes);
        return;
    }
    try_release_block(L);
}

void report_deadlock(Launch& L) {
    int t = 0;
    while (t < L.nthreads && L.threads[t].wait == Wait::Done) ++t;
    const Thread& th = L.threads[t];
    fail(L, t, "deadlock: %d of %d threads wait at __syncthreads, the others at warp calls; this one waits at %s:%d",
         L.at_block, L.live, th.file, th.line);
}

// Runs one block to completion; false when the launch failed.
bool run_block(Launch& L) {
    for (int t = 0; t < L.nthreads; ++t) {
        Thread& th = L.threads[t];
        th = Thread();
        th.tid = {(unsigned)(t % blockDim.x), (unsigned)(t / blockDim.x % blockDim.y),
                  (unsigned)(t / (blockDim.x * blockDim.y))};
        context_start(th.ctx, g_stacks + t * g_stack_stride + getpagesize(), STACK_BYTES, fiber_main);
        set_ready(L, t);
    }
    L.live = L.nthreads;
    L.at_block = 0;
    for (Warp& w : L.warps) {
        w.ncalls = 0;
        w.exited = 0;
    }
    while (L.live > 0 && !L.failed) {
        const int t = pick(L);
        if (t < 0) {
            report_deadlock(L);
            break;
        }
        enter(L, t);
        context_switch(L.scheduler, L.threads[t].ctx);
    }
    return !L.failed;
}

// The linear block indices in the launch's order.
std::vector<uint64_t> block_order(const EmuLaunch& spec, uint64_t& rng) {
    const uint64_t blocks = (uint64_t)spec.grid[0] * spec.grid[1] * spec.grid[2];
    std::vector<uint64_t> order(blocks);
    for (uint64_t b = 0; b < blocks; ++b) order[b] = b;
    if (spec.order == EMU_ORDER_DESCENDING) std::reverse(order.begin(), order.end());
    if (spec.order == EMU_ORDER_RANDOM)
        for (uint64_t b = blocks; b > 1; --b) std::swap(order[b - 1], order[next_random(rng) % b]);
    return order;
}

// Places the launch's dynamic shared memory below the guard page, growing the mapping when a
// launch asks for more than any before; false (with a message) when memory cannot be had.
bool prepare_dynamic_shared(size_t bytes, char* message, size_t n) {
    const size_t page = (size_t)getpagesize();
    const size_t span = (bytes + 15) & ~size_t(15);
    const size_t need = (span + page - 1) / page * page + page;
    if (need > g_dynamic.map_len) {
        if (g_dynamic.map) munmap(g_dynamic.map, g_dynamic.map_len);
        void* mem = mmap(nullptr, need, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
        if (mem == MAP_FAILED) {
            g_dynamic = DynamicShared();
            snprintf(message, n, "emulator: could not map %zu bytes of dynamic shared memory", need);
            return false;
        }
        g_dynamic.map = static_cast<char*>(mem);
        g_dynamic.map_len = need;
        mprotect(g_dynamic.map + need - page, page, PROT_NONE);
    }
    g_dynamic.bytes = bytes;
    g_dynamic.span = span;
    g_dynamic.data = g_dynamic.map + g_dynamic.map_len - page - span;
    return true;
}

// Runs the blocks in `order`, each with freshly poisoned __shared__ memory, static and dynamic.
void run_grid(Launch& L, const std::vector<uint64_t>& order, uint8_t poison) {
    const size_t shared_bytes = (size_t)(__stop_emu_shared - __start_emu_shared);
    for (uint64_t b : order) {
        blockIdx = {(unsigned)(b % gridDim.x), (unsigned)(b / gridDim.x % gridDim.y),
                    (unsigned)(b / ((uint64_t)gridDim.x * gridDim.y))};
        if (shared_bytes) memset(__start_emu_shared, poison, shared_bytes);
        if (g_dynamic.span) memset(g_dynamic.data, poison, g_dynamic.span);
        checker_begin_block(b, L.nthreads);
        if (!run_block(L)) break;
    }
}

// ---- memory faults ---------------------------------------------------------------------------
void describe_fault(const Launch& L, uintptr_t addr, bool write, char* out, size_t n) {
    const char* access = write ? "write" : "read";
    for (uint32_t r = 0; r < L.nregions; ++r) {
        const EmuRegion& g = L.regions[r];
        const uint64_t es = g.elem_size ? g.elem_size : 1;
        if (addr >= g.map_lo && addr < g.map_hi && (addr < g.data_lo || addr >= g.data_hi)) {
            if (addr >= g.data_hi) {
                snprintf(out, n, "%s past the end of `%s`: element %llu, and it has %llu", access, g.name,
                         (unsigned long long)((addr - g.data_lo) / es), (unsigned long long)((g.data_hi - g.data_lo) / es));
            } else {
                snprintf(out, n, "%s %llu bytes before the start of `%s`", access,
                         (unsigned long long)(g.data_lo - addr), g.name);
            }
            return;
        }
        if (addr >= g.data_lo && addr < g.data_hi && write && !g.writable) {
            snprintf(out, n, "write to element %llu of `%s`, an input the kernel must only read",
                     (unsigned long long)((addr - g.data_lo) / es), g.name);
            return;
        }
    }
    if (g_dynamic.map && addr >= (uintptr_t)g_dynamic.map && addr < (uintptr_t)g_dynamic.map + g_dynamic.map_len) {
        const uintptr_t lo = (uintptr_t)g_dynamic.data;
        if (addr >= lo + g_dynamic.span) {
            snprintf(out, n, "%s past the end of the dynamic shared memory: byte %llu, and the launch asked for %zu",
                     access, (unsigned long long)(addr - lo), g_dynamic.bytes);
            return;
        }
    }
    if (g_stacks && addr >= (uintptr_t)g_stacks && addr < (uintptr_t)g_stacks + MAX_THREADS * g_stack_stride) {
        snprintf(out, n, "%s at 0x%llx: stack overflow (the emulator gives each thread %zu KiB)", access,
                 (unsigned long long)addr, STACK_BYTES / 1024);
        return;
    }
    snprintf(out, n, "%s at 0x%llx, which is inside no argument of the launch", access, (unsigned long long)addr);
}

struct sigaction g_previous[3];
const int FAULT_SIGNALS[3] = {SIGSEGV, SIGBUS, SIGFPE};

void on_fault(int sig, siginfo_t* info, void* uctx) {
    if (g_in_kernel && g_launch != nullptr) {
        Launch& L = *g_launch;
        char what[512];
        if (sig == SIGFPE) {
            snprintf(what, sizeof what, "arithmetic fault (integer division by zero or overflow)");
        } else {
            bool write = false;
#if defined(__x86_64__)
            write = (static_cast<ucontext_t*>(uctx)->uc_mcontext.gregs[REG_ERR] & 2) != 0;
#endif
            describe_fault(L, reinterpret_cast<uintptr_t>(info->si_addr), write, what, sizeof what);
        }
        L.failed = false;  // a fault outranks a rule error recorded earlier in the same step
        fail(L, L.current, "%s", what);
        g_in_kernel = 0;
        siglongjmp(g_fault_jump, 1);
    }
    // Not ours: hand it to whoever handled it before.
    for (int i = 0; i < 3; ++i) {
        if (FAULT_SIGNALS[i] != sig) continue;
        const struct sigaction& p = g_previous[i];
        if ((p.sa_flags & SA_SIGINFO) && p.sa_sigaction) {
            p.sa_sigaction(sig, info, uctx);
        } else if (p.sa_handler != SIG_DFL && p.sa_handler != SIG_IGN) {
            p.sa_handler(sig);
        } else {
            signal(sig, SIG_DFL);  // the faulting instruction runs again and ends the process
        }
    }
}

bool initialise(char* message, size_t n) {
    if (g_stacks) return true;
    const size_t page = (size_t)getpagesize();
    g_stack_stride = STACK_BYTES + page;
    void* mem = mmap(nullptr, MAX_THREADS * g_stack_stride, PROT_READ | PROT_WRITE,
                     MAP_PRIVATE | MAP_ANONYMOUS | MAP_NORESERVE, -1, 0);
    if (mem == MAP_FAILED) {
        snprintf(message, n, "emulator: could not reserve %zu bytes of fiber stacks", MAX_THREADS * g_stack_stride);
        return false;
    }
    for (int t = 0; t < MAX_THREADS; ++t) mprotect((char*)mem + t * g_stack_stride, page, PROT_NONE);
    struct sigaction sa;
    memset(&sa, 0, sizeof sa);
    sa.sa_sigaction = on_fault;
    sa.sa_flags = SA_SIGINFO | SA_ONSTACK;
    sigemptyset(&sa.sa_mask);
    for (int i = 0; i < 3; ++i) sigaction(FAULT_SIGNALS[i], &sa, &g_previous[i]);
    g_stacks = static_cast<char*>(mem);
    return true;
}

}  // namespace

// ---- what the checker asks of the scheduler ------------------------------------------------------
int running_thread() { return g_launch->current; }

bool in_kernel() { return g_in_kernel && g_launch != nullptr; }

void fail_running(const char* fmt, ...) {
    char body[MAX_MESSAGE - 258];
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(body, sizeof body, fmt, ap);
    va_end(ap);
    fail(*g_launch, g_launch->current, "%s", body);
}

// ---- the calls kernels make --------------------------------------------------------------------
void sync_block(const char* file, int line) {
    Launch& L = *g_launch;
    Thread& th = L.threads[L.current];
    th.wait = Wait::Block;
    th.file = file;
    th.line = line;
    ++L.at_block;
    try_release_block(L);
    yield_to_scheduler(L);
}

uint64_t exchange(Exchange op, unsigned mask, uint64_t value, int arg, int width, const char* file, int line) {
    Launch& L = *g_launch;
    const int t = L.current, warp = t / 32, lane = t % 32;
    Thread& th = L.threads[t];
    th.op = op;
    th.mask = mask;
    th.value = value;
    th.arg = arg;
    th.width = width;
    th.file = file;
    th.line = line;
    th.wait = Wait::Warp;
    Warp& w = L.warps[warp];
    WarpCall* wc = w.overlapping(mask);
    const int warp_lanes = std::min(32, L.nthreads - warp * 32);
    const unsigned existing = warp_lanes == 32 ? 0xffffffffu : (1u << warp_lanes) - 1u;
    if (width <= 0 || width > 32 || (width & (width - 1)) != 0) {
        fail(L, t, "%s at %s:%d: width %d is not a power of two up to 32", exchange_name(op), file, line, width);
    } else if (!(mask >> lane & 1u)) {
        fail(L, t, "%s at %s:%d: the mask 0x%08x leaves out the calling lane %d", exchange_name(op), file, line, mask, lane);
    } else if (mask & ~existing) {
        fail(L, t, "%s at %s:%d: the mask 0x%08x names lanes this warp does not have (it has 0x%08x)",
             exchange_name(op), file, line, mask, existing);
    } else if (wc != nullptr) {
        const Thread& first = L.threads[wc->first];
        if (first.op != op || wc->lanes != mask || first.line != line || !same_file(first.file, file))
            fail(L, t, "%s at %s:%d (mask 0x%08x) meets lane %d at %s at %s:%d (mask 0x%08x): the lanes of a warp "
                       "call must reach the same call", exchange_name(op), file, line, mask, wc->first % 32,
                 exchange_name(first.op), first.file, first.line, wc->lanes);
    }
    if (!L.failed && (mask & w.exited)) {
        fail(L, t, "%s at %s:%d: lane %d of the mask 0x%08x has already exited", exchange_name(op), file, line,
             __builtin_ctz(mask & w.exited), mask);
    }
    if (!L.failed) {
        if (wc == nullptr) {
            wc = &w.calls[w.ncalls++];
            *wc = WarpCall{mask, 0, t, __builtin_popcount(mask)};
        }
        if (++wc->arrived == wc->expected) complete_warp_call(L, warp, *wc);
    }
    yield_to_scheduler(L);
    return L.threads[t].result;
}

void* dynamic_shared() { return g_dynamic.span ? g_dynamic.data : nullptr; }

unsigned active_mask() {
    const Launch& L = *g_launch;
    const int warp = L.current / 32;
    unsigned m = 0;
    for (int l = 0; l < 32 && warp * 32 + l < L.nthreads; ++l)
        if (L.threads[warp * 32 + l].wait != Wait::Done) m |= 1u << l;
    return m;
}

}  // namespace emu

using namespace emu;

extern "C" int emu_launch(const EmuLaunch* spec, char* message, size_t message_len) {
    std::lock_guard<std::mutex> lock(g_mutex);
    if (!initialise(message, message_len)) return 1;
    const uint32_t nthreads = spec->block[0] * spec->block[1] * spec->block[2];
    if (nthreads == 0 || nthreads > MAX_THREADS || spec->block[2] > 64 || spec->grid[0] == 0 || spec->grid[1] == 0 ||
        spec->grid[2] == 0 || spec->grid[1] > 65535 || spec->grid[2] > 65535 || spec->grid[0] > 0x7fffffffu) {
        snprintf(message, message_len, "kernel %s: invalid launch configuration: grid (%u, %u, %u), block (%u, %u, %u)",
                 spec->entry->name, spec->grid[0], spec->grid[1], spec->grid[2], spec->block[0], spec->block[1],
                 spec->block[2]);
        return 1;
    }
    if (!prepare_dynamic_shared(spec->dynamic_shared, message, message_len)) return 1;
    static Launch L;  // reused: its vectors keep their capacity
    L.entry = spec->entry;
    L.params = spec->params;
    L.regions = spec->regions;
    L.nregions = spec->nregions;
    L.order = spec->order;
    L.rng = spec->seed;
    L.nthreads = (int)nthreads;
    L.threads.resize(nthreads);
    L.warps.assign((nthreads + 31) / 32, Warp());
    L.ready.assign((nthreads + 63) / 64, 0);
    L.failed = false;
    L.message[0] = 0;
    blockDim = dim3(spec->block[0], spec->block[1], spec->block[2]);
    gridDim = dim3(spec->grid[0], spec->grid[1], spec->grid[2]);

    const std::vector<uint64_t> order = block_order(*spec, L.rng);
    const size_t page = (size_t)getpagesize();
    const DynamicBuffer dynamic{g_dynamic.map, g_dynamic.map ? g_dynamic.map_len - page : 0, g_dynamic.data,
                                g_dynamic.bytes};
    if (!checker_begin_launch(*spec, dynamic, message, message_len)) return 1;

    g_launch = &L;
    if (sigsetjmp(g_fault_jump, 1) == 0) {
        g_in_kernel = 1;
        run_grid(L, order, spec->poison);
    }
    g_in_kernel = 0;
    g_launch = nullptr;
    checker_end_launch();
    if (!L.failed) return 0;
    snprintf(message, message_len, "%s", L.message);
    return 1;
}

// Row work of the fused CPU ops on libtorch's own intra-op pool. The ops used to start scoped
// threads of their own; on a 2-core machine libtorch's OpenMP workers, spinning after each tch
// op, then competed with them for the cores and every fused op paid for it. Running on the same
// pool, a fused op and the tch ops around it take turns instead.
#include <ATen/Parallel.h>

#include <cstdint>

// The Rust closure behind a type-erased pointer; it never unwinds (Rust catches its panics).
typedef void (*enl_range_fn)(void* closure, int64_t begin, int64_t end);

// Calls body(closure, b, e) over disjoint ranges covering [begin, end), at least `grain` long
// except the last, on up to at::get_num_threads() threads; serially inside a parallel region.
extern "C" void enl_parallel_for(int64_t begin, int64_t end, int64_t grain, enl_range_fn body,
                                 void* closure) noexcept {
    at::parallel_for(begin, end, grain, [&](int64_t b, int64_t e) { body(closure, b, e); });
}

extern "C" int enl_num_threads() noexcept { return at::get_num_threads(); }

// The memory checker's interface to the scheduler (runtime.cpp). checker.cpp has the rules.
#pragma once
#include <stddef.h>
#include <stdint.h>

#include "emu_abi.h"

namespace emu {

// A static shared array of the kernels, by offset in the section `emu_shared` (build.rs reads
// them from the kernels' object file and generates the table).
struct SharedArray {
    const char* name;
    uint32_t offset, size;
};
extern const SharedArray shared_arrays[];
extern const uint32_t shared_array_count;
extern const uint64_t shared_section_bytes;

// What the checker needs of the scheduler: the running thread (linear index in its block), the
// block's and grid's shape, and a way to fail the launch with a message about that thread.
int running_thread();
// Whether a kernel is running (so that a report has a thread to name).
bool in_kernel();
void fail_running(const char* fmt, ...) __attribute__((format(printf, 1, 2)));

// The dynamic shared memory of a launch: its mapping (guard page excluded), and the bytes the
// launch asked for at `data`.
struct DynamicBuffer {
    char* map;
    size_t map_len;
    char* data;
    size_t bytes;
};

// A launch begins: the checker shadows its written tensors and its shared memory. False (with a
// message) when the shadow cannot be had or the shared memory layout does not match the build.
bool checker_begin_launch(const EmuLaunch& spec, const DynamicBuffer& dynamic, char* message, size_t n);
// A block begins (its linear index), with `threads` threads.
void checker_begin_block(uint64_t block, int threads);
// A block barrier released every thread of the block.
void checker_barrier();
// A warp call released thread `t` (ordering it after its lanes' accesses before the call).
void checker_warp_call(int t);
// The launch ended; its shadow is released.
void checker_end_launch();

}  // namespace emu

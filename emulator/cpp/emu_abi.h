// The C interface between the emulator (runtime.cpp and the generated entry table) and Rust
// (emulator/src/ffi.rs mirrors these structs field for field).
#pragma once
#include <stddef.h>
#include <stdint.h>

enum { EMU_ORDER_ASCENDING = 0, EMU_ORDER_DESCENDING = 1, EMU_ORDER_RANDOM = 2 };
enum { EMU_PARAM_POINTER = 0, EMU_PARAM_INTEGER = 1, EMU_PARAM_FLOAT = 2, EMU_PARAM_OTHER = 3 };
#define EMU_MAX_PARAMS 32

// One kernel parameter as the kernel declares it.
typedef struct {
    uint32_t kind, size;
} EmuParamType;

// A kernel compiled into the emulator: its parameter list, what the GPU compiler reports for it
// (build.rs compiles the same source for sm_90: the PTX's .maxntid and ptxas's report), and a
// call that reads each parameter from params[i], as cuLaunchKernel's kernelParams.
typedef struct {
    const char* name;
    uint32_t nparams;
    EmuParamType params[EMU_MAX_PARAMS];
    uint32_t max_threads;    // threads a block may have by its __launch_bounds__ (0: none)
    uint32_t static_shared;  // bytes of static __shared__ memory a block
    uint32_t registers;      // registers a thread
    void (*call)(void** params);
} EmuEntry;

// A staged tensor argument: its bytes [data_lo, data_hi) inside its own mapping
// [map_lo, map_hi), which holds a guard page at one end.
typedef struct {
    const char* name;
    uint64_t data_lo, data_hi, map_lo, map_hi;
    uint32_t elem_size, writable;
} EmuRegion;

typedef struct {
    const EmuEntry* entry;
    uint32_t grid[3], block[3];
    void** params;
    const EmuRegion* regions;
    uint32_t nregions;
    uint32_t order;  // EMU_ORDER_*
    uint64_t seed;   // for EMU_ORDER_RANDOM
    uint8_t poison;  // the byte __shared__ memory is filled with before each block
    uint32_t dynamic_shared;  // bytes of dynamic shared memory a block gets (the launch's shared_mem_bytes)
} EmuLaunch;

#ifdef __cplusplus
extern "C" {
#endif
// The kernel named `name`, or null when the emulator build lacks it.
const EmuEntry* emu_find(const char* name);
// Runs the grid; 0 on success, else 1 with a message naming kernel, block, thread and cause.
int emu_launch(const EmuLaunch* launch, char* message, size_t message_len);
#ifdef __cplusplus
}
#endif

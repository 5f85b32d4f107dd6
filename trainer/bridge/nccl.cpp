// The NCCL backend's factory, built into a shared library of its own (build.rs) that the Rust
// side loads only when NCCL is asked for, after libtorch_cuda.so, where ProcessGroupNCCL lives:
// a binary that never asks for NCCL never needs libtorch_cuda.so's own dependencies.
// Compiled against nccl.h of the exact version libtorch 2.11 was built with (2.28.9), because
// ProcessGroupNCCL's layout depends on it; see cuda-shim/README for the headers it stands in for.
#include <c10/cuda/CUDAFunctions.h>
#include <torch/csrc/distributed/c10d/ProcessGroupNCCL.hpp>

#include <chrono>
#include <cstdint>

#include "guard.h"

// Matches enl_backend_factory in c10d.cpp: a ProcessGroupNCCL on `store` for rank `rank` of
// `size`, bound to cuda:`device` and connected eagerly (as torch.distributed does when given a
// device_id), so a broken setup fails here rather than at the first collective. `timeout_ms`
// bounds every collective: NCCL's watchdog aborts the communicator when one overruns.
extern "C" int enl_nccl_backend_new(c10d::Store* store, int rank, int size, int64_t timeout_ms, int device,
                                    c10d::Backend** backend, char** message) {
    return enlighten::enl_guard(message, [&] {
        TORCH_CHECK(device >= 0, "NCCL needs a CUDA device index, got ", device);
        c10::cuda::set_device(static_cast<c10::DeviceIndex>(device));
        auto options = c10d::ProcessGroupNCCL::Options::create();
        options->timeout = std::chrono::milliseconds(timeout_ms);
        // The caller keeps its own reference; this one is the backend's.
        auto shared = c10::intrusive_ptr<c10d::Store>::unsafe_reclaim_from_nonowning(store);
        auto nccl = c10::make_intrusive<c10d::ProcessGroupNCCL>(shared, rank, size, options);
        at::Device bound(at::kCUDA, static_cast<c10::DeviceIndex>(device));
        nccl->setBoundDeviceId(bound);
        nccl->eagerConnectSingleDevice(bound);
        *backend = c10::intrusive_ptr<c10d::Backend>(std::move(nccl)).release();
    });
}

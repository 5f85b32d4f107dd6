// PyTorch's stream contract for custom ops: launch on the caller's current CUDA stream of the
// tensor's device. The bridge compiles against libtorch's device-independent headers only (a
// CPU-only libtorch has no c10/cuda headers, and linking c10_cuda would tie every binary to
// libtorch's CUDA libraries), so it asks through c10's device-guard interface, which libtorch_cuda
// registers for DeviceType::CUDA when it loads: getStream is c10::cuda::getCurrentCUDAStream, and
// getStreamNativeHandle its cudaStream_t. Both are virtual calls into the loaded libtorch_cuda:
// no mangled names, no ABI guesses about CUDAStream.
#include <c10/core/Device.h>
#include <c10/core/Stream.h>
#include <c10/core/impl/VirtualGuardImpl.h>

#include <cstdint>

#include "guard.h"

namespace {

c10::Device cuda_device(int64_t index) {
    return c10::Device(c10::DeviceType::CUDA, static_cast<c10::DeviceIndex>(index));
}

}  // namespace

// *stream = the cudaStream_t (CUstream) current on this thread for CUDA device `index`; null is
// the legacy default stream. Fails with a message when libtorch has no CUDA backend loaded.
extern "C" int enl_current_stream(int64_t index, void** stream, char** message) noexcept {
    return enlighten::enl_guard(message, [&] {
        c10::impl::VirtualGuardImpl impl(c10::DeviceType::CUDA);
        *stream = impl.getStreamNativeHandle(impl.getStream(cuda_device(index)));
    });
}

// Makes a stream from libtorch's pool current for device `index` (the tests' "caller-chosen
// stream"); *previous receives the stream that was current, packed for enl_restore_stream.
extern "C" int enl_use_pool_stream(int64_t index, uint64_t* previous, char** message) noexcept {
    return enlighten::enl_guard(message, [&] {
        c10::impl::VirtualGuardImpl impl(c10::DeviceType::CUDA);
        const c10::Stream fresh = impl.getStreamFromGlobalPool(cuda_device(index));
        *previous = impl.exchangeStream(fresh).pack3().stream_id;
    });
}

// Makes the stream of id `id` (from enl_use_pool_stream) current again for device `index`.
extern "C" int enl_restore_stream(int64_t index, uint64_t id, char** message) noexcept {
    return enlighten::enl_guard(message, [&] {
        c10::impl::VirtualGuardImpl impl(c10::DeviceType::CUDA);
        impl.exchangeStream(c10::Stream::unpack3(static_cast<c10::StreamId>(id), cuda_device(index).index(),
                                                 c10::DeviceType::CUDA));
    });
}

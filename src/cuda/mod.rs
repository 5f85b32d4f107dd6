//! Runtime glue between tch tensors and enlighten's CUDA kernels, and nothing else: the probe
//! ([`probe`], [`device`]), loading libtorch_cuda, the kernels of each device, and a launch
//! helper over raw tensor pointers.
//!
//! Device choice: `let device = enlighten::cuda::device();` is CUDA device 0 when libtorch's CUDA
//! works, else the CPU; it also loads libtorch's CUDA backend, so call it before your first tch
//! CUDA call. The library probes by itself before its own first CUDA use.
//!
//! Kernels: no CUDA toolkit is needed at build time. On a device's first use the library takes
//! nvcc's fatbin when the build had nvcc and it holds the device's architecture, else a cubin from
//! the on-disk cache, else compiles the embedded kernel source with NVRTC, found at run time beside
//! the CUDA libraries the process has loaded (a pip PyTorch ships it), for the device's exact
//! architecture, and caches it. The first compilation takes tens of seconds. [`kernels_origin`]
//! says which happened; [`nvrtc`] has the details and the search order.
//!
//! Streams (PyTorch's contract for custom ops): every launch goes on the caller's current CUDA
//! stream of the tensors' device, as libtorch reports it (`c10::cuda::getCurrentCUDAStream`, read
//! through the bridge), so the ops order with tch work on whatever stream the caller has made
//! current (DDP's overlap, a data-loading stream, user code). The library's uploads (permutations,
//! lambdas, pointer tables) are copied on that same stream, without blocking the host
//! ([`upload`], [`to_device_async`]), and every temporary a kernel reads is
//! a tch tensor allocated by libtorch's caching allocator on that stream, so its memory is not
//! reused before the stream has passed the kernel, without a `record_stream`. As with any PyTorch
//! op, tensors made on another stream must be synchronised with the current one by the caller.
//!
//! For tests, the `enlighten-emulator` crate runs the same kernels on the CPU, through a hidden
//! hook (`executor`) that hands it the launches of ops on CPU tensors.

/// Values shared with the kernels, generated from kernels/constants.txt.
pub(crate) mod constants {
    include!(concat!(env!("OUT_DIR"), "/shared_constants.rs"));
}
mod device;
mod elf;
#[doc(hidden)]
pub mod executor;
mod fatbin;
mod function;
mod kernel_cache;
mod kernel_source;
mod launch;
mod libtorch;
pub mod nvrtc;
mod nvrtc_search;
mod origin;
mod probe;
mod stream;
mod transfer;

pub use fatbin::{fatbin, fatbin_architectures, fatbin_has_entry, Kernel};
pub use libtorch::load_libtorch_cuda;
pub use origin::KernelsOrigin;
pub use probe::{device, probe, CudaInfo, Unavailable};
#[cfg(feature = "testing")]
pub use stream::with_pool_stream;

pub(crate) use launch::{aligned, max_shared_per_block, pack_len, packable, row_lanes, Access, Grid, Launch, BLOCK};
pub use transfer::{host_reads, read_back, read_f64, read_i64, read_vec, to_device_async, upload};

/// Whether ops on tensors of `device` take their kernel path: CUDA devices, and the CPU inside
/// while an [`executor::Executor`] is registered on the thread (the emulator's `emulate`).
pub(crate) fn uses_kernels(device: tch::Device) -> bool {
    match device {
        tch::Device::Cuda(_) => true,
        tch::Device::Cpu => executor::current().is_some(),
        _ => false,
    }
}

/// Where the kernels of `device` come from, loading them on the first call for that device
/// (which may compile them with NVRTC, tens of seconds once, then cached on disk). An error says
/// why the device cannot have them (no CUDA, or no fatbin SASS and no working NVRTC).
pub fn kernels_origin(device: tch::Device) -> crate::Result<KernelsOrigin> {
    let tch::Device::Cuda(ordinal) = device else {
        return Err(crate::Error::Device {
            arg: "device",
            expected: "a CUDA device".into(),
            got: device,
        });
    };
    probe()?;
    let _restore = device::KeepCurrentContext::save()?;
    Ok(device::DeviceKernels::get(ordinal)?.origin.clone())
}

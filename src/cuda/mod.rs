//! Runtime glue between tch tensors and enlighten's CUDA kernels, and nothing else: the driver
//! probe, loading libtorch_cuda, the embedded fatbin, a per-device module cache and a launch
//! helper over raw tensor pointers.
//!
//! Streams: every kernel is launched on the legacy null stream, which is also PyTorch's default
//! stream, so enlighten's launches are ordered with tch ops on that stream. If you run tch work on
//! your own streams, synchronise them with the default stream before and after calling an op.
//!
//! For tests, the `enlighten-emulator` crate runs the same kernels on the CPU, through a hidden
//! hook (`executor`) that hands it the launches of ops on CPU tensors.

/// Values shared with the kernels, generated from kernels/constants.txt.
pub(crate) mod constants {
    include!(concat!(env!("OUT_DIR"), "/shared_constants.rs"));
}
mod device;
#[doc(hidden)]
pub mod executor;
mod fatbin;
mod launch;
mod libtorch;
mod probe;
mod transfer;

pub use fatbin::{fatbin, fatbin_has_entry, Kernel};
pub use libtorch::load_libtorch_cuda;
pub use probe::{probe, CudaInfo, Unavailable};

pub(crate) use launch::{aligned, max_shared_per_block, pack_len, packable, Access, Grid, Launch, BLOCK};
pub use transfer::host_reads;
pub(crate) use transfer::{read_back, upload};

/// Whether ops on tensors of `device` take their kernel path: CUDA devices, and the CPU inside
/// while an [`executor::Executor`] is registered on the thread (the emulator's `emulate`).
pub(crate) fn uses_kernels(device: tch::Device) -> bool {
    match device {
        tch::Device::Cuda(_) => true,
        tch::Device::Cpu => executor::current().is_some(),
        _ => false,
    }
}

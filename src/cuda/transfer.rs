//! The library's only transfers between host and device. Uploads of per-batch values
//! (permutations, lambdas, boxes, pointer tables) go through pinned staging memory and a
//! non-blocking copy on the current stream, so they never wait for the GPU's queue; libtorch's
//! caching host allocator keeps the pinned block alive until the copy has run. Every read of a
//! device value back to the host goes through [`read_back`], which counts it, so a test can show
//! that a training step makes none.

use std::cell::Cell;

use tch::{Device, Tensor};

thread_local! {
    static HOST_READS: Cell<u64> = const { Cell::new(0) };
}

/// `values` as a 1-D tensor on `device`, copied without blocking the host.
pub(crate) fn upload<T: tch::kind::Element>(values: &[T], device: Device) -> Tensor {
    let host = Tensor::from_slice(values);
    match device {
        Device::Cuda(_) => {
            let kind = host.kind();
            host.pin_memory(device).to_device_(device, kind, true, false)
        }
        _ => host,
    }
}

/// A copy of `t` on the host. When `t` lives where kernels run (CUDA, or the CPU inside the
/// emulator) this waits for the device, and it is counted in [`host_reads`].
pub(crate) fn read_back(t: &Tensor) -> Tensor {
    if super::uses_kernels(t.device()) {
        HOST_READS.with(|n| n.set(n.get() + 1));
    }
    t.to_device(Device::Cpu)
}

/// How many device values the library has read back to the host on this thread: the number of
/// host syncs it caused. A training step's ops cause none; the trainer reads its metrics only at
/// log intervals.
pub fn host_reads() -> u64 {
    HOST_READS.with(Cell::get)
}

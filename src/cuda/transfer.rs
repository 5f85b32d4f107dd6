//! The only transfers between host and device on a training step's path, the library's and the
//! trainer's. Uploads (batches, permutations, lambdas, boxes, crop offsets, pointer tables) go
//! through pinned staging memory and a non-blocking copy on the current stream, so they never
//! wait for the GPU's queue; libtorch's caching host allocator keeps a pinned block alive until
//! the copies that read it have run. Every read of a device value back to the host goes through
//! [`read_back`] (or the scalar and vector forms built on it), which counts it, so a test can
//! show that a training step makes none. A source scan (the trainer's `step_sync` test) fails
//! on any other syncing call in the modules a step runs.

use std::cell::Cell;

use tch::{Device, Tensor};

use crate::{Error, Result};

thread_local! {
    static HOST_READS: Cell<u64> = const { Cell::new(0) };
}

/// `values` as a 1-D tensor on `device`, copied without blocking the host (see
/// [`to_device_async`]); on the CPU, the values themselves. Panics, as tch's own copies do, when
/// libtorch fails to pin or copy (a CUDA failure, not an argument's).
pub fn upload<T: tch::kind::Element>(values: &[T], device: Device) -> Tensor {
    let host = Tensor::from_slice(values);
    match device {
        Device::Cuda(_) => copy_async(&host, device).unwrap_or_else(|e| panic!("upload to {device:?}: {e}")),
        _ => host,
    }
}

/// `t` on `device` without blocking the host. From the CPU to CUDA: staged in pinned memory (a
/// host copy, unless `t` is pinned already) and copied `non_blocking` on the current stream of
/// `device`, so the host returns at once and the copy runs in order with the kernels queued
/// after it. Between two CUDA devices: a non-blocking peer copy. Already on `device` (the CPU
/// included): `t` itself, shared. From a device to the CPU it is a read that waits for the
/// device, which this function refuses: use [`read_back`], which counts it.
pub fn to_device_async(t: &Tensor, device: Device) -> Result<Tensor> {
    match (t.device(), device) {
        (from, to) if from == to => Ok(t.shallow_clone()),
        (_, Device::Cuda(_)) => Ok(copy_async(t, device)?),
        (from, _) => Err(Error::Device {
            arg: "device",
            expected: format!("a CUDA device, or {from:?} itself (a device to host copy is `read_back`)"),
            got: device,
        }),
    }
}

/// The non-blocking copy of `t` to the CUDA `device`, through pinned memory when `t` is on the
/// host: a copy from pageable memory would make the host wait.
fn copy_async(t: &Tensor, device: Device) -> Result<Tensor> {
    let staged = if t.device() == Device::Cpu {
        crate::bridge::pinned(t)?
    } else {
        t.shallow_clone()
    };
    Ok(staged.f_to_device_(device, t.kind(), true, false)?)
}

/// A copy of `t` on the host. When `t` lives where kernels run (CUDA, or the CPU inside the
/// emulator) this waits for the device, and it is counted in [`host_reads`].
pub fn read_back(t: &Tensor) -> Tensor {
    if super::uses_kernels(t.device()) {
        HOST_READS.with(|n| n.set(n.get() + 1));
    }
    t.to_device(Device::Cpu)
}

/// The one value of `t` as f64, read through [`read_back`] (counted). An error when `t` does
/// not hold exactly one element.
pub fn read_f64(t: &Tensor) -> Result<f64> {
    Ok(f64::try_from(read_back(t))?)
}

/// The one value of `t` as i64, read through [`read_back`] (counted). An error when `t` does
/// not hold exactly one element.
pub fn read_i64(t: &Tensor) -> Result<i64> {
    Ok(i64::try_from(read_back(t))?)
}

/// The values of the 1-D `t` (converted to `T`'s dtype on the host), read through
/// [`read_back`] (counted).
pub fn read_vec<T: tch::kind::Element + Copy>(t: &Tensor) -> Result<Vec<T>> {
    Ok(Vec::<T>::try_from(read_back(t))?)
}

/// How many device values have been read back to the host on this thread through
/// [`read_back`] (the library's reads and the trainer's): the number of host syncs they caused.
/// A training step causes none; the trainer reads its metrics only at log and evaluation
/// intervals.
pub fn host_reads() -> u64 {
    HOST_READS.with(Cell::get)
}

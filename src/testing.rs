//! Support shared by the tests, the benchmarks and `enlighten demo`: the tolerances a fused op
//! is held to against its f64 reference, the relative error they bound, a device sync for
//! timings, and one test at a time over libtorch's process-wide state. Not part of the API.

use std::sync::{Mutex, MutexGuard};

use tch::{Device, Kind, Tensor};

/// Held by a test for as long as it needs libtorch's process-wide state to itself. The test
/// harness runs tests side by side in one process, where they would draw from each other's
/// global generator (`tch::manual_seed`) and take threads from each other's CPU reductions
/// (which split their work, and so round, by the threads they get).
pub fn serial() -> MutexGuard<'static, ()> {
    static ONE_AT_A_TIME: Mutex<()> = Mutex::new(());
    ONE_AT_A_TIME.lock().unwrap_or_else(|poisoned| poisoned.into_inner())
}

/// Tolerance on ||out - ref|| / ||ref|| for results stored in `kind` and computed in f32.
/// Panics for a dtype that is not f32, f16 or bf16.
pub fn tolerance(kind: Kind) -> f64 {
    match kind {
        Kind::Float => 1e-6,
        Kind::Half => 1e-3,
        Kind::BFloat16 => 8e-3,
        other => panic!("no tolerance for {other:?}"),
    }
}

/// ||out - ref|| / ||ref||, computed in f64 on the CPU; ||out|| when the reference is zero.
pub fn rel_err(out: &Tensor, reference: &Tensor) -> f64 {
    let o = out.to_device(Device::Cpu).to_kind(Kind::Double);
    let r = reference.to_device(Device::Cpu).to_kind(Kind::Double);
    let num = (&o - &r).norm().double_value(&[]);
    let den = r.norm().double_value(&[]);
    if den == 0.0 {
        num
    } else {
        num / den
    }
}

/// Panics unless `out` has the reference's shape and is within [`tolerance`] of it.
pub fn assert_close(what: &str, out: &Tensor, reference: &Tensor, kind: Kind) {
    assert_eq!(out.size(), reference.size(), "{what}: shape");
    let e = rel_err(out, reference);
    assert!(
        e <= tolerance(kind),
        "{what}: relative error {e:e} > {:e}",
        tolerance(kind)
    );
}

/// Waits for the device's queued work (nothing to wait for on the CPU), so a timing covers it.
pub fn sync(device: Device) {
    if let Device::Cuda(i) = device {
        tch::Cuda::synchronize(i as i64);
    }
}

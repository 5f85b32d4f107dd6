//! Helpers shared by the test bodies: fresh random inputs, poisoned outputs, relative error.
#![allow(dead_code)]

pub mod amp;
pub mod loss;
pub mod mixup;
pub mod stats;

use tch::{Device, Kind, Tensor};

/// A test body that runs unchanged on the CPU and on CUDA.
pub type Case = (&'static str, fn(Device));

/// Every shared case, in the order they run.
pub fn cases() -> Vec<Case> {
    [mixup::CASES, loss::CASES, amp::CASES, stats::CASES].concat()
}

pub const FLOAT_KINDS: [Kind; 3] = [Kind::Float, Kind::Half, Kind::BFloat16];

pub use enlighten::testing::{assert_close, rel_err};

/// Bitwise equality of two tensors of the same dtype (NaN payloads included).
pub fn assert_bitwise_eq(what: &str, a: &Tensor, b: &Tensor) {
    assert_eq!(a.size(), b.size(), "{what}: shape");
    assert_eq!(a.kind(), b.kind(), "{what}: dtype");
    let bits = |t: &Tensor| {
        let t = t.to_device(Device::Cpu).contiguous();
        let n = t.numel() * t.kind().elt_size_in_bytes();
        let mut v = vec![0u8; n];
        t.reshape([-1]).view_dtype(Kind::Uint8).copy_data_u8(&mut v, n);
        v
    };
    let (x, y) = (bits(a), bits(b));
    let first = x.iter().zip(&y).position(|(p, q)| p != q);
    assert!(first.is_none(), "{what}: first differing byte at {first:?}");
}

/// Normal values scaled to a few units, never exactly zero, in `kind` on `dev`.
pub fn randn(shape: &[i64], kind: Kind, dev: Device) -> Tensor {
    (Tensor::randn(shape, (Kind::Float, dev)) * 3.0 + 0.25).to_kind(kind)
}

/// A tensor filled with NaN, so elements an op fails to write show up in comparisons.
pub fn poisoned(shape: &[i64], kind: Kind, dev: Device) -> Tensor {
    Tensor::full(shape, f64::NAN, (kind, dev))
}

/// Asserts that `r` failed with an error whose message names `arg` (as `` `arg` ``).
pub fn expect_err<T: std::fmt::Debug>(what: &str, r: Result<T, enlighten::Error>, arg: &str) {
    match r {
        Err(e) => assert!(
            e.to_string().contains(&format!("`{arg}`")),
            "{what}: `{e}` does not name `{arg}`"
        ),
        Ok(v) => panic!("{what}: expected an error naming `{arg}`, got Ok({v:?})"),
    }
}

/// Whether the body runs inside the emulator, where every kernel thread is a fiber: bodies keep
/// every kernel path but use fewer repetitions of the largest sizes there.
pub fn emulated() -> bool {
    enlighten_emulator::active()
}

pub fn seed(s: i64) {
    tch::manual_seed(s);
}

//! What ranks compare before exchanging memory: one tensor's shape and dtype, or a fingerprint
//! of a whole parameter list. c10d trusts every rank to pass the same layout; a rank that does
//! not would otherwise read or write the wrong number of bytes.

use tch::{Kind, Tensor};

/// Renders compared values for an error message.
pub(super) type Show = fn(&[i64]) -> String;

/// Dimensions spelled out in a tensor's layout; more are covered by the element count.
const DIMS: usize = 8;

/// tch's kinds in declaration order, so a kind travels as its index and reads back by name.
const KINDS: [Kind; 20] = [
    Kind::Uint8,
    Kind::Int8,
    Kind::Int16,
    Kind::Int,
    Kind::Int64,
    Kind::Half,
    Kind::Float,
    Kind::Double,
    Kind::ComplexHalf,
    Kind::ComplexFloat,
    Kind::ComplexDouble,
    Kind::Bool,
    Kind::QInt8,
    Kind::QUInt8,
    Kind::QInt32,
    Kind::BFloat16,
    Kind::Float8e5m2,
    Kind::Float8e4m3fn,
    Kind::Float8e5m2fnuz,
    Kind::Float8e4m3fnuz,
];

fn kind_index(kind: Kind) -> i64 {
    KINDS.iter().position(|k| *k == kind).map_or(-1, |i| i as i64)
}

/// `[dtype, numel, ndim, d0, .., d7]`, unused dimensions 0: the same length for every tensor.
pub(super) fn of(tensor: &Tensor) -> Vec<i64> {
    let size = tensor.size();
    let mut values = vec![kind_index(tensor.kind()), tensor.numel() as i64, size.len() as i64];
    values.extend((0..DIMS).map(|d| size.get(d).copied().unwrap_or(0)));
    values
}

pub(super) fn show_tensor(values: &[i64]) -> String {
    let kind = usize::try_from(values[0])
        .ok()
        .and_then(|i| KINDS.get(i))
        .map_or_else(|| "an unknown dtype".to_string(), |k| format!("{k:?}"));
    let ndim = usize::try_from(values[2]).unwrap_or(0);
    let dims = &values[3..3 + ndim.min(DIMS)];
    let more = if ndim > DIMS { ", .." } else { "" };
    format!("shape {dims:?}{more} ({} elements) of {kind}", values[1])
}

/// `[count, total elements, FNV-1a hash of every (dtype, shape)]` of a parameter list, in order.
pub(super) fn fingerprint(tensors: &[Tensor]) -> Vec<i64> {
    let mut hash: u64 = 0xcbf2_9ce4_8422_2325;
    let mut mix = |value: i64| {
        for byte in value.to_le_bytes() {
            hash = (hash ^ u64::from(byte)).wrapping_mul(0x0100_0000_01b3);
        }
    };
    for tensor in tensors {
        mix(kind_index(tensor.kind()));
        let size = tensor.size();
        mix(size.len() as i64);
        size.into_iter().for_each(&mut mix);
    }
    let total: i64 = tensors.iter().map(|t| t.numel() as i64).sum();
    vec![tensors.len() as i64, total, hash as i64]
}

pub(super) fn show_fingerprint(values: &[i64]) -> String {
    format!(
        "{} tensors of {} elements (layout hash {:016x})",
        values[0], values[1], values[2] as u64
    )
}

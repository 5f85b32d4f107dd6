//! Plain-tch references (f64) and the per-layer composites a PyTorch user writes today.

use tch::{Device, Kind, Tensor};

/// Zero counts `[L, B]` with `(x == 0).sum(dims)` per layer (or `|x| <= eps`), on the CPU.
pub fn zero_counts_composite(layers: &[&Tensor], eps: Option<f64>) -> Tensor {
    let rows: Vec<Tensor> = layers
        .iter()
        .map(|t| composite_layer(&t.to_device(Device::Cpu), eps))
        .collect();
    Tensor::stack(&rows, 0)
}

/// [`zero_counts_composite`] in f64, where `|x| <= eps` is exact: the reference for the op (the
/// composite on an f16/bf16 layer compares against `eps` rounded to the layer's precision).
pub fn zero_counts_f64(layers: &[&Tensor], eps: Option<f64>) -> Tensor {
    let rows: Vec<Tensor> = layers
        .iter()
        .map(|t| composite_layer(&t.to_device(Device::Cpu).to_kind(Kind::Double), eps))
        .collect();
    Tensor::stack(&rows, 0)
}

/// One layer's per-sample count, the way a forward hook computes it.
pub fn composite_layer(t: &Tensor, eps: Option<f64>) -> Tensor {
    let b = t.size()[0];
    let zero = match eps {
        Some(e) => t.abs().le(e),
        None => t.eq(0.0),
    };
    zero.reshape([b, -1]).sum_dim_intlist(1, false, Kind::Int64)
}

/// Units (dim 1) that hold a non-zero, non-NaN value anywhere in the batch, as u8 `[C]`.
pub fn alive_units(t: &Tensor, eps: Option<f64>) -> Tensor {
    let t = t.to_device(Device::Cpu).to_kind(Kind::Double);
    let nonzero = match eps {
        Some(e) => t.abs().gt(e),
        None => t.ne(0.0),
    }
    .logical_and(&t.isnan().logical_not());
    let c = t.size()[1];
    nonzero
        .transpose(0, 1)
        .reshape([c, -1])
        .any_dim(1, false)
        .to_kind(Kind::Uint8)
}

/// (dot, |a|^2, |b|^2) over lists in f64.
pub fn dot_norms_f64(a: &[&Tensor], b: &[&Tensor]) -> [f64; 3] {
    let flat = |ts: &[&Tensor]| {
        Tensor::cat(
            &ts.iter()
                .map(|t| t.to_device(Device::Cpu).to_kind(Kind::Double).reshape([-1]))
                .collect::<Vec<_>>(),
            0,
        )
    };
    let (x, y) = (flat(a), flat(b));
    [
        x.dot(&y).double_value(&[]),
        x.dot(&x).double_value(&[]),
        y.dot(&y).double_value(&[]),
    ]
}

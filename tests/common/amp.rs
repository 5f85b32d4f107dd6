//! Mixed precision: a loss scale reaches the half gradients of the fused losses before they are
//! rounded. Under `(loss * 65536).backward()` with f16/bf16 inputs, the gradient the autograd
//! node writes has no more zeros than the f64 gradient times 65536 rounded to the input's dtype,
//! for every loss with an autograd form.
//!
//! The shapes make the defect visible: with 4099 (or 4096) classes and w = 1 / n_kept near 1/64,
//! many softmax entries times w lie below f16's smallest subnormal (6e-8) but far above it once
//! scaled. 4099 columns take the kernels' one-value path, 4096 their 16-byte packs.

use enlighten::ops::loss::{
    attach_gradient, reference, remove_highest, reweight_over, CrossEntropy, LmCrossEntropy, LossOutput, Mse,
    SequenceRank, Targets,
};
use tch::{Device, Kind, Tensor};

use super::{assert_close, randn, seed, Case};

pub const CASES: &[Case] = &[
    ("amp_scaled_ce_gradient_keeps_small_entries", amp_ce),
    ("amp_scaled_lm_gradient_keeps_small_entries", amp_lm),
    ("amp_scaled_mse_gradient_keeps_small_entries", amp_mse),
    ("amp_scaled_reweighted_gradient_keeps_small_entries", amp_reweighted),
];

/// The loss scale of f16 mixed precision's usual start (PyTorch's GradScaler: 2^16).
const SCALE: f64 = 65536.0;

const HALF_KINDS: [Kind; 2] = [Kind::Half, Kind::BFloat16];

/// Columns of the one-value path and of the packed path.
const COLUMNS: [i64; 2] = [4099, 4096];

/// The ignored label of the padded cases.
const IGNORE: i64 = -100;

/// Entries equal to 0.
fn zeros(t: &Tensor) -> i64 {
    t.to_device(Device::Cpu).eq(0.0).sum(Kind::Int64).int64_value(&[])
}

/// `x`'s gradient after `(loss * SCALE).backward()` against the f64 reference gradient scaled
/// and rounded once to `kind`: no more zeros, and close.
fn assert_scaled_grad(what: &str, x: &Tensor, loss: &Tensor, reference: &Tensor) {
    (loss * SCALE).backward();
    let (got, kind) = (x.grad(), x.kind());
    assert_eq!(got.kind(), kind, "{what}: gradient dtype");
    let exact = reference * SCALE;
    let expected = exact.to_kind(kind);
    let (z_got, z_expected) = (zeros(&got), zeros(&expected));
    assert!(
        z_got <= z_expected,
        "{what}: {z_got} of {} gradient entries are 0, the f64 gradient times {SCALE} rounded to \
         {kind:?} has {z_expected}",
        got.numel()
    );
    assert_close(what, &got, &exact, kind);
}

/// `y` with its first rows' labels set to the ignored label.
fn padded(y: &Tensor, rows: i64) -> Tensor {
    let p = y.copy();
    let _ = p.narrow(0, 0, rows).fill_(IGNORE);
    p
}

/// Cross-entropy, plain and with High-Loss Removal over ignored labels.
fn amp_ce(dev: Device) {
    seed(41);
    let b = 64;
    for kind in HALF_KINDS {
        for c in COLUMNS {
            let logits = randn(&[b, c], kind, dev);
            let y = Tensor::randint(c, [b], (Kind::Int64, dev));
            let y_padded = padded(&y, 5);
            let plain = CrossEntropy::default();
            let removal = CrossEntropy {
                ignore_index: Some(IGNORE),
                drop_share: 0.25,
                ..plain
            };
            for (name, opts, y) in [("plain", plain, &y), ("removal, ignored labels", removal, &y_padded)] {
                let x = logits.detach().set_requires_grad(true);
                let loss = opts.forward(&x, y).unwrap();
                let r = reference::cross_entropy_f64(&logits, Targets::Index(y), &opts).unwrap();
                assert_scaled_grad(&format!("ce [{b}, {c}] {kind:?} {name}"), &x, &loss, &r.grad);
            }
        }
    }
}

/// The language-model loss ranked by sequence and by token, with padding and removal.
fn amp_lm(dev: Device) {
    seed(42);
    let (b, t) = (4i64, 16i64);
    for kind in HALF_KINDS {
        for v in COLUMNS {
            let logits = randn(&[b, t, v], kind, dev);
            let tokens = Tensor::randint(v, [b, t], (Kind::Int64, dev));
            let _ = tokens.slice(1, t - 3, t, 1).fill_(IGNORE);
            for rank in [SequenceRank::PerSequence, SequenceRank::PerToken] {
                let lm = LmCrossEntropy {
                    label_smoothing: 0.0,
                    ignore_index: Some(IGNORE),
                    drop_share: 0.25,
                    rank,
                };
                let x = logits.detach().set_requires_grad(true);
                let loss = lm.forward(&x, &tokens).unwrap();
                let r = reference::lm_cross_entropy_f64(&logits, &tokens, &lm).unwrap();
                assert_scaled_grad(&format!("lm [{b}, {t}, {v}] {kind:?} {rank:?}"), &x, &loss, &r.grad);
            }
        }
    }
}

/// MSE of predictions near their targets (differences of about 1e-2), with and without removal.
fn amp_mse(dev: Device) {
    seed(43);
    let b = 64;
    for kind in HALF_KINDS {
        for f in COLUMNS {
            let pred = randn(&[b, f], kind, dev);
            let noise = Tensor::randn([b, f], (Kind::Float, dev)) * 1e-2;
            let target = (pred.to_kind(Kind::Float) + noise).to_kind(kind);
            for r in [0.0, 0.25] {
                let x = pred.detach().set_requires_grad(true);
                let loss = Mse { drop_share: r }.forward(&x, &target).unwrap();
                let reference = reference::mse_f64(&pred, &target, r).unwrap();
                assert_scaled_grad(&format!("mse [{b}, {f}] {kind:?} r {r}"), &x, &loss, &reference.grad);
            }
        }
    }
}

/// The data-parallel form (the trainer's global High-Loss Removal): a gradient computed with
/// nothing removed by `loss_and_grad_f32`, re-weighted to the kept rows over a count
/// (`reweight_over`, here one rank's: the kept rows themselves), then attached. The loss scale
/// must reach it before it is rounded, as in the differentiable forms.
fn amp_reweighted(dev: Device) {
    seed(44);
    let b = 64;
    let share = 0.25;
    // `x` becomes the node's input; `out` was computed on its detached copy.
    let removed = |x: &Tensor, out: LossOutput| -> Tensor {
        let keep = remove_highest(&out.per_sample, Some(&out.keep), share).unwrap().keep;
        let count = keep.sum(Kind::Float);
        attach_gradient(x, reweight_over(out, &keep, Some(&count)).unwrap())
            .unwrap()
            .loss
    };
    for kind in HALF_KINDS {
        for c in COLUMNS {
            let logits = randn(&[b, c], kind, dev);
            let y = Tensor::randint(c, [b], (Kind::Int64, dev));
            let all = CrossEntropy::default();
            let x = logits.detach().set_requires_grad(true);
            let loss = removed(&x, all.loss_and_grad_f32(&logits, &y).unwrap());
            let r =
                reference::cross_entropy_f64(&logits, Targets::Index(&y), &CrossEntropy::with_removal(share)).unwrap();
            assert_scaled_grad(&format!("reweighted ce [{b}, {c}] {kind:?}"), &x, &loss, &r.grad);

            let pred = randn(&[b, c], kind, dev);
            let noise = Tensor::randn([b, c], (Kind::Float, dev)) * 1e-2;
            let target = (pred.to_kind(Kind::Float) + noise).to_kind(kind);
            let x = pred.detach().set_requires_grad(true);
            let loss = removed(&x, Mse::default().loss_and_grad_f32(&pred, &target).unwrap());
            let r = reference::mse_f64(&pred, &target, share).unwrap();
            assert_scaled_grad(&format!("reweighted mse [{b}, {c}] {kind:?}"), &x, &loss, &r.grad);
        }
    }
}

//! Per-sample losses, High-Loss Removal and the gradient against the f64 reference.

use enlighten::ops::loss::{
    attach_gradient, reference, remove_highest, CrossEntropy, LmCrossEntropy, Mse, RunningQuantile, SequenceRank,
    Targets,
};
use enlighten::ops::mixup::{Lambda, MixedTargets};
use tch::{Device, Kind, Tensor};

use super::{assert_bitwise_eq, assert_close, emulated, expect_err, poisoned, randn, rel_err, seed, Case, FLOAT_KINDS};

pub const CASES: &[Case] = &[
    ("ce_matches_reference", ce_matches_reference),
    (
        "ce_gradient_equals_libtorch_masked_mean_gradient",
        ce_gradient_equals_libtorch_masked_mean_gradient,
    ),
    (
        "autograd_node_scales_retains_refuses_double_backward",
        autograd_node_scales_retains_refuses_double_backward,
    ),
    (
        "autograd_node_scales_in_place_on_the_kernels_path",
        autograd_node_scales_in_place_on_the_kernels_path,
    ),
    (
        "ce_gradient_matches_finite_differences",
        ce_gradient_matches_finite_differences,
    ),
    (
        "selection_removes_exactly_the_k_largest",
        selection_removes_exactly_the_k_largest,
    ),
    ("selection_breaks_ties_by_index", selection_breaks_ties_by_index),
    (
        "selection_on_large_batches_with_many_ties",
        selection_on_large_batches_with_many_ties,
    ),
    (
        "ce_extreme_logits_stay_finite_and_nan_propagates",
        ce_extreme_logits_stay_finite_and_nan_propagates,
    ),
    ("selection_over_any_key_range", selection_over_any_key_range),
    ("ce_masked_logits_match_pytorch", ce_masked_logits_match_pytorch),
    (
        "ce_ignored_partner_gives_its_weight_to_y_a",
        ce_ignored_partner_gives_its_weight_to_y_a,
    ),
    ("ce_long_rows_stage_what_fits", ce_long_rows_stage_what_fits),
    (
        "removal_zeroes_dropped_gradient_rows",
        removal_zeroes_dropped_gradient_rows,
    ),
    ("mse_matches_reference", mse_matches_reference),
    (
        "lm_sequence_and_token_ranking_match_reference",
        lm_sequence_and_token_ranking_match_reference,
    ),
    (
        "remove_highest_and_running_quantile",
        remove_highest_and_running_quantile,
    ),
    ("loss_rejects_bad_arguments", loss_rejects_bad_arguments),
];

/// Short rows (a team of lanes a row, about a lane a pack up to a warp, many to a block: up to
/// 256 packs, so f32 1024 is the last such; teams of 1 and 2 lanes at C = 4 and 8 f32; batches
/// that leave teams of a warp without a row) and longer ones (a block a row: f32 1028; f16/bf16
/// 1028 is unaligned, 1028 single values).
const SHAPES: &[(i64, i64)] = &[
    (1, 7),
    (5, 3),
    (9, 4),
    (17, 8),
    (33, 10),
    (128, 100),
    (64, 1000),
    (257, 37),
    (6, 1024),
    (3, 1028),
];

/// The language-model loss with `opts`' token options, ranking by `rank`.
fn lm_loss(opts: &CrossEntropy, rank: SequenceRank) -> LmCrossEntropy {
    LmCrossEntropy {
        label_smoothing: opts.label_smoothing,
        ignore_index: opts.ignore_index,
        drop_share: opts.drop_share,
        rank,
    }
}

fn labels(b: i64, c: i64, dev: Device) -> Tensor {
    Tensor::randint(c, [b], (Kind::Int64, dev))
}

fn mixed(b: i64, c: i64, per_sample: bool, dev: Device) -> MixedTargets {
    let lam = if per_sample {
        Lambda::PerSample(Tensor::rand([b], (Kind::Float, dev)))
    } else {
        Lambda::Batch(0.3)
    };
    MixedTargets {
        y_a: labels(b, c, dev),
        y_b: labels(b, c, dev),
        lam,
    }
}

/// Loss values are computed in f32 whatever the storage type of the logits.
const LOSS_TOL: f64 = 2e-5;

/// The reported loss against the reference; when nothing is kept both must be NaN.
fn assert_loss_close(what: &str, loss: &Tensor, reference: &Tensor) {
    if reference.double_value(&[]).is_nan() {
        assert!(
            loss.double_value(&[]).is_nan(),
            "{what}: nothing kept, so the loss is NaN"
        );
    } else {
        let e = rel_err(loss, reference);
        assert!(e < LOSS_TOL, "{what}: loss rel err {e:e}");
    }
}

fn check_against_reference(what: &str, logits: &Tensor, targets: Targets<'_>, opts: &CrossEntropy) {
    let kind = logits.kind();
    let mut grad = poisoned(&logits.size(), kind, logits.device());
    let out = opts.loss_and_grad_into(logits, targets, &mut grad).unwrap();
    let r = reference::cross_entropy_f64(logits, targets, opts).unwrap();
    let e = rel_err(&out.per_sample, &r.per_sample);
    assert!(e < LOSS_TOL, "{what}: per-sample rel err {e:e}");
    let keep = out.keep.to_device(Device::Cpu);
    assert!(
        keep.eq_tensor(&r.keep).all().int64_value(&[]) == 1,
        "{what}: keep mask differs"
    );
    assert_loss_close(what, &out.loss, &r.loss);
    assert_eq!(out.correct.int64_value(&[]), r.correct, "{what}: correct count");
    assert_close(&format!("{what}: grad"), &grad, &r.grad, kind);
    // Finite and fully written: the poison is gone.
    assert_eq!(
        grad.isnan().any().int64_value(&[]),
        0,
        "{what}: unwritten gradient elements"
    );
}

fn ce_matches_reference(dev: Device) {
    seed(11);
    for &(b, c) in SHAPES {
        for kind in FLOAT_KINDS {
            let logits = randn(&[b, c], kind, dev);
            let y = labels(b, c, dev);
            let batch_mix = mixed(b, c, false, dev);
            let sample_mix = mixed(b, c, true, dev);
            for smoothing in [0.0, 0.1] {
                for drop_share in [0.0, 0.25] {
                    let opts = CrossEntropy {
                        label_smoothing: smoothing,
                        ignore_index: None,
                        drop_share,
                    };
                    let what = format!("[{b}, {c}] {kind:?} eps {smoothing} r {drop_share}");
                    check_against_reference(&format!("{what} index"), &logits, Targets::Index(&y), &opts);
                    check_against_reference(&format!("{what} mixed"), &logits, Targets::Mixed(&batch_mix), &opts);
                    check_against_reference(
                        &format!("{what} mixed per-sample"),
                        &logits,
                        Targets::Mixed(&sample_mix),
                        &opts,
                    );
                    // ignore_index: every third label ignored.
                    let ignored = y.copy();
                    let _ = ignored.slice(0, 0, b, 3).fill_(-100);
                    let opts = CrossEntropy {
                        ignore_index: Some(-100),
                        ..opts
                    };
                    check_against_reference(&format!("{what} ignore"), &logits, Targets::Index(&ignored), &opts);
                }
            }
        }
    }
}

fn ce_gradient_equals_libtorch_masked_mean_gradient(dev: Device) {
    seed(12);
    for (b, c) in [(64i64, 10i64), (33, 100)] {
        let base = randn(&[b, c], Kind::Float, dev);
        let y = labels(b, c, dev);
        let opts = CrossEntropy {
            label_smoothing: 0.1,
            ignore_index: None,
            drop_share: 0.2,
        };
        let ours = base.detach().set_requires_grad(true);
        let loss = opts.forward(&ours, &y).unwrap();
        loss.backward();
        let theirs = base.detach().set_requires_grad(true);
        let composite = reference::composite(&theirs, Targets::Index(&y), &opts).unwrap();
        composite.backward();
        let e = rel_err(&ours.grad(), &theirs.grad());
        assert!(e < 1e-5, "[{b}, {c}] gradient rel err vs libtorch {e:e}");
        let e = rel_err(&loss, &composite);
        assert!(e < 1e-5, "[{b}, {c}] loss rel err vs libtorch {e:e}");
        assert_eq!(
            loss.double_value(&[]),
            opts.loss_and_grad(&base, &y).unwrap().loss.double_value(&[]),
            "the returned scalar is the kernel's loss"
        );
    }
}

fn ce_gradient_matches_finite_differences(dev: Device) {
    seed(13);
    let (b, c) = (4i64, 5i64);
    let logits = randn(&[b, c], Kind::Float, Device::Cpu).to_kind(Kind::Double);
    let t = mixed(b, c, true, Device::Cpu);
    let opts = CrossEntropy {
        label_smoothing: 0.1,
        ignore_index: None,
        drop_share: 0.25,
    };
    let r = reference::cross_entropy_f64(&logits, Targets::Mixed(&t), &opts).unwrap();
    let h = 1e-6;
    let fd = Tensor::zeros([b, c], (Kind::Double, Device::Cpu));
    for i in 0..b {
        for j in 0..c {
            let bump = |d: f64| {
                let z = logits.copy();
                let _ = z.get(i).get(j).g_add_scalar_(d);
                reference::cross_entropy_f64(&z, Targets::Mixed(&t), &opts)
                    .unwrap()
                    .loss
                    .double_value(&[])
            };
            let _ = fd.get(i).get(j).fill_((bump(h) - bump(-h)) / (2.0 * h));
        }
    }
    let e = rel_err(&r.grad, &fd);
    assert!(e < 1e-6, "reference gradient vs finite differences {e:e}");
    // The fused op on this device, from the f32 logits.
    let t_dev = MixedTargets {
        y_a: t.y_a.to_device(dev),
        y_b: t.y_b.to_device(dev),
        lam: Lambda::PerSample(match &t.lam {
            Lambda::PerSample(l) => l.to_device(dev),
            Lambda::Batch(_) => unreachable!(),
        }),
    };
    let out = opts
        .loss_and_grad(&logits.to_kind(Kind::Float).to_device(dev), Targets::Mixed(&t_dev))
        .unwrap();
    let e = rel_err(out.grad.as_ref().unwrap(), &fd);
    assert!(e < 1e-5, "fused gradient vs finite differences {e:e}");
}

fn selection_removes_exactly_the_k_largest(dev: Device) {
    seed(14);
    for b in [1i64, 2, 7, 64, 1000] {
        let logits = randn(&[b, 10], Kind::Float, dev);
        let y = labels(b, 10, dev);
        for r in [0.0, 0.1, 0.5, (b - 1) as f64 / b as f64] {
            let opts = CrossEntropy {
                drop_share: r,
                ..Default::default()
            };
            let out = opts.forward_with_stats(&logits, Targets::Index(&y)).unwrap();
            let k = (r * b as f64).floor() as i64;
            let keep = out.keep.to_device(Device::Cpu);
            let losses = out.per_sample.to_device(Device::Cpu);
            assert_eq!(out.removed, k);
            assert_eq!(
                b - keep.sum(Kind::Int64).int64_value(&[]),
                k,
                "b {b} r {r}: exactly k removed"
            );
            if k > 0 {
                let removed_min = losses.masked_select(&keep.logical_not()).min().double_value(&[]);
                let kept_max = losses.masked_select(&keep).max().double_value(&[]);
                assert!(
                    removed_min >= kept_max,
                    "b {b} r {r}: removed {removed_min} < kept {kept_max}"
                );
                assert_eq!(
                    out.threshold.double_value(&[]),
                    removed_min,
                    "threshold is the smallest removed loss"
                );
            } else {
                assert!(out.threshold.double_value(&[]).is_infinite());
            }
        }
    }
}

fn selection_breaks_ties_by_index(dev: Device) {
    // Eight identical rows: equal losses; the lowest indices are removed first.
    let logits = randn(&[1, 6], Kind::Float, dev).repeat([8, 1]);
    let y = Tensor::full([8], 2, (Kind::Int64, dev));
    let opts = CrossEntropy {
        drop_share: 0.3,
        ..Default::default()
    }; // k = 2
    for _ in 0..3 {
        let out = opts.loss_and_grad(&logits, Targets::Index(&y)).unwrap();
        let keep = Vec::<bool>::try_from(out.keep.to_device(Device::Cpu)).unwrap();
        assert_eq!(keep, [false, false, true, true, true, true, true, true]);
        let g = out.grad.unwrap();
        assert_eq!(
            g.narrow(0, 0, 2).abs().sum(Kind::Float).double_value(&[]),
            0.0,
            "removed rows have no gradient"
        );
        assert!(g.narrow(0, 2, 6).abs().sum(Kind::Float).double_value(&[]) > 0.0);
    }
}

/// Above 8192 rows CUDA selects with many blocks. The rows repeat 50 random (row, label)
/// patterns, so thousands of losses tie exactly (same inputs, same bits) while distinct patterns
/// stay far apart compared with f32 rounding: the keep mask must match the reference exactly.
fn selection_on_large_batches_with_many_ties(dev: Device) {
    seed(18);
    // Emulated: the single-block path at its limit and the multi-block path at 2 and 5 blocks.
    let sizes: &[(i64, i64)] = if emulated() {
        &[(8192, 3), (8193, 3), (20_000, 4)]
    } else {
        &[(8192, 3), (8193, 3), (20_000, 4), (100_000, 3)]
    };
    let shares: &[f64] = if emulated() {
        &[0.0, 0.5, 0.999]
    } else {
        &[0.0, 0.1, 0.5, 0.999]
    };
    for &(b, c) in sizes {
        let patterns = randn(&[50, c], Kind::Float, dev);
        let pattern_labels = labels(50, c, dev);
        let which = Tensor::randint(50, [b], (Kind::Int64, dev));
        let logits = patterns.index_select(0, &which);
        let y = pattern_labels.index_select(0, &which);
        let ignored = y.copy();
        let _ = ignored.slice(0, 0, b, 7).fill_(-1);
        for (targets, ignore) in [(&y, None), (&ignored, Some(-1))] {
            for &r in shares {
                let opts = CrossEntropy {
                    label_smoothing: 0.0,
                    ignore_index: ignore,
                    drop_share: r,
                };
                check_against_reference(
                    &format!("large [{b}, {c}] r {r} ignore {ignore:?}"),
                    &logits,
                    Targets::Index(targets),
                    &opts,
                );
            }
        }
    }
    // Token-level ranking of a language-model batch crosses the same threshold.
    let logits = randn(&[4, 3000, 5], Kind::Float, dev);
    let tokens = Tensor::randint(5, [4, 3000], (Kind::Int64, dev));
    let opts = CrossEntropy {
        drop_share: 0.1,
        ..Default::default()
    };
    lm_matches("lm tokens 12000", &logits, &tokens, &opts, SequenceRank::PerToken);
}

/// The keep mask a selection of the `k` largest losses must give: losses ordered as the kernels
/// order them (the float's bits made monotone, so -0 < +0), ties removed lower index first, NaN
/// never removed.
fn expected_keep(losses: &[f32], k: usize) -> Vec<bool> {
    let key = |x: f32| {
        let b = x.to_bits();
        if b & 0x8000_0000 != 0 {
            !b
        } else {
            b | 0x8000_0000
        }
    };
    let mut order: Vec<usize> = (0..losses.len()).filter(|&i| !losses[i].is_nan()).collect();
    order.sort_by(|&a, &b| key(losses[b]).cmp(&key(losses[a])).then(a.cmp(&b)));
    let mut keep = vec![true; losses.len()];
    order.iter().take(k).for_each(|&i| keep[i] = false);
    keep
}

/// The radix select over key ranges of every width, on one block (5000 rows) and on many (9000):
/// all losses equal (no radix pass), a band narrower than 2^22 keys (two passes), and arbitrary
/// float bits with both zeros and NaNs (the whole 32-bit range, three passes).
fn selection_over_any_key_range(dev: Device) {
    for b in [5000usize, 9000] {
        let mut state = 0x9e37_79b9_7f4a_7c15u64 ^ b as u64;
        let mut next = move || {
            state ^= state << 13;
            state ^= state >> 7;
            state ^= state << 17;
            state
        };
        let equal = vec![2.5f32; b];
        let narrow: Vec<f32> = (0..b).map(|_| 2.0 + (next() % 9000) as f32 * 1e-4).collect();
        let any: Vec<f32> = (0..b)
            .map(|i| match i % 97 {
                0 => f32::NAN,
                1 => 0.0,
                2 => -0.0,
                _ => Some(f32::from_bits(next() as u32))
                    .filter(|x| x.is_finite())
                    .unwrap_or(1.0),
            })
            .collect();
        for (what, losses) in [("equal", equal), ("narrow", narrow), ("any bits", any)] {
            let t = Tensor::from_slice(&losses).to_device(dev);
            let out = remove_highest(&t, None, 0.3).unwrap();
            let keep = Vec::<bool>::try_from(out.keep.to_device(Device::Cpu)).unwrap();
            let first_wrong = keep
                .iter()
                .zip(expected_keep(&losses, out.removed as usize))
                .position(|(a, b)| *a != b);
            assert_eq!(first_wrong, None, "{what}, {b} rows: keep mask");
        }
    }
}

fn ce_extreme_logits_stay_finite_and_nan_propagates(dev: Device) {
    for kind in FLOAT_KINDS {
        let big = if kind == Kind::Half { 6e4 } else { 1e4 };
        let logits = (randn(&[16, 10], Kind::Float, dev).sign() * big).to_kind(kind);
        let y = labels(16, 10, dev);
        let opts = CrossEntropy {
            label_smoothing: 0.1,
            ignore_index: None,
            drop_share: 0.0,
        };
        let out = opts.loss_and_grad(&logits, Targets::Index(&y)).unwrap();
        assert_eq!(
            out.per_sample.isfinite().all().int64_value(&[]),
            1,
            "{kind:?}: finite losses"
        );
        assert_eq!(
            out.grad.as_ref().unwrap().isfinite().all().int64_value(&[]),
            1,
            "{kind:?}: finite gradient"
        );
        let r = reference::cross_entropy_f64(&logits, Targets::Index(&y), &opts).unwrap();
        assert!(
            rel_err(&out.per_sample, &r.per_sample) < LOSS_TOL,
            "{kind:?}: extreme losses"
        );

        // A NaN logit: that row's loss is NaN, it is never removed, the mean is NaN.
        let nan_logits = randn(&[8, 5], kind, dev);
        let _ = nan_logits.get(3).get(1).fill_(f64::NAN);
        let opts = CrossEntropy {
            drop_share: 0.5,
            ..Default::default()
        };
        let out = opts
            .loss_and_grad(&nan_logits, Targets::Index(&labels(8, 5, dev)))
            .unwrap();
        let losses = out.per_sample.to_device(Device::Cpu);
        assert!(losses.double_value(&[3]).is_nan(), "{kind:?}: NaN row");
        assert_eq!(
            losses.isnan().sum(Kind::Int64).int64_value(&[]),
            1,
            "{kind:?}: other rows are numbers"
        );
        assert!(
            Vec::<bool>::try_from(out.keep.to_device(Device::Cpu)).unwrap()[3],
            "{kind:?}: a NaN row is never removed"
        );
        assert!(out.loss.double_value(&[]).is_nan(), "{kind:?}: the mean sees the NaN");
    }
}

/// Masked vocabulary entries (-inf logits): PyTorch's `cross_entropy` is finite wherever the
/// target puts no weight on a -inf logit, and so are the loss and gradient here, whatever the
/// row's split between threads; where the target weighs a -inf logit (its label, or any of them
/// under label smoothing) both are +inf.
fn ce_masked_logits_match_pytorch(dev: Device) {
    // The worked example: logits [2, -inf, 0.5], label 0 -> log(1 + e^-1.5) = 0.2014.
    let z = Tensor::from_slice(&[2.0f32, f32::NEG_INFINITY, 0.5])
        .view([1, 3])
        .to_device(dev);
    let y = Tensor::from_slice(&[0i64]).to_device(dev);
    // A row masked whole: -inf - -inf, NaN, as PyTorch's.
    let all = Tensor::from_slice(&[f32::NEG_INFINITY; 3]).view([1, 3]).to_device(dev);
    let whole = CrossEntropy::default()
        .forward_with_stats(&all, Targets::Index(&y))
        .unwrap();
    assert!(whole.per_sample.double_value(&[0]).is_nan(), "a row masked whole: NaN");
    let out = CrossEntropy::default().loss_and_grad(&z, Targets::Index(&y)).unwrap();
    assert!(
        (out.loss.double_value(&[]) - (1.0f64 + (-1.5f64).exp()).ln()).abs() < 1e-6,
        "{:?}",
        out.loss
    );
    seed(31);
    for kind in FLOAT_KINDS {
        for (b, c) in [(9i64, 5i64), (40, 300), (3, 2000)] {
            let logits = randn(&[b, c], kind, dev);
            let y = labels(b, c, dev);
            // About a third of the logits masked, never a row's label.
            let mut mask = Tensor::rand([b, c], (Kind::Float, dev)).lt(0.35);
            let _ = mask.scatter_(1, &y.unsqueeze(1), &Tensor::zeros([b, 1], (Kind::Bool, dev)));
            let masked = logits.masked_fill(&mask, f64::NEG_INFINITY);
            for smoothing in [0.0, 0.1] {
                let opts = CrossEntropy {
                    label_smoothing: smoothing,
                    ..Default::default()
                };
                let what = format!("[{b}, {c}] {kind:?} eps {smoothing}");
                let out = opts.loss_and_grad(&masked, Targets::Index(&y)).unwrap();
                let torch = masked.to_kind(Kind::Double).cross_entropy_loss::<Tensor>(
                    &y,
                    None,
                    tch::Reduction::None,
                    -100,
                    smoothing,
                );
                if smoothing == 0.0 {
                    assert!(
                        rel_err(&out.per_sample, &torch) < LOSS_TOL,
                        "{what}: per-sample vs PyTorch"
                    );
                    let grad = out.grad.as_ref().unwrap();
                    assert_eq!(grad.isfinite().all().int64_value(&[]), 1, "{what}: finite gradient");
                    check_against_reference(&what, &masked, Targets::Index(&y), &opts);
                } else {
                    let inf = out.per_sample.to_device(Device::Cpu).isposinf();
                    assert!(
                        inf.equal(&torch.isposinf().to_device(Device::Cpu)),
                        "{what}: +inf exactly where PyTorch's is"
                    );
                }
                // A label on a masked logit: PyTorch's answer, +inf (NaN where the whole row is
                // masked: -inf - -inf).
                let on_label = masked.copy();
                let _ = on_label.get(0).get(y.int64_value(&[0])).fill_(f64::NEG_INFINITY);
                let out = opts.forward_with_stats(&on_label, Targets::Index(&y)).unwrap();
                let torch = on_label
                    .to_kind(Kind::Double)
                    .cross_entropy_loss::<Tensor>(&y, None, tch::Reduction::None, -100, smoothing)
                    .double_value(&[0]);
                let ours = out.per_sample.double_value(&[0]);
                assert!(
                    ours == torch || (ours.is_nan() && torch.is_nan()),
                    "{what}: masked label: {ours} vs PyTorch's {torch}"
                );
            }
        }
    }
}

/// Mixup pairs a valid row with a row whose label is ignored: the row keeps counting, and the
/// partner's weight goes to the row's own label (the loss is the plain loss on y_a).
fn ce_ignored_partner_gives_its_weight_to_y_a(dev: Device) {
    seed(32);
    for (b, c) in [(12i64, 7i64), (65, 100)] {
        let logits = randn(&[b, c], Kind::Float, dev);
        let y_a = labels(b, c, dev);
        let y_b = labels(b, c, dev);
        let _ = y_b.slice(0, 0, b, 3).fill_(-1);
        let _ = y_a.slice(0, 1, b, 5).fill_(-1);
        for lam in [
            Lambda::Batch(0.3),
            Lambda::PerSample(Tensor::rand([b], (Kind::Float, dev))),
        ] {
            let targets = MixedTargets {
                y_a: y_a.shallow_clone(),
                y_b: y_b.shallow_clone(),
                lam,
            };
            for drop_share in [0.0, 0.25] {
                let opts = CrossEntropy {
                    label_smoothing: 0.1,
                    ignore_index: Some(-1),
                    drop_share,
                };
                let what = format!("[{b}, {c}] {:?} r {drop_share}", targets.lam);
                check_against_reference(&what, &logits, Targets::Mixed(&targets), &opts);
                let out = opts.forward_with_stats(&logits, Targets::Mixed(&targets)).unwrap();
                let alone = opts.forward_with_stats(&logits, Targets::Index(&y_a)).unwrap();
                let partner_ignored = y_b.eq(-1).logical_and(&y_a.ne(-1));
                let diff = (&out.per_sample - &alone.per_sample)
                    .abs()
                    .masked_select(&partner_ignored);
                assert!(
                    diff.max().double_value(&[]) < 1e-5,
                    "{what}: rows with an ignored partner"
                );
                // The tch composite (lam CE(y_a) + (1 - lam) CE(y_b)) agrees on every row that counts.
                let composite = reference::per_sample_ce_autograd(&logits, Targets::Mixed(&targets), &opts).unwrap();
                let counts = y_a.ne(-1);
                let (fused, plain) = (out.per_sample.masked_select(&counts), composite.masked_select(&counts));
                assert!(rel_err(&fused, &plain) < LOSS_TOL, "{what}: the tch composite agrees");
            }
        }
    }
}

/// Long rows (a language model's vocabulary): ce_forward keeps as much of each row in shared
/// memory as a block may have between its statistics and gradient passes, in 16-byte packs
/// (4096 and 16384 columns) or one value at a time (5003 columns, or an unaligned view).
/// Emulated, the same launch under profiles whose shared memory holds the whole row or part of
/// it gives the same bits (10 KiB holds part of every row here but f16/bf16 [2, 4096]; no device
/// holds none of a row, since the selection kernel's own 9 KiB of static shared memory must fit
/// a block); a whole f32 row of 16384 columns is 64 KiB, past the 48 KiB a launch has without
/// the opt-in the library sets when it loads the kernel.
fn ce_long_rows_stage_what_fits(dev: Device) {
    seed(33);
    let opts = CrossEntropy {
        label_smoothing: 0.1,
        ignore_index: None,
        drop_share: 0.34,
    };
    for kind in FLOAT_KINDS {
        // (9, 1000): short rows, a warp each, whose teams stage side by side.
        for (b, c) in [(3i64, 5003i64), (2, 4096), (2, 16384), (9, 1000)] {
            let flat = randn(&[b * c + 1], kind, dev);
            let y = labels(b, c, dev);
            for (view, logits) in [
                ("aligned", flat.narrow(0, 0, b * c).view([b, c])),
                ("unaligned view", flat.narrow(0, 1, b * c).view([b, c])),
            ] {
                let what = format!("[{b}, {c}] {kind:?} {view}");
                check_against_reference(&what, &logits, Targets::Index(&y), &opts);
                if emulated() {
                    let run = |shared: u32| {
                        let profile = enlighten_emulator::Profile {
                            max_shared_per_block: shared,
                            ..enlighten_emulator::Profile::TINY
                        };
                        enlighten_emulator::emulate(profile, || {
                            let mut grad = poisoned(&[b, c], kind, dev);
                            let out = opts.loss_and_grad_into(&logits, Targets::Index(&y), &mut grad).unwrap();
                            (out.per_sample, grad)
                        })
                    };
                    let (whole, part) = (run(227 * 1024), run(10 * 1024));
                    assert_bitwise_eq(&format!("{what}: losses, part staged"), &part.0, &whole.0);
                    assert_bitwise_eq(&format!("{what}: grad, part staged"), &part.1, &whole.1);
                }
            }
        }
    }
}

/// Panics unless every gradient row the output does not keep (dropped or ignored) is exactly 0:
/// a NaN left from a poisoned buffer or a row written but not zeroed both show.
fn assert_unkept_rows_zero(what: &str, grad: &Tensor, keep: &Tensor) {
    let b = grad.size()[0];
    let row_abs = grad
        .to_device(Device::Cpu)
        .to_kind(Kind::Double)
        .abs()
        .view([b, -1])
        .sum_dim_intlist(1, false, Kind::Double);
    let unkept = row_abs.masked_select(&keep.to_device(Device::Cpu).logical_not());
    let bad = unkept.ne(0.0).sum(Kind::Int64).int64_value(&[]);
    assert_eq!(
        bad,
        0,
        "{what}: {bad} of {} unkept gradient rows are not 0",
        unkept.numel()
    );
}

/// High-Loss Removal's zeroing of the dropped gradient rows (on CUDA a grid-wide pass after the
/// selection): dropped rows exactly 0 and kept rows the reference's, into poisoned buffers, for
/// every store width (rows of 16-byte packs, rows of 4 and 2 bytes, a buffer one element off
/// 16-byte alignment), batch 1, nothing dropped, every candidate dropped, f32/f16/bf16, the one-
/// and many-block selections, cross-entropy and MSE.
fn removal_zeroes_dropped_gradient_rows(dev: Device) {
    seed(34);
    const IGNORE: i64 = -100;
    for kind in FLOAT_KINDS {
        // Rows of one store up to rows wider than a block's stores (several blocks a row).
        let mut shapes = vec![(1i64, 7i64), (5, 3), (33, 8), (64, 10), (257, 37), (2, 2048), (3, 2053)];
        if kind == Kind::Float {
            shapes.push((8193, 4)); // the many-block selection
        }
        for (b, c) in shapes {
            let logits = randn(&[b, c], kind, dev);
            let y = labels(b, c, dev);
            // Only the last two rows count: a share of 0.9 drops both (every candidate).
            let two = y.copy();
            let _ = two.narrow(0, 0, (b - 2).max(0)).fill_(IGNORE);
            let runs = [
                ("nothing dropped", 0.0, None, &y),
                ("half dropped", 0.5, None, &y),
                ("every candidate dropped", 0.9, Some(IGNORE), &two),
            ];
            for (name, drop_share, ignore_index, targets) in runs {
                let opts = CrossEntropy {
                    label_smoothing: 0.1,
                    ignore_index,
                    drop_share,
                };
                let r = reference::cross_entropy_f64(&logits, Targets::Index(targets), &opts).unwrap();
                for offset in [0, 1] {
                    let what = format!("ce [{b}, {c}] {kind:?} {name}, buffer offset {offset}");
                    let flat = poisoned(&[b * c + 1], kind, dev);
                    let mut grad = flat.narrow(0, offset, b * c).view([b, c]);
                    let out = opts
                        .loss_and_grad_into(&logits, Targets::Index(targets), &mut grad)
                        .unwrap();
                    assert!(out.keep.to_device(Device::Cpu).equal(&r.keep), "{what}: keep");
                    assert_unkept_rows_zero(&what, &grad, &out.keep);
                    assert_close(&what, &grad, &r.grad, kind);
                }
            }
        }
        for (b, f) in [(1i64, 3i64), (7, 3), (40, 16), (129, 5)] {
            let pred = randn(&[b, f], kind, dev);
            let target = randn(&[b, f], kind, dev);
            for drop_share in [0.0, 0.5, 0.99] {
                let what = format!("mse [{b}, {f}] {kind:?} r {drop_share}");
                let out = Mse { drop_share }.loss_and_grad(&pred, &target).unwrap();
                let r = reference::mse_f64(&pred, &target, drop_share).unwrap();
                let grad = out.grad.as_ref().unwrap();
                assert_unkept_rows_zero(&what, grad, &out.keep);
                assert_close(&what, grad, &r.grad, kind);
            }
        }
    }
}

/// Rows past 16384 elements are split over several blocks (the last chunk of [1, 16385] holds
/// one element); rows whose length is not a multiple of the 16-byte pack, and the unaligned
/// view, move one element at a time.
fn mse_matches_reference(dev: Device) {
    seed(15);
    let shapes = [
        vec![1i64, 5],
        vec![9, 24],
        vec![64, 96, 3],
        vec![257, 7],
        vec![2, 40001],
        vec![1, 16385],
    ];
    for shape in shapes {
        for kind in FLOAT_KINDS {
            let n: i64 = shape.iter().product();
            let pred = randn(&shape, kind, dev);
            let flat = randn(&[n + 1], kind, dev);
            for (r, offset) in [(0.0, 0), (0.2, 1)] {
                let target = flat.narrow(0, offset, n).view(shape.as_slice());
                let out = Mse { drop_share: r }.loss_and_grad(&pred, &target).unwrap();
                let reference = reference::mse_f64(&pred, &target, r).unwrap();
                let what = format!("mse {shape:?} {kind:?} r {r} target offset {offset}");
                assert!(
                    rel_err(&out.per_sample, &reference.per_sample) < LOSS_TOL,
                    "{what}: per-sample"
                );
                assert!(rel_err(&out.loss, &reference.loss) < LOSS_TOL, "{what}: loss");
                assert!(
                    out.keep
                        .to_device(Device::Cpu)
                        .eq_tensor(&reference.keep)
                        .all()
                        .int64_value(&[])
                        == 1,
                    "{what}: keep"
                );
                assert_close(
                    &format!("{what}: grad"),
                    out.grad.as_ref().unwrap(),
                    &reference.grad,
                    kind,
                );
            }
        }
    }
    // Through autograd: the gradient reaches the prediction.
    let pred = randn(&[6, 4], Kind::Float, dev).set_requires_grad(true);
    let target = randn(&[6, 4], Kind::Float, dev);
    let out = Mse { drop_share: 0.34 }.forward_with_stats(&pred, &target).unwrap();
    assert!(out.grad.is_none(), "the autograd node owns the gradient");
    out.loss.backward();
    let kernel = Mse { drop_share: 0.34 }
        .loss_and_grad(&pred.detach(), &target)
        .unwrap()
        .grad
        .unwrap();
    assert_bitwise_eq("mse autograd", &pred.grad(), &kernel);
}

/// The bridge's autograd node: backward hands on the kernel's own gradient (bit for bit under a
/// plain backward), scaled by the incoming gradient; a retained graph runs backward twice; double
/// backward is an error, not a wrong answer; under no-grad the loss is just the loss.
fn autograd_node_scales_retains_refuses_double_backward(dev: Device) {
    seed(31);
    let (b, c) = (37i64, 11i64);
    let y = labels(b, c, dev);
    let opts = CrossEntropy {
        label_smoothing: 0.1,
        ignore_index: None,
        drop_share: 0.2,
    };
    for kind in FLOAT_KINDS {
        let base = randn(&[b, c], kind, dev);
        let kernel = opts.loss_and_grad(&base, Targets::Index(&y)).unwrap();
        let grad = kernel.grad.as_ref().unwrap();
        let leaf = || base.detach().set_requires_grad(true);
        let what = format!("{kind:?}");

        let x = leaf();
        let out = opts.forward_with_stats(&x, &y).unwrap();
        assert!(out.grad.is_none(), "{what}: the node owns the gradient");
        assert_bitwise_eq(&format!("{what}: loss"), &out.loss.detach(), &kernel.loss);
        assert_bitwise_eq(&format!("{what}: per-sample"), &out.per_sample, &kernel.per_sample);
        out.loss.backward();
        assert_bitwise_eq(&format!("{what}: plain backward"), &x.grad(), grad);

        let x = leaf();
        let loss = opts.forward(&x, &y).unwrap();
        (&loss * -2.5).backward();
        assert_close(&format!("{what}: scaled backward"), &x.grad(), &(grad * -2.5), kind);

        let x = leaf();
        let loss = opts.forward(&x, &y).unwrap();
        for pass in 0..2 {
            let g = Tensor::run_backward(&[&loss], &[&x], true, false);
            assert_bitwise_eq(&format!("{what}: retained graph, pass {pass}"), &g[0], grad);
        }
        let refused = Tensor::f_run_backward(&[&loss], &[&x], true, true);
        let message = format!("{:?}", refused.expect_err("double backward must be refused"));
        assert!(message.contains("double backward"), "{what}: {message}");

        let x = leaf();
        let loss = tch::no_grad(|| opts.forward(&x, &y)).unwrap();
        assert!(!loss.requires_grad(), "{what}: under no-grad the loss has no graph");
        assert_bitwise_eq(&format!("{what}: loss under no-grad"), &loss, &kernel.loss);

        // An input that needs no gradient gets none computed, and the same loss.
        let out = opts.forward_with_stats(&base, &y).unwrap();
        assert!(
            out.grad.is_none() && !out.loss.requires_grad(),
            "{what}: no graph, no gradient"
        );
        assert_bitwise_eq(&format!("{what}: loss without grad"), &out.loss, &kernel.loss);
        assert_bitwise_eq(&format!("{what}: keep without grad"), &out.keep, &kernel.keep);
    }
}

/// On the kernels' path the node scales a gradient kept in its input's dtype in place
/// (grad_scale: nothing moved when the incoming gradient is 1) and hands on that same tensor,
/// which the leaf takes: no gradient is allocated on backward. A retained graph and a caller's
/// buffer are scaled out of place: the second pass and the buffer still see the unscaled
/// gradient. Off the kernels' path only the plain backward hands the tensor on as it is.
fn autograd_node_scales_in_place_on_the_kernels_path(dev: Device) {
    seed(35);
    let kernels = emulated() || dev.is_cuda();
    let (b, c) = (19i64, 13i64);
    let y = labels(b, c, dev);
    let opts = CrossEntropy::with_removal(0.2);
    for kind in FLOAT_KINDS {
        let logits = randn(&[b, c], kind, dev);
        let expected = opts.loss_and_grad(&logits, &y).unwrap().grad.unwrap();
        let leaf = || logits.detach().set_requires_grad(true);
        for scale in [1.0, 65536.0, -2.5] {
            let what = format!("{kind:?} incoming {scale}");
            let x = leaf();
            let out = opts.loss_and_grad(&logits, &y).unwrap();
            let kept_at = out.grad.as_ref().unwrap().data_ptr() as usize;
            let loss = attach_gradient(&x, out).unwrap().loss;
            (&loss * scale).backward();
            assert_close(&what, &x.grad(), &(&expected * scale), kind);
            let handed_on = x.grad().data_ptr() as usize == kept_at;
            assert_eq!(
                handed_on,
                kernels || scale == 1.0,
                "{what}: whether the node's own gradient reached the leaf"
            );
        }
        let x = leaf();
        let out = opts.loss_and_grad(&logits, &y).unwrap();
        let loss = attach_gradient(&x, out).unwrap().loss;
        for pass in 0..2 {
            let g = Tensor::run_backward(&[&(&loss * -2.5)], &[&x], true, false);
            assert_close(
                &format!("{kind:?} retained graph, pass {pass}"),
                &g[0],
                &(&expected * -2.5),
                kind,
            );
        }
        // The buffer itself (a handle the caller keeps) and a view of it (storage shared).
        for view in [false, true] {
            let what = format!("{kind:?}, a caller's buffer (a view: {view})");
            let mut buffer = poisoned(&[b, c], kind, dev);
            let mut out = opts.loss_and_grad_into(&logits, &y, &mut buffer).unwrap();
            if view {
                out.grad = out.grad.map(|g| g.view([b * c]).view([b, c]));
            }
            let before = buffer.copy();
            let x = leaf();
            let loss = attach_gradient(&x, out).unwrap().loss;
            (&loss * -2.5).backward();
            assert_bitwise_eq(&format!("{what}: after backward"), &buffer, &before);
            assert_close(&what, &x.grad(), &(&before * -2.5), kind);
        }
    }
}

fn lm_matches(what: &str, logits: &Tensor, tokens: &Tensor, opts: &CrossEntropy, rank: SequenceRank) {
    let out = lm_loss(opts, rank).loss_and_grad(logits, tokens).unwrap();
    let r = reference::lm_cross_entropy_f64(logits, tokens, &lm_loss(opts, rank)).unwrap();
    assert!(rel_err(&out.per_sample, &r.per_sample) < LOSS_TOL, "{what}: per-sample");
    assert_loss_close(what, &out.loss, &r.loss);
    assert!(
        out.keep
            .to_device(Device::Cpu)
            .eq_tensor(&r.keep)
            .all()
            .int64_value(&[])
            == 1,
        "{what}: keep"
    );
    assert_eq!(out.correct.int64_value(&[]), r.correct, "{what}: correct");
    assert_close(
        &format!("{what}: grad"),
        out.grad.as_ref().unwrap(),
        &r.grad,
        logits.kind(),
    );
}

fn lm_sequence_and_token_ranking_match_reference(dev: Device) {
    seed(16);
    for (b, t, v) in [(1i64, 4i64, 11i64), (3, 5, 7), (8, 16, 65)] {
        for kind in FLOAT_KINDS {
            let logits = randn(&[b, t, v], kind, dev);
            let tokens = Tensor::randint(v, [b, t], (Kind::Int64, dev));
            // Some ignored tokens, and (with B > 1) one sequence that is all padding.
            let padded = tokens.copy();
            let _ = padded.slice(1, t - 2, t, 1).fill_(-100);
            if b > 1 {
                let _ = padded.get(1).fill_(-100);
            }
            for r in [0.0, 0.25, 0.5] {
                for rank in [SequenceRank::PerSequence, SequenceRank::PerToken] {
                    let what = format!("lm [{b}, {t}, {v}] {kind:?} r {r} {rank:?}");
                    let opts = CrossEntropy {
                        label_smoothing: 0.1,
                        ignore_index: None,
                        drop_share: r,
                    };
                    lm_matches(&what, &logits, &tokens, &opts, rank);
                    let opts = CrossEntropy {
                        ignore_index: Some(-100),
                        ..opts
                    };
                    lm_matches(&format!("{what} padded"), &logits, &padded, &opts, rank);
                }
            }
        }
    }
    let logits = randn(&[4, 6, 9], Kind::Float, dev).set_requires_grad(true);
    let tokens = Tensor::randint(9, [4, 6], (Kind::Int64, dev));
    let opts = CrossEntropy {
        drop_share: 0.25,
        ..Default::default()
    };
    let out = lm_loss(&opts, SequenceRank::PerSequence)
        .forward_with_stats(&logits, &tokens)
        .unwrap();
    assert!(out.grad.is_none(), "the autograd node owns the gradient");
    out.loss.backward();
    let kernel = lm_loss(&opts, SequenceRank::PerSequence)
        .loss_and_grad(&logits.detach(), &tokens)
        .unwrap();
    assert_bitwise_eq("lm autograd", &logits.grad(), kernel.grad.as_ref().unwrap());
}

fn remove_highest_and_running_quantile(dev: Device) {
    seed(17);
    let losses = Tensor::rand([50], (Kind::Float, dev));
    let valid = Tensor::rand([50], (Kind::Float, dev)).gt(0.2);
    let out = remove_highest(&losses, Some(&valid), 0.2).unwrap();
    let keep = out.keep.to_device(Device::Cpu);
    let (l, v) = (losses.to_device(Device::Cpu), valid.to_device(Device::Cpu));
    assert_eq!(
        keep.logical_and(&v.logical_not()).any().int64_value(&[]),
        0,
        "invalid rows never kept"
    );
    assert_eq!(
        v.sum(Kind::Int64).int64_value(&[]) - keep.sum(Kind::Int64).int64_value(&[]),
        10,
        "floor(0.2 * 50) removed"
    );
    let removed = v.logical_and(&keep.logical_not());
    assert!(l.masked_select(&removed).min().double_value(&[]) >= l.masked_select(&keep).max().double_value(&[]));
    let mean = l
        .masked_select(&keep)
        .to_kind(Kind::Double)
        .mean(Kind::Double)
        .double_value(&[]);
    assert!((out.loss.double_value(&[]) - mean).abs() < 1e-6);

    // Running quantile over a stream of batches.
    let (b, c) = (32i64, 10i64);
    let mut rq = RunningQuantile::new(0.8, 64, dev).unwrap();
    let mut history: Vec<f64> = Vec::new();
    for batch in 0..5 {
        let logits = randn(&[b, c], Kind::Float, dev);
        let y = labels(b, c, dev);
        let full = CrossEntropy::default()
            .loss_and_grad(&logits, Targets::Index(&y))
            .unwrap();
        let per = Vec::<f64>::try_from(full.per_sample.to_device(Device::Cpu).to_kind(Kind::Double)).unwrap();
        let out = rq.apply(full).unwrap();
        let keep = Vec::<bool>::try_from(out.keep.to_device(Device::Cpu)).unwrap();
        if batch == 0 {
            assert!(keep.iter().all(|&k| k), "the first batch has no history: keep all");
        } else {
            let h = Tensor::from_slice(&history)
                .quantile_scalar(0.8, None::<i64>, false, "linear")
                .double_value(&[]);
            for (i, (&k, &l)) in keep.iter().zip(&per).enumerate() {
                assert_eq!(
                    k,
                    l as f32 <= h as f32,
                    "batch {batch} row {i}: loss {l} vs quantile {h}"
                );
            }
        }
        let kept: Vec<f64> = per.iter().zip(&keep).filter(|(_, &k)| k).map(|(&l, _)| l).collect();
        let mean = kept.iter().sum::<f64>() / kept.len() as f64;
        assert!(
            (out.loss.double_value(&[]) - mean).abs() < 1e-5,
            "batch {batch}: mean over kept rows"
        );
        // Removed rows have no gradient; kept rows are weighted 1 / n_kept.
        let g = out.grad.unwrap().to_device(Device::Cpu);
        let r = reference::cross_entropy_f64(&logits, Targets::Index(&y), &CrossEntropy::default()).unwrap();
        let scale = b as f64 / kept.len() as f64;
        let keep_t = Tensor::from_slice(&keep.iter().map(|&k| k as u8 as f64).collect::<Vec<_>>()).view([b, 1]);
        assert_close(
            &format!("running quantile grad, batch {batch}"),
            &g,
            &(r.grad * keep_t * scale),
            Kind::Float,
        );
        history.extend(per);
        if history.len() > 64 {
            history.drain(..history.len() - 64);
        }
    }
}

fn loss_rejects_bad_arguments(dev: Device) {
    let logits = randn(&[4, 3], Kind::Float, dev);
    let y = labels(4, 3, dev);
    let ok = CrossEntropy::default();
    let ce = |l: &Tensor, y: &Tensor, o: &CrossEntropy| o.loss_and_grad(l, Targets::Index(y));
    expect_err(
        "r = 1",
        ce(&logits, &y, &CrossEntropy { drop_share: 1.0, ..ok }),
        "drop_share",
    );
    expect_err(
        "r < 0",
        ce(&logits, &y, &CrossEntropy { drop_share: -0.1, ..ok }),
        "drop_share",
    );
    expect_err(
        "r NaN",
        ce(
            &logits,
            &y,
            &CrossEntropy {
                drop_share: f64::NAN,
                ..ok
            },
        ),
        "drop_share",
    );
    expect_err(
        "smoothing",
        ce(
            &logits,
            &y,
            &CrossEntropy {
                label_smoothing: 1.5,
                ..ok
            },
        ),
        "label_smoothing",
    );
    expect_err("label count", ce(&logits, &labels(3, 3, dev), &ok), "y");
    expect_err("label dtype", ce(&logits, &y.to_kind(Kind::Int), &ok), "y");
    expect_err(
        "empty batch",
        ce(&Tensor::zeros([0, 3], (Kind::Float, dev)), &labels(0, 3, dev), &ok),
        "logits",
    );
    expect_err("rank 3", ce(&randn(&[2, 2, 3], Kind::Float, dev), &y, &ok), "logits");
    expect_err("integer logits", ce(&logits.to_kind(Kind::Int64), &y, &ok), "logits");
    let short_lam = MixedTargets {
        y_a: y.copy(),
        y_b: y.copy(),
        lam: Lambda::PerSample(Tensor::rand([3], (Kind::Float, dev))),
    };
    expect_err(
        "lambda length",
        ok.loss_and_grad(&logits, Targets::Mixed(&short_lam)),
        "lam",
    );
    let bad_lam = MixedTargets {
        y_a: y.copy(),
        y_b: y.copy(),
        lam: Lambda::Batch(2.0),
    };
    expect_err(
        "lambda value",
        ok.loss_and_grad(&logits, Targets::Mixed(&bad_lam)),
        "lam",
    );
    let mut wrong = poisoned(&[4, 4], Kind::Float, dev);
    expect_err(
        "grad buffer shape",
        ok.loss_and_grad_into(&logits, Targets::Index(&y), &mut wrong),
        "grad",
    );
    expect_err(
        "mse shapes",
        Mse { drop_share: 0.0 }.forward_with_stats(&logits, &randn(&[4, 2], Kind::Float, dev)),
        "target",
    );
    expect_err(
        "mse dtype",
        Mse { drop_share: 0.0 }.forward_with_stats(&logits, &logits.to_kind(Kind::Half)),
        "target",
    );
    expect_err(
        "mse share",
        Mse { drop_share: 1.0 }.forward_with_stats(&logits, &logits),
        "drop_share",
    );
    expect_err(
        "losses dtype",
        remove_highest(&Tensor::rand([4], (Kind::Double, dev)), None, 0.1),
        "losses",
    );
    expect_err(
        "valid length",
        remove_highest(
            &Tensor::rand([4], (Kind::Float, dev)),
            Some(&Tensor::ones([3], (Kind::Bool, dev))),
            0.1,
        ),
        "valid",
    );
    expect_err("quantile", RunningQuantile::new(1.0, 10, dev), "q");
    expect_err("window", RunningQuantile::new(0.9, 0, dev), "window");
    let lm = randn(&[2, 3, 5], Kind::Float, dev);
    expect_err(
        "lm tokens",
        lm_loss(&ok, SequenceRank::PerSequence).loss_and_grad(&lm, &labels(2, 5, dev)),
        "tokens",
    );
    expect_err(
        "lm rank",
        lm_loss(&ok, SequenceRank::PerToken).loss_and_grad(&logits, &y),
        "logits",
    );
    let out_of_range = Tensor::from_slice(&[0i64, 1, 3, 2]).to_device(dev);
    if dev == Device::Cpu {
        expect_err("label out of range", ce(&logits, &out_of_range, &ok), "y");
        expect_err(
            "negative label",
            ce(&logits, &Tensor::from_slice(&[0i64, -1, 1, 2]), &ok),
            "y",
        );
        expect_err(
            "ignore_index only when set",
            ce(&logits, &Tensor::from_slice(&[0i64, -100, 1, 2]), &ok),
            "y",
        );
    } else {
        expect_err("labels on the host", ce(&logits, &y.to_device(Device::Cpu), &ok), "y");
        // No host sync on CUDA: an out-of-range label makes its row NaN instead of reading out of bounds.
        let out = ce(&logits, &out_of_range, &ok).unwrap();
        let losses = out.per_sample.to_device(Device::Cpu);
        assert!(losses.double_value(&[2]).is_nan());
        assert_eq!(losses.isnan().sum(Kind::Int64).int64_value(&[]), 1);
    }
}

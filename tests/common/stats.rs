//! Zero counts, dead units, dot/norms, interference and BENR against plain references.

use enlighten::ops::mixup::{Lambda, MixedTargets};
use enlighten::ops::stats::{
    batch_interference, dot_norms, gradient_interference, reference, zero_counts, Accumulate, Benr, DeadUnits,
};
use tch::{Device, Kind, Reduction, Tensor};

use super::{expect_err, randn, seed, Case};

pub const CASES: &[Case] = &[
    ("zero_counts_match_reference", zero_counts_match_reference),
    (
        "zero_counts_split_long_misaligned_rows",
        zero_counts_split_long_misaligned_rows,
    ),
    ("dead_units_accumulate_over_updates", dead_units_accumulate_over_updates),
    (
        "dot_norms_cosine_and_interference_ratio",
        dot_norms_cosine_and_interference_ratio,
    ),
    (
        "interference_on_the_linear_sigmoid_toy",
        interference_on_the_linear_sigmoid_toy,
    ),
    (
        "batch_interference_diminishes_with_batch_size_on_the_toy",
        batch_interference_diminishes_with_batch_size_on_the_toy,
    ),
    ("benr_on_a_hand_computed_example", benr_on_a_hand_computed_example),
    (
        "benr_of_non_contiguous_parameters_equals_contiguous",
        benr_of_non_contiguous_parameters_equals_contiguous,
    ),
    ("stats_reject_bad_arguments", stats_reject_bad_arguments),
];

/// Post-ReLU-like activations: about half exact zeros, some negative zeros, a NaN, and values at
/// the tests' eps of 1e-3: the largest f32 below it (zero), and the f32 nearest to it, just
/// above (not zero). In f16 both become 0.0010004, above; in bf16 0.00099945, below.
fn activations(shape: &[i64], kind: Kind, dev: Device) -> Tensor {
    let x = randn(shape, Kind::Float, dev).relu();
    let flat = x.view([-1]);
    let n = flat.size()[0];
    let _ = flat
        .narrow(0, n / 5, 1)
        .fill_(f32::from_bits(1e-3f32.to_bits() - 1) as f64);
    let _ = flat.narrow(0, n / 4, 1).fill_(1e-3f32 as f64);
    let _ = flat.narrow(0, n / 3, 1).fill_(-0.0);
    let _ = flat.narrow(0, n / 2, 1).fill_(f64::NAN);
    let _ = flat.narrow(0, n - 1, 1).fill_(1e-4);
    x.to_kind(kind)
}

fn resnet_like(b: i64, dev: Device) -> Vec<Tensor> {
    vec![
        activations(&[b, 16, 8, 8], Kind::Float, dev),
        activations(&[b, 32, 4, 4], Kind::Half, dev),
        activations(&[b, 64, 2, 2], Kind::BFloat16, dev),
        activations(&[b, 100], Kind::Float, dev),
        activations(&[b, 3, 7, 5], Kind::Float, dev),
        // More units than a block tracks in shared memory, and units longer than a block.
        activations(&[b, 4100], Kind::Float, dev),
        activations(&[b, 2, 300], Kind::Half, dev),
    ]
}

/// Rows longer than a work item (8192 elements on CUDA) are counted in chunks by several blocks;
/// rows and chunks that start off a 16-byte boundary have single values before their packs.
/// Each layer starts one element into its storage, so no row is aligned.
fn zero_counts_split_long_misaligned_rows(dev: Device) {
    seed(22);
    let b = 3;
    let layer = |per_sample: i64, kind: Kind| {
        let flat = activations(&[b * per_sample + 1], kind, dev);
        flat.narrow(0, 1, b * per_sample).view([b, per_sample])
    };
    let layers = [
        layer(2 * 8192 + 13, Kind::Float),
        layer(8192 + 7, Kind::Half),
        layer(3 * 8192 + 5, Kind::BFloat16),
        layer(8192, Kind::Float),
    ];
    let refs: Vec<&Tensor> = layers.iter().collect();
    for eps in [None, Some(1e-3)] {
        let counts = zero_counts(&refs, eps).unwrap().to_device(Device::Cpu);
        let expected = reference::zero_counts_f64(&refs, eps);
        assert!(counts.equal(&expected), "eps {eps:?}: {counts:?} vs {expected:?}");
    }
}

fn zero_counts_match_reference(dev: Device) {
    seed(21);
    for b in [1i64, 7, 128] {
        let layers = resnet_like(b, dev);
        let refs: Vec<&Tensor> = layers.iter().collect();
        for eps in [None, Some(1e-3)] {
            let counts = zero_counts(&refs, eps).unwrap();
            assert_eq!(counts.size(), [layers.len() as i64, b]);
            let expected = reference::zero_counts_f64(&refs, eps);
            assert!(
                counts
                    .to_device(Device::Cpu)
                    .eq_tensor(&expected)
                    .all()
                    .int64_value(&[])
                    == 1,
                "B {b} eps {eps:?}: {counts:?} vs {expected:?}"
            );
        }
        // -0 is zero, NaN is not: the row holding both differs from a plain > 0 count only there.
        let total: i64 = zero_counts(&refs, None).unwrap().sum(Kind::Int64).int64_value(&[]);
        assert!(total > 0);
    }
}

fn dead_units_accumulate_over_updates(dev: Device) {
    seed(22);
    let mut dead = DeadUnits::new();
    let mut expected: Vec<Tensor> = Vec::new();
    for step in 0..3 {
        // Kill a different set of channels each step, so the union grows.
        let layers = resnet_like(4, dev);
        let _ = layers[0].narrow(1, 0, 8 - 2 * step).fill_(0.0);
        let _ = layers[3].narrow(1, 50, 50).fill_(0.0);
        let refs: Vec<&Tensor> = layers.iter().collect();
        let counts = dead.update(&refs, None).unwrap();
        assert!(
            counts
                .to_device(Device::Cpu)
                .eq_tensor(&reference::zero_counts_composite(&refs, None))
                .all()
                .int64_value(&[])
                == 1
        );
        let alive: Vec<Tensor> = layers.iter().map(|t| reference::alive_units(t, None)).collect();
        expected = if expected.is_empty() {
            alive
        } else {
            expected.iter().zip(&alive).map(|(a, b)| a.maximum(b)).collect()
        };
    }
    let shares = Vec::<f64>::try_from(dead.dead_share()).unwrap();
    for (l, e) in expected.iter().enumerate() {
        let want = 1.0 - e.to_kind(Kind::Double).mean(Kind::Double).double_value(&[]);
        assert!(
            (shares[l] - want).abs() < 1e-12,
            "layer {l}: dead share {} vs {want}",
            shares[l]
        );
    }
    assert!(
        shares[3] >= 0.5 - 1e-12,
        "the 50 silenced features of layer 3 stay dead"
    );
    dead.reset();
    assert!(Vec::<f64>::try_from(dead.dead_share())
        .unwrap()
        .iter()
        .all(|&s| s == 1.0));
}

fn dot_norms_cosine_and_interference_ratio(dev: Device) {
    seed(23);
    // Sizes over several work items (the CPU path cuts items of 65,536 elements: 150,001 is
    // two and a tail) and with a tail past the last 4-element pack, and a view that starts 4
    // bytes into its storage (not 16-byte aligned: the scalar path).
    let mut a: Vec<Tensor> = [
        vec![64i64, 3, 3, 3],
        vec![64],
        vec![10, 640],
        vec![7],
        vec![150_001],
        vec![40_003],
    ]
    .iter()
    .map(|s| randn(s, Kind::Float, dev))
    .collect();
    a.push(randn(&[20_001], Kind::Float, dev).narrow(0, 1, 20_000));
    let mut b: Vec<Tensor> = a.iter().map(|t| randn(&t.size(), Kind::Float, dev)).collect();
    b.push(randn(&[20_001], Kind::Float, dev).narrow(0, 1, 20_000));
    let _aligned_twin = b.swap_remove(a.len() - 1);
    let (ar, br): (Vec<&Tensor>, Vec<&Tensor>) = (a.iter().collect(), b.iter().collect());
    // The same pairs in f16 and bf16 too: their 16-byte packs hold 8 values.
    for kind in [Kind::Float, Kind::Half, Kind::BFloat16] {
        let (ak, bk): (Vec<Tensor>, Vec<Tensor>) = (
            a.iter().map(|t| t.to_kind(kind)).collect(),
            b.iter().map(|t| t.to_kind(kind)).collect(),
        );
        let (ar, br): (Vec<&Tensor>, Vec<&Tensor>) = (ak.iter().collect(), bk.iter().collect());
        let want = reference::dot_norms_f64(&ar, &br);
        for (acc, tol) in [(Accumulate::F64, 1e-9), (Accumulate::F32, 1e-4)] {
            let got = Vec::<f64>::try_from(dot_norms(&ar, &br, acc).unwrap().sums.to_device(Device::Cpu)).unwrap();
            for j in 0..3 {
                assert!(
                    (got[j] - want[j]).abs() <= tol * want[j].abs().max(1.0),
                    "{kind:?} {acc:?} sum {j}: {} vs {}",
                    got[j],
                    want[j]
                );
            }
        }
    }
    // b = c a: cosine 1 (or -1), ratio 0. b orthogonal to a: cosine 0, ratio 1.
    let scaled: Vec<Tensor> = a.iter().map(|t| t * -2.5).collect();
    let s = dot_norms(&ar, &scaled.iter().collect::<Vec<_>>(), Accumulate::F64).unwrap();
    assert!(
        (s.cosine() + 1.0).abs() < 1e-6 && s.interference_ratio() < 1e-3,
        "parallel: {} {}",
        s.cosine(),
        s.interference_ratio()
    );
    let [d, aa, _] = reference::dot_norms_f64(&ar, &br);
    let orth: Vec<Tensor> = a
        .iter()
        .zip(&b)
        .map(|(x, y)| (y.to_kind(Kind::Double) - x.to_kind(Kind::Double) * (d / aa)).to_kind(Kind::Float))
        .collect();
    let s = dot_norms(&ar, &orth.iter().collect::<Vec<_>>(), Accumulate::F64).unwrap();
    assert!(
        s.cosine().abs() < 1e-4 && (s.interference_ratio() - 1.0).abs() < 1e-6,
        "orthogonal: {} {}",
        s.cosine(),
        s.interference_ratio()
    );
}

fn interference_on_the_linear_sigmoid_toy(dev: Device) {
    seed(24);
    let dim = 256;
    let w = (Tensor::randn([dim], (Kind::Float, dev)) * 1e-3).set_requires_grad(true);
    let x = Tensor::randn([40, dim], (Kind::Float, dev));
    let x = &x / x.norm_scalaropt_dim(2.0, [1], true); // normalised inputs
    let y = Tensor::cat(
        &[
            Tensor::zeros([20], (Kind::Int64, dev)),
            Tensor::ones([20], (Kind::Int64, dev)),
        ],
        0,
    );
    let pairs: Vec<(i64, i64)> = (0..20).map(|i| (i, 20 + i)).collect(); // one sample of each class
    let params = [w.shallow_clone()];
    let bce = |inputs: &Tensor, t: &MixedTargets| -> enlighten::Result<Tensor> {
        let Lambda::Batch(lam) = t.lam else { unreachable!() };
        let target = t.y_a.to_kind(Kind::Float) * lam + t.y_b.to_kind(Kind::Float) * (1.0 - lam);
        Ok(inputs
            .mv(&w)
            .binary_cross_entropy_with_logits::<Tensor>(&target, None, None, Reduction::Mean))
    };
    let stats = gradient_interference(&params, &x, &y, &pairs, 0.5, bce).unwrap();
    assert_eq!(stats.cosines.len(), 20);
    // The paper's toy result: the Mixup direction x_i + x_j is orthogonal to x_j - x_i.
    let mean_abs = stats.cosines.iter().map(|c| c.abs()).sum::<f64>() / 20.0;
    assert!(mean_abs < 0.05, "mean |cos| {mean_abs}: {:?}", stats.cosines);
    assert!(stats.mean_ratio > 0.99, "interference ratio {}", stats.mean_ratio);
    assert!((0.0..=1.0).contains(&stats.share_below_half) && stats.share_below_half > 0.9);
}

fn batch_interference_diminishes_with_batch_size_on_the_toy(dev: Device) {
    // The toy comes from its own generator: every device, and every order in which parallel
    // tests draw from libtorch's shared ones, sees the data the values below were measured on.
    let mut draw = enlighten::SeededRng::new(25);
    let mut normal = |n: usize| -> Vec<f32> { (0..n).map(|_| draw.normal() as f32).collect() };
    let dim = 256;
    let w = (Tensor::from_slice(&normal(dim)).to_device(dev) * 1e-3).set_requires_grad(true);
    let x = Tensor::from_slice(&normal(400 * dim))
        .view([400, dim as i64])
        .to_device(dev);
    let x = &x / x.norm_scalaropt_dim(2.0, [1], true);
    // Random pairs: same or opposite class.
    let labels: Vec<i64> = (0..400).map(|_| draw.below(2) as i64).collect();
    let y = Tensor::from_slice(&labels).to_device(dev);
    let params = [w.shallow_clone()];
    let bce = |inputs: &Tensor, t: &MixedTargets| -> enlighten::Result<Tensor> {
        let Lambda::Batch(lam) = t.lam else { unreachable!() };
        let target = t.y_a.to_kind(Kind::Float) * lam + t.y_b.to_kind(Kind::Float) * (1.0 - lam);
        Ok(inputs
            .mv(&w)
            .binary_cross_entropy_with_logits::<Tensor>(&target, None, None, Reduction::Mean))
    };
    // Two identical pairs: the same gradients twice, so the statistic of one pair.
    let pair = gradient_interference(&params, &x, &y, &[(3, 7)], 0.3, bce).unwrap();
    let (cos, ratio) = batch_interference(&params, &x, &y, &[(3, 7), (3, 7)], 0.3, bce).unwrap();
    assert!(
        (cos - pair.cosines[0]).abs() < 1e-6 && (ratio - pair.ratios[0]).abs() < 1e-4,
        "{cos} {ratio} vs {pair:?}"
    );
    // The mean cosine grows with the number of pairs (values measured on this toy: about 0.45
    // for one pair, 0.72 for 64).
    let mut rng = enlighten::SeededRng::new(1);
    let mut mean_cos = |b: usize| {
        (0..20)
            .map(|_| {
                let perm = rng.permutation(400);
                let pairs: Vec<(i64, i64)> = (0..b).map(|k| (perm[2 * k], perm[2 * k + 1])).collect();
                batch_interference(&params, &x, &y, &pairs, 0.5, bce).unwrap().0
            })
            .sum::<f64>()
            / 20.0
    };
    let (one, many) = (mean_cos(1), mean_cos(64));
    println!("mean cosine: 1 pair {one:.3}, 64 pairs {many:.3}");
    assert!(
        one < 0.55 && many > one + 0.2,
        "mean cosine: 1 pair {one}, 64 pairs {many}"
    );
    expect_err(
        "empty pairs",
        batch_interference(&params, &x, &y, &[], 0.5, bce),
        "pairs",
    );
}

fn benr_on_a_hand_computed_example(dev: Device) {
    // One parameter vector in the plane: (0,0) -> (3,4) -> (3,0) -> (6,0), alone and as the
    // first two of 16 elements (two f16/bf16 packs, four f32 packs: the kernels' 16-byte path);
    // every value is exact in each dtype.
    for (len, kind) in [
        (2i64, Kind::Float),
        (16, Kind::Float),
        (16, Kind::Half),
        (16, Kind::BFloat16),
    ] {
        let p = Tensor::zeros([len], (kind, dev));
        let mut benr = Benr::new(&[&p]).unwrap();
        for target in [[3.0f32, 4.0], [3.0, 0.0], [6.0, 0.0]] {
            p.detach()
                .narrow(0, 0, 2)
                .copy_(&Tensor::from_slice(&target).to_device(dev));
            benr.step(&[&p]).unwrap();
        }
        assert_eq!(benr.steps(), 3);
        // Path 5 + 4 + 3 = 12; net change |(6, 0)| = 6.
        let ratio = benr.end_epoch(&[&p]).unwrap();
        assert!((ratio - 2.0).abs() < 1e-9, "BENR {ratio} ({len} {kind:?})");
    }
    // Random walks: always >= 1 (triangle inequality).
    seed(25);
    let q = randn(&[50], Kind::Float, dev);
    let mut benr = Benr::new(&[&q]).unwrap();
    for _ in 0..10 {
        let _ = q.detach().g_add_(&randn(&[50], Kind::Float, dev));
        benr.step(&[&q]).unwrap();
    }
    assert!(benr.end_epoch(&[&q]).unwrap() >= 1.0);
}

/// Parameters stored transposed (a channels-last weight, a `.t()` view) give the BENR of their
/// contiguous copies: the kernel reads flat memory, so the op must hand it contiguous tensors.
fn benr_of_non_contiguous_parameters_equals_contiguous(dev: Device) {
    seed(26);
    let base = randn(&[6, 5], Kind::Float, dev);
    let strided = base.copy().t_(); // [5, 6] with strides (1, 5)
    let plain = strided.contiguous();
    assert!(!strided.is_contiguous());
    let mut benr_strided = Benr::new(&[&strided]).unwrap();
    let mut benr_plain = Benr::new(&[&plain]).unwrap();
    for _ in 0..4 {
        let step = randn(&[5, 6], Kind::Float, dev);
        let _ = strided.detach().g_add_(&step);
        let _ = plain.detach().g_add_(&step);
        benr_strided.step(&[&strided]).unwrap();
        benr_plain.step(&[&plain]).unwrap();
    }
    let (a, b) = (
        benr_strided.end_epoch(&[&strided]).unwrap(),
        benr_plain.end_epoch(&[&plain]).unwrap(),
    );
    assert!((a - b).abs() <= 1e-6 * b, "BENR strided {a} vs contiguous {b}");
}

fn stats_reject_bad_arguments(dev: Device) {
    let a = randn(&[4, 3], Kind::Float, dev);
    let b = randn(&[5, 3], Kind::Float, dev);
    expect_err("empty layers", zero_counts(&[], None), "layers");
    expect_err("batch mismatch", zero_counts(&[&a, &b], None), "layers");
    expect_err("integer layer", zero_counts(&[&a.to_kind(Kind::Int64)], None), "layers");
    expect_err(
        "rank 1 layer",
        zero_counts(&[&randn(&[4], Kind::Float, dev)], None),
        "layers",
    );
    expect_err("negative eps", zero_counts(&[&a], Some(-1.0)), "eps");
    expect_err("empty list", dot_norms(&[], &[], Accumulate::F64), "a");
    expect_err("BENR without parameters", Benr::new(&[]), "params");
    expect_err("list lengths", dot_norms(&[&a, &a], &[&a], Accumulate::F64), "b");
    expect_err("shapes", dot_norms(&[&a], &[&b], Accumulate::F64), "b");
    expect_err(
        "dtypes",
        dot_norms(&[&a], &[&a.to_kind(Kind::Half)], Accumulate::F64),
        "b",
    );
    let mut dead = DeadUnits::new();
    let _ = dead.update(&[&a], None).unwrap();
    expect_err(
        "dead units: another layer count",
        dead.update(&[&a, &a], None),
        "layers",
    );
    expect_err(
        "dead units: another width",
        dead.update(&[&randn(&[4, 5], Kind::Float, dev)], None),
        "layers",
    );
    let p = randn(&[3], Kind::Float, dev).set_requires_grad(true);
    let y = Tensor::zeros([4], (Kind::Int64, dev));
    let never = |_: &Tensor, _: &MixedTargets| -> enlighten::Result<Tensor> { unreachable!() };
    expect_err(
        "pair index",
        gradient_interference(&[p.shallow_clone()], &a, &y, &[(0, 9)], 0.5, never),
        "pairs",
    );
    expect_err(
        "lambda",
        gradient_interference(&[p], &a, &y, &[(0, 1)], 1.5, never),
        "lam",
    );
}

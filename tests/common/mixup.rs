//! Mixup and CutMix: fused paths against the f64 reference, on any device.

use enlighten::ops::mixup::{
    reference, CutBox, CutBoxes, CutMix, Lambda, LambdaMode, MixKind, MixSpec, Mixup, Normalize, Pairing, PairingMode,
};
use enlighten::SeededRng;
use tch::{Device, Kind, Tensor};

use super::{assert_bitwise_eq, assert_close, emulated, expect_err, poisoned, randn, seed, Case, FLOAT_KINDS};

pub const CASES: &[Case] = &[
    ("mixup_matches_reference", mixup_matches_reference),
    (
        "mixup_f32_is_bit_identical_to_the_tch_composite",
        mixup_f32_is_bit_identical_to_the_tch_composite,
    ),
    (
        "mixup_flip_in_place_equals_out_of_place",
        mixup_flip_in_place_equals_out_of_place,
    ),
    (
        "mixup_u8_normalises_and_mixes_in_one_pass",
        mixup_u8_normalises_and_mixes_in_one_pass,
    ),
    ("mixup_handles_non_contiguous_input", mixup_handles_non_contiguous_input),
    (
        "mixup_large_batch_and_extreme_values",
        mixup_large_batch_and_extreme_values,
    ),
    ("mixup_propagates_nan", mixup_propagates_nan),
    (
        "mixup_batches_above_the_grid_y_limit",
        mixup_batches_above_the_grid_y_limit,
    ),
    (
        "mixup_outputs_larger_than_a_cache_match_reference",
        mixup_outputs_larger_than_a_cache_match_reference,
    ),
    (
        "cutmix_matches_reference_and_pastes_the_reported_area",
        cutmix_matches_reference_and_pastes_the_reported_area,
    ),
    ("cutmix_clips_boxes_at_the_borders", cutmix_clips_boxes_at_the_borders),
    ("cutmix_copies_wide_rows_in_packs", cutmix_copies_wide_rows_in_packs),
    (
        "mix_batch_alpha_zero_is_identity_and_seeds_reproduce",
        mix_batch_alpha_zero_is_identity_and_seeds_reproduce,
    ),
    (
        "mix_images_normalises_and_mixes_like_mix_batch",
        mix_images_normalises_and_mixes_like_mix_batch,
    ),
    ("mixup_rejects_bad_arguments", mixup_rejects_bad_arguments),
];

/// The Mixup op with these drawn values (the test's own copies stay usable).
fn mix(lam: &Lambda, pairing: &Pairing) -> Mixup {
    Mixup {
        lam: lam.shallow_clone(),
        pairing: pairing.shallow_clone(),
    }
}

/// The CutMix op with these drawn values.
fn cut(boxes: &CutBoxes, pairing: &Pairing) -> CutMix {
    CutMix {
        boxes: boxes.shallow_clone(),
        pairing: pairing.shallow_clone(),
    }
}

fn pairings(b: i64, dev: Device) -> Vec<Pairing> {
    let mut rng = SeededRng::new(b as u64);
    vec![
        Pairing::Permutation(Tensor::from_slice(&rng.permutation(b as usize)).to_device(dev)),
        Pairing::Flip,
        // Roll cycles: gcd(B, 3) of them (B = 6, 33, 129: several), a shift past the batch
        // backwards, and every row its own partner.
        Pairing::Roll(3),
        Pairing::Roll(-b - 2),
        Pairing::Roll(0),
    ]
}

fn lambdas(b: i64, dev: Device) -> Vec<Lambda> {
    vec![
        Lambda::Batch(0.3141),
        Lambda::PerSample(Tensor::rand([b], (Kind::Float, dev))),
    ]
}

/// B = 1, odd B and odd trailing sizes, a feature batch and a series batch.
const SHAPES: &[&[i64]] = &[
    &[1, 3, 5, 7],
    &[7, 3, 33, 31],
    &[129, 10],
    &[6, 3, 16, 16],
    &[5, 11, 7],
    &[33, 24],
];

fn mixup_matches_reference(dev: Device) {
    seed(1);
    for &shape in SHAPES {
        for kind in FLOAT_KINDS {
            let x = randn(shape, kind, dev);
            for pairing in pairings(shape[0], dev) {
                for lam in lambdas(shape[0], dev) {
                    let what = format!("{shape:?} {kind:?} {pairing:?} {lam:?}");
                    let mut out = poisoned(shape, kind, dev);
                    mix(&lam, &pairing).forward_into(&x, &mut out).unwrap();
                    assert_close(&what, &out, &reference::mixup_f64(&x, &lam, &pairing), kind);
                    assert_bitwise_eq(&what, &mix(&lam, &pairing).forward(&x).unwrap(), &out);
                }
            }
        }
    }
}

/// Outputs of more than 4 MiB, which the CPU path writes with streaming stores: rows of an odd
/// length (each starting at another offset from a 16-byte boundary), out of place and into a
/// buffer one element off alignment. Not emulated: the kernels meet large batches in
/// `mixup_batches_above_the_grid_y_limit`, and these sizes would take the emulator minutes.
fn mixup_outputs_larger_than_a_cache_match_reference(dev: Device) {
    if emulated() {
        return;
    }
    seed(13);
    for (kind, b) in [(Kind::Float, 41), (Kind::BFloat16, 83)] {
        let shape = [b, 3, 97, 101];
        let x = randn(&shape, kind, dev);
        for pairing in pairings(b, dev) {
            for lam in lambdas(b, dev) {
                let what = format!("{shape:?} {kind:?} {pairing:?} {lam:?}");
                let out = mix(&lam, &pairing).forward(&x).unwrap();
                assert_close(&what, &out, &reference::mixup_f64(&x, &lam, &pairing), kind);
                let n = x.numel() as i64;
                let flat = poisoned(&[n + 1], kind, dev);
                let mut into = flat.narrow(0, 1, n).view(shape);
                mix(&lam, &pairing).forward_into(&x, &mut into).unwrap();
                assert_bitwise_eq(&format!("{what} into a buffer"), &into, &out);
            }
        }
    }
}

fn mixup_f32_is_bit_identical_to_the_tch_composite(dev: Device) {
    seed(2);
    for &shape in SHAPES {
        let x = randn(shape, Kind::Float, dev);
        for pairing in pairings(shape[0], dev) {
            for lam in lambdas(shape[0], dev) {
                let out = mix(&lam, &pairing).forward(&x).unwrap();
                assert_bitwise_eq(
                    &format!("{shape:?} {pairing:?}"),
                    &out,
                    &reference::composite(&x, &lam, &pairing),
                );
            }
        }
    }
}

fn mixup_flip_in_place_equals_out_of_place(dev: Device) {
    seed(3);
    for &shape in SHAPES {
        for kind in FLOAT_KINDS {
            for lam in lambdas(shape[0], dev) {
                let x = randn(shape, kind, dev);
                let expected = mix(&lam, &Pairing::Flip).forward(&x).unwrap();
                let mut inplace = x.copy();
                mix(&lam, &Pairing::Flip).forward_(&mut inplace).unwrap();
                assert_bitwise_eq(&format!("{shape:?} {kind:?} {lam:?}"), &inplace, &expected);
            }
        }
    }
}

fn mixup_u8_normalises_and_mixes_in_one_pass(dev: Device) {
    seed(4);
    let norm = Normalize::new(&[0.4914, 0.4822, 0.4465], &[0.247, 0.243, 0.261], dev).unwrap();
    // 32x32 moves 4 bytes at a time; 5x5 cannot, so it takes the scalar path.
    for shape in [[9i64, 3, 32, 32], [4, 3, 5, 5], [1, 3, 8, 8]] {
        let x = Tensor::randint(256, shape, (Kind::Uint8, dev));
        for kind in FLOAT_KINDS {
            for pairing in pairings(shape[0], dev) {
                for lam in lambdas(shape[0], dev) {
                    let out = mix(&lam, &pairing).forward_u8(&x, &norm, kind).unwrap();
                    assert_eq!(out.kind(), kind);
                    assert_close(
                        &format!("u8 {shape:?} {kind:?} {pairing:?}"),
                        &out,
                        &reference::mixup_u8_f64(&x, &norm, &lam, &pairing),
                        kind,
                    );
                }
            }
        }
    }
}

fn mixup_handles_non_contiguous_input(dev: Device) {
    seed(5);
    let base = randn(&[3, 32, 32, 9], Kind::Float, dev);
    let x = base.permute([3, 0, 1, 2]); // [9, 3, 32, 32], channels-last storage
    assert!(!x.is_contiguous());
    for pairing in pairings(9, dev) {
        let lam = Lambda::Batch(0.7);
        assert_close(
            "non-contiguous",
            &mix(&lam, &pairing).forward(&x).unwrap(),
            &reference::mixup_f64(&x, &lam, &pairing),
            Kind::Float,
        );
    }
}

fn mixup_large_batch_and_extreme_values(dev: Device) {
    seed(6);
    for kind in FLOAT_KINDS {
        let big = match kind {
            Kind::Float => 1e38,
            Kind::Half => 3e4,
            _ => 1e38,
        };
        let x = (randn(&[1024, 3, 8, 8], Kind::Float, dev).sign() * big).to_kind(kind);
        for pairing in pairings(1024, dev) {
            for lam in lambdas(1024, dev) {
                let out = mix(&lam, &pairing).forward(&x).unwrap();
                assert_eq!(
                    out.isfinite().all().int64_value(&[]),
                    1,
                    "{kind:?}: finite inputs stay finite"
                );
                assert_close(
                    &format!("extreme {kind:?}"),
                    &out,
                    &reference::mixup_f64(&x, &lam, &pairing),
                    kind,
                );
            }
        }
    }
}

/// More rows than a grid has in y (65,535): the row loop strides over gridDim.y.
fn mixup_batches_above_the_grid_y_limit(dev: Device) {
    seed(7);
    let b = 65_537;
    let x = randn(&[b, 2], Kind::Float, dev);
    let mut rng = SeededRng::new(7);
    let perm = Pairing::Permutation(Tensor::from_slice(&rng.permutation(b as usize)).to_device(dev));
    for pairing in [perm, Pairing::Roll(1)] {
        let lam = Lambda::Batch(0.3);
        let out = mix(&lam, &pairing).forward(&x).unwrap();
        assert_bitwise_eq(
            &format!("{b} rows {pairing:?}"),
            &out,
            &reference::composite(&x, &lam, &pairing),
        );
    }
}

fn mixup_propagates_nan(dev: Device) {
    for kind in FLOAT_KINDS {
        let x = randn(&[6, 4], kind, dev);
        let _ = x.get(2).get(1).fill_(f64::NAN);
        let out = mix(&Lambda::Batch(0.5), &Pairing::Flip).forward(&x).unwrap();
        let nan = out.isnan().to_device(Device::Cpu);
        // Row 2 holds the NaN and row 3 = B-1-2 reads it as its partner.
        for (r, c, expect) in [(2, 1, true), (3, 1, true), (2, 0, false), (0, 1, false)] {
            assert_eq!(nan.int64_value(&[r, c]) == 1, expect, "{kind:?} [{r}, {c}]");
        }
    }
}

/// Rows whose values are all distinct from every other row's, so a copy is recognisable.
fn distinct_rows(shape: &[i64], kind: Kind, dev: Device) -> Tensor {
    let b = shape[0];
    let mut per = vec![b];
    per.resize(shape.len(), 1);
    let rows = Tensor::arange(b, (Kind::Float, dev)).view(per.as_slice()) * 8.0;
    (Tensor::rand(shape, (Kind::Float, dev)) + rows).to_kind(kind)
}

fn cutmix_matches_reference_and_pastes_the_reported_area(dev: Device) {
    seed(7);
    for shape in [[5i64, 3, 17, 13], [8, 1, 32, 32], [1, 2, 9, 9]] {
        for kind in FLOAT_KINDS {
            let x = distinct_rows(&shape, kind, dev);
            let b = shape[0];
            let per_sample: Vec<i64> = (0..b).flat_map(|i| [i % 4, 5 + i % 6, 2, 9]).collect();
            let box_sets = [
                CutBoxes::Batch(CutBox {
                    y0: 3,
                    y1: 11,
                    x0: 1,
                    x1: 8,
                }),
                CutBoxes::PerSample(Tensor::from_slice(&per_sample).view([b, 4]).to_device(dev)),
            ];
            for boxes in &box_sets {
                for pairing in pairings(b, dev) {
                    let (out, lam) = cut(boxes, &pairing).forward(&x).unwrap();
                    let what = format!("{shape:?} {kind:?} {boxes:?} {pairing:?}");
                    assert_bitwise_eq(
                        &what,
                        &out,
                        &reference::cutmix_f64(&x, boxes, &pairing).unwrap().to_kind(kind),
                    );
                    // Pixels that changed came from the partner; their share is 1 - lambda.
                    let changed = out.ne_tensor(&x).to_kind(Kind::Double);
                    let partners = pairing.partners(b).unwrap();
                    let lams: Vec<f64> = match &lam {
                        Lambda::Batch(l) => vec![*l; b as usize],
                        Lambda::PerSample(t) => {
                            Vec::<f64>::try_from(t.to_device(Device::Cpu).to_kind(Kind::Double)).unwrap()
                        }
                    };
                    let hw = (shape[2] * shape[3]) as f64;
                    for i in 0..b {
                        let pasted = changed.get(i).sum(Kind::Double).double_value(&[]) / shape[1] as f64;
                        // Per-sample lambdas are f32, so (1 - lambda) * H * W is an integer to f32 precision.
                        let expected = if partners[i as usize] == i {
                            0.0
                        } else {
                            (1.0 - lams[i as usize]) * hw
                        };
                        assert!(
                            (pasted - expected).abs() < 1e-4 && pasted == expected.round(),
                            "{what}: sample {i} pasted {pasted} px, expected {expected}"
                        );
                    }
                }
            }
        }
    }
}

/// Rows of 1100 columns: more packs than one block's 256 lanes (two x-blocks), a box run that
/// starts and ends inside 16-byte packs, rows that start inside one (1100 f16 values are not a
/// whole number of packs), and an unaligned view, which copies one element at a time.
fn cutmix_copies_wide_rows_in_packs(dev: Device) {
    seed(8);
    let shape = [3i64, 2, 4, 1100];
    let n: i64 = shape.iter().product();
    let boxes = CutBoxes::Batch(CutBox {
        y0: 1,
        y1: 3,
        x0: 5,
        x1: 1050,
    });
    for kind in FLOAT_KINDS {
        let flat = distinct_rows(&[n + 1], kind, dev);
        for offset in [0, 1] {
            let x = flat.narrow(0, offset, n).view(shape);
            for pairing in pairings(shape[0], dev) {
                let (out, _) = cut(&boxes, &pairing).forward(&x).unwrap();
                assert_bitwise_eq(
                    &format!("{kind:?} offset {offset} {pairing:?}"),
                    &out,
                    &reference::cutmix_f64(&x, &boxes, &pairing).unwrap().to_kind(kind),
                );
            }
        }
    }
}

fn cutmix_clips_boxes_at_the_borders(dev: Device) {
    let x = distinct_rows(&[2, 1, 10, 10], Kind::Float, dev);
    let (out, lam) = cut(
        &CutBoxes::Batch(CutBox {
            y0: -4,
            y1: 3,
            x0: 7,
            x1: 15,
        }),
        &Pairing::Flip,
    )
    .forward(&x)
    .unwrap();
    // Clipped to rows 0..3 and columns 7..10: 9 of 100 pixels.
    match lam {
        Lambda::Batch(l) => assert!((l - 0.91).abs() < 1e-12, "lambda {l}"),
        other => panic!("expected a batch lambda, got {other:?}"),
    }
    let changed = out.ne_tensor(&x).sum(Kind::Int64).int64_value(&[]);
    assert_eq!(changed, 2 * 9);
}

fn mix_batch_alpha_zero_is_identity_and_seeds_reproduce(dev: Device) {
    seed(8);
    let x = randn(&[64, 3, 8, 8], Kind::Float, dev);
    let y = Tensor::randint(10, [64], (Kind::Int64, dev));
    for kind in [MixKind::Mixup, MixKind::CutMix] {
        for lambda in [LambdaMode::Batch, LambdaMode::PerSample] {
            for pairing in [PairingMode::Permutation, PairingMode::Flip, PairingMode::Roll] {
                let spec = MixSpec {
                    kind,
                    alpha: 1.0,
                    lambda,
                    pairing,
                };
                let paused = MixSpec { alpha: 0.0, ..spec };
                let (same, t) = paused.forward(&x, &y, &mut SeededRng::new(1)).unwrap();
                assert_bitwise_eq("alpha 0", &same, &x);
                assert!(matches!(t.lam, Lambda::Batch(l) if l == 1.0));
                let (a, ta) = spec.forward(&x, &y, &mut SeededRng::new(9)).unwrap();
                let (b, _) = spec.forward(&x, &y, &mut SeededRng::new(9)).unwrap();
                let (c, _) = spec.forward(&x, &y, &mut SeededRng::new(10)).unwrap();
                let what = format!("{spec:?}");
                assert_bitwise_eq(&what, &a, &b);
                assert!(
                    a.ne_tensor(&c).any().int64_value(&[]) == 1,
                    "{what}: other seed, other batch"
                );
                assert!(
                    ta.y_b.ne_tensor(&ta.y_a).any().int64_value(&[]) == 1,
                    "{what}: partners differ"
                );
                assert_bitwise_eq(&what, &ta.y_a, &y);
            }
        }
    }
}

/// Fused u8 -> normalised float mixing draws exactly what mix_batch draws from the same seed and
/// computes the same bits as normalising first (with lambda 1) and mixing the floats.
fn mix_images_normalises_and_mixes_like_mix_batch(dev: Device) {
    seed(9);
    let images = Tensor::randint(256, [16, 3, 12, 12], (Kind::Uint8, dev));
    let y = Tensor::randint(10, [16], (Kind::Int64, dev));
    let norm = Normalize::new(&[0.5, 0.4, 0.3], &[0.2, 0.25, 0.3], dev).unwrap();
    let paused = MixSpec {
        kind: MixKind::Mixup,
        alpha: 0.0,
        lambda: LambdaMode::Batch,
        pairing: PairingMode::Permutation,
    };
    let (plain, t) = paused
        .forward_images(&images, &y, &norm, Kind::Float, &mut SeededRng::new(0))
        .unwrap();
    assert!(matches!(t.lam, Lambda::Batch(l) if l == 1.0));
    assert_close(
        "normalised",
        &plain,
        &reference::mixup_u8_f64(&images, &norm, &Lambda::Batch(1.0), &Pairing::Flip),
        Kind::Float,
    );
    for kind in [MixKind::Mixup, MixKind::CutMix] {
        for lambda in [LambdaMode::Batch, LambdaMode::PerSample] {
            let spec = MixSpec {
                kind,
                alpha: 0.8,
                lambda,
                pairing: PairingMode::Permutation,
            };
            let (fused, ft) = spec
                .forward_images(&images, &y, &norm, Kind::Float, &mut SeededRng::new(3))
                .unwrap();
            let (two_step, tt) = spec.forward(&plain, &y, &mut SeededRng::new(3)).unwrap();
            assert_bitwise_eq(&format!("{spec:?}"), &fused, &two_step);
            assert_bitwise_eq(&format!("{spec:?} y_b"), &ft.y_b, &tt.y_b);
        }
    }
}

fn mixup_rejects_bad_arguments(dev: Device) {
    let x = randn(&[4, 3], Kind::Float, dev);
    let lam = Lambda::Batch(0.5);
    let perm = |v: &[i64]| Pairing::Permutation(Tensor::from_slice(v).to_device(dev));
    expect_err(
        "lambda > 1",
        mix(&Lambda::Batch(1.5), &Pairing::Flip).forward(&x),
        "lam",
    );
    expect_err(
        "lambda NaN",
        mix(&Lambda::Batch(f64::NAN), &Pairing::Flip).forward(&x),
        "lam",
    );
    expect_err(
        "lambda length",
        mix(
            &Lambda::PerSample(Tensor::rand([3], (Kind::Float, dev))),
            &Pairing::Flip,
        )
        .forward(&x),
        "lam",
    );
    expect_err(
        "lambda dtype",
        mix(
            &Lambda::PerSample(Tensor::rand([4], (Kind::Double, dev))),
            &Pairing::Flip,
        )
        .forward(&x),
        "lam",
    );
    expect_err("perm length", mix(&lam, &perm(&[0, 1, 2])).forward(&x), "perm");
    expect_err(
        "perm dtype",
        mix(
            &lam,
            &Pairing::Permutation(Tensor::from_slice(&[0i32, 1, 2, 3]).to_device(dev)),
        )
        .forward(&x),
        "perm",
    );
    expect_err(
        "integer input",
        mix(&lam, &Pairing::Flip).forward(&x.to_kind(Kind::Int64)),
        "x",
    );
    expect_err(
        "empty batch",
        mix(&lam, &Pairing::Flip).forward(&Tensor::zeros([0, 3], (Kind::Float, dev))),
        "x",
    );
    expect_err(
        "scalar input",
        mix(&lam, &Pairing::Flip).forward(&Tensor::from(1.0f32).to_device(dev)),
        "x",
    );
    let mut wrong_shape = poisoned(&[4, 4], Kind::Float, dev);
    expect_err(
        "out shape",
        mix(&lam, &Pairing::Flip).forward_into(&x, &mut wrong_shape),
        "out",
    );
    let mut wrong_kind = poisoned(&[4, 3], Kind::Half, dev);
    expect_err(
        "out dtype",
        mix(&lam, &Pairing::Flip).forward_into(&x, &mut wrong_kind),
        "out",
    );
    let mut aliased = x.shallow_clone();
    expect_err(
        "out aliases x",
        mix(&lam, &Pairing::Flip).forward_into(&x, &mut aliased),
        "out",
    );
    let mut strided = poisoned(&[3, 4], Kind::Float, dev).transpose(0, 1);
    expect_err(
        "out non-contiguous",
        mix(&lam, &Pairing::Flip).forward_into(&x, &mut strided),
        "out",
    );
    let mut strided_x = randn(&[3, 4], Kind::Float, dev).transpose(0, 1);
    expect_err(
        "in-place non-contiguous",
        mix(&lam, &Pairing::Flip).forward_(&mut strided_x),
        "x",
    );
    // In place, only flip pairing can swap each pair; any other is refused by name.
    let mut inplace = x.copy();
    expect_err(
        "in-place roll",
        mix(&lam, &Pairing::Roll(1)).forward_(&mut inplace),
        "pairing",
    );
    expect_err(
        "in-place permutation",
        mix(&lam, &perm(&[1, 0, 3, 2])).forward_(&mut inplace),
        "pairing",
    );
    // Every dtype that is not f32/f16/bf16 is refused by name, never run as f32 (or a panic).
    for kind in [Kind::Double, Kind::Int64, Kind::Uint8, Kind::Bool] {
        let mut other = x.to_kind(kind);
        expect_err(
            &format!("in-place {kind:?}"),
            mix(&lam, &Pairing::Flip).forward_(&mut other),
            "x",
        );
        expect_err(
            &format!("mixup {kind:?}"),
            mix(&lam, &Pairing::Flip).forward(&other),
            "x",
        );
        let img = randn(&[2, 3, 4, 4], Kind::Float, dev).to_kind(kind);
        expect_err(
            &format!("cutmix {kind:?}"),
            cut(
                &CutBoxes::Batch(CutBox {
                    y0: 0,
                    y1: 1,
                    x0: 0,
                    x1: 1,
                }),
                &Pairing::Flip,
            )
            .forward(&img),
            "x",
        );
    }
    let imgs = Tensor::randint(256, [2, 3, 4, 4], (Kind::Uint8, dev));
    let norm1 = Normalize::new(&[0.5], &[0.5], dev).unwrap();
    expect_err(
        "u8 channels",
        mix(&lam, &Pairing::Flip).forward_u8(&imgs, &norm1, Kind::Float),
        "x",
    );
    expect_err(
        "u8 out kind",
        mix(&lam, &Pairing::Flip).forward_u8(&imgs, &Normalize::new(&[0.5; 3], &[0.5; 3], dev).unwrap(), Kind::Int64),
        "kind",
    );
    expect_err("std zero", Normalize::new(&[0.5], &[0.0], dev), "std");
    expect_err("std count", Normalize::new(&[0.5, 0.5], &[0.5], dev), "std");
    expect_err(
        "cutmix rank",
        cut(
            &CutBoxes::Batch(CutBox {
                y0: 0,
                y1: 1,
                x0: 0,
                x1: 1,
            }),
            &Pairing::Flip,
        )
        .forward(&x),
        "x",
    );
    let img = randn(&[4, 3, 8, 8], Kind::Float, dev);
    expect_err(
        "boxes shape",
        cut(
            &CutBoxes::PerSample(Tensor::zeros([4, 3], (Kind::Int64, dev))),
            &Pairing::Flip,
        )
        .forward(&img),
        "boxes",
    );
    let y = Tensor::randint(10, [4], (Kind::Int64, dev));
    let spec = MixSpec {
        kind: MixKind::Mixup,
        alpha: -1.0,
        lambda: LambdaMode::Batch,
        pairing: PairingMode::Flip,
    };
    expect_err(
        "negative alpha",
        spec.forward(&img, &y, &mut SeededRng::new(0)),
        "spec.alpha",
    );
    let spec = MixSpec { alpha: 1.0, ..spec };
    expect_err(
        "label count",
        spec.forward(&img, &y.narrow(0, 0, 3), &mut SeededRng::new(0)),
        "y",
    );
    expect_err(
        "label dtype",
        spec.forward(&img, &y.to_kind(Kind::Int), &mut SeededRng::new(0)),
        "y",
    );
    if dev == Device::Cpu {
        // Permutations and per-sample lambdas are validated on the CPU only (no host sync on CUDA).
        expect_err("not a permutation", mix(&lam, &perm(&[0, 1, 1, 3])).forward(&x), "perm");
        expect_err("perm out of range", mix(&lam, &perm(&[0, 1, 2, 4])).forward(&x), "perm");
        expect_err(
            "lambda values",
            mix(
                &Lambda::PerSample(Tensor::from_slice(&[0.5f32, 1.5, 0.0, 1.0])),
                &Pairing::Flip,
            )
            .forward(&x),
            "lam",
        );
    } else {
        let host = Pairing::Permutation(Tensor::from_slice(&[0i64, 1, 2, 3]));
        expect_err("perm on the host", mix(&lam, &host).forward(&x), "perm");
        expect_err(
            "labels on the host",
            spec.forward(&img, &y.to_device(Device::Cpu), &mut SeededRng::new(0)),
            "y",
        );
        // An out-of-range entry must not read out of bounds: the row becomes NaN.
        let out = mix(&lam, &perm(&[0, 1, 2, 99])).forward(&x).unwrap();
        assert_eq!(out.get(3).isnan().all().int64_value(&[]), 1);
        assert_eq!(out.narrow(0, 0, 3).isnan().any().int64_value(&[]), 0);
    }
}

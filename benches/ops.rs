//! Each fused op against the tch composite a PyTorch user writes today, measured in one run, on
//! the CPU and (when present) on CUDA. Group ids are `op/variant/size/dtype/device` with functions
//! `fused` and `composite`; scripts/bench-report pairs them into one table.

use std::time::Duration;

use criterion::measurement::WallTime;
use criterion::{criterion_group, criterion_main, BenchmarkGroup, Criterion, Throughput};
use enlighten::ops::loss::{self, CrossEntropy, Targets};
use enlighten::ops::mixup::{reference, Lambda, MixedTargets, Mixup, Pairing};
use enlighten::ops::stats;
use enlighten::testing::sync;
use enlighten::SeededRng;
use tch::{Device, Kind, Tensor};

fn devices() -> Vec<Device> {
    // Steady-state allocator: see enlighten::tune_cpu_allocator.
    enlighten::tune_cpu_allocator();
    eprintln!("CPU: {}", cpu_isa());
    match enlighten::cuda::probe() {
        Ok(_) => vec![Device::Cpu, Device::Cuda(0)],
        Err(reason) => {
            eprintln!("CUDA benchmarks not run: {reason}");
            vec![Device::Cpu]
        }
    }
}

/// The vector instruction sets this run could use, for the results' record: the library is
/// built for the target's baseline (16-byte SSE2 on x86-64) plus what `-C target-feature`
/// adds, and picks its AVX2 + FMA loops (dot_norms f32) at run time when the CPU has them.
fn cpu_isa() -> String {
    #[cfg(target_arch = "x86_64")]
    {
        let run_time: Vec<&str> = [
            ("avx2", is_x86_feature_detected!("avx2")),
            ("fma", is_x86_feature_detected!("fma")),
            ("avx512f", is_x86_feature_detected!("avx512f")),
        ]
        .into_iter()
        .filter_map(|(name, on)| on.then_some(name))
        .collect();
        let built = if cfg!(target_feature = "avx2") { "avx2" } else { "sse2" };
        format!(
            "x86-64, built for {built}, detected at run time: {}",
            run_time.join(" ")
        )
    }
    #[cfg(not(target_arch = "x86_64"))]
    {
        std::env::consts::ARCH.to_string()
    }
}

fn device_name(d: Device) -> &'static str {
    if d == Device::Cpu {
        "cpu"
    } else {
        "cuda"
    }
}

fn dtype_name(k: Kind) -> &'static str {
    match k {
        Kind::Float => "f32",
        Kind::Half => "f16",
        _ => "bf16",
    }
}

/// Times `f` with a device sync after each batch of iterations, so CUDA time is counted.
fn bench(group: &mut BenchmarkGroup<'_, WallTime>, name: &str, device: Device, mut f: impl FnMut()) {
    group.bench_function(name, |b| {
        b.iter_custom(|iters| {
            sync(device);
            let t = std::time::Instant::now();
            for _ in 0..iters {
                f();
            }
            sync(device);
            t.elapsed()
        })
    });
}

fn group<'a>(
    c: &'a mut Criterion,
    op: &str,
    variant: &str,
    shape: &[i64],
    kind: Kind,
    device: Device,
    bytes: u64,
) -> BenchmarkGroup<'a, WallTime> {
    let size = shape.iter().map(i64::to_string).collect::<Vec<_>>().join("x");
    let mut g = c.benchmark_group(format!(
        "{op}/{variant}/{size}/{}/{}",
        dtype_name(kind),
        device_name(device)
    ));
    g.throughput(Throughput::Bytes(bytes));
    let large = shape.iter().product::<i64>() > 10_000_000;
    if large {
        g.sample_size(10)
            .warm_up_time(Duration::from_secs(1))
            .measurement_time(Duration::from_secs(4));
    }
    g
}

fn mixup_benches(c: &mut Criterion) {
    let shapes: [(&[i64], &[Kind]); 3] = [
        (&[128, 3, 32, 32], &[Kind::Float]),
        (&[256, 3, 224, 224], &[Kind::Float, Kind::BFloat16]),
        (&[512, 720, 7], &[Kind::Float]),
    ];
    for device in devices() {
        for (shape, kinds) in shapes {
            for &kind in kinds {
                tch::manual_seed(0);
                let b = shape[0];
                let x = Tensor::randn(shape, (Kind::Float, device)).to_kind(kind);
                let n_bytes = (x.numel() * kind.elt_size_in_bytes()) as u64;
                let perm = Pairing::Permutation(
                    Tensor::from_slice(&SeededRng::new(1).permutation(b as usize)).to_device(device),
                );
                let lam = Lambda::Batch(0.37);
                let mix = Mixup {
                    lam: lam.shallow_clone(),
                    pairing: perm.shallow_clone(),
                };
                let flip = Mixup {
                    lam: lam.shallow_clone(),
                    pairing: Pairing::Flip,
                };

                // Out of place: read x[i] and x[p(i)], write out[i] = 3N bytes.
                let mut g = group(c, "mixup", "perm", shape, kind, device, 3 * n_bytes);
                bench(&mut g, "fused", device, || drop(mix.forward(&x)));
                bench(&mut g, "composite", device, || {
                    drop(reference::composite(&x, &lam, &perm))
                });
                g.finish();

                // Into a caller-provided buffer: no allocation per batch.
                let mut out = x.empty_like();
                let mut g = group(c, "mixup", "perm into buffer", shape, kind, device, 3 * n_bytes);
                bench(&mut g, "fused", device, || {
                    mix.forward_into(&x, &mut out).expect("forward_into")
                });
                bench(&mut g, "composite", device, || {
                    drop(reference::composite(&x, &lam, &perm))
                });
                g.finish();

                // In place with flip pairing against timm's in-place flip form: 2N bytes.
                let mut a = x.copy();
                let mut bx = x.copy();
                let mut g = group(c, "mixup", "flip in place", shape, kind, device, 2 * n_bytes);
                bench(&mut g, "fused", device, || flip.forward_(&mut a).expect("forward_"));
                bench(&mut g, "composite", device, || {
                    reference::composite_flip_(&mut bx, 0.37).expect("composite flip")
                });
                g.finish();

                // On CUDA, torchvision's roll pairing out of place, whose kernel walks runs of a
                // roll cycle and reads x 9/8 times: bytes at the 2N floor.
                if device.is_cuda() && kind == Kind::Float && b == 256 {
                    let roll = Mixup {
                        lam: lam.shallow_clone(),
                        pairing: Pairing::Roll(1),
                    };
                    let mut g = group(c, "mixup", "roll into buffer", shape, kind, device, 2 * n_bytes);
                    bench(&mut g, "fused", device, || {
                        roll.forward_into(&x, &mut out).expect("forward_into")
                    });
                    bench(&mut g, "composite", device, || {
                        drop(reference::composite(&x, &lam, &Pairing::Roll(1)))
                    });
                    g.finish();
                }
            }
        }
    }
}

/// Loss + High-Loss Removal + gradient, against `cross_entropy(reduction='none')` -> `topk` ->
/// mask -> mean -> backward. Bytes: the logits read once and the gradient written once.
///
/// Every backward goes into a fresh leaf (`leaf()`), on both sides: in training the logits'
/// gradient flows on into the model and is never accumulated, and a parameter's is fresh after
/// libtorch's `zero_grad` (set_to_none). A leaf reused across iterations would add a read-add-
/// write pass over the gradient to both sides that no training step has.
fn loss_benches(c: &mut Criterion) {
    let shapes: &[(i64, i64)] = &[(128, 10), (128, 100), (1024, 1000), (4096, 1000)];
    for device in devices() {
        for &(b, classes) in shapes {
            tch::manual_seed(0);
            let logits = Tensor::randn([b, classes], (Kind::Float, device));
            let y = Tensor::randint(classes, [b], (Kind::Int64, device));
            let bytes = 2 * (b * classes * 4) as u64;
            let hlr = CrossEntropy {
                label_smoothing: 0.1,
                ignore_index: None,
                drop_share: 0.1,
            };
            let leaf = || logits.detach().set_requires_grad(true);

            let mut g = group(
                c,
                "ce",
                "hlr r=0.1 eps=0.1, autograd",
                &[b, classes],
                Kind::Float,
                device,
                bytes,
            );
            bench(&mut g, "fused", device, || {
                hlr.forward(&leaf(), &y).expect("fused ce").backward();
            });
            bench(&mut g, "composite", device, || {
                loss::reference::composite(&leaf(), Targets::Index(&y), &hlr)
                    .expect("composite")
                    .backward();
            });
            g.finish();

            let mut g = group(
                c,
                "ce",
                "hlr r=0.1 eps=0.1, dlogits",
                &[b, classes],
                Kind::Float,
                device,
                bytes,
            );
            bench(&mut g, "fused", device, || {
                drop(hlr.loss_and_grad(&logits, Targets::Index(&y)).expect("fused ce"))
            });
            bench(&mut g, "composite", device, || {
                loss::reference::composite(&leaf(), Targets::Index(&y), &hlr)
                    .expect("composite")
                    .backward();
            });
            g.finish();

            let mix = MixedTargets {
                y_a: y.shallow_clone(),
                y_b: y.roll([1], [0]),
                lam: Lambda::Batch(0.3),
            };
            let smooth = CrossEntropy {
                label_smoothing: 0.1,
                ..Default::default()
            };
            let mut g = group(
                c,
                "ce",
                "mixed targets eps=0.1, autograd",
                &[b, classes],
                Kind::Float,
                device,
                bytes,
            );
            bench(&mut g, "fused", device, || {
                smooth.forward(&leaf(), &mix).expect("fused ce").backward();
            });
            bench(&mut g, "composite", device, || {
                loss::reference::composite(&leaf(), Targets::Mixed(&mix), &smooth)
                    .expect("composite")
                    .backward();
            });
            g.finish();
        }
    }
}

/// ResNet18 (CIFAR stem) post-ReLU activation shapes per sample: stem, then 4 stages of 4 ReLUs.
fn resnet18_activations(batch: i64, device: Device) -> Vec<Tensor> {
    let mut shapes = vec![[64i64, 32, 32]];
    for (c, hw) in [(64i64, 32i64), (128, 16), (256, 8), (512, 4)] {
        shapes.extend(std::iter::repeat_n([c, hw, hw], 4));
    }
    shapes
        .iter()
        .map(|s| Tensor::randn([batch, s[0], s[1], s[2]], (Kind::Float, device)).relu())
        .collect()
}

/// ResNet18's parameter shapes (conv weights, batch-norm scales and shifts, the classifier).
fn resnet18_params(device: Device) -> Vec<Tensor> {
    let mut shapes: Vec<Vec<i64>> = vec![vec![64, 3, 3, 3], vec![64], vec![64]];
    let mut cin = 64;
    for c in [64i64, 128, 256, 512] {
        for block in 0..2 {
            let first_in = if block == 0 { cin } else { c };
            shapes.extend([
                vec![c, first_in, 3, 3],
                vec![c],
                vec![c],
                vec![c, c, 3, 3],
                vec![c],
                vec![c],
            ]);
            if block == 0 && first_in != c {
                shapes.extend([vec![c, first_in, 1, 1], vec![c], vec![c]]);
            }
        }
        cin = c;
    }
    shapes.extend([vec![10, 512], vec![10]]);
    shapes
        .iter()
        .map(|s| Tensor::randn(s.as_slice(), (Kind::Float, device)))
        .collect()
}

/// Zero counts over every probed layer in one launch vs `(x == 0).sum(dims)` per layer; dot
/// and norms over all parameters vs three tch reductions per tensor. Bytes: one read of each.
fn stats_benches(c: &mut Criterion) {
    for device in devices() {
        let batches: &[i64] = if device == Device::Cpu { &[128] } else { &[128, 512] };
        for &b in batches {
            tch::manual_seed(0);
            let acts = resnet18_activations(b, device);
            let refs: Vec<&Tensor> = acts.iter().collect();
            let bytes = acts.iter().map(|t| t.numel() as u64 * 4).sum::<u64>();
            let mut g = group(
                c,
                "zero_counts",
                "resnet18 relu outputs",
                &[b, 557_056],
                Kind::Float,
                device,
                bytes,
            );
            bench(&mut g, "fused", device, || {
                drop(stats::zero_counts(&refs, None).expect("zero counts"))
            });
            bench(&mut g, "composite", device, || {
                for t in &refs {
                    drop(stats::reference::composite_layer(t, None));
                }
            });
            g.finish();
        }
        let a = resnet18_params(device);
        let b = resnet18_params(device);
        let (ar, br): (Vec<&Tensor>, Vec<&Tensor>) = (a.iter().collect(), b.iter().collect());
        let n: i64 = a.iter().map(|t| t.numel() as i64).sum();
        let mut g = group(
            c,
            "dot_norms",
            "resnet18 params",
            &[n],
            Kind::Float,
            device,
            2 * n as u64 * 4,
        );
        bench(&mut g, "fused", device, || {
            drop(stats::dot_norms(&ar, &br, stats::Accumulate::F64).expect("dot norms"))
        });
        bench(&mut g, "composite", device, || {
            let mut sums = [
                Tensor::zeros([], (Kind::Float, device)),
                Tensor::zeros([], (Kind::Float, device)),
                Tensor::zeros([], (Kind::Float, device)),
            ];
            for (x, y) in ar.iter().zip(&br) {
                let (x, y) = (x.reshape([-1]), y.reshape([-1]));
                sums[0] += x.dot(&y);
                sums[1] += x.dot(&x);
                sums[2] += y.dot(&y);
            }
        });
        g.finish();
    }
}

/// Language-model sized cross-entropy, loss + gradient (no removal): 16384 x 32768 on CUDA, a
/// smaller vocabulary on the CPU. Bytes: the logits read once and the gradient written once.
fn lm_loss_benches(c: &mut Criterion) {
    for device in devices() {
        let (tokens, vocab) = if device == Device::Cpu {
            (4096i64, 8192i64)
        } else {
            (16384, 32768)
        };
        tch::manual_seed(0);
        let logits = Tensor::randn([tokens, vocab], (Kind::Float, device));
        let y = Tensor::randint(vocab, [tokens], (Kind::Int64, device));
        // A fresh leaf per backward, as in loss_benches.
        let leaf = || logits.detach().set_requires_grad(true);
        let plain = CrossEntropy::default();
        let mut g = group(
            c,
            "ce",
            "lm tokens, dlogits",
            &[tokens, vocab],
            Kind::Float,
            device,
            2 * (tokens * vocab * 4) as u64,
        );
        bench(&mut g, "fused", device, || {
            drop(plain.loss_and_grad(&logits, Targets::Index(&y)).expect("fused ce"))
        });
        bench(&mut g, "composite", device, || {
            loss::reference::composite(&leaf(), Targets::Index(&y), &plain)
                .expect("composite")
                .backward();
        });
        g.finish();
    }
}

/// The whole Enlightenment-Period step a GPU user runs per batch, on ImageNet-sized images:
/// Mixup of the batch, then the mixed-target cross-entropy with High-Loss Removal and its
/// gradient, against the same composites (`x*lam + x[perm]*(1-lam)`, two smoothed
/// cross-entropies, `topk` removal, backward). CUDA only; scripts/bench-torch.py times timm's
/// `Mixup` and torchvision's `MixUp`/`CutMix` with the same loss beside it. Bytes: Mixup's 3N,
/// the logits read once and their gradient written once.
fn step_benches(c: &mut Criterion) {
    for device in devices().into_iter().filter(|&d| d != Device::Cpu) {
        let (b, classes) = (256i64, 1000i64);
        let shape = [b, 3, 224, 224];
        tch::manual_seed(0);
        let x = Tensor::randn(shape, (Kind::Float, device));
        let logits = Tensor::randn([b, classes], (Kind::Float, device));
        let y = Tensor::randint(classes, [b], (Kind::Int64, device));
        let order = Tensor::from_slice(&SeededRng::new(1).permutation(b as usize)).to_device(device);
        let perm_y = y.index_select(0, &order);
        let perm = Pairing::Permutation(order);
        let lam = Lambda::Batch(0.37);
        let mix = Mixup {
            lam: lam.shallow_clone(),
            pairing: perm.shallow_clone(),
        };
        let targets = MixedTargets {
            y_a: y.shallow_clone(),
            y_b: perm_y,
            lam: lam.shallow_clone(),
        };
        let hlr = CrossEntropy {
            label_smoothing: 0.1,
            ignore_index: None,
            drop_share: 0.1,
        };
        let leaf = || logits.detach().set_requires_grad(true);
        let bytes = 3 * (x.numel() * 4) as u64 + 2 * (b * classes * 4) as u64;
        let mut g = group(
            c,
            "ep step",
            "mixup + mixed ce hlr r=0.1 eps=0.1, autograd",
            &shape,
            Kind::Float,
            device,
            bytes,
        );
        bench(&mut g, "fused", device, || {
            drop(mix.forward(&x));
            hlr.forward(&leaf(), &targets).expect("fused ce").backward();
        });
        bench(&mut g, "composite", device, || {
            drop(reference::composite(&x, &lam, &perm));
            loss::reference::composite(&leaf(), Targets::Mixed(&targets), &hlr)
                .expect("composite")
                .backward();
        });
        g.finish();
    }
}

criterion_group!(
    benches,
    mixup_benches,
    loss_benches,
    lm_loss_benches,
    stats_benches,
    step_benches
);
criterion_main!(benches);

//! Each fused op against the tch composite a PyTorch user writes today, measured in one run, on
//! the CPU and (when present) on CUDA. Group ids are `op/variant/size/dtype/device` with functions
//! `fused` and `composite`; scripts/bench-report pairs them into one table.

use std::time::Duration;

use criterion::{criterion_group, criterion_main, BenchmarkGroup, Criterion, Throughput};
use criterion::measurement::WallTime;
use enlighten::ops::loss::{self, cross_entropy, cross_entropy_autograd, CrossEntropy, Targets};
use enlighten::ops::mixup::{mixup, mixup_flip_, mixup_into, reference, Lambda, MixedTargets, Pairing};
use enlighten::SeededRng;
use tch::{Device, Kind, Tensor};

fn devices() -> Vec<Device> {
    match enlighten::cuda::probe() {
        Ok(_) => vec![Device::Cpu, Device::Cuda(0)],
        Err(reason) => {
            eprintln!("CUDA benchmarks not run: {reason}");
            vec![Device::Cpu]
        }
    }
}

fn device_name(d: Device) -> &'static str {
    if d == Device::Cpu { "cpu" } else { "cuda" }
}

fn dtype_name(k: Kind) -> &'static str {
    match k {
        Kind::Float => "f32",
        Kind::Half => "f16",
        _ => "bf16",
    }
}

fn sync(d: Device) {
    if let Device::Cuda(i) = d {
        tch::Cuda::synchronize(i as i64);
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

fn group<'a>(c: &'a mut Criterion, op: &str, variant: &str, shape: &[i64], kind: Kind, device: Device, bytes: u64) -> BenchmarkGroup<'a, WallTime> {
    let size = shape.iter().map(i64::to_string).collect::<Vec<_>>().join("x");
    let mut g = c.benchmark_group(format!("{op}/{variant}/{size}/{}/{}", dtype_name(kind), device_name(device)));
    g.throughput(Throughput::Bytes(bytes));
    let large = shape.iter().product::<i64>() > 10_000_000;
    if large {
        g.sample_size(10).warm_up_time(Duration::from_secs(1)).measurement_time(Duration::from_secs(4));
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
                let perm = Pairing::Permutation(Tensor::from_slice(&SeededRng::new(1).permutation(b as usize)).to_device(device));
                let lam = Lambda::Batch(0.37);

                // Out of place: read x[i] and x[p(i)], write out[i] = 3N bytes.
                let mut g = group(c, "mixup", "perm", shape, kind, device, 3 * n_bytes);
                bench(&mut g, "fused", device, || drop(mixup(&x, &lam, &perm)));
                bench(&mut g, "composite", device, || drop(reference::composite(&x, &lam, &perm)));
                g.finish();

                // Into a caller-provided buffer: no allocation per batch.
                let mut out = x.empty_like();
                let mut g = group(c, "mixup", "perm into buffer", shape, kind, device, 3 * n_bytes);
                bench(&mut g, "fused", device, || mixup_into(&x, &lam, &perm, &mut out).expect("mixup_into"));
                bench(&mut g, "composite", device, || drop(reference::composite(&x, &lam, &perm)));
                g.finish();

                // In place with flip pairing against timm's in-place flip form: 2N bytes.
                let mut a = x.copy();
                let mut bx = x.copy();
                let mut g = group(c, "mixup", "flip in place", shape, kind, device, 2 * n_bytes);
                bench(&mut g, "fused", device, || mixup_flip_(&mut a, &lam).expect("mixup_flip_"));
                bench(&mut g, "composite", device, || reference::composite_flip_(&mut bx, 0.37).expect("composite flip"));
                g.finish();
            }
        }
    }
}

/// Loss + High-Loss Removal + gradient, against `cross_entropy(reduction='none')` -> `topk` ->
/// mask -> mean -> backward. Bytes: the logits read once and the gradient written once.
fn loss_benches(c: &mut Criterion) {
    let shapes: &[(i64, i64)] = &[(128, 10), (128, 100), (1024, 1000), (4096, 1000)];
    for device in devices() {
        for &(b, classes) in shapes {
            tch::manual_seed(0);
            let logits = Tensor::randn([b, classes], (Kind::Float, device));
            let y = Tensor::randint(classes, [b], (Kind::Int64, device));
            let bytes = 2 * (b * classes * 4) as u64;
            let hlr = CrossEntropy { label_smoothing: 0.1, ignore_index: None, drop_share: 0.1 };
            let leaf = logits.detach().set_requires_grad(true);

            let mut g = group(c, "ce", "hlr r=0.1 eps=0.1, autograd", &[b, classes], Kind::Float, device, bytes);
            bench(&mut g, "fused", device, || {
                let (l, _) = cross_entropy_autograd(&leaf, Targets::Index(&y), &hlr).expect("fused ce");
                l.backward();
            });
            bench(&mut g, "composite", device, || {
                loss::reference::composite(&leaf, Targets::Index(&y), &hlr).expect("composite").backward();
            });
            g.finish();

            let mut g = group(c, "ce", "hlr r=0.1 eps=0.1, dlogits", &[b, classes], Kind::Float, device, bytes);
            bench(&mut g, "fused", device, || drop(cross_entropy(&logits, Targets::Index(&y), &hlr, true).expect("fused ce")));
            bench(&mut g, "composite", device, || {
                loss::reference::composite(&leaf, Targets::Index(&y), &hlr).expect("composite").backward();
            });
            g.finish();

            let mix = MixedTargets { y_a: y.shallow_clone(), y_b: y.roll([1], [0]), lam: Lambda::Batch(0.3) };
            let smooth = CrossEntropy { label_smoothing: 0.1, ..Default::default() };
            let mut g = group(c, "ce", "mixed targets eps=0.1, autograd", &[b, classes], Kind::Float, device, bytes);
            bench(&mut g, "fused", device, || {
                let (l, _) = cross_entropy_autograd(&leaf, Targets::Mixed(&mix), &smooth).expect("fused ce");
                l.backward();
            });
            bench(&mut g, "composite", device, || {
                loss::reference::composite(&leaf, Targets::Mixed(&mix), &smooth).expect("composite").backward();
            });
            g.finish();
        }
    }
}

criterion_group!(benches, mixup_benches, loss_benches);
criterion_main!(benches);

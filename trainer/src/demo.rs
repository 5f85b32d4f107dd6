//! `enlighten demo`: every op on every available device, checked against its f64 reference and
//! timed against the tch composite, as one table.

use std::time::Instant;

use enlighten::cuda::{fatbin, kernels_origin, probe, Kernel};
use enlighten::ops::loss::{self, CrossEntropy, Mse, Targets};
use enlighten::ops::mixup::{reference, CutBox, CutBoxes, CutMix, Lambda, MixedTargets, Mixup, Normalize, Pairing};
use enlighten::testing::{rel_err, sync, tolerance};
use enlighten::SeededRng;
use enlighten_trainer::DeviceChoice;
use enlighten_trainer::Result;
use tch::{Device, Kind, Tensor};

struct Row {
    op: &'static str,
    variant: String,
    device: Device,
    kind: Kind,
    size: String,
    rel_err: f64,
    tol: f64,
    fused_ms: f64,
    composite_ms: f64,
}

impl Row {
    /// Within tolerance; a NaN error is a failure.
    fn ok(&self) -> bool {
        !self.rel_err.is_nan() && self.rel_err <= self.tol
    }
}

/// Median wall time of `f` in milliseconds over a few runs after one warm-up.
fn median_ms(device: Device, mut f: impl FnMut()) -> f64 {
    f();
    sync(device);
    let mut times: Vec<f64> = (0..7)
        .map(|_| {
            let t = Instant::now();
            f();
            sync(device);
            t.elapsed().as_secs_f64() * 1e3
        })
        .collect();
    times.sort_by(f64::total_cmp);
    times[times.len() / 2]
}

fn devices(choice: DeviceChoice) -> Result<Vec<Device>> {
    let cuda = probe();
    Ok(match (choice, cuda) {
        (DeviceChoice::Cpu, _) => vec![Device::Cpu],
        (DeviceChoice::Cuda, Err(reason)) => return Err(reason.into()),
        (DeviceChoice::Cuda, Ok(_)) => vec![Device::Cuda(0)],
        (DeviceChoice::Auto, Ok(_)) => vec![Device::Cpu, Device::Cuda(0)],
        (DeviceChoice::Auto, Err(reason)) => {
            println!("CUDA not used: {reason}");
            vec![Device::Cpu]
        }
    })
}

pub fn run(choice: DeviceChoice) -> Result<()> {
    enlighten::tune_cpu_allocator();
    let mut rows = Vec::new();
    for device in devices(choice)? {
        tch::manual_seed(0);
        rows.extend(mixup_rows(device)?);
        rows.extend(loss_rows(device)?);
    }
    print_table(&rows);
    let failed = rows.iter().filter(|r| !r.ok()).count();
    println!("\n{} passed, {} failed", rows.len() - failed, failed);
    if failed > 0 {
        return Err(enlighten_trainer::Error::Value {
            arg: "demo",
            expected: "every op within tolerance".into(),
            got: format!("{failed} failures"),
        });
    }
    Ok(())
}

fn mixup_rows(device: Device) -> Result<Vec<Row>> {
    let shape = [128i64, 3, 32, 32];
    let size = "128x3x32x32".to_string();
    let mut rows = Vec::new();
    let perm = Pairing::Permutation(Tensor::from_slice(&SeededRng::new(1).permutation(128)).to_device(device));
    for kind in [Kind::Float, Kind::Half, Kind::BFloat16] {
        let x = (Tensor::randn(shape, (Kind::Float, device)) * 2.0).to_kind(kind);
        let per_sample = Lambda::PerSample(Tensor::rand([128], (Kind::Float, device)));
        for (variant, lam, pairing) in [
            ("perm, batch lambda", Lambda::Batch(0.37), perm.shallow_clone()),
            ("perm, per-sample lambda", per_sample, perm.shallow_clone()),
            ("flip, batch lambda", Lambda::Batch(0.37), Pairing::Flip),
        ] {
            let mix = Mixup { lam, pairing };
            let (lam, pairing) = (&mix.lam, &mix.pairing);
            let out = mix.forward(&x)?;
            rows.push(Row {
                op: "mixup",
                variant: variant.into(),
                device,
                kind,
                size: size.clone(),
                rel_err: rel_err(&out, &reference::mixup_f64(&x, lam, pairing)),
                tol: tolerance(kind),
                fused_ms: median_ms(device, || drop(mix.forward(&x))),
                composite_ms: median_ms(device, || drop(reference::composite(&x, lam, pairing))),
            });
        }
        let flip = Mixup {
            lam: Lambda::Batch(0.37),
            pairing: Pairing::Flip,
        };
        let mut inplace = x.copy();
        flip.forward_(&mut inplace)?;
        let mut scratch = x.copy();
        rows.push(Row {
            op: "mixup",
            variant: "flip, in place".into(),
            device,
            kind,
            size: size.clone(),
            rel_err: rel_err(&inplace, &reference::mixup_f64(&x, &flip.lam, &flip.pairing)),
            tol: tolerance(kind),
            fused_ms: median_ms(device, || drop(flip.forward_(&mut scratch))),
            composite_ms: median_ms(device, || drop(reference::composite_flip_(&mut scratch, 0.37))),
        });
        let boxes = CutBoxes::Batch(CutBox {
            y0: 4,
            y1: 20,
            x0: 9,
            x1: 30,
        });
        let cut = CutMix {
            boxes: boxes.shallow_clone(),
            pairing: perm.shallow_clone(),
        };
        let (out, _) = cut.forward(&x)?;
        rows.push(Row {
            op: "cutmix",
            variant: "perm, batch box".into(),
            device,
            kind,
            size: size.clone(),
            rel_err: rel_err(&out, &reference::cutmix_f64(&x, &boxes, &perm)?),
            tol: 0.0,
            fused_ms: median_ms(device, || drop(cut.forward(&x))),
            composite_ms: median_ms(device, || drop(reference::cutmix_f64(&x, &boxes, &perm))),
        });
        let images = Tensor::randint(256, shape, (Kind::Uint8, device));
        let norm = Normalize::new(&[0.49, 0.48, 0.45], &[0.25, 0.24, 0.26], device)?;
        let mix = Mixup {
            lam: Lambda::Batch(0.37),
            pairing: perm.shallow_clone(),
        };
        let out = mix.forward_u8(&images, &norm, kind)?;
        rows.push(Row {
            op: "mixup",
            variant: "u8 -> normalised".into(),
            device,
            kind,
            size: size.clone(),
            rel_err: rel_err(&out, &reference::mixup_u8_f64(&images, &norm, &mix.lam, &perm)),
            tol: tolerance(kind),
            fused_ms: median_ms(device, || drop(mix.forward_u8(&images, &norm, kind))),
            composite_ms: median_ms(device, || {
                drop(reference::mixup_u8_f64(&images, &norm, &mix.lam, &perm).to_kind(kind))
            }),
        });
    }
    Ok(rows)
}

/// Loss + High-Loss Removal + gradient; the error is the gradient's against the f64 reference,
/// the composite is libtorch's per-sample CE -> topk -> masked mean -> backward.
fn loss_rows(device: Device) -> Result<Vec<Row>> {
    let mut rows = Vec::new();
    for (b, c) in [(128i64, 10i64), (1024, 1000)] {
        let size = format!("{b}x{c}");
        let y = Tensor::randint(c, [b], (Kind::Int64, device));
        let mix = MixedTargets {
            y_a: y.shallow_clone(),
            y_b: y.roll([1], [0]),
            lam: Lambda::Batch(0.3),
        };
        for kind in [Kind::Float, Kind::Half, Kind::BFloat16] {
            let logits = (Tensor::randn([b, c], (Kind::Float, device)) * 2.0).to_kind(kind);
            let leaf = logits.detach().to_kind(Kind::Float).set_requires_grad(true);
            for (variant, targets, opts) in [
                (
                    "index, eps .1, drop 10%",
                    Targets::Index(&y),
                    CrossEntropy {
                        label_smoothing: 0.1,
                        ignore_index: None,
                        drop_share: 0.1,
                    },
                ),
                (
                    "mixed targets, eps .1",
                    Targets::Mixed(&mix),
                    CrossEntropy {
                        label_smoothing: 0.1,
                        ..Default::default()
                    },
                ),
            ] {
                let out = opts.loss_and_grad(&logits, targets)?;
                let r = loss::reference::cross_entropy_f64(&logits, targets, &opts)?;
                let grad = out.grad.as_ref().map(|g| rel_err(g, &r.grad)).unwrap_or(f64::INFINITY);
                rows.push(Row {
                    op: "ce",
                    variant: variant.into(),
                    device,
                    kind,
                    size: size.clone(),
                    rel_err: grad.max(rel_err(&out.per_sample, &r.per_sample)),
                    tol: tolerance(kind),
                    fused_ms: median_ms(device, || drop(opts.loss_and_grad(&logits, targets))),
                    composite_ms: median_ms(device, || {
                        if let Ok(l) = loss::reference::composite(&leaf, targets, &opts) {
                            l.backward();
                        }
                    }),
                });
            }
        }
    }
    let pred = Tensor::randn([512, 96], (Kind::Float, device));
    let target = Tensor::randn([512, 96], (Kind::Float, device));
    let hlr = Mse { drop_share: 0.1 };
    let out = hlr.loss_and_grad(&pred, &target)?;
    let r = loss::reference::mse_f64(&pred, &target, 0.1)?;
    let leaf = pred.detach().set_requires_grad(true);
    rows.push(Row {
        op: "mse",
        variant: "drop 10%".into(),
        device,
        kind: Kind::Float,
        size: "512x96".into(),
        rel_err: rel_err(out.grad.as_ref().unwrap_or(&out.per_sample), &r.grad)
            .max(rel_err(&out.per_sample, &r.per_sample)),
        tol: tolerance(Kind::Float) * 10.0,
        fused_ms: median_ms(device, || drop(hlr.loss_and_grad(&pred, &target))),
        composite_ms: median_ms(device, || {
            let per = (&leaf - &target).square().mean_dim(1, false, Kind::Float);
            if let Ok(l) = loss::reference::mean_without_highest(&per, 0.1) {
                l.backward();
            }
        }),
    });
    Ok(rows)
}

fn print_table(rows: &[Row]) {
    println!(
        "{:<7} {:<24} {:<7} {:<9} {:<12} {:>10} {:>8} {:>10} {:>12} {:>8}  ok",
        "op", "variant", "device", "dtype", "size", "rel err", "tol", "fused ms", "composite ms", "speedup"
    );
    for r in rows {
        let device = if r.device == Device::Cpu { "cpu" } else { "cuda" };
        println!(
            "{:<7} {:<24} {:<7} {:<9} {:<12} {:>10.2e} {:>8.0e} {:>10.3} {:>12.3} {:>7.1}x  {}",
            r.op,
            r.variant,
            device,
            format!("{:?}", r.kind),
            r.size,
            r.rel_err,
            r.tol,
            r.fused_ms,
            r.composite_ms,
            r.composite_ms / r.fused_ms,
            if r.ok() { "yes" } else { "NO" }
        );
    }
}

pub fn info() {
    println!("enlighten {}", env!("CARGO_PKG_VERSION"));
    println!("libtorch: built against tch 0.24 (libtorch 2.11.0)");
    println!(
        "embedded fatbin: {} bytes, {} kernel entry points",
        fatbin().len(),
        Kernel::ALL.len()
    );
    match probe() {
        Ok(info) => {
            let v = info.driver_version;
            println!(
                "CUDA: {} device(s), driver CUDA {}.{}",
                info.device_count,
                v / 1000,
                (v % 1000) / 10
            );
            // Loads (or, without SASS for this architecture, compiles) the kernels once: the
            // line a user needs when a first call is slow or fails.
            match kernels_origin(Device::Cuda(0)) {
                Ok(origin) => println!("kernels on cuda:0: {origin}"),
                Err(e) => println!("kernels on cuda:0: unavailable: {e}"),
            }
        }
        Err(reason) => println!("CUDA: unavailable: {reason}"),
    }
}

//! `enlighten demo`: every op on every available device, checked against its f64 reference and
//! timed against the tch composite, as one table.

use std::time::Instant;

use enlighten::cuda::{fatbin, probe, Kernel};
use enlighten::ops::mixup::{cutmix, mixup, mixup_flip_, mixup_u8, reference, CutBox, CutBoxes, Lambda, Normalize, Pairing};
use enlighten::{Result, SeededRng};
use tch::{Device, Kind, Tensor};

use crate::DeviceChoice;

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

fn tolerance(kind: Kind) -> f64 {
    match kind {
        Kind::Float => 1e-6,
        Kind::Half => 1e-3,
        _ => 8e-3,
    }
}

fn rel_err(out: &Tensor, reference: &Tensor) -> f64 {
    let o = out.to_device(Device::Cpu).to_kind(Kind::Double);
    let r = reference.to_device(Device::Cpu).to_kind(Kind::Double);
    (&o - &r).norm().double_value(&[]) / r.norm().double_value(&[]).max(f64::MIN_POSITIVE)
}

fn sync(device: Device) {
    if let Device::Cuda(i) = device {
        tch::Cuda::synchronize(i as i64);
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
    let mut rows = Vec::new();
    for device in devices(choice)? {
        tch::manual_seed(0);
        rows.extend(mixup_rows(device)?);
    }
    print_table(&rows);
    let failed = rows.iter().filter(|r| !(r.rel_err <= r.tol)).count();
    println!("\n{} passed, {} failed", rows.len() - failed, failed);
    if failed > 0 {
        return Err(enlighten::Error::Value { arg: "demo", expected: "every op within tolerance".into(), got: format!("{failed} failures") });
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
            ("perm, batch lambda", Lambda::Batch(0.37), &perm),
            ("perm, per-sample lambda", per_sample, &perm),
            ("flip, batch lambda", Lambda::Batch(0.37), &Pairing::Flip),
        ] {
            let out = mixup(&x, &lam, pairing)?;
            rows.push(Row {
                op: "mixup",
                variant: variant.into(),
                device,
                kind,
                size: size.clone(),
                rel_err: rel_err(&out, &reference::mixup(&x, &lam, pairing)),
                tol: tolerance(kind),
                fused_ms: median_ms(device, || drop(mixup(&x, &lam, pairing))),
                composite_ms: median_ms(device, || drop(reference::composite(&x, &lam, pairing))),
            });
        }
        let mut inplace = x.copy();
        mixup_flip_(&mut inplace, &Lambda::Batch(0.37))?;
        let mut scratch = x.copy();
        rows.push(Row {
            op: "mixup",
            variant: "flip, in place".into(),
            device,
            kind,
            size: size.clone(),
            rel_err: rel_err(&inplace, &reference::mixup(&x, &Lambda::Batch(0.37), &Pairing::Flip)),
            tol: tolerance(kind),
            fused_ms: median_ms(device, || drop(mixup_flip_(&mut scratch, &Lambda::Batch(0.37)))),
            composite_ms: median_ms(device, || drop(reference::composite_flip_(&mut scratch, 0.37))),
        });
        let boxes = CutBoxes::Batch(CutBox { y0: 4, y1: 20, x0: 9, x1: 30 });
        let (out, _) = cutmix(&x, &boxes, &perm)?;
        rows.push(Row {
            op: "cutmix",
            variant: "perm, batch box".into(),
            device,
            kind,
            size: size.clone(),
            rel_err: rel_err(&out, &reference::cutmix(&x, &boxes, &perm)?),
            tol: 0.0,
            fused_ms: median_ms(device, || drop(cutmix(&x, &boxes, &perm))),
            composite_ms: median_ms(device, || drop(reference::cutmix(&x, &boxes, &perm))),
        });
        let images = Tensor::randint(256, shape, (Kind::Uint8, device));
        let norm = Normalize::new(&[0.49, 0.48, 0.45], &[0.25, 0.24, 0.26], device)?;
        let lam = Lambda::Batch(0.37);
        let out = mixup_u8(&images, &norm, &lam, &perm, kind)?;
        rows.push(Row {
            op: "mixup",
            variant: "u8 -> normalised".into(),
            device,
            kind,
            size: size.clone(),
            rel_err: rel_err(&out, &reference::mixup_u8(&images, &norm, &lam, &perm)),
            tol: tolerance(kind),
            fused_ms: median_ms(device, || drop(mixup_u8(&images, &norm, &lam, &perm, kind))),
            composite_ms: median_ms(device, || drop(reference::mixup_u8(&images, &norm, &lam, &perm).to_kind(kind))),
        });
    }
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
            if r.rel_err <= r.tol { "yes" } else { "NO" }
        );
    }
}

pub fn info() {
    println!("enlighten {}", env!("CARGO_PKG_VERSION"));
    println!("libtorch: built against tch 0.24 (libtorch 2.11.0)");
    println!("embedded fatbin: {} bytes, {} kernel entry points", fatbin().len(), Kernel::ALL.len());
    match probe() {
        Ok(info) => {
            let v = info.driver_version;
            println!("CUDA: {} device(s), driver CUDA {}.{}", info.device_count, v / 1000, (v % 1000) / 10);
        }
        Err(reason) => println!("CUDA: unavailable: {reason}"),
    }
}

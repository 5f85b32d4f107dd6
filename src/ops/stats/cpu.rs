//! The fused CPU paths of kernels/stats.cu, over contiguous slices.

use half::{bf16, f16};
use tch::{Kind, Tensor};

use super::Accumulate;
use crate::error::Result;
use crate::ops::element::{cpu_slice, cpu_slice_mut, Element};
use crate::ops::parallel;

/// Zero counts `[L, B]` and, with `alive`, the dead-unit flags (one u8 per unit and layer).
pub(super) fn zero_counts(layers: &[Tensor], batch: i64, eps: Option<f64>, alive: Option<&[Tensor]>) -> Result<Tensor> {
    let b = batch as usize;
    let mut counts = vec![0i64; layers.len() * b];
    for (l, t) in layers.iter().enumerate() {
        let mut flags = alive.map(|a| a[l].shallow_clone());
        let flags_slice = flags.as_mut().map(|f| crate::ops::element::cpu_bytes_mut(f));
        let out = &mut counts[l * b..(l + 1) * b];
        match t.kind() {
            Kind::Float => layer_counts::<f32>(t, eps, out, flags_slice),
            Kind::Half => layer_counts::<f16>(t, eps, out, flags_slice),
            _ => layer_counts::<bf16>(t, eps, out, flags_slice),
        }
    }
    Ok(Tensor::from_slice(&counts).view([layers.len() as i64, batch]))
}

fn layer_counts<T: Element>(t: &Tensor, eps: Option<f64>, out: &mut [i64], flags: Option<&mut [u8]>) {
    let x = cpu_slice::<T>(t);
    let b = out.len();
    let per_sample = x.len() / b;
    let units = t.size()[1] as usize;
    let inner = per_sample / units;
    let eps = eps.map(|e| e as f32);
    let is_zero = |v: f32| match eps {
        Some(e) => v.abs() <= e,
        None => v == 0.0,
    };
    parallel::rows(b, per_sample, out, 1, |range, out| {
        for (k, i) in range.enumerate() {
            let row = &x[i * per_sample..(i + 1) * per_sample];
            out[k] = row.iter().filter(|v| is_zero(v.to_f32())).count() as i64;
        }
    });
    // Dead units: one pass per unit block, stopping at the first non-zero value.
    if let Some(flags) = flags {
        for (u, flag) in flags.iter_mut().enumerate().filter(|(_, f)| **f == 0) {
            let alive = (0..b).any(|i| {
                let start = i * per_sample + u * inner;
                x[start..start + inner].iter().any(|v| {
                    let f = v.to_f32();
                    !is_zero(f) && !f.is_nan()
                })
            });
            *flag = alive as u8;
        }
    }
}

pub(super) fn dot_norms(a: &[Tensor], b: &[Tensor], acc: Accumulate) -> Result<Tensor> {
    let mut sums = [0f64; 3];
    for (x, y) in a.iter().zip(b) {
        let s = match x.kind() {
            Kind::Float => pair_sums::<f32>(x, y, acc),
            Kind::Half => pair_sums::<f16>(x, y, acc),
            _ => pair_sums::<bf16>(x, y, acc),
        };
        for j in 0..3 {
            sums[j] += s[j];
        }
    }
    Ok(Tensor::from_slice(&sums))
}

fn pair_sums<T: Element>(x: &Tensor, y: &Tensor, acc: Accumulate) -> [f64; 3] {
    let (xs, ys) = (cpu_slice::<T>(x), cpu_slice::<T>(y));
    match acc {
        Accumulate::F64 => xs.iter().zip(ys).fold([0f64; 3], |s, (a, b)| {
            let (a, b) = (a.to_f32() as f64, b.to_f32() as f64);
            [s[0] + a * b, s[1] + a * a, s[2] + b * b]
        }),
        Accumulate::F32 => {
            let s = xs.iter().zip(ys).fold([0f32; 3], |s, (a, b)| {
                let (a, b) = (a.to_f32(), b.to_f32());
                [s[0] + a * b, s[1] + a * a, s[2] + b * b]
            });
            [s[0] as f64, s[1] as f64, s[2] as f64]
        }
    }
}

pub(super) fn diff_sq(a: &[Tensor], b: &[Tensor], copy: bool) -> Result<Tensor> {
    let mut total = 0f64;
    for (x, y) in a.iter().zip(b) {
        let mut y = y.shallow_clone();
        total += match x.kind() {
            Kind::Float => pair_diff::<f32>(x, &mut y, copy),
            Kind::Half => pair_diff::<f16>(x, &mut y, copy),
            _ => pair_diff::<bf16>(x, &mut y, copy),
        };
    }
    Ok(Tensor::from(total))
}

fn pair_diff<T: Element>(x: &Tensor, y: &mut Tensor, copy: bool) -> f64 {
    let xs = cpu_slice::<T>(x);
    let ys = cpu_slice_mut::<T>(y);
    let s = xs.iter().zip(ys.iter()).map(|(a, b)| {
        let d = a.to_f32() as f64 - b.to_f32() as f64;
        d * d
    }).sum();
    if copy {
        ys.copy_from_slice(xs);
    }
    s
}

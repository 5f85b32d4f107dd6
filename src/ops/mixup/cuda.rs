//! Launches of kernels/mixup.cu. Argument order follows each kernel's parameter list.

use tch::Tensor;

use super::{CutBoxes, Lambda, Normalize, Pairing};
use crate::cuda::constants::{MIXUP_ROLL_RUN, PAIR_FLIP, PAIR_PERM, PAIR_ROLL};
use crate::cuda::{aligned, pack_len, packable, row_lanes, Grid, Kernel, Launch, BLOCK};
use crate::error::Result;

fn rows_of(x: &Tensor) -> (i64, i64) {
    let b = x.size()[0];
    (b, x.numel() as i64 / b)
}

/// (per-sample lambda tensor, batch lambda, 1 - batch lambda computed in f64 then rounded).
fn lambda_args(lam: &Lambda) -> (Option<&Tensor>, f32, f32) {
    match lam {
        Lambda::Batch(l) => (None, *l as f32, (1.0 - *l) as f32),
        Lambda::PerSample(t) => (Some(t), 0.0, 0.0),
    }
}

fn pairing_args(pairing: &Pairing) -> (i32, Option<&Tensor>, i64) {
    match pairing {
        Pairing::Permutation(p) => (PAIR_PERM, Some(p), 0),
        Pairing::Flip => (PAIR_FLIP, None, 0),
        Pairing::Roll(k) => (PAIR_ROLL, None, *k),
    }
}

/// The parameters every out-of-place mixing kernel starts with:
/// x, out, perm, lam_vec, lam, 1 - lam, pair_mode, shift, B, F.
fn mix_args(kernel: Kernel, x: &Tensor, out: &Tensor, lam: &Lambda, pairing: &Pairing) -> Result<Launch> {
    let (b, f) = rows_of(x);
    let (lam_vec, l, om) = lambda_args(lam);
    let (mode, perm, shift) = pairing_args(pairing);
    Ok(Launch::new(kernel)
        .input("x", x)?
        .output("out", out)?
        .optional_input("perm", perm)?
        .optional_input("lam", lam_vec)?
        .f32(l)
        .f32(om)
        .i32(mode)
        .i64(shift)
        .i64(b)
        .i64(f))
}

/// The mixup kernel's work items over rows (kernels/mixup.cu, `mixup_any`): a pair of rows for
/// flip, a run of up to MIXUP_ROLL_RUN rows of one roll cycle, a row for a permutation.
fn mixup_items(b: i64, pairing: &Pairing) -> i64 {
    match pairing {
        Pairing::Permutation(_) => b,
        Pairing::Flip => (b + 1) / 2,
        Pairing::Roll(k) => {
            let cycles = gcd(b, k.rem_euclid(b));
            let run = i64::from(MIXUP_ROLL_RUN);
            cycles * ((b / cycles + run - 1) / run)
        }
    }
}

fn gcd(a: i64, b: i64) -> i64 {
    if b == 0 {
        a
    } else {
        gcd(b, a % b)
    }
}

pub(in crate::ops) fn mixup(x: &Tensor, lam: &Lambda, pairing: &Pairing, out: &Tensor) -> Result<()> {
    let (b, f) = rows_of(x);
    let n = pack_len(x.kind());
    let vectorized = packable(f, n, &[x, out]);
    let kernel = Kernel::for_dtype(x.kind(), [Kernel::MIXUP_F32, Kernel::MIXUP_F16, Kernel::MIXUP_BF16]);
    mix_args(kernel, x, out, lam, pairing)?
        .i32(vectorized as i32)
        .run(Grid::RowsAndPacks {
            rows: mixup_items(b, pairing),
            packs_per_row: if vectorized { f / n } else { f },
        })
}

pub(in crate::ops) fn mixup_flip_inplace(x: &Tensor, lam: &Lambda) -> Result<()> {
    let (b, f) = rows_of(x);
    let n = pack_len(x.kind());
    let vectorized = packable(f, n, &[x]);
    let (lam_vec, l, om) = lambda_args(lam);
    let kernel = Kernel::for_dtype(
        x.kind(),
        [
            Kernel::MIXUP_FLIP_INPLACE_F32,
            Kernel::MIXUP_FLIP_INPLACE_F16,
            Kernel::MIXUP_FLIP_INPLACE_BF16,
        ],
    );
    Launch::new(kernel)
        .inout("x", x)?
        .optional_input("lam", lam_vec)?
        .f32(l)
        .f32(om)
        .i64(b)
        .i64(f)
        .i32(vectorized as i32)
        .run(Grid::RowsAndPacks {
            rows: (b + 1) / 2,
            packs_per_row: if vectorized { f / n } else { f },
        })
}

pub(in crate::ops) fn mixup_u8(
    x: &Tensor,
    norm: &Normalize,
    lam: &Lambda,
    pairing: &Pairing,
    out: &Tensor,
) -> Result<()> {
    let (b, f) = rows_of(x);
    let inner = f / norm.channels() as i64;
    // u8 packs of 4 (one 32-bit load) write 4 outputs; the packs must not straddle channels.
    const N: i64 = 4;
    let vectorized = inner % N == 0 && packable(f, N, &[x, out]);
    let kernel = Kernel::for_dtype(
        out.kind(),
        [Kernel::MIXUP_U8_F32, Kernel::MIXUP_U8_F16, Kernel::MIXUP_U8_BF16],
    );
    mix_args(kernel, x, out, lam, pairing)?
        .input("norm.scale", &norm.scale)?
        .input("norm.bias", &norm.bias)?
        .i64(inner)
        .i32(vectorized as i32)
        .run(Grid::RowsAndPacks {
            rows: b,
            packs_per_row: if vectorized { f / N } else { f },
        })
}

pub(in crate::ops) fn cutmix(x: &Tensor, boxes: &CutBoxes, pairing: &Pairing, out: &Tensor) -> Result<()> {
    let size = x.size();
    let (b, f) = rows_of(x);
    let (h, w) = (size[size.len() - 2], size[size.len() - 1]);
    let (mode, perm, shift) = pairing_args(pairing);
    // A row's packs, plus one for a box run's ragged ends: the lanes of one row's group.
    let vectorized = aligned(&[x, out]);
    let packs_per_row = if vectorized {
        (w + pack_len(x.kind()) - 1) / pack_len(x.kind()) + 1
    } else {
        w
    };
    let lanes = row_lanes(packs_per_row, BLOCK);
    let (box_tensor, bx) = match boxes {
        CutBoxes::Batch(bx) => (None, [bx.y0, bx.y1, bx.x0, bx.x1]),
        CutBoxes::PerSample(t) => (Some(t), [0; 4]),
    };
    Launch::new(Kernel::for_dtype(
        x.kind(),
        [Kernel::CUTMIX_F32, Kernel::CUTMIX_F16, Kernel::CUTMIX_BF16],
    ))
    .input("x", x)?
    .output("out", out)?
    .optional_input("perm", perm)?
    .i32(mode)
    .i64(shift)
    .optional_input("boxes", box_tensor)?
    .i64(bx[0])
    .i64(bx[1])
    .i64(bx[2])
    .i64(bx[3])
    .i64(b)
    .i64(f / (h * w))
    .i64(h)
    .i64(w)
    .i32(vectorized as i32)
    .i32(lanes as i32)
    .run(Grid::RowGroups {
        rows: b * (f / w),
        lanes,
        packs_per_row,
    })
}

//! Launches of kernels/stats.cu. Each list of tensors becomes a small int64 table (pointers,
//! sizes, dtype codes) copied to the device, so one launch covers every tensor. The pointers are
//! taken through the launch ([`Launch::pointer`]), which checks each tensor and, emulated,
//! stages it like a direct argument.

use tch::{Device, Kind, Tensor};

use crate::cuda::constants::{DT_BF16, DT_F16, DT_F32, MT_COLS, ZC_COLS};
use crate::cuda::{Access, Grid, Kernel, Launch};
use crate::error::Result;

const THREADS: u32 = 256;
/// Elements per work item of the multi-tensor kernels (a multiple of 8, the f16/bf16 pack): small
/// enough that a ResNet18's 11M parameters make about 700 items, several blocks per SM.
const CHUNK: i64 = 1 << 14;
/// Blocks of the multi-tensor kernels (grid-stride over work items).
const MAX_BLOCKS: i64 = 1024;
/// Elements of a zero-count work item (a multiple of 8, the f16/bf16 pack): 32 KB of f32, 8
/// packs a thread; ResNet18's 17 ReLU outputs make 36 items a sample.
const ZC_CHUNK: i64 = 1 << 13;
// Work items start on a whole 8-value pack (the multi-tensor kernels rely on it).
const _: () = assert!(CHUNK % 8 == 0 && ZC_CHUNK % 8 == 0);

fn dtype_code(kind: Kind) -> i64 {
    i64::from(match kind {
        Kind::Float => DT_F32,
        Kind::Half => DT_F16,
        _ => DT_BF16,
    })
}

/// The zero-count kernels' `eps` argument: the exact f32 threshold, or -1 for exact zeros.
fn kernel_eps(eps: Option<f64>) -> f32 {
    eps.map_or(-1.0, super::f32_threshold)
}

fn table(rows: &[i64], cols: i32, device: Device) -> Tensor {
    crate::cuda::upload(rows, device).view([-1, i64::from(cols)])
}

pub(in crate::ops) fn zero_counts(
    layers: &[Tensor],
    batch: i64,
    eps: Option<f64>,
    alive: Option<&[Tensor]>,
) -> Result<Tensor> {
    let device = layers[0].device();
    // Counts alone go over the whole grid; with dead-unit flags, a block a row (its units' bits
    // gathered in shared memory).
    let mut launch = Launch::new(match alive {
        Some(_) => Kernel::ZERO_COUNTS,
        None => Kernel::ZERO_COUNTS_CHUNKED,
    });
    let mut rows = Vec::with_capacity(layers.len() * ZC_COLS as usize);
    for (l, t) in layers.iter().enumerate() {
        let size = t.size();
        let per_sample = t.numel() as i64 / batch;
        let units = size[1];
        let flags = match alive {
            Some(a) => launch.pointer("alive", &a[l], Access::ReadWrite)?,
            None => 0,
        };
        let ptr = launch.pointer("layers", t, Access::Read)?;
        rows.extend([
            ptr,
            batch,
            per_sample,
            dtype_code(t.kind()),
            per_sample / units,
            units,
            flags,
        ]);
    }
    let table = table(&rows, ZC_COLS, device);
    if alive.is_none() {
        return counts_chunked(launch, layers, batch, eps, &table);
    }
    let counts = Tensor::empty([layers.len() as i64, batch], (Kind::Int64, device));
    launch
        .input("table", &table)?
        .i64(layers.len() as i64)
        .i64(batch)
        .f32(kernel_eps(eps))
        .output("counts", &counts)?
        .run(Grid::BlockPerRow {
            rows: layers.len() as i64 * batch,
            threads: THREADS,
        })?;
    // The table's pointers must stay valid until the kernel has run: the layers are borrowed by
    // the caller, and the table itself is freed by the caching allocator in stream order.
    Ok(counts)
}

/// The counts alone (no dead-unit flags) by `zero_counts_chunked`: every row split into chunks of
/// [`ZC_CHUNK`] over the whole grid, 16-byte loads, the chunks' counts added atomically into
/// zeros. `launch` holds the layers' pointers, taken for `table`.
fn counts_chunked(launch: Launch, layers: &[Tensor], batch: i64, eps: Option<f64>, table: &Tensor) -> Result<Tensor> {
    let device = layers[0].device();
    let mut starts = Vec::with_capacity(layers.len());
    let mut items = 0i64;
    for t in layers {
        starts.push(items);
        items += batch * ((t.numel() as i64 / batch + ZC_CHUNK - 1) / ZC_CHUNK);
    }
    let starts = crate::cuda::upload(&starts, device);
    let counts = Tensor::zeros([layers.len() as i64, batch], (Kind::Int64, device));
    launch
        .input("table", table)?
        .input("starts", &starts)?
        .i64(layers.len() as i64)
        .i64(items)
        .i64(batch)
        .i64(ZC_CHUNK)
        .f32(kernel_eps(eps))
        .inout("counts", &counts)?
        .run(Grid::BlockPerRow {
            rows: items,
            threads: THREADS,
        })?;
    Ok(counts)
}

fn sum_partials(partials: &Tensor, blocks: i64) -> Result<Tensor> {
    let out = Tensor::empty([3], (Kind::Double, partials.device()));
    Launch::new(Kernel::PARTIALS_SUM)
        .input("partials", partials)?
        .i64(blocks)
        .output("out", &out)?
        .run(Grid::SingleBlock { threads: THREADS })?;
    Ok(out)
}

/// A multi-tensor kernel over pairs (a_i, b_i): the table (a_ptr, b_ptr, numel, dtype) and the
/// first work item of each tensor, pushed as the parameters every such kernel starts with
/// (table, starts, tensors, items, chunk); then the kernel's own arguments, the per-block
/// partials, and their sum.
fn multi_tensor(
    kernel: Kernel,
    a: &[Tensor],
    b: &[Tensor],
    b_access: Access,
    extra: impl FnOnce(Launch) -> Launch,
) -> Result<Tensor> {
    let device = a[0].device();
    let mut launch = Launch::new(kernel);
    let mut rows = Vec::with_capacity(a.len() * MT_COLS as usize);
    let mut starts = Vec::with_capacity(a.len());
    let mut items = 0i64;
    for (x, y) in a.iter().zip(b) {
        let n = x.numel() as i64;
        let (px, py) = (launch.pointer("a", x, Access::Read)?, launch.pointer("b", y, b_access)?);
        rows.extend([px, py, n, dtype_code(x.kind())]);
        starts.push(items);
        items += (n + CHUNK - 1) / CHUNK;
    }
    let (table, starts) = (table(&rows, MT_COLS, device), crate::cuda::upload(&starts, device));
    let blocks = items.clamp(1, MAX_BLOCKS);
    let partials = Tensor::empty([3 * blocks], (Kind::Double, device));
    let launch = launch
        .input("table", &table)?
        .input("starts", &starts)?
        .i64(a.len() as i64)
        .i64(items)
        .i64(CHUNK);
    extra(launch).output("partials", &partials)?.run(Grid::Blocks {
        blocks: blocks as u32,
        threads: THREADS,
    })?;
    sum_partials(&partials, blocks)
}

pub(in crate::ops) fn dot_norms(a: &[Tensor], b: &[Tensor]) -> Result<Tensor> {
    multi_tensor(Kernel::MULTI_DOT, a, b, Access::Read, |l| l)
}

pub(in crate::ops) fn diff_sq(a: &[Tensor], b: &[Tensor], copy: bool) -> Result<Tensor> {
    let b_access = if copy { Access::ReadWrite } else { Access::Read };
    Ok(multi_tensor(Kernel::MULTI_DIFF_SQ, a, b, b_access, |l| l.i32(copy as i32))?.get(0))
}

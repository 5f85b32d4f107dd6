//! Launches of kernels/stats.cu. Each list of tensors becomes a small int64 table (pointers,
//! sizes, dtype codes) copied to the device, so one launch covers every tensor.

use tch::{Device, Kind, Tensor};

use crate::cuda::{Grid, Kernel, Launch};
use crate::error::{Error, Result};

const THREADS: u32 = 256;
/// Elements per work item of the multi-tensor kernels.
const CHUNK: i64 = 1 << 16;
/// Blocks of the multi-tensor kernels (grid-stride over work items).
const MAX_BLOCKS: i64 = 1024;

fn dtype_code(kind: Kind) -> i64 {
    match kind {
        Kind::Float => 0,
        Kind::Half => 1,
        _ => 2,
    }
}

fn ordinal(t: &Tensor) -> Result<usize> {
    match t.device() {
        Device::Cuda(o) => Ok(o),
        other => Err(Error::Device { arg: "tensors", expected: "a CUDA device".into(), got: other }),
    }
}

fn table(rows: &[i64], cols: i64, device: Device) -> Tensor {
    Tensor::from_slice(rows).view([-1, cols]).to_device(device)
}

pub(super) fn zero_counts(layers: &[Tensor], batch: i64, eps: Option<f64>, alive: Option<&[Tensor]>) -> Result<Tensor> {
    let device = layers[0].device();
    ordinal(&layers[0])?;
    let mut rows = Vec::with_capacity(layers.len() * 7);
    for (l, t) in layers.iter().enumerate() {
        let size = t.size();
        let per_sample = t.numel() as i64 / batch;
        let units = size[1];
        let flags = alive.map(|a| a[l].data_ptr() as i64).unwrap_or(0);
        rows.extend([t.data_ptr() as i64, batch, per_sample, dtype_code(t.kind()), per_sample / units, units, flags]);
    }
    let table = table(&rows, 7, device);
    let counts = Tensor::empty([layers.len() as i64, batch], (Kind::Int64, device));
    Launch::new(Kernel::ZERO_COUNTS)
        .tensor("table", &table)?
        .i64(layers.len() as i64)
        .i64(batch)
        .f32(eps.map(|e| e as f32).unwrap_or(-1.0))
        .tensor("counts", &counts)?
        .run(Grid::BlockPerRow { rows: layers.len() as i64 * batch, threads: THREADS })?;
    // The table's pointers must stay valid until the kernel has run: the layers are borrowed by
    // the caller, and the table itself is freed by the caching allocator in stream order.
    Ok(counts)
}

/// (table, starts, items) of the multi-tensor kernels over pairs (a_i, b_i).
fn pair_table(a: &[Tensor], b: &[Tensor]) -> (Tensor, Tensor, i64) {
    let device = a[0].device();
    let mut rows = Vec::with_capacity(a.len() * 4);
    let mut starts = Vec::with_capacity(a.len());
    let mut items = 0i64;
    for (x, y) in a.iter().zip(b) {
        let n = x.numel() as i64;
        rows.extend([x.data_ptr() as i64, y.data_ptr() as i64, n, dtype_code(x.kind())]);
        starts.push(items);
        items += (n + CHUNK - 1) / CHUNK;
    }
    (table(&rows, 4, device), Tensor::from_slice(&starts).to_device(device), items)
}

fn sum_partials(partials: &Tensor, blocks: i64) -> Result<Tensor> {
    let out = Tensor::empty([3], (Kind::Double, partials.device()));
    Launch::new(Kernel::PARTIALS_SUM)
        .tensor("partials", partials)?
        .i64(blocks)
        .tensor("out", &out)?
        .run(Grid::SingleBlock { threads: THREADS })?;
    Ok(out)
}

/// A multi-tensor kernel's launch over pairs (a_i, b_i), with the parameters they all start with
/// (table, starts, tensors, items, chunk) pushed, and its per-block partials.
struct MultiTensor {
    launch: Launch,
    partials: Tensor,
    blocks: i64,
    /// The launch holds only the table's and starts' device pointers: they must live until the
    /// kernel has been launched (the caching allocator frees in stream order after that).
    _table: Tensor,
    _starts: Tensor,
}

impl MultiTensor {
    fn new(kernel: Kernel, a: &[Tensor], b: &[Tensor]) -> Result<MultiTensor> {
        ordinal(&a[0])?;
        let (table, starts, items) = pair_table(a, b);
        let blocks = items.clamp(1, MAX_BLOCKS);
        let partials = Tensor::empty([3 * blocks], (Kind::Double, a[0].device()));
        let launch = Launch::new(kernel).tensor("table", &table)?.tensor("starts", &starts)?.i64(a.len() as i64).i64(items).i64(CHUNK);
        Ok(MultiTensor { launch, partials, blocks, _table: table, _starts: starts })
    }

    /// Pushes the partials (after any kernel-specific arguments), launches, sums the partials.
    fn run(self, extra: impl FnOnce(Launch) -> Launch) -> Result<Tensor> {
        extra(self.launch).tensor("partials", &self.partials)?.run(Grid::Blocks { blocks: self.blocks as u32, threads: THREADS })?;
        sum_partials(&self.partials, self.blocks)
    }
}

pub(super) fn dot_norms(a: &[Tensor], b: &[Tensor]) -> Result<Tensor> {
    MultiTensor::new(Kernel::MULTI_DOT, a, b)?.run(|l| l)
}

pub(super) fn diff_sq(a: &[Tensor], b: &[Tensor], copy: bool) -> Result<Tensor> {
    Ok(MultiTensor::new(Kernel::MULTI_DIFF_SQ, a, b)?.run(|l| l.i32(copy as i32))?.get(0))
}

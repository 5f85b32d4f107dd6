//! A background thread that gathers the next training batches (the epoch's seeded order, rows
//! selected on the CPU) while the current step runs. The order depends only on the seed, the
//! epoch and the step, so a prefetched run is the same run as one gathered in place. Image
//! folders' batches are decoded here by the pipeline's workers (each sample's crop seeded by the
//! run's seed and its position in the run), so the thread is the bounded prefetch queue.
//!
//! Each batch leaves here on the training device: on CUDA pinned and copied without blocking
//! ([`enlighten::cuda::to_device_async`]), on the prefetch thread's current stream, the device's
//! default stream, which is the one the training step runs on (the trainer never makes another
//! current), so the step's kernels are queued after the copy and the host never waits for it.
//!
//! Data parallelism shards the epoch's order as PyTorch's `DistributedSampler` does: the order
//! is the same on every rank, padded to a multiple of the world size with its own first rows,
//! and rank r takes every world-th row from the r-th. Step s of every rank then covers rows
//! `s W B .. (s + 1) W B` of the padded order between them: the global batch is defined by the
//! order alone, whatever the world size.

use std::sync::mpsc::{self, Receiver};
use std::sync::Arc;
use std::thread;

use tch::{Device, Tensor};

use super::task::Part;
use crate::data::{sample_seed, ImageSource};
use crate::error::Result;
use enlighten::cuda::to_device_async;
use enlighten::SeededRng;

/// Where the batches of a run come from.
#[derive(Debug, Clone, Copy)]
pub(crate) struct BatchOrder {
    pub seed: u64,
    /// Rows per step of this rank.
    pub batch: i64,
    pub per_epoch: u64,
    /// This process's shard of each epoch: rank `rank` of `world`.
    pub rank: usize,
    pub world: usize,
}

/// Rows of each rank's shard of an epoch of `n` rows: `ceil(n / world)` (the order is padded).
pub(crate) fn shard_len(n: i64, world: usize) -> i64 {
    let world = world.max(1) as i64;
    (n + world - 1) / world
}

/// `DistributedSampler`'s split (without `drop_last`): `order` padded to a multiple of `world`
/// by repeating it from its start, then every `world`-th row from row `rank`.
pub(crate) fn shard(order: &[i64], rank: usize, world: usize) -> Vec<i64> {
    let world = world.max(1);
    let total = shard_len(order.len() as i64, world) as usize * world;
    order
        .iter()
        .cycle()
        .take(total)
        .skip(rank)
        .step_by(world)
        .copied()
        .collect()
}

impl BatchOrder {
    /// This rank's rows of one epoch: the shard of a permutation from the run's seed and the
    /// epoch number (one permutation for all ranks).
    fn epoch(&self, epoch: u64, n: usize) -> Vec<i64> {
        let order = SeededRng::new(self.seed.wrapping_mul(0x9E37_79B9).wrapping_add(epoch + 1)).permutation(n);
        if self.world <= 1 {
            return order;
        }
        shard(&order, self.rank, self.world)
    }

    /// The position in the run of row `k` of step `step`'s batch on this rank, counted over
    /// the global batches (the image pipeline seeds each sample's crop by it).
    fn position(&self, step: u64, k: u64) -> u64 {
        let world = self.world.max(1) as u64;
        (step * self.batch as u64 + k) * world + self.rank as u64
    }
}

/// Yields the (inputs, targets) of steps `start..end` in order.
pub(crate) enum Batches {
    Inline {
        part: Part,
        stream: Option<Arc<ImageSource>>,
        order: BatchOrder,
        device: Device,
        cached: EpochRows,
        step: u64,
    },
    Prefetched(Receiver<Result<(Tensor, Tensor)>>),
}

/// The data order of the epoch last gathered from.
pub(crate) struct EpochRows {
    epoch: u64,
    rows: Vec<i64>,
}

impl EpochRows {
    /// No epoch yet: the first gather computes one.
    fn none() -> EpochRows {
        EpochRows {
            epoch: u64::MAX,
            rows: Vec::new(),
        }
    }
}

/// Step `step`'s batch on `device`, copied there without blocking the host.
fn gather_to(
    part: &Part,
    stream: Option<&Arc<ImageSource>>,
    order: &BatchOrder,
    device: Device,
    cached: &mut EpochRows,
    step: u64,
) -> Result<(Tensor, Tensor)> {
    let (x, y) = gather(part, stream, order, cached, step)?;
    Ok((to_device_async(&x, device)?, to_device_async(&y, device)?))
}

/// Step `step`'s batch on the host.
fn gather(
    part: &Part,
    stream: Option<&Arc<ImageSource>>,
    order: &BatchOrder,
    cached: &mut EpochRows,
    step: u64,
) -> Result<(Tensor, Tensor)> {
    let epoch = step / order.per_epoch;
    if cached.epoch != epoch {
        *cached = EpochRows {
            epoch,
            rows: order.epoch(epoch, part.len() as usize),
        };
    }
    let rows = &cached.rows;
    let pos = (step % order.per_epoch) as usize * order.batch as usize;
    let rows = &rows[pos..pos + order.batch as usize];
    if let Some(source) = stream {
        let seeds: Vec<u64> = (0..rows.len() as u64)
            .map(|k| sample_seed(order.seed, order.position(step, k)))
            .collect();
        return source.batch(rows, &seeds);
    }
    let idx = Tensor::from_slice(rows);
    Ok((part.inputs.index_select(0, &idx), part.targets.index_select(0, &idx)))
}

impl Batches {
    /// `depth` batches ahead on a thread, or in place when `depth` is 0; decoded by `stream`
    /// (image folders) or gathered from `part`, and copied to `device` without blocking.
    pub fn new(
        part: &Part,
        stream: Option<Arc<ImageSource>>,
        (order, device): (BatchOrder, Device),
        start: u64,
        end: u64,
        depth: usize,
    ) -> Batches {
        if depth == 0 {
            return Batches::Inline {
                part: part.shallow_clone(),
                stream,
                order,
                device,
                cached: EpochRows::none(),
                step: start,
            };
        }
        let (tx, rx) = mpsc::sync_channel(depth);
        let part = part.shallow_clone();
        thread::spawn(move || {
            let mut cached = EpochRows::none();
            for step in start..end {
                // The receiver is gone when the run stopped early: nothing more to do.
                if tx
                    .send(gather_to(&part, stream.as_ref(), &order, device, &mut cached, step))
                    .is_err()
                {
                    break;
                }
            }
        });
        Batches::Prefetched(rx)
    }

    /// The next step's batch, on the device (an error for an unreadable image); None when the
    /// prefetch thread has ended.
    pub fn next(&mut self) -> Option<Result<(Tensor, Tensor)>> {
        match self {
            Batches::Inline {
                part,
                stream,
                order,
                device,
                cached,
                step,
            } => {
                let b = gather_to(part, stream.as_ref(), order, *device, cached, *step);
                *step += 1;
                Some(b)
            }
            Batches::Prefetched(rx) => rx.recv().ok(),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::{shard, shard_len, BatchOrder};

    fn order(batch: i64, per_epoch: u64, rank: usize, world: usize) -> BatchOrder {
        BatchOrder {
            seed: 7,
            batch,
            per_epoch,
            rank,
            world,
        }
    }

    #[test]
    fn shards_pad_and_interleave_like_distributed_sampler() {
        // torch.utils.data.DistributedSampler(range(10), num_replicas=4, shuffle=False): the
        // order padded with its first two rows, then rank r takes r, r + 4, r + 8.
        let order: Vec<i64> = (0..10).collect();
        let expected = [[0, 4, 8], [1, 5, 9], [2, 6, 0], [3, 7, 1]];
        for (rank, rows) in expected.iter().enumerate() {
            assert_eq!(shard(&order, rank, 4), rows);
        }
        assert_eq!(shard_len(10, 4), 3);
        assert_eq!(shard(&order, 0, 1), order, "one rank takes the order as it is");
        // Fewer rows than ranks: the order repeats as often as needed.
        assert_eq!(shard(&[5, 6], 2, 3), [5]);
        assert_eq!(shard(&[5, 6], 1, 3), [6]);
        assert_eq!(shard(&[5, 6, 7], 0, 8), [5]);
        assert_eq!(shard(&[5, 6, 7], 7, 8), [6]);
    }

    #[test]
    fn every_rank_shares_one_order_and_the_global_batch_is_a_contiguous_chunk() {
        let n = 103;
        let (batch, world) = (4i64, 3usize);
        let per_epoch = (shard_len(n, world) / batch) as u64;
        let one = order(batch * world as i64, per_epoch, 0, 1);
        for epoch in 0..3 {
            let whole = one.epoch(epoch, n as usize);
            let shards: Vec<Vec<i64>> = (0..world)
                .map(|r| order(batch, per_epoch, r, world).epoch(epoch, n as usize))
                .collect();
            for s in 0..per_epoch as usize {
                let mut global: Vec<i64> = shards
                    .iter()
                    .flat_map(|rows| rows[s * batch as usize..(s + 1) * batch as usize].to_vec())
                    .collect();
                let g = (batch as usize) * world;
                let mut chunk = whole[s * g..(s + 1) * g].to_vec();
                global.sort();
                chunk.sort();
                assert_eq!(global, chunk, "epoch {epoch} step {s}");
            }
        }
        // Other epochs, other orders.
        assert_ne!(one.epoch(0, n as usize), one.epoch(1, n as usize));
    }

    #[test]
    fn sample_positions_count_over_the_global_batches() {
        // One rank at batch 8 and two at batch 4 give each row of a global batch one position.
        let one = order(8, 10, 0, 1);
        let mut two: Vec<u64> = (0..2)
            .flat_map(|r| (0..4).map(move |k| order(4, 10, r, 2).position(3, k)))
            .collect();
        two.sort();
        let single: Vec<u64> = (0..8).map(|k| one.position(3, k)).collect();
        assert_eq!(two, single);
    }
}

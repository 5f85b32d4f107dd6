//! A background thread that gathers the next training batches (the epoch's seeded order, rows
//! selected on the CPU) while the current step runs. The order depends only on the seed, the
//! epoch and the step, so a prefetched run is the same run as one gathered in place. Image
//! folders' batches are decoded here by the pipeline's workers (each sample's crop seeded by the
//! run's seed and its position in the run), so the thread is the bounded prefetch queue.

use std::sync::mpsc::{self, Receiver};
use std::sync::Arc;
use std::thread;

use tch::Tensor;

use super::task::Part;
use crate::data::{sample_seed, ImageSource};
use crate::error::Result;
use crate::rng::SeededRng;

/// Where the batches of a run come from.
#[derive(Debug, Clone, Copy)]
pub(crate) struct BatchOrder {
    pub seed: u64,
    pub batch: i64,
    pub per_epoch: u64,
}

impl BatchOrder {
    /// The data order of one epoch: a permutation from the run's seed and the epoch number.
    fn epoch(&self, epoch: u64, n: usize) -> Vec<i64> {
        SeededRng::new(self.seed.wrapping_mul(0x9E37_79B9).wrapping_add(epoch + 1)).permutation(n)
    }
}

/// Yields the (inputs, targets) of steps `start..end` in order.
pub(crate) enum Batches {
    Inline {
        part: Part,
        stream: Option<Arc<ImageSource>>,
        order: BatchOrder,
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
        let first = step * order.batch as u64;
        let seeds: Vec<u64> = (0..rows.len() as u64)
            .map(|k| sample_seed(order.seed, first + k))
            .collect();
        return source.batch(rows, &seeds);
    }
    let idx = Tensor::from_slice(rows);
    Ok((part.inputs.index_select(0, &idx), part.targets.index_select(0, &idx)))
}

impl Batches {
    /// `depth` batches ahead on a thread, or in place when `depth` is 0; decoded by `stream`
    /// (image folders) or gathered from `part`.
    pub fn new(
        part: &Part,
        stream: Option<Arc<ImageSource>>,
        order: BatchOrder,
        start: u64,
        end: u64,
        depth: usize,
    ) -> Batches {
        if depth == 0 {
            return Batches::Inline {
                part: part.shallow_clone(),
                stream,
                order,
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
                    .send(gather(&part, stream.as_ref(), &order, &mut cached, step))
                    .is_err()
                {
                    break;
                }
            }
        });
        Batches::Prefetched(rx)
    }

    /// The next step's batch (an error for an unreadable image); None when the prefetch thread
    /// has ended.
    pub fn next(&mut self) -> Option<Result<(Tensor, Tensor)>> {
        match self {
            Batches::Inline {
                part,
                stream,
                order,
                cached,
                step,
            } => {
                let b = gather(part, stream.as_ref(), order, cached, *step);
                *step += 1;
                Some(b)
            }
            Batches::Prefetched(rx) => rx.recv().ok(),
        }
    }
}

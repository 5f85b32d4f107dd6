//! Data parallelism in the trainer: one process per device, each training on its shard of every
//! global batch, joined into a process group by torchrun's variables (or `--nproc`).
//!
//! What keeps the ranks one model: rank 0's parameters, buffers and optimiser state are
//! broadcast at the start (fresh or resumed), every step's gradients are averaged by bucketed
//! all-reduces before the optimiser step, and every random number of a step (the plan, Mixup's
//! lambda and partners, crop offsets) comes from one generator that advances alike on every
//! rank, each rank applying it to its own rows. What keeps the strategy engine one engine:
//! evaluations and the training window are summed over the ranks before the phase controller
//! sees them, so every rank ends the Enlightenment Period at the same step. Buffers that are not
//! trained (batch-norm statistics) are rank 0's for every evaluation, as DDP's
//! `broadcast_buffers` makes them.

use std::time::Duration;

use serde::de::DeserializeOwned;
use serde::Serialize;
use tch::{Device, Kind, Tensor};

use super::config::RunSection;
use crate::device::DeviceChoice;
use crate::distributed::{broadcast_parameters, Backend, Env, ProcessGroup};
use crate::error::{Error, Result};
use enlighten::cuda::{read_vec, upload};
use enlighten::ops::loss::{remove_highest, reweight_over, LossOutput};

/// This process's place in a data-parallel job: its process group and its rank's device.
pub struct DataParallel {
    group: ProcessGroup,
    device: Device,
}

impl std::fmt::Debug for DataParallel {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("DataParallel")
            .field("rank", &self.rank())
            .field("world_size", &self.world_size())
            .field("backend", &self.backend())
            .field("device", &self.device)
            .finish()
    }
}

impl DataParallel {
    /// The job torchrun's variables describe, joined; None without WORLD_SIZE or with a world of
    /// one process, which trains as a single process with no group at all.
    pub fn from_env(run: &RunSection) -> Result<Option<DataParallel>> {
        match Env::from_env()? {
            Some(env) if env.world_size > 1 => DataParallel::join(&env, run).map(Some),
            _ => Ok(None),
        }
    }

    /// Joins the job `env` describes with `run`'s device (CUDA device LOCAL_RANK), backend
    /// (`auto`: Gloo on the CPU, NCCL on CUDA) and collective timeout.
    pub fn join(env: &Env, run: &RunSection) -> Result<DataParallel> {
        let device = rank_device(run.device, env.local_rank)?;
        let backend = run.backend.resolve(device);
        if backend == Backend::Nccl && device == Device::Cpu {
            return Err(Error::value(
                "run.backend",
                "gloo or auto on the CPU (NCCL carries CUDA tensors only)",
                backend,
            ));
        }
        let timeout = Duration::from_secs(run.collective_timeout_s);
        let group = ProcessGroup::new(env, backend, timeout)?;
        Ok(DataParallel { group, device })
    }

    pub fn rank(&self) -> usize {
        self.group.rank()
    }

    pub fn world_size(&self) -> usize {
        self.group.world_size()
    }

    pub fn backend(&self) -> Backend {
        self.group.backend()
    }

    /// The device this rank trains on.
    pub fn device(&self) -> Device {
        self.device
    }

    pub fn group(&self) -> &ProcessGroup {
        &self.group
    }

    /// The sums over all ranks of `values`, in f64.
    pub(crate) fn sum(&self, values: &[f64]) -> Result<Vec<f64>> {
        let t = upload(values, self.device);
        self.group.all_reduce_sum(&[&t])?.wait()?;
        Ok(read_vec::<f64>(&t)?)
    }

    /// Rank 0's `value` on every rank (sent as JSON; the others' `value` is replaced).
    pub(crate) fn broadcast_value<T: Serialize + DeserializeOwned>(&self, value: T) -> Result<T> {
        let bytes = if self.rank() == 0 {
            serde_json::to_vec(&value).map_err(|e| Error::json("the run state sent to every rank", e))?
        } else {
            Vec::new()
        };
        let len = upload(&[bytes.len() as i64], self.device);
        self.group.broadcast(&len, 0)?;
        let n = read_vec::<i64>(&len)?[0];
        let buffer = if self.rank() == 0 {
            upload(&bytes, self.device)
        } else {
            Tensor::zeros([n], (Kind::Uint8, self.device))
        };
        self.group.broadcast(&buffer, 0)?;
        let bytes = read_vec::<u8>(&buffer)?;
        serde_json::from_slice(&bytes).map_err(|e| Error::Internal(format!("the run state from rank 0: {e}")))
    }

    /// Rank 0's values of `tensors` on every rank, in place.
    pub(crate) fn broadcast(&self, tensors: &[Tensor]) -> Result<()> {
        broadcast_parameters(&self.group, tensors)
    }
}

/// The device of rank `local_rank`: CUDA device `local_rank` when the choice is CUDA, one process
/// per GPU; the CPU otherwise.
fn rank_device(choice: DeviceChoice, local_rank: usize) -> Result<Device> {
    match choice.device()? {
        Device::Cuda(_) => {
            let gpus = tch::Cuda::device_count().max(0) as usize;
            if local_rank >= gpus {
                return Err(Error::value(
                    "LOCAL_RANK",
                    format!("a GPU index below this machine's {gpus} GPUs (one process per GPU)"),
                    local_rank,
                ));
            }
            Ok(Device::Cuda(local_rank))
        }
        other => Ok(other),
    }
}

/// High-Loss Removal over the global batch: gathers every rank's per-row `losses` (f32 `[B]`,
/// the same B on every rank) and `valid` rows (bool `[B]`), removes the floor(r x W B) highest
/// of the concatenation in rank order with one process's rule (ties: lower index first; NaN
/// never removed), and returns this rank's slice of the keep mask and the divisor of its kept
/// rows' sum: the global kept count over W, so that the ranks' averaged gradient is the mean
/// gradient over the global batch's kept rows.
pub fn global_keep(losses: &Tensor, valid: &Tensor, drop_share: f64, group: &ProcessGroup) -> Result<(Tensor, Tensor)> {
    let b = losses.size()[0];
    let all = group.all_gather(&losses.detach().to_kind(Kind::Float).contiguous())?;
    // Gloo gathers numbers; the mask travels as bytes.
    let all_valid = group
        .all_gather(&valid.to_kind(Kind::Uint8).contiguous())?
        .to_kind(Kind::Bool);
    let selected = remove_highest(&all, Some(&all_valid), drop_share)?;
    let keep = selected.keep.narrow(0, group.rank() as i64 * b, b);
    let count = selected.keep.sum(Kind::Float) / group.world_size() as f64;
    Ok((keep, count))
}

/// An output computed with nothing removed (its gradient weighted 1 / valid rows), with the
/// global batch's High-Loss Removal applied ([`global_keep`]): the loss and gradient of this
/// rank's rows such that their average over the ranks is one process's on the global batch.
pub fn remove_highest_global(out: LossOutput, drop_share: f64, group: &ProcessGroup) -> Result<LossOutput> {
    let (keep, count) = global_keep(&out.per_sample, &out.keep, drop_share, group)?;
    Ok(reweight_over(out, &keep, Some(&count))?)
}

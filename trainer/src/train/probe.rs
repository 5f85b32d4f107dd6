//! The trainer's side of the EP monitor: what each step hands the phase controller, and what
//! that costs.
//!
//! - `train-clean`: the loss kernel's correct-prediction count of each EP step, read on the host
//!   (on CUDA one step late, so the read waits for a step the device has finished instead of
//!   stalling the one just queued) and summed over the ranks.
//! - `probe`: a fixed, seeded subset of the validation split (or, without one, of training rows
//!   held out of training for it), evaluated in eval mode. The steps between probes are chosen
//!   from measured times so that the probes cost at most `probe_budget` of the training steps
//!   they interleave with: before the first probe from the measured forward time per training
//!   row, after it from the probes' own measured time. Rank 0's spacing is every rank's.
//!
//! Every second the monitor spends during the EP is counted against the EP's training seconds;
//! summary.json reports the share ([`MonitorCost`]). Once the EP has ended nothing runs.

use serde::{Deserialize, Serialize};
use tch::{Device, Tensor};

use super::config::TrainConfig;
use super::parallel::DataParallel;
use super::task::{Part, TaskData};
use crate::error::{Error, Result};
use enlighten::strategy::{EpEnd, Monitor, Schedule, DEFAULT_PROBE_ROWS};
use enlighten::SeededRng;

/// The share of the budget the spacing aims at: timings vary from step to step (and more on a
/// shared machine), and the budget is a ceiling, not a target.
const BUDGET_AIM: f64 = 0.8;

/// Mixed into the run's seed for the probe's rows, so they do not follow the training order.
const PROBE_SEED: u64 = 0x9E37_79B9_7F4A_7C15;

/// What the EP monitor cost this process, in summary.json.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
pub struct MonitorCost {
    /// The monitor that watched the EP (`auto` resolved).
    pub monitor: Monitor,
    /// Seconds of the monitor's own work during the EP: count reads and their sums over the
    /// ranks, probes, validations asked for by `monitor = "val"` alone.
    pub seconds: f64,
    /// Seconds of the training steps of the EP (data, strategy ops, forward, backward, step).
    pub ep_training_seconds: f64,
    /// `seconds / ep_training_seconds`.
    pub cost_share: f64,
    /// Observations fed to the phase controller (steps, probes or validations).
    pub observations: u64,
    /// `probe`: rows per probe (over all ranks) and the last spacing used, in steps.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub probe_rows: Option<u64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub probe_every: Option<u64>,
}

/// The monitor's state in the loop, next to the schedule's (which the checkpoints carry).
pub(crate) struct EpMonitor {
    monitor: Option<Monitor>,
    /// `probe`: this rank's share of the probe's rows, and their count over all ranks.
    probe: Option<Part>,
    probe_rows: u64,
    budget: f64,
    pinned_every: Option<u64>,
    last_every: Option<u64>,
    /// CUDA: the count of the step before, read one step late.
    lag: bool,
    pending: Option<(Tensor, i64)>,
    /// Measured during the EP: every step's seconds and forward seconds per row, the probes'.
    step_seconds: Vec<f64>,
    forward_per_row: Vec<f64>,
    probe_seconds: f64,
    probes: u64,
    seconds: f64,
    observations: u64,
}

impl EpMonitor {
    /// The monitor `config`'s strategy watches; for `probe`, its rows: drawn from the
    /// validation split, or held out of `task`'s training rows when there is none.
    pub fn new(
        config: &TrainConfig,
        task: &mut TaskData,
        device: Device,
        parallel: Option<&DataParallel>,
    ) -> Result<EpMonitor> {
        let schedule = config.strategy.build()?;
        let monitor = schedule.phase().end_rule().monitor();
        let (rows, budget, pinned_every) = match *schedule.phase().end_rule() {
            EpEnd::Accuracy {
                probe_rows,
                probe_budget,
                probe_every,
                ..
            } => (probe_rows.unwrap_or(DEFAULT_PROBE_ROWS), probe_budget, probe_every),
            _ => (DEFAULT_PROBE_ROWS, 1.0, None),
        };
        let probe = if monitor == Some(Monitor::Probe) {
            Some(probe_part(task, rows as i64, config.run.seed)?)
        } else {
            None
        };
        let probe_rows = probe.as_ref().map_or(0, |p| p.len() as u64);
        let (rank, world) = parallel.map_or((0, 1), |p| (p.rank(), p.world_size()));
        Ok(EpMonitor {
            monitor,
            probe: probe.map(|p| p.shard(rank, world)),
            probe_rows,
            budget,
            pinned_every,
            last_every: None,
            lag: device.is_cuda(),
            pending: None,
            step_seconds: Vec::new(),
            forward_per_row: Vec::new(),
            probe_seconds: 0.0,
            probes: 0,
            seconds: 0.0,
            observations: 0,
        })
    }

    /// This rank's probe rows (`probe` monitor only).
    pub fn probe(&self) -> Result<&Part> {
        self.probe
            .as_ref()
            .ok_or_else(|| Error::Internal("a probe was due without probe rows".into()))
    }

    /// A training step of the EP took `seconds`, `forward` of them in the forward pass of
    /// `rows` rows.
    pub fn training_step(&mut self, seconds: f64, forward: f64, rows: i64) {
        self.step_seconds.push(seconds);
        self.forward_per_row.push(forward / rows.max(1) as f64);
    }

    /// The monitor worked for `seconds` (an observation when `observed`); `probe` says they
    /// were a probe's.
    pub fn worked(&mut self, seconds: f64, observed: bool, probe: bool) {
        self.seconds += seconds;
        self.observations += u64::from(observed);
        if probe {
            self.probe_seconds += seconds;
            self.probes += 1;
        }
    }

    /// `train-clean`: the step's (correct, predictions) over every rank, from the loss
    /// kernel's device count; on CUDA the previous step's (none at the first).
    pub fn batch_counts(
        &mut self,
        correct: &Tensor,
        predictions: i64,
        parallel: Option<&DataParallel>,
    ) -> Result<Option<(f64, f64)>> {
        let current = (correct.shallow_clone(), predictions);
        let ready = if self.lag {
            self.pending.replace(current)
        } else {
            Some(current)
        };
        let Some((c, n)) = ready else {
            return Ok(None);
        };
        // The one host read of an EP step (counted): on CUDA of the previous step's count.
        let local = [enlighten::cuda::read_i64(&c)? as f64, n as f64];
        let sums = match parallel {
            Some(p) => p.sum(&local)?,
            None => local.to_vec(),
        };
        Ok(Some((sums[0], sums[1])))
    }

    /// `probe`: plans the next probe after `step` unless one is planned ahead, spaced so the
    /// probes stay within the budget (or as pinned by `probe_every`). Needs two measured
    /// steps first; every rank takes rank 0's spacing.
    pub fn plan_probe(&mut self, schedule: &mut Schedule, step: u64, parallel: Option<&DataParallel>) -> Result<()> {
        if schedule.watching() != Some(Monitor::Probe) || schedule.phase().next_probe().is_some_and(|n| n > step) {
            return Ok(());
        }
        let every = match self.pinned_every {
            Some(k) => k,
            None if self.step_seconds.len() < 2 => return Ok(()),
            None => {
                let k = self.budget_spacing();
                match parallel {
                    Some(p) => p.broadcast_value(k)?,
                    None => k,
                }
            }
        };
        self.last_every = Some(every);
        schedule.plan_probe(step + every);
        Ok(())
    }

    /// Steps until the next probe: the fewest after which the monitor's seconds so far plus
    /// the next probe's stay within [`BUDGET_AIM`] of the budget's share of the EP's training
    /// seconds by then
    /// (a typical, median, step added per step). A probe's cost is measured, or before the
    /// first estimated as its rows' share of the measured training forward time; a probe that
    /// cost more than planned pushes the next one out, so the share holds over the whole EP.
    fn budget_spacing(&self) -> u64 {
        let probe_cost = self.probe_cost();
        let step_cost = median(&self.step_seconds);
        if step_cost <= 0.0 {
            return 1;
        }
        let trained: f64 = self.step_seconds.iter().sum();
        let needed = (self.seconds + probe_cost) / (BUDGET_AIM * self.budget) - trained;
        (needed / step_cost).ceil().max(1.0) as u64
    }

    /// A probe's expected seconds: the probes' mean so far, or before the first its rows'
    /// share of the measured training forward time.
    fn probe_cost(&self) -> f64 {
        if self.probes > 0 {
            return self.probe_seconds / self.probes as f64;
        }
        let rows = self.probe.as_ref().map_or(0, Part::len) as f64;
        rows * median(&self.forward_per_row)
    }

    /// Whether a probe due now fits the budget of the training seconds actually spent (step
    /// times vary, so the planned step may come early); if not, the loop plans it again.
    /// Every rank takes rank 0's answer. Pinned spacings always probe.
    pub fn affordable(&self, parallel: Option<&DataParallel>) -> Result<bool> {
        let trained: f64 = self.step_seconds.iter().sum();
        let fits =
            self.pinned_every.is_some() || self.seconds + self.probe_cost() <= BUDGET_AIM * self.budget * trained;
        match parallel {
            Some(p) => p.broadcast_value(fits),
            None => Ok(fits),
        }
    }

    /// What the monitor cost during the EP (none for a fixed-length EP).
    pub fn cost(&self) -> Option<MonitorCost> {
        let monitor = self.monitor?;
        let training: f64 = self.step_seconds.iter().sum();
        let probe = monitor == Monitor::Probe;
        Some(MonitorCost {
            monitor,
            seconds: self.seconds,
            ep_training_seconds: training,
            cost_share: if training > 0.0 { self.seconds / training } else { 0.0 },
            observations: self.observations,
            probe_rows: probe.then_some(self.probe_rows),
            probe_every: if probe { self.last_every } else { None },
        })
    }
}

fn median(values: &[f64]) -> f64 {
    if values.is_empty() {
        return 0.0;
    }
    let mut v = values.to_vec();
    v.sort_by(f64::total_cmp);
    v[v.len() / 2]
}

/// `rows` seeded rows of the validation split; without one, `rows` seeded training rows, which
/// are then taken out of `task`'s training split so the probe measures held-out rows.
fn probe_part(task: &mut TaskData, rows: i64, seed: u64) -> Result<Part> {
    let mut rng = SeededRng::new(seed ^ PROBE_SEED);
    if task.val.len() > 0 {
        let n = rows.min(task.val.len());
        let mut pick = rng.permutation(task.val.len() as usize)[..n as usize].to_vec();
        pick.sort_unstable();
        return Ok(select(&task.val, &pick));
    }
    if task.train_stream.is_some() || task.train.len() < 2 * rows {
        return Err(Error::value(
            "data.val_fraction",
            format!(
                "a validation split for the EP's probe (or at least {} in-memory training rows to hold out)",
                2 * rows
            ),
            "no validation rows",
        ));
    }
    let order = rng.permutation(task.train.len() as usize);
    let (mut pick, mut keep) = (order[..rows as usize].to_vec(), order[rows as usize..].to_vec());
    pick.sort_unstable();
    keep.sort_unstable();
    let probe = select(&task.train, &pick);
    task.train = select(&task.train, &keep);
    Ok(probe)
}

fn select(part: &Part, rows: &[i64]) -> Part {
    let idx = Tensor::from_slice(rows);
    Part {
        inputs: part.inputs.index_select(0, &idx),
        targets: part.targets.index_select(0, &idx),
    }
}

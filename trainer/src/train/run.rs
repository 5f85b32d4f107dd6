//! The training loop: the strategy engine's plan -> fused Mixup on u8 images -> forward -> fused
//! loss with High-Loss Removal -> backward -> SGD, with step-granular evaluation feeding the
//! phase controller, metrics.jsonl, verified atomic checkpoints every epoch, every
//! `run.checkpoint_every` and on interrupt, and resume.
//!
//! Resuming reproduces a straight run bit for bit on the CPU (same parameters, optimiser state,
//! RNG, schedule and metrics) as long as the process runs one training at a time: libtorch's
//! CPU reductions split work by the threads they get, and concurrent trainings share them.
//!
//! Under data parallelism ([`DataParallel`]) every rank runs this loop on its shard of each
//! global batch; rank 0 alone draws the bar and writes metrics.jsonl, checkpoints and
//! summary.json, and every rank starts from rank 0's state (see `parallel`).

use std::cell::Cell;
use std::fs;
use std::io::Write;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Instant;

use indicatif::{ProgressBar, ProgressStyle};
use serde::{Deserialize, Serialize};
use tch::{nn, Device, Kind, Tensor};

use super::autocast::{autocast_if, set_cuda_autocast_kind};
use super::checkpoint::{self, Layout, NamedTensors, RunState};
use super::config::{Autocast, TrainConfig};
use super::optim::{cosine_lr, Optimizer};
use super::parallel::DataParallel;
use super::prefetch::{shard_len, BatchOrder, Batches};
use super::probe::{EpMonitor, MonitorCost};
use super::signals;
use super::task::{Eval, EvalSums, Part, TaskData};
use crate::distributed::{Backend, GradientBuckets, ProcessGroup};
use crate::error::{Error, Result};
use crate::models::Model;
use enlighten::cuda::{read_back, read_f64, read_i64};
use enlighten::ops::stats::Benr;
use enlighten::strategy::{BatchPlan, EpEndInfo, Monitor, RemovalScope};
use enlighten::SeededRng;

/// How many processes trained a run, over which backend, and the rows of one optimiser step
/// over all of them.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct Parallelism {
    #[serde(default = "one_process")]
    pub world_size: usize,
    /// The process group's backend; none for a single process.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub backend: Option<Backend>,
    /// Rows per step on each process times the processes (0 in files that predate it).
    #[serde(default)]
    pub global_batch: i64,
}

fn one_process() -> usize {
    1
}

impl Default for Parallelism {
    /// One process, no group, the global batch not recorded.
    fn default() -> Parallelism {
        Parallelism {
            world_size: 1,
            backend: None,
            global_batch: 0,
        }
    }
}

/// What `summary.json` holds.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Summary {
    pub name: String,
    pub strategy: String,
    /// image | series | forecast | text
    pub task: String,
    /// The evaluation metric: "accuracy" (higher is better) or "mse" (lower is better).
    pub metric: String,
    pub higher_is_better: bool,
    pub steps: u64,
    pub epochs: f64,
    /// The metric on the validation split at the last evaluation, and the best seen.
    pub final_val: f64,
    pub best_val: f64,
    /// The metric and the mean loss on the test split at the end.
    pub test: f64,
    pub test_loss: f64,
    /// The EP's end: its step, the interval the crossing lies in, the monitor's accuracy and
    /// standard error there.
    pub ep_end: Option<EpEndInfo>,
    /// What watching the EP cost (accuracy-ended EPs): seconds, share of the EP's training.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub monitor: Option<MonitorCost>,
    pub wall_seconds: f64,
    pub samples_per_second: f64,
    pub timing: Timing,
    /// Image folders with `on_bad_file = "skip"`: the corrupt or truncated files left out of the
    /// evaluation sets or replaced in training batches.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub skipped_files: Vec<std::path::PathBuf>,
    #[serde(flatten)]
    pub parallelism: Parallelism,
    /// FNV-1a over the bytes of every model variable in name order: equal on every rank of a
    /// data-parallel job, and for a resumed run and the same run straight through.
    #[serde(default)]
    pub parameter_digest: String,
}

/// Where this process's training steps spent their time (host seconds: exact on the CPU, where
/// ops run synchronously; on CUDA the parts are launch times and the sum is the step time).
#[derive(Debug, Clone, Copy, Default, PartialEq, Serialize, Deserialize)]
pub struct Timing {
    pub steps: u64,
    /// Gathering and augmenting batches (waiting for the prefetch thread included).
    pub data_seconds: f64,
    /// The strategy's ops: the plan, Mixup/CutMix (with normalisation) and the loss with
    /// High-Loss Removal; everything of a step but the model.
    pub strategy_seconds: f64,
    pub forward_seconds: f64,
    /// Backward pass, the gradients' average over the ranks (data parallelism) and the
    /// optimiser step.
    pub backward_seconds: f64,
    pub eval_seconds: f64,
    /// Device values read back to the host inside the training steps (counted by
    /// `enlighten::cuda::host_reads`, from the batch to the optimiser step): 0, as each would
    /// drain the GPU's queue. Evaluations, log lines and the EP monitor read between steps.
    #[serde(default)]
    pub step_host_reads: u64,
}

impl std::fmt::Display for Timing {
    /// Per training step, in milliseconds: the whole step and each part; then the device values
    /// read back inside steps (0).
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let per_step = |s: f64| 1e3 * s / self.steps.max(1) as f64;
        let step = per_step(self.data_seconds + self.strategy_seconds + self.forward_seconds + self.backward_seconds);
        let strategy = per_step(self.strategy_seconds);
        write!(
            f,
            "step {step:.2} ms: data {:.3}, strategy ops {strategy:.3} ({:.2}%), forward {:.2}, backward+step {:.2}; host reads in steps {}",
            per_step(self.data_seconds),
            100.0 * strategy / step,
            per_step(self.forward_seconds),
            per_step(self.backward_seconds),
            self.step_host_reads
        )
    }
}

/// One line of `metrics.jsonl`.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct MetricsLine {
    pub step: u64,
    pub epoch: u32,
    pub lr: f64,
    /// Mean reported loss over the steps since the previous line.
    pub loss: f64,
    /// Share of those steps' predictions whose argmax was the (first) label; none for forecasts.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub train_accuracy: Option<f64>,
    pub in_ep: bool,
    pub alpha: f64,
    pub drop_share: f64,
    /// The task's metric on the validation split (accuracy, or MSE for forecasting).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub val: Option<f64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub val_loss: Option<f64>,
    /// Diagnostics: per probed layer, the share of zero activations on a fixed batch.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub zero_share: Option<Vec<f64>>,
    /// Diagnostics: the batch-epoch norm ratio of the epoch this step ends.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub benr: Option<f64>,
    /// In the EP (and at its end): the EP monitor's latest accuracy.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub ep_monitor: Option<f64>,
    /// On the line of the step whose observation ended the EP: the end and its interval.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub ep_end: Option<EpEndInfo>,
    /// The processes behind the line: its loss, accuracies and counts are over all of them.
    #[serde(flatten)]
    pub parallelism: Parallelism,
}

/// Named tensors of a checkpoint: the model's variables and the optimiser's buffers.
fn checkpoint_tensors(vs: &nn::VarStore, opt: &Optimizer) -> NamedTensors {
    let mut named: Vec<(String, Tensor)> = vs
        .variables()
        .into_iter()
        .map(|(k, v)| (format!("model.{k}"), v))
        .collect();
    named.sort_by(|a, b| a.0.cmp(&b.0));
    named.extend(
        opt.buffers()
            .iter()
            .enumerate()
            .map(|(i, b)| (format!("optim.{i}"), b.shallow_clone())),
    );
    named
}

/// Loads a checkpoint's tensors (read from `dir`) into the model and the optimiser.
fn restore(dir: &Path, vs: &nn::VarStore, opt: &mut Optimizer, saved: NamedTensors) -> Result<()> {
    super::resume::check_tensors(dir, &checkpoint_tensors(vs, opt), &saved)?;
    let vars = vs.variables();
    let mut buffers = Vec::new();
    for (name, t) in saved {
        if let Some(i) = name.strip_prefix("optim.") {
            let i: usize = i.parse().map_err(|_| Error::Checkpoint {
                path: dir.to_path_buf(),
                problem: format!("tensor `{name}` is not an optimiser buffer"),
            })?;
            buffers.push((i, t));
        } else if let Some(v) = name.strip_prefix("model.").and_then(|k| vars.get(k)) {
            let mut v = v.shallow_clone();
            tch::no_grad(|| v.copy_(&t));
        } else {
            return Err(Error::Checkpoint {
                path: dir.to_path_buf(),
                problem: format!("tensor `{name}` does not belong to this model"),
            });
        }
    }
    buffers.sort_by_key(|(i, _)| *i);
    let buffers: Vec<Tensor> = buffers.into_iter().map(|(_, t)| t).collect();
    opt.load_buffers(&buffers);
    Ok(())
}

/// Keeps the metrics lines of steps before `step` (those after the last checkpoint are replayed).
fn truncate_metrics(path: &Path, step: u64) -> Result<()> {
    let Ok(text) = fs::read_to_string(path) else {
        return Ok(());
    };
    let kept: String = text
        .lines()
        .filter(|l| {
            serde_json::from_str::<MetricsLine>(l)
                .map(|m| m.step < step)
                .unwrap_or(false)
        })
        .map(|l| format!("{l}\n"))
        .collect();
    fs::write(path, kept).map_err(|e| Error::unwritable(path.to_path_buf(), e))
}

/// How a training call behaves, besides its configuration.
#[derive(Debug, Default, Clone, Copy)]
pub struct TrainOptions<'a> {
    /// Continue from the run's latest checkpoint.
    pub resume: bool,
    /// Draw a progress bar on stderr.
    pub progress: bool,
    /// Draw it inside this group instead (under `enlighten compare`'s bar over all runs).
    pub progress_group: Option<&'a indicatif::MultiProgress>,
    /// Checked after every step: when set, the run writes a checkpoint and returns
    /// `Error::Interrupted` (the CLI sets it from Ctrl-C). The library installs no handler.
    /// Under data parallelism a flag set on any rank stops every rank after the same step.
    pub interrupt: Option<&'a AtomicBool>,
    /// This process's place in a data-parallel job ([`DataParallel::from_env`]); None trains as
    /// one process.
    pub parallel: Option<&'a DataParallel>,
}

/// Trains as `config` says.
pub fn train(config: &TrainConfig, options: &TrainOptions<'_>) -> Result<Summary> {
    let mut run = Run::prepare(config, options)?;
    for step in run.state.step..run.steps.end {
        let mut done = run.step(step)?;
        done.ep_end = run.watch_ep(&done)?;
        run.evaluate_and_log(&done)?;
        run.checkpoint(&done)?;
    }
    run.finish()
}

/// The step counts of a run.
#[derive(Debug, Clone, Copy)]
struct Steps {
    batch: i64,
    per_epoch: u64,
    /// Steps of `optim.epochs` (the learning-rate schedule's length).
    total: u64,
    /// Where this run stops (`run.max_steps` or `total`).
    end: u64,
    warmup: u64,
}

impl Steps {
    /// The steps of `world` ranks, each training on its shard of the epoch's `train_rows`.
    fn new(config: &TrainConfig, train_rows: i64, world: usize) -> Steps {
        let rows = shard_len(train_rows, world);
        let batch = config.data.batch_size.min(rows);
        let per_epoch = (rows / batch).max(1) as u64;
        let total = per_epoch * config.optim.epochs as u64;
        let end = config.run.max_steps.map_or(total, |m| m.min(total));
        let warmup = (config.optim.warmup_epochs * per_epoch as f64) as u64;
        Steps {
            batch,
            per_epoch,
            total,
            end,
            warmup,
        }
    }

    /// The layout of these steps over `world` ranks.
    fn layout(&self, world: usize) -> Layout {
        Layout {
            global_batch: self.batch * world as i64,
            per_epoch: self.per_epoch,
        }
    }
}

/// What one step did, for its evaluation, log line and checkpoint.
struct StepDone {
    step: u64,
    epoch: u32,
    lr: f64,
    plan: BatchPlan,
    /// The batch's correct predictions (device scalar) of `predictions`, for the EP monitor.
    correct: Tensor,
    predictions: i64,
    /// The step's seconds, and those of its forward pass over `rows` rows.
    seconds: f64,
    forward_seconds: f64,
    rows: i64,
    /// The EP end this step's observation made, if it did.
    ep_end: Option<EpEndInfo>,
}

/// The training-loss window between two log lines, summed on the device.
struct Window {
    loss_sum: Tensor,
    correct_sum: Tensor,
    steps: u64,
    predictions: i64,
}

impl Window {
    fn new(device: Device) -> Window {
        Window {
            loss_sum: Tensor::zeros([], (Kind::Float, device)),
            correct_sum: Tensor::zeros([], (Kind::Int64, device)),
            steps: 0,
            predictions: 0,
        }
    }

    fn reset(&mut self) {
        self.loss_sum = self.loss_sum.zeros_like();
        self.correct_sum = self.correct_sum.zeros_like();
        (self.steps, self.predictions) = (0, 0);
    }
}

/// What the run writes (rank 0, or the only process): its folder, checkpoints and metrics.
struct Outputs {
    run_dir: PathBuf,
    ckpt_dir: PathBuf,
    metrics: fs::File,
    metrics_path: PathBuf,
}

/// A training in progress: prepare, then step / evaluate_and_log / checkpoint per step, finish.
struct Run<'a> {
    config: &'a TrainConfig,
    interrupt: Option<&'a AtomicBool>,
    parallel: Option<&'a DataParallel>,
    started: Instant,
    device: Device,
    autocast: bool,
    /// None on ranks other than 0, which write nothing.
    outputs: Option<Outputs>,
    task: TaskData,
    /// This rank's rows of the validation and test splits (all of them for one process).
    val: Part,
    test: Part,
    vs: nn::VarStore,
    model: Box<dyn Model>,
    params: Vec<Tensor>,
    /// Variables that are not trained (batch-norm statistics): rank 0's are every rank's
    /// before an evaluation.
    buffers: Vec<Tensor>,
    opt: Optimizer,
    /// Data parallelism: the gradients' bucketed average over the ranks.
    buckets: Option<GradientBuckets>,
    state: RunState,
    rng: SeededRng,
    steps: Steps,
    first_step: u64,
    batches: Batches,
    bar: ProgressBar,
    /// Diagnostics: the fixed batch of the zero shares, and BENR (a resumed epoch's covers the
    /// steps since the resume).
    probe_batch: Option<Tensor>,
    benr: Option<Benr>,
    timing: Timing,
    /// Seconds in the model's forward pass (its closure adds to it).
    forward_time: Cell<f64>,
    window: Window,
    last_val: f64,
    /// When the last checkpoint was written (or the run started): `run.checkpoint_every`'s clock.
    last_checkpoint: Instant,
    ep_monitor: EpMonitor,
}

impl<'a> Run<'a> {
    /// Checks the configuration, sets up the run folder, loads the data, builds the model and
    /// optimiser, restores the latest checkpoint when resuming, and (data parallelism) starts
    /// every rank from rank 0's state.
    fn prepare(config: &'a TrainConfig, options: &TrainOptions<'a>) -> Result<Run<'a>> {
        config.validate()?;
        enlighten::tune_cpu_allocator();
        let started = Instant::now();
        let parallel = options.parallel;
        let device = match parallel {
            Some(p) => p.device(),
            None => config.run.device.device()?,
        };
        let autocast = enable_autocast(config, device)?;
        if let Some(p) = parallel {
            super::agreement::check(p, config)?;
        }
        let lead = parallel.is_none_or(|p| p.rank() == 0);
        let dirs = lead.then(|| open_run_dir(config, options.resume)).transpose()?;
        let mut task = TaskData::load(config, device)?;
        let ep_monitor = EpMonitor::new(config, &mut task, device, parallel)?;
        tch::manual_seed(config.run.seed as i64);
        let vs = nn::VarStore::new(device);
        let model = task.build_model(config, &vs);
        let params = vs.trainable_variables();
        let mut opt = Optimizer::from_config(&config.optim, params.iter().map(Tensor::shallow_clone).collect());
        let (outputs, state) = open_outputs(dirs, options.resume, &vs, &mut opt, config)?;
        let (rank, world) = parallel.map_or((0, 1), |p| (p.rank(), p.world_size()));
        let steps = Steps::new(config, task.train.len(), world);
        let mut state = match parallel {
            Some(p) => start_together(p, &vs, &opt, state)?,
            None => state,
        };
        let layout = steps.layout(world);
        state.step = layout.continue_from(state.layout.unwrap_or(layout), state.step);
        state.layout = Some(layout);
        let bar = progress_bar(options, lead, steps.end, state.step);
        if let Some(p) = parallel {
            let (batch, global) = (steps.batch, layout.global_batch);
            bar.println(format!(
                "data parallel: {world} processes ({}), batch {batch} per process, global batch {global}",
                p.backend()
            ));
        }
        // Diagnostics only feed metrics.jsonl, which rank 0 alone writes.
        let (probe_batch, benr) = diagnostics(config, &task, &params, device, lead)?;
        let batches = batches_from(config, &task, &steps, state.step, (rank, world), device);
        let buckets = parallel
            .map(|_| GradientBuckets::new(params.iter().map(Tensor::shallow_clone).collect()))
            .transpose()?;
        Ok(Run {
            config,
            interrupt: options.interrupt,
            parallel,
            started,
            device,
            autocast,
            outputs,
            val: task.val.shard(rank, world),
            test: task.test.shard(rank, world),
            buffers: untrained(&vs),
            vs,
            model,
            params,
            opt,
            buckets,
            rng: SeededRng::from_state(state.rng),
            first_step: state.step,
            state,
            steps,
            batches,
            bar,
            probe_batch,
            benr,
            timing: Timing::default(),
            forward_time: Cell::new(0.0),
            window: Window::new(device),
            last_val: f64::NAN,
            last_checkpoint: Instant::now(),
            ep_monitor,
            task,
        })
    }

    /// The process group when High-Loss Removal ranks the global batch.
    fn global_removal(&self) -> Option<&'a ProcessGroup> {
        let parallel = self.parallel?;
        (self.config.strategy.scope == RemovalScope::Global).then(|| parallel.group())
    }

    /// One training step: the batch, the plan, the strategy's ops and the forward pass, the
    /// backward pass, the gradients' average over the ranks and the optimiser step; its loss
    /// joins the log window.
    fn step(&mut self, step: u64) -> Result<StepDone> {
        let epoch = (step / self.steps.per_epoch) as u32;
        let reads_before = enlighten::cuda::host_reads();
        let t_data = Instant::now();
        // Already on the device: the batches are copied there without blocking (prefetch).
        let (mut x, y) = self
            .batches
            .next()
            .ok_or_else(|| Error::Internal("the batch prefetch thread stopped".into()))??;
        if self.config.data.augment {
            x = crate::data::random_crop_flip(&x, self.config.data.pad, true, &mut self.rng)?;
        }
        let t_ops = Instant::now();
        let forward_before = self.forward_time.get();
        let plan = self.state.schedule.plan(step, epoch, &mut self.rng);
        // The model's forward pass in training mode, timed, under bf16 autocast when asked.
        let (model, forward_time, autocast) = (&self.model, &self.forward_time, self.autocast);
        let forward_train = |x: &Tensor| {
            let t = Instant::now();
            let out = autocast_if(autocast, || model.forward(x, true, false).0);
            forward_time.set(forward_time.get() + t.elapsed().as_secs_f64());
            out
        };
        let global = self.global_removal();
        let out = self.task.step(&forward_train, (&x, &y), &plan, &mut self.rng, global)?;
        let t_backward = Instant::now();
        let lr = cosine_lr(self.config.optim.lr, step, self.steps.warmup, self.steps.total);
        self.opt.zero_grad();
        out.loss.backward();
        if let (Some(buckets), Some(p)) = (self.buckets.as_mut(), self.parallel) {
            buckets.average(p.group())?;
        }
        self.opt.step(lr, step + 1);
        if let Some(b) = self.benr.as_mut() {
            b.step(&self.params.iter().collect::<Vec<_>>())?;
        }
        let forward = self.forward_time.get() - forward_before;
        let timing = &mut self.timing;
        timing.steps += 1;
        timing.data_seconds += (t_ops - t_data).as_secs_f64();
        timing.strategy_seconds += (t_backward - t_ops).as_secs_f64() - forward;
        timing.forward_seconds += forward;
        timing.backward_seconds += t_backward.elapsed().as_secs_f64();
        self.window.loss_sum += &out.reported.to_kind(Kind::Float);
        self.window.correct_sum += &out.correct;
        self.window.steps += 1;
        self.window.predictions += out.predictions;
        self.timing.step_host_reads += enlighten::cuda::host_reads() - reads_before;
        Ok(StepDone {
            step,
            epoch,
            lr,
            plan,
            correct: out.correct,
            predictions: out.predictions,
            seconds: t_data.elapsed().as_secs_f64(),
            forward_seconds: forward,
            rows: x.size()[0],
            ep_end: None,
        })
    }

    /// Feeds the EP monitor after a step of the EP: the batch's counts (`train-clean`) or the
    /// probe when due (`probe`), then plans the next probe; what it costs is measured.
    fn watch_ep(&mut self, done: &StepDone) -> Result<Option<EpEndInfo>> {
        let Some(monitor) = self.state.schedule.watching() else {
            return Ok(None);
        };
        let t = Instant::now();
        let (step, epoch) = (done.step, done.epoch);
        self.ep_monitor
            .training_step(done.seconds, done.forward_seconds, done.rows);
        let due = monitor == Monitor::Probe && self.state.schedule.probe_due(step);
        // A due probe the spent training time cannot pay for yet is planned again.
        let probing = due && self.ep_monitor.affordable(self.parallel)?;
        let counts = match monitor {
            Monitor::TrainClean => self
                .ep_monitor
                .batch_counts(&done.correct, done.predictions, self.parallel)?,
            Monitor::Probe if probing => {
                let e = self.evaluate(self.ep_monitor.probe()?)?;
                Some((e.correct, e.predictions))
            }
            _ => None,
        };
        let end = counts.and_then(|(c, n)| self.state.schedule.observe_counts(monitor, c, n, step, epoch));
        self.ep_monitor
            .plan_probe(&mut self.state.schedule, step, self.parallel)?;
        self.ep_monitor
            .worked(t.elapsed().as_secs_f64(), counts.is_some(), probing);
        if let Some(end) = end {
            self.bar.println(format!("{end}"));
        }
        Ok(end)
    }

    fn epoch_ends(&self, step: u64) -> bool {
        (step + 1) % self.steps.per_epoch == 0
    }

    /// The task's metric on `part` (this rank's shard), summed over the ranks, with rank 0's
    /// untrained variables.
    fn evaluate(&self, part: &Part) -> Result<Eval> {
        if let Some(p) = self.parallel {
            p.broadcast(&self.buffers)?;
        }
        let (autocast, model) = (self.autocast, &self.model);
        let forward_eval = |x: &Tensor| autocast_if(autocast, || model.forward(x, false, false).0);
        let sums = self.task.evaluate_sums(&forward_eval, part, self.device)?;
        let sums = match self.parallel {
            Some(p) => {
                let total = p.sum(&[sums.loss, sums.correct, sums.predictions])?;
                EvalSums {
                    loss: total[0],
                    correct: total[1],
                    predictions: total[2],
                }
            }
            None => sums,
        };
        Ok(self.task.eval_from(sums))
    }

    /// Validation when the schedule or `run.eval_every` asks (it feeds the phase controller),
    /// and a metrics line when `run.log_every`, a validation or an epoch's diagnostics ask.
    fn evaluate_and_log(&mut self, done: &StepDone) -> Result<()> {
        let t_eval = Instant::now();
        let step = done.step;
        let for_run = (step + 1) % self.config.run.eval_every == 0 || step + 1 == self.steps.end;
        let for_ep = self.state.schedule.eval_due(step);
        let val = if for_run || for_ep {
            Some(self.evaluate(&self.val)?)
        } else {
            None
        };
        if for_ep {
            // Validations the `val` monitor alone asked for are its cost.
            let seconds = if for_run { 0.0 } else { t_eval.elapsed().as_secs_f64() };
            self.ep_monitor.worked(seconds, true, false);
        }
        let diagnostics_due = self.config.run.diagnostics && self.epoch_ends(step);
        let log_due = (step + 1) % self.config.run.log_every == 0 || done.ep_end.is_some();
        if log_due || val.is_some() || diagnostics_due {
            self.log(done, val)?;
        }
        self.timing.eval_seconds += t_eval.elapsed().as_secs_f64();
        self.bar.inc(1);
        Ok(())
    }

    /// The window's mean loss and clean training accuracy, over every rank's steps.
    fn window_means(&self) -> Result<(f64, Option<f64>)> {
        let w = &self.window;
        let local = [
            read_f64(&w.loss_sum)?,
            read_i64(&w.correct_sum)? as f64,
            w.predictions as f64,
        ];
        let (sums, world) = match self.parallel {
            Some(p) => (p.sum(&local)?, p.world_size()),
            None => (local.to_vec(), 1),
        };
        let mean_loss = sums[0] / (w.steps as usize * world) as f64;
        Ok((mean_loss, (sums[2] > 0.0).then(|| sums[1] / sums[2])))
    }

    /// Writes one metrics line over the window since the last, and lets the schedule observe
    /// the validation metric and the clean training accuracy.
    fn log(&mut self, done: &StepDone, val: Option<Eval>) -> Result<()> {
        let (step, epoch) = (done.step, done.epoch);
        let mut ep_end = done.ep_end;
        let (mean_loss, train_acc) = self.window_means()?;
        if !mean_loss.is_finite() {
            self.bar.abandon();
            // A fresh run has a checkpoint once its state's step has moved on from 0.
            let checkpoint = (self.state.step > 0).then_some(self.state.step);
            return Err(Error::Diverged {
                step,
                loss: mean_loss,
                checkpoint,
            });
        }
        if let Some(v) = val {
            self.last_val = v.metric;
            let higher_is_better = self.task.higher_is_better();
            let better = |a: f64, b: f64| if higher_is_better { a.max(b) } else { a.min(b) };
            self.state.best_val = Some(self.state.best_val.map_or(v.metric, |b| better(b, v.metric)));
            // Forecasting's metric is an MSE; its configurations cannot end the EP on accuracy.
            let schedule = &mut self.state.schedule;
            if let Some(end) = schedule.observe_counts(Monitor::Val, v.correct, v.predictions, step, epoch) {
                self.bar.println(format!("{end}"));
                ep_end = Some(end);
            }
        }
        let zero_share = match &self.probe_batch {
            Some(b) => Some(self.model.zero_shares(b)?),
            None => None,
        };
        let benr = match self.benr.as_mut() {
            Some(b) if (step + 1) % self.steps.per_epoch == 0 => {
                Some(b.end_epoch(&self.params.iter().collect::<Vec<_>>())?)
            }
            _ => None,
        };
        let plan = &done.plan;
        let line = MetricsLine {
            step,
            epoch,
            lr: done.lr,
            loss: mean_loss,
            train_accuracy: train_acc,
            in_ep: plan.in_ep,
            alpha: plan.mix.alpha,
            drop_share: plan.drop_share,
            val: val.map(|v| v.metric),
            val_loss: val.map(|v| v.loss),
            zero_share,
            benr,
            ep_monitor: (plan.in_ep || ep_end.is_some())
                .then(|| self.state.schedule.phase().latest())
                .flatten(),
            ep_end,
            parallelism: self.parallelism(),
        };
        if let Some(out) = self.outputs.as_mut() {
            let json = serde_json::to_string(&line)
                .map_err(|e| Error::json(format!("metrics.jsonl line of step {step}"), e))?;
            writeln!(out.metrics, "{json}").map_err(|e| Error::unwritable(out.metrics_path.clone(), e))?;
        }
        let acc = train_acc.map(|a| format!(" acc {a:.3}")).unwrap_or_default();
        self.bar.set_message(format!(
            "loss {mean_loss:.4}{acc} {}",
            if plan.in_ep { "in EP" } else { "after EP" }
        ));
        self.window.reset();
        Ok(())
    }

    fn parallelism(&self) -> Parallelism {
        let world = self.parallel.map_or(1, DataParallel::world_size);
        Parallelism {
            world_size: world,
            backend: self.parallel.map(DataParallel::backend),
            global_batch: self.steps.batch * world as i64,
        }
    }

    /// Whether an interrupt was asked for on any rank, and whether `run.checkpoint_every`'s time
    /// has come (rank 0's clock decides, so that every rank checkpoints at the same step). A
    /// rank that was not signalled itself adopts the others' signal, SIGTERM first: one
    /// preempted rank preempts the job, and every rank exits with the status that says so.
    fn interrupted_or_due(&self) -> Result<(bool, bool)> {
        let cadence = self.config.run.checkpoint_every;
        let here = self.interrupt.is_some_and(|flag| flag.swap(false, Ordering::SeqCst));
        let due = cadence.time_due(self.last_checkpoint.elapsed());
        match self.parallel {
            Some(p) if self.interrupt.is_some() || cadence.is_time() => {
                let received = if here { signals::received() } else { None };
                let term = received == Some(libc::SIGTERM);
                let int = here && !term;
                let due = due && p.rank() == 0;
                let sums = p.sum(&[term, int, due].map(|b| f64::from(u8::from(b))))?;
                if sums[0] > 0.0 {
                    signals::adopt(libc::SIGTERM);
                } else if sums[1] > 0.0 {
                    signals::adopt(libc::SIGINT);
                }
                Ok((sums[0] + sums[1] > 0.0, sums[2] > 0.0))
            }
            _ => Ok((here, due)),
        }
    }

    /// A checkpoint at the end of each epoch, of the run, every `run.checkpoint_every`, and on an
    /// interrupt (which then stops the run with `Error::Interrupted`). Rank 0 writes it; every
    /// rank waits until it has.
    fn checkpoint(&mut self, done: &StepDone) -> Result<()> {
        let step = done.step;
        let (interrupted, time_due) = self.interrupted_or_due()?;
        let cadence_due = time_due || self.config.run.checkpoint_every.step_due(step);
        if interrupted || cadence_due || self.epoch_ends(step) || step + 1 == self.steps.end {
            self.last_checkpoint = Instant::now();
            self.state.step = step + 1;
            self.state.rng = self.rng.state();
            let saved = match &self.outputs {
                Some(out) => checkpoint::save(&out.ckpt_dir, &self.state, &checkpoint_tensors(&self.vs, &self.opt))?,
                None => self.config.run.out_dir.join(&self.config.run.name).join("checkpoints"),
            };
            if let Some(p) = self.parallel {
                p.group().barrier()?;
            }
            if interrupted {
                self.bar.abandon();
                return Err(Error::Interrupted {
                    step: self.state.step,
                    checkpoint: saved,
                });
            }
        }
        Ok(())
    }

    /// The test split's evaluation and `summary.json`.
    fn finish(self) -> Result<Summary> {
        self.bar.finish_and_clear();
        let test = self.evaluate(&self.test)?;
        let wall = self.started.elapsed().as_secs_f64();
        let Steps { end, per_epoch, .. } = self.steps;
        let parallelism = self.parallelism();
        let summary = Summary {
            name: self.config.run.name.clone(),
            strategy: self.state.schedule.strategy().to_string(),
            task: format!("{:?}", self.task.task).to_lowercase(),
            metric: self.task.metric_name().into(),
            higher_is_better: self.task.higher_is_better(),
            steps: end,
            epochs: end as f64 / per_epoch as f64,
            final_val: self.last_val,
            best_val: self.state.best_val.unwrap_or(f64::NAN),
            test: test.metric,
            test_loss: test.loss,
            ep_end: self.state.schedule.phase().ended(),
            monitor: self.ep_monitor.cost(),
            wall_seconds: wall,
            samples_per_second: (end.saturating_sub(self.first_step) * parallelism.global_batch as u64) as f64 / wall,
            timing: self.timing,
            skipped_files: self.task.skipped_files(),
            parallelism,
            parameter_digest: digest(&self.vs)?,
        };
        if let Some(out) = &self.outputs {
            let path = out.run_dir.join("summary.json");
            let json =
                serde_json::to_string_pretty(&summary).map_err(|e| Error::json(path.display().to_string(), e))?;
            fs::write(&path, json).map_err(|e| Error::unwritable(path.clone(), e))?;
        }
        Ok(summary)
    }
}

/// Whether the run autocasts to bf16 (`run.autocast`), set up for CUDA; the CPU has none.
fn enable_autocast(config: &TrainConfig, device: Device) -> Result<bool> {
    let autocast = config.run.autocast == Autocast::Bf16;
    if autocast {
        if device == Device::Cpu {
            return Err(Error::value(
                "run.autocast",
                "\"off\" on the CPU (bf16 autocast is for CUDA)",
                "bf16",
            ));
        }
        set_cuda_autocast_kind(Kind::BFloat16)?;
    }
    Ok(autocast)
}

/// The latest checkpoint's state, its parameters and optimiser state restored into `vs` and
/// `opt` (`fresh` when there is none); the metrics lines after its step are dropped, as the
/// run replays those steps.
fn resume_state(
    ckpt_dir: &Path,
    metrics_path: &Path,
    vs: &nn::VarStore,
    opt: &mut Optimizer,
    fresh: RunState,
) -> Result<RunState> {
    let state = match checkpoint::load_verified(ckpt_dir)? {
        Some(loaded) => {
            for (path, why) in &loaded.rejected {
                eprintln!(
                    "warning: checkpoint {} fails verification ({why}); resuming from {}",
                    path.display(),
                    loaded.path.display()
                );
            }
            restore(&loaded.path, vs, opt, loaded.tensors)?;
            loaded.state
        }
        None => fresh,
    };
    truncate_metrics(metrics_path, state.step)?;
    Ok(state)
}

/// The outputs of rank 0 (or the only process) in the run folder `dirs` names, and the state
/// the run starts from: the latest checkpoint's when resuming (its tensors restored into `vs`
/// and `opt`), else a fresh one. Other ranks (no `dirs`) write nothing and start fresh until
/// rank 0's state reaches them.
fn open_outputs(
    dirs: Option<(PathBuf, PathBuf)>,
    resume: bool,
    vs: &nn::VarStore,
    opt: &mut Optimizer,
    config: &TrainConfig,
) -> Result<(Option<Outputs>, RunState)> {
    let fresh = RunState {
        step: 0,
        rng: SeededRng::new(config.run.seed).state(),
        schedule: config.strategy.build()?,
        best_val: None,
        layout: None,
    };
    let Some((run_dir, ckpt_dir)) = dirs else {
        return Ok((None, fresh));
    };
    let metrics_path = run_dir.join("metrics.jsonl");
    let state = if resume {
        resume_state(&ckpt_dir, &metrics_path, vs, opt, fresh)?
    } else {
        let _ = fs::remove_file(&metrics_path);
        fresh
    };
    let metrics = fs::OpenOptions::new()
        .create(true)
        .append(true)
        .open(&metrics_path)
        .map_err(|e| Error::unwritable(metrics_path.clone(), e))?;
    let outputs = Outputs {
        run_dir,
        ckpt_dir,
        metrics,
        metrics_path,
    };
    Ok((Some(outputs), state))
}

/// Every rank from rank 0's start: its run state (fresh or resumed), its model variables and
/// its optimiser buffers, so that the ranks begin as one model wherever each read its data.
fn start_together(parallel: &DataParallel, vs: &nn::VarStore, opt: &Optimizer, state: RunState) -> Result<RunState> {
    let state = parallel.broadcast_value(state)?;
    let tensors: Vec<Tensor> = checkpoint_tensors(vs, opt).into_iter().map(|(_, t)| t).collect();
    parallel.broadcast(&tensors)?;
    Ok(state)
}

/// The model's variables that are not trained, in name order.
fn untrained(vs: &nn::VarStore) -> Vec<Tensor> {
    let mut named: Vec<(String, Tensor)> = vs.variables().into_iter().filter(|(_, t)| !t.requires_grad()).collect();
    named.sort_by(|a, b| a.0.cmp(&b.0));
    named.into_iter().map(|(_, t)| t).collect()
}

/// FNV-1a (64 bits) over the names and bytes of the model's variables, in name order.
fn digest(vs: &nn::VarStore) -> Result<String> {
    let mut named: Vec<(String, Tensor)> = vs.variables().into_iter().collect();
    named.sort_by(|a, b| a.0.cmp(&b.0));
    let mut hash: u64 = 0xcbf2_9ce4_8422_2325;
    let mut add = |bytes: &[u8]| {
        for &b in bytes {
            hash = (hash ^ u64::from(b)).wrapping_mul(0x0100_0000_01b3);
        }
    };
    for (name, t) in named {
        let t = read_back(&t.detach()).contiguous();
        let numel = t.numel();
        let mut bytes = vec![0u8; numel * t.kind().elt_size_in_bytes()];
        t.f_copy_data_u8(&mut bytes, numel)?;
        add(name.as_bytes());
        add(&bytes);
    }
    Ok(format!("{hash:016x}"))
}

/// With `run.diagnostics`, on the process that writes the run (`lead`): the fixed batch the
/// zero shares are measured on, and BENR over the parameters; else neither.
fn diagnostics(
    config: &TrainConfig,
    task: &TaskData,
    params: &[Tensor],
    device: Device,
    lead: bool,
) -> Result<(Option<Tensor>, Option<Benr>)> {
    if !(config.run.diagnostics && lead) {
        return Ok((None, None));
    }
    let probe_batch = task.fixed_batch(256, 1, device)?.0;
    let benr = Benr::new(&params.iter().collect::<Vec<_>>())?;
    Ok((Some(probe_batch), Some(benr)))
}

/// This rank's training batches from step `first` to the run's end, on `device`, prefetched
/// two ahead with `run.prefetch`.
fn batches_from(
    config: &TrainConfig,
    task: &TaskData,
    steps: &Steps,
    first: u64,
    (rank, world): (usize, usize),
    device: Device,
) -> Batches {
    let order = BatchOrder {
        seed: config.run.seed,
        batch: steps.batch,
        per_epoch: steps.per_epoch,
        rank,
        world,
    };
    Batches::new(
        &task.train,
        task.train_stream.clone(),
        (order, device),
        first,
        steps.end,
        if config.run.prefetch { 2 } else { 0 },
    )
}

/// `<out_dir>/<name>` with the resolved config.toml written into it, and its checkpoint folder;
/// a new run may not reuse a folder that has checkpoints.
fn open_run_dir(config: &TrainConfig, resume: bool) -> Result<(PathBuf, PathBuf)> {
    let run_dir: PathBuf = config.run.out_dir.join(&config.run.name);
    let ckpt_dir = run_dir.join("checkpoints");
    let has_checkpoints = checkpoint::exists(&ckpt_dir);
    if !resume && has_checkpoints {
        return Err(Error::value(
            "run.name",
            format!(
                "a new run name ({}/ has checkpoints: pass --resume to continue it)",
                run_dir.display()
            ),
            &config.run.name,
        ));
    }
    fs::create_dir_all(&run_dir).map_err(|e| Error::unwritable(run_dir.clone(), e))?;
    // A resumed run's config.toml stays the record of what ran; changes that may be made are
    // appended to it, others refuse the resume.
    if resume && has_checkpoints {
        super::resume::reconcile(&run_dir, config)?;
    } else {
        super::resume::write_record(&run_dir.join("config.toml"), config)?;
    }
    Ok((run_dir, ckpt_dir))
}

/// The run's bar: inside `progress_group` when given, on stderr with `progress`, else (and on
/// ranks other than 0, not `lead`) hidden.
fn progress_bar(options: &TrainOptions<'_>, lead: bool, end: u64, position: u64) -> ProgressBar {
    let bar = match (options.progress_group, options.progress) {
        _ if !lead => ProgressBar::hidden(),
        (Some(group), _) => group.add(ProgressBar::new(end)),
        (None, true) => ProgressBar::new(end),
        (None, false) => ProgressBar::hidden(),
    };
    bar.set_style(
        ProgressStyle::with_template("{bar:30} {pos}/{len} [{elapsed_precise}<{eta_precise}] {per_sec} {msg}")
            .unwrap_or_else(|_| ProgressStyle::default_bar()),
    );
    bar.set_position(position);
    bar
}

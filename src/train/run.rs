//! The training loop: the strategy engine's plan -> fused Mixup on u8 images -> forward -> fused
//! loss with High-Loss Removal -> backward -> SGD, with step-granular evaluation feeding the
//! phase controller, metrics.jsonl, atomic checkpoints every epoch (and on interrupt), and resume.
//!
//! Resuming reproduces a straight run bit for bit on the CPU (same parameters, optimiser state,
//! RNG, schedule and metrics) as long as the process runs one training at a time: libtorch's
//! CPU reductions split work by the threads they get, and concurrent trainings share them.

use std::cell::Cell;
use std::fs;
use std::io::Write;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Instant;

use indicatif::{ProgressBar, ProgressStyle};
use serde::{Deserialize, Serialize};
use tch::{nn, Device, Kind, Tensor};

use super::autocast::set_cuda_autocast_kind;
use super::checkpoint::{self, NamedTensors, RunState};
use super::config::{Autocast, TrainConfig};
use super::optim::{cosine_lr, Optimizer};
use super::prefetch::{BatchOrder, Batches};
use super::task::TaskData;
use crate::error::{Error, Result};
use crate::ops::stats::Benr;
use crate::rng::SeededRng;
use crate::strategy::{EpEndInfo, Monitor};

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
    pub ep_end: Option<EpEndInfo>,
    pub wall_seconds: f64,
    pub samples_per_second: f64,
    pub timing: Timing,
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
    /// Backward pass and optimiser step.
    pub backward_seconds: f64,
    pub eval_seconds: f64,
}

impl std::fmt::Display for Timing {
    /// Per training step, in milliseconds: the whole step and each part.
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let per_step = |s: f64| 1e3 * s / self.steps.max(1) as f64;
        let step = per_step(self.data_seconds + self.strategy_seconds + self.forward_seconds + self.backward_seconds);
        let strategy = per_step(self.strategy_seconds);
        write!(
            f,
            "step {step:.2} ms: data {:.3}, strategy ops {strategy:.3} ({:.2}%), forward {:.2}, backward+step {:.2}",
            per_step(self.data_seconds),
            100.0 * strategy / step,
            per_step(self.forward_seconds),
            per_step(self.backward_seconds)
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
}

/// Named tensors of a checkpoint: the model's variables and the optimiser's buffers.
fn checkpoint_tensors(vs: &nn::VarStore, opt: &Optimizer) -> NamedTensors {
    let mut named: Vec<(String, Tensor)> = vs.variables().into_iter().map(|(k, v)| (format!("model.{k}"), v)).collect();
    named.sort_by(|a, b| a.0.cmp(&b.0));
    named.extend(opt.buffers().iter().enumerate().map(|(i, b)| (format!("optim.{i}"), b.shallow_clone())));
    named
}

fn restore(vs: &nn::VarStore, opt: &mut Optimizer, saved: NamedTensors) -> Result<()> {
    let vars = vs.variables();
    let mut buffers = Vec::new();
    for (name, t) in saved {
        if let Some(i) = name.strip_prefix("optim.") {
            let i: usize = i.parse().map_err(|_| Error::Config(format!("checkpoint tensor `{name}` is not an optimiser buffer")))?;
            buffers.push((i, t));
        } else if let Some(v) = name.strip_prefix("model.").and_then(|k| vars.get(k)) {
            let mut v = v.shallow_clone();
            tch::no_grad(|| v.copy_(&t));
        } else {
            return Err(Error::Config(format!("checkpoint tensor `{name}` does not belong to this model")));
        }
    }
    buffers.sort_by_key(|(i, _)| *i);
    let buffers: Vec<Tensor> = buffers.into_iter().map(|(_, t)| t).collect();
    opt.load_buffers(&buffers);
    Ok(())
}

/// Keeps the metrics lines of steps before `step` (those after the last checkpoint are replayed).
fn truncate_metrics(path: &Path, step: u64) -> Result<()> {
    let Ok(text) = fs::read_to_string(path) else { return Ok(()) };
    let kept: String = text
        .lines()
        .filter(|l| serde_json::from_str::<MetricsLine>(l).map(|m| m.step < step).unwrap_or(false))
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
    pub interrupt: Option<&'a AtomicBool>,
}

/// Trains as `config` says.
pub fn train(config: &TrainConfig, options: &TrainOptions<'_>) -> Result<Summary> {
    let TrainOptions { resume, progress, progress_group, interrupt } = *options;
    config.validate()?;
    crate::tune_cpu_allocator();
    let started = Instant::now();
    let device = config.run.device.device()?;
    let autocast = config.run.autocast == Autocast::Bf16;
    if autocast {
        if device == Device::Cpu {
            return Err(Error::value("run.autocast", "\"off\" on the CPU (bf16 autocast is for CUDA)", "bf16"));
        }
        set_cuda_autocast_kind(Kind::BFloat16)?;
    }
    let seed = config.run.seed;
    let run_dir: PathBuf = config.run.out_dir.join(&config.run.name);
    let ckpt_dir = run_dir.join("checkpoints");
    if !resume && ckpt_dir.join("latest").exists() {
        return Err(Error::value("run.name", format!("a new run name (runs/{}/ has checkpoints: pass --resume to continue it)", config.run.name), &config.run.name));
    }
    fs::create_dir_all(&run_dir).map_err(|e| Error::unwritable(run_dir.clone(), e))?;
    fs::write(run_dir.join("config.toml"), config.to_toml()?).map_err(|e| Error::unwritable(run_dir.join("config.toml"), e))?;

    let task = TaskData::load(config, device)?;
    tch::manual_seed(seed as i64);
    let vs = nn::VarStore::new(device);
    let model = task.build_model(config, &vs);
    // The model's forward pass in training mode, timed, under bf16 autocast when asked.
    let forward_time = Cell::new(0.0f64);
    let forward_train = |x: &Tensor| {
        let t = Instant::now();
        let out = tch::autocast(autocast, || model.forward(x, true, false).0);
        forward_time.set(forward_time.get() + t.elapsed().as_secs_f64());
        out
    };
    let forward_eval = |x: &Tensor| tch::autocast(autocast, || model.forward(x, false, false).0);
    let o = &config.optim;
    let params = vs.trainable_variables();
    let mut opt = Optimizer::from_config(o, params.iter().map(Tensor::shallow_clone).collect());
    let mut state = RunState { step: 0, rng: SeededRng::new(seed).state(), schedule: config.strategy.build()?, best_val: None };
    let metrics_path = run_dir.join("metrics.jsonl");
    if resume {
        if let Some((saved, tensors)) = checkpoint::load(&ckpt_dir)? {
            restore(&vs, &mut opt, tensors)?;
            state = saved;
        }
        truncate_metrics(&metrics_path, state.step)?;
    } else {
        let _ = fs::remove_file(&metrics_path);
    }
    let mut metrics = fs::OpenOptions::new().create(true).append(true).open(&metrics_path)
        .map_err(|e| Error::unwritable(metrics_path.clone(), e))?;

    let batch = config.data.batch_size.min(task.train.len());
    let per_epoch = (task.train.len() / batch).max(1) as u64;
    let total = per_epoch * o.epochs as u64;
    let end = config.run.max_steps.map_or(total, |m| m.min(total));
    let warmup = (o.warmup_epochs * per_epoch as f64) as u64;
    let mut rng = SeededRng::from_state(state.rng);
    let bar = match (progress_group, progress) {
        (Some(group), _) => group.add(ProgressBar::new(end)),
        (None, true) => ProgressBar::new(end),
        (None, false) => ProgressBar::hidden(),
    };
    bar.set_style(ProgressStyle::with_template("{bar:30} {pos}/{len} [{elapsed_precise}<{eta_precise}] {per_sec} {msg}").unwrap_or_else(|_| ProgressStyle::default_bar()));
    bar.set_position(state.step);
    let first_step = state.step;
    let higher_is_better = task.higher_is_better();
    let diagnostics = config.run.diagnostics;
    let probe_batch = if diagnostics { Some(task.fixed_batch(256, 1, device)?.0) } else { None };
    let param_refs: Vec<&Tensor> = params.iter().collect();
    // BENR of a resumed epoch covers the steps since the resume.
    let mut benr = if diagnostics { Some(Benr::new(&param_refs)?) } else { None };
    let order = BatchOrder { seed, batch, per_epoch };
    let mut batches = Batches::new(&task.train, order, state.step, end, if config.run.prefetch { 2 } else { 0 });
    let mut timing = Timing::default();

    let (mut loss_sum, mut correct_sum) = (Tensor::zeros([], (Kind::Float, device)), Tensor::zeros([], (Kind::Int64, device)));
    let (mut window_steps, mut window_predictions) = (0u64, 0i64);
    let mut last_val = f64::NAN;
    for step in state.step..end {
        let epoch = (step / per_epoch) as u32;
        let t_data = Instant::now();
        let (x, y) = batches.next().ok_or_else(|| Error::Config("the batch prefetch thread stopped".into()))?;
        let mut x = x.to_device(device);
        if config.data.augment {
            x = crate::data::random_crop_flip(&x, config.data.pad, true, &mut rng)?;
        }
        let y = y.to_device(device);
        let t_ops = Instant::now();
        let forward_before = forward_time.get();
        let plan = state.schedule.plan(step, epoch, &mut rng);
        let out = task.step(&forward_train, &x, &y, &plan, &mut rng)?;
        let t_backward = Instant::now();
        let lr = cosine_lr(o.lr, step, warmup, total);
        opt.zero_grad();
        out.loss.backward();
        opt.step(lr, step + 1);
        if let Some(b) = benr.as_mut() {
            b.step(&param_refs)?;
        }
        let forward = forward_time.get() - forward_before;
        timing.steps += 1;
        timing.data_seconds += (t_ops - t_data).as_secs_f64();
        timing.strategy_seconds += (t_backward - t_ops).as_secs_f64() - forward;
        timing.forward_seconds += forward;
        timing.backward_seconds += t_backward.elapsed().as_secs_f64();
        loss_sum += &out.reported.to_kind(Kind::Float);
        correct_sum += &out.correct;
        window_steps += 1;
        window_predictions += out.predictions;

        let t_eval = Instant::now();
        let evaluate_now = state.schedule.eval_due(step) || (step + 1) % config.run.eval_every == 0 || step + 1 == end;
        let val = if evaluate_now { Some(task.evaluate(&forward_eval, &task.val, device)?) } else { None };
        let epoch_ends = (step + 1) % per_epoch == 0;
        let log_now = (step + 1) % config.run.log_every == 0 || val.is_some() || (diagnostics && epoch_ends);
        if log_now {
            let mean_loss = loss_sum.double_value(&[]) / window_steps as f64;
            let train_acc = (window_predictions > 0).then(|| correct_sum.int64_value(&[]) as f64 / window_predictions as f64);
            if !mean_loss.is_finite() {
                bar.abandon();
                return Err(Error::value("loss", "a finite training loss (the last checkpoint is kept)", format!("{mean_loss} at step {step}")));
            }
            if let Some(v) = val {
                last_val = v.metric;
                let better = |a: f64, b: f64| if higher_is_better { a.max(b) } else { a.min(b) };
                state.best_val = Some(state.best_val.map_or(v.metric, |b| better(b, v.metric)));
                // Forecasting's metric is an MSE; its configurations cannot end the EP on accuracy.
                if let Some(end) = state.schedule.observe(Monitor::Val, v.metric, step, epoch) {
                    bar.println(format!("{end} (validation)"));
                }
            }
            if let Some(acc) = train_acc {
                if let Some(end) = state.schedule.observe(Monitor::TrainClean, acc, step, epoch) {
                    bar.println(format!("{end} (train-clean)"));
                }
            }
            let zero_share = match &probe_batch {
                Some(b) => Some(model.zero_shares(b)?),
                None => None,
            };
            let benr_value = match benr.as_mut() {
                Some(b) if epoch_ends => Some(b.end_epoch(&param_refs)?),
                _ => None,
            };
            let line = MetricsLine {
                step,
                epoch,
                lr,
                loss: mean_loss,
                train_accuracy: train_acc,
                in_ep: plan.in_ep,
                alpha: plan.mix.alpha,
                drop_share: plan.drop_share,
                val: val.map(|v| v.metric),
                val_loss: val.map(|v| v.loss),
                zero_share,
                benr: benr_value,
            };
            writeln!(metrics, "{}", serde_json::to_string(&line).map_err(|e| Error::Config(e.to_string()))?)
                .map_err(|e| Error::unwritable(metrics_path.clone(), e))?;
            let acc = train_acc.map(|a| format!(" acc {a:.3}")).unwrap_or_default();
            bar.set_message(format!("loss {mean_loss:.4}{acc} {}", if plan.in_ep { "in EP" } else { "after EP" }));
            loss_sum = loss_sum.zeros_like();
            correct_sum = correct_sum.zeros_like();
            (window_steps, window_predictions) = (0, 0);
        }
        timing.eval_seconds += t_eval.elapsed().as_secs_f64();
        bar.inc(1);
        let interrupted = interrupt.is_some_and(|flag| flag.swap(false, Ordering::SeqCst));
        if interrupted || epoch_ends || step + 1 == end {
            state.step = step + 1;
            state.rng = rng.state();
            let saved = checkpoint::save(&ckpt_dir, &state, &checkpoint_tensors(&vs, &opt))?;
            if interrupted {
                bar.abandon();
                return Err(Error::Interrupted { step: state.step, checkpoint: saved });
            }
        }
    }
    bar.finish_and_clear();
    let test = task.evaluate(&forward_eval, &task.test, device)?;
    let wall = started.elapsed().as_secs_f64();
    let summary = Summary {
        name: config.run.name.clone(),
        strategy: state.schedule.strategy().to_string(),
        task: format!("{:?}", task.task).to_lowercase(),
        metric: task.metric_name().into(),
        higher_is_better,
        steps: end,
        epochs: end as f64 / per_epoch as f64,
        final_val: last_val,
        best_val: state.best_val.unwrap_or(f64::NAN),
        test: test.metric,
        test_loss: test.loss,
        ep_end: state.schedule.phase().ended(),
        wall_seconds: wall,
        samples_per_second: (end.saturating_sub(first_step) * batch as u64) as f64 / wall,
        timing,
    };
    let json = serde_json::to_string_pretty(&summary).map_err(|e| Error::Config(e.to_string()))?;
    fs::write(run_dir.join("summary.json"), json).map_err(|e| Error::unwritable(run_dir.join("summary.json"), e))?;
    Ok(summary)
}

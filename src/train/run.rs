//! The training loop: the strategy engine's plan -> fused Mixup on u8 images -> forward -> fused
//! loss with High-Loss Removal -> backward -> SGD, with step-granular evaluation feeding the
//! phase controller, metrics.jsonl, atomic checkpoints every epoch (and on interrupt), and resume.
//!
//! Resuming reproduces a straight run bit for bit on the CPU (same parameters, optimiser state,
//! RNG, schedule and metrics) as long as the process runs one training at a time: libtorch's
//! CPU reductions split work by the threads they get, and concurrent trainings share them.

use std::fs;
use std::io::Write;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Instant;

use indicatif::{ProgressBar, ProgressStyle};
use serde::{Deserialize, Serialize};
use tch::{nn, Device, Kind, Tensor};

use super::checkpoint::{self, NamedTensors, RunState};
use super::config::{Dataset, DeviceChoice, ModelName, OpsChoice, OptimKind, TrainConfig};
use super::optim::{cosine_lr, Optimizer, Rule};
use crate::data::{self, ImageSet, Splits};
use crate::error::{Error, Result};
use crate::models::{preact_resnet18, resnet18, small_cnn, Classifier};
use crate::ops::loss::{cross_entropy_autograd, reference as loss_reference, CrossEntropy, Targets};
use crate::ops::mixup::{mix_batch_composite, mix_images, Lambda, Normalize, Pairing};
use crate::rng::SeededRng;
use crate::strategy::{EpEndInfo, Monitor};

/// What `summary.json` holds.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Summary {
    pub name: String,
    pub strategy: String,
    pub steps: u64,
    pub epochs: f64,
    pub final_val_accuracy: f64,
    pub best_val_accuracy: f64,
    pub test_accuracy: f64,
    pub ep_end: Option<EpEndInfo>,
    pub wall_seconds: f64,
    pub samples_per_second: f64,
}

/// One line of `metrics.jsonl`.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct MetricsLine {
    pub step: u64,
    pub epoch: u32,
    pub lr: f64,
    /// Mean reported loss over the steps since the previous line.
    pub loss: f64,
    /// Share of those steps' samples whose argmax was y_a.
    pub train_accuracy: f64,
    pub in_ep: bool,
    pub alpha: f64,
    pub drop_share: f64,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub val_accuracy: Option<f64>,
}

/// A file of the run directory could not be written.
fn unwritable(path: PathBuf, e: impl std::fmt::Display) -> Error {
    Error::Data { path, problem: e.to_string(), hint: "the output folder must be writable".into() }
}

fn pick_device(choice: DeviceChoice) -> Result<Device> {
    match choice {
        DeviceChoice::Cpu => Ok(Device::Cpu),
        DeviceChoice::Cuda => crate::cuda::probe().map(|_| Device::Cuda(0)).map_err(Error::from),
        DeviceChoice::Auto => Ok(if crate::cuda::probe().is_ok() { Device::Cuda(0) } else { Device::Cpu }),
    }
}

fn load_data(config: &TrainConfig) -> Result<Splits> {
    let d = &config.data;
    let folder = |name: &str| d.dir.clone().unwrap_or_else(|| data::data_dir().join(name));
    let (train, test) = match d.dataset {
        Dataset::FashionMnist => data::fashion_mnist(&folder("fashion-mnist"))?,
        Dataset::Cifar10 => data::cifar10(&d.dir.clone().unwrap_or_else(data::data_dir))?,
        Dataset::Cifar100 => data::cifar100(&d.dir.clone().unwrap_or_else(data::data_dir))?,
        Dataset::Digits => {
            // 1,797 images and no official split: a seeded fifth is the test set.
            let all = data::sklearn_digits(&folder("digits").join("digits.csv.gz"))?;
            let order = SeededRng::new(config.run.seed ^ 0xD161_7500).permutation(all.len() as usize);
            let cut = all.len() as usize / 5;
            (all.select(&Tensor::from_slice(&order[cut..])), all.select(&Tensor::from_slice(&order[..cut])))
        }
    };
    data::split(train, test, d.val_fraction, d.subset, config.run.seed)
}

fn build_model(name: ModelName, vs: &nn::VarStore, images: &ImageSet) -> Box<dyn Classifier> {
    let s = images.images.size();
    let (c, h, w) = (s[1], s[2], s[3]);
    match name {
        ModelName::SmallCnn => Box::new(small_cnn(&vs.root(), c, h, w, images.classes)),
        ModelName::Resnet18 => Box::new(resnet18(&vs.root(), c, images.classes)),
        ModelName::PreactResnet18 => Box::new(preact_resnet18(&vs.root(), c, images.classes)),
    }
}

/// Accuracy of `model` on `set` (eval mode, batches of 512).
fn evaluate(model: &dyn Classifier, set: &ImageSet, norm: &Normalize, device: Device) -> Result<f64> {
    if set.is_empty() {
        return Ok(f64::NAN);
    }
    let mut correct = Tensor::zeros([], (Kind::Int64, device));
    let n = set.len();
    tch::no_grad(|| -> Result<()> {
        for start in (0..n).step_by(512) {
            let len = 512.min(n - start);
            let x = crate::ops::mixup::mixup_u8(&set.images.narrow(0, start, len).to_device(device), norm, &Lambda::Batch(1.0), &Pairing::Flip, Kind::Float)?;
            let (logits, _) = model.forward(&x, false, false);
            correct += logits.argmax(1, false).eq_tensor(&set.labels.narrow(0, start, len).to_device(device)).sum(Kind::Int64);
        }
        Ok(())
    })?;
    Ok(correct.int64_value(&[]) as f64 / n as f64)
}

/// The data order of one epoch: a permutation from the run's seed and the epoch number, so a
/// resumed run replays the same order from the step alone.
fn epoch_order(seed: u64, epoch: u32, n: usize) -> Vec<i64> {
    SeededRng::new(seed.wrapping_mul(0x9E37_79B9).wrapping_add(epoch as u64 + 1)).permutation(n)
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
    fs::write(path, kept).map_err(|e| unwritable(path.to_path_buf(), e))
}

/// How a training call behaves, besides its configuration.
#[derive(Debug, Default, Clone, Copy)]
pub struct TrainOptions<'a> {
    /// Continue from the run's latest checkpoint.
    pub resume: bool,
    /// Draw a progress bar on stderr.
    pub progress: bool,
    /// Checked after every step: when set, the run writes a checkpoint and returns
    /// `Error::Interrupted` (the CLI sets it from Ctrl-C). The library installs no handler.
    pub interrupt: Option<&'a AtomicBool>,
}

/// Trains as `config` says.
pub fn train(config: &TrainConfig, options: &TrainOptions<'_>) -> Result<Summary> {
    let TrainOptions { resume, progress, interrupt } = *options;
    config.validate()?;
    crate::tune_cpu_allocator();
    let started = Instant::now();
    let device = pick_device(config.run.device)?;
    let seed = config.run.seed;
    let run_dir: PathBuf = config.run.out_dir.join(&config.run.name);
    let ckpt_dir = run_dir.join("checkpoints");
    if !resume && ckpt_dir.join("latest").exists() {
        return Err(Error::value("run.name", format!("a new run name (runs/{}/ has checkpoints: pass --resume to continue it)", config.run.name), &config.run.name));
    }
    fs::create_dir_all(&run_dir).map_err(|e| unwritable(run_dir.clone(), e))?;
    fs::write(run_dir.join("config.toml"), config.to_toml()?).map_err(|e| unwritable(run_dir.join("config.toml"), e))?;

    let splits = load_data(config)?;
    let (mean, std) = splits.train.channel_stats();
    let norm = Normalize::new(&mean, &std, device)?;
    // The composite mode normalises with tch ops: per-channel mean and std as [1, C, 1, 1].
    let channels = mean.len() as i64;
    let composite_norm = (
        Tensor::from_slice(&mean).to_kind(Kind::Float).view([1, channels, 1, 1]).to_device(device),
        Tensor::from_slice(&std).to_kind(Kind::Float).view([1, channels, 1, 1]).to_device(device),
    );
    tch::manual_seed(seed as i64);
    let vs = nn::VarStore::new(device);
    let model = build_model(config.model.name, &vs, &splits.train);
    let o = &config.optim;
    let rule = match o.kind {
        OptimKind::Sgd => Rule::Sgd { momentum: o.momentum, nesterov: o.nesterov },
        OptimKind::Adamw => Rule::AdamW { beta1: o.betas[0], beta2: o.betas[1], eps: o.eps },
    };
    let mut opt = Optimizer::new(vs.trainable_variables(), rule, o.weight_decay, o.clip_norm);
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
        .map_err(|e| unwritable(metrics_path.clone(), e))?;

    let batch = config.data.batch_size.min(splits.train.len());
    let per_epoch = (splits.train.len() / batch).max(1) as u64;
    let total = per_epoch * o.epochs as u64;
    let end = config.run.max_steps.map_or(total, |m| m.min(total));
    let warmup = (o.warmup_epochs * per_epoch as f64) as u64;
    let mut rng = SeededRng::from_state(state.rng);
    let bar = if progress { ProgressBar::new(end) } else { ProgressBar::hidden() };
    bar.set_style(ProgressStyle::with_template("{bar:30} {pos}/{len} [{elapsed_precise}<{eta_precise}] {per_sec} {msg}").unwrap_or_else(|_| ProgressStyle::default_bar()));
    bar.set_position(state.step);
    let first_step = state.step;

    let (mut loss_sum, mut correct_sum) = (Tensor::zeros([], (Kind::Float, device)), Tensor::zeros([], (Kind::Int64, device)));
    let (mut window_steps, mut window_samples) = (0u64, 0i64);
    // The data order of the current epoch, and which epoch it belongs to.
    let (mut order_epoch, mut order): (Option<u32>, Vec<i64>) = (None, Vec::new());
    let mut last_val = f64::NAN;
    for step in state.step..end {
        let epoch = (step / per_epoch) as u32;
        let pos = (step % per_epoch) as usize;
        if order_epoch != Some(epoch) {
            (order_epoch, order) = (Some(epoch), epoch_order(seed, epoch, splits.train.len() as usize));
        }
        let rows = &order[pos * batch as usize..(pos + 1) * batch as usize];
        let idx = Tensor::from_slice(rows);
        let mut x_u8 = splits.train.images.index_select(0, &idx).to_device(device);
        if config.data.augment {
            x_u8 = data::random_crop_flip(&x_u8, config.data.pad, true, &mut rng)?;
        }
        let y = splits.train.labels.index_select(0, &idx).to_device(device);
        let plan = state.schedule.plan(step, epoch, &mut rng);
        let opts = CrossEntropy { label_smoothing: o.label_smoothing, ignore_index: None, drop_share: plan.drop_share };
        let (loss, batch_loss, batch_correct) = match config.run.ops {
            OpsChoice::Fused => {
                let (x, targets) = mix_images(&x_u8, &y, &norm, &plan.mix, &mut rng, Kind::Float)?;
                let (logits, _) = model.forward(&x, true, false);
                let (loss, out) = cross_entropy_autograd(&logits, Targets::Mixed(&targets), &opts)?;
                (loss, out.loss, out.correct)
            }
            OpsChoice::Composite => {
                let x = (x_u8.to_kind(Kind::Float) / 255.0 - &composite_norm.0) / &composite_norm.1;
                let (x, targets) = mix_batch_composite(&x, &y, &plan.mix, &mut rng)?;
                let (logits, _) = model.forward(&x, true, false);
                let loss = loss_reference::composite(&logits, Targets::Mixed(&targets), &opts)?;
                let correct = logits.argmax(1, false).eq_tensor(&targets.y_a).sum(Kind::Int64);
                (loss.shallow_clone(), loss.detach(), correct)
            }
        };
        let lr = cosine_lr(o.lr, step, warmup, total);
        opt.zero_grad();
        loss.backward();
        opt.step(lr, step + 1);
        loss_sum += &batch_loss;
        correct_sum += &batch_correct;
        window_steps += 1;
        window_samples += batch;

        let evaluate_now = state.schedule.eval_due(step) || (step + 1) % config.run.eval_every == 0 || step + 1 == end;
        let val = if evaluate_now { Some(evaluate(model.as_ref(), &splits.val, &norm, device)?) } else { None };
        let log_now = (step + 1) % config.run.log_every == 0 || val.is_some();
        if log_now {
            let mean_loss = loss_sum.double_value(&[]) / window_steps as f64;
            let train_acc = correct_sum.int64_value(&[]) as f64 / window_samples as f64;
            if !mean_loss.is_finite() {
                bar.abandon();
                return Err(Error::value("loss", "a finite training loss (the last checkpoint is kept)", format!("{mean_loss} at step {step}")));
            }
            if let Some(v) = val {
                last_val = v;
                state.best_val = Some(state.best_val.map_or(v, |b| b.max(v)));
                if let Some(end) = state.schedule.observe(Monitor::Val, v, step, epoch) {
                    bar.println(format!("{end} (validation)"));
                }
            }
            if let Some(end) = state.schedule.observe(Monitor::TrainClean, train_acc, step, epoch) {
                bar.println(format!("{end} (train-clean)"));
            }
            let line = MetricsLine { step, epoch, lr, loss: mean_loss, train_accuracy: train_acc, in_ep: plan.in_ep, alpha: plan.mix.alpha, drop_share: plan.drop_share, val_accuracy: val };
            writeln!(metrics, "{}", serde_json::to_string(&line).map_err(|e| Error::Config(e.to_string()))?)
                .map_err(|e| unwritable(metrics_path.clone(), e))?;
            bar.set_message(format!("loss {mean_loss:.4} acc {train_acc:.3} {}", if plan.in_ep { "in EP" } else { "after EP" }));
            loss_sum = loss_sum.zeros_like();
            correct_sum = correct_sum.zeros_like();
            (window_steps, window_samples) = (0, 0);
        }
        bar.inc(1);
        let interrupted = interrupt.is_some_and(|flag| flag.swap(false, Ordering::SeqCst));
        if interrupted || (step + 1) % per_epoch == 0 || step + 1 == end {
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
    let test = evaluate(model.as_ref(), &splits.test, &norm, device)?;
    let wall = started.elapsed().as_secs_f64();
    let summary = Summary {
        name: config.run.name.clone(),
        strategy: state.schedule.strategy().to_string(),
        steps: end,
        epochs: end as f64 / per_epoch as f64,
        final_val_accuracy: last_val,
        best_val_accuracy: state.best_val.unwrap_or(f64::NAN),
        test_accuracy: test,
        ep_end: state.schedule.phase().ended(),
        wall_seconds: wall,
        samples_per_second: (end.saturating_sub(first_step) * batch as u64) as f64 / wall,
    };
    let json = serde_json::to_string_pretty(&summary).map_err(|e| Error::Config(e.to_string()))?;
    fs::write(run_dir.join("summary.json"), json).map_err(|e| unwritable(run_dir.join("summary.json"), e))?;
    Ok(summary)
}

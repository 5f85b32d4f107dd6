//! `enlighten analyze`: the paper's EP diagnostics for a classification configuration, from
//! short trainings of its model on its data:
//! - gradient interference at a few steps of a vanilla run: the cosine between the vanilla and
//!   the Mixup gradient over sample pairs (histogram, share below 0.5 and 0, interference ratio),
//!   and the batch-level cosine against the number of pairs and against model width;
//! - zero-activation shares per layer for vanilla training and Mixup at two alphas (Fig. 4);
//! - 2-D PCA embeddings of the penultimate features of three classes at those steps (Fig. 1).
//!
//! Writes `runs/<name>-analysis/{analysis.json, report.md, *.png}`.

mod plots;

use std::fmt::Write as _;
use std::path::PathBuf;

use serde::{Deserialize, Serialize};
use tch::{Device, Kind, Tensor};

use crate::error::{Error, Result};
use crate::models::Model;
use crate::train::{ModelName, ShortRuns, TaskKind, TrainConfig};
use enlighten::ops::loss::{reference as loss_reference, CrossEntropy, Targets};
use enlighten::ops::stats::{batch_interference, gradient_interference};
use enlighten::SeededRng;

/// How much to measure.
#[derive(Debug, Clone, PartialEq)]
pub struct AnalyzeOptions {
    /// Steps of each short training (the EP is short: 150 steps cover it on Fashion-MNIST).
    pub steps: u64,
    /// Evenly spaced measurement steps, the first at initialisation, the last at `steps`.
    pub snapshots: usize,
    /// Sample pairs for the pairwise cosines.
    pub pairs: usize,
    /// Pairs per batch for the batch-level cosine, each averaged over `repeats` draws.
    pub batch_sizes: Vec<usize>,
    pub repeats: usize,
    /// Mixup alphas compared with vanilla training for the zero-activation shares.
    pub alphas: [f64; 2],
    /// Model widths for the width ablation (small-cnn and resnet1d; empty: skipped).
    pub widths: Vec<i64>,
    /// Steps between zero-activation measurements.
    pub zero_every: u64,
    /// Mixing weight of the pairs.
    pub lam: f64,
}

impl Default for AnalyzeOptions {
    fn default() -> AnalyzeOptions {
        AnalyzeOptions {
            steps: 150,
            snapshots: 3,
            pairs: 64,
            batch_sizes: vec![1, 4, 16, 64],
            repeats: 8,
            alphas: [0.2, 1.0],
            widths: vec![8, 16, 32, 64],
            zero_every: 10,
            lam: 0.5,
        }
    }
}

/// The batch-level cosine and interference ratio at one batch size.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct BatchPoint {
    pub pairs: usize,
    pub mean_cosine: f64,
    pub mean_ratio: f64,
}

/// Interference and embeddings at one step of the vanilla run.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Snapshot {
    pub step: u64,
    pub cosines: Vec<f64>,
    pub mean_cosine: f64,
    pub share_below_half: f64,
    pub share_below_zero: f64,
    pub mean_ratio: f64,
    pub by_batch: Vec<BatchPoint>,
    /// (class, first, second principal component) of penultimate features.
    pub embedding: Vec<(i64, f64, f64)>,
}

/// The pairwise interference of a model of one width after `steps` vanilla steps.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct WidthPoint {
    pub width: i64,
    pub parameters: i64,
    pub mean_cosine: f64,
    pub mean_ratio: f64,
}

/// Zero-activation shares per layer over a short training.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ZeroTrace {
    pub label: String,
    pub alpha: f64,
    pub points: Vec<(u64, Vec<f64>)>,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Analysis {
    pub name: String,
    pub steps: u64,
    pub lam: f64,
    pub snapshots: Vec<Snapshot>,
    pub widths: Vec<WidthPoint>,
    pub zero_traces: Vec<ZeroTrace>,
}

/// Labelled inputs, as the model takes them, for the measurements.
struct Pool {
    x: Tensor,
    y: Tensor,
}

impl Pool {
    fn random_pairs(&self, count: usize, rng: &mut SeededRng) -> Vec<(i64, i64)> {
        let n = self.y.size()[0] as usize;
        let mut pairs = Vec::with_capacity(count);
        while pairs.len() < count {
            let perm = rng.permutation(n);
            pairs.extend(perm.chunks_exact(2).map(|c| (c[0], c[1])).take(count - pairs.len()));
        }
        pairs
    }
}

/// The mixed-target cross-entropy of the model in eval mode (batch norm on running statistics,
/// so one-sample batches are fine), differentiable in the parameters.
fn eval_loss<'a>(
    model: &'a dyn Model,
) -> impl Fn(&Tensor, &enlighten::ops::mixup::MixedTargets) -> enlighten::Result<Tensor> + 'a {
    move |x, t| {
        loss_reference::composite(
            &model.forward(x, false, false).0,
            Targets::Mixed(t),
            &CrossEntropy::default(),
        )
    }
}

/// The first two principal components of the penultimate features (the last probe) of up to
/// 100 pool samples of each of classes 0, 1 and 2.
fn embedding(model: &dyn Model, pool: &Pool) -> Result<Vec<(i64, f64, f64)>> {
    let labels = Vec::<i64>::try_from(pool.y.to_device(Device::Cpu))?;
    let mut rows = Vec::new();
    for class in 0..3 {
        rows.extend(
            labels
                .iter()
                .enumerate()
                .filter(|(_, &l)| l == class)
                .take(100)
                .map(|(i, _)| i as i64),
        );
    }
    if rows.len() < 3 {
        return Ok(Vec::new());
    }
    let idx = Tensor::from_slice(&rows).to_device(pool.x.device());
    let (_, probes) = tch::no_grad(|| model.forward(&pool.x.index_select(0, &idx), false, true));
    let Some(features) = probes.last() else {
        return Ok(Vec::new());
    };
    let f = features.flatten(1, -1).to_kind(Kind::Double).to_device(Device::Cpu);
    let centred = &f - f.mean_dim(0, true, Kind::Double);
    let (_, _, v) = centred.f_svd(true, true)?; // v: [d, k], the principal axes as columns
    let coords = centred.mm(&v.narrow(1, 0, 2.min(v.size()[1])));
    let flat = Vec::<f64>::try_from(coords.contiguous().view([-1]))?;
    let k = coords.size()[1] as usize;
    Ok(rows
        .iter()
        .enumerate()
        .map(|(i, &r)| {
            (
                labels[r as usize],
                flat[i * k],
                if k > 1 { flat[i * k + 1] } else { 0.0 },
            )
        })
        .collect())
}

/// Runs the analysis and writes its folder; returns the analysis and the folder.
pub fn analyze(config: &TrainConfig, opts: &AnalyzeOptions, progress: bool) -> Result<(Analysis, PathBuf)> {
    check(config, opts)?;
    enlighten::tune_cpu_allocator();
    let runs = ShortRuns::load(config)?;
    let (x, y) = runs.fixed_batch(512, 16)?;
    let mut study = Study {
        config,
        opts,
        runs,
        pool: Pool { x, y },
        rng: SeededRng::new(config.run.seed ^ 0xA11A),
    };
    let bar = if progress {
        indicatif::ProgressBar::new(4 + opts.widths.len() as u64)
    } else {
        indicatif::ProgressBar::hidden()
    };
    let say = |m: &str| bar.set_message(m.to_string());

    say("vanilla run: interference, embeddings, zero shares");
    let (snapshots, vanilla) = study.vanilla()?;
    let mut traces = vec![vanilla];
    bar.inc(1);
    for alpha in opts.alphas {
        say(&format!("Mixup alpha {alpha}: zero shares"));
        traces.push(study.mixup_trace(alpha)?);
        bar.inc(1);
    }
    let mut widths = Vec::new();
    if matches!(config.model.name, ModelName::SmallCnn | ModelName::Resnet1d) {
        for &w in &opts.widths {
            say(&format!("width {w}: interference after {} steps", opts.steps));
            widths.extend(study.width_point(w)?);
            bar.inc(1);
        }
    }
    bar.finish_and_clear();
    let analysis = Analysis {
        name: config.run.name.clone(),
        steps: opts.steps,
        lam: opts.lam,
        snapshots,
        widths,
        zero_traces: traces,
    };
    let dir = analysis.write(config)?;
    Ok((analysis, dir))
}

/// A classification configuration and options that measure something.
fn check(config: &TrainConfig, opts: &AnalyzeOptions) -> Result<()> {
    config.validate()?;
    let task_kind = config.data.dataset.task();
    if !matches!(task_kind, TaskKind::Image | TaskKind::Series) {
        return Err(Error::value(
            "data.dataset",
            "a classification dataset (Mixup's gradients need class labels)",
            format!("{:?}", config.data.dataset),
        ));
    }
    if opts.steps == 0 || opts.snapshots == 0 || opts.pairs == 0 || opts.repeats == 0 || opts.zero_every == 0 {
        return Err(Error::value(
            "options",
            "steps, snapshots, pairs, repeats and zero_every >= 1",
            format!("{opts:?}"),
        ));
    }
    Ok(())
}

/// The measurements' shared state: the loaded task, the pool and the pairs' generator (drawn
/// from in a fixed order: the vanilla run's snapshots, then the widths).
struct Study<'a> {
    config: &'a TrainConfig,
    opts: &'a AnalyzeOptions,
    runs: ShortRuns,
    pool: Pool,
    rng: SeededRng,
}

impl Study<'_> {
    /// The vanilla run: interference and embeddings at the snapshots, zero shares throughout.
    fn vanilla(&mut self) -> Result<(Vec<Snapshot>, ZeroTrace)> {
        let Study {
            config,
            opts,
            runs,
            pool,
            rng,
        } = self;
        let snapshot_steps: Vec<u64> = (0..opts.snapshots)
            .map(|i| {
                if opts.snapshots == 1 {
                    opts.steps
                } else {
                    opts.steps * i as u64 / (opts.snapshots as u64 - 1)
                }
            })
            .collect();
        let (mut snapshots, mut zero) = (Vec::new(), Vec::new());
        runs.run(config, 0.0, opts.steps, &mut |step, model, params| {
            if step % opts.zero_every == 0 || step == opts.steps {
                zero.push((step, model.zero_shares(&pool.x)?));
            }
            if snapshot_steps.contains(&step) {
                snapshots.push(snapshot(opts, pool, rng, step, model, params)?);
            }
            Ok(())
        })?;
        Ok((
            snapshots,
            ZeroTrace {
                label: "vanilla".into(),
                alpha: 0.0,
                points: zero,
            },
        ))
    }

    /// Zero shares throughout a run with Mixup at `alpha`.
    fn mixup_trace(&self, alpha: f64) -> Result<ZeroTrace> {
        let (opts, pool) = (self.opts, &self.pool);
        let mut points = Vec::new();
        self.runs.run(self.config, alpha, opts.steps, &mut |step, model, _| {
            if step % opts.zero_every == 0 || step == opts.steps {
                points.push((step, model.zero_shares(&pool.x)?));
            }
            Ok(())
        })?;
        Ok(ZeroTrace {
            label: format!("Mixup alpha = {alpha}"),
            alpha,
            points,
        })
    }

    /// The pairwise interference of the model at width `w` after the vanilla steps.
    fn width_point(&mut self, w: i64) -> Result<Option<WidthPoint>> {
        let Study {
            config,
            opts,
            runs,
            pool,
            rng,
        } = self;
        let mut c = (*config).clone();
        c.model.width = Some(w);
        let mut point = None;
        runs.run(&c, 0.0, opts.steps, &mut |step, model, params| {
            if step == opts.steps {
                let stats = gradient_interference(
                    params,
                    &pool.x,
                    &pool.y,
                    &pool.random_pairs(opts.pairs, rng),
                    opts.lam,
                    eval_loss(model),
                )?;
                let parameters = params.iter().map(|p| p.numel() as i64).sum();
                point = Some(WidthPoint {
                    width: w,
                    parameters,
                    mean_cosine: stats.mean_cosine,
                    mean_ratio: stats.mean_ratio,
                });
            }
            Ok(())
        })?;
        Ok(point)
    }
}

/// Interference over pairs and over batches of pairs, and the embedding, at one step.
fn snapshot(
    opts: &AnalyzeOptions,
    pool: &Pool,
    rng: &mut SeededRng,
    step: u64,
    model: &dyn Model,
    params: &[Tensor],
) -> Result<Snapshot> {
    let loss = eval_loss(model);
    let pairs = pool.random_pairs(opts.pairs, rng);
    let stats = gradient_interference(params, &pool.x, &pool.y, &pairs, opts.lam, &loss)?;
    let mut by_batch = Vec::new();
    for &b in &opts.batch_sizes {
        let b = b.min(pool.y.size()[0] as usize / 2).max(1);
        let (mut c, mut r) = (0.0, 0.0);
        for _ in 0..opts.repeats {
            let (cos, ratio) =
                batch_interference(params, &pool.x, &pool.y, &pool.random_pairs(b, rng), opts.lam, &loss)?;
            (c, r) = (c + cos, r + ratio);
        }
        by_batch.push(BatchPoint {
            pairs: b,
            mean_cosine: c / opts.repeats as f64,
            mean_ratio: r / opts.repeats as f64,
        });
    }
    Ok(Snapshot {
        step,
        mean_cosine: stats.mean_cosine,
        share_below_half: stats.share_below_half,
        share_below_zero: stats.share_below_zero,
        mean_ratio: stats.mean_ratio,
        cosines: stats.cosines,
        by_batch,
        embedding: embedding(model, pool)?,
    })
}

impl Analysis {
    /// Writes `<out_dir>/<name>-analysis/{analysis.json, report.md, *.png}`; returns the folder.
    fn write(&self, config: &TrainConfig) -> Result<PathBuf> {
        let dir = config.run.out_dir.join(format!("{}-analysis", config.run.name));
        std::fs::create_dir_all(&dir).map_err(|e| Error::unwritable(&dir, e))?;
        let pngs = plots::plot_analysis(self, &dir)?;
        let write = |name: &str, text: String| {
            std::fs::write(dir.join(name), text).map_err(|e| Error::unwritable(dir.join(name), e))
        };
        write(
            "analysis.json",
            serde_json::to_string_pretty(self)
                .map_err(|e| Error::json(dir.join("analysis.json").display().to_string(), e))?,
        )?;
        write("report.md", self.markdown(&pngs, &dir))?;
        Ok(dir)
    }

    /// The tables of the analysis.
    pub fn tables(&self) -> String {
        let mut t = format!(
            "Gradient interference during a vanilla run (pairs mixed at lambda = {}):\n\n| step | mean cos | share cos < 0.5 | share cos < 0 | interference ratio |{}\n|---|---|---|---|---|{}\n",
            self.lam,
            self.snapshots.first().map(|s| s.by_batch.iter().map(|b| format!(" batch cos, {} pairs |", b.pairs)).collect::<String>()).unwrap_or_default(),
            self.snapshots.first().map(|s| "---|".repeat(s.by_batch.len())).unwrap_or_default(),
        );
        for s in &self.snapshots {
            let _ = writeln!(
                t,
                "| {} | {:.3} | {:.3} | {:.3} | {:.3} |{}",
                s.step,
                s.mean_cosine,
                s.share_below_half,
                s.share_below_zero,
                s.mean_ratio,
                s.by_batch
                    .iter()
                    .map(|b| format!(" {:.3} |", b.mean_cosine))
                    .collect::<String>()
            );
        }
        if !self.widths.is_empty() {
            let _ = write!(t, "\nWidth ablation after {} vanilla steps:\n\n| width | parameters | mean cos | interference ratio |\n|---|---|---|---|\n", self.steps);
            for w in &self.widths {
                let _ = writeln!(
                    t,
                    "| {} | {} | {:.3} | {:.3} |",
                    w.width, w.parameters, w.mean_cosine, w.mean_ratio
                );
            }
        }
        let _ = write!(t, "\nZero-activation share (all probed layers, mean) at the end of {} steps:\n\n| training | share |\n|---|---|\n", self.steps);
        for z in &self.zero_traces {
            if let Some((_, shares)) = z.points.last() {
                let _ = writeln!(
                    t,
                    "| {} | {:.4} |",
                    z.label,
                    shares.iter().sum::<f64>() / shares.len().max(1) as f64
                );
            }
        }
        t
    }

    fn markdown(&self, pngs: &[PathBuf], dir: &std::path::Path) -> String {
        let mut md = format!("# Analysis `{}`\n\n{}\n", self.name, self.tables());
        for p in pngs {
            let rel = p.strip_prefix(dir).unwrap_or(p);
            let _ = writeln!(md, "![{}]({})\n", rel.display(), rel.display());
        }
        md
    }
}

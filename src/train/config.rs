//! `enlighten train`'s configuration: one TOML file, validated on load, written back resolved
//! into the run directory.
//!
//! ```toml
//! [run]
//! name = "fmnist-pause"     # runs/<name>/
//! seed = 0
//! device = "auto"           # auto | cpu | cuda
//! eval_every = 100          # steps between validation evaluations (the EP needs step granularity)
//! log_every = 20            # steps between metrics.jsonl lines
//!
//! [data]
//! dataset = "fashion-mnist" # fashion-mnist | digits | cifar10 | cifar100
//! subset = 1.0              # share of the training set kept (data-scale ablations)
//! val_fraction = 0.1
//! batch_size = 128
//! augment = false           # random crops (zero padding `pad`) and horizontal flips
//! pad = 4
//!
//! [model]
//! name = "small-cnn"        # small-cnn | resnet18 | preact-resnet18
//!
//! [optim]
//! kind = "sgd"              # sgd | adamw (betas = [0.9, 0.999], eps = 1e-8)
//! clip_norm = 5.0           # optional: clip gradients to this global norm
//! lr = 0.05
//! momentum = 0.9
//! nesterov = true
//! weight_decay = 5e-4
//! epochs = 5
//! warmup_epochs = 0.0
//! label_smoothing = 0.0
//!
//! [strategy]                # see strategy::StrategyConfig
//! kind = "mixup-pause"
//! ```

use std::path::PathBuf;

use serde::{Deserialize, Serialize};

use crate::error::{Error, Result};
use crate::strategy::StrategyConfig;

/// Where to run: `auto` is CUDA when the probe finds it, else the CPU.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, clap::ValueEnum)]
#[serde(rename_all = "kebab-case")]
pub enum DeviceChoice {
    Auto,
    Cpu,
    Cuda,
}

/// Which implementation of the strategy's ops a run uses: enlighten's fused ops, or the tch
/// composites a PyTorch user writes (to measure what the fused ops save in a real step).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum OpsChoice {
    Fused,
    Composite,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum Dataset {
    FashionMnist,
    Digits,
    Cifar10,
    Cifar100,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum ModelName {
    SmallCnn,
    Resnet18,
    PreactResnet18,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RunSection {
    pub name: String,
    #[serde(default)]
    pub seed: u64,
    #[serde(default = "default_device")]
    pub device: DeviceChoice,
    #[serde(default = "default_out_dir")]
    pub out_dir: PathBuf,
    #[serde(default = "default_eval_every")]
    pub eval_every: u64,
    #[serde(default = "default_log_every")]
    pub log_every: u64,
    /// Stop after this many steps in all (a budget; the schedule still spans `optim.epochs`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub max_steps: Option<u64>,
    #[serde(default = "default_ops")]
    pub ops: OpsChoice,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct DataSection {
    pub dataset: Dataset,
    /// Folder holding the dataset's files; default: enlighten::data::data_dir()/<dataset>.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub dir: Option<PathBuf>,
    #[serde(default = "one")]
    pub subset: f64,
    #[serde(default = "default_val_fraction")]
    pub val_fraction: f64,
    #[serde(default = "default_batch")]
    pub batch_size: i64,
    /// Random crops (zero padding `pad` on every side) and horizontal flips of each batch.
    #[serde(default)]
    pub augment: bool,
    #[serde(default = "default_pad")]
    pub pad: i64,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ModelSection {
    pub name: ModelName,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum OptimKind {
    Sgd,
    Adamw,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct OptimSection {
    #[serde(default = "default_optim")]
    pub kind: OptimKind,
    #[serde(default = "default_lr")]
    pub lr: f64,
    #[serde(default = "default_momentum")]
    pub momentum: f64,
    #[serde(default = "yes")]
    pub nesterov: bool,
    #[serde(default = "default_wd")]
    pub weight_decay: f64,
    #[serde(default = "default_epochs")]
    pub epochs: u32,
    #[serde(default)]
    pub warmup_epochs: f64,
    #[serde(default)]
    pub label_smoothing: f64,
    /// AdamW's (beta1, beta2) and epsilon.
    #[serde(default = "default_betas")]
    pub betas: [f64; 2],
    #[serde(default = "default_eps")]
    pub eps: f64,
    /// Clip gradients to this global norm.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub clip_norm: Option<f64>,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TrainConfig {
    pub run: RunSection,
    pub data: DataSection,
    pub model: ModelSection,
    pub optim: OptimSection,
    pub strategy: StrategyConfig,
}

fn default_device() -> DeviceChoice {
    DeviceChoice::Auto
}
fn default_ops() -> OpsChoice {
    OpsChoice::Fused
}
fn default_out_dir() -> PathBuf {
    PathBuf::from("runs")
}
fn default_eval_every() -> u64 {
    100
}
fn default_log_every() -> u64 {
    20
}
fn one() -> f64 {
    1.0
}
fn default_pad() -> i64 {
    4
}
fn default_val_fraction() -> f64 {
    0.1
}
fn default_batch() -> i64 {
    128
}
fn default_lr() -> f64 {
    0.05
}
fn default_momentum() -> f64 {
    0.9
}
fn yes() -> bool {
    true
}
fn default_optim() -> OptimKind {
    OptimKind::Sgd
}
fn default_betas() -> [f64; 2] {
    [0.9, 0.999]
}
fn default_eps() -> f64 {
    1e-8
}
fn default_wd() -> f64 {
    5e-4
}
fn default_epochs() -> u32 {
    5
}

impl TrainConfig {
    pub fn from_toml(text: &str) -> Result<TrainConfig> {
        let c: TrainConfig = toml::from_str(text).map_err(|e| Error::Config(e.to_string()))?;
        c.validate()?;
        Ok(c)
    }

    pub fn to_toml(&self) -> Result<String> {
        toml::to_string(self).map_err(|e| Error::Config(e.to_string()))
    }

    pub fn validate(&self) -> Result<()> {
        let r = &self.run;
        if r.name.is_empty() || r.name.contains(['/', '\\']) || r.name.starts_with('.') {
            return Err(Error::value("run.name", "a non-empty folder name without slashes", &r.name));
        }
        for (field, v) in [("run.eval_every", r.eval_every), ("run.log_every", r.log_every)] {
            if v == 0 {
                return Err(Error::value(field, "an interval >= 1 step", v));
            }
        }
        let d = &self.data;
        if !(d.subset > 0.0 && d.subset <= 1.0) {
            return Err(Error::value("data.subset", "a fraction in (0, 1]", d.subset));
        }
        if !(0.0..1.0).contains(&d.val_fraction) {
            return Err(Error::value("data.val_fraction", "a fraction in [0, 1)", d.val_fraction));
        }
        if d.pad < 0 {
            return Err(Error::value("data.pad", "a padding >= 0", d.pad));
        }
        if d.batch_size < 1 {
            return Err(Error::value("data.batch_size", "at least 1", d.batch_size));
        }
        let o = &self.optim;
        if !(o.lr.is_finite() && o.lr > 0.0) {
            return Err(Error::value("optim.lr", "a finite learning rate > 0", o.lr));
        }
        if !(0.0..1.0).contains(&o.momentum) {
            return Err(Error::value("optim.momentum", "a value in [0, 1)", o.momentum));
        }
        if !(o.weight_decay.is_finite() && o.weight_decay >= 0.0) {
            return Err(Error::value("optim.weight_decay", "a finite value >= 0", o.weight_decay));
        }
        if o.epochs == 0 {
            return Err(Error::value("optim.epochs", "at least 1", 0));
        }
        if !(o.warmup_epochs >= 0.0 && o.warmup_epochs < o.epochs as f64) {
            return Err(Error::value("optim.warmup_epochs", "a value in [0, epochs)", o.warmup_epochs));
        }
        if !o.betas.iter().all(|b| (0.0..1.0).contains(b)) {
            return Err(Error::value("optim.betas", "two values in [0, 1)", format!("{:?}", o.betas)));
        }
        if !(o.eps.is_finite() && o.eps > 0.0) {
            return Err(Error::value("optim.eps", "a finite value > 0", o.eps));
        }
        if let Some(c) = o.clip_norm {
            if !(c.is_finite() && c > 0.0) {
                return Err(Error::value("optim.clip_norm", "a finite norm > 0", c));
            }
        }
        if !(0.0..1.0).contains(&o.label_smoothing) {
            return Err(Error::value("optim.label_smoothing", "a value in [0, 1)", o.label_smoothing));
        }
        self.strategy.validate()
    }
}

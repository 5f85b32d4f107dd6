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
//! diagnostics = false       # zero-activation shares per layer at each log line, BENR per epoch
//! autocast = "off"          # off | bf16 (CUDA only: forward passes under bf16 autocast)
//! prefetch = true           # gather the next batches on a background thread
//!
//! [data]
//! dataset = "fashion-mnist" # fashion-mnist | digits | cifar10 | cifar100 (images)
//!                           # ucr (series classification: series = "GunPoint", length = pad/cut)
//!                           # vic-elec (forecasting: input_len = 96, horizon = 48, stride = 1)
//!                           # shakespeare (char LM: seq_len = 128)
//! subset = 1.0              # share of the training set kept (data-scale ablations)
//! val_fraction = 0.1
//! test_fraction = 0.2       # digits, vic-elec, shakespeare (no official test split; the
//!                           # series and the text are split in time: val, then test, at the end)
//! batch_size = 128
//! augment = false           # random crops (zero padding `pad`) and horizontal flips
//! pad = 4
//!
//! [model]
//! name = "small-cnn"        # images: small-cnn | resnet18 | preact-resnet18 | vit-tiny
//!                           # ucr: resnet1d; vic-elec: mlp-forecaster; shakespeare: char-transformer
//! # width, depth, heads     # optional: resnet1d width 64, mlp-forecaster width 256,
//!                           # vit-tiny 192/12/3, char-transformer 128/4/4
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

pub use crate::device::DeviceChoice;
use crate::error::{Error, Result};
use crate::strategy::{StrategyConfig, StrategyKind};

/// Which implementation of the strategy's ops a run uses: enlighten's fused ops, or the tch
/// composites a PyTorch user writes (to measure what the fused ops save in a real step).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum OpsChoice {
    #[default]
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
    Ucr,
    VicElec,
    Shakespeare,
}

/// What a dataset asks the loop to do.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum TaskKind {
    /// u8 images to class logits.
    Image,
    /// f32 series `[C, T]` to class logits.
    Series,
    /// f32 windows `[L, F]` to `horizon` values (mean squared error).
    Forecast,
    /// int64 tokens `[T]` to next-token logits.
    Text,
}

impl Dataset {
    pub fn task(self) -> TaskKind {
        match self {
            Dataset::FashionMnist | Dataset::Digits | Dataset::Cifar10 | Dataset::Cifar100 => TaskKind::Image,
            Dataset::Ucr => TaskKind::Series,
            Dataset::VicElec => TaskKind::Forecast,
            Dataset::Shakespeare => TaskKind::Text,
        }
    }
}

/// bf16 autocast of the forward pass (CUDA only).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum Autocast {
    #[default]
    Off,
    Bf16,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum ModelName {
    SmallCnn,
    Resnet18,
    PreactResnet18,
    VitTiny,
    Resnet1d,
    MlpForecaster,
    CharTransformer,
}

impl ModelName {
    /// The task this model is built for.
    pub fn task(self) -> TaskKind {
        match self {
            ModelName::SmallCnn | ModelName::Resnet18 | ModelName::PreactResnet18 | ModelName::VitTiny => TaskKind::Image,
            ModelName::Resnet1d => TaskKind::Series,
            ModelName::MlpForecaster => TaskKind::Forecast,
            ModelName::CharTransformer => TaskKind::Text,
        }
    }
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RunSection {
    pub name: String,
    #[serde(default)]
    pub seed: u64,
    #[serde(default)]
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
    #[serde(default)]
    pub ops: OpsChoice,
    #[serde(default)]
    pub diagnostics: bool,
    #[serde(default)]
    pub autocast: Autocast,
    #[serde(default = "yes")]
    pub prefetch: bool,
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
    /// Held out as the test set where the dataset has no official split.
    #[serde(default = "default_test_fraction")]
    pub test_fraction: f64,
    /// ucr: the UCR/UEA dataset, read from `<dir>/<series>/<series>_{TRAIN,TEST}.ts`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub series: Option<String>,
    /// ucr: pad or truncate every case to this length (default: the longest training case).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub length: Option<usize>,
    /// vic-elec: steps in each input window, steps forecast, steps between training windows.
    #[serde(default = "default_input_len")]
    pub input_len: i64,
    #[serde(default = "default_horizon")]
    pub horizon: i64,
    #[serde(default = "one_step")]
    pub stride: i64,
    /// shakespeare: characters per training sequence.
    #[serde(default = "default_seq_len")]
    pub seq_len: i64,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ModelSection {
    pub name: ModelName,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub width: Option<i64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub depth: Option<i64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub heads: Option<i64>,
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
    /// `enlighten compare`'s strategies and seeds (ignored by `enlighten train`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub compare: Option<CompareSection>,
}

/// `[compare]` of a configuration: which strategies, how many seeds, which is the baseline.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct CompareSection {
    #[serde(default = "default_strategies")]
    pub strategies: Vec<StrategyKind>,
    #[serde(default = "default_seeds")]
    pub seeds: u32,
    /// Default: the first of `strategies`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub baseline: Option<StrategyKind>,
}

fn default_strategies() -> Vec<StrategyKind> {
    vec![StrategyKind::Mixup, StrategyKind::MixupPause]
}
fn default_seeds() -> u32 {
    3
}

impl Default for CompareSection {
    fn default() -> CompareSection {
        CompareSection { strategies: default_strategies(), seeds: default_seeds(), baseline: None }
    }
}

impl CompareSection {
    pub fn validate(&self) -> Result<()> {
        if self.strategies.is_empty() {
            return Err(Error::value("compare.strategies", "at least one strategy", "an empty list"));
        }
        let mut seen = self.strategies.clone();
        seen.sort_by_key(|k| k.name());
        seen.dedup();
        if seen.len() != self.strategies.len() {
            return Err(Error::value("compare.strategies", "each strategy once", format!("{:?}", self.strategies)));
        }
        if self.seeds == 0 {
            return Err(Error::value("compare.seeds", "at least 1", 0));
        }
        if let Some(b) = self.baseline {
            if !self.strategies.contains(&b) {
                return Err(Error::value("compare.baseline", format!("one of {:?}", self.strategies), b.name()));
            }
        }
        Ok(())
    }

    pub fn baseline(&self) -> StrategyKind {
        self.baseline.unwrap_or(self.strategies[0])
    }
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
fn one_step() -> i64 {
    1
}
fn default_test_fraction() -> f64 {
    0.2
}
fn default_input_len() -> i64 {
    96
}
fn default_horizon() -> i64 {
    48
}
fn default_seq_len() -> i64 {
    128
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
        TrainConfig::from_toml_with(text, &[])
    }

    /// Parses `text` after applying `overrides`, each `dotted.key=value` with a TOML value
    /// (`data.subset=0.1`, `strategy.ep={end="epochs", epochs=2}`; bare words are strings).
    pub fn from_toml_with(text: &str, overrides: &[String]) -> Result<TrainConfig> {
        let mut doc: toml::Table = toml::from_str(text).map_err(|e| Error::Config(e.to_string()))?;
        for assignment in overrides {
            let (key, raw) = assignment
                .split_once('=')
                .ok_or_else(|| Error::value("--set", "key=value (e.g. data.subset=0.1)", assignment))?;
            let value = match toml::from_str::<toml::Table>(&format!("v = {}", raw.trim())) {
                Ok(mut t) => t.remove("v").unwrap_or(toml::Value::String(raw.trim().into())),
                Err(_) => toml::Value::String(raw.trim().into()),
            };
            let path: Vec<&str> = key.trim().split('.').collect();
            let mut table = &mut doc;
            for part in &path[..path.len() - 1] {
                let entry = table.entry(part.to_string()).or_insert_with(|| toml::Value::Table(toml::Table::new()));
                table = entry.as_table_mut().ok_or_else(|| Error::value("--set", format!("a path through tables ({part} is a value)"), key))?;
            }
            table.insert(path[path.len() - 1].to_string(), value);
        }
        let c: TrainConfig = doc.try_into().map_err(|e: toml::de::Error| Error::Config(e.to_string()))?;
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
        if !(d.test_fraction > 0.0 && d.test_fraction + d.val_fraction < 1.0) {
            return Err(Error::value("data.test_fraction", "a fraction > 0 with val_fraction + test_fraction < 1", d.test_fraction));
        }
        for (field, v) in [("data.input_len", d.input_len), ("data.horizon", d.horizon), ("data.stride", d.stride), ("data.seq_len", d.seq_len)] {
            if v < 1 {
                return Err(Error::value(field, "at least 1", v));
            }
        }
        if d.dataset == Dataset::Ucr && d.series.as_deref().is_none_or(|s| s.is_empty() || s.contains(['/', '\\'])) {
            return Err(Error::value("data.series", "the UCR/UEA dataset's name (e.g. \"GunPoint\") with dataset = \"ucr\"", format!("{:?}", d.series)));
        }
        let task = d.dataset.task();
        if d.augment && task != TaskKind::Image {
            return Err(Error::value("data.augment", "false for a dataset that is not images (crops and flips are image augmentations)", "true"));
        }
        if self.model.name.task() != task {
            return Err(Error::value("model.name", format!("a model for the {task:?} task of dataset {:?}", d.dataset), format!("{:?}", self.model.name)));
        }
        for (field, v) in [("model.width", self.model.width), ("model.depth", self.model.depth), ("model.heads", self.model.heads)] {
            if v.is_some_and(|v| v < 1) {
                return Err(Error::value(field, "at least 1", format!("{v:?}")));
            }
        }
        if let (Some(w), Some(h)) = (self.model.width, self.model.heads) {
            if w % h != 0 {
                return Err(Error::value("model.width", format!("a multiple of model.heads ({h})"), w));
            }
        }
        if matches!(task, TaskKind::Forecast | TaskKind::Text) {
            if !matches!(self.strategy.kind, crate::strategy::StrategyKind::Vanilla | crate::strategy::StrategyKind::HighLossRemoval) {
                return Err(Error::value("strategy.kind", format!("a strategy that does not mix for the {task:?} task (vanilla or high-loss-removal)"), self.strategy.kind.name()));
            }
            if task == TaskKind::Forecast && matches!(self.strategy.ep, crate::strategy::EpEnd::Accuracy { .. }) {
                return Err(Error::value("strategy.ep.end", "epochs or steps for forecasting (there is no accuracy to watch)", "accuracy"));
            }
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
        let share = self.strategy.strategy().drop_share;
        if share > 0.0 && crate::ops::loss::removed_rows(share, d.batch_size) == 0 {
            return Err(Error::value("strategy.drop_share", format!("a share that removes at least one of data.batch_size = {} rows", d.batch_size), share));
        }
        if let Some(c) = &self.compare {
            c.validate()?;
        }
        self.strategy.validate()
    }
}

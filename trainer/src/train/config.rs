//! `enlighten train`'s configuration: one TOML file, validated on load, written back resolved
//! into the run directory.
//!
//! ```toml
//! [run]
//! name = "fmnist-pause"     # runs/<name>/
//! seed = 0
//! device = "auto"           # auto | cpu | cuda
//! eval_every = 100          # steps between validation evaluations (curves, best val; the EP has its monitor)
//! log_every = 20            # steps between metrics.jsonl lines
//! diagnostics = false       # zero-activation shares per layer at each log line, BENR per epoch
//! autocast = "off"          # off | bf16 (CUDA only: forward passes under bf16 autocast)
//! prefetch = true           # gather the next batches on a background thread
//! backend = "auto"          # data parallelism (torchrun or --nproc): auto | gloo | nccl
//! collective_timeout_s = 600  # a rank waiting longer on the others stops with an error
//! checkpoint_every = "5min" # checkpoints besides epoch ends: every N steps (500) or a time
//!
//! [data]
//! dataset = "fashion-mnist" # fashion-mnist | digits | cifar10 | cifar100 (images)
//!                           # image-folder (dir/train/<class>/*, dir/val/<class>/*, dir/test/...
//!                           #   when present), tiny-imagenet, imagenet: JPEG/PNG files decoded by
//!                           #   worker threads; image_size = 224 (tiny-imagenet 64), workers = 0
//!                           #   (the cores), on_bad_file = "error" | "skip",
//!                           #   max_image_pixels = 178956970 (larger headers are bad files)
//!                           # ucr (series classification: series = "GunPoint", length = pad/cut)
//!                           # vic-elec (forecasting: input_len = 96, horizon = 48, stride = 1)
//!                           # text (char LM over path = FILE or FOLDER of .txt files, read in
//!                           #   name order; the vocabulary from the training part; seq_len = 128;
//!                           #   encoding = "utf-8" | "latin-1")
//!                           # shakespeare (text over the Gutenberg plays in dir)
//! subset = 1.0              # share of the training set kept (data-scale ablations)
//! val_fraction = 0.1
//! test_fraction = 0.2       # digits, vic-elec, text (no official test split; the
//!                           # series and the text are split in time: val, then test, at the end)
//! batch_size = 128          # per process: the global batch is batch_size x processes
//! augment = false           # random crops (zero padding `pad`) and horizontal flips
//! pad = 4
//!
//! [model]
//! name = "small-cnn"        # images: small-cnn | resnet18 | preact-resnet18 | vit-tiny |
//!                           #   vit-s16 | vit-t16 | vit-s8 | resnet50 | preact-resnet50
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
//! scope = "local"           # High-Loss Removal over each process's batch, or "global"
//! ```

use std::path::PathBuf;

use serde::{Deserialize, Serialize};

pub use crate::device::DeviceChoice;
pub use crate::distributed::Backend;
use crate::error::{Error, Result};
use enlighten::strategy::{StrategyConfig, StrategyKind};

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
    /// torchvision's ImageFolder layout in `dir`.
    ImageFolder,
    /// tiny-imagenet-200 as distributed, in `dir`.
    TinyImagenet,
    /// ILSVRC-2012 class folders in `dir`.
    Imagenet,
    Ucr,
    VicElec,
    /// Any character corpus: `path` is a text file or a folder of `.txt` files.
    Text,
    /// The Shakespeare texts (`*_gut.txt` in `dir`): a named case of `Text`.
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
            Dataset::FashionMnist
            | Dataset::Digits
            | Dataset::Cifar10
            | Dataset::Cifar100
            | Dataset::ImageFolder
            | Dataset::TinyImagenet
            | Dataset::Imagenet => TaskKind::Image,
            Dataset::Ucr => TaskKind::Series,
            Dataset::VicElec => TaskKind::Forecast,
            Dataset::Text | Dataset::Shakespeare => TaskKind::Text,
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
    /// ViT-S/16 (224 pixels; any size divisible by 16).
    VitS16,
    /// ViT-T/16.
    VitT16,
    /// ViT-S with 8 x 8 patches (Tiny-ImageNet at 64 pixels).
    VitS8,
    /// ResNet50 with ImageNet's stem.
    Resnet50,
    /// PreActResNet50 with the CIFAR stem.
    PreactResnet50,
    Resnet1d,
    MlpForecaster,
    CharTransformer,
}

impl ModelName {
    /// The task this model is built for.
    pub fn task(self) -> TaskKind {
        match self {
            ModelName::SmallCnn
            | ModelName::Resnet18
            | ModelName::PreactResnet18
            | ModelName::VitTiny
            | ModelName::VitS16
            | ModelName::VitT16
            | ModelName::VitS8
            | ModelName::Resnet50
            | ModelName::PreactResnet50 => TaskKind::Image,
            ModelName::Resnet1d => TaskKind::Series,
            ModelName::MlpForecaster => TaskKind::Forecast,
            ModelName::CharTransformer => TaskKind::Text,
        }
    }
}

/// `[run]`: the run's name and folder, device, cadence and options of the loop. Every field
/// but `name` has a default ([`RunSection::default`]).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct RunSection {
    pub name: String,
    pub seed: u64,
    pub device: DeviceChoice,
    pub out_dir: PathBuf,
    pub eval_every: u64,
    pub log_every: u64,
    /// Stop after this many steps in all (a budget; the schedule still spans `optim.epochs`).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub max_steps: Option<u64>,
    pub ops: OpsChoice,
    pub diagnostics: bool,
    pub autocast: Autocast,
    pub prefetch: bool,
    /// Data parallelism's process group: Gloo for CPU tensors, NCCL for CUDA (auto picks).
    pub backend: Backend,
    /// How long a rank waits on the others (rendezvous, collectives) before it stops with an
    /// error, so a job whose rank died never hangs.
    pub collective_timeout_s: u64,
    /// Checkpoints besides epoch ends and the last step: every N steps, or every so much time.
    pub checkpoint_every: super::cadence::CheckpointEvery,
}

impl Default for RunSection {
    /// The defaults of a configuration file; `name` is empty, which validation refuses.
    fn default() -> RunSection {
        RunSection {
            name: String::new(),
            seed: 0,
            device: DeviceChoice::Auto,
            out_dir: PathBuf::from("runs"),
            eval_every: 100,
            log_every: 20,
            max_steps: None,
            ops: OpsChoice::Fused,
            diagnostics: false,
            autocast: Autocast::Off,
            prefetch: true,
            backend: Backend::Auto,
            collective_timeout_s: 600,
            checkpoint_every: super::cadence::CheckpointEvery::default(),
        }
    }
}

impl RunSection {
    pub fn validate(&self) -> Result<()> {
        if self.name.is_empty() || self.name.contains(['/', '\\']) || self.name.starts_with('.') {
            return Err(Error::value(
                "run.name",
                "a non-empty folder name without slashes",
                &self.name,
            ));
        }
        for (field, v) in [("run.eval_every", self.eval_every), ("run.log_every", self.log_every)] {
            if v == 0 {
                return Err(Error::value(field, "an interval >= 1 step", v));
            }
        }
        if self.collective_timeout_s == 0 {
            return Err(Error::value("run.collective_timeout_s", "at least 1 second", 0));
        }
        if self.max_steps == Some(0) {
            return Err(Error::value(
                "run.max_steps",
                "at least 1 step (leave it out to train every epoch)",
                0,
            ));
        }
        self.checkpoint_every.validate()
    }
}

/// `[data]`: the dataset, its splits and batches, and each task's shapes. `dataset` is required
/// in a file; every other field has a default ([`DataSection::default`]).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct DataSection {
    pub dataset: Dataset,
    /// Folder holding the dataset's files; default: enlighten_trainer::data::data_dir()/<dataset>.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub dir: Option<PathBuf>,
    pub subset: f64,
    pub val_fraction: f64,
    pub batch_size: i64,
    /// Random crops (zero padding `pad` on every side) and horizontal flips of each batch.
    pub augment: bool,
    pub pad: i64,
    /// Held out as the test set where the dataset has no official split.
    pub test_fraction: f64,
    /// ucr: the UCR/UEA dataset, read from `<dir>/<series>/<series>_{TRAIN,TEST}.ts`.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub series: Option<String>,
    /// ucr: pad or truncate every case to this length (default: the longest training case).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub length: Option<usize>,
    /// vic-elec: steps in each input window, steps forecast, steps between training windows.
    pub input_len: i64,
    pub horizon: i64,
    pub stride: i64,
    /// text, shakespeare: characters per training sequence.
    pub seq_len: i64,
    /// text: a UTF-8 file, or a folder whose `.txt` files are read in name order.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub path: Option<PathBuf>,
    /// image folders: the training crop's and the evaluation's size (default 224; 64 for
    /// tiny-imagenet).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub image_size: Option<i64>,
    /// image folders: decode threads (0: one per core).
    pub workers: usize,
    /// image folders: a corrupt or truncated file is an error, or skipped and counted.
    pub on_bad_file: crate::data::OnBadFile,
    /// image folders: an image whose header claims more pixels is a bad file (Pillow's
    /// MAX_IMAGE_PIXELS): a tiny file cannot make the decoder allocate gigabytes.
    pub max_image_pixels: u64,
    /// text: how the files' bytes are characters (invalid UTF-8 is an error naming the file).
    pub encoding: crate::data::TextEncoding,
}

impl Dataset {
    /// Whether the dataset is image files decoded by the pipeline.
    pub fn is_folder(self) -> bool {
        matches!(self, Dataset::ImageFolder | Dataset::TinyImagenet | Dataset::Imagenet)
    }
}

impl Default for DataSection {
    /// Fashion-MNIST with the defaults of a configuration file (where `dataset` must be given).
    fn default() -> DataSection {
        DataSection {
            dataset: Dataset::FashionMnist,
            dir: None,
            subset: 1.0,
            val_fraction: 0.1,
            batch_size: 128,
            augment: false,
            pad: 4,
            test_fraction: 0.2,
            series: None,
            length: None,
            input_len: 96,
            horizon: 48,
            stride: 1,
            seq_len: 128,
            path: None,
            image_size: None,
            workers: 0,
            on_bad_file: crate::data::OnBadFile::Error,
            max_image_pixels: crate::data::MAX_IMAGE_PIXELS,
            encoding: crate::data::TextEncoding::Utf8,
        }
    }
}

impl DataSection {
    pub fn validate(&self) -> Result<()> {
        if !(self.subset > 0.0 && self.subset <= 1.0) {
            return Err(Error::value("data.subset", "a fraction in (0, 1]", self.subset));
        }
        if !(0.0..1.0).contains(&self.val_fraction) {
            return Err(Error::value(
                "data.val_fraction",
                "a fraction in [0, 1)",
                self.val_fraction,
            ));
        }
        if self.pad < 0 {
            return Err(Error::value("data.pad", "a padding >= 0", self.pad));
        }
        if self.batch_size < 1 {
            return Err(Error::value("data.batch_size", "at least 1", self.batch_size));
        }
        if !(self.test_fraction > 0.0 && self.test_fraction + self.val_fraction < 1.0) {
            return Err(Error::value(
                "data.test_fraction",
                "a fraction > 0 with val_fraction + test_fraction < 1",
                self.test_fraction,
            ));
        }
        for (field, v) in [
            ("data.input_len", self.input_len),
            ("data.horizon", self.horizon),
            ("data.stride", self.stride),
            ("data.seq_len", self.seq_len),
        ] {
            if v < 1 {
                return Err(Error::value(field, "at least 1", v));
            }
        }
        if self.dataset == Dataset::Ucr
            && self
                .series
                .as_deref()
                .is_none_or(|s| s.is_empty() || s.contains(['/', '\\']))
        {
            return Err(Error::value(
                "data.series",
                "the UCR/UEA dataset's name (e.g. \"GunPoint\") with dataset = \"ucr\"",
                self.series.as_ref().map_or("nothing".into(), |s| format!("\"{s}\"")),
            ));
        }
        if self.dataset == Dataset::ImageFolder && self.dir.is_none() {
            return Err(Error::value(
                "data.dir",
                "the image folder (holding train/ and val/) with dataset = \"image-folder\"",
                "nothing",
            ));
        }
        if self.max_image_pixels == 0 {
            return Err(Error::value("data.max_image_pixels", "at least 1 pixel", 0));
        }
        if let Some(size) = self.image_size.filter(|&s| !(8..=1024).contains(&s)) {
            return Err(Error::value("data.image_size", "a size in 8..=1024", size));
        }
        if self.dataset == Dataset::Text && self.path.is_none() {
            return Err(Error::value(
                "data.path",
                "a text file or a folder of .txt files with dataset = \"text\"",
                "nothing",
            ));
        }
        if self.augment && self.dataset.task() != TaskKind::Image {
            return Err(Error::value(
                "data.augment",
                "false for a dataset that is not images (crops and flips are image augmentations)",
                "true",
            ));
        }
        Ok(())
    }
}

/// `[model]`: which network, and its optional width, depth and heads.
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

impl ModelSection {
    /// Valid sizes, and a model built for the `dataset`'s task.
    pub fn validate(&self, dataset: Dataset) -> Result<()> {
        let task = dataset.task();
        if self.name.task() != task {
            return Err(Error::value(
                "model.name",
                format!("a model for the {task:?} task of dataset {dataset:?}"),
                format!("{:?}", self.name),
            ));
        }
        for (field, v) in [
            ("model.width", self.width),
            ("model.depth", self.depth),
            ("model.heads", self.heads),
        ] {
            if let Some(v) = v.filter(|&v| v < 1) {
                return Err(Error::value(field, "at least 1", v));
            }
        }
        if let (Some(w), Some(h)) = (self.width, self.heads) {
            if w % h != 0 {
                return Err(Error::value(
                    "model.width",
                    format!("a multiple of model.heads ({h})"),
                    w,
                ));
            }
        }
        Ok(())
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum OptimKind {
    Sgd,
    Adamw,
}

/// `[optim]`: the optimiser, its schedule and regularisation. Every field has a default
/// ([`OptimSection::default`]).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct OptimSection {
    pub kind: OptimKind,
    pub lr: f64,
    pub momentum: f64,
    pub nesterov: bool,
    pub weight_decay: f64,
    pub epochs: u32,
    pub warmup_epochs: f64,
    pub label_smoothing: f64,
    /// AdamW's (beta1, beta2) and epsilon.
    pub betas: [f64; 2],
    pub eps: f64,
    /// Clip gradients to this global norm.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub clip_norm: Option<f64>,
}

impl Default for OptimSection {
    /// SGD with Nesterov momentum, 5 epochs at 0.05, no warmup or smoothing.
    fn default() -> OptimSection {
        OptimSection {
            kind: OptimKind::Sgd,
            lr: 0.05,
            momentum: 0.9,
            nesterov: true,
            weight_decay: 5e-4,
            epochs: 5,
            warmup_epochs: 0.0,
            label_smoothing: 0.0,
            betas: [0.9, 0.999],
            eps: 1e-8,
            clip_norm: None,
        }
    }
}

impl OptimSection {
    pub fn validate(&self) -> Result<()> {
        if !(self.lr.is_finite() && self.lr > 0.0) {
            return Err(Error::value("optim.lr", "a finite learning rate > 0", self.lr));
        }
        if !(0.0..1.0).contains(&self.momentum) {
            return Err(Error::value("optim.momentum", "a value in [0, 1)", self.momentum));
        }
        if !(self.weight_decay.is_finite() && self.weight_decay >= 0.0) {
            return Err(Error::value(
                "optim.weight_decay",
                "a finite value >= 0",
                self.weight_decay,
            ));
        }
        if self.epochs == 0 {
            return Err(Error::value("optim.epochs", "at least 1", 0));
        }
        if !(self.warmup_epochs >= 0.0 && self.warmup_epochs < self.epochs as f64) {
            return Err(Error::value(
                "optim.warmup_epochs",
                "a value in [0, epochs)",
                self.warmup_epochs,
            ));
        }
        if !self.betas.iter().all(|b| (0.0..1.0).contains(b)) {
            return Err(Error::value(
                "optim.betas",
                "two values in [0, 1)",
                format!("{:?}", self.betas),
            ));
        }
        if !(self.eps.is_finite() && self.eps > 0.0) {
            return Err(Error::value("optim.eps", "a finite value > 0", self.eps));
        }
        if let Some(c) = self.clip_norm {
            if !(c.is_finite() && c > 0.0) {
                return Err(Error::value("optim.clip_norm", "a finite norm > 0", c));
            }
        }
        if !(0.0..1.0).contains(&self.label_smoothing) {
            return Err(Error::value(
                "optim.label_smoothing",
                "a value in [0, 1)",
                self.label_smoothing,
            ));
        }
        Ok(())
    }
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
/// Every field has a default ([`CompareSection::default`]).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct CompareSection {
    pub strategies: Vec<StrategyKind>,
    pub seeds: u32,
    /// Default: the first of `strategies`.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub baseline: Option<StrategyKind>,
}

impl Default for CompareSection {
    /// Mixup against Mixup Pause, 3 seeds each.
    fn default() -> CompareSection {
        CompareSection {
            strategies: vec![StrategyKind::Mixup, StrategyKind::MixupPause],
            seeds: 3,
            baseline: None,
        }
    }
}

impl CompareSection {
    pub fn validate(&self) -> Result<()> {
        if self.strategies.is_empty() {
            return Err(Error::value(
                "compare.strategies",
                "at least one strategy",
                "an empty list",
            ));
        }
        let mut seen = self.strategies.clone();
        seen.sort_by_key(|k| k.name());
        seen.dedup();
        if seen.len() != self.strategies.len() {
            return Err(Error::value(
                "compare.strategies",
                "each strategy once",
                format!("{:?}", self.strategies),
            ));
        }
        if self.seeds == 0 {
            return Err(Error::value("compare.seeds", "at least 1", 0));
        }
        if let Some(b) = self.baseline {
            if !self.strategies.contains(&b) {
                return Err(Error::value(
                    "compare.baseline",
                    format!("one of {:?}", self.strategies),
                    b.name(),
                ));
            }
        }
        Ok(())
    }

    pub fn baseline(&self) -> StrategyKind {
        self.baseline.unwrap_or(self.strategies[0])
    }
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
            apply_override(&mut doc, assignment)?;
        }
        // The one field of [data] without a default (the section's others have one).
        if doc
            .get("data")
            .and_then(toml::Value::as_table)
            .is_some_and(|d| !d.contains_key("dataset"))
        {
            return Err(Error::Config("missing field `dataset` in [data]".into()));
        }
        let c: TrainConfig = doc
            .try_into()
            .map_err(|e: toml::de::Error| Error::Config(e.to_string()))?;
        c.validate()?;
        Ok(c)
    }

    pub fn to_toml(&self) -> Result<String> {
        toml::to_string(self).map_err(|e| Error::Config(e.to_string()))
    }

    /// Each section, then what sections must agree on: the model and the strategy fit the
    /// dataset's task, and High-Loss Removal removes at least one row of a batch.
    pub fn validate(&self) -> Result<()> {
        self.run.validate()?;
        self.data.validate()?;
        self.model.validate(self.data.dataset)?;
        let task = self.data.dataset.task();
        if matches!(task, TaskKind::Forecast | TaskKind::Text) {
            if !matches!(
                self.strategy.kind,
                StrategyKind::Vanilla | StrategyKind::HighLossRemoval
            ) {
                return Err(Error::value(
                    "strategy.kind",
                    format!("a strategy that does not mix for the {task:?} task (vanilla or high-loss-removal)"),
                    self.strategy.kind.name(),
                ));
            }
            if task == TaskKind::Forecast && matches!(self.strategy.ep, enlighten::strategy::EpEnd::Accuracy { .. }) {
                return Err(Error::value(
                    "strategy.ep.end",
                    "epochs or steps for forecasting (there is no accuracy to watch)",
                    "accuracy",
                ));
            }
        }
        self.optim.validate()?;
        let share = self.strategy.strategy().drop_share;
        let batch = self.data.batch_size;
        if share > 0.0 && enlighten::ops::loss::removed_rows(share, batch) == 0 {
            return Err(Error::value(
                "strategy.drop_share",
                format!("a share that removes at least one of data.batch_size = {batch} rows"),
                share,
            ));
        }
        if let Some(c) = &self.compare {
            c.validate()?;
        }
        self.check_monitor(self.data.dataset != Dataset::ImageFolder)?;
        Ok(self.strategy.validate()?)
    }

    /// An EP that ends on validation accuracy needs a validation split: without one the EP
    /// never ends (Mixup Pause would train without Mixup for the whole run). `carves_val`: the
    /// validation split is `val_fraction` of the training data (an image folder with its own
    /// test/ folder reads val/ instead: its loader knows, and asks).
    pub(crate) fn check_monitor(&self, carves_val: bool) -> Result<()> {
        let watches_val = matches!(
            self.strategy.ep,
            enlighten::strategy::EpEnd::Accuracy {
                monitor: enlighten::strategy::Monitor::Val,
                ..
            }
        );
        if watches_val && carves_val && self.data.val_fraction == 0.0 {
            return Err(Error::value(
                "strategy.ep.monitor",
                "\"train-clean\" (or an EP end in epochs or steps) when data.val_fraction = 0 leaves no validation split",
                "\"val\"",
            ));
        }
        Ok(())
    }
}

/// Sets `dotted.key=value` in `doc`, the value parsed as TOML (a bare word is a string).
fn apply_override(doc: &mut toml::Table, assignment: &str) -> Result<()> {
    let (key, raw) = assignment
        .split_once('=')
        .ok_or_else(|| Error::value("--set", "key=value (e.g. data.subset=0.1)", assignment))?;
    let value = match toml::from_str::<toml::Table>(&format!("v = {}", raw.trim())) {
        Ok(mut t) => t.remove("v").unwrap_or(toml::Value::String(raw.trim().into())),
        Err(_) => toml::Value::String(raw.trim().into()),
    };
    let path: Vec<&str> = key.trim().split('.').collect();
    let mut table = doc;
    for part in &path[..path.len() - 1] {
        let entry = table
            .entry(part.to_string())
            .or_insert_with(|| toml::Value::Table(toml::Table::new()));
        table = entry
            .as_table_mut()
            .ok_or_else(|| Error::value("--set", format!("a path through tables ({part} is a value)"), key))?;
    }
    table.insert(path[path.len() - 1].to_string(), value);
    Ok(())
}

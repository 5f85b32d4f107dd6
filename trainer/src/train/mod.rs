//! The bundled trainer (`enlighten train`): image and series classification, forecasting and
//! character language modelling on the real datasets, with the strategy engine and the fused
//! ops in the loop, diagnostics, atomic checkpoints and resume.

mod agreement;
mod autocast;
mod cadence;
mod checkpoint;
mod config;
mod manifest;
mod optim;
mod parallel;
mod prefetch;
mod probe;
mod resume;
mod run;
mod short;
pub mod signals;
mod task;
mod text_length;

pub use autocast::{cuda_autocast_kind, set_cuda_autocast_kind};
pub use cadence::CheckpointEvery;
pub use checkpoint::{
    load as load_checkpoint, load_verified as load_verified_checkpoint, save as save_checkpoint, Layout, Loaded,
    NamedTensors, RunState,
};
pub use config::{
    Autocast, Backend, CompareSection, Dataset, DeviceChoice, ModelName, OpsChoice, OptimKind, TaskKind, TrainConfig,
};
pub use optim::{cosine_lr, Optimizer, Rule};
pub use parallel::{global_keep, remove_highest_global, DataParallel};
pub use probe::MonitorCost;
pub use run::{train, MetricsLine, Parallelism, Summary, Timing, TrainOptions};
pub(crate) use short::ShortRuns;

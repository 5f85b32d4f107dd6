//! The bundled trainer (`enlighten train`): image classification on the real datasets with the
//! strategy engine and the fused ops in the loop, atomic checkpoints and resume.

mod checkpoint;
mod config;
mod run;
mod optim;

pub use checkpoint::{load as load_checkpoint, save as save_checkpoint, NamedTensors, RunState};
pub use config::{Dataset, DeviceChoice, ModelName, OpsChoice, OptimKind, TrainConfig};
pub use run::{train, MetricsLine, Summary, TrainOptions};
pub use optim::{cosine_lr, Optimizer, Rule};

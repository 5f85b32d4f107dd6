//! The bundled trainer (`enlighten train`): image classification on the real datasets with the
//! strategy engine and the fused ops in the loop, atomic checkpoints and resume.

mod checkpoint;
mod config;
mod run;
mod sgd;

pub use checkpoint::{load as load_checkpoint, save as save_checkpoint, NamedTensors, RunState};
pub use config::{Dataset, DeviceChoice, ModelName, OpsChoice, TrainConfig};
pub use run::{train, MetricsLine, Summary, TrainOptions};
pub use sgd::{cosine_lr, Sgd};

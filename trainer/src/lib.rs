//! # enlighten-trainer
//!
//! The bundled trainer of [enlighten](enlighten): datasets, models, training runs driven by the
//! strategy engine, `compare` and `analyze`, data parallelism on torch.distributed's c10d, and
//! the `enlighten` command line. Experiments are TOML configurations (configs/README.md).

pub mod analyze;
pub mod compare;
pub mod data;
mod device;
pub mod distributed;
mod error;
pub mod models;
mod plot;
pub mod processes;
pub mod train;

pub use device::DeviceChoice;
pub use error::{Error, Result};

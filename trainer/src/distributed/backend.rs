//! Which c10d backend carries the collectives: Gloo (CPU tensors) or NCCL (CUDA tensors).

use serde::{Deserialize, Serialize};
use tch::Device;

use crate::error::{Error, Result};

/// `auto` picks from the training device ([`Backend::resolve`]): Gloo on the CPU, NCCL on CUDA,
/// as PyTorch recommends.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Backend {
    #[default]
    Auto,
    Gloo,
    Nccl,
}

impl Backend {
    pub const ALL: [Backend; 3] = [Backend::Auto, Backend::Gloo, Backend::Nccl];

    /// The name in configurations and on the command line.
    pub fn name(self) -> &'static str {
        match self {
            Backend::Auto => "auto",
            Backend::Gloo => "gloo",
            Backend::Nccl => "nccl",
        }
    }

    /// The backend for tensors on `device`: `Auto` becomes Gloo on the CPU and NCCL on CUDA; an
    /// explicit choice stays as it is.
    pub fn resolve(self, device: Device) -> Backend {
        match (self, device) {
            (Backend::Auto, Device::Cuda(_)) => Backend::Nccl,
            (Backend::Auto, _) => Backend::Gloo,
            (chosen, _) => chosen,
        }
    }
}

impl std::fmt::Display for Backend {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.name())
    }
}

impl std::str::FromStr for Backend {
    type Err = Error;

    fn from_str(name: &str) -> Result<Backend> {
        Backend::ALL
            .into_iter()
            .find(|b| b.name() == name.trim())
            .ok_or_else(|| Error::value("backend", "one of \"auto\", \"gloo\", \"nccl\"", name))
    }
}

//! Which device a program asks for, and the tch device that answers it (after the library's CUDA
//! probe, which also loads libtorch's CUDA backend).

use serde::{Deserialize, Serialize};
use tch::Device;

use crate::error::{Error, Result};

/// Where to run: `auto` is CUDA when libtorch's CUDA works ([`enlighten::cuda::device`]), else
/// the CPU.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum DeviceChoice {
    #[default]
    Auto,
    Cpu,
    Cuda,
}

impl DeviceChoice {
    pub const ALL: [DeviceChoice; 3] = [DeviceChoice::Auto, DeviceChoice::Cpu, DeviceChoice::Cuda];

    /// The name in configurations and on the command line.
    pub fn name(self) -> &'static str {
        match self {
            DeviceChoice::Auto => "auto",
            DeviceChoice::Cpu => "cpu",
            DeviceChoice::Cuda => "cuda",
        }
    }

    /// The device to use: the CPU, CUDA device 0 (an error saying why when CUDA cannot run), or
    /// for `Auto` the library's choice. Where the kernels come from is settled at their first
    /// use (fatbin, cache or NVRTC), never by falling back to the CPU.
    pub fn device(self) -> Result<Device> {
        match self {
            DeviceChoice::Cpu => Ok(Device::Cpu),
            DeviceChoice::Cuda => enlighten::cuda::probe()
                .map(|_| Device::Cuda(0))
                .map_err(|e| enlighten::Error::from(e).into()),
            DeviceChoice::Auto => Ok(enlighten::cuda::device()),
        }
    }
}

impl std::fmt::Display for DeviceChoice {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.name())
    }
}

impl std::str::FromStr for DeviceChoice {
    type Err = Error;

    fn from_str(name: &str) -> Result<DeviceChoice> {
        DeviceChoice::ALL
            .into_iter()
            .find(|d| d.name() == name.trim())
            .ok_or_else(|| Error::value("device", "one of \"auto\", \"cpu\", \"cuda\"", name))
    }
}

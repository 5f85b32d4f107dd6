//! Whether CUDA works here (driver, devices, libtorch's CUDA backend), and if not, exactly why;
//! where the kernels come from is a separate, per-device question ([`super::kernels_origin`]).
//! Never panics: cudarc panics when it cannot find the driver library, so its presence is
//! checked first.

use std::sync::OnceLock;

use cudarc::driver::{result, sys};

/// Why CUDA cannot be used in this process.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum Unavailable {
    /// This build has no emulator kernels (the emulator needs nvcc's headers when it is built).
    #[error(
        "this build of enlighten has no CUDA kernels: nvcc was not found when it was compiled \
         (run scripts/setup or set NVCC, then rebuild)"
    )]
    NoKernels,
    /// No kernels could be had for one device: the nvcc fatbin lacks its architecture and NVRTC
    /// failed; the reason names what was missing (no libnvrtc, the compile log, ...).
    #[error("no enlighten kernels for CUDA device {ordinal} ({arch}): {reason}")]
    NoDeviceKernels {
        /// The device.
        ordinal: usize,
        /// Its architecture, `sm_XY`.
        arch: String,
        /// What was tried and why it failed.
        reason: String,
    },
    /// No driver library.
    #[error("no CUDA driver library (libcuda.so) could be loaded: this machine has no NVIDIA driver")]
    NoDriver,
    /// The driver failed to initialise; its message.
    #[error("the CUDA driver failed to initialise: {0}")]
    DriverInit(String),
    /// The driver sees no device.
    #[error("the CUDA driver reports no devices")]
    NoDevice,
    /// libtorch_cuda could not be opened; the loader's messages.
    #[error("libtorch_cuda could not be loaded, so tch cannot use CUDA: {0}")]
    TorchCuda(String),
    /// libtorch_cuda loaded, but libtorch reports no CUDA device: most often because a tch call
    /// that asks libtorch about CUDA (`tch::manual_seed` among them) ran before the probe, and
    /// libtorch keeps the answer it gave then, when its CUDA backend was not loaded.
    #[error(
        "libtorch_cuda loaded but libtorch reports no CUDA device (if a tch call such as \
         tch::manual_seed ran earlier in this process, libtorch answered then without its CUDA \
         backend and keeps that answer: call enlighten::cuda::device() first)"
    )]
    TorchSeesNoCuda,
}

/// What the probe found on a machine where CUDA works.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CudaInfo {
    /// CUDA devices the driver sees.
    pub device_count: usize,
    /// The driver's CUDA version as `major * 1000 + minor * 10` (13000 = CUDA 13.0).
    pub driver_version: i32,
}

/// Probes once per process, in order: driver library present, driver initialises, at least one
/// device, libtorch_cuda loads and tch sees CUDA. Whether the kernels can be had is not part of
/// it (they may be compiled at first use): see [`super::kernels_origin`]. The library calls this
/// itself before its first CUDA use; call it (or [`device`]) before your own first tch call,
/// because it loads libtorch's CUDA backend, and libtorch keeps the answer of its first question
/// about CUDA (`tch::manual_seed` asks one): asked before the load, CUDA stays unavailable.
pub fn probe() -> Result<CudaInfo, Unavailable> {
    static PROBED: OnceLock<Result<CudaInfo, Unavailable>> = OnceLock::new();
    PROBED.get_or_init(run_probe).clone()
}

/// The device a tch program should use: CUDA device 0 when CUDA works here ([`probe`] succeeds),
/// else the CPU. One line, and never the CPU on a machine whose GPU libtorch can use:
///
/// ```
/// let device = enlighten::cuda::device();
/// let x = tch::Tensor::zeros([2, 3], (tch::Kind::Float, device));
/// ```
pub fn device() -> tch::Device {
    if probe().is_ok() {
        tch::Device::Cuda(0)
    } else {
        tch::Device::Cpu
    }
}

fn run_probe() -> Result<CudaInfo, Unavailable> {
    // SAFETY: only tries to dlopen the driver library by its usual names.
    if !unsafe { sys::is_culib_present() } {
        return Err(Unavailable::NoDriver);
    }
    result::init().map_err(|e| Unavailable::DriverInit(e.to_string()))?;
    let count = result::device::get_count().map_err(|e| Unavailable::DriverInit(e.to_string()))?;
    if count <= 0 {
        return Err(Unavailable::NoDevice);
    }
    let mut driver_version = 0;
    // SAFETY: writes one int through a valid pointer.
    unsafe { sys::cuDriverGetVersion(&mut driver_version) }
        .result()
        .map_err(|e| Unavailable::DriverInit(e.to_string()))?;
    super::load_libtorch_cuda().map_err(Unavailable::TorchCuda)?;
    if !tch::Cuda::is_available() {
        return Err(Unavailable::TorchSeesNoCuda);
    }
    Ok(CudaInfo {
        device_count: count as usize,
        driver_version,
    })
}

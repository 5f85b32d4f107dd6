//! Whether enlighten's CUDA path can run here, and if not, exactly why. Never panics: cudarc
//! panics when it cannot find the driver library, so its presence is checked first.

use std::sync::OnceLock;

use cudarc::driver::{result, sys};

/// Why CUDA cannot be used in this process.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum Unavailable {
    #[error(
        "this build of enlighten has no CUDA kernels: nvcc was not found when it was compiled \
         (run scripts/setup or set NVCC, then rebuild)"
    )]
    NoKernels,
    #[error("no CUDA driver library (libcuda.so) could be loaded: this machine has no NVIDIA driver")]
    NoDriver,
    #[error("the CUDA driver failed to initialise: {0}")]
    DriverInit(String),
    #[error("the CUDA driver reports no devices")]
    NoDevice,
    #[error("libtorch_cuda could not be loaded, so tch cannot use CUDA: {0}")]
    TorchCuda(String),
    #[error("libtorch_cuda loaded but libtorch reports no CUDA device")]
    TorchSeesNoCuda,
}

/// What the probe found on a machine where CUDA works.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CudaInfo {
    pub device_count: usize,
    /// The driver's CUDA version as `major * 1000 + minor * 10` (13000 = CUDA 13.0).
    pub driver_version: i32,
}

/// Probes once per process, in order: kernels embedded, driver library present, driver
/// initialises, at least one device, libtorch_cuda loads and tch sees CUDA.
pub fn probe() -> Result<CudaInfo, Unavailable> {
    static PROBED: OnceLock<Result<CudaInfo, Unavailable>> = OnceLock::new();
    PROBED.get_or_init(run_probe).clone()
}

fn run_probe() -> Result<CudaInfo, Unavailable> {
    if super::fatbin().is_empty() {
        return Err(Unavailable::NoKernels);
    }
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

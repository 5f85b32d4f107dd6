//! Where a device's kernels come from, chosen once per device on its first use, in order:
//! 1. the fatbin nvcc built into the library, when it holds SASS for the device's architecture;
//! 2. the on-disk cache ([`super::kernel_cache`]): a cubin NVRTC compiled earlier for the same
//!    source, architecture and NVRTC version;
//! 3. NVRTC, compiling the embedded source for the device's exact architecture now (tens of
//!    seconds, once), then storing the cubin in the cache;
//! 4. when NVRTC cannot be had: the fatbin anyway, if the driver can load it (PTX it JIT-compiles,
//!    or SASS of an older architecture of the same family), with the reason kept.
//!
//! [`KernelsOrigin`] says which happened; when nothing works, the error names what was missing.
//! `ENLIGHTEN_KERNELS=nvrtc` skips the fatbin (steps 1 and 4), to check NVRTC's code on a device
//! the fatbin covers (the GPU bundle does).

use std::fmt;
use std::path::PathBuf;
use std::sync::Arc;

use cudarc::driver::{CudaContext, CudaModule};
use cudarc::nvrtc::Ptx;

use super::kernel_cache::{self, Key};
use super::nvrtc::{Arch, Nvrtc, OPTIONS};
use super::{elf, fatbin, Unavailable};
use crate::error::{Error, Result};

/// Where the kernels of a CUDA device were loaded from (see [`super::kernels_origin`]).
#[derive(Debug, Clone, PartialEq)]
pub enum KernelsOrigin {
    /// The fatbin nvcc built into the library, which holds SASS for the device's architecture.
    Fatbin {
        /// The device's architecture.
        arch: Arch,
    },
    /// A cubin NVRTC compiled earlier, read from the on-disk cache.
    Cache {
        /// The device's architecture.
        arch: Arch,
        /// The cache entry.
        path: PathBuf,
    },
    /// NVRTC compiled the embedded source for the device in this process.
    Nvrtc {
        /// The device's architecture, compiled for exactly.
        arch: Arch,
        /// The libnvrtc used.
        library: PathBuf,
        /// NVRTC's version, `(major, minor)`.
        version: (i32, i32),
        /// Wall-clock seconds the compilation took.
        seconds: f64,
        /// The cache entry written, or why none could be (the kernels are used either way).
        cached: std::result::Result<PathBuf, String>,
    },
    /// The fatbin has no SASS for the device's architecture and NVRTC could not be used, so the
    /// driver loaded what the fatbin has (it JIT-compiles PTX, or runs an older SASS of the same
    /// family).
    FatbinFallback {
        /// The device's architecture.
        arch: Arch,
        /// Why NVRTC could not be used.
        nvrtc: String,
    },
}

impl fmt::Display for KernelsOrigin {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            KernelsOrigin::Fatbin { arch } => write!(f, "{arch} SASS from the fatbin built by nvcc"),
            KernelsOrigin::Cache { arch, path } => write!(f, "{arch} cubin from the cache ({})", path.display()),
            KernelsOrigin::Nvrtc {
                arch,
                library,
                version: (major, minor),
                seconds,
                cached,
            } => {
                write!(
                    f,
                    "{arch} cubin compiled by NVRTC {major}.{minor} ({}) in {seconds:.1} s, ",
                    library.display()
                )?;
                match cached {
                    Ok(path) => write!(f, "cached in {}", path.display()),
                    Err(why) => write!(f, "not cached: {why}"),
                }
            }
            KernelsOrigin::FatbinFallback { arch, nvrtc } => write!(
                f,
                "the fatbin built by nvcc, which has no {arch} SASS, loaded by the driver (PTX JIT or an older SASS) because NVRTC could not be used: {nvrtc}"
            ),
        }
    }
}

/// The kernels of device `ordinal` (architecture `arch`) in `ctx`, and where they came from.
pub(crate) fn load(ctx: &Arc<CudaContext>, ordinal: usize, arch: Arch) -> Result<(Arc<CudaModule>, KernelsOrigin)> {
    let nvrtc_only = std::env::var("ENLIGHTEN_KERNELS").is_ok_and(|v| v == "nvrtc");
    let built = if nvrtc_only { &[][..] } else { fatbin::fatbin() };
    let sass = fatbin::sass_architectures(built);
    if sass.contains(&arch) {
        let module = load_image(ctx, built).map_err(|e| Error::cuda("loading the enlighten fatbin", e))?;
        return Ok((module, KernelsOrigin::Fatbin { arch }));
    }
    let nvrtc = match from_nvrtc(ctx, arch) {
        Ok(found) => return Ok(found),
        Err(why) => why,
    };
    if !built.is_empty() {
        if let Ok(module) = load_image(ctx, built) {
            return Ok((module, KernelsOrigin::FatbinFallback { arch, nvrtc }));
        }
    }
    let holds = if nvrtc_only {
        "ENLIGHTEN_KERNELS=nvrtc set".to_string()
    } else if built.is_empty() {
        "this build has no nvcc fatbin".to_string()
    } else {
        let archs: Vec<String> = sass.iter().map(Arch::to_string).collect();
        format!(
            "the nvcc fatbin holds SASS for [{}] only and the driver cannot load it",
            archs.join(", ")
        )
    };
    Err(Unavailable::NoDeviceKernels {
        ordinal,
        arch: arch.to_string(),
        reason: format!("{holds}; NVRTC: {nvrtc}"),
    }
    .into())
}

/// The cache's entry for this source, architecture and NVRTC, else a fresh NVRTC compilation.
fn from_nvrtc(ctx: &Arc<CudaContext>, arch: Arch) -> std::result::Result<(Arc<CudaModule>, KernelsOrigin), String> {
    let nvrtc = Nvrtc::locate().map_err(|e| e.to_string())?;
    let key = Key {
        source_hash: super::kernel_source::hash(OPTIONS),
        arch,
        nvrtc: nvrtc.version(),
    };
    // An entry that lacks an entry point or does not load is ignored and overwritten below.
    if let Some((path, bytes)) = kernel_cache::read(key) {
        if elf::missing_entries(&bytes).is_ok_and(|m| m.is_empty()) {
            if let Ok(module) = load_image(ctx, &bytes) {
                return Ok((module, KernelsOrigin::Cache { arch, path }));
            }
        }
    }
    let cubin = nvrtc.compile(arch).map_err(|e| e.to_string())?;
    let missing = elf::missing_entries(&cubin.bytes)?;
    if !missing.is_empty() {
        return Err(format!("NVRTC's {arch} cubin lacks the entry points {missing:?}"));
    }
    let module =
        load_image(ctx, &cubin.bytes).map_err(|e| format!("the driver could not load NVRTC's {arch} cubin: {e}"))?;
    let cached = kernel_cache::write(key, &cubin.bytes);
    Ok((
        module,
        KernelsOrigin::Nvrtc {
            arch,
            library: nvrtc.library().to_path_buf(),
            version: nvrtc.version(),
            seconds: cubin.seconds,
            cached,
        },
    ))
}

fn load_image(
    ctx: &Arc<CudaContext>,
    image: &[u8],
) -> std::result::Result<Arc<CudaModule>, cudarc::driver::DriverError> {
    ctx.load_module(Ptx::from_binary(image.to_vec()))
}

//! One loaded module per device: the primary context (the one libtorch uses), the kernels loaded
//! once from where [`super::origin`] finds them, and each kernel function looked up once and
//! prepared then ([`super::function::prepare`]: its shared memory opt-in), never at a launch.

use std::collections::HashMap;
use std::sync::{Arc, Mutex, OnceLock};

use cudarc::driver::sys::CUfunction_attribute;
use cudarc::driver::{sys, CudaContext, CudaFunction, CudaModule};

use super::function::{self, Function};
use super::nvrtc::Arch;
use super::{probe, Kernel, KernelsOrigin};
use crate::error::{Error, Result};

pub(crate) struct DeviceKernels {
    pub ctx: Arc<CudaContext>,
    pub origin: KernelsOrigin,
    module: Arc<CudaModule>,
    functions: Mutex<HashMap<Kernel, CudaFunction>>,
    pub sm_count: u32,
    /// Shared memory a block may have when its kernel opts in (static and dynamic together).
    pub max_shared_per_block: u32,
}

impl DeviceKernels {
    /// The cached kernels of device `ordinal`, loaded on first use (which may compile them).
    pub fn get(ordinal: usize) -> Result<Arc<DeviceKernels>> {
        static CACHE: OnceLock<Mutex<HashMap<usize, Arc<DeviceKernels>>>> = OnceLock::new();
        let cache = CACHE.get_or_init(Default::default);
        let mut map = cache.lock().unwrap_or_else(|poisoned| poisoned.into_inner());
        if let Some(k) = map.get(&ordinal) {
            return Ok(k.clone());
        }
        let loaded = Arc::new(Self::load(ordinal)?);
        map.insert(ordinal, loaded.clone());
        Ok(loaded)
    }

    fn load(ordinal: usize) -> Result<Self> {
        let info = probe()?;
        if ordinal >= info.device_count {
            return Err(Error::Device {
                arg: "tensor",
                expected: format!("a CUDA device below {}", info.device_count),
                got: tch::Device::Cuda(ordinal),
            });
        }
        let ctx = CudaContext::new(ordinal).map_err(|e| Error::cuda("retaining the primary context", e))?;
        let capability = |attribute, what| {
            ctx.attribute(attribute)
                .map(|v| v.max(0) as u32)
                .map_err(|e| Error::cuda(format!("reading the compute capability's {what}"), e))
        };
        let arch = Arch::new(
            capability(
                sys::CUdevice_attribute::CU_DEVICE_ATTRIBUTE_COMPUTE_CAPABILITY_MAJOR,
                "major",
            )?,
            capability(
                sys::CUdevice_attribute::CU_DEVICE_ATTRIBUTE_COMPUTE_CAPABILITY_MINOR,
                "minor",
            )?,
        );
        let (module, origin) = super::origin::load(&ctx, ordinal, arch)?;
        let sm_count = ctx
            .attribute(sys::CUdevice_attribute::CU_DEVICE_ATTRIBUTE_MULTIPROCESSOR_COUNT)
            .map_err(|e| Error::cuda("reading the SM count", e))?;
        let max_shared = ctx
            .attribute(sys::CUdevice_attribute::CU_DEVICE_ATTRIBUTE_MAX_SHARED_MEMORY_PER_BLOCK_OPTIN)
            .map_err(|e| Error::cuda("reading the opt-in shared memory per block", e))?;
        Ok(DeviceKernels {
            ctx,
            origin,
            module,
            functions: Mutex::new(HashMap::new()),
            sm_count: sm_count.max(1) as u32,
            max_shared_per_block: max_shared.max(0) as u32,
        })
    }

    /// The function of `kernel`, looked up and prepared on its first use on this device (the
    /// caller keeps its own context current around this: [`KeepCurrentContext`]).
    pub fn function(&self, kernel: Kernel) -> Result<CudaFunction> {
        let mut map = self.functions.lock().unwrap_or_else(|poisoned| poisoned.into_inner());
        if let Some(f) = map.get(&kernel) {
            return Ok(f.clone());
        }
        let f = self
            .module
            .load_function(kernel.name())
            .map_err(|e| Error::cuda(format!("looking up kernel {}", kernel.name()), e))?;
        let driver = Driver {
            ctx: &self.ctx,
            f: &f,
            kernel,
        };
        function::prepare(&driver, self.max_shared_per_block)?;
        map.insert(kernel, f.clone());
        Ok(f)
    }
}

/// A function as the driver has it, for [`function::prepare`].
struct Driver<'a> {
    ctx: &'a Arc<CudaContext>,
    f: &'a CudaFunction,
    kernel: Kernel,
}

impl Function for Driver<'_> {
    fn static_shared(&self) -> Result<u32> {
        let bytes = self
            .f
            .get_attribute(CUfunction_attribute::CU_FUNC_ATTRIBUTE_SHARED_SIZE_BYTES)
            .map_err(|e| Error::cuda(format!("reading the static shared memory of {}", self.kernel.name()), e))?;
        Ok(bytes.max(0) as u32)
    }

    fn set_max_dynamic_shared(&self, bytes: u32) -> Result<()> {
        // A host-side setting (no sync), made with the function's context current: cudarc's
        // setter does not bind it.
        self.ctx
            .bind_to_thread()
            .map_err(|e| Error::cuda("binding the device's context", e))?;
        self.f
            .set_attribute(
                CUfunction_attribute::CU_FUNC_ATTRIBUTE_MAX_DYNAMIC_SHARED_SIZE_BYTES,
                bytes as i32,
            )
            .map_err(|e| {
                Error::cuda(
                    format!("opting {} in to {bytes} bytes of shared memory", self.kernel.name()),
                    e,
                )
            })
    }
}

/// The calling thread's current CUDA context, made current again when this is dropped. cudarc
/// binds a device's context to the thread when it loads or launches; a caller working on another
/// device (libtorch on cuda:0 while enlighten launches on cuda:1) must find its own context
/// current afterwards.
pub(crate) struct KeepCurrentContext(sys::CUcontext);

impl KeepCurrentContext {
    pub fn save() -> Result<KeepCurrentContext> {
        let mut ctx: sys::CUcontext = std::ptr::null_mut();
        // SAFETY: writes one context handle (possibly null) through a valid pointer.
        unsafe { sys::cuCtxGetCurrent(&mut ctx) }
            .result()
            .map_err(|e| Error::cuda("reading the current context", e))?;
        Ok(KeepCurrentContext(ctx))
    }
}

impl Drop for KeepCurrentContext {
    fn drop(&mut self) {
        // SAFETY: the handle was current on this thread when saved (or null, which unbinds);
        // primary contexts stay alive for the process, so it is still valid.
        let _ = unsafe { sys::cuCtxSetCurrent(self.0) };
    }
}

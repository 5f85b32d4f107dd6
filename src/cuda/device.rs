//! One loaded module per device: the primary context (the one libtorch uses), the null stream,
//! the fatbin loaded once, and each kernel function looked up once.

use std::collections::HashMap;
use std::sync::{Arc, Mutex, OnceLock};

use cudarc::driver::{sys, CudaContext, CudaFunction, CudaModule, CudaStream};
use cudarc::nvrtc::Ptx;

use super::{probe, Kernel};
use crate::error::{Error, Result};

pub(crate) struct DeviceKernels {
    pub stream: Arc<CudaStream>,
    module: Arc<CudaModule>,
    functions: Mutex<HashMap<Kernel, CudaFunction>>,
    pub sm_count: u32,
}

impl DeviceKernels {
    /// The cached kernels of device `ordinal`, loading the fatbin on first use.
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
        let module = ctx
            .load_module(Ptx::from_binary(super::fatbin().to_vec()))
            .map_err(|e| Error::cuda("loading the enlighten fatbin", e))?;
        let sm_count = ctx
            .attribute(sys::CUdevice_attribute::CU_DEVICE_ATTRIBUTE_MULTIPROCESSOR_COUNT)
            .map_err(|e| Error::cuda("reading the SM count", e))?;
        Ok(DeviceKernels {
            stream: ctx.default_stream(),
            module,
            functions: Mutex::new(HashMap::new()),
            sm_count: sm_count.max(1) as u32,
        })
    }

    pub fn function(&self, kernel: Kernel) -> Result<CudaFunction> {
        let mut map = self.functions.lock().unwrap_or_else(|poisoned| poisoned.into_inner());
        if let Some(f) = map.get(&kernel) {
            return Ok(f.clone());
        }
        let f = self
            .module
            .load_function(kernel.name())
            .map_err(|e| Error::cuda(format!("looking up kernel {}", kernel.name()), e))?;
        map.insert(kernel, f.clone());
        Ok(f)
    }
}

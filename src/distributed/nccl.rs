//! The NCCL backend's factory. ProcessGroupNCCL lives in libtorch_cuda.so; this version of the
//! crate does not build the library that would reach it, so asking for NCCL is a typed error.

use super::ffi::BackendFactory;
use crate::error::{Error, Result};

pub(super) fn factory() -> Result<BackendFactory> {
    Err(Error::value(
        "backend",
        "gloo: this build of enlighten has no NCCL backend",
        "nccl",
    ))
}

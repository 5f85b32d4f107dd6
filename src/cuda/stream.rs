//! The caller's current CUDA stream, from libtorch through the bridge (bridge/stream.cpp): every
//! launch of the library goes on it, as PyTorch's contract for custom ops asks.

use std::ffi::{c_char, c_void};
use std::sync::Arc;

use cudarc::driver::{sys, CudaContext, CudaStream};

use crate::error::Result;

extern "C" {
    fn enl_current_stream(index: i64, stream: *mut *mut c_void, message: *mut *mut c_char) -> i32;
    #[cfg(feature = "testing")]
    fn enl_use_pool_stream(index: i64, previous: *mut u64, message: *mut *mut c_char) -> i32;
    #[cfg(feature = "testing")]
    fn enl_restore_stream(index: i64, id: u64, message: *mut *mut c_char) -> i32;
}

/// The stream current on this thread for CUDA device `ordinal`, wrapped (not owned) for cudarc.
pub(crate) fn current(ctx: &Arc<CudaContext>, ordinal: usize) -> Result<Arc<CudaStream>> {
    let mut handle: *mut c_void = std::ptr::null_mut();
    let mut message: *mut c_char = std::ptr::null_mut();
    // SAFETY: valid out-pointers; the bridge never throws and sets `message` only on failure.
    let code = unsafe { enl_current_stream(ordinal as i64, &mut handle, &mut message) };
    crate::bridge::check("current CUDA stream", code, message)?;
    // SAFETY: libtorch's streams belong to the device's primary context (the one `ctx` retains)
    // and live for the process (pool streams are never destroyed; null is the legacy default
    // stream). Ordering with libtorch's own work is what launching on this stream achieves.
    Ok(unsafe { ctx.wrap_borrowed_stream(handle as sys::CUstream) })
}

/// Runs `f` with a fresh stream from libtorch's pool as the current stream of CUDA device
/// `ordinal` (as `torch.cuda.stream(torch.cuda.Stream())` does), then restores the previous one.
/// For tests of the stream contract.
#[cfg(feature = "testing")]
pub fn with_pool_stream<R>(ordinal: usize, f: impl FnOnce() -> R) -> Result<R> {
    struct Restore(i64, u64);
    impl Drop for Restore {
        fn drop(&mut self) {
            let mut message: *mut c_char = std::ptr::null_mut();
            // SAFETY: as in with_pool_stream; a failure to restore is reported by the bridge's
            // message, which is freed here.
            let code = unsafe { enl_restore_stream(self.0, self.1, &mut message) };
            let _ = crate::bridge::check("restoring the CUDA stream", code, message);
        }
    }
    let mut previous = 0u64;
    let mut message: *mut c_char = std::ptr::null_mut();
    // SAFETY: valid out-pointers; the bridge never throws.
    let code = unsafe { enl_use_pool_stream(ordinal as i64, &mut previous, &mut message) };
    crate::bridge::check("taking a stream from libtorch's pool", code, message)?;
    let _restore = Restore(ordinal as i64, previous);
    Ok(f())
}

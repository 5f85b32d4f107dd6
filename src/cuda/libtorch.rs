//! rustc links with `--as-needed`, so libtorch_cuda.so is not among a binary's needed libraries
//! and libtorch then reports no CUDA. Loading it once, globally, before the first tch CUDA call
//! registers the CUDA backend; one binary then serves CPU-only and GPU machines.

use std::ffi::{CStr, CString};
use std::sync::OnceLock;

/// Loads libtorch_cuda.so (RTLD_NOW | RTLD_GLOBAL) once per process. Call it before the first
/// tch CUDA call; [`crate::cuda::probe`] calls it for you. Tries the library search path
/// (LD_LIBRARY_PATH, then the binary's rpath), then the libtorch this crate was built against.
pub fn load_libtorch_cuda() -> Result<(), String> {
    static LOADED: OnceLock<Result<(), String>> = OnceLock::new();
    LOADED.get_or_init(load).clone()
}

fn load() -> Result<(), String> {
    let built_against = env!("ENLIGHTEN_LIBTORCH_LIB");
    let mut candidates = vec!["libtorch_cuda.so".to_string()];
    if !built_against.is_empty() {
        candidates.push(format!("{built_against}/libtorch_cuda.so"));
    }
    let mut errors = Vec::new();
    for candidate in &candidates {
        let Ok(c_name) = CString::new(candidate.as_str()) else {
            continue;
        };
        // SAFETY: dlopen with a valid NUL-terminated path; the handle is deliberately never
        // closed, because libtorch's CUDA backend must stay registered for the process lifetime.
        let handle = unsafe { libc::dlopen(c_name.as_ptr(), libc::RTLD_NOW | libc::RTLD_GLOBAL) };
        if !handle.is_null() {
            return Ok(());
        }
        errors.push(format!("{candidate}: {}", last_dl_error()));
    }
    Err(errors.join("; "))
}

fn last_dl_error() -> String {
    // SAFETY: dlerror returns null or a pointer to a NUL-terminated thread-local string.
    let msg = unsafe { libc::dlerror() };
    if msg.is_null() {
        "unknown dlopen error".into()
    } else {
        unsafe { CStr::from_ptr(msg) }.to_string_lossy().into_owned()
    }
}

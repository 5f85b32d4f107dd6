//! The NCCL backend's factory. ProcessGroupNCCL lives in libtorch_cuda.so, which loads only
//! where CUDA's libraries are installed; so bridge/nccl.cpp is a shared library of its own,
//! embedded in the crate and loaded (from memory, through a memfd) the first time NCCL is asked
//! for, after libtorch_cuda.so. A build without nccl.h (see build.rs) says so instead.

use super::ffi::BackendFactory;
use crate::error::{Error, Result};

#[cfg(enlighten_nccl)]
pub(super) fn factory() -> Result<BackendFactory> {
    use std::sync::OnceLock;
    static LOADED: OnceLock<Result<BackendFactory, String>> = OnceLock::new();
    LOADED
        .get_or_init(embedded::load)
        .clone()
        .map_err(|message| Error::Libtorch {
            operation: "loading the NCCL backend",
            message,
        })
}

#[cfg(not(enlighten_nccl))]
pub(super) fn factory() -> Result<BackendFactory> {
    Err(Error::value(
        "backend",
        "gloo: this build has no NCCL backend (build.rs found no nccl.h: run scripts/setup, or set NCCL_INCLUDE)",
        "nccl",
    ))
}

#[cfg(enlighten_nccl)]
mod embedded {
    use std::ffi::{c_void, CStr, CString};
    use std::fs::File;
    use std::io::Write;
    use std::os::fd::{AsRawFd, FromRawFd};

    use super::BackendFactory;

    /// bridge/nccl.cpp, compiled by build.rs.
    static LIBRARY: &[u8] = include_bytes!(env!("ENLIGHTEN_NCCL_LIBRARY"));

    pub(super) fn load() -> Result<BackendFactory, String> {
        enlighten::cuda::load_libtorch_cuda()
            .map_err(|e| format!("libtorch_cuda.so, which holds ProcessGroupNCCL, cannot be loaded: {e}"))?;
        // SAFETY: memfd_create with a NUL-terminated name; a negative result is checked.
        let fd = unsafe { libc::memfd_create(c"enlighten_nccl".as_ptr(), libc::MFD_CLOEXEC) };
        if fd < 0 {
            return Err(format!("memfd_create: {}", std::io::Error::last_os_error()));
        }
        // SAFETY: `fd` is a new descriptor that nothing else owns; the File closes it.
        let mut file = unsafe { File::from_raw_fd(fd) };
        file.write_all(LIBRARY)
            .map_err(|e| format!("writing the NCCL bridge to a memfd: {e}"))?;
        let path = CString::new(format!("/proc/self/fd/{}", file.as_raw_fd())).map_err(|e| e.to_string())?;
        // SAFETY: dlopen of a complete shared object by a NUL-terminated path. The handle is never
        // closed: backends created through it live as long as the process may use them. Its
        // libtorch dependencies resolve to the copies already loaded.
        let handle = unsafe { libc::dlopen(path.as_ptr(), libc::RTLD_NOW | libc::RTLD_LOCAL) };
        if handle.is_null() {
            return Err(format!("loading the NCCL bridge: {}", dl_error()));
        }
        // SAFETY: dlsym on a live handle with a NUL-terminated name.
        let symbol: *mut c_void = unsafe { libc::dlsym(handle, c"enl_nccl_backend_new".as_ptr()) };
        if symbol.is_null() {
            return Err(format!("enl_nccl_backend_new: {}", dl_error()));
        }
        // SAFETY: the symbol is bridge/nccl.cpp's enl_nccl_backend_new, whose C signature is the
        // one BackendFactory declares.
        Ok(unsafe { std::mem::transmute::<*mut c_void, BackendFactory>(symbol) })
    }

    fn dl_error() -> String {
        // SAFETY: dlerror returns null or a NUL-terminated thread-local string.
        let message = unsafe { libc::dlerror() };
        if message.is_null() {
            "unknown dlopen error".into()
        } else {
            // SAFETY: non-null, NUL-terminated, valid until the next dl call on this thread.
            unsafe { CStr::from_ptr(message) }.to_string_lossy().into_owned()
        }
    }
}

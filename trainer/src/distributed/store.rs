//! The job's key-value store: c10d's TCPStore, which rank 0 serves at MASTER_ADDR:MASTER_PORT.
//! The process group meets on it, and the ranks leave there what the others need to know when
//! something goes wrong: their WORLD_SIZE ([`super::rendezvous`]) and their heartbeats
//! ([`super::heartbeat`]).

use std::ffi::{c_char, c_int, CString};
use std::ptr::{self, NonNull};
use std::time::Duration;

use super::ffi;
use super::group::check as concise_check;
use crate::error::{Error, Result};

/// One connection to the store (or, on rank 0, the store itself and a connection to it).
pub(super) struct Store {
    handle: NonNull<ffi::Store>,
}

// SAFETY: a TCPStore serialises its operations under its own lock and has no thread affinity
// (PyTorch calls it from any thread), so it may be moved to and shared between threads.
unsafe impl Send for Store {}
unsafe impl Sync for Store {}

impl Store {
    /// Serves the store at `port` (`serve`, rank 0) or connects to it at `addr:port`; either
    /// within `timeout`, which also bounds every later call.
    pub(super) fn new(addr: &str, port: u16, serve: bool, timeout: Duration) -> Result<Store> {
        let addr = c_text("MASTER_ADDR", addr)?;
        let mut handle: *mut ffi::Store = ptr::null_mut();
        let mut message: *mut c_char = ptr::null_mut();
        // SAFETY: `addr` is NUL-terminated and lives across the call; the bridge writes `handle`
        // only on success and never throws.
        let code = unsafe {
            ffi::enl_store_new(
                addr.as_ptr(),
                port,
                c_int::from(serve),
                millis(timeout)?,
                &mut handle,
                &mut message,
            )
        };
        concise_check("TCPStore", code, message)?;
        Store::own(handle)
    }

    /// Another connection to the same store whose calls wait at most `timeout`.
    pub(super) fn connect_again(&self, timeout: Duration) -> Result<Store> {
        let mut handle: *mut ffi::Store = ptr::null_mut();
        let mut message: *mut c_char = ptr::null_mut();
        // SAFETY: the store is live; the bridge writes `handle` only on success.
        let code = unsafe { ffi::enl_store_clone(self.raw(), millis(timeout)?, &mut handle, &mut message) };
        concise_check("TCPStore::clone", code, message)?;
        Store::own(handle)
    }

    pub(super) fn set(&self, key: &str, value: &[u8]) -> Result<()> {
        let key = c_text("key", key)?;
        let mut message: *mut c_char = ptr::null_mut();
        // SAFETY: the store is live; `key` and `value` outlive the call, which copies them.
        let code = unsafe { ffi::enl_store_set(self.raw(), key.as_ptr(), value.as_ptr(), value.len(), &mut message) };
        concise_check("TCPStore::set", code, message)
    }

    /// Whether `key` is set (no waiting).
    pub(super) fn check(&self, key: &str) -> Result<bool> {
        let key = c_text("key", key)?;
        let (mut exists, mut message): (c_int, *mut c_char) = (0, ptr::null_mut());
        // SAFETY: the store is live; `key` outlives the call.
        let code = unsafe { ffi::enl_store_check(self.raw(), key.as_ptr(), &mut exists, &mut message) };
        concise_check("TCPStore::check", code, message)?;
        Ok(exists != 0)
    }

    /// The value of `key`, waiting for it up to the store's timeout.
    pub(super) fn get(&self, key: &str) -> Result<Vec<u8>> {
        let key = c_text("key", key)?;
        let (mut value, mut len, mut message): (*mut u8, usize, *mut c_char) = (ptr::null_mut(), 0, ptr::null_mut());
        // SAFETY: the store is live; on success the bridge hands over a malloc'ed buffer of
        // `len` bytes, freed below.
        let code = unsafe { ffi::enl_store_get(self.raw(), key.as_ptr(), &mut value, &mut len, &mut message) };
        concise_check("TCPStore::get", code, message)?;
        // SAFETY: `value` holds `len` initialised bytes from malloc (at least 1 byte allocated).
        let bytes = unsafe { std::slice::from_raw_parts(value, len) }.to_vec();
        // SAFETY: allocated by the bridge with malloc, freed once.
        unsafe { libc::free(value.cast()) };
        Ok(bytes)
    }

    pub(super) fn raw(&self) -> *mut ffi::Store {
        self.handle.as_ptr()
    }

    fn own(handle: *mut ffi::Store) -> Result<Store> {
        let handle = NonNull::new(handle).ok_or_else(|| Error::Internal("the bridge returned no store".into()))?;
        Ok(Store { handle })
    }
}

impl Drop for Store {
    fn drop(&mut self) {
        // SAFETY: the handle came from enl_store_new or enl_store_clone and is freed once, here;
        // a process group built on the store holds its own reference to it.
        unsafe { ffi::enl_store_free(self.handle.as_ptr()) }
    }
}

pub(super) fn millis(timeout: Duration) -> Result<i64> {
    match i64::try_from(timeout.as_millis()) {
        Ok(ms) if ms > 0 => Ok(ms),
        _ => Err(Error::value(
            "timeout",
            "between 1 ms and i64::MAX ms",
            format!("{timeout:?}"),
        )),
    }
}

pub(super) fn c_text(name: &'static str, value: &str) -> Result<CString> {
    CString::new(value).map_err(|_| Error::value(name, "text without NUL bytes", format!("{value:?}")))
}

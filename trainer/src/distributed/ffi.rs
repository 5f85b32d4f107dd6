//! The C ABI of bridge/c10d.cpp. Every function but the two `free`s returns 0, or 1 with a
//! malloc'ed message that [`crate::error::check_bridge`] turns into an error.

use std::ffi::{c_char, c_int};

use torch_sys::C_tensor;

/// `enl_store`: one connection to a TCPStore (on rank 0, the store itself).
#[repr(C)]
pub(super) struct Store {
    _opaque: [u8; 0],
}

/// `enl_pg`: the c10d Backend built on a store.
#[repr(C)]
pub(super) struct Pg {
    _opaque: [u8; 0],
}

/// `enl_work`: the c10d Work of one asynchronous all-reduce call.
#[repr(C)]
pub(super) struct Work {
    _opaque: [u8; 0],
}

/// `enl_backend_factory`: builds a c10d Backend on a store (the NCCL library exports one).
pub(super) type BackendFactory = unsafe extern "C" fn(
    store: *mut std::ffi::c_void,
    rank: c_int,
    size: c_int,
    timeout_ms: i64,
    device: c_int,
    backend: *mut *mut std::ffi::c_void,
    message: *mut *mut c_char,
) -> c_int;

extern "C" {
    pub(super) fn enl_store_new(
        master_addr: *const c_char,
        master_port: u16,
        is_server: c_int,
        timeout_ms: i64,
        out: *mut *mut Store,
        message: *mut *mut c_char,
    ) -> c_int;
    pub(super) fn enl_store_clone(
        store: *mut Store,
        timeout_ms: i64,
        out: *mut *mut Store,
        message: *mut *mut c_char,
    ) -> c_int;
    pub(super) fn enl_store_free(store: *mut Store);
    pub(super) fn enl_store_set(
        store: *mut Store,
        key: *const c_char,
        value: *const u8,
        len: usize,
        message: *mut *mut c_char,
    ) -> c_int;
    pub(super) fn enl_store_check(
        store: *mut Store,
        key: *const c_char,
        exists: *mut c_int,
        message: *mut *mut c_char,
    ) -> c_int;
    pub(super) fn enl_store_get(
        store: *mut Store,
        key: *const c_char,
        value: *mut *mut u8,
        len: *mut usize,
        message: *mut *mut c_char,
    ) -> c_int;
    #[allow(clippy::too_many_arguments)]
    pub(super) fn enl_pg_new(
        store: *mut Store,
        rank: c_int,
        size: c_int,
        timeout_ms: i64,
        gloo_interfaces: *const c_char,
        gloo_hostname: *const c_char,
        factory: Option<BackendFactory>,
        device: c_int,
        out: *mut *mut Pg,
        message: *mut *mut c_char,
    ) -> c_int;
    pub(super) fn enl_pg_free(pg: *mut Pg);
    pub(super) fn enl_pg_allreduce_sum(
        pg: *mut Pg,
        tensors: *const *const C_tensor,
        count: usize,
        out: *mut *mut Work,
        message: *mut *mut c_char,
    ) -> c_int;
    pub(super) fn enl_work_wait(work: *mut Work, timeout_ms: i64, message: *mut *mut c_char) -> c_int;
    pub(super) fn enl_work_free(work: *mut Work);
    pub(super) fn enl_pg_allgather(
        pg: *mut Pg,
        input: *const C_tensor,
        out: *mut *mut C_tensor,
        message: *mut *mut c_char,
    ) -> c_int;
    pub(super) fn enl_pg_broadcast(
        pg: *mut Pg,
        tensor: *const C_tensor,
        root: c_int,
        message: *mut *mut c_char,
    ) -> c_int;
    pub(super) fn enl_pg_barrier(pg: *mut Pg, message: *mut *mut c_char) -> c_int;
    pub(super) fn enl_set_grad(param: *const C_tensor, grad: *const C_tensor, message: *mut *mut c_char) -> c_int;
}

//! What the library does to a kernel function when it is loaded, on both backends: the driver's
//! function handle (device.rs) and the emulator's (through [`super::executor::Executor::load`]).
//!
//! Past 48 KiB of dynamic shared memory a launch fails unless its function opted in
//! (`CU_FUNC_ATTRIBUTE_MAX_DYNAMIC_SHARED_SIZE_BYTES`). The opt-in is a setting of the function,
//! shared by every host thread: set at each launch to that launch's own size, two threads
//! launching with different sizes could shrink it under each other's launch. So it is set once,
//! when the function is loaded, to the most the device allows beside the function's static
//! shared memory, and no launch changes it.

use crate::error::Result;

/// The attributes of a loaded kernel function that the library reads and sets (the driver's
/// `cuFuncGetAttribute` and `cuFuncSetAttribute`).
pub trait Function {
    /// Bytes of static `__shared__` memory a block of the function has
    /// (`CU_FUNC_ATTRIBUTE_SHARED_SIZE_BYTES`).
    fn static_shared(&self) -> Result<u32>;

    /// Opts the function in to `bytes` of dynamic shared memory a block
    /// (`CU_FUNC_ATTRIBUTE_MAX_DYNAMIC_SHARED_SIZE_BYTES`).
    fn set_max_dynamic_shared(&self, bytes: u32) -> Result<()>;
}

/// Prepares a function just loaded on a device whose blocks may have `max_shared_per_block`
/// bytes of shared memory when opted in (static and dynamic together): opts it in to all of
/// what its static shared memory leaves.
pub(crate) fn prepare(f: &dyn Function, max_shared_per_block: u32) -> Result<()> {
    let room = max_shared_per_block.saturating_sub(f.static_shared()?);
    f.set_max_dynamic_shared(room)
}

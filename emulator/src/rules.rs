//! The driver's launch rules: what `cuLaunchKernel` (and `cuFuncSetAttribute`) refuse on an
//! H100/H200, checked on every emulated launch before any block runs. The kernel's figures (its
//! `__launch_bounds__`, static shared memory, registers) are what the GPU compiler reports for
//! sm_90 (build.rs); the opt-in is what the library set when it loaded the function.

use std::cell::RefCell;
use std::collections::HashMap;
use std::rc::Rc;

use enlighten::cuda::executor::{Function, Shape};
use enlighten::{Error, Result};

use crate::{ffi, Profile};

/// Dynamic shared memory a block may have without opting in (static and dynamic together).
pub const DEFAULT_SHARED: u32 = 48 * 1024;

/// Registers are given to a warp in units of this many (sm_90).
const REGISTER_UNIT: u32 = 256;

/// Each loaded kernel's `CU_FUNC_ATTRIBUTE_MAX_DYNAMIC_SHARED_SIZE_BYTES` under one executor.
pub type OptIns = Rc<RefCell<HashMap<&'static str, u32>>>;

/// The driver's default opt-in: what 48 KiB leaves beside the static shared memory.
fn default_dynamic(entry: &ffi::Entry) -> u32 {
    DEFAULT_SHARED.saturating_sub(entry.static_shared())
}

/// A kernel as the emulator has loaded it, for the library's [`Function`] calls.
pub struct Loaded<'a> {
    pub kernel: &'static str,
    pub entry: &'a ffi::Entry,
    pub profile: Profile,
    pub opt_ins: &'a OptIns,
}

impl Function for Loaded<'_> {
    fn static_shared(&self) -> Result<u32> {
        Ok(self.entry.static_shared())
    }

    /// The driver refuses more than the device's opt-in maximum less the static shared memory.
    fn set_max_dynamic_shared(&self, bytes: u32) -> Result<()> {
        let room = self
            .profile
            .max_shared_per_block
            .saturating_sub(self.entry.static_shared());
        if bytes > room {
            return Err(Error::Emulated {
                kernel: self.kernel,
                message: format!(
                    "cuFuncSetAttribute(MAX_DYNAMIC_SHARED_SIZE_BYTES) to {bytes} bytes; the {} profile allows {room} \
                     ({} a block less {} bytes of static shared memory)",
                    self.profile.name,
                    self.profile.max_shared_per_block,
                    self.entry.static_shared()
                ),
            });
        }
        self.opt_ins.borrow_mut().insert(self.kernel, bytes);
        Ok(())
    }
}

/// Checks a launch of `kernel` against every rule; the message names the rule, what the launch
/// asked for and the limit.
pub fn check(
    kernel: &'static str,
    entry: &ffi::Entry,
    shape: &Shape,
    profile: &Profile,
    opt_ins: &OptIns,
) -> std::result::Result<(), String> {
    let threads = shape.block.iter().product::<u32>();
    if threads > profile.max_threads_per_block {
        return Err(format!(
            "{threads} threads a block; the {} profile allows {}",
            profile.name, profile.max_threads_per_block
        ));
    }
    if let Some(bound) = entry.max_threads().filter(|&b| threads > b) {
        return Err(format!(
            "{threads} threads a block; the kernel's __launch_bounds__ allow {bound}"
        ));
    }
    check_registers(entry, threads, profile)?;
    check_shared(kernel, entry, shape.dynamic_shared, profile, opt_ins)
}

/// Registers are given per warp, rounded up to the allocation unit; the block's warps must fit
/// the SM's register file.
fn check_registers(entry: &ffi::Entry, threads: u32, profile: &Profile) -> std::result::Result<(), String> {
    let per_warp = (entry.registers() * 32).div_ceil(REGISTER_UNIT) * REGISTER_UNIT;
    let needed = u64::from(per_warp) * u64::from(threads.div_ceil(32));
    if needed > u64::from(profile.registers_per_block) {
        return Err(format!(
            "{threads} threads a block at {} registers a thread need {needed} registers; the {} profile has {} a block \
             (too many resources requested for launch)",
            entry.registers(),
            profile.name,
            profile.registers_per_block
        ));
    }
    Ok(())
}

/// Dynamic shared memory within the function's opt-in, and static plus dynamic within the block.
fn check_shared(
    kernel: &'static str,
    entry: &ffi::Entry,
    dynamic: u32,
    profile: &Profile,
    opt_ins: &OptIns,
) -> std::result::Result<(), String> {
    let opted = opt_ins.borrow().get(kernel).copied();
    let allowed = opted.unwrap_or_else(|| default_dynamic(entry));
    if dynamic > allowed {
        let how = match opted {
            Some(bytes) => format!("the kernel opted in to {bytes}"),
            None => format!(
                "the kernel did not opt in, and the default is 48 KiB less its {} bytes of static shared memory",
                entry.static_shared()
            ),
        };
        return Err(format!(
            "{dynamic} bytes of dynamic shared memory a block (MAX_DYNAMIC_SHARED_SIZE_BYTES): {how}, so {allowed} \
             at most"
        ));
    }
    let total = u64::from(entry.static_shared()) + u64::from(dynamic);
    if total > u64::from(profile.max_shared_per_block) {
        return Err(format!(
            "{} bytes of static and {dynamic} of dynamic shared memory a block; the {} profile allows {} together",
            entry.static_shared(),
            profile.name,
            profile.max_shared_per_block
        ));
    }
    Ok(())
}

//! The C interface of the emulator (emulator/emu_abi.h, mirrored field for field).

use std::ffi::{c_char, c_void};
#[cfg(enlighten_emulator)]
use std::ffi::{CStr, CString};

pub const ORDER_ASCENDING: u32 = 0;
pub const ORDER_DESCENDING: u32 = 1;
pub const ORDER_RANDOM: u32 = 2;

pub const PARAM_POINTER: u32 = 0;
pub const PARAM_INTEGER: u32 = 1;
pub const PARAM_FLOAT: u32 = 2;
pub const PARAM_OTHER: u32 = 3;
const MAX_PARAMS: usize = 32;

#[repr(C)]
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ParamType {
    pub kind: u32,
    pub size: u32,
}

impl ParamType {
    pub const fn new(kind: u32, size: usize) -> ParamType {
        ParamType {
            kind,
            size: size as u32,
        }
    }
}

#[repr(C)]
pub struct Entry {
    name: *const c_char,
    nparams: u32,
    params: [ParamType; MAX_PARAMS],
    max_threads: u32,
    static_shared: u32,
    registers: u32,
    call: Option<unsafe extern "C" fn(*mut *mut c_void)>,
}

impl Entry {
    /// The parameter types the kernel declares, in order.
    pub fn params(&self) -> &[ParamType] {
        &self.params[..self.nparams as usize]
    }

    /// The threads a block may have by the kernel's `__launch_bounds__`, if it has them.
    pub fn max_threads(&self) -> Option<u32> {
        (self.max_threads > 0).then_some(self.max_threads)
    }

    /// Bytes of static `__shared__` memory a block has (ptxas, sm_90).
    pub fn static_shared(&self) -> u32 {
        self.static_shared
    }

    /// Registers a thread uses (ptxas, sm_90).
    pub fn registers(&self) -> u32 {
        self.registers
    }
}

#[repr(C)]
pub struct Region {
    pub name: *const c_char,
    pub data_lo: u64,
    pub data_hi: u64,
    pub map_lo: u64,
    pub map_hi: u64,
    pub elem_size: u32,
    pub writable: u32,
}

#[repr(C)]
pub struct LaunchSpec {
    pub entry: *const Entry,
    pub grid: [u32; 3],
    pub block: [u32; 3],
    pub params: *mut *mut c_void,
    pub regions: *const Region,
    pub nregions: u32,
    pub order: u32,
    pub seed: u64,
    pub poison: u8,
    pub dynamic_shared: u32,
}

#[cfg(enlighten_emulator)]
extern "C" {
    fn emu_find(name: *const c_char) -> *const Entry;
    fn emu_launch(launch: *const LaunchSpec, message: *mut c_char, message_len: usize) -> i32;
}

/// The emulated kernel named `name`, if the emulator build has it.
#[cfg(enlighten_emulator)]
pub fn find(name: &str) -> Option<&'static Entry> {
    let c = CString::new(name).ok()?;
    // SAFETY: emu_find reads a NUL-terminated name and returns null or a pointer into a static
    // table that lives as long as the process.
    unsafe { emu_find(c.as_ptr()).as_ref() }
}

/// Runs a launch; the error is the emulator's message.
#[cfg(enlighten_emulator)]
pub fn launch(spec: &LaunchSpec) -> Result<(), String> {
    let mut message = vec![0 as c_char; 2048];
    // SAFETY: `spec` points at live parameter slots and regions for the duration of the call
    // (the caller owns them), and the message buffer is writable for its length.
    let rc = unsafe { emu_launch(spec, message.as_mut_ptr(), message.len()) };
    if rc == 0 {
        return Ok(());
    }
    // SAFETY: emu_launch writes a NUL-terminated message into the buffer on failure.
    Err(unsafe { CStr::from_ptr(message.as_ptr()) }
        .to_string_lossy()
        .into_owned())
}

#[cfg(not(enlighten_emulator))]
pub fn find(_name: &str) -> Option<&'static Entry> {
    None
}

#[cfg(not(enlighten_emulator))]
pub fn launch(_spec: &LaunchSpec) -> Result<(), String> {
    Err("this build has no emulator: nvcc's headers were not found when it was compiled".into())
}

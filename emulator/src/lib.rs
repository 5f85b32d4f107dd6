//! The CUDA execution-model emulator of enlighten: the kernel source of the library's
//! kernels/*.cu, compiled a second time as host C++ (build.rs, against cpp/cuda_emu.h), run on
//! the CPU with the arguments and grid the driver would get. The library's tests use it as a
//! dev-dependency; it is not published.
//!
//! Inside [`emulate`], every op's CUDA path runs on CPU tensors: the same host code, the same
//! argument list, grids sized from a [`Profile`], and the emulated kernel called instead of the
//! driver (the library hands each launch to the emulator through its hidden
//! `enlighten::cuda::executor` hook). Each launch:
//! - checks the arguments against the kernel's declared parameters (count, pointer or integer or
//!   float, size) — a check the driver does not make;
//! - checks the driver's launch rules ([`rules`]): threads a block within the profile and the
//!   kernel's `__launch_bounds__`, its registers (ptxas, sm_90) times the block within the
//!   register file, dynamic shared memory within what the kernel opted in to when the library
//!   loaded it (48 KiB less its static shared memory if it did not), static plus dynamic within
//!   the profile;
//! - stages every tensor in a mapping next to a guard page (after the end, or before the start,
//!   alternating launch by launch), inputs read-only, outputs poisoned;
//! - runs the grid [`schedules`] times, block by block, threads as fibers resumed in a different
//!   order each time (lowest thread first, highest first, then seeded random), with a different
//!   poison each time, and compares the outputs bit for bit: a missing barrier, a read of a value
//!   another thread has not yet written, or an element never written makes the runs disagree;
//! - sees every load and store the kernel makes (cpp/checker.cpp: the kernels are compiled with
//!   GCC's ThreadSanitizer hooks, answered by the emulator) against a per-byte shadow, and refuses
//!   a data race between threads of a block (two touch a byte between the same two barriers, one
//!   with a plain write, and no warp call orders them), a read of shared memory this block never
//!   wrote, a byte of a tensor written by two blocks without atomics or written by one and read by
//!   another, and any access outside a static `__shared__` array (each sits between red zones) or
//!   outside the exact bytes of the dynamic buffer or a tensor; UBSan's alignment and
//!   signed-overflow checks (cpp/ubsan.cpp) fail the launch too;
//! - reports faults (naming the argument and element), broken warp and barrier rules, deadlocks,
//!   the checker's findings and disagreements as [`enlighten::Error::Emulated`].
//!
//! What it cannot show: the GPU memory model beyond these rules (blocks run one at a time, and a
//! write is visible at once, so weaker orderings a GPU allows between blocks are not tried), warp
//! calls with partial masks as orderings (the checker counts every warp call a lane passes), the
//! driver beyond its launch rules (whose register and shared memory figures are sm_90's), module
//! loading and streams, the last bits of the fast math intrinsics, and speed. Emulated runs are
//! never timed.

mod ffi;
mod rules;
mod staging;
#[cfg(test)]
mod tests;

use std::cell::Cell;
use std::ffi::c_void;
use std::rc::Rc;

use enlighten::cuda::executor::{self, Arg, Execution, Executor, Function, RowFilter, Shape, TensorArg};
use enlighten::{Error, Result};
use staging::{Placement, Staged};

/// The device an emulated launch sizes its grid for.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Profile {
    /// The profile's name, for messages.
    pub name: &'static str,
    /// SMs: grid-stride grids are sized by it.
    pub sm_count: u32,
    /// The most threads a block may have.
    pub max_threads_per_block: u32,
    /// The shared memory a block may have when the kernel opts in (static and dynamic together;
    /// CUDA's `MAX_SHARED_MEMORY_PER_BLOCK_OPTIN`): what launch code sizes shared buffers by.
    pub max_shared_per_block: u32,
    /// The registers a block may have (the SM's register file; the kernels' register counts are
    /// ptxas's for sm_90).
    pub registers_per_block: u32,
}

impl Profile {
    /// An H100 SXM: 132 SMs, 1024 threads a block, 227 KiB of shared memory and 64K registers a
    /// block.
    pub const H100: Profile = Profile {
        name: "H100",
        sm_count: 132,
        max_threads_per_block: 1024,
        max_shared_per_block: 227 * 1024,
        registers_per_block: 64 * 1024,
    };
    /// Two SMs, so that grids are small and every grid-stride loop runs several iterations, and
    /// 16 KiB of shared memory a block, so that rows of a few thousand elements already outgrow
    /// what a kernel can stage there.
    pub const TINY: Profile = Profile {
        name: "tiny",
        sm_count: 2,
        max_threads_per_block: 1024,
        max_shared_per_block: 16 * 1024,
        registers_per_block: 64 * 1024,
    };
}

thread_local! {
    static LAUNCHES: Cell<u64> = const { Cell::new(0) };
}

/// Runs `f` with the CUDA path of every op emulated for CPU tensors on this thread, on a device
/// of this profile (an inner `emulate` applies until it returns).
pub fn emulate<R>(profile: Profile, f: impl FnOnce() -> R) -> R {
    executor::with_executor(Rc::new(Emulator::new(profile)), f)
}

/// Whether this thread is inside [`emulate`].
pub fn active() -> bool {
    executor::current().is_some()
}

/// Why this build has no emulator: the `enlighten` crate it builds against found no nvcc, whose
/// headers (`cuda_fp16.h`, `cuda_bf16.h`) the kernels need as host C++.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
#[error(
    "this build of enlighten-emulator has no kernels: nvcc was not found when enlighten was compiled \
     (run scripts/setup or set NVCC, then rebuild)"
)]
pub struct NotBuilt;

/// Whether this build contains the emulator (it needs nvcc's headers at build time).
pub fn available() -> std::result::Result<(), NotBuilt> {
    if cfg!(enlighten_emulator) {
        Ok(())
    } else {
        Err(NotBuilt)
    }
}

/// Whether the emulator has a kernel of this name.
pub fn has_entry(name: &str) -> bool {
    ffi::find(name).is_some()
}

/// Runs per launch: `ENLIGHTEN_EMU_SCHEDULES`, 3 when unset.
pub fn schedules() -> Result<u32> {
    match std::env::var("ENLIGHTEN_EMU_SCHEDULES") {
        Err(_) => Ok(3),
        Ok(v) => match v.trim().parse::<u32>() {
            Ok(n) if n >= 1 => Ok(n),
            _ => Err(Error::Value {
                arg: "ENLIGHTEN_EMU_SCHEDULES",
                expected: "a whole number >= 1".into(),
                got: v,
            }),
        },
    }
}

/// One run of a launch: the order threads and blocks are resumed in, and the poison byte.
#[derive(Debug, Clone, Copy)]
struct Schedule {
    index: u32,
    order: u32,
    poison: u8,
}

impl Schedule {
    fn nth(index: u32) -> Schedule {
        const POISON: [u8; 3] = [0xff, 0x7f, 0xa5];
        let order = match index {
            0 => ffi::ORDER_ASCENDING,
            1 => ffi::ORDER_DESCENDING,
            _ => ffi::ORDER_RANDOM,
        };
        Schedule {
            index,
            order,
            poison: POISON[index as usize % POISON.len()],
        }
    }
}

impl std::fmt::Display for Schedule {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self.order {
            ffi::ORDER_ASCENDING => write!(f, "schedule 0 (lowest thread first)"),
            ffi::ORDER_DESCENDING => write!(f, "schedule 1 (highest thread first)"),
            _ => write!(f, "schedule {} (seeded random order)", self.index),
        }
    }
}

/// The emulator as the library's executor, for one profile: a device whose functions are
/// loaded (and opted in) once, as the driver's are.
struct Emulator {
    profile: Profile,
    opt_ins: rules::OptIns,
    loaded: std::cell::RefCell<std::collections::HashSet<&'static str>>,
}

impl Emulator {
    fn new(profile: Profile) -> Emulator {
        Emulator {
            profile,
            opt_ins: Default::default(),
            loaded: Default::default(),
        }
    }
}

impl Executor for Emulator {
    fn sm_count(&self) -> u32 {
        self.profile.sm_count
    }

    fn max_shared_per_block(&self) -> u32 {
        self.profile.max_shared_per_block
    }

    fn load(&self, kernel: &'static str, prepare: &dyn Fn(&dyn Function) -> Result<()>) -> Result<()> {
        if self.loaded.borrow().contains(kernel) {
            return Ok(());
        }
        let entry = ffi::find(kernel).ok_or_else(|| Error::Emulated {
            kernel,
            message: "the emulator build has no such kernel".into(),
        })?;
        prepare(&rules::Loaded {
            kernel,
            entry,
            profile: self.profile,
            opt_ins: &self.opt_ins,
        })?;
        self.loaded.borrow_mut().insert(kernel);
        Ok(())
    }

    fn begin(&self) -> Box<dyn Execution> {
        Box::new(Arena {
            profile: self.profile,
            opt_ins: self.opt_ins.clone(),
            placement: None,
            staged: Vec::new(),
        })
    }
}

/// One launch: the profile it runs under, its device's opt-ins and its staged tensors.
struct Arena {
    profile: Profile,
    opt_ins: rules::OptIns,
    placement: Option<Placement>,
    staged: Vec<Staged>,
}

impl Execution for Arena {
    /// Stages a tensor and returns the address the kernel gets. The guard side alternates from
    /// one launch to the next on this thread.
    fn stage(&mut self, arg: TensorArg) -> Result<u64> {
        let placement = *self.placement.get_or_insert_with(|| {
            let n = LAUNCHES.with(|c| c.replace(c.get() + 1));
            if n % 2 == 0 {
                Placement::After
            } else {
                Placement::Before
            }
        });
        let staged = Staged::new(arg, placement)?;
        let ptr = staged.ptr();
        self.staged.push(staged);
        Ok(ptr)
    }

    fn run(self: Box<Self>, kernel: &'static str, shape: Shape, args: Vec<Arg>) -> Result<()> {
        run(kernel, shape, args, *self)
    }
}

impl Arena {
    /// Two staged tensors whose storage overlaps, one of them written, would diverge as copies.
    fn check_overlaps(&self) -> std::result::Result<(), String> {
        let span = |s: &Staged| {
            let t = &s.arg.tensor;
            let lo = t.data_ptr() as usize;
            lo..lo + t.numel() * t.kind().elt_size_in_bytes()
        };
        for (i, a) in self.staged.iter().enumerate() {
            for b in &self.staged[i + 1..] {
                let (x, y) = (span(a), span(b));
                if (a.writable() || b.writable()) && x.start < y.end && y.start < x.end {
                    return Err(format!(
                        "arguments `{}` and `{}` overlap and one of them is written",
                        a.arg.name, b.arg.name
                    ));
                }
            }
        }
        Ok(())
    }

    fn written(&self) -> Vec<Vec<u8>> {
        self.staged
            .iter()
            .filter(|s| s.writable())
            .map(Staged::contents)
            .collect()
    }
}

/// Runs one emulated launch (see the module docs).
fn run(kernel: &'static str, shape: Shape, args: Vec<Arg>, mut arena: Arena) -> Result<()> {
    let fail = |message: String| Error::Emulated { kernel, message };
    let entry = ffi::find(kernel).ok_or_else(|| fail("the emulator build has no such kernel".into()))?;
    check_params(entry.params(), &args).map_err(fail)?;
    rules::check(kernel, entry, &shape, &arena.profile, &arena.opt_ins).map_err(fail)?;
    let mut slots: Vec<Slot> = Vec::with_capacity(args.len());
    for a in args {
        slots.push(match a {
            Arg::Tensor(t) => Slot::word(arena.stage(t)?),
            Arg::Null => Slot::word(0),
            Arg::I64(v) => Slot::word(v as u64),
            Arg::I32(v) => Slot::word(u64::from(v as u32)),
            Arg::F32(v) => Slot::word(u64::from(v.to_bits())),
            Arg::Rows(r) => Slot::of(r),
        });
    }
    arena.check_overlaps().map_err(fail)?;
    let mut params: Vec<*mut c_void> = slots.iter_mut().map(|s| s.0.as_mut_ptr().cast()).collect();
    let mut first: Option<(Schedule, Vec<Vec<u8>>)> = None;
    for index in 0..schedules()? {
        let schedule = Schedule::nth(index);
        arena.staged.iter_mut().for_each(|s| s.prepare(schedule.poison));
        let regions: Vec<ffi::Region> = arena.staged.iter().map(Staged::region).collect();
        let spec = ffi::LaunchSpec {
            entry,
            grid: shape.grid,
            block: shape.block,
            params: params.as_mut_ptr(),
            regions: regions.as_ptr(),
            nregions: regions.len() as u32,
            order: schedule.order,
            seed: 0x5eed_0000 + u64::from(index),
            poison: schedule.poison,
            dynamic_shared: shape.dynamic_shared,
        };
        ffi::launch(&spec).map_err(|m| fail(format!("{m} (under {schedule})")))?;
        for s in &arena.staged {
            s.check_slack(schedule.poison)
                .map_err(|m| fail(format!("{m} (under {schedule})")))?;
        }
        let written = arena.written();
        match &first {
            None => first = Some((schedule, written)),
            Some((s0, w0)) => compare_runs(&arena, (*s0, w0), (schedule, &written)).map_err(fail)?,
        }
    }
    arena.staged.iter().filter(|s| s.writable()).for_each(Staged::store);
    Ok(())
}

/// One parameter's bytes, read from the start as cuLaunchKernel reads `kernelParams[i]`
/// (little-endian words; a struct passed by value as its own bytes).
#[repr(C, align(8))]
struct Slot([u8; 32]);

impl Slot {
    fn word(v: u64) -> Slot {
        let mut s = Slot([0; 32]);
        s.0[..8].copy_from_slice(&v.to_le_bytes());
        s
    }

    fn of<T: Copy>(v: T) -> Slot {
        assert!(
            std::mem::size_of::<T>() <= 32,
            "a by-value parameter larger than a slot"
        );
        let mut s = Slot([0; 32]);
        // SAFETY: T is a plain Copy value of at most 32 bytes, copied byte for byte.
        unsafe {
            std::ptr::copy_nonoverlapping(
                (&v as *const T).cast::<u8>(),
                s.0.as_mut_ptr(),
                std::mem::size_of::<T>(),
            )
        };
        s
    }
}

/// The launch's arguments against the kernel's declared parameters.
fn check_params(declared: &[ffi::ParamType], args: &[Arg]) -> std::result::Result<(), String> {
    if declared.len() != args.len() {
        return Err(format!(
            "the kernel takes {} parameters, the launch passes {}",
            declared.len(),
            args.len()
        ));
    }
    let describe = |p: ffi::ParamType| match p.kind {
        ffi::PARAM_POINTER => "a pointer".to_string(),
        ffi::PARAM_INTEGER => format!("a {}-byte integer", p.size),
        ffi::PARAM_FLOAT => format!("a {}-byte float", p.size),
        _ => format!("a {}-byte value", p.size),
    };
    for (i, (&want, arg)) in declared.iter().zip(args).enumerate() {
        let got = match arg {
            Arg::Tensor(_) | Arg::Null => ffi::ParamType::new(ffi::PARAM_POINTER, 8),
            Arg::I64(_) => ffi::ParamType::new(ffi::PARAM_INTEGER, 8),
            Arg::I32(_) => ffi::ParamType::new(ffi::PARAM_INTEGER, 4),
            Arg::F32(_) => ffi::ParamType::new(ffi::PARAM_FLOAT, 4),
            Arg::Rows(_) => ffi::ParamType::new(ffi::PARAM_OTHER, std::mem::size_of::<RowFilter>()),
        };
        if want != got {
            let name = match arg {
                Arg::Tensor(t) => format!(" (`{}`)", t.name),
                _ => String::new(),
            };
            return Err(format!(
                "parameter {i}{name} is declared {}, the launch passes {}",
                describe(want),
                describe(got)
            ));
        }
    }
    Ok(())
}

/// The written tensors of two runs must agree bit for bit.
fn compare_runs(
    arena: &Arena,
    (s0, w0): (Schedule, &[Vec<u8>]),
    (s1, w1): (Schedule, &[Vec<u8>]),
) -> std::result::Result<(), String> {
    let writable = arena.staged.iter().filter(|s| s.writable());
    for ((staged, a), b) in writable.zip(w0).zip(w1) {
        let Some(at) = a.iter().zip(b).position(|(x, y)| x != y) else {
            continue;
        };
        let t = &staged.arg.tensor;
        let element = at / t.kind().elt_size_in_bytes();
        let what = if a[at] == s0.poison && b[at] == s1.poison {
            "was never written: it kept each run's poison".to_string()
        } else {
            format!("differs (byte {at}: {:#04x} vs {:#04x})", a[at], b[at])
        };
        return Err(format!(
            "element {element} of `{}` ({:?}, {} elements) {what} between {s0} and {s1}: the kernel depends on an order \
             CUDA does not promise, or leaves outputs unwritten",
            staged.arg.name,
            t.kind(),
            t.numel()
        ));
    }
    Ok(())
}

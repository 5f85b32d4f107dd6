//! The one place kernels are launched. A [`Launch`] collects a kernel's arguments in parameter
//! order, each tensor with the access the kernel makes to it, and runs on one of two backends:
//! - CUDA tensors: the driver, on the caller's current stream of their device (libtorch's);
//! - CPU tensors while an [`Executor`] is registered on the thread (the `enlighten-emulator`
//!   crate's CUDA execution-model emulator, which runs the same kernel source on the CPU with
//!   guarded, poisoned copies of the tensors).

use std::rc::Rc;

use cudarc::driver::{LaunchConfig, PushKernelArg};
use tch::{Device, Tensor};

use super::device::{DeviceKernels, KeepCurrentContext};
use super::executor::{self, Execution, Executor, Shape};
use super::function;
use super::Kernel;
use crate::error::{Error, Result};

/// Threads a block of the element-wise and row-group grids.
pub(crate) const BLOCK: u32 = 256;
/// Grid-stride kernels need no more than this many resident blocks per SM to saturate memory.
const BLOCKS_PER_SM: u32 = 32;
const MAX_GRID_Y: i64 = 65_535;

/// Elements per 16-byte pack (one vector load) for a storage kind.
pub(crate) fn pack_len(kind: tch::Kind) -> i64 {
    16 / kind.elt_size_in_bytes() as i64
}

/// Whether every tensor starts on a 16-byte boundary.
pub(crate) fn aligned(tensors: &[&Tensor]) -> bool {
    tensors.iter().all(|t| (t.data_ptr() as usize) & 15 == 0)
}

/// Rows of `f` elements can move in packs of `n` when `n` divides `f` and every tensor starts
/// on a 16-byte boundary (then every row does too).
pub(crate) fn packable(f: i64, n: i64, tensors: &[&Tensor]) -> bool {
    f % n == 0 && aligned(tensors)
}

/// The shared memory a block of a kernel launched on `t`'s device may have when the kernel opts
/// in: the device's attribute on CUDA, the executor's on the CPU.
pub(crate) fn max_shared_per_block(t: &Tensor) -> Result<u32> {
    match Target::of("tensor", t)? {
        Target::Cuda(ordinal) => Ok(DeviceKernels::get(ordinal)?.max_shared_per_block),
        Target::Emulated => Ok(executor::current().map_or(0, |e| e.max_shared_per_block())),
    }
}

/// How a kernel's grid is shaped.
#[derive(Debug, Clone, Copy)]
pub(crate) enum Grid {
    /// Element-wise row kernels: y strides over rows, x over the 16-byte packs of a row.
    RowsAndPacks { rows: i64, packs_per_row: i64 },
    /// Row kernels whose rows are short: each block's threads in groups of `lanes` (a power of
    /// two up to the block), one row a group; y strides over groups of rows, x over the lanes of
    /// rows with more than `lanes` packs.
    RowGroups { rows: i64, lanes: u32, packs_per_row: i64 },
    /// One block of `threads` per row, grid-stride over rows in x.
    BlockPerRow { rows: i64, threads: u32 },
    /// One block for the whole problem (selections and other block-wide reductions).
    SingleBlock { threads: u32 },
    /// Exactly `blocks` blocks (kernels that index their work by block).
    Blocks { blocks: u32, threads: u32 },
}

/// The lanes a row of `packs` packs gets when rows share a block or a warp: about a lane a pack,
/// a power of two from 1 to `most`.
pub(crate) fn row_lanes(packs: i64, most: u32) -> u32 {
    (packs.max(1) as u32).next_power_of_two().min(most)
}

impl Grid {
    pub(crate) fn config(self, sm_count: u32) -> LaunchConfig {
        let budget = u64::from(sm_count * BLOCKS_PER_SM);
        let (grid_dim, block) = match self {
            Grid::RowsAndPacks { rows, packs_per_row } => {
                let y = rows.clamp(1, MAX_GRID_Y) as u32;
                let x_needed = (packs_per_row.max(1) as u64).div_ceil(BLOCK as u64);
                let x_budget = (budget / u64::from(y)).max(1);
                ((x_needed.min(x_budget) as u32, y, 1), BLOCK)
            }
            Grid::RowGroups {
                rows,
                lanes,
                packs_per_row,
            } => {
                let groups = i64::from(BLOCK / lanes.clamp(1, BLOCK));
                let y = ((rows.max(1) + groups - 1) / groups).clamp(1, MAX_GRID_Y) as u32;
                let x_needed = (packs_per_row.max(1) as u64).div_ceil(u64::from(lanes.max(1)));
                let x_budget = (budget / u64::from(y)).max(1);
                ((x_needed.min(x_budget) as u32, y, 1), BLOCK)
            }
            Grid::BlockPerRow { rows, threads } => (((rows.max(1) as u64).min(budget) as u32, 1, 1), threads),
            Grid::SingleBlock { threads } => ((1, 1, 1), threads),
            Grid::Blocks { blocks, threads } => ((blocks.max(1), 1, 1), threads),
        };
        LaunchConfig {
            grid_dim,
            block_dim: (block, 1, 1),
            shared_mem_bytes: 0,
        }
    }
}

/// What a kernel does with a tensor argument. The emulator enforces it: inputs are staged
/// read-only, outputs are poisoned before the launch (the kernel must write every element),
/// and in-out tensors start from their contents.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Access {
    /// The kernel only reads the tensor.
    Read,
    /// The kernel writes every element without reading any.
    Write,
    /// The kernel reads and updates the tensor.
    ReadWrite,
}

/// A tensor argument: the tensor (sharing its storage), its name for messages, its access.
/// Name and access are read by an [`Executor`] only.
pub struct TensorArg {
    /// The argument's name, for messages.
    pub name: &'static str,
    /// The tensor, sharing the caller's storage.
    pub tensor: Tensor,
    /// What the kernel does with it.
    pub access: Access,
}

/// One kernel parameter, in the kernel's parameter order.
pub enum Arg {
    /// A pointer to a tensor's data.
    Tensor(TensorArg),
    /// A null pointer (an optional tensor not given).
    Null,
    /// An `int64_t`.
    I64(i64),
    /// An `int32_t`.
    I32(i32),
    /// A `float`.
    F32(f32),
    /// A `RowFilter`, by value.
    Rows(RowFilter),
}

/// Which rows count, passed to the selection and loss kernels by value (kernels/loss.cu's
/// `RowFilter`): a row counts unless its label equals `ignore_index` (when `has_ignore`); with
/// no labels (a null pointer) every row counts.
#[repr(C)]
#[derive(Debug, Clone, Copy)]
pub struct RowFilter {
    labels: u64,
    ignore_index: i64,
    has_ignore: i32,
    _pad: i32,
}

// SAFETY: a plain #[repr(C)] struct of integers with the layout of the kernel's RowFilter
// (8 + 8 + 4 bytes, padded to 24 with alignment 8).
unsafe impl cudarc::driver::DeviceRepr for RowFilter {}

/// Where a launch runs, fixed by its first tensor.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Target {
    Cuda(usize),
    Emulated,
}

impl Target {
    fn of(arg: &'static str, t: &Tensor) -> Result<Target> {
        match t.device() {
            Device::Cuda(o) => Ok(Target::Cuda(o)),
            Device::Cpu if executor::current().is_some() => Ok(Target::Emulated),
            other => Err(Error::Device {
                arg,
                expected: "a CUDA device".into(),
                got: other,
            }),
        }
    }
}

/// The executor registered on this thread, for an emulated launch of `kernel` (the target is
/// emulated only while there is one).
fn executor_for(kernel: Kernel) -> Result<Rc<dyn Executor>> {
    executor::current().ok_or_else(|| Error::Emulated {
        kernel: kernel.name(),
        message: "launched outside emulate()".into(),
    })
}

/// Arguments are pushed in the kernel's parameter order.
pub(crate) struct Launch {
    kernel: Kernel,
    target: Option<Target>,
    args: Vec<Arg>,
    /// Bytes of dynamic shared memory each block gets.
    dynamic_shared: u32,
    /// An emulated launch, begun when the first pointer is staged: it holds the tensors whose
    /// pointers travel inside other arguments (the statistics' tables).
    execution: Option<Box<dyn Execution>>,
}

impl Launch {
    pub fn new(kernel: Kernel) -> Self {
        Launch {
            kernel,
            target: None,
            args: Vec::new(),
            dynamic_shared: 0,
            execution: None,
        }
    }

    /// Checks that `t` is contiguous and on this launch's device (the first tensor fixes it).
    fn check(&mut self, arg: &'static str, t: &Tensor) -> Result<()> {
        let target = Target::of(arg, t)?;
        match self.target {
            None => self.target = Some(target),
            Some(d) if d != target => {
                return Err(Error::Device {
                    arg,
                    expected: format!("{d:?} like the other tensors"),
                    got: t.device(),
                })
            }
            Some(_) => {}
        }
        if !t.is_contiguous() {
            return Err(Error::NotContiguous {
                arg,
                size: t.size(),
                strides: t.stride(),
            });
        }
        Ok(())
    }

    fn tensor(mut self, name: &'static str, t: &Tensor, access: Access) -> Result<Self> {
        self.check(name, t)?;
        self.args.push(Arg::Tensor(TensorArg {
            name,
            tensor: t.shallow_clone(),
            access,
        }));
        Ok(self)
    }

    /// A tensor the kernel only reads.
    pub fn input(self, name: &'static str, t: &Tensor) -> Result<Self> {
        self.tensor(name, t, Access::Read)
    }

    /// A tensor the kernel writes in full, without reading it.
    pub fn output(self, name: &'static str, t: &Tensor) -> Result<Self> {
        self.tensor(name, t, Access::Write)
    }

    /// A tensor the kernel reads and updates.
    pub fn inout(self, name: &'static str, t: &Tensor) -> Result<Self> {
        self.tensor(name, t, Access::ReadWrite)
    }

    /// An input, or a null pointer that the kernel reads as "not given".
    pub fn optional_input(self, name: &'static str, t: Option<&Tensor>) -> Result<Self> {
        match t {
            Some(t) => self.input(name, t),
            None => Ok(self.push(Arg::Null)),
        }
    }

    /// An output, or a null pointer that the kernel reads as "do not write".
    pub fn optional_output(self, name: &'static str, t: Option<&Tensor>) -> Result<Self> {
        match t {
            Some(t) => self.output(name, t),
            None => Ok(self.push(Arg::Null)),
        }
    }

    /// The device address of a tensor whose pointer the caller puts inside another argument
    /// (a table of pointers). The tensor must stay alive until the launch has run.
    pub fn pointer(&mut self, name: &'static str, t: &Tensor, access: Access) -> Result<i64> {
        self.check(name, t)?;
        match self.target {
            Some(Target::Emulated) => {
                let execution = match &mut self.execution {
                    Some(e) => e,
                    empty => empty.insert(executor_for(self.kernel)?.begin()),
                };
                let staged = execution.stage(TensorArg {
                    name,
                    tensor: t.shallow_clone(),
                    access,
                })?;
                Ok(staged as i64)
            }
            _ => Ok(t.data_ptr() as i64),
        }
    }

    /// A [`RowFilter`] over `labels` (read by the kernel) and an optional ignored label.
    pub fn rows(mut self, name: &'static str, labels: Option<&Tensor>, ignore_index: Option<i64>) -> Result<Self> {
        let labels = match labels {
            Some(t) => self.pointer(name, t, Access::Read)? as u64,
            None => 0,
        };
        let filter = RowFilter {
            labels,
            ignore_index: ignore_index.unwrap_or(0),
            has_ignore: i32::from(ignore_index.is_some()),
            _pad: 0,
        };
        Ok(self.push(Arg::Rows(filter)))
    }

    pub fn i64(self, v: i64) -> Self {
        self.push(Arg::I64(v))
    }

    pub fn i32(self, v: i32) -> Self {
        self.push(Arg::I32(v))
    }

    pub fn f32(self, v: f32) -> Self {
        self.push(Arg::F32(v))
    }

    /// Gives each block `bytes` of dynamic shared memory (at most [`max_shared_per_block`] less
    /// the kernel's static shared memory: what the kernel opted in to when it was loaded).
    pub fn dynamic_shared(mut self, bytes: u32) -> Self {
        self.dynamic_shared = bytes;
        self
    }

    fn push(mut self, a: Arg) -> Self {
        self.args.push(a);
        self
    }

    /// Launches. On CUDA, errors the driver reports at launch (bad configuration, a missing
    /// function) come back typed, and faults inside the kernel surface at the next synchronising
    /// call, as with any CUDA op. Emulated, the launch has finished when this returns, and
    /// faults and broken CUDA rules come back as [`Error::Emulated`].
    pub fn run(self, grid: Grid) -> Result<()> {
        match self.target {
            Some(Target::Cuda(ordinal)) => self.run_cuda(ordinal, grid),
            Some(Target::Emulated) => self.run_emulated(grid),
            None => Err(Error::value("tensors", "at least one tensor argument", "none")),
        }
    }

    fn run_emulated(self, grid: Grid) -> Result<()> {
        let executor = executor_for(self.kernel)?;
        let max_shared = executor.max_shared_per_block();
        executor.load(self.kernel.name(), &|f| function::prepare(f, max_shared))?;
        let cfg = grid.config(executor.sm_count());
        let shape = Shape {
            grid: [cfg.grid_dim.0, cfg.grid_dim.1, cfg.grid_dim.2],
            block: [cfg.block_dim.0, cfg.block_dim.1, cfg.block_dim.2],
            dynamic_shared: self.dynamic_shared,
        };
        let execution = self.execution.unwrap_or_else(|| executor.begin());
        execution.run(self.kernel.name(), shape, self.args)
    }

    fn run_cuda(self, ordinal: usize, grid: Grid) -> Result<()> {
        super::probe()?; // the driver is loaded before its API is called
        let _restore = KeepCurrentContext::save()?;
        let kernels = DeviceKernels::get(ordinal)?;
        let func = kernels.function(self.kernel)?;
        let cfg = LaunchConfig {
            shared_mem_bytes: self.dynamic_shared,
            ..grid.config(kernels.sm_count)
        };
        let pointers: Vec<u64> = self
            .args
            .iter()
            .map(|a| match a {
                Arg::Tensor(t) => t.tensor.data_ptr() as u64,
                _ => 0,
            })
            .collect();
        // PyTorch's contract: the current stream of the tensors' device. The op's temporaries
        // (uploads, tables) were allocated by libtorch's caching allocator on this same stream,
        // so their memory is not reused before this launch has read it.
        let stream = super::stream::current(&kernels.ctx, ordinal)?;
        let mut builder = stream.launch_builder(&func);
        for (a, ptr) in self.args.iter().zip(&pointers) {
            match a {
                Arg::Tensor(_) | Arg::Null => builder.arg(ptr),
                Arg::I64(v) => builder.arg(v),
                Arg::I32(v) => builder.arg(v),
                Arg::F32(v) => builder.arg(v),
                Arg::Rows(v) => builder.arg(v),
            };
        }
        // SAFETY: the caller (an op module) pushes arguments in the kernel's parameter order with
        // matching types (the emulator checks both against the kernel's declaration), and every
        // pointer comes from a live, contiguous tensor of this device whose extent the op
        // checked against the sizes it passes.
        unsafe { builder.launch(cfg) }.map_err(|e| Error::cuda(format!("launching {}", self.kernel.name()), e))?;
        Ok(())
    }
}

//! A launch helper over tch tensors: checks that every tensor argument is a contiguous CUDA
//! tensor on one device, passes data pointers as u64, and launches on the null stream.

use cudarc::driver::{LaunchConfig, PushKernelArg};
use tch::{Device, Tensor};

use super::device::DeviceKernels;
use super::Kernel;
use crate::error::{Error, Result};

const BLOCK: u32 = 256;
/// Grid-stride kernels need no more than this many resident blocks per SM to saturate memory.
const BLOCKS_PER_SM: u32 = 32;
const MAX_GRID_Y: i64 = 65_535;

/// How a kernel's grid is shaped.
#[derive(Debug, Clone, Copy)]
pub(crate) enum Grid {
    /// Element-wise row kernels: y strides over rows, x over the 16-byte packs of a row.
    RowsAndPacks { rows: i64, packs_per_row: i64 },
    /// One block of `threads` per row, grid-stride over rows in x.
    BlockPerRow { rows: i64, threads: u32 },
    /// One block for the whole problem (selections and other block-wide reductions).
    SingleBlock { threads: u32 },
    /// Exactly `blocks` blocks (kernels that index their work by block).
    Blocks { blocks: u32, threads: u32 },
}

impl Grid {
    fn config(self, sm_count: u32) -> LaunchConfig {
        let budget = u64::from(sm_count * BLOCKS_PER_SM);
        let (grid_dim, block) = match self {
            Grid::RowsAndPacks { rows, packs_per_row } => {
                let y = rows.clamp(1, MAX_GRID_Y) as u32;
                let x_needed = (packs_per_row.max(1) as u64).div_ceil(BLOCK as u64);
                let x_budget = (budget / u64::from(y)).max(1);
                ((x_needed.min(x_budget) as u32, y, 1), BLOCK)
            }
            Grid::BlockPerRow { rows, threads } => (((rows.max(1) as u64).min(budget) as u32, 1, 1), threads),
            Grid::SingleBlock { threads } => ((1, 1, 1), threads),
            Grid::Blocks { blocks, threads } => ((blocks.max(1), 1, 1), threads),
        };
        LaunchConfig { grid_dim, block_dim: (block, 1, 1), shared_mem_bytes: 0 }
    }
}

enum Arg {
    Ptr(u64),
    I64(i64),
    I32(i32),
    F32(f32),
}

/// Arguments are pushed in the kernel's parameter order.
pub(crate) struct Launch {
    kernel: Kernel,
    device: Option<usize>,
    args: Vec<Arg>,
}

impl Launch {
    pub fn new(kernel: Kernel) -> Self {
        Launch { kernel, device: None, args: Vec::new() }
    }

    /// A tensor's data pointer; the tensor must be contiguous and on the launch's CUDA device.
    pub fn tensor(mut self, arg: &'static str, t: &Tensor) -> Result<Self> {
        let ordinal = match t.device() {
            Device::Cuda(o) => o,
            other => return Err(Error::Device { arg, expected: "a CUDA device".into(), got: other }),
        };
        match self.device {
            None => self.device = Some(ordinal),
            Some(d) if d != ordinal => {
                return Err(Error::Device { arg, expected: format!("cuda:{d} like the other tensors"), got: t.device() })
            }
            Some(_) => {}
        }
        if !t.is_contiguous() {
            return Err(Error::NotContiguous { arg, size: t.size(), strides: t.stride() });
        }
        self.args.push(Arg::Ptr(t.data_ptr() as u64));
        Ok(self)
    }

    /// A tensor pointer, or a null pointer that the kernel reads as "not given".
    pub fn optional_tensor(self, arg: &'static str, t: Option<&Tensor>) -> Result<Self> {
        match t {
            Some(t) => self.tensor(arg, t),
            None => Ok(self.push(Arg::Ptr(0))),
        }
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

    fn push(mut self, a: Arg) -> Self {
        self.args.push(a);
        self
    }

    /// Launches on the null stream of the tensors' device. Errors the driver reports at launch
    /// (bad configuration, a missing function) come back typed; faults inside the kernel surface
    /// at the next synchronising call, as with any CUDA op.
    pub fn run(self, grid: Grid) -> Result<()> {
        let ordinal = self.device.ok_or_else(|| Error::value("tensors", "at least one CUDA tensor argument", "none"))?;
        let kernels = DeviceKernels::get(ordinal)?;
        let func = kernels.function(self.kernel)?;
        let cfg = grid.config(kernels.sm_count);
        let mut builder = kernels.stream.launch_builder(&func);
        for a in &self.args {
            match a {
                Arg::Ptr(v) => builder.arg(v),
                Arg::I64(v) => builder.arg(v),
                Arg::I32(v) => builder.arg(v),
                Arg::F32(v) => builder.arg(v),
            };
        }
        // SAFETY: the caller (an op module) pushes arguments in the kernel's parameter order with
        // matching types, and every pointer comes from a live, contiguous tensor of this device
        // whose extent the op checked against the sizes it passes.
        unsafe { builder.launch(cfg) }.map_err(|e| Error::cuda(format!("launching {}", self.kernel.name()), e))?;
        Ok(())
    }
}

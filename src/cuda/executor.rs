//! The hook through which another crate executes the library's kernel launches in its stead:
//! the CUDA execution-model emulator (the `enlighten-emulator` crate, for tests) registers an
//! [`Executor`] for the current thread, and while one is registered every op takes its CUDA path
//! on CPU tensors and hands each launch (kernel name, grid, arguments) to it instead of the
//! driver. Not part of the API: no user code registers an executor.
//!
//! The executor gets the launch as the driver would: the argument list in parameter order, each
//! tensor with its name and the access the kernel makes to it, and the grid sized for the
//! executor's device.

use std::cell::RefCell;
use std::rc::Rc;

use crate::error::Result;

pub use super::function::Function;
pub use super::launch::{Access, Arg, RowFilter, TensorArg};

/// Executes kernel launches on CPU tensors in place of the driver.
pub trait Executor {
    /// The SMs of the device grids are sized for.
    fn sm_count(&self) -> u32;

    /// The shared memory a block may have when the kernel opts in (static and dynamic together),
    /// which launch code sizes shared buffers by.
    fn max_shared_per_block(&self) -> u32;

    /// Loads `kernel` on its first launch under this executor, as the driver loads a function
    /// once per device, and calls `prepare` with it then (the library's opt-in; later loads of
    /// the same kernel do nothing).
    fn load(&self, kernel: &'static str, prepare: &dyn Fn(&dyn Function) -> Result<()>) -> Result<()>;

    /// Begins one launch. The launch stages the tensors whose addresses its caller takes before
    /// running (pointer tables), then runs.
    fn begin(&self) -> Box<dyn Execution>;
}

/// One launch of an [`Executor`], from its first staged tensor until it has run.
pub trait Execution {
    /// Makes a tensor addressable by the kernel, and returns the address the kernel gets. The
    /// tensor stays staged until [`Execution::run`] has finished.
    fn stage(&mut self, arg: TensorArg) -> Result<u64>;

    /// Runs `kernel` over `shape` with `args` (in the kernel's parameter order); tensors among the
    /// arguments are staged as by [`Execution::stage`]. The launch has finished, and its outputs
    /// are written back, when this returns.
    fn run(self: Box<Self>, kernel: &'static str, shape: Shape, args: Vec<Arg>) -> Result<()>;
}

/// The grid of one launch, as `cuLaunchKernel` gets it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Shape {
    /// Blocks in x, y and z.
    pub grid: [u32; 3],
    /// Threads a block in x, y and z.
    pub block: [u32; 3],
    /// Bytes of dynamic shared memory each block gets.
    pub dynamic_shared: u32,
}

thread_local! {
    static CURRENT: RefCell<Option<Rc<dyn Executor>>> = const { RefCell::new(None) };
}

/// Runs `f` with `executor` executing this thread's launches on CPU tensors; the executor
/// registered before (if any) is restored afterwards, also when `f` unwinds.
pub fn with_executor<R>(executor: Rc<dyn Executor>, f: impl FnOnce() -> R) -> R {
    struct Restore(Option<Rc<dyn Executor>>);
    impl Drop for Restore {
        fn drop(&mut self) {
            CURRENT.with(|c| *c.borrow_mut() = self.0.take());
        }
    }
    let _restore = Restore(CURRENT.with(|c| c.borrow_mut().replace(executor)));
    f()
}

/// The executor registered on this thread, if any.
pub fn current() -> Option<Rc<dyn Executor>> {
    CURRENT.with(|c| c.borrow().clone())
}

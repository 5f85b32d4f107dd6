//! # enlighten
//!
//! Fused CUDA and CPU ops on `tch::Tensor` for the Enlightenment Period training strategies
//! (Mixup Pause, Alpha Boost, High-Loss Removal): Mixup/CutMix in one pass with compact targets
//! ([`ops::mixup`]), per-sample losses with High-Loss Removal and their gradient in one pass
//! ([`ops::loss`]), and the engine that decides what each batch gets ([`strategy`]). Each op is
//! a config type with `forward`, like tch's `nn` layers; a loss's result is differentiable.
//!
//! ```
//! use enlighten::ops::loss::CrossEntropy;
//! use enlighten::ops::mixup::MixSpec;
//! use enlighten::SeededRng;
//! use tch::{Device, Kind, Tensor};
//!
//! # fn main() -> enlighten::Result<()> {
//! let device = enlighten::cuda::device(); // CUDA 0 when libtorch sees a GPU, else the CPU
//! let mut rng = SeededRng::new(0);
//! let x = Tensor::randn([8, 3, 32, 32], (Kind::Float, device));
//! let y = Tensor::randint(10, [8], (Kind::Int64, device));
//! let w = Tensor::randn([3 * 32 * 32, 10], (Kind::Float, device)).set_requires_grad(true);
//! let spec = MixSpec::mixup(0.4); // lambda ~ Beta(0.4, 0.4) per batch, random partners
//! let (mixed, targets) = spec.forward(&x, &y, &mut rng)?;
//! let logits = mixed.flatten(1, -1).matmul(&w);
//! let loss = CrossEntropy::with_removal(0.25).forward(&logits, &targets)?; // drop the top 25%
//! loss.backward();
//! assert_eq!(w.grad().size(), w.size());
//! # Ok(())
//! # }
//! ```
//!
//! ## A training loop under Mixup Pause
//!
//! The strategy engine ([`strategy`]) plans each batch; the ops do the work. This is
//! `examples/mixup_pause.rs`, run as a test:
//!
//! ```
#![doc = include_str!("../examples/mixup_pause.rs")]
//! ```

//!
//! ## Features
//!
//! None by default: the crate is the fused ops, the CUDA glue and the strategy engine on tch,
//! serde and toml alone, and builds without a CUDA toolkit. `testing` adds the plain-tch f64
//! reference of every op and the helpers the tests and benchmarks share. The CUDA
//! execution-model emulator, which runs the kernels on the CPU for the tests, is the workspace's
//! `enlighten-emulator` crate, and the bundled trainer and its CLI are its `enlighten-trainer`
//! crate.

#![warn(missing_docs)]

mod alloc;
mod bridge;
/// The bridge's error convention, for the trainer's own C++ (c10d): not part of the API.
#[doc(hidden)]
pub use bridge::check_foreign as bridge_check;
pub mod cuda;
mod error;
pub mod ops;
mod rng;
pub mod strategy;
#[cfg(feature = "testing")]
pub mod testing;

pub use alloc::tune_cpu_allocator;
pub use error::{Error, Result};
pub use rng::SeededRng;

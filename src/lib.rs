//! # enlighten
//!
//! Fused CUDA and CPU ops on `tch::Tensor` for the Enlightenment Period training strategies
//! (Mixup Pause, Alpha Boost, High-Loss Removal): Mixup/CutMix in one pass with compact targets
//! ([`ops::mixup`]), per-sample losses with High-Loss Removal and their gradient in one pass
//! ([`ops::loss`]), and the engine that decides what each batch gets ([`strategy`]).
//!
//! ```
//! use enlighten::ops::mixup::{mix_batch, MixSpec};
//! use enlighten::SeededRng;
//! use tch::{Device, Kind, Tensor};
//!
//! # fn main() -> enlighten::Result<()> {
//! // Call once before the first tch CUDA call, so libtorch registers its CUDA backend.
//! let device = if enlighten::cuda::probe().is_ok() { Device::Cuda(0) } else { Device::Cpu };
//! let mut rng = SeededRng::new(0);
//! let x = Tensor::randn([8, 3, 32, 32], (Kind::Float, device));
//! let y = Tensor::randint(10, [8], (Kind::Int64, device));
//! let spec = MixSpec::mixup(0.4); // lambda ~ Beta(0.4, 0.4) per batch, random partners
//! let (mixed, targets) = mix_batch(&x, &y, &spec, &mut rng)?;
//! assert_eq!(mixed.size(), x.size());
//! assert_eq!(targets.y_b.size(), [8]);
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

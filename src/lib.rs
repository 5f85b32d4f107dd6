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
//! `trainer` (default) adds the bundled trainer and what only it needs: `data`, `models`,
//! `train`, `compare`, `analyze` and the `enlighten` CLI. Without it
//! (`enlighten = { version = "0.1", default-features = false }`) the crate is the fused ops, the
//! CUDA glue and the strategy engine on tch, serde and toml alone. `distributed` (enabled by
//! `trainer`) adds [`distributed`]: a process group on torch.distributed's c10d (Gloo) and
//! DDP-style gradient averaging.

mod alloc;
#[cfg(feature = "trainer")]
pub mod analyze;
mod bridge;
#[cfg(feature = "trainer")]
pub mod compare;
pub mod cuda;
#[cfg(feature = "trainer")]
pub mod data;
mod device;
#[cfg(feature = "distributed")]
pub mod distributed;
mod error;
#[cfg(feature = "trainer")]
pub mod models;
pub mod ops;
#[cfg(feature = "trainer")]
mod plot;
mod rng;
pub mod strategy;
#[doc(hidden)]
pub mod testing;
#[cfg(feature = "trainer")]
pub mod train;

pub use alloc::tune_cpu_allocator;
pub use device::DeviceChoice;
pub use error::{Error, Result};
pub use rng::SeededRng;

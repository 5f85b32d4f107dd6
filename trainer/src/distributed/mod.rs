//! Data parallelism on torch.distributed's own engine, c10d, as PyTorch's DDP uses it: the
//! rendezvous is a `TCPStore` (rank 0 serves it), the collectives are `ProcessGroupGloo`'s,
//! reached through the crate's C++ bridge (bridge/c10d.cpp). Nothing here implements a
//! collective; errors (a rank gone, a timeout) come back as [`crate::Error`], never as a hang
//! past the group's timeout or a C++ exception.
//!
//! ```no_run
//! use enlighten_trainer::distributed::{broadcast_parameters, Backend, Env, GradientBuckets, ProcessGroup};
//! use std::time::Duration;
//! # fn main() -> enlighten_trainer::Result<()> {
//! # let params: Vec<tch::Tensor> = Vec::new();
//! // Launched by torchrun (or `enlighten train --nproc N`): RANK, WORLD_SIZE, ... are set.
//! let env = Env::from_env()?.expect("launched as a job");
//! let group = ProcessGroup::new(&env, Backend::Gloo, Duration::from_secs(300))?;
//! broadcast_parameters(&group, &params)?;                  // every rank starts identical
//! let mut buckets = GradientBuckets::new(params)?;         // ~25 MB buckets, reverse order
//! // per step: forward, backward, then
//! buckets.average(&group)?;                                // mean gradient on every rank
//! // optimiser step
//! # Ok(())
//! # }
//! ```

mod backend;
mod buckets;
mod env;
mod ffi;
mod group;
mod heartbeat;
mod layout;
mod nccl;
mod port;
mod rendezvous;
mod store;

pub use backend::Backend;
pub use buckets::{broadcast_parameters, GradientBuckets, DEFAULT_BUCKET_BYTES};
pub use env::Env;
pub use group::{ProcessGroup, Work};
pub use port::free_port;

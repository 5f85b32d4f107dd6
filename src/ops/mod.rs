//! The fused ops, one module per family. Each checks its arguments, then runs the CUDA kernel
//! (CUDA tensors) or the fused CPU path (CPU tensors); its plain-tch `reference` sits beside it.

mod element;
mod fastmath;
pub mod loss;
pub mod mixup;
mod parallel;
pub mod stats;

//! The fused ops, one module per family. Each op is a config type with `forward` (the losses'
//! result is differentiable); it checks its arguments, then runs on the path its tensors'
//! device picks in one place (`dispatch`): the CUDA kernels or the fused CPU twins. With the
//! `testing` feature each family's plain-tch `reference` sits beside it.

mod dispatch;
mod element;
mod fastmath;
pub mod loss;
pub mod mixup;
mod parallel;
pub mod stats;

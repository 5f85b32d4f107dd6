//! The Enlightenment Period strategy engine: pure logic over numbers, no tensors.
//!
//! A [`Schedule`] pairs a [`Strategy`] (how alpha and High-Loss Removal behave in and after the
//! EP) with a [`PhaseController`] (when the EP ends). A training loop calls
//! [`Schedule::plan`] once per step and [`Schedule::observe`] whenever it has measured the
//! monitored accuracy ([`Schedule::eval_due`] says when).

mod auto;
mod config;
mod phase;
mod plan;
mod schedule;

pub use auto::{recommend, AutoThresholds, ProblemScale, Recommendation};
pub use config::{RemovalScope, StrategyConfig, StrategyKind};
pub use phase::{EpEnd, EpEndInfo, Monitor, PhaseController, Threshold};
pub use plan::BatchPlan;
pub use schedule::{MixPolicy, Schedule, Strategy};

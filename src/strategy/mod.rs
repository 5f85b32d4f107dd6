//! The Enlightenment Period strategy engine: pure logic over numbers, no tensors.
//!
//! A [`Schedule`] pairs a [`Strategy`] (how alpha and High-Loss Removal behave in and after the
//! EP) with a [`PhaseController`] (when the EP ends). A training loop calls
//! [`Schedule::plan`] once per step and [`Schedule::observe_counts`] whenever it has measured the
//! monitored accuracy: every step for `train-clean`, when [`Schedule::eval_due`] (validation) or
//! [`Schedule::probe_due`] (probe) says so for the others.

mod auto;
mod config;
mod monitor;
mod phase;
mod plan;
mod schedule;

pub use auto::{recommend, AutoThresholds, ProblemScale, Recommendation};
pub use config::{RemovalScope, StrategyConfig, StrategyKind};
pub use monitor::{binomial_se, Measurement, Monitor, MonitorState, DEFAULT_WINDOW_PREDICTIONS};
pub use phase::{EpEnd, EpEndInfo, PhaseController, Threshold, DEFAULT_PROBE_ROWS, DEFAULT_VAL_EVERY};
pub use plan::BatchPlan;
pub use schedule::{MixPolicy, Schedule, Strategy};

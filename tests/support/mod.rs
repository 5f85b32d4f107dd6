//! Helpers of the trainer-level test suites (train, tasks, compare): one training at a time,
//! scratch folders, a run's metrics. Each suite uses some of them.
#![allow(dead_code)]

use std::path::{Path, PathBuf};
use std::sync::{Mutex, MutexGuard};

use enlighten::train::MetricsLine;

pub mod images;

/// libtorch's CPU reductions split their work by the threads they get; trainings running at the
/// same time in one process (the test harness runs tests in parallel) take threads from each
/// other and round differently. Bit-identical comparisons need one training at a time.
static ONE_AT_A_TIME: Mutex<()> = Mutex::new(());

pub fn serial() -> MutexGuard<'static, ()> {
    ONE_AT_A_TIME.lock().unwrap_or_else(|poisoned| poisoned.into_inner())
}

/// An empty folder for one test, named after the suite, the process and `name`.
pub fn scratch(name: &str) -> PathBuf {
    let dir = std::env::temp_dir().join(format!(
        "enlighten-{}-{}-{name}",
        env!("CARGO_CRATE_NAME"),
        std::process::id()
    ));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).unwrap();
    dir
}

/// The metrics lines of `<dir>/runs/<run>`.
pub fn metrics(dir: &Path, run: &str) -> Vec<MetricsLine> {
    let text = std::fs::read_to_string(dir.join("runs").join(run).join("metrics.jsonl")).unwrap();
    text.lines().map(|l| serde_json::from_str(l).unwrap()).collect()
}

//! Helpers of the trainer-level test suites (train, tasks, compare, parallel): scratch folders,
//! a run's metrics, the small dataset. Each suite uses some of them.
#![allow(dead_code)]

use std::io::Write;
use std::path::{Path, PathBuf};

use flate2::write::GzEncoder;

use enlighten_trainer::train::MetricsLine;

pub mod images;

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

pub fn gz_idx(path: &Path, magic: u32, dims: &[u32], payload: &[u8]) {
    let mut bytes = magic.to_be_bytes().to_vec();
    for d in dims {
        bytes.extend(d.to_be_bytes());
    }
    bytes.extend_from_slice(payload);
    let mut e = GzEncoder::new(Vec::new(), flate2::Compression::fast());
    e.write_all(&bytes).unwrap();
    std::fs::write(path, e.finish().unwrap()).unwrap();
}

/// A small dataset in Fashion-MNIST's files: 4 classes, class k lights up a band of rows 4k..4k+4 (plus noise) in 16x16 images.
pub fn write_dataset(dir: &Path) {
    write_bands(dir, 4, [(320, 1), (80, 2)], (170.0, 60.0));
}

/// A harder one in the same files, learnt over tens of steps instead of a few: 8 classes, class
/// k a faint band of rows 2k..2k+2 (brightness +`contrast` over noise of 0..`noise`), 1,600
/// training and 200 test images.
pub fn write_faint_dataset(dir: &Path, contrast: f64, noise: f64) {
    write_bands(dir, 8, [(1600, 3), (200, 4)], (40.0 + contrast, noise));
}

/// `classes` classes of 16x16 images where class k lights rows of band k to `on` (else 40),
/// plus uniform noise of 0..`noise`; (rows, seed) for the training and test files.
fn write_bands(dir: &Path, classes: usize, sets: [(usize, u64); 2], (on, noise): (f64, f64)) {
    let band = 16 / classes;
    for ((n, seed), prefix) in sets.into_iter().zip(["train", "t10k"]) {
        let mut rng = enlighten::SeededRng::new(seed);
        let labels: Vec<u8> = (0..n).map(|i| (i % classes) as u8).collect();
        let mut pixels = Vec::with_capacity(n * 256);
        for &k in &labels {
            for y in 0..16 {
                for _ in 0..16 {
                    let base = if (y / band) as u8 == k { on } else { 40.0 };
                    pixels.push((base + noise * rng.uniform()).min(255.0) as u8);
                }
            }
        }
        gz_idx(
            &dir.join(format!("{prefix}-images-idx3-ubyte.gz")),
            0x803,
            &[n as u32, 16, 16],
            &pixels,
        );
        gz_idx(
            &dir.join(format!("{prefix}-labels-idx1-ubyte.gz")),
            0x801,
            &[n as u32],
            &labels,
        );
    }
}

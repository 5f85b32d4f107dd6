//! No host sync in a training step, counted where it happens. Two checks:
//! - a whole `train` run with every strategy op on its kernel path (emulated): Alpha Boost's
//!   Mixup and CutMix, High-Loss Removal, augmentation, BENR; its steps read nothing back
//!   (`Timing::step_host_reads`), while its evaluations and log lines between steps do;
//! - a scan of the source of every module a training step runs for the calls that make the host
//!   wait for the device (reads, blocking copies, data-dependent shapes): each must go through
//!   the counted helpers of `enlighten::cuda` or be on the short allowlist below, with its reason.
//!
//! On a GPU the definitive check is the bundle's spin test (`scripts/gpu-bundle`).

use std::path::{Path, PathBuf};

use enlighten::cuda::host_reads;
use enlighten_emulator::{emulate, Profile};
use enlighten_trainer::train::{train, TrainConfig, TrainOptions};

mod support;
use enlighten::testing::serial;
use support::{metrics, scratch, write_dataset};

fn config(dir: &Path) -> TrainConfig {
    TrainConfig::from_toml(&format!(
        r#"
        [run]
        name = "sync"
        seed = 5
        device = "cpu"
        out_dir = "{out}"
        eval_every = 3
        log_every = 2
        max_steps = 6
        diagnostics = true
        [data]
        dataset = "fashion-mnist"
        dir = "{data}"
        val_fraction = 0.2
        batch_size = 16
        augment = true
        pad = 2
        [model]
        name = "small-cnn"
        width = 8
        [optim]
        lr = 0.05
        epochs = 1
        [strategy]
        kind = "alpha-boost"
        alpha = 0.4
        drop_share = 0.25
        cutmix_prob = 0.5
        lambda = "per-sample"
        [strategy.ep]
        end = "steps"
        steps = 100
        "#,
        out = dir.join("runs").display(),
        data = dir.join("data").display(),
    ))
    .unwrap()
}

#[test]
fn training_steps_read_nothing_back_and_the_reads_between_them_are_counted() {
    let _serial = serial();
    let dir = scratch("steps");
    std::fs::create_dir_all(dir.join("data")).unwrap();
    write_dataset(&dir.join("data"));
    let config = config(&dir);
    let (summary, reads) = emulate(Profile::TINY, || {
        let before = host_reads();
        let summary = train(&config, &TrainOptions::default()).unwrap();
        (summary, host_reads() - before)
    });
    assert_eq!(summary.timing.steps, 6);
    let lines = metrics(&dir, "sync");
    assert!(
        !lines.is_empty() && lines.iter().all(|l| l.in_ep && l.alpha > 0.0 && l.drop_share > 0.0),
        "the steps mixed and removed"
    );
    assert_eq!(
        summary.timing.step_host_reads, 0,
        "device values read back to the host inside training steps"
    );
    // Log lines (loss, accuracy, zero shares), validations and the test evaluation read: the
    // counter sees the trainer's reads, so the zero above is measured, not blind.
    assert!(reads >= 6, "the run's reads between steps were counted: {reads}");
}

/// Where the scan looks: every module a training step runs, library and trainer (paths from the
/// workspace root; a folder means every .rs file under it).
const SCANNED: &[&str] = &[
    "src/ops",
    "src/strategy",
    "src/cuda",
    "src/lib.rs",
    "src/alloc.rs",
    "src/rng.rs",
    "src/bridge.rs",
    "trainer/src/train",
    "trainer/src/data/augment.rs",
    "trainer/src/data/pipeline.rs",
    "trainer/src/models",
    "trainer/src/distributed",
];

/// The counted helpers themselves: the only place the syncing calls belong.
const HELPERS: &str = "src/cuda/transfer.rs";

/// Calls that make the host wait for the device (or may: a copy whose blocking is an argument),
/// and why.
const SYNCING: &[(&str, &str)] = &[
    ("int64_value(", "reads a device value"),
    ("double_value(", "reads a device value"),
    ("f64_value(", "reads a device value"),
    ("Vec::try_from(", "reads a tensor into a Vec"),
    ("f64::try_from(", "reads a device value"),
    ("f32::try_from(", "reads a device value"),
    ("try_into()", "may read a tensor into host values"),
    ("copy_data", "reads a tensor into host memory"),
    (".nonzero(", "its shape depends on device values"),
    ("masked_select(", "its shape depends on device values"),
    ("argwhere(", "its shape depends on device values"),
    ("_unique", "its shape depends on device values"),
    ("unique_", "its shape depends on device values"),
    ("repeat_interleave(", "its shape may depend on device values"),
    ("bincount(", "reads the maximum to size its output"),
    (".index(", "a Bool mask index reads its count"),
    (".f_index(", "a Bool mask index reads its count"),
    ("index_put", "a Bool mask index reads its count"),
    (".to_device(", "a blocking copy: use to_device_async or read_back"),
    (".f_to_device(", "a blocking copy: use to_device_async or read_back"),
    ("to_device_(", "blocking unless non_blocking: use to_device_async"),
    (".to(", "a blocking copy: use to_device_async or read_back"),
    ("pin_memory(", "pinned uploads belong in to_device_async"),
    (".equal(", "reads a comparison back"),
    ("allclose(", "reads a comparison back"),
    ("is_nonzero(", "reads a device value"),
    (".print(", "reads the tensor to print it"),
    ("synchronize(", "waits for the device"),
];

/// Hits that are fine, each with why: (file, a piece of its line, reason).
const ALLOWED: &[(&str, &str, &str)] = &[
    (
        "src/ops/loss/reference.rs",
        "t.to_device(Device::Cpu)",
        "f64 oracle (feature `testing`): copies to the host by design; tests only",
    ),
    (
        "src/ops/loss/reference.rs",
        ".int64_value(&[])",
        "f64 oracles' counts, on host copies (`host`); tests only",
    ),
    (
        "src/ops/stats/reference.rs",
        "to_device(Device::Cpu)",
        "f64 oracle (feature `testing`): copies to the host by design; tests only",
    ),
    (
        "src/ops/stats/reference.rs",
        ".double_value(&[])",
        "f64 oracle's sums, on host copies; tests only",
    ),
    (
        "src/ops/mixup/reference.rs",
        ".to_device(x.device())",
        "f64 oracle (feature `testing`) of Mixup; tests only",
    ),
    (
        "src/cuda/fatbin.rs",
        "try_into()",
        "byte slices to integers while reading the fatbin, once per device",
    ),
    (
        "src/cuda/elf.rs",
        "try_into()",
        "byte slices to integers while reading a cubin, once per device",
    ),
    (
        "trainer/src/train/run.rs",
        "t.f_copy_data_u8(&mut bytes, numel)",
        "parameter digest at the run's end, of a host copy made by read_back",
    ),
    (
        "trainer/src/train/config.rs",
        ".try_into()",
        "configuration parsing, no tensor",
    ),
];

fn rust_files(path: &Path, out: &mut Vec<PathBuf>) {
    if path.is_dir() {
        let mut entries: Vec<PathBuf> = std::fs::read_dir(path).unwrap().map(|e| e.unwrap().path()).collect();
        entries.sort();
        for e in entries {
            rust_files(&e, out);
        }
    } else if path.extension().is_some_and(|e| e == "rs") {
        out.push(path.to_path_buf());
    }
}

/// `line` without its `//` comment (a `//` inside a string literal is kept).
fn code_of(line: &str) -> &str {
    let mut in_string = false;
    let bytes = line.as_bytes();
    for i in 0..bytes.len() {
        match bytes[i] {
            b'"' if i == 0 || bytes[i - 1] != b'\\' => in_string = !in_string,
            b'/' if !in_string && bytes.get(i + 1) == Some(&b'/') => return &line[..i],
            _ => {}
        }
    }
    line
}

/// The syncing calls of one line of code: (pattern, why).
fn syncing_calls(code: &str) -> Vec<(&'static str, &'static str)> {
    let mut hits: Vec<_> = SYNCING.iter().filter(|(p, _)| code.contains(p)).copied().collect();
    // `Vec::<T>::try_from(t)`: the turbofish form of a read into a Vec.
    if let Some(at) = code.find("Vec::<") {
        if code[at..].contains(">::try_from(") {
            hits.push(("Vec::<..>::try_from(", "reads a tensor into a Vec"));
        }
    }
    hits
}

/// Every hit of `text` (a file's source; its `#[cfg(test)] mod tests` and after are test code
/// and skipped) as (line number, code, pattern, why).
fn scan(text: &str) -> Vec<(usize, String, &'static str, &'static str)> {
    let lines: Vec<&str> = text.lines().collect();
    let end = (0..lines.len())
        .find(|&i| {
            lines[i].trim() == "#[cfg(test)]" && lines.get(i + 1).is_some_and(|l| l.trim_start().starts_with("mod "))
        })
        .unwrap_or(lines.len());
    let mut hits = Vec::new();
    for (i, line) in lines[..end].iter().enumerate() {
        let code = code_of(line);
        for (pattern, why) in syncing_calls(code) {
            hits.push((i + 1, code.trim().to_string(), pattern, why));
        }
    }
    hits
}

#[test]
fn every_syncing_call_a_step_can_reach_is_counted_or_allowed() {
    let root = Path::new(env!("CARGO_MANIFEST_DIR")).parent().unwrap();
    let mut files = Vec::new();
    for p in SCANNED {
        rust_files(&root.join(p), &mut files);
    }
    assert!(files.len() > 40, "the scan found the sources ({} files)", files.len());
    let mut used = vec![false; ALLOWED.len()];
    let mut problems = Vec::new();
    for file in &files {
        let rel = file.strip_prefix(root).unwrap().to_string_lossy().replace('\\', "/");
        if rel == HELPERS {
            continue;
        }
        let text = std::fs::read_to_string(file).unwrap();
        for (line, code, pattern, why) in scan(&text) {
            match ALLOWED
                .iter()
                .position(|(f, piece, _)| *f == rel && code.contains(piece))
            {
                Some(k) => used[k] = true,
                None => problems.push(format!("{rel}:{line}: `{pattern}` ({why}): {code}")),
            }
        }
    }
    let stale: Vec<_> = ALLOWED
        .iter()
        .zip(&used)
        .filter(|(_, u)| !**u)
        .map(|(a, _)| a)
        .collect();
    assert!(stale.is_empty(), "allowlist entries that match nothing: {stale:?}");
    assert!(
        problems.is_empty(),
        "host syncs the counter cannot see (route them through enlighten::cuda's counted helpers, \
         or allow them with a reason):\n{}",
        problems.join("\n")
    );
}

#[test]
fn the_scan_finds_a_blocking_upload_and_a_read() {
    // The scan is shown able to fail, on the forms the trainer's step used to have.
    let step = "let mut x = x.to_device(self.device); // copy\nlet n = t.int64_value(&[]);\n\
                let v = Vec::<f64>::try_from(t)?;\nlet s = \"a // not a comment\"; y.nonzero();\n\
                #[cfg(test)]\nmod tests { fn f() { t.to_device(d); } }";
    let hits: Vec<_> = scan(step).into_iter().map(|(line, _, p, _)| (line, p)).collect();
    assert_eq!(
        hits,
        [
            (1, ".to_device("),
            (2, "int64_value("),
            (3, "Vec::<..>::try_from("),
            (4, ".nonzero(")
        ]
    );
}

//! Atomic, verified checkpoints: each is written into a temporary folder, flushed, its manifest
//! (the size and digest of every file, [`Manifest`]) written last, then the folder is renamed into
//! place, and only then does the `latest` pointer (itself replaced by rename) name it. The two
//! newest checkpoints are kept. Loading verifies the manifest and falls back to the newest
//! checkpoint that verifies, so a run killed at any point, or a checkpoint damaged later, never
//! resumes from a corrupt state.

use std::fs;
use std::io::Write;
use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};
use tch::Tensor;

use super::manifest::{Manifest, MANIFEST};
use crate::error::{Error, Result};
use enlighten::strategy::Schedule;

/// Checkpoints kept: the newest, and the one before it to fall back to if the newest is damaged.
const KEPT: usize = 2;

/// Everything besides tensors that a resumed run needs.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct RunState {
    /// The next step to run.
    pub step: u64,
    pub rng: [u64; 4],
    pub schedule: Schedule,
    pub best_val: Option<f64>,
    /// The steps' shape when the checkpoint was written; none in checkpoints that predate it
    /// (they resume as if the shape were the resuming run's).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub layout: Option<Layout>,
}

/// How a run's steps cover its data: the rows of one step over all ranks, and the steps of an
/// epoch. A run resumed with another world size or batch size has another layout.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct Layout {
    pub global_batch: i64,
    pub per_epoch: u64,
}

impl Layout {
    /// The step of this layout where a run saved at `step` under `saved` continues: the same
    /// epoch (each epoch's order is defined globally), from the global batch that holds the
    /// first row the saved run had not trained on; the rows before it in that batch are trained
    /// again. An epoch the saved run had finished ends here too.
    pub fn continue_from(&self, saved: Layout, step: u64) -> u64 {
        if saved == *self || saved.per_epoch == 0 || self.global_batch < 1 {
            return step;
        }
        let epoch = step / saved.per_epoch;
        let rows = (step % saved.per_epoch) * saved.global_batch.max(0) as u64;
        epoch * self.per_epoch + (rows / self.global_batch as u64).min(self.per_epoch)
    }
}

/// A checkpoint file or folder that could not be written or read.
fn io(path: &Path, e: impl std::fmt::Display) -> Error {
    Error::Checkpoint {
        path: path.to_path_buf(),
        problem: format!("{e} (check the run directory is writable and not corrupted)"),
    }
}

fn write_synced(path: &Path, bytes: &[u8]) -> Result<()> {
    let mut f = fs::File::create(path).map_err(|e| io(path, e))?;
    f.write_all(bytes).and_then(|_| f.sync_all()).map_err(|e| io(path, e))
}

/// Named tensors of a checkpoint (model variables, optimiser buffers).
pub type NamedTensors = Vec<(String, Tensor)>;

/// Writes `dir/ckpt-<step>/{state.json, tensors.ot, manifest.json}`, points `dir/latest` at it
/// and removes all but the two newest checkpoints.
pub fn save(dir: &Path, state: &RunState, tensors: &[(String, Tensor)]) -> Result<PathBuf> {
    fs::create_dir_all(dir).map_err(|e| io(dir, e))?;
    let tmp = dir.join("ckpt.tmp");
    if tmp.exists() {
        fs::remove_dir_all(&tmp).map_err(|e| io(&tmp, e))?;
    }
    fs::create_dir(&tmp).map_err(|e| io(&tmp, e))?;
    let json = serde_json::to_vec_pretty(state).map_err(|e| io(&tmp, e))?;
    write_synced(&tmp.join("state.json"), &json)?;
    let named: Vec<(&str, &Tensor)> = tensors.iter().map(|(n, t)| (n.as_str(), t)).collect();
    let tensor_file = tmp.join("tensors.ot");
    Tensor::save_multi(&named, &tensor_file).map_err(|e| io(&tensor_file, e))?;
    fs::File::open(&tensor_file)
        .and_then(|f| f.sync_all())
        .map_err(|e| io(&tensor_file, e))?;
    // The manifest last: its presence says every file above is complete.
    let manifest = Manifest::of(&tmp).map_err(|e| io(&tmp, e))?;
    let manifest_json = serde_json::to_vec_pretty(&manifest).map_err(|e| io(&tmp, e))?;
    write_synced(&tmp.join("manifest.tmp"), &manifest_json)?;
    fs::rename(tmp.join("manifest.tmp"), tmp.join(MANIFEST)).map_err(|e| io(&tmp, e))?;
    sync_dir(&tmp)?;
    let name = format!("ckpt-{}", state.step);
    let final_dir = dir.join(&name);
    if final_dir.exists() {
        fs::remove_dir_all(&final_dir).map_err(|e| io(&final_dir, e))?;
    }
    fs::rename(&tmp, &final_dir).map_err(|e| io(&final_dir, e))?;
    let latest_tmp = dir.join("latest.tmp");
    write_synced(&latest_tmp, name.as_bytes())?;
    fs::rename(&latest_tmp, dir.join("latest")).map_err(|e| io(&dir.join("latest"), e))?;
    sync_dir(dir)?;
    // Older checkpoints are removed only once the new one is named.
    for (_, old) in checkpoints(dir)?.into_iter().skip(KEPT) {
        let _ = fs::remove_dir_all(old);
    }
    Ok(final_dir)
}

/// Flushes a folder's entries (the renames into it) to the disk.
fn sync_dir(dir: &Path) -> Result<()> {
    fs::File::open(dir).and_then(|f| f.sync_all()).map_err(|e| io(dir, e))
}

/// The `ckpt-<step>` folders of `dir`, newest (highest step) first.
fn checkpoints(dir: &Path) -> Result<Vec<(u64, PathBuf)>> {
    let mut found = Vec::new();
    let Ok(entries) = fs::read_dir(dir) else {
        return Ok(found);
    };
    for entry in entries.flatten() {
        let name = entry.file_name().to_string_lossy().into_owned();
        if let Some(step) = name.strip_prefix("ckpt-").and_then(|s| s.parse::<u64>().ok()) {
            found.push((step, entry.path()));
        }
    }
    found.sort_by_key(|c| std::cmp::Reverse(c.0));
    Ok(found)
}

/// Whether `dir` holds any checkpoint (verified or not).
pub fn exists(dir: &Path) -> bool {
    dir.join("latest").exists() || checkpoints(dir).is_ok_and(|c| !c.is_empty())
}

/// A checkpoint that verified, and those newer than it that did not (their folder, and why).
pub struct Loaded {
    pub state: RunState,
    pub tensors: NamedTensors,
    pub path: PathBuf,
    pub rejected: Vec<(PathBuf, String)>,
}

/// The newest checkpoint of `dir` whose manifest verifies; None when there is none at all, an
/// error listing each checkpoint's fault when none verifies.
pub fn load_verified(dir: &Path) -> Result<Option<Loaded>> {
    let mut rejected = Vec::new();
    for (_, ckpt) in checkpoints(dir)? {
        match read_verified(&ckpt) {
            Ok((state, tensors)) => {
                return Ok(Some(Loaded {
                    state,
                    tensors,
                    path: ckpt,
                    rejected,
                }))
            }
            Err(problem) => rejected.push((ckpt, problem)),
        }
    }
    if rejected.is_empty() {
        return Ok(None);
    }
    let faults: Vec<String> = rejected
        .iter()
        .map(|(p, why)| format!("{}: {why}", p.display()))
        .collect();
    Err(Error::Checkpoint {
        path: dir.to_path_buf(),
        problem: format!(
            "no checkpoint verifies ({}); start a new run (another run.name)",
            faults.join("; ")
        ),
    })
}

/// One checkpoint folder, its manifest checked before anything is parsed.
fn read_verified(ckpt: &Path) -> std::result::Result<(RunState, NamedTensors), String> {
    Manifest::read(ckpt)?.verify(ckpt)?;
    let json = fs::read(ckpt.join("state.json")).map_err(|e| format!("state.json: {e}"))?;
    let state: RunState = serde_json::from_slice(&json).map_err(|e| format!("state.json: {e}"))?;
    let tensors = Tensor::load_multi(ckpt.join("tensors.ot")).map_err(|e| format!("tensors.ot: {e}"))?;
    Ok((state, tensors))
}

/// The newest checkpoint of `dir` that verifies, if any ([`load_verified`]).
pub fn load(dir: &Path) -> Result<Option<(RunState, NamedTensors)>> {
    Ok(load_verified(dir)?.map(|l| (l.state, l.tensors)))
}

#[cfg(test)]
mod tests {
    use super::Layout;

    #[test]
    fn a_step_continues_in_its_epoch_at_the_first_row_not_trained() {
        let two = Layout {
            global_batch: 32,
            per_epoch: 8,
        };
        let one = Layout {
            global_batch: 16,
            per_epoch: 16,
        };
        assert_eq!(one.continue_from(one, 13), 13, "the same layout keeps its step");
        // Epoch 1, 4 steps of 32 rows in: 128 rows, 8 steps of 16.
        assert_eq!(one.continue_from(two, 12), 24);
        // Epoch boundaries map to epoch boundaries.
        assert_eq!(one.continue_from(two, 16), 32);
        assert_eq!(two.continue_from(one, 32), 16);
        // 3 steps of 16 rows in (48 rows): the 32-row batch holding row 48 starts at row 32.
        assert_eq!(two.continue_from(one, 3), 1);
        // A layout with fewer steps per epoch (padding, the last batch dropped) ends the epoch.
        let short = Layout {
            global_batch: 40,
            per_epoch: 3,
        };
        assert_eq!(short.continue_from(two, 7), 3);
        assert_eq!(short.continue_from(two, 8 + 7), 6);
    }
}

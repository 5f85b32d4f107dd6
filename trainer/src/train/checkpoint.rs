//! Atomic checkpoints: each is written into a temporary folder, flushed, then renamed into
//! place, and only then does the `latest` pointer (itself replaced by rename) name it. A run
//! killed at any point leaves the previous checkpoint complete and named.

use std::fs;
use std::io::Write;
use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};
use tch::Tensor;

use crate::error::{Error, Result};
use enlighten::strategy::Schedule;

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

/// Writes `dir/ckpt-<step>/{state.json, tensors.ot}` and points `dir/latest` at it.
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
    let name = format!("ckpt-{}", state.step);
    let final_dir = dir.join(&name);
    if final_dir.exists() {
        fs::remove_dir_all(&final_dir).map_err(|e| io(&final_dir, e))?;
    }
    fs::rename(&tmp, &final_dir).map_err(|e| io(&final_dir, e))?;
    let latest_tmp = dir.join("latest.tmp");
    write_synced(&latest_tmp, name.as_bytes())?;
    fs::rename(&latest_tmp, dir.join("latest")).map_err(|e| io(&dir.join("latest"), e))?;
    // Older checkpoints are removed only once the new one is named.
    for entry in fs::read_dir(dir).map_err(|e| io(dir, e))?.flatten() {
        let n = entry.file_name().to_string_lossy().into_owned();
        if n.starts_with("ckpt-") && n != name {
            let _ = fs::remove_dir_all(entry.path());
        }
    }
    Ok(final_dir)
}

/// The checkpoint `dir/latest` names, if any.
pub fn load(dir: &Path) -> Result<Option<(RunState, NamedTensors)>> {
    let latest = dir.join("latest");
    let Ok(name) = fs::read_to_string(&latest) else {
        return Ok(None);
    };
    let ckpt = dir.join(name.trim());
    let state_path = ckpt.join("state.json");
    let json = fs::read(&state_path).map_err(|e| io(&state_path, e))?;
    let state: RunState = serde_json::from_slice(&json).map_err(|e| io(&state_path, e))?;
    let tensor_file = ckpt.join("tensors.ot");
    let tensors = Tensor::load_multi(&tensor_file).map_err(|e| io(&tensor_file, e))?;
    Ok(Some((state, tensors)))
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

//! What `--resume` may change. The run folder's config.toml is the record of what ran: settings
//! that define the run (model, data, strategy, seed, optimiser) must be the same or the resume is
//! refused with the list of differences; settings of how it runs (its length, intervals, workers,
//! device, the process group) are applied and appended to the record as comments, so the file
//! still parses as the configuration the run started with and says what changed. A checkpoint
//! whose tensors do not fit the model is an error naming the first parameter that differs.

use std::collections::BTreeMap;
use std::fs;
use std::io::Write;
use std::path::Path;

use tch::Tensor;

use super::config::TrainConfig;
use crate::error::{Error, Result};

/// Settings a resumed run may change (dotted keys; a key under `compare` too, which `train`
/// ignores).
const MAY_CHANGE: [&str; 13] = [
    "run.max_steps",
    "run.log_every",
    "run.checkpoint_every",
    "run.device",
    "run.out_dir",
    "run.prefetch",
    "run.diagnostics",
    "run.backend",
    "run.collective_timeout_s",
    "data.workers",
    "data.dir",
    "optim.epochs",
    "compare",
];

/// Compares `config` with the record in `run_dir/config.toml`: an error listing every setting
/// that defines the run and differs; else the allowed differences appended to the record. A
/// run folder without a record (a run from before records) takes `config` as its record.
pub fn reconcile(run_dir: &Path, config: &TrainConfig) -> Result<()> {
    let path = run_dir.join("config.toml");
    let Ok(text) = fs::read_to_string(&path) else {
        return write_record(&path, config);
    };
    let stored: toml::Value = toml::from_str(&text).map_err(|e| Error::Config(format!("{}: {e}", path.display())))?;
    let new = toml::Value::try_from(config).map_err(|e| Error::Config(e.to_string()))?;
    let (before, after) = (flatten(&stored), flatten(&new));
    let mut refused = Vec::new();
    let mut allowed = Vec::new();
    let keys: std::collections::BTreeSet<&String> = before.keys().chain(after.keys()).collect();
    for key in keys {
        let (was, now) = (before.get(key), after.get(key));
        if was == now {
            continue;
        }
        let line = format!("{key} = {} (was {})", shown(now), shown(was));
        if MAY_CHANGE.iter().any(|k| key == k || key.starts_with(&format!("{k}."))) {
            allowed.push(line);
        } else {
            refused.push(line);
        }
    }
    if !refused.is_empty() {
        return Err(Error::Resume {
            run_dir: run_dir.to_path_buf(),
            differences: refused.join("; "),
        });
    }
    if !allowed.is_empty() {
        let mut file = fs::OpenOptions::new()
            .append(true)
            .open(&path)
            .map_err(|e| Error::unwritable(path.clone(), e))?;
        let lines: String = allowed.iter().map(|l| format!("#   {l}\n")).collect();
        write!(file, "\n# --resume changed:\n{lines}").map_err(|e| Error::unwritable(path.clone(), e))?;
    }
    Ok(())
}

/// Writes `config` as the run's record (a new run, or a run that has no checkpoint yet).
pub fn write_record(path: &Path, config: &TrainConfig) -> Result<()> {
    fs::write(path, config.to_toml()?).map_err(|e| Error::unwritable(path.to_path_buf(), e))
}

/// Every leaf of a TOML document by its dotted key.
pub(crate) fn flatten(value: &toml::Value) -> BTreeMap<String, toml::Value> {
    fn walk(prefix: &str, value: &toml::Value, out: &mut BTreeMap<String, toml::Value>) {
        match value {
            toml::Value::Table(t) => {
                for (k, v) in t {
                    let key = if prefix.is_empty() {
                        k.clone()
                    } else {
                        format!("{prefix}.{k}")
                    };
                    walk(&key, v, out);
                }
            }
            leaf => {
                out.insert(prefix.to_string(), leaf.clone());
            }
        }
    }
    let mut out = BTreeMap::new();
    walk("", value, &mut out);
    out
}

/// A value as TOML writes it, or "unset".
fn shown(value: Option<&toml::Value>) -> String {
    value.map_or_else(|| "unset".into(), ToString::to_string)
}

/// Checks that a checkpoint's tensors (`saved`, read from `dir`) fit the model and optimiser
/// whose tensors are `expected` (same names, shapes and dtypes), naming the first that does not.
pub fn check_tensors(dir: &Path, expected: &[(String, Tensor)], saved: &[(String, Tensor)]) -> Result<()> {
    let saved_by_name: BTreeMap<&str, &Tensor> = saved.iter().map(|(n, t)| (n.as_str(), t)).collect();
    let fault = |problem: String| Error::Checkpoint {
        path: dir.to_path_buf(),
        problem: format!(
            "{problem}: the checkpoint was written by another model or optimiser than this configuration's"
        ),
    };
    for (name, t) in expected {
        let Some(s) = saved_by_name.get(name.as_str()) else {
            return Err(fault(format!(
                "parameter `{name}` of this model is not in the checkpoint"
            )));
        };
        if s.size() != t.size() || s.kind() != t.kind() {
            return Err(fault(format!(
                "parameter `{name}` is {:?} {:?} in the checkpoint, {:?} {:?} in this model",
                s.kind(),
                s.size(),
                t.kind(),
                t.size()
            )));
        }
    }
    let expected_names: std::collections::BTreeSet<&str> = expected.iter().map(|(n, _)| n.as_str()).collect();
    if let Some((name, _)) = saved.iter().find(|(n, _)| !expected_names.contains(n.as_str())) {
        return Err(fault(format!("tensor `{name}` of the checkpoint is not in this model")));
    }
    Ok(())
}

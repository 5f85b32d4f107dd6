//! The UCR/UEA `.ts` format (sktime's): `@` header lines (`@classLabel true a b c`, `@data`, ...),
//! `#` comments, then one case a line: channels split by `:`, values by `,`, the class label
//! last. Cases of unequal length are padded with zeros at the end to the longest (or truncated to
//! `length` when given); `?` (missing) reads as 0.

use std::path::Path;

use tch::Tensor;

use super::{corrupt, read_file};
use crate::error::Result;

const FETCH: &str = "run `scripts/setup --data`, or point ENLIGHTEN_DATA at a folder of UCR/UEA .ts files";

/// Labelled series: f32 `[N, C, T]` and int64 `[N]`; `class_names[k]` is label k's name.
#[derive(Debug)]
pub struct SeriesSet {
    pub series: Tensor,
    pub labels: Tensor,
    pub class_names: Vec<String>,
    /// Each case's length before padding or truncation.
    pub lengths: Vec<usize>,
}

/// One case as read: its channels' values (of the lengths in the file) and its class label.
struct Case {
    channels: Vec<Vec<f32>>,
    label: String,
}

/// Reads a `.ts` file. Labels are numbered in the order `@classLabel` lists them (or, without
/// that header, in sorted order of the names met); `length` fixes T.
pub fn read_ts(path: &Path, length: Option<usize>) -> Result<SeriesSet> {
    let bytes = read_file(path, FETCH)?;
    let text = String::from_utf8(bytes).map_err(|e| corrupt(path, format!("not UTF-8: {e}"), FETCH))?;
    let (declared, cases) = parse_ts(path, &text)?;
    if cases.is_empty() {
        return Err(corrupt(path, "no cases after @data", FETCH));
    }
    let class_names = declared.unwrap_or_else(|| {
        let mut names: Vec<String> = cases.iter().map(|case| case.label.clone()).collect();
        names.sort();
        names.dedup();
        names
    });
    to_series_set(path, &cases, class_names, length)
}

/// The class names `@classLabel` declares (if it does) and the cases after `@data`, each with
/// as many channels as the first.
fn parse_ts(path: &Path, text: &str) -> Result<(Option<Vec<String>>, Vec<Case>)> {
    let mut declared: Option<Vec<String>> = None;
    let mut in_data = false;
    let mut cases: Vec<Case> = Vec::new();
    for (no, raw) in text.lines().enumerate() {
        let line = raw.trim();
        if line.is_empty() || line.starts_with('#') {
            continue;
        }
        if let Some(header) = line.strip_prefix('@') {
            let mut words = header.split_whitespace();
            match words.next().map(str::to_ascii_lowercase).as_deref() {
                Some("classlabel") if words.next() == Some("true") => {
                    declared = Some(words.map(String::from).collect())
                }
                Some("data") => in_data = true,
                _ => {}
            }
            continue;
        }
        if !in_data {
            return Err(corrupt(path, format!("line {}: data before @data", no + 1), FETCH));
        }
        let case = parse_case(path, no, line)?;
        if let Some(first) = cases.first() {
            if first.channels.len() != case.channels.len() {
                return Err(corrupt(
                    path,
                    format!(
                        "line {}: {} channels, the first case has {}",
                        no + 1,
                        case.channels.len(),
                        first.channels.len()
                    ),
                    FETCH,
                ));
            }
        }
        cases.push(case);
    }
    Ok((declared, cases))
}

/// One data line (line number `no` from 0): channels split by `:`, values by `,`, the label
/// last; `?` and `NaN` read as 0.
fn parse_case(path: &Path, no: usize, line: &str) -> Result<Case> {
    let parts: Vec<&str> = line.split(':').collect();
    if parts.len() < 2 {
        return Err(corrupt(
            path,
            format!("line {}: expected channels and a label separated by ':'", no + 1),
            FETCH,
        ));
    }
    let label = parts[parts.len() - 1].trim().to_string();
    let channels = parts[..parts.len() - 1]
        .iter()
        .map(|ch| {
            ch.split(',')
                .map(|v| match v.trim() {
                    "?" | "NaN" => Ok(0.0),
                    v => v
                        .parse::<f32>()
                        .map_err(|e| corrupt(path, format!("line {}: `{v}`: {e}", no + 1), FETCH)),
                })
                .collect::<Result<Vec<f32>>>()
        })
        .collect::<Result<Vec<Vec<f32>>>>()?;
    Ok(Case { channels, label })
}

/// The cases as tensors: each padded with zeros (or truncated) to `length`, else to the
/// longest; labels numbered by their place in `class_names`.
fn to_series_set(path: &Path, cases: &[Case], class_names: Vec<String>, length: Option<usize>) -> Result<SeriesSet> {
    let lengths: Vec<usize> = cases
        .iter()
        .map(|case| case.channels.iter().map(Vec::len).max().unwrap_or(0))
        .collect();
    let t = length
        .unwrap_or_else(|| lengths.iter().copied().max().unwrap_or(0))
        .max(1);
    let c = cases[0].channels.len();
    let mut flat = vec![0f32; cases.len() * c * t];
    let mut labels = Vec::with_capacity(cases.len());
    for (i, Case { channels, label }) in cases.iter().enumerate() {
        let k = class_names.iter().position(|n| n == label).ok_or_else(|| {
            corrupt(
                path,
                format!("case {}: label `{label}` is not among {class_names:?}", i + 1),
                FETCH,
            )
        })?;
        labels.push(k as i64);
        for (ch, values) in channels.iter().enumerate() {
            let start = (i * c + ch) * t;
            let n = values.len().min(t);
            flat[start..start + n].copy_from_slice(&values[..n]);
        }
    }
    Ok(SeriesSet {
        series: Tensor::from_slice(&flat).view([cases.len() as i64, c as i64, t as i64]),
        labels: Tensor::from_slice(&labels),
        class_names,
        lengths,
    })
}

//! scikit-learn's digits: 1,797 8x8 images in `digits.csv.gz`, one per line, 64 pixel values in
//! 0..=16 then the label. Pixels are stored as u8 scaled by 255/16 (rounded), like other images.

use std::io::Read;
use std::path::Path;

use flate2::read::GzDecoder;
use tch::Tensor;

use super::{corrupt, images_from, read_file, ImageSet};
use crate::error::Result;

const FETCH: &str =
    "run `scripts/setup --data` (it extracts digits.csv.gz from the scikit-learn wheel), or set ENLIGHTEN_DATA";

/// All 1,797 digits from `path` (gzipped CSV); split them with [`super::split`].
pub fn sklearn_digits(path: &Path) -> Result<ImageSet> {
    let raw = read_file(path, FETCH)?;
    let mut text = String::new();
    GzDecoder::new(raw.as_slice())
        .read_to_string(&mut text)
        .map_err(|e| corrupt(path, format!("bad gzip text: {e}"), FETCH))?;
    let (mut pixels, mut labels) = (Vec::new(), Vec::new());
    for (line_no, line) in text.lines().enumerate().filter(|(_, l)| !l.trim().is_empty()) {
        let values: Vec<f64> = line
            .split(',')
            .map(|v| v.trim().parse::<f64>())
            .collect::<std::result::Result<_, _>>()
            .map_err(|e| corrupt(path, format!("line {}: {e}", line_no + 1), FETCH))?;
        if values.len() != 65 {
            return Err(corrupt(
                path,
                format!(
                    "line {}: {} values, expected 64 pixels and a label",
                    line_no + 1,
                    values.len()
                ),
                FETCH,
            ));
        }
        if let Some(bad) = values[..64].iter().find(|v| !(0.0..=16.0).contains(*v)) {
            return Err(corrupt(
                path,
                format!("line {}: pixel {bad} outside 0..=16", line_no + 1),
                FETCH,
            ));
        }
        let label = values[64];
        if !(0.0..=9.0).contains(&label) || label.fract() != 0.0 {
            return Err(corrupt(
                path,
                format!("line {}: label {label} is not a digit", line_no + 1),
                FETCH,
            ));
        }
        pixels.extend(values[..64].iter().map(|v| (v * 255.0 / 16.0).round() as u8));
        labels.push(label as i64);
    }
    if labels.is_empty() {
        return Err(corrupt(path, "no rows", FETCH));
    }
    let n = labels.len() as i64;
    Ok(ImageSet {
        images: images_from(&pixels, n, 1, 8, 8),
        labels: Tensor::from_slice(&labels),
        classes: 10,
    })
}

//! The IDX format of MNIST and Fashion-MNIST, gzipped or not: a big-endian u32 magic
//! (0x00000803 for u8 images of rank 3, 0x00000801 for u8 labels of rank 1), the dimensions as
//! big-endian u32, then the raw bytes.

use std::io::Read;
use std::path::Path;

use flate2::read::GzDecoder;
use tch::Tensor;

use super::{corrupt, images_from, read_file, ImageSet};
use crate::error::Result;

const FETCH_FASHION: &str =
    "run `scripts/setup --data` (it fetches Debian's dataset-fashion-mnist package), or set ENLIGHTEN_DATA";

/// The file's bytes, gunzipped when it starts with the gzip magic.
fn contents(path: &Path, hint: &str) -> Result<Vec<u8>> {
    let raw = read_file(path, hint)?;
    if raw.starts_with(&[0x1f, 0x8b]) {
        let mut out = Vec::new();
        GzDecoder::new(raw.as_slice())
            .read_to_end(&mut out)
            .map_err(|e| corrupt(path, format!("bad gzip data: {e}"), hint))?;
        Ok(out)
    } else {
        Ok(raw)
    }
}

/// (dims, payload) of an IDX file whose magic must be `magic`.
fn parse(path: &Path, bytes: &[u8], magic: u32, rank: usize, hint: &str) -> Result<(Vec<usize>, usize)> {
    let word = |i: usize| -> Option<u32> {
        bytes
            .get(4 * i..4 * i + 4)
            .map(|b| u32::from_be_bytes([b[0], b[1], b[2], b[3]]))
    };
    let found = word(0).ok_or_else(|| corrupt(path, "shorter than an IDX header", hint))?;
    if found != magic {
        return Err(corrupt(
            path,
            format!("IDX magic {found:#010x}, expected {magic:#010x}"),
            hint,
        ));
    }
    let dims: Vec<usize> = (1..=rank)
        .map(|i| word(i).map(|d| d as usize))
        .collect::<Option<_>>()
        .ok_or_else(|| corrupt(path, "truncated IDX header", hint))?;
    let header = 4 * (rank + 1);
    let expected = dims.iter().product::<usize>();
    if bytes.len() - header != expected {
        return Err(corrupt(
            path,
            format!(
                "{} data bytes for dimensions {dims:?}, expected {expected}",
                bytes.len() - header
            ),
            hint,
        ));
    }
    Ok((dims, header))
}

/// u8 images `[N, 1, H, W]` from an IDX image file.
pub fn read_idx_images(path: &Path) -> Result<Tensor> {
    read_images(path, FETCH_FASHION)
}

fn read_images(path: &Path, hint: &str) -> Result<Tensor> {
    let bytes = contents(path, hint)?;
    let (dims, header) = parse(path, &bytes, 0x0000_0803, 3, hint)?;
    Ok(images_from(
        &bytes[header..],
        dims[0] as i64,
        1,
        dims[1] as i64,
        dims[2] as i64,
    ))
}

/// int64 labels `[N]` from an IDX label file.
pub fn read_idx_labels(path: &Path) -> Result<Tensor> {
    read_labels(path, FETCH_FASHION)
}

fn read_labels(path: &Path, hint: &str) -> Result<Tensor> {
    let bytes = contents(path, hint)?;
    let (_, header) = parse(path, &bytes, 0x0000_0801, 1, hint)?;
    let labels: Vec<i64> = bytes[header..].iter().map(|&b| b as i64).collect();
    Ok(Tensor::from_slice(&labels))
}

/// Fashion-MNIST from `dir` (`{train,t10k}-{images-idx3,labels-idx1}-ubyte.gz`): (train, test).
pub fn fashion_mnist(dir: &Path) -> Result<(ImageSet, ImageSet)> {
    let load = |prefix: &str| -> Result<ImageSet> {
        let images = read_images(&dir.join(format!("{prefix}-images-idx3-ubyte.gz")), FETCH_FASHION)?;
        let labels_path = dir.join(format!("{prefix}-labels-idx1-ubyte.gz"));
        let labels = read_labels(&labels_path, FETCH_FASHION)?;
        if labels.size()[0] != images.size()[0] {
            return Err(corrupt(
                &labels_path,
                format!("{} labels for {} images", labels.size()[0], images.size()[0]),
                FETCH_FASHION,
            ));
        }
        if labels.max().int64_value(&[]) >= 10 {
            return Err(corrupt(
                &labels_path,
                "a label above 9 in a 10-class dataset",
                FETCH_FASHION,
            ));
        }
        Ok(ImageSet {
            images,
            labels,
            classes: 10,
        })
    };
    Ok((load("train")?, load("t10k")?))
}

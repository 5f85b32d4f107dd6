//! CIFAR-10 and CIFAR-100 in their binary formats: one record per image, the label byte(s)
//! then 3 x 32 x 32 pixel bytes in channel-major order (CIFAR-100: coarse label, fine label).

use std::path::Path;

use tch::Tensor;

use super::{corrupt, images_from, read_file, ImageSet};
use crate::error::Result;

const PIXELS: usize = 3 * 32 * 32;
const FETCH: &str = "download the CIFAR binary version from its authors' page and point ENLIGHTEN_DATA at the folder holding cifar-10-batches-bin/ or cifar-100-binary/";

/// Images and labels of the given files, `label_bytes` per record with the label at `label_at`.
fn read_records(files: &[std::path::PathBuf], label_bytes: usize, label_at: usize, classes: i64) -> Result<ImageSet> {
    let record = label_bytes + PIXELS;
    let (mut pixels, mut labels) = (Vec::new(), Vec::new());
    for path in files {
        let bytes = read_file(path, FETCH)?;
        if bytes.is_empty() || bytes.len() % record != 0 {
            return Err(corrupt(
                path,
                format!("{} bytes is not a whole number of {record}-byte records", bytes.len()),
                FETCH,
            ));
        }
        for r in bytes.chunks_exact(record) {
            let label = r[label_at] as i64;
            if label >= classes {
                return Err(corrupt(
                    path,
                    format!("label {label} in a {classes}-class dataset"),
                    FETCH,
                ));
            }
            labels.push(label);
            pixels.extend_from_slice(&r[label_bytes..]);
        }
    }
    let n = labels.len() as i64;
    Ok(ImageSet {
        images: images_from(&pixels, n, 3, 32, 32),
        labels: Tensor::from_slice(&labels),
        classes,
    })
}

/// CIFAR-10 from `dir/cifar-10-batches-bin/`: (train from data_batch_1..5, test_batch).
pub fn cifar10(dir: &Path) -> Result<(ImageSet, ImageSet)> {
    let d = dir.join("cifar-10-batches-bin");
    let train: Vec<_> = (1..=5).map(|i| d.join(format!("data_batch_{i}.bin"))).collect();
    Ok((
        read_records(&train, 1, 0, 10)?,
        read_records(&[d.join("test_batch.bin")], 1, 0, 10)?,
    ))
}

/// CIFAR-100 (fine labels) from `dir/cifar-100-binary/`: (train.bin, test.bin).
pub fn cifar100(dir: &Path) -> Result<(ImageSet, ImageSet)> {
    let d = dir.join("cifar-100-binary");
    Ok((
        read_records(&[d.join("train.bin")], 2, 1, 100)?,
        read_records(&[d.join("test.bin")], 2, 1, 100)?,
    ))
}

//! Datasets for the trainer, read from their original formats, with seeded splits.
//!
//! Images are kept as u8 `[N, C, H, W]` with int64 labels, so a batch goes to the device as
//! bytes and `ops::mixup::mixup_u8` normalises it in the same pass that mixes it. A missing or
//! corrupt file is an [`Error::Data`](crate::Error::Data) naming the file and how to fetch it.

mod augment;
mod cifar;
mod digits;
mod encoding;
mod folder;
mod idx;
mod limits;
mod pipeline;
mod sequence;
mod ts;

pub use augment::random_crop_flip;
pub use cifar::{cifar10, cifar100};
pub use digits::sklearn_digits;
pub use encoding::{decode_text, TextEncoding};
pub use folder::{image_folder, imagenet, is_image, tiny_imagenet, FileList, FolderSplits};
pub use idx::{fashion_mnist, read_idx_images, read_idx_labels};
pub use limits::{check_header, MAX_IMAGE_PIXELS};
pub use pipeline::{
    center_crop_box, decode_rgb, decode_rgb_within, load_sample, random_resized_crop, resize_crop_into, sample_seed,
    CropBox, ImageSource, Loader, OnBadFile, Rgb, Transform,
};
pub use sequence::{
    char_corpus, char_splits, forecast_windows, read_shakespeare, read_text, read_vic_elec, CharCorpus, TextSplits,
};
pub use ts::{read_ts, SeriesSet};

use std::path::{Path, PathBuf};

use tch::{Device, Kind, Tensor};

use crate::error::{Error, Result};
use enlighten::SeededRng;

/// Labelled images: u8 `[N, C, H, W]` and int64 `[N]`, on the CPU.
#[derive(Debug)]
pub struct ImageSet {
    pub images: Tensor,
    pub labels: Tensor,
    pub classes: i64,
}

impl ImageSet {
    pub fn len(&self) -> i64 {
        self.labels.size()[0]
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// The rows at `index` (int64 on the CPU).
    pub fn select(&self, index: &Tensor) -> ImageSet {
        ImageSet {
            images: self.images.index_select(0, index),
            labels: self.labels.index_select(0, index),
            classes: self.classes,
        }
    }

    /// Per-channel mean and standard deviation of the pixels scaled to [0, 1], for `Normalize`.
    pub fn channel_stats(&self) -> (Vec<f64>, Vec<f64>) {
        let x = self.images.to_kind(Kind::Double) / 255.0;
        let per_channel = x.transpose(0, 1).reshape([self.images.size()[1], -1]);
        let mean = Vec::<f64>::try_from(per_channel.mean_dim(1, false, Kind::Double)).unwrap_or_default();
        let std = Vec::<f64>::try_from(per_channel.std_dim(1, false, false)).unwrap_or_default();
        (mean, std.iter().map(|s| s.max(1e-6)).collect())
    }
}

/// Train / validation / test, the validation rows carved from the training set.
#[derive(Debug)]
pub struct Splits {
    pub train: ImageSet,
    pub val: ImageSet,
    pub test: ImageSet,
}

/// Carves `val_fraction` of `train` out as a validation set and keeps `subset` (in (0, 1]) of
/// the rest (the paper's data-scale ablations), both chosen by a permutation from `seed`.
pub fn split(train: ImageSet, test: ImageSet, val_fraction: f64, subset: f64, seed: u64) -> Result<Splits> {
    let (val_rows, train_rows) = split_rows(train.len(), val_fraction, subset, seed)?;
    Ok(Splits {
        val: train.select(&Tensor::from_slice(&val_rows)),
        train: train.select(&Tensor::from_slice(&train_rows)),
        test,
    })
}

/// The rows of an `n`-row training set that [`split`] makes the validation and the training
/// set, in that order.
pub fn split_rows(n: i64, val_fraction: f64, subset: f64, seed: u64) -> Result<(Vec<i64>, Vec<i64>)> {
    if !(0.0..1.0).contains(&val_fraction) {
        return Err(Error::value("val_fraction", "a fraction in [0, 1)", val_fraction));
    }
    if !(subset > 0.0 && subset <= 1.0) {
        return Err(Error::value("subset", "a fraction in (0, 1]", subset));
    }
    let perm = SeededRng::new(seed).permutation(n.max(0) as usize);
    let n_val = (val_fraction * n as f64).round() as usize;
    let n_train = (((perm.len().saturating_sub(n_val)) as f64) * subset).round().max(1.0) as usize;
    if n_train + n_val > perm.len() {
        return Err(Error::value(
            "subset",
            format!("a fraction leaving at least one training row of {n}"),
            subset,
        ));
    }
    Ok((perm[..n_val].to_vec(), perm[n_val..n_val + n_train].to_vec()))
}

/// Where the datasets live: `$ENLIGHTEN_DATA`, else `$ENLIGHTEN_CACHE/data`, else
/// `~/.cache/enlighten/data` (where `scripts/setup --data` puts them).
pub fn data_dir() -> PathBuf {
    if let Some(d) = std::env::var_os("ENLIGHTEN_DATA") {
        return PathBuf::from(d);
    }
    let cache = std::env::var_os("ENLIGHTEN_CACHE")
        .map(PathBuf::from)
        .unwrap_or_else(|| {
            std::env::var_os("HOME")
                .map(PathBuf::from)
                .unwrap_or_else(|| PathBuf::from("."))
                .join(".cache/enlighten")
        });
    cache.join("data")
}

/// Reads a whole file, or says which file is missing and how to fetch it.
fn read_file(path: &Path, hint: &str) -> Result<Vec<u8>> {
    std::fs::read(path).map_err(|e| Error::Data {
        path: path.to_path_buf(),
        problem: e.to_string(),
        hint: hint.into(),
    })
}

/// The entries of a folder in name order, or says which folder cannot be read and how to fetch it.
fn sorted_entries(dir: &Path, hint: &str) -> Result<Vec<PathBuf>> {
    let mut v: Vec<PathBuf> = std::fs::read_dir(dir)
        .map_err(|e| Error::Data {
            path: dir.to_path_buf(),
            problem: e.to_string(),
            hint: hint.into(),
        })?
        .filter_map(|e| e.ok().map(|e| e.path()))
        .collect();
    v.sort();
    Ok(v)
}

fn corrupt(path: &Path, problem: impl Into<String>, hint: &str) -> Error {
    Error::Data {
        path: path.to_path_buf(),
        problem: problem.into(),
        hint: hint.into(),
    }
}

/// u8 images on the CPU from raw bytes.
fn images_from(bytes: &[u8], n: i64, c: i64, h: i64, w: i64) -> Tensor {
    Tensor::from_slice(bytes).view([n, c, h, w]).to_device(Device::Cpu)
}

//! Image datasets stored as files: torchvision's ImageFolder layout, Tiny-ImageNet's official
//! layout and ImageNet's (ILSVRC) class folders, listed as (file, class) pairs with classes
//! sorted by name. The pixels are read later, by the decode pipeline ([`super::pipeline`]).

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use super::{corrupt, sorted_entries};
use crate::error::Result;

/// Image files with their classes: `labels[i]` indexes `classes` for `files[i]`.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct FileList {
    pub files: Vec<PathBuf>,
    pub labels: Vec<i64>,
    pub classes: Vec<String>,
}

impl FileList {
    pub fn len(&self) -> usize {
        self.files.len()
    }

    pub fn is_empty(&self) -> bool {
        self.files.is_empty()
    }

    /// The entries at `rows`, in that order.
    pub fn select(&self, rows: &[i64]) -> FileList {
        FileList {
            files: rows.iter().map(|&r| self.files[r as usize].clone()).collect(),
            labels: rows.iter().map(|&r| self.labels[r as usize]).collect(),
            classes: self.classes.clone(),
        }
    }
}

/// The splits a layout provides: `test` is None where the layout has no labelled test split (then
/// the caller tests on `val` and carves validation from `train`).
#[derive(Debug, Clone)]
pub struct FolderSplits {
    pub train: FileList,
    pub val: FileList,
    pub test: Option<FileList>,
}

const HINT_FOLDER: &str = "an image folder holds train/<class>/<image> and val/<class>/<image> (torchvision's layout)";
const HINT_TINY: &str =
    "Tiny-ImageNet's layout: train/<wnid>/images/*.JPEG, val/images/*.JPEG and val/val_annotations.txt";
const HINT_IMAGENET: &str = "ILSVRC's layout: train/<wnid>/*.JPEG, and val/<wnid>/*.JPEG (class folders, as \
     valprep.sh leaves them) or val/*.JPEG with LOC_val_solution.csv next to train/ (Kaggle's)";

/// Whether a file name is an image the pipeline decodes (JPEG or PNG, any case).
pub fn is_image(path: &Path) -> bool {
    path.extension()
        .and_then(|e| e.to_str())
        .is_some_and(|e| matches!(e.to_ascii_lowercase().as_str(), "jpg" | "jpeg" | "png"))
}

fn name(p: &Path) -> String {
    p.file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_default()
}

/// The entries of `dir` (not recursive) with an image's name, sorted by name. Entries that are
/// not regular files (a dangling or looping link, a folder named `x.jpg`) are listed too: they
/// are bad files, an error or skipped and counted as `on_bad_file` says, never silently dropped.
fn images_in(dir: &Path, hint: &str) -> Result<Vec<PathBuf>> {
    Ok(sorted_entries(dir, hint)?.into_iter().filter(|p| is_image(p)).collect())
}

/// `root/<class>/<sub>/<image>` for every class folder (sorted by name); `sub` is "" for the plain
/// layout, "images" for Tiny-ImageNet's training split. `classes` fixes the class order when given.
fn class_folders(root: &Path, sub: &str, classes: Option<&[String]>, hint: &str) -> Result<FileList> {
    let found: Vec<String> = sorted_entries(root, hint)?
        .iter()
        .filter(|p| p.is_dir())
        .map(|p| name(p))
        .collect();
    let classes: Vec<String> = classes.map(<[String]>::to_vec).unwrap_or(found.clone());
    if classes.is_empty() {
        return Err(corrupt(root, "no class folders", hint));
    }
    let mut list = FileList {
        classes: classes.clone(),
        ..FileList::default()
    };
    for class in &found {
        let Some(label) = classes.iter().position(|c| c == class) else {
            return Err(corrupt(
                &root.join(class),
                format!("class `{class}` is not one of the training classes"),
                hint,
            ));
        };
        let images = images_in(&root.join(class).join(sub), hint)?;
        if images.is_empty() {
            // torchvision's ImageFolder refuses a class without images, as a class the model
            // can never see would be.
            return Err(corrupt(
                &root.join(class).join(sub),
                format!("class folder `{class}` has no JPEG or PNG images"),
                hint,
            ));
        }
        for f in images {
            list.files.push(f);
            list.labels.push(label as i64);
        }
    }
    if list.is_empty() {
        return Err(corrupt(root, "no JPEG or PNG images in the class folders", hint));
    }
    Ok(list)
}

/// torchvision's ImageFolder layout: `dir/train/<class>/*`, `dir/val/<class>/*` and, when present,
/// `dir/test/<class>/*`; classes are the training folders sorted by name.
pub fn image_folder(dir: &Path) -> Result<FolderSplits> {
    let train = class_folders(&dir.join("train"), "", None, HINT_FOLDER)?;
    let val = class_folders(&dir.join("val"), "", Some(&train.classes), HINT_FOLDER)?;
    let test = if dir.join("test").is_dir() {
        Some(class_folders(&dir.join("test"), "", Some(&train.classes), HINT_FOLDER)?)
    } else {
        None
    };
    Ok(FolderSplits { train, val, test })
}

/// Tiny-ImageNet as distributed (tiny-imagenet-200): `train/<wnid>/images/*.JPEG` and
/// `val/images/*.JPEG` labelled by `val/val_annotations.txt` (file, wnid, box; tab-separated).
/// Its test split has no labels, so `test` is None: the official validation set is the test set.
pub fn tiny_imagenet(dir: &Path) -> Result<FolderSplits> {
    let train = class_folders(&dir.join("train"), "images", None, HINT_TINY)?;
    let annotations = dir.join("val").join("val_annotations.txt");
    let text = super::read_file(&annotations, HINT_TINY)?;
    let mut val = FileList {
        classes: train.classes.clone(),
        ..FileList::default()
    };
    let mut labelled: BTreeMap<String, i64> = BTreeMap::new();
    for (no, line) in String::from_utf8_lossy(&text).lines().enumerate() {
        let mut cells = line.split('\t');
        let (Some(file), Some(wnid)) = (cells.next(), cells.next()) else {
            if line.trim().is_empty() {
                continue;
            }
            return Err(corrupt(&annotations, format!("line {}: `{line}`", no + 1), HINT_TINY));
        };
        let label = train.classes.binary_search(&wnid.to_string()).map_err(|_| {
            corrupt(
                &annotations,
                format!("line {}: unknown class `{wnid}`", no + 1),
                HINT_TINY,
            )
        })?;
        labelled.insert(file.to_string(), label as i64);
    }
    for (file, label) in labelled {
        val.files.push(dir.join("val").join("images").join(file));
        val.labels.push(label);
    }
    if val.is_empty() {
        return Err(corrupt(&annotations, "no annotated validation images", HINT_TINY));
    }
    Ok(FolderSplits { train, val, test: None })
}

/// ILSVRC-2012 (ImageNet-1k): `train/<wnid>/*.JPEG`; the validation set read from either
/// `val/<wnid>/*.JPEG` (class folders, the layout valprep.sh or torchvision's ImageNet leave) or,
/// when `val/` holds the images directly, `LOC_val_solution.csv` (Kaggle's: `ImageId,PredictionString`
/// with the wnid first) in `dir`. The labelled validation set is the test set (`test` None), as in
/// the paper; the test set's labels are not public.
pub fn imagenet(dir: &Path) -> Result<FolderSplits> {
    let train = class_folders(&dir.join("train"), "", None, HINT_IMAGENET)?;
    let val_dir = dir.join("val");
    let has_class_folders = sorted_entries(&val_dir, HINT_IMAGENET)?.iter().any(|p| p.is_dir());
    let val = if has_class_folders {
        class_folders(&val_dir, "", Some(&train.classes), HINT_IMAGENET)?
    } else {
        let csv = dir.join("LOC_val_solution.csv");
        let text = super::read_file(&csv, HINT_IMAGENET)?;
        let mut labelled = BTreeMap::new();
        for (no, line) in String::from_utf8_lossy(&text).lines().enumerate().skip(1) {
            let Some((id, prediction)) = line.split_once(',') else {
                continue;
            };
            let wnid = prediction.split_whitespace().next().unwrap_or("");
            let label = train
                .classes
                .binary_search(&wnid.to_string())
                .map_err(|_| corrupt(&csv, format!("line {}: unknown class `{wnid}`", no + 1), HINT_IMAGENET))?;
            labelled.insert(id.trim().to_string(), label as i64);
        }
        let mut val = FileList {
            classes: train.classes.clone(),
            ..FileList::default()
        };
        for (id, label) in labelled {
            val.files.push(val_dir.join(format!("{id}.JPEG")));
            val.labels.push(label);
        }
        val
    };
    if val.is_empty() {
        return Err(corrupt(&val_dir, "no labelled validation images", HINT_IMAGENET));
    }
    Ok(FolderSplits { train, val, test: None })
}

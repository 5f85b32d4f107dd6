//! The parallel decode pipeline of image folders: worker threads decode JPEG/PNG files (JPEG by
//! zune-jpeg, PNG through the `image` crate; zune-jpeg measured as fast as Pillow's libjpeg-turbo,
//! and a quarter faster called directly than through `image`), apply torchvision's training transforms (RandomResizedCrop,
//! scale 0.08-1, ratio 3/4-4/3, then a horizontal flip with probability 1/2) or its evaluation
//! transforms (resize the shorter side, centre crop), and write u8 RGB into their slots of one
//! `[B, 3, S, S]` batch buffer. Each sample's crop and flip come from its own generator, seeded by
//! the caller per position, so a batch is the same bytes whatever the number of threads; a
//! bounded queue ([`Loader`]) decodes the next batches while the current one trains. The u8 batch
//! goes to the device as it is: `ops::mixup::mixup_u8` normalises and mixes it in one pass.
//!
//! Resampling is PIL's (what torchvision runs on PIL images): a separable triangle (bilinear)
//! filter whose support widens with the downscale factor (antialiasing), over the crop box only.

use std::collections::BTreeSet;
use std::path::{Path, PathBuf};
use std::sync::mpsc::{self, Receiver};
use std::sync::{Arc, Mutex};

use serde::{Deserialize, Serialize};
use tch::Tensor;

use super::folder::FileList;
use super::ImageSet;
use crate::error::{Error, Result};
use enlighten::SeededRng;

/// What a corrupt or truncated image file does.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum OnBadFile {
    /// An error naming the file.
    #[default]
    Error,
    /// Left out (evaluation sets) or replaced by the next readable file of the list (training
    /// batches, which keep their size); counted in [`ImageSource::skipped`].
    Skip,
}

/// torchvision's transforms, as the pipeline applies them.
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum Transform {
    /// RandomResizedCrop(size, scale, ratio) then RandomHorizontalFlip(0.5) when `flip`.
    Train {
        size: usize,
        scale: (f64, f64),
        ratio: (f64, f64),
        flip: bool,
    },
    /// Resize(resize) (the shorter side) then CenterCrop(size).
    Eval { size: usize, resize: usize },
}

impl Transform {
    /// torchvision's ImageNet training transform at `size`: scale 0.08-1, ratio 3/4-4/3, flips.
    pub fn train(size: usize) -> Transform {
        Transform::Train {
            size,
            scale: (0.08, 1.0),
            ratio: (3.0 / 4.0, 4.0 / 3.0),
            flip: true,
        }
    }

    /// torchvision's evaluation transform at `size`: the shorter side to size / 0.875 (256 for
    /// 224), then the centre `size` x `size`.
    pub fn eval(size: usize) -> Transform {
        Transform::Eval {
            size,
            resize: (size as f64 / 0.875).round() as usize,
        }
    }

    pub fn size(&self) -> usize {
        match *self {
            Transform::Train { size, .. } | Transform::Eval { size, .. } => size,
        }
    }
}

/// A decoded image: RGB u8, row-major `[h, w, 3]`.
#[derive(Debug, Clone)]
pub struct Rgb {
    pub width: usize,
    pub height: usize,
    pub pixels: Vec<u8>,
}

/// Decodes a JPEG or PNG file (the format from its bytes) to RGB: grayscale, grey + alpha, RGBA
/// (alpha dropped), 16-bit and CMYK images become 8-bit RGB. A corrupt or truncated file is an
/// [`Error::Data`] naming it (a JPEG without its end-of-image marker after the scan is
/// truncated: the decoder would fill the missing part with grey), and so is a file whose header
/// claims more than [`MAX_IMAGE_PIXELS`](super::MAX_IMAGE_PIXELS) pixels.
pub fn decode_rgb(path: &Path) -> Result<Rgb> {
    decode_rgb_within(path, super::MAX_IMAGE_PIXELS)
}

/// [`decode_rgb`] with a pixel limit of `max_pixels`, checked from the header before the
/// decoder allocates anything.
pub fn decode_rgb_within(path: &Path, max_pixels: u64) -> Result<Rgb> {
    let bytes = super::read_file(path, "a readable JPEG or PNG image")?;
    super::limits::check_bytes(path, &bytes, max_pixels)?;
    if bytes.starts_with(&[0xFF, 0xD8]) && !jpeg_complete(&bytes) {
        return Err(bad(
            path,
            "a truncated JPEG (no end-of-image marker after its scan)".into(),
        ));
    }
    if bytes.starts_with(&[0xFF, 0xD8]) {
        return decode_jpeg(path, &bytes);
    }
    let image = image::load_from_memory(&bytes).map_err(|e| bad(path, e.to_string()))?;
    let rgb = image.to_rgb8();
    let (width, height) = (rgb.width() as usize, rgb.height() as usize);
    if width == 0 || height == 0 {
        return Err(bad(path, "an empty image".into()));
    }
    Ok(Rgb {
        width,
        height,
        pixels: rgb.into_raw(),
    })
}

/// A JPEG straight to RGB with zune-jpeg (what `image` wraps, without its copies): grey, YCbCr,
/// CMYK and YCCK are converted by the decoder.
fn decode_jpeg(path: &Path, bytes: &[u8]) -> Result<Rgb> {
    let options = zune_core::options::DecoderOptions::default()
        .jpeg_set_out_colorspace(zune_core::colorspace::ColorSpace::RGB)
        .set_max_width(usize::from(u16::MAX))
        .set_max_height(usize::from(u16::MAX));
    let mut decoder = zune_jpeg::JpegDecoder::new_with_options(zune_core::bytestream::ZCursor::new(bytes), options);
    let pixels = decoder.decode().map_err(|e| bad(path, format!("{e:?}")))?;
    let (width, height) = decoder.dimensions().unwrap_or((0, 0));
    if width == 0 || height == 0 || pixels.len() != width * height * 3 {
        return Err(bad(path, format!("{} bytes for {width} x {height} RGB", pixels.len())));
    }
    Ok(Rgb { width, height, pixels })
}

/// Whether a JPEG's last end-of-image marker (FF D9) follows its last start-of-scan (FF DA): the
/// decoder fills a cut-off scan with grey instead of failing, so truncation is checked here.
fn jpeg_complete(bytes: &[u8]) -> bool {
    let last = |marker: u8| bytes.windows(2).rposition(|w| w == [0xFF, marker]);
    matches!((last(0xDA), last(0xD9)), (Some(sos), Some(eoi)) if eoi > sos)
}

fn bad(path: &Path, problem: String) -> Error {
    Error::Data {
        path: path.to_path_buf(),
        problem: format!("not a decodable image: {problem}"),
        hint: "replace or delete the file, or set data.on_bad_file = \"skip\"".into(),
    }
}

/// A crop box in source pixels: left, top, width, height (fractional for evaluation's resize).
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct CropBox {
    pub x: f64,
    pub y: f64,
    pub w: f64,
    pub h: f64,
}

/// torchvision's `RandomResizedCrop.get_params` (Python's round, half to even): ten tries of an area share in `scale` and a
/// log-uniform aspect ratio in `ratio`, rounded to pixels, at a uniform position; else the
/// centre crop clamped to the ratio range.
pub fn random_resized_crop(
    width: usize,
    height: usize,
    scale: (f64, f64),
    ratio: (f64, f64),
    rng: &mut SeededRng,
) -> CropBox {
    let (wf, hf) = (width as f64, height as f64);
    let area = wf * hf;
    let (log_lo, log_hi) = (ratio.0.ln(), ratio.1.ln());
    for _ in 0..10 {
        let target = area * (scale.0 + (scale.1 - scale.0) * rng.uniform());
        let aspect = (log_lo + (log_hi - log_lo) * rng.uniform()).exp();
        let w = (target * aspect).sqrt().round_ties_even() as usize;
        let h = (target / aspect).sqrt().round_ties_even() as usize;
        if 0 < w && w <= width && 0 < h && h <= height {
            let y = rng.below((height - h + 1) as u64) as f64;
            let x = rng.below((width - w + 1) as u64) as f64;
            return CropBox {
                x,
                y,
                w: w as f64,
                h: h as f64,
            };
        }
    }
    let in_ratio = wf / hf;
    let (w, h) = if in_ratio < ratio.0 {
        (width, ((wf / ratio.0).round_ties_even() as usize).min(height))
    } else if in_ratio > ratio.1 {
        (((hf * ratio.1).round_ties_even() as usize).min(width), height)
    } else {
        (width, height)
    };
    CropBox {
        x: ((width - w) / 2) as f64,
        y: ((height - h) / 2) as f64,
        w: w as f64,
        h: h as f64,
    }
}

/// Resize's shorter side to `resize` then the centre `size` square, as one box of the source:
/// torchvision's long side is `int(resize * long / short)`, the crop's corner
/// `round((resized - size) / 2)`.
pub fn center_crop_box(width: usize, height: usize, size: usize, resize: usize) -> CropBox {
    let short = width.min(height) as f64;
    let long = width.max(height) as f64;
    let resized_long = (resize as f64 * long / short).floor();
    let (rw, rh) = if width <= height {
        (resize as f64, resized_long)
    } else {
        (resized_long, resize as f64)
    };
    let (sx, sy) = (width as f64 / rw, height as f64 / rh);
    let left = ((rw - size as f64) / 2.0).round_ties_even();
    let top = ((rh - size as f64) / 2.0).round_ties_even();
    CropBox {
        x: left * sx,
        y: top * sy,
        w: size as f64 * sx,
        h: size as f64 * sy,
    }
}

/// One axis of PIL's resampling: for each output position, the first source index and the
/// normalised triangle-filter weights (support scaled by the downscale factor).
fn coefficients(in_size: usize, start: f64, span: f64, out: usize) -> Vec<(usize, Vec<f32>)> {
    let scale = span / out as f64;
    let filterscale = scale.max(1.0);
    let support = filterscale;
    (0..out)
        .map(|i| {
            let center = start + (i as f64 + 0.5) * scale;
            let lo = ((center - support + 0.5).floor().max(0.0)) as usize;
            let hi = ((center + support + 0.5).floor() as usize).min(in_size).max(lo + 1);
            let mut w: Vec<f64> = (lo..hi)
                .map(|x| (1.0 - ((x as f64 - center + 0.5) / filterscale).abs()).max(0.0))
                .collect();
            let total: f64 = w.iter().sum();
            if total > 0.0 {
                w.iter_mut().for_each(|v| *v /= total);
            } else {
                w.iter_mut().for_each(|v| *v = 0.0);
                w[0] = 1.0;
            }
            (lo.min(in_size - 1), w.into_iter().map(|v| v as f32).collect())
        })
        .collect()
}

/// Resamples `crop` of `src` to `size` x `size` into `out` (planar `[3, size, size]`), mirrored
/// left-right when `flip`.
pub fn resize_crop_into(src: &Rgb, crop: CropBox, size: usize, flip: bool, out: &mut [u8]) {
    let cx = coefficients(src.width, crop.x, crop.w, size);
    let cy = coefficients(src.height, crop.y, crop.h, size);
    let row_lo = cy.iter().map(|c| c.0).min().unwrap_or(0);
    let row_hi = cy.iter().map(|c| c.0 + c.1.len()).max().unwrap_or(0).min(src.height);
    // Horizontal pass over the rows the vertical pass reads: [rows, size, 3] in f32.
    let mut tmp = vec![0f32; (row_hi - row_lo) * size * 3];
    for (r, y) in (row_lo..row_hi).enumerate() {
        let line = &src.pixels[y * src.width * 3..(y + 1) * src.width * 3];
        let dst = &mut tmp[r * size * 3..(r + 1) * size * 3];
        for (o, (x0, w)) in cx.iter().enumerate() {
            let mut acc = [0f32; 3];
            for (k, &wk) in w.iter().enumerate() {
                let p = &line[(x0 + k) * 3..(x0 + k) * 3 + 3];
                acc[0] += wk * p[0] as f32;
                acc[1] += wk * p[1] as f32;
                acc[2] += wk * p[2] as f32;
            }
            dst[o * 3..o * 3 + 3].copy_from_slice(&acc);
        }
    }
    let plane = size * size;
    for (oy, (y0, w)) in cy.iter().enumerate() {
        for ox in 0..size {
            let mut acc = [0f32; 3];
            for (k, &wk) in w.iter().enumerate() {
                let t = &tmp[((y0 + k - row_lo) * size + ox) * 3..][..3];
                acc[0] += wk * t[0];
                acc[1] += wk * t[1];
                acc[2] += wk * t[2];
            }
            let x = if flip { size - 1 - ox } else { ox };
            for (c, v) in acc.iter().enumerate() {
                out[c * plane + oy * size + x] = (v + 0.5).clamp(0.0, 255.0) as u8;
            }
        }
    }
}

/// Decodes `path` (at most `max_pixels`, [`decode_rgb_within`]) and transforms it into `out`
/// (`[3, S, S]` u8) with the sample's generator.
pub fn load_sample(path: &Path, transform: &Transform, seed: u64, out: &mut [u8], max_pixels: u64) -> Result<()> {
    let img = decode_rgb_within(path, max_pixels)?;
    match *transform {
        Transform::Train {
            size,
            scale,
            ratio,
            flip,
        } => {
            let mut rng = SeededRng::new(seed);
            let crop = random_resized_crop(img.width, img.height, scale, ratio, &mut rng);
            let mirrored = flip && rng.uniform() < 0.5;
            resize_crop_into(&img, crop, size, mirrored, out);
        }
        Transform::Eval { size, resize } => {
            resize_crop_into(
                &img,
                center_crop_box(img.width, img.height, size, resize),
                size,
                false,
                out,
            );
        }
    }
    Ok(())
}

/// The seed of the sample at `position` of a batch stream seeded by `seed` (a splitmix64 step,
/// so neighbouring positions get unrelated generators).
pub fn sample_seed(seed: u64, position: u64) -> u64 {
    let mut z = seed ^ position.wrapping_mul(0x9E37_79B9_7F4A_7C15);
    z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
    z ^ (z >> 31)
}

/// Files, a transform and a number of worker threads: batches of u8 images on request.
#[derive(Debug)]
pub struct ImageSource {
    pub list: FileList,
    pub transform: Transform,
    pub workers: usize,
    pub on_bad_file: OnBadFile,
    /// Images whose header claims more pixels are bad files.
    pub max_pixels: u64,
    skipped: Mutex<BTreeSet<PathBuf>>,
}

/// One batch's slots: where the worker writes, what it writes there.
struct Slot<'a> {
    row: usize,
    seed: u64,
    pixels: &'a mut [u8],
    label: &'a mut i64,
    ok: &'a mut bool,
}

impl ImageSource {
    /// `workers` 0 means one per core.
    pub fn new(list: FileList, transform: Transform, workers: usize, on_bad_file: OnBadFile) -> ImageSource {
        let workers = if workers == 0 {
            std::thread::available_parallelism().map_or(1, |n| n.get())
        } else {
            workers
        };
        ImageSource {
            list,
            transform,
            workers,
            on_bad_file,
            max_pixels: super::MAX_IMAGE_PIXELS,
            skipped: Mutex::new(BTreeSet::new()),
        }
    }

    /// The same source with a pixel limit of `max_pixels` (`data.max_image_pixels`).
    pub fn with_max_pixels(mut self, max_pixels: u64) -> ImageSource {
        self.max_pixels = max_pixels;
        self
    }

    /// Reads every file's header (no pixel data), on the worker threads: the first bad file in
    /// list order is an error naming it (not a regular file, no JPEG or PNG header, or over the
    /// pixel limit). Run before training in error mode, so a bad file fails the run at start-up.
    pub fn check_headers(&self) -> Result<()> {
        let next = std::sync::atomic::AtomicUsize::new(0);
        let first_bad: Mutex<Option<(usize, Error)>> = Mutex::new(None);
        let threads = self.workers.min(self.len()).max(1);
        std::thread::scope(|scope| {
            for _ in 0..threads {
                scope.spawn(|| loop {
                    let i = next.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
                    let Some(path) = self.list.files.get(i) else { break };
                    if let Err(e) = super::check_header(path, self.max_pixels) {
                        if let Ok(mut bad) = first_bad.lock() {
                            if bad.as_ref().is_none_or(|(j, _)| i < *j) {
                                *bad = Some((i, e));
                            }
                        }
                    }
                });
            }
        });
        match first_bad.into_inner().ok().flatten() {
            Some((_, e)) => Err(e),
            None => Ok(()),
        }
    }

    pub fn len(&self) -> usize {
        self.list.len()
    }

    pub fn is_empty(&self) -> bool {
        self.list.is_empty()
    }

    /// The bad files met so far (with `on_bad_file = "skip"`).
    pub fn skipped(&self) -> Vec<PathBuf> {
        self.skipped
            .lock()
            .map(|s| s.iter().cloned().collect())
            .unwrap_or_default()
    }

    /// The images at `rows` with the sample generators `seeds`: u8 `[B, 3, S, S]` and int64
    /// labels `[B]`. A bad file is an error, or (skip) replaced by the next readable one.
    pub fn batch(&self, rows: &[i64], seeds: &[u64]) -> Result<(Tensor, Tensor)> {
        let (pixels, labels, _) = self.decode(rows, seeds, true)?;
        let s = self.transform.size() as i64;
        Ok((
            Tensor::from_slice(&pixels).view([rows.len() as i64, 3, s, s]),
            Tensor::from_slice(&labels),
        ))
    }

    /// Every image of the list, transformed and held in memory (evaluation sets: 10,000 x 64 x 64
    /// x 3 bytes for Tiny-ImageNet, 7.5 GB for ImageNet's 50,000 at 224); bad files are an error
    /// or (skip) left out.
    pub fn decode_all(&self) -> Result<ImageSet> {
        let rows: Vec<i64> = (0..self.len() as i64).collect();
        let seeds: Vec<u64> = (0..self.len() as u64).collect();
        let (pixels, labels, ok) = self.decode(&rows, &seeds, false)?;
        let per = 3 * self.transform.size() * self.transform.size();
        let keep: Vec<usize> = (0..rows.len()).filter(|&i| ok[i]).collect();
        let mut kept = Vec::with_capacity(keep.len() * per);
        for &i in &keep {
            kept.extend_from_slice(&pixels[i * per..(i + 1) * per]);
        }
        let s = self.transform.size() as i64;
        Ok(ImageSet {
            images: Tensor::from_slice(&kept).view([keep.len() as i64, 3, s, s]),
            labels: Tensor::from_slice(&keep.iter().map(|&i| labels[i]).collect::<Vec<_>>()),
            classes: self.list.classes.len() as i64,
        })
    }

    fn decode(&self, rows: &[i64], seeds: &[u64], substitute: bool) -> Result<(Vec<u8>, Vec<i64>, Vec<bool>)> {
        let per = 3 * self.transform.size() * self.transform.size();
        let mut pixels = vec![0u8; rows.len() * per];
        let mut labels = vec![0i64; rows.len()];
        let mut ok = vec![false; rows.len()];
        let slots: Vec<Slot> = pixels
            .chunks_mut(per)
            .zip(labels.iter_mut())
            .zip(ok.iter_mut())
            .enumerate()
            .map(|(i, ((pixels, label), ok))| Slot {
                row: rows[i] as usize,
                seed: seeds[i],
                pixels,
                label,
                ok,
            })
            .collect();
        let queue = Mutex::new(slots.into_iter());
        let failed: Mutex<Option<Error>> = Mutex::new(None);
        let threads = self.workers.min(rows.len()).max(1);
        std::thread::scope(|scope| {
            for _ in 0..threads {
                scope.spawn(|| loop {
                    let slot = queue.lock().ok().and_then(|mut q| q.next());
                    let Some(slot) = slot else { break };
                    if let Err(e) = self.fill(slot, substitute) {
                        if let Ok(mut f) = failed.lock() {
                            f.get_or_insert(e);
                        }
                    }
                });
            }
        });
        if let Some(e) = failed.into_inner().ok().flatten() {
            return Err(e);
        }
        Ok((pixels, labels, ok))
    }

    /// Decodes one slot's file; with skip, the next readable files of the list stand in
    /// (substitute) or the slot is marked bad.
    fn fill(&self, slot: Slot, substitute: bool) -> Result<()> {
        let n = self.list.len();
        let tries = if substitute { n.min(64) } else { 1 };
        for k in 0..tries {
            let row = (slot.row + k) % n;
            let path = &self.list.files[row];
            match load_sample(path, &self.transform, slot.seed, slot.pixels, self.max_pixels) {
                Ok(()) => {
                    *slot.label = self.list.labels[row];
                    *slot.ok = true;
                    return Ok(());
                }
                Err(e) if self.on_bad_file == OnBadFile::Error => return Err(e),
                Err(_) => {
                    if let Ok(mut s) = self.skipped.lock() {
                        s.insert(path.clone());
                    }
                }
            }
        }
        if substitute {
            return Err(Error::Data {
                path: self.list.files[slot.row].clone(),
                problem: format!("this file and the {} after it are not decodable", tries - 1),
                hint: "check the image folder".into(),
            });
        }
        Ok(())
    }
}

/// A bounded prefetch queue: a thread asks `source` for the batches of `order` (consecutive
/// `batch`-row slices; sample k of the stream gets `sample_seed(seed, k)`) and keeps up to
/// `depth` ready.
pub struct Loader {
    rx: Receiver<Result<(Tensor, Tensor)>>,
}

impl Loader {
    pub fn new(source: Arc<ImageSource>, order: Vec<i64>, batch: usize, seed: u64, depth: usize) -> Loader {
        let (tx, rx) = mpsc::sync_channel(depth.max(1));
        std::thread::spawn(move || {
            for (b, rows) in order.chunks(batch).enumerate() {
                let seeds: Vec<u64> = (0..rows.len())
                    .map(|k| sample_seed(seed, (b * batch + k) as u64))
                    .collect();
                if tx.send(source.batch(rows, &seeds)).is_err() {
                    break;
                }
            }
        });
        Loader { rx }
    }
}

impl Iterator for Loader {
    type Item = Result<(Tensor, Tensor)>;

    fn next(&mut self) -> Option<Self::Item> {
        self.rx.recv().ok()
    }
}

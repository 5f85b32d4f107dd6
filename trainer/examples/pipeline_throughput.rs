//! The image pipeline's throughput on its own (no model): decode, torchvision's training
//! transforms, u8 batches through the bounded prefetch queue.
//!
//!   pipeline_throughput make DIR [PER_CLASS]   an ImageNet-sized JPEG folder from Fashion-MNIST
//!   pipeline_throughput run DIR WORKERS [EPOCHS] images per second over DIR/train
//!
//! `make` writes DIR/train/<class>/<k>.JPEG: 500 x 375 RGB mosaics of Fashion-MNIST pictures
//! (scaled, tinted, with sensor-like noise so the files weigh what ImageNet's do, ~110 KB at
//! quality 90). `scripts/pipeline-throughput` runs both sides of the comparison with torchvision.

use std::path::Path;
use std::sync::Arc;
use std::time::Instant;

use enlighten::SeededRng;
use enlighten_trainer::data::{fashion_mnist, image_folder, ImageSource, Loader, OnBadFile, Transform};

type Res = Result<(), Box<dyn std::error::Error>>;

fn make(dir: &Path, per_class: usize) -> Res {
    let (train, _) = fashion_mnist(&enlighten_trainer::data::data_dir().join("fashion-mnist"))?;
    let pixels = Vec::<u8>::try_from(train.images.reshape([-1])).unwrap_or_default();
    let labels = Vec::<i64>::try_from(&train.labels).unwrap_or_default();
    let mut rng = SeededRng::new(2026);
    let (w, h) = (500u32, 375u32);
    let mut bytes = 0usize;
    for class in 0..10 {
        let of_class: Vec<usize> = (0..labels.len()).filter(|&i| labels[i] == class).collect();
        let folder = dir.join("train").join(format!("class{class:02}"));
        std::fs::create_dir_all(&folder)?;
        for k in 0..per_class {
            // A 4 x 3 grid of the class's pictures, each scaled to its cell and tinted.
            let pick: Vec<usize> = (0..12)
                .map(|_| of_class[rng.below(of_class.len() as u64) as usize])
                .collect();
            let tints: Vec<[f64; 3]> = (0..12).map(|_| [rng.uniform(), rng.uniform(), rng.uniform()]).collect();
            let img = image::RgbImage::from_fn(w, h, |x, y| {
                let (cell, cx, cy) = ((y / 125 * 4 + x / 125) as usize, x % 125, y % 125);
                let v = pixels[pick[cell] * 784 + (cy * 28 / 125 * 28 + cx * 28 / 125) as usize] as f64;
                let t = tints[cell];
                let mut px = |c: usize| {
                    (v * (0.4 + 0.6 * t[c]) + 30.0 * t[(c + 1) % 3] + 6.0 * rng.normal()).clamp(0.0, 255.0) as u8
                };
                image::Rgb([px(0), px(1), px(2)])
            });
            let path = folder.join(format!("{k:04}.JPEG"));
            let mut out = std::io::BufWriter::new(std::fs::File::create(&path)?);
            image::codecs::jpeg::JpegEncoder::new_with_quality(&mut out, 90).encode_image(&img)?;
            drop(out);
            bytes += std::fs::metadata(&path).map(|m| m.len() as usize).unwrap_or(0);
            if k == 0 {
                // One validation image a class, so the folder has torchvision's full layout.
                let val = dir.join("val").join(format!("class{class:02}"));
                std::fs::create_dir_all(&val)?;
                std::fs::copy(&path, val.join("0000.JPEG"))?;
            }
        }
    }
    let n = 10 * per_class;
    println!(
        "wrote {n} training JPEGs of {w}x{h} into {}, {:.0} KB each on average",
        dir.display(),
        bytes as f64 / n as f64 / 1024.0
    );
    Ok(())
}

fn run(dir: &Path, workers: usize, epochs: usize) -> Res {
    let list = image_folder(dir)?.train;
    let n = list.len();
    let source = Arc::new(ImageSource::new(list, Transform::train(224), workers, OnBadFile::Error));
    let batch = 64;
    let mut order = Vec::new();
    for e in 0..epochs as u64 {
        order.extend(SeededRng::new(e).permutation(n));
    }
    let mut loader = Loader::new(source, order, batch, 7, 2);
    // The first batch warms the page cache and the threads; time the rest.
    let first = loader.next().transpose()?.map_or(0, |b| b.0.size()[0] as usize);
    let start = Instant::now();
    let mut images = 0usize;
    for b in loader {
        images += b?.0.size()[0] as usize;
    }
    let s = start.elapsed().as_secs_f64();
    println!(
        "enlighten workers={workers} images={images} (+{first} warm-up) seconds={s:.2} images_per_second={:.1} per_worker={:.1}",
        images as f64 / s,
        images as f64 / s / workers as f64
    );
    Ok(())
}

/// Single-thread split of one image's cost: decoding alone, then decoding with the transform.
fn parts(dir: &Path) -> Res {
    let list = image_folder(dir)?.train;
    let files = &list.files[..200.min(list.len())];
    let start = Instant::now();
    for f in files {
        enlighten_trainer::data::decode_rgb(f)?;
    }
    let decode = start.elapsed().as_secs_f64() / files.len() as f64;
    let mut out = vec![0u8; 3 * 224 * 224];
    let start = Instant::now();
    for (k, f) in files.iter().enumerate() {
        enlighten_trainer::data::load_sample(
            f,
            &Transform::train(224),
            k as u64,
            &mut out,
            enlighten_trainer::data::MAX_IMAGE_PIXELS,
        )?;
    }
    let all = start.elapsed().as_secs_f64() / files.len() as f64;
    println!(
        "per image: decode {:.2} ms, decode + crop/resize/flip {:.2} ms",
        decode * 1e3,
        all * 1e3
    );
    Ok(())
}

fn main() -> Res {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let dir = Path::new(args.get(1).map(String::as_str).unwrap_or("bench-images"));
    let num = |i: usize, default: usize| args.get(i).and_then(|a| a.parse().ok()).unwrap_or(default);
    match args.first().map(String::as_str) {
        Some("make") => make(dir, num(2, 100)),
        Some("run") => run(dir, num(2, 1), num(3, 2)),
        Some("parts") => parts(dir),
        _ => {
            eprintln!("usage: pipeline_throughput make DIR [PER_CLASS] | run DIR WORKERS [EPOCHS]");
            Ok(())
        }
    }
}

//! Image folders written by the tests: real JPEG and PNG files (RGB, grayscale, RGBA) of three
//! learnable classes (horizontal stripes, vertical stripes, a disc) in noisy, varied sizes, in
//! torchvision's ImageFolder layout and in Tiny-ImageNet's.

use std::path::Path;

use enlighten::SeededRng;
use image::{DynamicImage, GrayImage, RgbImage, RgbaImage};

pub const CLASSES: [&str; 3] = ["disc", "rows", "columns"];

/// Class `class` (index into `CLASSES`) at `w` x `h`, with per-pixel noise.
pub fn picture(class: usize, w: u32, h: u32, rng: &mut SeededRng) -> RgbImage {
    let period = 4 + rng.below(4) as u32;
    let (cx, cy, r) = (w as f64 / 2.0, h as f64 / 2.0, w.min(h) as f64 / 3.0);
    let tint = [rng.below(80) as u8, rng.below(80) as u8, rng.below(80) as u8];
    RgbImage::from_fn(w, h, |x, y| {
        let on = match CLASSES[class] {
            "disc" => ((x as f64 - cx).powi(2) + (y as f64 - cy).powi(2)).sqrt() < r,
            "rows" => (y / period) % 2 == 0,
            _ => (x / period) % 2 == 0,
        };
        let base = if on { 200 } else { 40 };
        let mut px = |t: u8| (base as f64 + t as f64 * 0.5 + 20.0 * rng.normal()).clamp(0.0, 255.0) as u8;
        image::Rgb([px(tint[0]), px(tint[1]), px(tint[2])])
    })
}

/// Saves `img` as the `k`-th file of a folder: JPEG RGB, PNG RGBA, JPEG grayscale, PNG RGB in turn.
pub fn save(img: RgbImage, dir: &Path, stem: &str, k: usize) -> std::path::PathBuf {
    std::fs::create_dir_all(dir).unwrap();
    let (path, image) = match k % 4 {
        0 => (dir.join(format!("{stem}.JPEG")), DynamicImage::ImageRgb8(img)),
        1 => (
            dir.join(format!("{stem}.png")),
            DynamicImage::ImageRgba8(RgbaImage::from_fn(img.width(), img.height(), |x, y| {
                let p = img.get_pixel(x, y).0;
                image::Rgba([p[0], p[1], p[2], 128])
            })),
        ),
        2 => (
            dir.join(format!("{stem}.jpg")),
            DynamicImage::ImageLuma8(GrayImage::from_fn(img.width(), img.height(), |x, y| {
                let p = img.get_pixel(x, y).0;
                image::Luma([((p[0] as u32 + p[1] as u32 + p[2] as u32) / 3) as u8])
            })),
        ),
        _ => (dir.join(format!("{stem}.png")), DynamicImage::ImageRgb8(img)),
    };
    image.save(&path).unwrap();
    path
}

fn size(rng: &mut SeededRng) -> (u32, u32) {
    (36 + rng.below(30) as u32, 36 + rng.below(30) as u32)
}

/// `root/<split>/<class>/<n>.<ext>` with `per_class` images per class for each (split, per_class).
pub fn write_image_folder(root: &Path, splits: &[(&str, usize)], seed: u64) {
    let mut rng = SeededRng::new(seed);
    for &(split, per_class) in splits {
        for (c, class) in CLASSES.iter().enumerate() {
            for k in 0..per_class {
                let (w, h) = size(&mut rng);
                save(
                    picture(c, w, h, &mut rng),
                    &root.join(split).join(class),
                    &format!("{class}_{k}"),
                    k,
                );
            }
        }
    }
}

/// Tiny-ImageNet's layout: `train/<wnid>/images/<wnid>_<k>.JPEG` (with the `<wnid>_boxes.txt` it
/// ships), `val/images/val_<k>.JPEG` listed in `val/val_annotations.txt`, an unlabelled `test/`.
pub fn write_tiny_imagenet(root: &Path, per_class: usize, val: usize, seed: u64) -> Vec<String> {
    let mut rng = SeededRng::new(seed);
    let wnids: Vec<String> = (0..CLASSES.len()).map(|c| format!("n0{}", 1_000_000 + c * 7)).collect();
    for (c, wnid) in wnids.iter().enumerate() {
        let dir = root.join("train").join(wnid);
        for k in 0..per_class {
            let (w, h) = size(&mut rng);
            std::fs::create_dir_all(dir.join("images")).unwrap();
            picture(c, w, h, &mut rng)
                .save(dir.join("images").join(format!("{wnid}_{k}.JPEG")))
                .unwrap();
        }
        std::fs::write(dir.join(format!("{wnid}_boxes.txt")), "").unwrap();
    }
    let images = root.join("val").join("images");
    std::fs::create_dir_all(&images).unwrap();
    let mut annotations = String::new();
    for k in 0..val {
        let c = k % CLASSES.len();
        let (w, h) = size(&mut rng);
        picture(c, w, h, &mut rng)
            .save(images.join(format!("val_{k}.JPEG")))
            .unwrap();
        annotations.push_str(&format!("val_{k}.JPEG\t{}\t0\t0\t{w}\t{h}\n", wnids[c]));
    }
    std::fs::write(root.join("val").join("val_annotations.txt"), annotations).unwrap();
    std::fs::create_dir_all(root.join("test").join("images")).unwrap();
    wnids
}

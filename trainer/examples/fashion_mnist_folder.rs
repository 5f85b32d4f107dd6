//! Writes Fashion-MNIST as torchvision's ImageFolder layout of 32x32 JPEGs: `OUT/train/<class>/`
//! and `OUT/val/<class>/`, TOTAL images (default 4,000) shared evenly over the 10 classes, 80%
//! of them under train/ and 20% under val/, each 28x28 image centred on a black 32x32 canvas.
//! The images come from `scripts/setup --data` (enlighten_trainer::data::data_dir()/fashion-mnist).
//!
//!     cargo run --release -p enlighten-trainer --example fashion_mnist_folder -- OUT [TOTAL]

use std::path::{Path, PathBuf};

use enlighten_trainer::data::{data_dir, fashion_mnist};
use image::GrayImage;

const CLASSES: [&str; 10] = [
    "t-shirt",
    "trouser",
    "pullover",
    "dress",
    "coat",
    "sandal",
    "shirt",
    "sneaker",
    "bag",
    "ankle-boot",
];

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let mut args = std::env::args().skip(1);
    let out = PathBuf::from(args.next().ok_or("usage: fashion_mnist_folder OUT [TOTAL]")?);
    let total: usize = args.next().map_or(Ok(4000), |t| t.parse())?;
    let (train, _) = fashion_mnist(&data_dir().join("fashion-mnist"))?;
    let labels = Vec::<i64>::try_from(&train.labels)?;
    let per_class = total / CLASSES.len();
    let val_per_class = per_class / 5;
    let mut written = [0usize; 10];
    for (i, &label) in labels.iter().enumerate() {
        let k = label as usize;
        if written[k] == per_class {
            continue;
        }
        let split = if written[k] < val_per_class { "val" } else { "train" };
        let pixels = Vec::<u8>::try_from(train.images.get(i as i64).flatten(0, -1))?;
        save(&pixels, &out.join(split).join(CLASSES[k]), written[k])?;
        written[k] += 1;
        if written.iter().all(|&w| w == per_class) {
            break;
        }
    }
    println!("{} JPEGs in {}", written.iter().sum::<usize>(), out.display());
    Ok(())
}

/// A 28x28 image centred on a 32x32 black canvas, as `dir/<n>.jpg`.
fn save(pixels: &[u8], dir: &Path, n: usize) -> Result<(), Box<dyn std::error::Error>> {
    std::fs::create_dir_all(dir)?;
    let img = GrayImage::from_fn(32, 32, |x, y| {
        let inside = (2..30).contains(&x) && (2..30).contains(&y);
        image::Luma([if inside {
            pixels[(y as usize - 2) * 28 + x as usize - 2]
        } else {
            0
        }])
    });
    img.save(dir.join(format!("{n:04}.jpg")))?;
    Ok(())
}

//! The dataset loaders on small files written here in the real formats.

use std::io::Write;
use std::path::{Path, PathBuf};

use enlighten_trainer::data::{
    char_corpus, char_splits, cifar10, cifar100, fashion_mnist, forecast_windows, read_idx_images, read_text, read_ts,
    read_vic_elec, sklearn_digits, split, TextEncoding,
};
use enlighten_trainer::Error;
use flate2::write::GzEncoder;
use tch::Kind;

fn scratch(name: &str) -> PathBuf {
    let dir = std::env::temp_dir().join(format!("enlighten-data-{}-{name}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).unwrap();
    dir
}

fn gz(bytes: &[u8]) -> Vec<u8> {
    let mut e = GzEncoder::new(Vec::new(), flate2::Compression::fast());
    e.write_all(bytes).unwrap();
    e.finish().unwrap()
}

fn idx(magic: u32, dims: &[u32], payload: &[u8]) -> Vec<u8> {
    let mut out = magic.to_be_bytes().to_vec();
    for d in dims {
        out.extend(d.to_be_bytes());
    }
    out.extend_from_slice(payload);
    out
}

/// Pixel (i, y, x) = (7 i + 3 y + x) mod 256: every image distinct and recognisable.
fn pixels(n: usize, h: usize, w: usize) -> Vec<u8> {
    (0..n * h * w)
        .map(|k| ((7 * (k / (h * w)) + 3 * ((k / w) % h) + k % w) % 256) as u8)
        .collect()
}

fn write_fashion(dir: &Path, n_train: usize, n_test: usize) {
    for (prefix, n) in [("train", n_train), ("t10k", n_test)] {
        std::fs::write(
            dir.join(format!("{prefix}-images-idx3-ubyte.gz")),
            gz(&idx(0x803, &[n as u32, 28, 28], &pixels(n, 28, 28))),
        )
        .unwrap();
        let labels: Vec<u8> = (0..n).map(|i| (i % 10) as u8).collect();
        std::fs::write(
            dir.join(format!("{prefix}-labels-idx1-ubyte.gz")),
            gz(&idx(0x801, &[n as u32], &labels)),
        )
        .unwrap();
    }
}

fn data_error(r: Result<impl std::fmt::Debug, Error>, file: &str, words: &str) {
    match r {
        Err(Error::Data { path, problem, hint }) => {
            assert!(path.ends_with(file), "error names {path:?}, expected {file}");
            assert!(problem.contains(words), "problem `{problem}` lacks `{words}`");
            assert!(!hint.is_empty());
        }
        other => panic!("expected a data error about {file}, got {other:?}"),
    }
}

#[test]
fn fashion_mnist_reads_gzipped_idx() {
    let dir = scratch("fashion");
    write_fashion(&dir, 30, 12);
    let (train, test) = fashion_mnist(&dir).unwrap();
    assert_eq!(train.images.size(), [30, 1, 28, 28]);
    assert_eq!(train.images.kind(), Kind::Uint8);
    assert_eq!(test.len(), 12);
    assert_eq!(train.images.int64_value(&[5, 0, 2, 3]), 7 * 5 + 3 * 2 + 3);
    assert_eq!(
        Vec::<i64>::try_from(&test.labels).unwrap(),
        (0..12).map(|i| i % 10).collect::<Vec<i64>>()
    );
    // An uncompressed file reads the same.
    let raw = dir.join("raw-images");
    std::fs::write(&raw, idx(0x803, &[2, 3, 4], &pixels(2, 3, 4))).unwrap();
    assert_eq!(read_idx_images(&raw).unwrap().size(), [2, 1, 3, 4]);
}

#[test]
fn corrupt_or_missing_idx_files_name_the_file() {
    let dir = scratch("fashion-bad");
    data_error(fashion_mnist(&dir), "train-images-idx3-ubyte.gz", "No such file");
    write_fashion(&dir, 10, 5);
    let img = dir.join("train-images-idx3-ubyte.gz");
    let full = idx(0x803, &[10, 28, 28], &pixels(10, 28, 28));
    std::fs::write(&img, gz(&full[..full.len() - 100])).unwrap();
    data_error(fashion_mnist(&dir), "train-images-idx3-ubyte.gz", "data bytes");
    std::fs::write(&img, gz(&idx(0x801, &[10], &[0; 10]))).unwrap();
    data_error(fashion_mnist(&dir), "train-images-idx3-ubyte.gz", "magic");
    std::fs::write(&img, [0x1f, 0x8b, 1, 2, 3]).unwrap();
    data_error(fashion_mnist(&dir), "train-images-idx3-ubyte.gz", "gzip");
    write_fashion(&dir, 10, 5);
    std::fs::write(
        dir.join("t10k-labels-idx1-ubyte.gz"),
        gz(&idx(0x801, &[4], &[1, 2, 3, 4])),
    )
    .unwrap();
    data_error(
        fashion_mnist(&dir),
        "t10k-labels-idx1-ubyte.gz",
        "4 labels for 5 images",
    );
}

#[test]
fn cifar_binary_batches() {
    let dir = scratch("cifar");
    let d10 = dir.join("cifar-10-batches-bin");
    std::fs::create_dir_all(&d10).unwrap();
    let record = |label: &[u8], i: usize| {
        [
            label,
            &pixels(1, 96, 32)[..]
                .iter()
                .map(|p| p.wrapping_add(i as u8))
                .collect::<Vec<u8>>(),
        ]
        .concat()
    };
    for b in 1..=5 {
        let bytes: Vec<u8> = (0..4).flat_map(|i| record(&[(i + b) as u8 % 10], i)).collect();
        std::fs::write(d10.join(format!("data_batch_{b}.bin")), bytes).unwrap();
    }
    std::fs::write(
        d10.join("test_batch.bin"),
        (0..3).flat_map(|i| record(&[9], i)).collect::<Vec<u8>>(),
    )
    .unwrap();
    let (train, test) = cifar10(&dir).unwrap();
    assert_eq!(train.images.size(), [20, 3, 32, 32]);
    assert_eq!(test.labels.size(), [3]);
    assert_eq!(
        train.labels.int64_value(&[4]),
        2,
        "batch 2, record 0: label (0 + 2) % 10"
    );
    let d100 = dir.join("cifar-100-binary");
    std::fs::create_dir_all(&d100).unwrap();
    std::fs::write(
        d100.join("train.bin"),
        (0..6).flat_map(|i| record(&[1, 42 + i as u8], i)).collect::<Vec<u8>>(),
    )
    .unwrap();
    std::fs::write(d100.join("test.bin"), record(&[3, 99], 0)).unwrap();
    let (train, test) = cifar100(&dir).unwrap();
    assert_eq!(
        Vec::<i64>::try_from(&train.labels).unwrap(),
        vec![42, 43, 44, 45, 46, 47],
        "fine labels"
    );
    assert_eq!(test.classes, 100);
    std::fs::write(d100.join("test.bin"), &record(&[3, 99], 0)[..100]).unwrap();
    data_error(cifar100(&dir), "test.bin", "records");
}

#[test]
fn sklearn_digits_csv() {
    let dir = scratch("digits");
    let rows: String = (0..20)
        .map(|i| {
            let px: Vec<String> = (0..64).map(|p| ((p + i) % 17).to_string()).collect();
            format!("{},{}\n", px.join(","), i % 10)
        })
        .collect();
    let path = dir.join("digits.csv.gz");
    std::fs::write(&path, gz(rows.as_bytes())).unwrap();
    let set = sklearn_digits(&path).unwrap();
    assert_eq!(set.images.size(), [20, 1, 8, 8]);
    assert_eq!(
        set.images.int64_value(&[0, 0, 2, 0]),
        255,
        "pixel 16 of image 0 is 16, which scales to 255"
    );
    assert_eq!(set.labels.int64_value(&[13]), 3);
    std::fs::write(&path, gz(b"1,2,3\n")).unwrap();
    data_error(sklearn_digits(&path), "digits.csv.gz", "expected 64 pixels");
    std::fs::write(&path, gz(format!("{}17\n", "0,".repeat(64)).as_bytes())).unwrap();
    data_error(sklearn_digits(&path), "digits.csv.gz", "label 17");
}

#[test]
fn splits_are_sized_disjoint_and_seeded() {
    let dir = scratch("split");
    write_fashion(&dir, 200, 10);
    let (train, test) = fashion_mnist(&dir).unwrap();
    // Tag each training image by its first pixel row so rows can be traced.
    let id = |set: &enlighten_trainer::data::ImageSet| -> Vec<i64> {
        Vec::<i64>::try_from(set.images.select(1, 0).select(1, 0).select(1, 0).to_kind(Kind::Int64)).unwrap()
    };
    let s = split(train, test, 0.1, 0.5, 7).unwrap();
    assert_eq!((s.val.len(), s.train.len(), s.test.len()), (20, 90, 10));
    let (tr, va) = (id(&s.train), id(&s.val));
    assert!(
        tr.iter().all(|t| !va.contains(t)),
        "validation rows are not training rows"
    );
    let (train2, test2) = fashion_mnist(&dir).unwrap();
    let again = split(train2, test2, 0.1, 0.5, 7).unwrap();
    assert_eq!(id(&again.train), tr, "same seed, same split");
    let (train3, test3) = fashion_mnist(&dir).unwrap();
    assert_ne!(
        id(&split(train3, test3, 0.1, 0.5, 8).unwrap().train),
        tr,
        "other seed, other split"
    );
    let (t4, te4) = fashion_mnist(&dir).unwrap();
    assert!(matches!(
        split(t4, te4, 1.0, 1.0, 0),
        Err(Error::Value {
            arg: "val_fraction",
            ..
        })
    ));
    let (t5, te5) = fashion_mnist(&dir).unwrap();
    assert!(matches!(
        split(t5, te5, 0.1, 0.0, 0),
        Err(Error::Value { arg: "subset", .. })
    ));
}

#[test]
fn ucr_ts_files_equal_unequal_and_multichannel() {
    let dir = scratch("ts");
    let path = dir.join("Toy_TRAIN.ts");
    std::fs::write(&path, "# a comment\n@problemName Toy\n@univariate true\n@classLabel true up down\n@data\n1.0,2.0,3.0:up\n3.0,2.0,1.0:down\n0.5,?,0.5:up\n").unwrap();
    let s = read_ts(&path, None).unwrap();
    assert_eq!(s.series.size(), [3, 1, 3]);
    assert_eq!(
        Vec::<i64>::try_from(&s.labels).unwrap(),
        vec![0, 1, 0],
        "labels in @classLabel order"
    );
    assert_eq!(s.series.double_value(&[2, 0, 1]), 0.0, "? reads as 0");
    // Unequal lengths pad with zeros to the longest, or truncate to a given length; two channels.
    std::fs::write(&path, "@classLabel true a b\n@data\n1,2:3,4:a\n5,6,7,8:9,10,11,12:b\n").unwrap();
    let s = read_ts(&path, None).unwrap();
    assert_eq!(s.series.size(), [2, 2, 4]);
    assert_eq!(s.lengths, vec![2, 4]);
    assert_eq!(
        Vec::<f32>::try_from(s.series.get(0).get(1)).unwrap(),
        vec![3.0, 4.0, 0.0, 0.0]
    );
    assert_eq!(read_ts(&path, Some(3)).unwrap().series.size(), [2, 2, 3]);
    // Errors name the file and the line.
    std::fs::write(&path, "@data\n1,2,x:a\n").unwrap();
    data_error(read_ts(&path, None), "Toy_TRAIN.ts", "line 2");
    std::fs::write(&path, "@classLabel true a\n@data\n1,2:b\n").unwrap();
    data_error(read_ts(&path, None), "Toy_TRAIN.ts", "label `b`");
    std::fs::write(&path, "@data\n1,2:3,4:a\n1,2:a\n").unwrap();
    data_error(read_ts(&path, None), "Toy_TRAIN.ts", "channels");
    data_error(read_ts(&dir.join("missing.ts"), None), "missing.ts", "No such file");
}

#[test]
fn vic_elec_windows_and_a_char_corpus() {
    let dir = scratch("seq");
    let csv = dir.join("vic_elec.csv");
    let rows: String = (0..10)
        .map(|i| format!("2012-01-01T{i:02}:00:00Z,{},{},2012-01-01,TRUE\n", 100 + i, 20 + i))
        .collect();
    std::fs::write(&csv, format!("Time,Demand,Temperature,Date,Holiday\n{rows}")).unwrap();
    let series = read_vic_elec(&csv).unwrap();
    assert_eq!(series.size(), [10, 2]);
    let (x, y) = forecast_windows(&series, 4, 2, 3, 0).unwrap();
    assert_eq!(
        (x.size(), y.size()),
        (vec![2, 4, 2], vec![2, 2]),
        "windows at 0 and 3 (a third would need rows up to 12)"
    );
    assert_eq!(
        Vec::<f32>::try_from(y.get(1)).unwrap(),
        vec![107.0, 108.0],
        "the demand right after the second input window"
    );
    assert_eq!(x.double_value(&[1, 0, 1]), 23.0, "temperature is an input feature");
    assert!(forecast_windows(&series, 9, 2, 1, 0).is_err());
    std::fs::write(&csv, "Time,Demand\n1,2\n").unwrap();
    data_error(read_vic_elec(&csv), "vic_elec.csv", "Temperature");
    std::fs::write(&csv, "Time,Demand,Temperature\nt,12,x\n").unwrap();
    data_error(read_vic_elec(&csv), "vic_elec.csv", "line 2");

    let texts = dir.join("texts");
    std::fs::create_dir_all(&texts).unwrap();
    std::fs::write(texts.join("b_gut.txt"), "ba").unwrap();
    std::fs::write(texts.join("a_gut.txt"), "abc").unwrap();
    std::fs::write(texts.join("a_gut_f.txt"), "zzz").unwrap();
    let corpus = char_corpus(&texts).unwrap();
    assert_eq!(corpus.vocab, vec!['a', 'b', 'c'], "the Folio copy is left out");
    assert_eq!(
        Vec::<i64>::try_from(&corpus.tokens).unwrap(),
        vec![0, 1, 2, 1, 0],
        "files in name order"
    );
    let (x, y) = corpus.sequences(2, 2).unwrap();
    assert_eq!(Vec::<i64>::try_from(x.reshape([-1])).unwrap(), vec![0, 1, 2, 1]);
    assert_eq!(
        Vec::<i64>::try_from(y.reshape([-1])).unwrap(),
        vec![1, 2, 1, 0],
        "targets are the next characters"
    );
    assert!(
        matches!(corpus.sequences(5, 1), Err(Error::Value { arg: "seq_len", .. })),
        "5 tokens hold no 5 + 1 window"
    );
    assert!(matches!(
        forecast_windows(&series.get(0), 1, 1, 1, 0),
        Err(Error::Shape { arg: "series", .. })
    ));
    data_error(char_corpus(&dir.join("nowhere")), "nowhere", "No such file");
}

#[test]
fn a_text_file_or_folder_is_a_char_corpus_with_the_training_vocabulary() {
    let dir = scratch("text");
    let file = dir.join("one.txt");
    std::fs::write(&file, "abcabcabcaXY").unwrap();
    assert_eq!(read_text(&file, TextEncoding::Utf8).unwrap(), "abcabcabcaXY");
    // 12 characters: test the last 2 (XY), validation 1 (a), training 9 (abcabcabc).
    let s = char_splits(&read_text(&file, TextEncoding::Utf8).unwrap(), 1.0 / 12.0, 2.0 / 12.0).unwrap();
    assert_eq!(s.vocab, vec!['a', 'b', 'c'], "the training part's characters only");
    assert_eq!(Vec::<i64>::try_from(&s.train).unwrap(), vec![0, 1, 2, 0, 1, 2, 0, 1, 2]);
    assert_eq!(Vec::<i64>::try_from(&s.val).unwrap(), vec![0]);
    assert_eq!(
        (Vec::<i64>::try_from(&s.test).unwrap(), s.unknown, s.classes()),
        (vec![3, 3], Some(3), 4),
        "characters unseen in training share one extra id"
    );
    let known = char_splits("abab", 0.25, 0.25).unwrap();
    assert_eq!(
        (known.unknown, known.classes()),
        (None, 2),
        "no unknown id when none is needed"
    );
    assert!(char_splits("ab", 0.5, 0.5).is_err(), "nothing left to train on");

    // A folder: its .txt files in name order, other files and subfolders left out; UTF-8 kept.
    let folder = dir.join("corpus");
    std::fs::create_dir_all(folder.join("sub.txt")).unwrap();
    std::fs::write(folder.join("b.txt"), "ß\n").unwrap();
    std::fs::write(folder.join("a.txt"), "héllo ").unwrap();
    std::fs::write(folder.join("c.md"), "not text").unwrap();
    assert_eq!(read_text(&folder, TextEncoding::Utf8).unwrap(), "héllo ß\n");
    // Invalid UTF-8 is an error naming the file and the first bad byte's offset, not a silent
    // U+FFFD; Latin-1, when the option says so, reads every byte as its character.
    std::fs::write(folder.join("d.txt"), [b'o', 0xff, b'k']).unwrap();
    data_error(read_text(&folder, TextEncoding::Utf8), "d.txt", "byte 0xff at offset 1");
    assert!(read_text(&folder, TextEncoding::Latin1).unwrap().ends_with("o\u{ff}k"));
    data_error(
        read_text(&dir.join("missing.txt"), TextEncoding::Utf8),
        "missing.txt",
        "No such file",
    );
    let empty = dir.join("empty");
    std::fs::create_dir_all(&empty).unwrap();
    data_error(read_text(&empty, TextEncoding::Utf8), "empty", "no *.txt files");
}

mod support;
use enlighten_trainer::data::{
    center_crop_box, decode_rgb, image_folder, imagenet, random_resized_crop, sample_seed, tiny_imagenet, ImageSource,
    Loader, OnBadFile, Transform,
};
use support::images::{picture, save, write_image_folder, write_tiny_imagenet, CLASSES};

#[test]
fn an_image_folder_lists_sorted_classes_and_its_splits() {
    let dir = scratch("folder");
    write_image_folder(&dir, &[("train", 4), ("val", 2)], 1);
    std::fs::write(dir.join("train/rows/notes.txt"), "not an image").unwrap();
    let s = image_folder(&dir).unwrap();
    assert_eq!(s.train.classes, vec!["columns", "disc", "rows"], "sorted by name");
    assert_eq!((s.train.len(), s.val.len(), s.test.is_none()), (12, 6, true));
    assert_eq!(s.train.labels[..4], [0, 0, 0, 0]);
    assert!(s.train.files[0].ends_with("train/columns/columns_0.JPEG"));
    let exts: std::collections::BTreeSet<String> = s
        .train
        .files
        .iter()
        .map(|f| f.extension().unwrap().to_str().unwrap().to_string())
        .collect();
    assert_eq!(
        exts.into_iter().collect::<Vec<_>>(),
        ["JPEG", "jpg", "png"],
        "JPEG and PNG, any case"
    );
    // A test split is read when present; a val class unknown to train is an error naming it.
    write_image_folder(&dir, &[("test", 1)], 2);
    assert_eq!(image_folder(&dir).unwrap().test.unwrap().len(), 3);
    save(
        picture(0, 40, 40, &mut enlighten::SeededRng::new(0)),
        &dir.join("val/zebra"),
        "z",
        0,
    );
    data_error(image_folder(&dir), "zebra", "not one of the training classes");
    data_error(image_folder(&dir.join("nowhere")), "train", "No such file");
}

#[test]
fn tiny_imagenet_and_imagenet_layouts_are_read() {
    let dir = scratch("tiny");
    let wnids = write_tiny_imagenet(&dir, 3, 6, 3);
    let s = tiny_imagenet(&dir).unwrap();
    assert_eq!(s.train.classes, wnids);
    assert_eq!((s.train.len(), s.val.len()), (9, 6));
    assert!(s.test.is_none(), "the official test split has no labels");
    assert_eq!(s.val.labels, vec![0, 1, 2, 0, 1, 2]);
    assert!(s.val.files[0].ends_with("val/images/val_0.JPEG"));
    std::fs::write(
        dir.join("val/val_annotations.txt"),
        "val_0.JPEG\tn09999999\t0\t0\t1\t1\n",
    )
    .unwrap();
    data_error(tiny_imagenet(&dir), "val_annotations.txt", "unknown class `n09999999`");

    // ImageNet: class-folder validation, then Kaggle's flat val/ with LOC_val_solution.csv.
    let net = scratch("imagenet");
    write_image_folder(&net, &[("train", 2), ("val", 1)], 4);
    let s = imagenet(&net).unwrap();
    assert_eq!((s.train.len(), s.val.len(), s.test.is_none()), (6, 3, true));
    std::fs::remove_dir_all(net.join("val")).unwrap();
    let mut rng = enlighten::SeededRng::new(9);
    std::fs::create_dir_all(net.join("val")).unwrap();
    for k in 0..2 {
        picture(k, 40, 30, &mut rng)
            .save(net.join("val").join(format!("ILSVRC2012_val_{k:08}.JPEG")))
            .unwrap();
    }
    std::fs::write(
        net.join("LOC_val_solution.csv"),
        "ImageId,PredictionString\nILSVRC2012_val_00000001,rows 1 2 3 4\nILSVRC2012_val_00000000,disc 0 0 9 9 disc 1 1 5 5\n",
    )
    .unwrap();
    let s = imagenet(&net).unwrap();
    assert_eq!(s.val.labels, vec![1, 2], "disc, then rows, in file order");
    assert!(s.val.files[1].ends_with("val/ILSVRC2012_val_00000001.JPEG"));
}

#[test]
fn grayscale_rgba_and_cmyk_images_become_rgb() {
    let dir = scratch("colour");
    let grey = dir.join("grey.png");
    image::GrayImage::from_pixel(5, 4, image::Luma([77]))
        .save(&grey)
        .unwrap();
    let d = decode_rgb(&grey).unwrap();
    assert_eq!((d.width, d.height, &d.pixels[..3]), (5, 4, &[77u8, 77, 77][..]));
    let rgba = dir.join("rgba.png");
    image::RgbaImage::from_pixel(3, 3, image::Rgba([200, 100, 50, 10]))
        .save(&rgba)
        .unwrap();
    assert_eq!(
        &decode_rgb(&rgba).unwrap().pixels[..3],
        &[200, 100, 50],
        "alpha dropped"
    );
    let grey_jpeg = dir.join("grey.jpg");
    image::GrayImage::from_pixel(16, 16, image::Luma([150]))
        .save(&grey_jpeg)
        .unwrap();
    let g = decode_rgb(&grey_jpeg).unwrap();
    assert!(g.pixels.len() == 16 * 16 * 3 && g.pixels.iter().all(|&p| p.abs_diff(150) <= 2));
    // CMYK JPEG (as print workflows write them): left half cyan, right half white.
    let cmyk = dir.join("cmyk.jpg");
    let (w, h) = (16u16, 8u16);
    let mut data = Vec::new();
    for _ in 0..h {
        for x in 0..w {
            data.extend_from_slice(if x < w / 2 { &[255, 0, 0, 0] } else { &[0, 0, 0, 0] });
        }
    }
    jpeg_encoder::Encoder::new_file(&cmyk, 95)
        .unwrap()
        .encode(&data, w, h, jpeg_encoder::ColorType::Cmyk)
        .unwrap();
    let c = decode_rgb(&cmyk).unwrap();
    let px = |x: usize| &c.pixels[(4 * w as usize + x) * 3..][..3];
    eprintln!("cmyk cyan {:?} white {:?}", px(2), px(13));
    assert!(px(2)[0] < 60 && px(2)[1] > 180 && px(2)[2] > 180, "cyan: {:?}", px(2));
    assert!(px(13).iter().all(|&v| v > 230), "white: {:?}", px(13));
}

#[test]
fn corrupt_and_truncated_files_are_errors_naming_them_or_skipped_and_counted() {
    let dir = scratch("bad");
    write_image_folder(&dir, &[("train", 3), ("val", 1)], 5);
    let good = std::fs::read(dir.join("train/disc/disc_0.JPEG")).unwrap();
    std::fs::write(dir.join("train/disc/disc_0.JPEG"), &good[..good.len() / 3]).unwrap();
    std::fs::write(dir.join("train/rows/rows_1.png"), b"\x89PNG\r\n\x1a\nnot really").unwrap();
    data_error(
        decode_rgb(&dir.join("train/disc/disc_0.JPEG")),
        "disc_0.JPEG",
        "not a decodable image",
    );
    data_error(
        decode_rgb(&dir.join("train/rows/rows_1.png")),
        "rows_1.png",
        "not a decodable image",
    );
    let list = image_folder(&dir).unwrap().train;
    let rows: Vec<i64> = (0..list.len() as i64).collect();
    let seeds: Vec<u64> = (0..list.len() as u64).collect();
    let strict = ImageSource::new(list.clone(), Transform::train(16), 2, OnBadFile::Error);
    assert!(matches!(strict.batch(&rows, &seeds), Err(Error::Data { .. })));
    let lenient = ImageSource::new(list.clone(), Transform::train(16), 2, OnBadFile::Skip);
    let (x, y) = lenient.batch(&rows, &seeds).unwrap();
    assert_eq!(x.size(), [9, 3, 16, 16], "a training batch keeps its size");
    assert_eq!(y.int64_value(&[3]), 1, "disc_0 is replaced by the next file, disc_1");
    assert_eq!(lenient.skipped().len(), 2);
    let eval = ImageSource::new(list, Transform::eval(16), 1, OnBadFile::Skip)
        .decode_all()
        .unwrap();
    assert_eq!((eval.len(), eval.classes), (7, 3), "evaluation sets leave them out");
}

#[test]
fn batches_are_the_same_with_one_and_two_workers_and_follow_the_seed() {
    let dir = scratch("workers");
    write_image_folder(&dir, &[("train", 6), ("val", 1)], 6);
    let list = image_folder(&dir).unwrap().train;
    let rows: Vec<i64> = (0..list.len() as i64).rev().collect();
    let seeds: Vec<u64> = (0..list.len() as u64).map(|k| sample_seed(11, k)).collect();
    let one = ImageSource::new(list.clone(), Transform::train(24), 1, OnBadFile::Error);
    let two = ImageSource::new(list.clone(), Transform::train(24), 2, OnBadFile::Error);
    let (a, ya) = one.batch(&rows, &seeds).unwrap();
    let (b, yb) = two.batch(&rows, &seeds).unwrap();
    assert_eq!(a.kind(), Kind::Uint8);
    assert!(a.equal(&b) && ya.equal(&yb), "same bytes whatever the thread count");
    assert_eq!(ya.int64_value(&[0]), 2, "rows in the order asked");
    let other: Vec<u64> = (0..list.len() as u64).map(|k| sample_seed(12, k)).collect();
    assert!(
        !one.batch(&rows, &other).unwrap().0.equal(&a),
        "another seed, other crops"
    );
    // The bounded queue yields the same batches.
    let source = std::sync::Arc::new(two);
    let order: Vec<i64> = rows.clone();
    let batches: Vec<_> = Loader::new(source, order, 9, 11, 2).map(|b| b.unwrap()).collect();
    assert_eq!(batches.len(), 2);
    assert!(batches[0].0.equal(&a.narrow(0, 0, 9)) && batches[1].0.equal(&a.narrow(0, 9, 9)));
}

#[test]
fn the_transforms_follow_torchvision() {
    // Resize(256) + CenterCrop(224) of 500 x 375: 341 x 256, corner (58, 16) (Python's round).
    let b = center_crop_box(500, 375, 224, 256);
    let s = 375.0 / 256.0;
    assert!(
        (b.x - 58.0 * 500.0 / 341.0).abs() < 1e-9 && (b.y - 16.0 * s).abs() < 1e-9,
        "{b:?}"
    );
    assert!((b.w - 224.0 * 500.0 / 341.0).abs() < 1e-9 && (b.h - 224.0 * s).abs() < 1e-9);
    // RandomResizedCrop: area share and aspect ratio within the ranges (up to pixel rounding).
    let mut rng = enlighten::SeededRng::new(3);
    for _ in 0..2000 {
        let c = random_resized_crop(320, 240, (0.08, 1.0), (0.75, 4.0 / 3.0), &mut rng);
        assert!(
            c.x + c.w <= 320.0 && c.y + c.h <= 240.0 && c.w >= 1.0 && c.h >= 1.0,
            "{c:?}"
        );
        let share = c.w * c.h / (320.0 * 240.0);
        assert!((0.07..=1.0).contains(&share), "{c:?}");
        assert!((0.70..=1.40).contains(&(c.w / c.h)), "{c:?}");
    }
    // Ten failed tries fall back to the centre crop at the ratio's bound.
    let c = random_resized_crop(400, 100, (0.99, 1.0), (0.75, 4.0 / 3.0), &mut rng);
    assert_eq!((c.x, c.y, c.w, c.h), (133.0, 0.0, 133.0, 100.0));
    // A uniform picture stays uniform through crop, resize and flip.
    let dir = scratch("uniform");
    let path = dir.join("u.png");
    image::RgbImage::from_pixel(50, 30, image::Rgb([10, 120, 240]))
        .save(&path)
        .unwrap();
    let mut out = vec![0u8; 3 * 20 * 20];
    enlighten_trainer::data::load_sample(
        &path,
        &Transform::train(20),
        4,
        &mut out,
        enlighten_trainer::data::MAX_IMAGE_PIXELS,
    )
    .unwrap();
    assert!(out[..400].iter().all(|&v| v == 10) && out[400..800].iter().all(|&v| v == 120));
    assert!(out[800..].iter().all(|&v| v == 240), "planar RGB");
    assert_eq!(CLASSES.len(), 3);
}

/// A real 8 x 8 JPEG whose frame header is rewritten to claim `width` x `height`: a few hundred
/// bytes that would make a decoder allocate width x height x 3.
fn jpeg_claiming(path: &Path, width: u16, height: u16) {
    let img = image::RgbImage::from_pixel(8, 8, image::Rgb([90, 90, 90]));
    let mut bytes = Vec::new();
    image::DynamicImage::ImageRgb8(img)
        .write_to(&mut std::io::Cursor::new(&mut bytes), image::ImageFormat::Jpeg)
        .unwrap();
    let sof = bytes
        .windows(2)
        .position(|w| w == [0xFF, 0xC0])
        .expect("a baseline frame header");
    bytes[sof + 5..sof + 7].copy_from_slice(&height.to_be_bytes());
    bytes[sof + 7..sof + 9].copy_from_slice(&width.to_be_bytes());
    std::fs::write(path, bytes).unwrap();
}

#[test]
fn a_header_claiming_60000_by_60000_pixels_is_a_bad_file_not_an_allocation() {
    let dir = scratch("bomb");
    write_image_folder(&dir, &[("train", 2), ("val", 1)], 9);
    let bomb = dir.join("train/disc/disc_9.jpg");
    jpeg_claiming(&bomb, 60000, 60000);
    assert!(std::fs::metadata(&bomb).unwrap().len() < 2000);
    data_error(decode_rgb(&bomb), "disc_9.jpg", "60000 x 60000");
    data_error(
        enlighten_trainer::data::check_header(&bomb, 1 << 20),
        "disc_9.jpg",
        "max_image_pixels",
    );
    let list = image_folder(&dir).unwrap().train;
    let rows: Vec<i64> = (0..list.len() as i64).collect();
    let seeds: Vec<u64> = (0..list.len() as u64).collect();
    // Skip mode leaves it out of a batch; error mode's start-up check names it.
    let lenient = ImageSource::new(list.clone(), Transform::train(16), 2, OnBadFile::Skip);
    assert_eq!(lenient.batch(&rows, &seeds).unwrap().0.size(), [7, 3, 16, 16]);
    assert_eq!(lenient.skipped(), std::slice::from_ref(&bomb));
    let strict = ImageSource::new(list.clone(), Transform::train(16), 2, OnBadFile::Error);
    data_error(strict.check_headers(), "disc_9.jpg", "60000 x 60000");
    // The limit is the configuration's: a lower one refuses an ordinary image too.
    let tight = ImageSource::new(list, Transform::train(16), 1, OnBadFile::Error).with_max_pixels(10);
    assert!(
        matches!(tight.check_headers(), Err(Error::Data { problem, .. }) if problem.contains("over data.max_image_pixels = 10"))
    );
}

#[test]
fn empty_class_folders_and_links_that_are_not_files_are_reported() {
    let dir = scratch("odd-files");
    write_image_folder(&dir, &[("train", 2), ("val", 1)], 4);
    std::fs::create_dir_all(dir.join("train/zebra")).unwrap();
    data_error(image_folder(&dir), "zebra", "no JPEG or PNG images");
    std::fs::remove_dir(dir.join("train/zebra")).unwrap();
    // A dangling link, a link loop and a folder with an image's name are bad files.
    let class = dir.join("train/rows");
    std::os::unix::fs::symlink(dir.join("nowhere.png"), class.join("dangling.png")).unwrap();
    std::os::unix::fs::symlink(class.join("loop.jpg"), class.join("loop.jpg")).unwrap();
    std::fs::create_dir_all(class.join("folder.jpg")).unwrap();
    let list = image_folder(&dir).unwrap().train;
    assert_eq!(list.len(), 9, "6 images and 3 entries that are not");
    let strict = ImageSource::new(list.clone(), Transform::train(16), 2, OnBadFile::Error);
    data_error(strict.check_headers(), "dangling.png", "not readable");
    let lenient = ImageSource::new(list, Transform::eval(16), 2, OnBadFile::Skip);
    assert_eq!(lenient.decode_all().unwrap().len(), 6);
    assert_eq!(lenient.skipped().len(), 3, "each is counted as skipped");
}

//! The trainer's other tasks on small files written here in their real formats (UCR `.ts`,
//! vic_elec CSV, Shakespeare text): 30 steps lower the loss for series classification,
//! forecasting and the char LM; diagnostics log zero shares and BENR; prefetching does not
//! change a run; configurations that pair a task with the wrong model or strategy are refused.

use std::fmt::Write as _;
use std::path::{Path, PathBuf};

use enlighten::SeededRng;
use enlighten_trainer::train::{train, MetricsLine, Summary, TrainConfig, TrainOptions};

mod support;
use enlighten::testing::serial;
use support::{metrics, scratch};

/// Two classes of noisy series, 2 channels of length 40: a slow sine, or a fast one.
fn write_ucr(dir: &Path) {
    let folder = dir.join("Waves");
    std::fs::create_dir_all(&folder).unwrap();
    let mut rng = SeededRng::new(5);
    for (split, n) in [("TRAIN", 120), ("TEST", 40)] {
        let mut text =
            String::from("# synthetic\n@problemName Waves\n@univariate false\n@classLabel true slow fast\n@data\n");
        for i in 0..n {
            let fast = i % 2 == 1;
            let f = if fast { 0.6 } else { 0.15 };
            let channel = |phase: f64, rng: &mut SeededRng| {
                (0..40)
                    .map(|t| format!("{:.4}", (f * t as f64 + phase).sin() + 0.3 * rng.normal()))
                    .collect::<Vec<_>>()
                    .join(",")
            };
            let phase = 6.0 * rng.uniform();
            let (a, b) = (channel(phase, &mut rng), channel(phase + 1.0, &mut rng));
            writeln!(text, "{a}:{b}:{}", if fast { "fast" } else { "slow" }).unwrap();
        }
        std::fs::write(folder.join(format!("Waves_{split}.ts")), text).unwrap();
    }
}

/// A daily cycle of demand (48 half-hours) that follows temperature, plus noise.
fn write_vic_elec(dir: &Path) {
    let folder = dir.join("vic_elec");
    std::fs::create_dir_all(&folder).unwrap();
    let mut rng = SeededRng::new(6);
    let mut text = String::from("Time,Demand,Temperature,Date,Holiday\n");
    for i in 0..3000 {
        let day = (i as f64 / 48.0 * std::f64::consts::TAU).sin();
        let temperature = 20.0 + 5.0 * day + rng.normal();
        let demand = 4000.0 + 800.0 * day + 30.0 * temperature + 50.0 * rng.normal();
        writeln!(
            text,
            "2012-01-01T00:00:00Z,{demand:.3},{temperature:.2},2012-01-01,FALSE"
        )
        .unwrap();
    }
    std::fs::write(folder.join("vic_elec.csv"), text).unwrap();
}

fn write_text(dir: &Path) {
    let folder = dir.join("shakespeare");
    std::fs::create_dir_all(&folder).unwrap();
    let verse = "To be, or not to be, that is the question: whether 'tis nobler in the mind to suffer. ";
    std::fs::write(folder.join("hamlet_gut.txt"), verse.repeat(120)).unwrap();
    // Folio copies are not part of the corpus.
    std::fs::write(folder.join("hamlet_gut_f.txt"), "#~{}|".repeat(100)).unwrap();
}

fn config(dir: &Path, name: &str, data: &str, model: &str, strategy: &str, run: &str) -> TrainConfig {
    TrainConfig::from_toml(&format!(
        r#"
        [run]
        name = "{name}"
        seed = 4
        device = "cpu"
        out_dir = "{out}"
        eval_every = 10
        log_every = 5
        {run}
        [data]
        dir = "{dir}"
        batch_size = 16
        val_fraction = 0.1
        {data}
        [model]
        {model}
        [optim]
        kind = "adamw"
        lr = 0.003
        weight_decay = 0.0
        epochs = 30
        [strategy]
        {strategy}
        "#,
        out = dir.join("runs").display(),
        dir = dir
            .join("data")
            .join(match data.split('"').nth(1).unwrap_or("") {
                "ucr" => "",
                "vic-elec" => "vic_elec",
                _ => "shakespeare",
            })
            .display(),
    ))
    .unwrap()
}

fn setup(name: &str) -> PathBuf {
    let dir = scratch(name);
    let data = dir.join("data");
    std::fs::create_dir_all(&data).unwrap();
    write_ucr(&data);
    write_vic_elec(&data);
    write_text(&data);
    dir
}

fn run(config: &TrainConfig) -> Summary {
    train(config, &TrainOptions::default()).unwrap()
}

const SERIES: &str = "dataset = \"ucr\"\nseries = \"Waves\"";
const FORECAST: &str = "dataset = \"vic-elec\"\ninput_len = 48\nhorizon = 12\nstride = 4";
const TEXT: &str = "dataset = \"shakespeare\"\nseq_len = 32\ntest_fraction = 0.1";
const HLR: &str = "kind = \"high-loss-removal\"\ndrop_share = 0.2\n[strategy.ep]\nend = \"epochs\"\nepochs = 1";

/// The mean of the first and of the last two logged losses.
fn first_and_last(lines: &[MetricsLine]) -> (f64, f64) {
    let n = lines.len();
    assert!(n >= 4, "{n} metrics lines");
    (
        (lines[0].loss + lines[1].loss) / 2.0,
        (lines[n - 2].loss + lines[n - 1].loss) / 2.0,
    )
}

#[test]
fn series_classification_learns_in_30_steps_with_mixup() {
    let _one = serial();
    let dir = setup("series");
    let c = config(
        &dir,
        "series",
        SERIES,
        "name = \"resnet1d\"\nwidth = 8",
        "kind = \"mixup\"\nalpha = 0.2",
        "max_steps = 30",
    );
    let s = run(&c);
    assert_eq!(
        (s.task.as_str(), s.metric.as_str(), s.steps),
        ("series", "accuracy", 30)
    );
    let (first, last) = first_and_last(&metrics(&dir, "series"));
    assert!(last < 0.7 * first, "loss {first} -> {last}");
    assert!(s.test > 0.8, "test accuracy {}", s.test);
}

#[test]
fn forecasting_learns_in_30_steps_with_high_loss_removal() {
    let _one = serial();
    let dir = setup("forecast");
    let c = config(
        &dir,
        "forecast",
        FORECAST,
        "name = \"mlp-forecaster\"\nwidth = 32",
        HLR,
        "max_steps = 30",
    );
    let s = run(&c);
    assert_eq!(
        (s.task.as_str(), s.metric.as_str(), s.higher_is_better),
        ("forecast", "mse", false)
    );
    let lines = metrics(&dir, "forecast");
    assert!(lines[0].drop_share > 0.0 && lines.iter().all(|l| l.train_accuracy.is_none()));
    let (first, last) = first_and_last(&lines);
    assert!(last < 0.5 * first, "loss {first} -> {last}");
    // Standardised demand: predicting the mean scores about 1.
    assert!(s.test < 0.5, "test MSE {}", s.test);
}

#[test]
fn the_char_lm_learns_in_30_steps_with_high_loss_removal() {
    let _one = serial();
    let dir = setup("text");
    let c = config(
        &dir,
        "text",
        TEXT,
        "name = \"char-transformer\"\nwidth = 32\ndepth = 1\nheads = 2",
        HLR,
        "max_steps = 30",
    );
    let s = run(&c);
    assert_eq!((s.task.as_str(), s.metric.as_str()), ("text", "accuracy"));
    let (first, last) = first_and_last(&metrics(&dir, "text"));
    assert!(last < 0.7 * first, "loss {first} -> {last}");
}

#[test]
fn a_plain_text_file_trains_the_char_lm_with_dataset_text() {
    let _one = serial();
    let dir = setup("plain-text");
    let file = dir.join("data").join("notes.txt");
    let line = "the quick brown fox jumps over the lazy dog; the dog sleeps, the fox runs. ";
    // The test part holds characters the training part never has: one unknown id.
    std::fs::write(&file, format!("{}{}", line.repeat(100), "ZZZ QQQ ".repeat(40))).unwrap();
    let data = format!(
        "dataset = \"text\"\npath = \"{}\"\nseq_len = 32\ntest_fraction = 0.05",
        file.display()
    );
    let c = config(
        &dir,
        "plain",
        &data,
        "name = \"char-transformer\"\nwidth = 32\ndepth = 1\nheads = 2",
        "kind = \"vanilla\"",
        "max_steps = 30",
    );
    let s = run(&c);
    assert_eq!((s.task.as_str(), s.metric.as_str()), ("text", "accuracy"));
    let (first, last) = first_and_last(&metrics(&dir, "plain"));
    assert!(last < 0.7 * first, "loss {first} -> {last}");
    // Without a path, dataset = "text" is refused with the field named.
    let err = TrainConfig::from_toml(
        "[run]\nname = \"t\"\n[data]\ndataset = \"text\"\n[model]\nname = \"char-transformer\"\n[optim]\n[strategy]\nkind = \"vanilla\"\n",
    )
    .unwrap_err()
    .to_string();
    assert!(err.contains("data.path"), "{err}");
}

#[test]
fn diagnostics_log_zero_shares_every_line_and_benr_every_epoch() {
    let _one = serial();
    let dir = setup("diagnostics");
    let c = config(
        &dir,
        "diag",
        SERIES,
        "name = \"resnet1d\"\nwidth = 8",
        "kind = \"mixup\"",
        "max_steps = 21\ndiagnostics = true",
    );
    run(&c);
    let lines = metrics(&dir, "diag");
    for l in &lines {
        let shares = l.zero_share.as_ref().expect("zero shares on every line");
        assert_eq!(shares.len(), 9, "the 1-D ResNet's ReLUs: 3 a block");
        assert!(
            shares.iter().all(|s| (0.0..=1.0).contains(s)) && shares.iter().any(|&s| s > 0.0),
            "{shares:?}"
        );
    }
    // 108 training cases in batches of 16: 6 steps an epoch, so epochs end at steps 5, 11, 17.
    let benr: Vec<(u64, f64)> = lines.iter().filter_map(|l| l.benr.map(|b| (l.step, b))).collect();
    assert_eq!(benr.iter().map(|b| b.0).collect::<Vec<_>>(), [5, 11, 17]);
    assert!(benr.iter().all(|b| b.1 >= 1.0 - 1e-9), "BENR >= 1: {benr:?}");
}

#[test]
fn prefetching_batches_does_not_change_the_run() {
    let _one = serial();
    let dir = setup("prefetch");
    let on = config(
        &dir,
        "on",
        SERIES,
        "name = \"resnet1d\"\nwidth = 8",
        "kind = \"mixup-pause\"",
        "max_steps = 14",
    );
    let off = config(
        &dir,
        "off",
        SERIES,
        "name = \"resnet1d\"\nwidth = 8",
        "kind = \"mixup-pause\"",
        "max_steps = 14\nprefetch = false",
    );
    let (a, b) = (run(&on), run(&off));
    assert_eq!(a.test.to_bits(), b.test.to_bits());
    let (x, y) = (metrics(&dir, "on"), metrics(&dir, "off"));
    assert_eq!(x.len(), y.len());
    for (p, q) in x.iter().zip(&y) {
        assert_eq!((p.step, p.loss.to_bits()), (q.step, q.loss.to_bits()));
    }
}

#[test]
fn tasks_refuse_the_wrong_model_strategy_or_missing_fields() {
    let dir = scratch("refuse");
    let text = |data: &str, model: &str, strategy: &str| {
        format!("[run]\nname = \"x\"\n[data]\n{data}\n[model]\nname = \"{model}\"\n[optim]\n[strategy]\n{strategy}\n")
    };
    for (doc, field) in [
        (text(SERIES, "small-cnn", "kind = \"mixup\""), "model.name"),
        (text("dataset = \"ucr\"", "resnet1d", "kind = \"mixup\""), "data.series"),
        (
            text(&format!("{SERIES}\naugment = true"), "resnet1d", "kind = \"mixup\""),
            "data.augment",
        ),
        (text(FORECAST, "mlp-forecaster", "kind = \"mixup\""), "strategy.kind"),
        (
            text(FORECAST, "mlp-forecaster", "kind = \"high-loss-removal\""),
            "strategy.ep.end",
        ),
        (
            text(TEXT, "char-transformer", "kind = \"alpha-boost\""),
            "strategy.kind",
        ),
        (
            text(
                "dataset = \"shakespeare\"\nseq_len = 0",
                "char-transformer",
                "kind = \"vanilla\"",
            ),
            "data.seq_len",
        ),
        (
            text(
                TEXT,
                "char-transformer\"\nwidth = 30\nheads = 4\n#\"",
                "kind = \"vanilla\"",
            ),
            "model.width",
        ),
        // The fields without a default.
        (text("batch_size = 8", "small-cnn", "kind = \"mixup\""), "dataset"),
        (
            text(SERIES, "resnet1d", "kind = \"mixup\"").replace("name = \"x\"", "seed = 1"),
            "run.name",
        ),
    ] {
        match TrainConfig::from_toml(&doc) {
            Err(e) => assert!(e.to_string().contains(field), "`{e}` does not name {field}"),
            Ok(_) => panic!("accepted\n{doc}"),
        }
    }
    // A missing dataset file names itself and the command that fetches it.
    let c = config(&dir, "missing", SERIES, "name = \"resnet1d\"", "kind = \"mixup\"", "");
    let e = train(&c, &TrainOptions::default()).unwrap_err().to_string();
    assert!(
        e.contains("Waves_TRAIN.ts") && e.contains("scripts/setup --data"),
        "{e}"
    );
}

#[test]
fn the_char_lm_resumes_bit_identically() {
    let _one = serial();
    let dir = setup("resume");
    let model = "name = \"char-transformer\"\nwidth = 32\ndepth = 1\nheads = 2";
    // The split at step 10 falls on a log and evaluation boundary, as in the straight run.
    let straight = config(&dir, "straight", TEXT, model, HLR, "max_steps = 20");
    let s = run(&straight);
    let half = config(&dir, "halves", TEXT, model, HLR, "max_steps = 10");
    run(&half);
    let rest = config(&dir, "halves", TEXT, model, HLR, "max_steps = 20");
    let r = train(
        &rest,
        &TrainOptions {
            resume: true,
            ..Default::default()
        },
    )
    .unwrap();
    assert_eq!(
        (s.test.to_bits(), s.test_loss.to_bits()),
        (r.test.to_bits(), r.test_loss.to_bits())
    );
    let (a, b) = (metrics(&dir, "straight"), metrics(&dir, "halves"));
    assert_eq!(a.len(), b.len());
    for (x, y) in a.iter().zip(&b) {
        assert_eq!(
            (x.step, x.loss.to_bits(), x.drop_share.to_bits()),
            (y.step, y.loss.to_bits(), y.drop_share.to_bits())
        );
    }
}

#[test]
fn an_image_folder_of_jpeg_and_png_trains_the_small_cnn_past_chance_in_2_epochs() {
    let _one = serial();
    let dir = scratch("image-folder");
    let images = dir.join("images");
    support::images::write_image_folder(&images, &[("train", 60), ("val", 20)], 21);
    // One corrupt file in each split: skipped and counted in the summary.
    std::fs::write(images.join("train/rows/rows_bad.jpg"), b"\xff\xd8\xff\xe0 not a JPEG").unwrap();
    std::fs::write(images.join("val/disc/disc_bad.png"), b"\x89PNG\r\n\x1a\n cut").unwrap();
    let c = TrainConfig::from_toml(&format!(
        r#"
        [run]
        name = "folder"
        seed = 3
        device = "cpu"
        out_dir = "{out}"
        eval_every = 10
        log_every = 5
        [data]
        dataset = "image-folder"
        dir = "{images}"
        image_size = 32
        workers = 2
        on_bad_file = "skip"
        val_fraction = 0.1
        batch_size = 16
        [model]
        name = "small-cnn"
        width = 16
        [optim]
        kind = "adamw"
        lr = 0.003
        weight_decay = 0.0
        epochs = 2
        [strategy]
        kind = "mixup-pause"
        alpha = 0.2
        "#,
        out = dir.join("runs").display(),
        images = images.display(),
    ))
    .unwrap();
    let s = run(&c);
    // 3 classes: chance is 1/3; the val split (from val/, 60 images) is the test set.
    assert_eq!((s.task.as_str(), s.steps), ("image", 2 * (163 / 16)));
    assert!(s.test > 0.75, "test accuracy {}", s.test);
    let mut skipped: Vec<String> = s
        .skipped_files
        .iter()
        .map(|p| p.file_name().unwrap().to_string_lossy().into_owned())
        .collect();
    skipped.sort();
    assert_eq!(skipped, ["disc_bad.png", "rows_bad.jpg"]);
    // Without a folder, or with an unusable size, the configuration is refused by field.
    for (data, field) in [
        ("dataset = \"image-folder\"", "data.dir"),
        ("dataset = \"tiny-imagenet\"\nimage_size = 4", "data.image_size"),
    ] {
        let err = TrainConfig::from_toml(&format!(
            "[run]\nname = \"t\"\n[data]\n{data}\n[model]\nname = \"small-cnn\"\n[optim]\n[strategy]\nkind = \"mixup\"\n"
        ))
        .unwrap_err()
        .to_string();
        assert!(err.contains(field), "{err}");
    }
}

#[test]
fn random_bytes_short_and_empty_text_files_are_errors_naming_the_file() {
    let _one = serial();
    let dir = setup("bad-text");
    let text_config = |file: &Path, extra: &str| {
        let data = format!(
            "dataset = \"text\"\npath = \"{}\"\nseq_len = 32\ntest_fraction = 0.1\n{extra}",
            file.display()
        );
        config(
            &dir,
            "bad",
            &data,
            "name = \"char-transformer\"\nwidth = 16\ndepth = 1\nheads = 2",
            "kind = \"vanilla\"",
            "max_steps = 2",
        )
    };
    let fails = |c: &TrainConfig, file: &str, words: &[&str]| match train(c, &TrainOptions::default()) {
        Err(e) => {
            let m = e.to_string();
            assert!(m.contains(file), "`{m}` does not name {file}");
            for w in words {
                assert!(m.contains(w), "`{m}` lacks `{w}`");
            }
        }
        Ok(s) => panic!("trained on {file}: {s:?}"),
    };
    // Random bytes: the first invalid UTF-8 byte and its offset, not U+FFFD trained on.
    let noise = dir.join("data/noise.txt");
    let mut rng = enlighten::SeededRng::new(1);
    let mut bytes = b"plain start ".to_vec();
    bytes.extend((0..4000).map(|_| rng.below(256) as u8));
    let first_bad = std::str::from_utf8(&bytes).unwrap_err().valid_up_to();
    std::fs::write(&noise, &bytes).unwrap();
    fails(
        &text_config(&noise, ""),
        "noise.txt",
        &[&format!("at offset {first_bad}"), "data.encoding"],
    );
    // Latin-1, when the option says so, reads every byte.
    let latin = dir.join("data/latin.txt");
    std::fs::write(
        &latin,
        "caf\u{e9} na\u{ef}ve "
            .chars()
            .map(|c| c as u8)
            .cycle()
            .take(3000)
            .collect::<Vec<u8>>(),
    )
    .unwrap();
    fails(&text_config(&latin, ""), "latin.txt", &["not UTF-8"]);
    // Too short for seq_len, and empty: said, with the file named.
    let short = dir.join("data/short.txt");
    std::fs::write(&short, "0123456789").unwrap();
    fails(
        &text_config(&short, ""),
        "short.txt",
        &["too short for data.seq_len = 32"],
    );
    let empty = dir.join("data/empty.txt");
    std::fs::write(&empty, "").unwrap();
    fails(&text_config(&empty, ""), "empty.txt", &["empty"]);
    train(&text_config(&latin, "encoding = \"latin-1\""), &TrainOptions::default()).unwrap();
}

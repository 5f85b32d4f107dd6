//! The trainer on a small dataset written here in Fashion-MNIST's format: it learns, logs, ends
//! the EP, resumes bit-identically, survives an interrupted checkpoint write, and stops cleanly
//! on a non-finite loss.

use std::path::{Path, PathBuf};

use enlighten::strategy::Monitor;
use enlighten_trainer::train::{
    load_checkpoint, load_verified_checkpoint, train as run_training, OptimKind, TrainConfig, TrainOptions,
};
use enlighten_trainer::Error;
use std::sync::atomic::AtomicBool;

mod support;
use enlighten::testing::serial;
use support::{metrics, scratch, write_dataset, write_faint_dataset};

fn train(
    config: &TrainConfig,
    resume: bool,
    progress: bool,
) -> enlighten_trainer::Result<enlighten_trainer::train::Summary> {
    run_training(
        config,
        &TrainOptions {
            resume,
            progress,
            interrupt: None,
            ..Default::default()
        },
    )
}

fn config(dir: &Path, name: &str, extra_run: &str, lr: f64) -> TrainConfig {
    TrainConfig::from_toml(&format!(
        r#"
        [run]
        name = "{name}"
        seed = 3
        device = "cpu"
        out_dir = "{out}"
        eval_every = 4
        log_every = 2
        {extra_run}
        [data]
        dataset = "fashion-mnist"
        dir = "{data}"
        val_fraction = 0.2
        batch_size = 32
        augment = true
        pad = 2
        [model]
        name = "small-cnn"
        [optim]
        lr = {lr:?}
        epochs = 3
        warmup_epochs = 0.5
        [strategy]
        kind = "mixup-pause"
        alpha = 0.4
        [strategy.ep]
        end = "accuracy"
        threshold = {{ kind = "raw", value = 0.5 }}
        "#,
        out = dir.join("runs").display(),
        data = dir.join("data").display(),
    ))
    .unwrap()
}

fn setup(name: &str) -> PathBuf {
    let dir = scratch(name);
    std::fs::create_dir_all(dir.join("data")).unwrap();
    write_dataset(&dir.join("data"));
    dir
}

/// The number of tensors in two runs' latest checkpoints (their names must match, in order) and
/// the names of those that differ.
fn compare_checkpoints(dir: &Path, a: &str, b: &str) -> (usize, Vec<String>) {
    let load = |run: &str| {
        load_checkpoint(&dir.join("runs").join(run).join("checkpoints"))
            .unwrap()
            .unwrap()
            .1
    };
    let (a, b) = (load(a), load(b));
    let names = |v: &[(String, tch::Tensor)]| v.iter().map(|(n, _)| n.clone()).collect::<Vec<_>>();
    assert_eq!(names(&a), names(&b), "the same tensors in both checkpoints");
    let differing = a
        .iter()
        .zip(&b)
        .filter(|((_, x), (_, y))| !x.equal(y))
        .map(|((n, _), _)| n.clone())
        .collect();
    (a.len(), differing)
}

#[test]
fn trains_logs_and_switches_mixup_on_at_the_ep_end() {
    let _one = serial();
    let dir = setup("learn");
    let s = train(&config(&dir, "pause", "", 0.05), false, false).unwrap();
    assert_eq!(s.steps, 24, "3 epochs of 256 / 32 batches");
    let lines = metrics(&dir, "pause");
    assert!(
        lines.last().unwrap().loss < lines.first().unwrap().loss,
        "the loss comes down"
    );
    assert!(s.test > 0.9, "test accuracy {}", s.test);
    let end = s.ep_end.expect("validation accuracy reaches 50% on this task").step;
    for l in &lines {
        assert_eq!(l.in_ep, l.step < end, "step {} vs EP end {end}", l.step);
        assert_eq!(
            l.alpha,
            if l.step < end { 0.0 } else { 0.4 },
            "Mixup paused in the EP, on after (step {})",
            l.step
        );
    }
    for file in ["config.toml", "summary.json", "checkpoints/latest"] {
        assert!(dir.join("runs/pause").join(file).exists(), "{file}");
    }
    let written =
        TrainConfig::from_toml(&std::fs::read_to_string(dir.join("runs/pause/config.toml")).unwrap()).unwrap();
    assert_eq!(
        written,
        config(&dir, "pause", "", 0.05),
        "the resolved config round-trips"
    );
    // A finished run is not silently overwritten.
    assert!(matches!(
        train(&config(&dir, "pause", "", 0.05), false, false),
        Err(Error::Value { arg: "run.name", .. })
    ));
}

#[test]
fn resuming_equals_running_straight_through() {
    let _one = serial();
    let dir = setup("resume");
    train(&config(&dir, "straight", "", 0.05), false, false).unwrap();
    train(&config(&dir, "split", "max_steps = 8", 0.05), false, false).unwrap();
    train(&config(&dir, "split", "", 0.05), true, false).unwrap();
    let state = |run: &str| {
        load_checkpoint(&dir.join("runs").join(run).join("checkpoints"))
            .unwrap()
            .unwrap()
            .0
    };
    assert_eq!(state("straight"), state("split"), "step, RNG and schedule state");
    let (_, differing) = compare_checkpoints(&dir, "straight", "split");
    assert!(differing.is_empty(), "resumed run differs in {differing:?}");
    let (ma, mb) = (metrics(&dir, "straight"), metrics(&dir, "split"));
    assert_eq!(ma.len(), mb.len());
    for (x, y) in ma.iter().zip(&mb) {
        assert_eq!((x.step, x.loss, x.val), (y.step, y.loss, y.val));
    }
}

#[test]
fn adamw_with_clipping_learns_and_resumes_bit_identically() {
    let _one = serial();
    let dir = setup("adamw");
    let adamw = |name: &str, extra: &str| {
        let mut c = config(&dir, name, extra, 0.003);
        c.optim.kind = OptimKind::Adamw;
        c.optim.weight_decay = 0.01;
        c.optim.clip_norm = Some(1.0);
        c
    };
    let s = train(&adamw("straight", ""), false, false).unwrap();
    assert!(s.test > 0.9, "AdamW test accuracy {}", s.test);
    train(&adamw("split", "max_steps = 11"), false, false).unwrap();
    train(&adamw("split", ""), true, false).unwrap();
    let (count, differing) = compare_checkpoints(&dir, "straight", "split");
    assert!(count > 20, "model variables and both moments");
    assert!(differing.is_empty(), "resumed AdamW differs in {differing:?}");
}

#[test]
fn an_interrupted_checkpoint_write_leaves_the_previous_one_usable() {
    let _one = serial();
    let dir = setup("interrupt");
    train(&config(&dir, "run", "max_steps = 8", 0.05), false, false).unwrap();
    let ckpts = dir.join("runs/run/checkpoints");
    // A crash after writing the temporary folder and pointer, before either rename.
    std::fs::create_dir_all(ckpts.join("ckpt.tmp")).unwrap();
    std::fs::write(ckpts.join("ckpt.tmp/tensors.ot"), b"partial").unwrap();
    std::fs::write(ckpts.join("latest.tmp"), b"ckpt-999").unwrap();
    let (state, _) = load_checkpoint(&ckpts).unwrap().unwrap();
    assert_eq!(state.step, 8);
    let s = train(&config(&dir, "run", "", 0.05), true, false).unwrap();
    assert_eq!(s.steps, 24);
}

#[test]
fn an_interrupt_checkpoints_the_step_and_resume_finishes_the_run() {
    let _one = serial();
    let dir = setup("ctrl-c");
    let flag = AtomicBool::new(true); // as if Ctrl-C came during the first step
    match run_training(
        &config(&dir, "stop", "", 0.05),
        &TrainOptions {
            interrupt: Some(&flag),
            ..Default::default()
        },
    ) {
        Err(Error::Interrupted { step, checkpoint }) => {
            assert_eq!(step, 1);
            assert!(checkpoint.ends_with("ckpt-1"), "{checkpoint:?}");
        }
        other => panic!("expected an interruption, got {other:?}"),
    }
    let s = train(&config(&dir, "stop", "", 0.05), true, false).unwrap();
    assert_eq!(s.steps, 24);
    train(&config(&dir, "straight", "", 0.05), false, false).unwrap();
    let (_, differing) = compare_checkpoints(&dir, "stop", "straight");
    assert!(
        differing.is_empty(),
        "interrupted + resumed differs from straight in {differing:?}"
    );
}

#[test]
fn the_composite_mode_trains_the_same_way() {
    let _one = serial();
    let dir = setup("composite");
    train(&config(&dir, "fused", "max_steps = 12", 0.05), false, false).unwrap();
    train(
        &config(&dir, "tch", "max_steps = 12\nops = \"composite\"", 0.05),
        false,
        false,
    )
    .unwrap();
    let (f, c) = (metrics(&dir, "fused"), metrics(&dir, "tch"));
    assert_eq!(f.len(), c.len());
    // Same draws and the same math; only rounding differs, and it compounds over the steps.
    let first = (f[0].loss - c[0].loss).abs() / f[0].loss;
    assert!(
        first < 1e-5,
        "first logged loss: fused {} vs composite {}",
        f[0].loss,
        c[0].loss
    );
    for (a, b) in f.iter().zip(&c) {
        assert_eq!((a.step, a.in_ep, a.alpha), (b.step, b.in_ep, b.alpha));
        assert!(
            (a.loss - b.loss).abs() < 0.05 * a.loss.max(0.1),
            "step {}: {} vs {}",
            a.step,
            a.loss,
            b.loss
        );
    }
}

#[test]
fn a_non_finite_loss_stops_the_run_with_a_clear_error() {
    let _one = serial();
    let dir = setup("nan");
    match train(&config(&dir, "diverge", "", 1e30), false, false) {
        Err(e @ Error::Diverged { checkpoint: None, .. }) => {
            let text = e.to_string();
            assert!(text.contains("`loss`"), "{e}");
            assert!(
                text.contains("no checkpoint was written yet") && !text.contains("is kept"),
                "no checkpoint exists at the first step: {e}"
            );
        }
        Err(e) => panic!("a diverging run failed otherwise: {e}"),
        Ok(s) => panic!("a diverging run finished: {s:?}"),
    }
}

#[test]
fn invalid_train_configs_name_their_field() {
    let _one = serial();
    let dir = scratch("bad");
    let good = toml::to_string(&config(&dir, "ok", "", 0.05)).unwrap();
    for (from, to, field) in [
        ("batch_size = 32", "batch_size = 0", "data.batch_size"),
        ("epochs = 3", "epochs = 0", "optim.epochs"),
        ("name = \"ok\"", "name = \"a/b\"", "run.name"),
        ("log_every = 2", "log_every = 0", "run.log_every"),
        ("val_fraction = 0.2", "val_fraction = 1.0", "data.val_fraction"),
        ("lr = 0.05", "lr = 0.05\nclip_norm = -1.0", "optim.clip_norm"),
        ("betas = [0.9, 0.999]", "betas = [0.9, 1.5]", "optim.betas"),
        (
            "collective_timeout_s = 600",
            "collective_timeout_s = 0",
            "run.collective_timeout_s",
        ),
        ("backend = \"auto\"", "backend = \"mpi\"", "backend"),
        (
            "kind = \"mixup-pause\"",
            "kind = \"mixup-pause\"\nscope = \"world\"",
            "scope",
        ),
    ] {
        let text = good.replace(from, to);
        assert_ne!(text, good, "{from} not found in\n{good}");
        match TrainConfig::from_toml(&text) {
            Err(e) => assert!(e.to_string().contains(field), "`{e}` does not name {field}"),
            Ok(_) => panic!("accepted {to}"),
        }
    }
}

#[test]
fn analyze_writes_interference_zero_shares_embeddings_and_plots() {
    let _one = serial();
    let dir = setup("analyze");
    let c = config(&dir, "an", "", 0.05);
    let options = enlighten_trainer::analyze::AnalyzeOptions {
        steps: 12,
        snapshots: 2,
        pairs: 8,
        batch_sizes: vec![1, 4],
        repeats: 2,
        widths: vec![4, 8],
        zero_every: 4,
        ..Default::default()
    };
    let (a, out) = enlighten_trainer::analyze::analyze(&c, &options, false).unwrap();
    assert_eq!(a.snapshots.iter().map(|s| s.step).collect::<Vec<_>>(), [0, 12]);
    for s in &a.snapshots {
        assert_eq!(s.cosines.len(), 8);
        assert!(s.cosines.iter().all(|c| (-1.0..=1.0).contains(c)), "{:?}", s.cosines);
        assert_eq!(s.by_batch.iter().map(|b| b.pairs).collect::<Vec<_>>(), [1, 4]);
        // Every validation image of classes 0-2 (64 images of 4 balanced classes: about 48).
        assert!(
            (30..=64).contains(&s.embedding.len())
                && s.embedding.iter().all(|e| (0..3).contains(&e.0) && e.1.is_finite()),
            "{}",
            s.embedding.len()
        );
    }
    assert_eq!(a.widths.iter().map(|w| w.width).collect::<Vec<_>>(), [4, 8]);
    assert!(a.widths[0].parameters < a.widths[1].parameters);
    assert_eq!(a.zero_traces.len(), 3, "vanilla and two alphas");
    for z in &a.zero_traces {
        assert_eq!(z.points.iter().map(|p| p.0).collect::<Vec<_>>(), [0, 4, 8, 12]);
        assert!(z
            .points
            .iter()
            .all(|p| p.1.len() == 3 && p.1.iter().all(|s| (0.0..=1.0).contains(s))));
    }
    for f in [
        "report.md",
        "analysis.json",
        "interference.png",
        "zero_vs_alpha.png",
        "embeddings.png",
    ] {
        assert!(
            std::fs::metadata(out.join(f)).map(|m| m.len() > 500).unwrap_or(false),
            "{f}"
        );
    }
    // Nothing to measure is refused.
    let none = enlighten_trainer::analyze::AnalyzeOptions {
        steps: 0,
        ..options.clone()
    };
    assert!(enlighten_trainer::analyze::analyze(&c, &none, false)
        .unwrap_err()
        .to_string()
        .contains("options"));
    // Forecasting has no classes to mix.
    let mut f = c.clone();
    f.data.dataset = enlighten_trainer::train::Dataset::VicElec;
    f.model.name = enlighten_trainer::train::ModelName::MlpForecaster;
    f.data.augment = false;
    f.strategy = enlighten::strategy::StrategyConfig::from_toml(
        "[strategy]\nkind = \"vanilla\"\n[strategy.ep]\nend = \"steps\"\nsteps = 5",
    )
    .unwrap();
    assert!(enlighten_trainer::analyze::analyze(&f, &options, false)
        .unwrap_err()
        .to_string()
        .contains("data.dataset"));
}

#[test]
fn overrides_set_any_field_and_are_validated() {
    let dir = scratch("overrides");
    let text = toml::to_string(&config(&dir, "ok", "", 0.05)).unwrap();
    let sets = |v: &[&str]| TrainConfig::from_toml_with(&text, &v.iter().map(|s| s.to_string()).collect::<Vec<_>>());
    let c = sets(&[
        "data.subset=0.1",
        "run.name=ten",
        "strategy.ep={end=\"epochs\", epochs=2}",
        "model.width=16",
    ])
    .unwrap();
    assert_eq!(
        (c.data.subset, c.run.name.as_str(), c.model.width),
        (0.1, "ten", Some(16))
    );
    assert_eq!(c.strategy.ep, enlighten::strategy::EpEnd::Epochs { epochs: 2 });
    assert!(sets(&["data.subset=2.0"])
        .unwrap_err()
        .to_string()
        .contains("data.subset"));
    assert!(sets(&["data.subset"]).unwrap_err().to_string().contains("--set"));
    assert!(sets(&["data.batch_size.x=1"])
        .unwrap_err()
        .to_string()
        .contains("--set"));
}

#[test]
fn bf16_autocast_on_the_cpu_is_refused_by_name() {
    let _one = serial();
    let dir = setup("autocast");
    let c = config(&dir, "bf16", "autocast = \"bf16\"", 0.05);
    let e = train(&c, false, false).unwrap_err().to_string();
    assert!(e.contains("run.autocast") && e.contains("CUDA"), "{e}");
}

#[test]
fn every_configuration_in_configs_validates() {
    // The configurations live at the workspace root, beside the README that runs them.
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("../configs");
    let mut names = Vec::new();
    for entry in std::fs::read_dir(&dir).unwrap() {
        let path = entry.unwrap().path();
        if path.extension().is_some_and(|e| e == "toml") {
            let text = std::fs::read_to_string(&path).unwrap();
            TrainConfig::from_toml(&text).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
            names.push(path.file_name().unwrap().to_string_lossy().into_owned());
        }
    }
    for paper in [
        "tiny-imagenet-vit-s-pause10.toml",
        "tiny-imagenet-vit-s-pause25.toml",
        "tiny-imagenet-vit-s-pause-acc.toml",
        "imagenet-vit-t-alpha-boost.toml",
        "cifar100-preact-resnet50.toml",
    ] {
        assert!(names.iter().any(|n| n == paper), "{paper} missing from configs/");
    }
}

/// Flips a byte in the middle of a checkpoint's tensors.
fn corrupt(ckpt: &Path) {
    let path = ckpt.join("tensors.ot");
    let mut bytes = std::fs::read(&path).unwrap();
    let middle = bytes.len() / 2;
    bytes[middle] ^= 0x40;
    std::fs::write(&path, bytes).unwrap();
}

#[test]
fn a_corrupt_checkpoint_is_refused_and_resume_falls_back_to_the_previous_one() {
    let _one = serial();
    let dir = setup("corrupt");
    // checkpoint_every = 4 steps: 4, 8 (an epoch end) and 12 (the last step); the two newest kept.
    train(
        &config(&dir, "run", "max_steps = 12\ncheckpoint_every = 4", 0.05),
        false,
        false,
    )
    .unwrap();
    let ckpts = dir.join("runs/run/checkpoints");
    let mut kept: Vec<String> = std::fs::read_dir(&ckpts)
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .filter(|n| n.starts_with("ckpt-"))
        .collect();
    kept.sort();
    assert_eq!(kept, ["ckpt-12", "ckpt-8"]);
    corrupt(&ckpts.join("ckpt-12"));
    let loaded = load_verified_checkpoint(&ckpts).unwrap().unwrap();
    assert_eq!(loaded.state.step, 8, "the newest checkpoint that verifies");
    assert!(loaded.rejected[0].0.ends_with("ckpt-12"));
    assert!(loaded.rejected[0].1.contains("tensors.ot"), "{}", loaded.rejected[0].1);
    // The resumed run is the straight run: nothing of the corrupt state leaks in.
    let s = train(&config(&dir, "run", "checkpoint_every = 4", 0.05), true, false).unwrap();
    assert_eq!(s.steps, 24);
    train(&config(&dir, "straight", "checkpoint_every = 4", 0.05), false, false).unwrap();
    let (_, differing) = compare_checkpoints(&dir, "run", "straight");
    assert!(
        differing.is_empty(),
        "fallback + resume differs from straight in {differing:?}"
    );
    // With every checkpoint damaged, resuming is an error that says so.
    for ckpt in ["ckpt-20", "ckpt-24"] {
        corrupt(&ckpts.join(ckpt));
    }
    match train(&config(&dir, "run", "checkpoint_every = 4", 0.05), true, false) {
        Err(e @ Error::Checkpoint { .. }) => assert!(e.to_string().contains("no checkpoint verifies"), "{e}"),
        other => panic!("resumed from corrupt checkpoints: {other:?}"),
    }
}

#[test]
fn resume_refuses_another_model_or_strategy_and_records_allowed_changes() {
    let _one = serial();
    let dir = setup("changed");
    let base = config(&dir, "run", "max_steps = 4", 0.05);
    train(&base, false, false).unwrap();
    let record = dir.join("runs/run/config.toml");
    let changed = |sets: &[&str]| {
        let text = toml::to_string(&base).unwrap();
        TrainConfig::from_toml_with(&text, &sets.iter().map(|s| s.to_string()).collect::<Vec<_>>()).unwrap()
    };
    // Another model (the issue's resnet18 over a small-cnn run) or strategy: refused, listed.
    for (sets, named) in [
        (
            &["model.name=resnet18"][..],
            &["model.name = \"resnet18\" (was \"small-cnn\")"][..],
        ),
        (
            &["strategy.kind=vanilla", "optim.lr=0.2"],
            &["strategy.kind", "optim.lr = 0.2 (was 0.05)"],
        ),
    ] {
        match train(&changed(sets), true, false) {
            Err(e @ Error::Resume { .. }) => {
                for n in named {
                    assert!(e.to_string().contains(n), "`{e}` lacks {n}");
                }
            }
            other => panic!("resumed with {sets:?}: {other:?}"),
        }
    }
    let before = std::fs::read_to_string(&record).unwrap();
    assert!(
        !before.contains("resnet18") && !before.contains("vanilla"),
        "the record is untouched"
    );
    // A longer schedule may change: applied, and appended to the record.
    let longer = changed(&["optim.epochs=4", "run.max_steps=6"]);
    assert_eq!(train(&longer, true, false).unwrap().steps, 6);
    let after = std::fs::read_to_string(&record).unwrap();
    assert!(after.starts_with(&before), "appended, not overwritten");
    assert!(after.contains("optim.epochs = 4 (was 3)"), "{after}");
    assert_eq!(
        TrainConfig::from_toml(&after).unwrap(),
        base,
        "the record still parses as what ran"
    );
    // A record edited by hand to another width: the checkpoint's tensors do not fit the model,
    // a typed error naming the first parameter that differs (no panic in copy_).
    let wider = changed(&["model.width=16", "run.max_steps=6", "optim.epochs=4"]);
    std::fs::write(&record, toml::to_string(&wider).unwrap()).unwrap();
    match train(&wider, true, false) {
        Err(Error::Checkpoint { problem, .. }) => {
            assert!(
                problem.contains("parameter `model.") && problem.contains("in this model"),
                "{problem}"
            )
        }
        other => panic!("resumed another model: {other:?}"),
    }
}

#[test]
fn configurations_refuse_unknown_keys_and_settings_that_cannot_work_together() {
    let dir = scratch("strict");
    let good = toml::to_string(&config(&dir, "ok", "", 0.05)).unwrap();
    let refused = |text: &str, words: &[&str]| match TrainConfig::from_toml(text) {
        Err(e) => {
            for w in words {
                assert!(e.to_string().contains(w), "`{e}` lacks `{w}`");
            }
        }
        Ok(_) => panic!("accepted:\n{text}"),
    };
    assert!(
        good.contains("monitor = \"auto\"\n"),
        "the test rewrites the default monitor:\n{good}"
    );
    // Unknown keys in the tagged tables of [strategy.ep].
    refused(
        &good.replace("monitor = \"auto\"\n", "monitor = \"auto\"\nepochs = 3\n"),
        &["epochs"],
    );
    refused(
        &good.replace("monitor = \"auto\"", "monitor = \"val\"\neval_evry = 5"),
        &["eval_evry"],
    );
    refused(
        &good.replace("kind = \"raw\"", "kind = \"raw\", classes = 4"),
        &["classes"],
    );
    // An EP watching validation accuracy needs a validation split.
    refused(
        &good
            .replace("val_fraction = 0.2", "val_fraction = 0.0")
            .replace("monitor = \"auto\"", "monitor = \"val\""),
        &["strategy.ep.monitor", "val_fraction = 0"],
    );
    refused(
        &good.replace("log_every = 2", "log_every = 2\nmax_steps = 0"),
        &["run.max_steps", "got 0"],
    );
    refused(
        &good.replace("name = \"small-cnn\"", "name = \"small-cnn\"\nwidth = 0"),
        &["model.width", "got 0"],
    );
    let e = TrainConfig::from_toml(&good.replace("name = \"small-cnn\"", "name = \"small-cnn\"\nwidth = 0"))
        .unwrap_err()
        .to_string();
    assert!(!e.contains("Some("), "{e}");
    refused(
        &good.replace("log_every = 2", "log_every = 2\ncheckpoint_every = \"soon\""),
        &["checkpoint_every"],
    );
}

#[test]
fn a_new_run_over_checkpoints_names_the_run_folder_where_it_is() {
    let _one = serial();
    let dir = setup("elsewhere");
    train(&config(&dir, "run", "max_steps = 2", 0.05), false, false).unwrap();
    let e = train(&config(&dir, "run", "max_steps = 2", 0.05), false, false)
        .unwrap_err()
        .to_string();
    assert!(e.contains(&dir.join("runs/run").display().to_string()), "{e}");
}

/// Trains on the faint dataset with the `[strategy]` lines `strategy` and the `[strategy.ep]`
/// lines `ep`.
fn faint_run(dir: &Path, name: &str, strategy: &str, ep: &str) -> enlighten_trainer::train::Summary {
    let config = TrainConfig::from_toml(&format!(
        r#"
        [run]
        name = "{name}"
        seed = 5
        device = "cpu"
        out_dir = "{out}"
        log_every = 5
        max_steps = 40
        {curve}
        [data]
        dataset = "fashion-mnist"
        dir = "{data}"
        val_fraction = 0.2
        batch_size = 64
        [model]
        name = "small-cnn"
        [optim]
        lr = 0.02
        epochs = 2
        [strategy]
        alpha = 0.4
        {strategy}
        [strategy.ep]
        end = "accuracy"
        {ep}
        "#,
        out = dir.join("runs").display(),
        data = dir.join("data").display(),
        // The ground truth's runs validate after every step, in the EP and after it.
        curve = if name == "truth" { "eval_every = 1" } else { "" },
    ))
    .unwrap();
    train(&config, false, false).unwrap()
}

const PAUSE: &str = "kind = \"mixup-pause\"";
/// Alpha Boost by a factor of 1: it mixes in the EP (so `auto` probes), and its training does
/// not depend on where the EP ends, so a run watched by full validations is the same run.
const BOOST: &str = "kind = \"alpha-boost\"\nboost = 1.0";

/// The faint dataset's folder.
fn faint_setup(name: &str) -> PathBuf {
    let dir = scratch(name);
    std::fs::create_dir_all(dir.join("data")).unwrap();
    write_faint_dataset(&dir.join("data"), 20.0, 120.0);
    dir
}

#[test]
fn the_default_monitor_ends_the_ep_within_a_few_steps_of_full_validation_at_under_1_percent() {
    let _one = serial();
    let dir = faint_setup("truth");
    // The ground truth: the whole validation split after every step.
    let truth = faint_run(&dir, "truth", PAUSE, "monitor = \"val\"\neval_every = 1");
    let t = truth.ep_end.expect("validation reaches 50%");
    // The default: each batch's own-label accuracy over a window, no extra forward pass.
    let auto = faint_run(&dir, "auto", PAUSE, "");
    let a = auto.ep_end.expect("the default monitor ends the EP");
    eprintln!("truth {t}\ndefault {a}\ncost {:?}", auto.monitor);
    assert_eq!(
        t.interval(),
        (t.step - 1, t.step),
        "one step wide when evaluated every step"
    );
    assert!(t.step > 8, "the crossing is some steps in: {t}");
    assert_eq!(a.monitor, Some(Monitor::TrainClean));
    assert!(a.step.abs_diff(t.step) <= 4, "default end {a} vs truth {t}");
    let (lo, hi) = a.interval();
    assert!(
        lo <= t.step + 1 && t.step <= hi + 1,
        "the truth {t} near the interval {lo}..{hi}"
    );
    assert!(
        (a.accuracy.unwrap() - 0.5).abs() < 0.1 && a.std_error.unwrap() < 0.05,
        "{a}"
    );
    let cost = auto.monitor.expect("the monitor's cost is reported");
    assert!(cost.cost_share < 0.01, "{cost:?}");
    assert!(cost.observations >= a.step - 3, "one observation per EP step: {cost:?}");
    // metrics.jsonl: the end (with its interval) on its step's line, the monitor's value in the EP.
    let lines = metrics(&dir, "auto");
    let end_line = lines
        .iter()
        .find(|l| l.ep_end.is_some())
        .expect("a line carries the end");
    let logged = end_line.ep_end.unwrap();
    assert_eq!(
        (end_line.step + 1, logged.interval(), logged.monitor),
        (a.step, a.interval(), a.monitor)
    );
    assert!((logged.std_error.unwrap() - a.std_error.unwrap()).abs() < 1e-12);
    assert!(lines.iter().filter(|l| l.in_ep).all(|l| l.ep_monitor.is_some()));
    assert!(lines.iter().filter(|l| l.step > a.step).all(|l| l.ep_monitor.is_none()));
}

#[test]
fn a_mixing_ep_is_watched_by_a_probe_within_its_budget() {
    let _one = serial();
    let dir = faint_setup("probe");
    let truth = faint_run(&dir, "truth", BOOST, "monitor = \"val\"\neval_every = 1");
    let t = truth.ep_end.expect("validation reaches 50%");
    // A budget of 10% instead of the default 1% spaces the probes a few steps apart here.
    let probe = faint_run(&dir, "probe", BOOST, "probe_rows = 64\nprobe_budget = 0.1");
    let p = probe.ep_end.expect("the probe ends the EP");
    let cost = probe.monitor.expect("the probe's cost is reported");
    eprintln!("truth {t}\nprobe {p}\ncost {cost:?}");
    assert_eq!((p.monitor, cost.probe_rows), (Some(Monitor::Probe), Some(64)));
    assert!(cost.cost_share < 0.1, "measured share {cost:?}");
    assert!(cost.observations < p.step / 2, "fewer probes than steps: {cost:?}");
    let (lo, hi) = p.interval();
    assert!(hi > lo && hi - lo < 15, "{p}");
    // The same training: the probe's value is the validation accuracy of its step up to the
    // probe's sampling error, and the full validation agrees with what the probe saw at both
    // ends of its interval (below, then at or above 0.5), up to that error.
    let curve = metrics(&dir, "truth");
    let val = |end: u64| curve.iter().find(|l| l.step + 1 == end).and_then(|l| l.val).unwrap();
    let se = p.std_error.unwrap();
    assert!(
        (p.accuracy.unwrap() - val(hi)).abs() < 4.0 * se,
        "probe {p} vs validation {}",
        val(hi)
    );
    assert!(
        val(hi) > 0.5 - 3.0 * se && val(lo) < 0.5 + 3.0 * se,
        "truth {t} vs probe {p}"
    );
}

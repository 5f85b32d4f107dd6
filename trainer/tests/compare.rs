//! `enlighten compare`'s parts: the t-tests against published values, the report and plots from
//! fixed run files, and the skip/resume logic with a fake runner.

use std::path::Path;

use enlighten::strategy::{EpEndInfo, Monitor, StrategyKind};
use enlighten_trainer::compare::stats::{
    bootstrap_diff, holm, ln_gamma, paired, quantile_sorted, regularized_beta, std_dev, two_sided_p, welch,
};
use enlighten_trainer::compare::{compare, plan, CompareSection, Comparison, Outcome, PlannedRun, Report, Runner};
use enlighten_trainer::train::{MetricsLine, MonitorCost, Parallelism, Summary, Timing, TrainConfig};

mod support;
use support::scratch;

// R's `sleep` data (Cushny & Peebles): extra hours of sleep under two drugs, 10 patients.
const DRUG1: [f64; 10] = [0.7, -1.6, -0.2, -1.2, -0.1, 3.4, 3.7, 0.8, 0.0, 2.0];
const DRUG2: [f64; 10] = [1.9, 0.8, 1.1, 0.1, -0.1, 4.4, 5.5, 1.6, 4.6, 3.4];

fn close(a: f64, b: f64, tol: f64) -> bool {
    (a - b).abs() <= tol * b.abs().max(1e-300)
}

#[test]
fn welch_and_paired_t_tests_match_the_textbook_values() {
    // R: t.test(extra ~ group, data = sleep) -> t = -1.8608, df = 17.776, p-value = 0.07939.
    // scipy.stats.ttest_ind(equal_var=False): t = -1.8608134674868526, p = 0.07939414018735823.
    let w = welch(&DRUG1, &DRUG2).unwrap();
    assert!(close(w.t, -1.860_813_467_486_852_6, 1e-12), "{w:?}");
    assert!(close(w.df, 17.776_473_516_178_488, 1e-12), "{w:?}");
    assert!(close(w.p, 0.079_394_140_187_358_23, 1e-9), "{w:?}");
    // R: t.test(..., paired = TRUE) -> t = -4.0621, df = 9, p-value = 0.002833.
    let p = paired(&DRUG1, &DRUG2).unwrap();
    assert!(close(p.t, -4.062_127_683_382_037, 1e-12) && p.df == 9.0, "{p:?}");
    assert!(close(p.p, 0.002_832_890_197_384_27, 1e-9), "{p:?}");
    // Three seeds, as a comparison has (values from scipy).
    let (a, b) = ([0.912, 0.915, 0.909], [0.905, 0.907, 0.906]);
    let w = welch(&a, &b).unwrap();
    assert!(
        close(w.t, 3.286_335_345_030_935_6, 1e-10)
            && close(w.df, 2.439_024_390_243_903, 1e-10)
            && close(w.p, 0.062_041_422_967_993_05, 1e-8),
        "{w:?}"
    );
    assert!(close(paired(&a, &b).unwrap().p, 0.059_124_927_719_229_94, 1e-8));
}

#[test]
fn the_distribution_functions_match_scipy() {
    assert!(close(two_sided_p(2.5, 3.7), 0.071_822_022_911_826_75, 1e-9));
    assert!(close(regularized_beta(0.3, 2.5, 0.5), 0.018_927_124_071_945_658, 1e-10));
    assert!(close(regularized_beta(0.9, 10.0, 3.0), 0.889_130_022_255, 1e-10));
    assert!(close(ln_gamma(0.3), 1.095_797_994_818_075_6, 1e-12));
    assert!(close(ln_gamma(50.5), 146.519_255_490_720_64, 1e-12));
    assert!((two_sided_p(0.0, 5.0) - 1.0).abs() < 1e-12, "t = 0 is p = 1");
}

#[test]
fn degenerate_samples_give_no_test() {
    assert!(welch(&[1.0], &[1.0, 2.0]).is_none(), "one value");
    assert!(welch(&[1.0, 1.0], &[1.0, 1.0]).is_none(), "no variance");
    assert!(
        paired(&[1.0, 2.0, 3.0], &[0.0, 1.0, 2.0]).is_none(),
        "constant differences"
    );
    assert!(paired(&[1.0, 2.0], &[1.0]).is_none(), "unequal lengths");
    assert_eq!(std_dev(&[4.0]), 0.0);
}

#[test]
fn holm_matches_a_hand_computed_example() {
    // Sorted: 0.005 x 4 = 0.02, 0.01 x 3 = 0.03, 0.03 x 2 = 0.06, 0.04 x 1 = 0.04 -> max(0.06, 0.04).
    // R: p.adjust(c(0.01, 0.04, 0.03, 0.005), "holm") -> 0.03 0.06 0.06 0.02.
    let adjusted = holm(&[0.01, 0.04, 0.03, 0.005]);
    for (a, b) in adjusted.iter().zip([0.03, 0.06, 0.06, 0.02]) {
        assert!((a - b).abs() < 1e-15, "{adjusted:?}");
    }
    assert_eq!(holm(&[0.5, 0.6]), [1.0, 1.0], "capped at 1, monotone");
    assert_eq!(holm(&[0.2]), [0.2], "one comparison: unchanged");
    // A comparison without a test still counts in m.
    let with_nan = holm(&[0.01, f64::NAN]);
    assert!(
        (with_nan[0] - 0.02).abs() < 1e-15 && with_nan[1].is_nan(),
        "{with_nan:?}"
    );
    assert!(holm(&[]).is_empty());
}

#[test]
fn the_bootstrap_interval_is_seeded_and_covers_the_difference() {
    assert!(
        (quantile_sorted(&[1.0, 2.0, 3.0, 4.0], 0.25) - 1.75).abs() < 1e-15,
        "numpy's linear rule"
    );
    let (a, b) = ([0.912, 0.915, 0.909, 0.913, 0.910], [0.905, 0.907, 0.906, 0.903, 0.908]);
    let ci = bootstrap_diff(&a, &b, 0.95, 10_000, 7).unwrap();
    assert_eq!(
        ci,
        bootstrap_diff(&a, &b, 0.95, 10_000, 7).unwrap(),
        "same seed, same interval"
    );
    assert_ne!(ci, bootstrap_diff(&a, &b, 0.95, 10_000, 8).unwrap());
    let diff = enlighten_trainer::compare::stats::mean(&a) - enlighten_trainer::compare::stats::mean(&b);
    assert!(ci.low < diff && diff < ci.high && ci.low > 0.0, "{ci:?} around {diff}");
    // The normal approximation's half-width 1.96 se (se from the plug-in variances) is close.
    let plug = |x: &[f64]| std_dev(x).powi(2) * (x.len() - 1) as f64 / x.len() as f64 / x.len() as f64;
    let half = 1.96 * (plug(&a) + plug(&b)).sqrt();
    assert!(
        ((ci.high - ci.low) / 2.0 - half).abs() < 0.15 * half,
        "{ci:?} vs ±{half}"
    );
    let narrow = bootstrap_diff(&a, &b, 0.5, 10_000, 7).unwrap();
    assert!(narrow.low > ci.low && narrow.high < ci.high);
    // Constant samples: no spread.
    let fixed = bootstrap_diff(&[1.0, 1.0], &[0.0, 0.0], 0.95, 100, 0).unwrap();
    assert_eq!((fixed.low, fixed.high), (1.0, 1.0));
    assert!(bootstrap_diff(&[1.0], &[0.0, 1.0], 0.95, 100, 0).is_none());
    assert!(bootstrap_diff(&a, &b, 1.0, 100, 0).is_none());
}

fn base_config(dir: &Path) -> TrainConfig {
    TrainConfig::from_toml(&format!(
        "[run]\nname = \"cmp\"\nseed = 10\nout_dir = \"{}\"\n[data]\ndataset = \"digits\"\n[model]\nname = \"small-cnn\"\n[optim]\n\
         [strategy]\nkind = \"high-loss-removal\"\ndrop_share = 0.2\n[compare]\nstrategies = [\"vanilla\", \"mixup-pause\", \"high-loss-removal\"]\nseeds = 3\n",
        dir.display()
    ))
    .unwrap()
}

/// What a finished run leaves: a summary and metrics whose numbers depend on strategy and seed.
fn write_run(run: &PlannedRun) -> Summary {
    let dir = run.dir();
    std::fs::create_dir_all(&dir).unwrap();
    let offset = match run.strategy {
        StrategyKind::MixupPause => 0.01,
        StrategyKind::HighLossRemoval => 0.002,
        _ => 0.0,
    };
    let noise = [0.001, -0.002, 0.0015][(run.seed - 10) as usize];
    let mut lines = String::new();
    for step in (9..200).step_by(10) {
        let val = 0.5 + 0.4 * (step as f64 / 200.0) + offset + noise;
        let l = MetricsLine {
            step,
            epoch: (step / 100) as u32,
            lr: 0.1,
            loss: 2.0 - val,
            train_accuracy: Some(val - 0.05),
            in_ep: step < 40,
            alpha: if step < 40 { 0.0 } else { 0.2 },
            drop_share: 0.0,
            val: Some(val),
            val_loss: Some(1.0 - val),
            zero_share: Some(vec![0.3 + offset, 0.5 - noise]),
            benr: (step % 100 == 99).then_some(2.0 + offset * 10.0),
            ep_monitor: None,
            ep_end: None,
            parallelism: Parallelism::default(),
        };
        lines.push_str(&serde_json::to_string(&l).unwrap());
        lines.push('\n');
    }
    std::fs::write(dir.join("metrics.jsonl"), lines).unwrap();
    let s = Summary {
        name: run.config.run.name.clone(),
        strategy: run.strategy.name().into(),
        task: "image".into(),
        metric: "accuracy".into(),
        higher_is_better: true,
        steps: 200,
        epochs: 2.0,
        final_val: 0.9 + offset + noise,
        best_val: 0.9 + offset + noise,
        test: 0.89 + offset + noise,
        test_loss: 0.3,
        ep_end: Some(EpEndInfo {
            step: 40,
            epoch: 0,
            accuracy: Some(0.52),
            last_below: Some(30),
            std_error: Some(0.02),
            monitor: Some(Monitor::TrainClean),
            predictions: Some(640.0),
        }),
        monitor: Some(MonitorCost {
            monitor: Monitor::TrainClean,
            seconds: 0.05,
            ep_training_seconds: 10.0,
            cost_share: 0.005,
            observations: 40,
            probe_rows: None,
            probe_every: None,
        }),
        wall_seconds: 12.0,
        samples_per_second: 1000.0,
        timing: Timing::default(),
        skipped_files: Vec::new(),
        parallelism: Parallelism::default(),
        parameter_digest: String::new(),
    };
    std::fs::write(dir.join("summary.json"), serde_json::to_string(&s).unwrap()).unwrap();
    s
}

/// Writes runs as if trained, remembering what it was asked.
struct FakeRunner {
    calls: Vec<(String, bool)>,
}

impl Runner for FakeRunner {
    fn run(
        &mut self,
        run: &PlannedRun,
        resume: bool,
        _index: usize,
        _total: usize,
    ) -> enlighten_trainer::Result<Summary> {
        self.calls.push((run.config.run.name.clone(), resume));
        Ok(write_run(run))
    }
}

#[test]
fn plans_every_strategy_and_seed_with_its_own_folder() {
    let dir = scratch("plan");
    let config = base_config(&dir);
    let runs = plan(&config, config.compare.as_ref().unwrap()).unwrap();
    let names: Vec<String> = runs.iter().map(|r| r.config.run.name.clone()).collect();
    assert_eq!(
        names,
        [
            "vanilla-s10",
            "vanilla-s11",
            "vanilla-s12",
            "mixup-pause-s10",
            "mixup-pause-s11",
            "mixup-pause-s12",
            "high-loss-removal-s10",
            "high-loss-removal-s11",
            "high-loss-removal-s12"
        ]
    );
    assert!(runs.iter().all(|r| r.dir().starts_with(dir.join("cmp"))));
    // The drop share belongs to High-Loss Removal only; other settings are shared.
    assert_eq!(runs[0].config.strategy.drop_share, None);
    assert_eq!(runs[8].config.strategy.drop_share, Some(0.2));
    let bad = CompareSection {
        strategies: vec![StrategyKind::Mixup, StrategyKind::Mixup],
        seeds: 2,
        baseline: None,
    };
    assert!(plan(&config, &bad)
        .unwrap_err()
        .to_string()
        .contains("compare.strategies"));
    let bad = CompareSection {
        seeds: 0,
        ..CompareSection::default()
    };
    assert!(plan(&config, &bad).unwrap_err().to_string().contains("compare.seeds"));
}

#[test]
fn compare_skips_finished_runs_resumes_interrupted_ones_and_reports() {
    let dir = scratch("resume");
    let config = base_config(&dir);
    let section = config.compare.clone().unwrap();
    let runs = plan(&config, &section).unwrap();
    write_run(&runs[0]); // finished
    std::fs::create_dir_all(runs[1].dir().join("checkpoints")).unwrap();
    std::fs::write(runs[1].dir().join("checkpoints").join("latest"), "ckpt-00000010").unwrap(); // interrupted
    let mut runner = FakeRunner { calls: Vec::new() };
    let Comparison {
        report,
        outcomes,
        plots,
    } = compare(&config, &section, &mut runner).unwrap();
    assert_eq!(outcomes[..3], [Outcome::Skipped, Outcome::Resumed, Outcome::Ran]);
    assert_eq!(runner.calls.len(), 8);
    assert_eq!(runner.calls[0], ("vanilla-s11".to_string(), true));
    assert!(runner.calls[1..].iter().all(|(_, resume)| !resume));
    // A second call finds everything finished.
    let mut again = FakeRunner { calls: Vec::new() };
    let outcomes = compare(&config, &section, &mut again).unwrap().outcomes;
    assert!(again.calls.is_empty() && outcomes.iter().all(|o| *o == Outcome::Skipped));

    // The numbers: Mixup Pause is +0.01 on every seed.
    assert_eq!(report.baseline, "vanilla");
    let pause = &report.strategies[1];
    assert!((pause.diff_to_baseline.unwrap() - 0.01).abs() < 1e-12);
    assert!((pause.test_mean - (0.90 + 0.0005 / 3.0)).abs() < 1e-12);
    assert!(pause.welch.unwrap().p < 0.01, "{:?}", pause.welch);
    assert!(
        pause.paired.is_none(),
        "identical differences on every seed have no variance"
    );
    let hlr = &report.strategies[2];
    assert!(
        hlr.welch.unwrap().p > 0.05,
        "+0.002 within the seed noise: {:?}",
        hlr.welch
    );
    // Two comparisons against the baseline: Holm over both, the interval around the difference.
    assert_eq!(report.comparisons, 2);
    let (pw, hw) = (pause.welch.unwrap().p, hlr.welch.unwrap().p);
    let expect = holm(&[pw, hw]);
    assert_eq!((pause.welch_holm, hlr.welch_holm), (Some(expect[0]), Some(expect[1])));
    assert!(
        (pause.welch_holm.unwrap() - 2.0 * pw).abs() < 1e-15,
        "the smaller p doubled"
    );
    assert!(pause.paired_holm.is_none(), "no paired test, no adjusted one");
    assert!(
        hlr.paired.is_none() && hlr.paired_holm.is_none(),
        "constant differences again"
    );
    let ci = pause.diff_ci.unwrap();
    assert!(
        ci.low <= 0.01 + 1e-12 && 0.01 - 1e-12 <= ci.high && ci.level == 0.95,
        "{ci:?}"
    );
    assert!(report.strategies[0].diff_ci.is_none() && report.strategies[0].welch_holm.is_none());
    let md = std::fs::read_to_string(dir.join("cmp/report.md")).unwrap();
    for needle in [
        "| mixup-pause | 0.9002 ± 0.0019",
        "+0.0100",
        "Welch p",
        "Welch p, Holm",
        "paired p, Holm",
        "95% CI of Δ (bootstrap)",
        "2 comparison(s) against vanilla",
        "| 40 (30..40), 0, 0.5200 ± 0.0200, train-clean | 0.50% of 10.0 s |",
        "| [30, 40], ±0.020 (3/3 runs) |",
        "EP end: step interval, accuracy SE (mean)",
        "## Batch-epoch norm ratio (BENR) per epoch, mean ± std over seeds",
        "| mixup-pause | 2.100 ± 0.000 | 2.100 ± 0.000 |",
        "![curves.png](curves.png)",
    ] {
        assert!(md.contains(needle), "report.md lacks `{needle}`:\n{md}");
    }
    let json: Report = serde_json::from_str(&std::fs::read_to_string(dir.join("cmp/report.json")).unwrap()).unwrap();
    assert_eq!(
        (
            json.strategies.len(),
            json.baseline.as_str(),
            json.strategies[1].runs.len()
        ),
        (3, "vanilla", 3)
    );
    assert!((json.strategies[1].test_mean - pause.test_mean).abs() < 1e-12);
    assert_eq!((json.comparisons, json.strategies[1].diff_ci), (2, pause.diff_ci));
    assert_eq!(json.strategies[2].welch_holm, hlr.welch_holm);
    assert_eq!(
        plots
            .iter()
            .map(|p| p.file_name().unwrap().to_str().unwrap())
            .collect::<Vec<_>>(),
        ["curves.png", "zero_share.png"],
        "two epochs of BENR make a table, not a figure"
    );
    for png in ["curves.png", "zero_share.png"] {
        let bytes = std::fs::read(dir.join("cmp").join(png)).unwrap();
        assert!(
            bytes.starts_with(b"\x89PNG") && bytes.len() > 10_000,
            "{png}: {} bytes",
            bytes.len()
        );
    }
}

#[test]
fn a_missing_summary_is_a_clear_error() {
    let dir = scratch("missing");
    let config = base_config(&dir);
    let section = config.compare.clone().unwrap();
    let runs = plan(&config, &section).unwrap();
    let e = Report::collect("cmp", &section, &runs).unwrap_err().to_string();
    assert!(e.contains("summary.json") && e.contains("enlighten compare"), "{e}");
}

#[test]
fn unknown_strategy_names_are_refused_with_the_list() {
    assert_eq!("mixup-pause".parse::<StrategyKind>().unwrap(), StrategyKind::MixupPause);
    let e = "mixup-paws".parse::<StrategyKind>().unwrap_err().to_string();
    assert!(
        e.contains("strategy") && e.contains("mixup-paws") && e.contains("high-loss-removal"),
        "{e}"
    );
}

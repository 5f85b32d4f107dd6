//! The strategy engine, exhaustively: random accuracy sequences, every strategy, configs.

use enlighten::ops::mixup::{LambdaMode, MixKind, PairingMode};
use enlighten::strategy::{
    recommend, AutoThresholds, EpEnd, MixPolicy, Monitor, PhaseController, ProblemScale, RemovalScope, Schedule,
    Strategy, StrategyConfig, StrategyKind, Threshold,
};
use enlighten::SeededRng;

/// Drives a schedule over `steps` steps, feeding `acc(step)` whenever an evaluation is due;
/// returns (the in-EP flag of every step, the alpha of every step, the drop share of every step).
fn drive(
    s: &mut Schedule,
    steps: u64,
    steps_per_epoch: u64,
    acc: impl Fn(u64) -> f64,
    monitor: Monitor,
) -> (Vec<bool>, Vec<f64>, Vec<f64>) {
    let mut rng = SeededRng::new(0);
    let (mut in_ep, mut alpha, mut drop) = (vec![], vec![], vec![]);
    for step in 0..steps {
        let epoch = (step / steps_per_epoch) as u32;
        let plan = s.plan(step, epoch, &mut rng);
        in_ep.push(plan.in_ep);
        alpha.push(plan.mix.alpha);
        drop.push(plan.drop_share);
        if s.eval_due(step) {
            s.observe(monitor, acc(step), step, epoch);
        }
    }
    (in_ep, alpha, drop)
}

#[test]
fn ep_ends_exactly_at_the_first_evaluation_reaching_the_threshold() {
    for seed in 0..300u64 {
        let mut rng = SeededRng::new(seed);
        let eval_every = 1 + rng.below(20);
        let threshold = 0.05 + 0.9 * rng.uniform();
        let steps = 50 + rng.below(400);
        // A noisy, mostly rising accuracy curve, different for every seed.
        let noise: Vec<f64> = (0..steps).map(|_| rng.uniform() * 0.3 - 0.15).collect();
        let speed = 0.5 + 3.0 * rng.uniform();
        let acc = |step: u64| ((step as f64 / steps as f64) * speed + noise[step as usize]).clamp(0.0, 1.0);
        let end = val_end(threshold, eval_every);
        let mut s = Schedule::new(Strategy::mixup_pause(0.4), PhaseController::new(end).unwrap()).unwrap();
        let (in_ep, alpha, _) = drive(&mut s, steps, 37, acc, Monitor::Val);

        let first = (0..steps).find(|&st| (st + 1) % eval_every == 0 && acc(st) >= threshold);
        let expected_end = first.map(|st| st + 1);
        for step in 0..steps {
            let should_be_in = expected_end.is_none_or(|e| step < e);
            assert_eq!(
                in_ep[step as usize], should_be_in,
                "seed {seed}: step {step}, end {expected_end:?}"
            );
            assert_eq!(
                alpha[step as usize],
                if should_be_in { 0.0 } else { 0.4 },
                "seed {seed}: pause alpha at {step}"
            );
        }
        match (s.phase().ended(), expected_end) {
            (Some(info), Some(e)) => {
                assert_eq!(info.step, e, "seed {seed}");
                assert_eq!(info.epoch, ((e - 1) / 37) as u32);
                assert_eq!(info.accuracy, Some(acc(e - 1)));
                // The interval runs from the evaluation before (or step 0) to the end.
                let before = (e > eval_every).then_some(e - eval_every);
                assert_eq!(info.last_below, before, "seed {seed}");
                assert_eq!(info.interval(), (before.unwrap_or(0), e));
            }
            (None, None) => {}
            (got, want) => panic!("seed {seed}: ended {got:?}, expected {want:?}"),
        }
    }
}

/// `monitor = "val"` at `threshold`, every `eval_every` steps.
fn val_end(threshold: f64, eval_every: u64) -> EpEnd {
    let mut end = EpEnd::accuracy(Monitor::Val, Threshold::Raw { value: threshold });
    if let EpEnd::Accuracy { eval_every: e, .. } = &mut end {
        *e = Some(eval_every);
    }
    end
}

#[test]
fn the_end_is_latched_and_other_monitors_are_ignored() {
    let end = EpEnd::accuracy(Monitor::TrainClean, Threshold::Raw { value: 0.5 });
    let mut p = PhaseController::new(end).unwrap();
    assert!(p.in_ep(0, 0));
    assert_eq!(
        p.observe(Monitor::Val, 0.9, 0, 0),
        None,
        "val is not the monitored accuracy"
    );
    assert!(p.in_ep(1, 0));
    let info = p
        .observe(Monitor::TrainClean, 0.5, 1, 0)
        .expect("reaching the threshold exactly ends the EP");
    assert_eq!(info.step, 2);
    assert!(!p.in_ep(2, 0));
    assert_eq!(p.observe(Monitor::TrainClean, 0.1, 2, 0), None, "already ended");
    assert!(!p.in_ep(3, 0), "accuracy falling again does not reopen the EP");
    assert!(!p.eval_due(10), "no evaluations are needed after the end");
}

#[test]
fn fixed_epoch_and_step_ends() {
    let mut by_epochs = Schedule::new(
        Strategy::mixup_pause(0.2),
        PhaseController::new(EpEnd::Epochs { epochs: 3 }).unwrap(),
    )
    .unwrap();
    let (in_ep, _, _) = drive(&mut by_epochs, 100, 10, |_| 0.0, Monitor::Val);
    assert!(in_ep[..30].iter().all(|&b| b) && in_ep[30..].iter().all(|&b| !b));
    assert_eq!(by_epochs.phase().ended().unwrap().step, 30);
    let mut by_steps = Schedule::new(
        Strategy::mixup_pause(0.2),
        PhaseController::new(EpEnd::Steps { steps: 17 }).unwrap(),
    )
    .unwrap();
    let (in_ep, _, _) = drive(&mut by_steps, 40, 10, |_| 1.0, Monitor::Val);
    assert_eq!(in_ep.iter().filter(|&&b| b).count(), 17);
    assert_eq!(by_steps.phase().ended().unwrap().epoch, 1);
}

#[test]
fn chance_normalisation_matches_the_formula() {
    let mut rng = SeededRng::new(5);
    for _ in 0..1000 {
        let classes = 2 + rng.below(999) as u32;
        let acc = rng.uniform();
        let value = 0.01 + 0.98 * rng.uniform();
        let t = Threshold::ChanceNormalized { value, classes };
        let k = classes as f64;
        let expected = (acc - 1.0 / k) / (1.0 - 1.0 / k);
        assert!((t.score(acc) - expected).abs() < 1e-12);
        assert_eq!(t.reached(acc), expected >= value);
    }
    // Binary task: 50% raw accuracy is chance, 0 normalised.
    assert_eq!(Threshold::ChanceNormalized { value: 0.5, classes: 2 }.score(0.5), 0.0);
    assert!(!Threshold::ChanceNormalized { value: 0.5, classes: 2 }.reached(0.6));
    assert!(Threshold::ChanceNormalized { value: 0.5, classes: 2 }.reached(0.75));
}

#[test]
fn every_strategy_gives_the_right_alpha_and_drop_share_around_the_end() {
    let cases = [
        (Strategy::vanilla(), (0.0, 0.0), (0.0, 0.0)),
        (Strategy::mixup(0.3), (0.3, 0.0), (0.3, 0.0)),
        (Strategy::mixup_pause(0.3), (0.0, 0.0), (0.3, 0.0)),
        (Strategy::alpha_boost(0.3, 2.0), (0.6, 0.0), (0.3, 0.0)),
        (Strategy::high_loss_removal(0.1), (0.0, 0.1), (0.0, 0.0)),
        (Strategy::mixup_pause(0.3).with_removal(0.05), (0.0, 0.05), (0.3, 0.0)),
        (
            Strategy::alpha_boost(0.2, 3.0).with_removal(0.2),
            (0.2 * 3.0, 0.2),
            (0.2, 0.0),
        ),
    ];
    for (strategy, (ep_alpha, ep_drop), (after_alpha, after_drop)) in cases {
        let mut s = Schedule::new(strategy, PhaseController::new(EpEnd::Steps { steps: 5 }).unwrap()).unwrap();
        let (_, alpha, drop) = drive(&mut s, 10, 100, |_| 0.0, Monitor::Val);
        for step in 0..10 {
            let (a, d) = if step < 5 {
                (ep_alpha, ep_drop)
            } else {
                (after_alpha, after_drop)
            };
            assert!(
                (alpha[step] - a).abs() < 1e-12 && (drop[step] - d).abs() < 1e-12,
                "{strategy}: step {step}: alpha {} drop {}",
                alpha[step],
                drop[step]
            );
        }
    }
}

#[test]
fn cutmix_switching_draws_from_the_seeded_generator() {
    let strategy = Strategy {
        cutmix_prob: 0.5,
        ..Strategy::mixup(0.4)
    };
    let mut rng = SeededRng::new(1);
    let kinds: Vec<MixKind> = (0..2000).map(|s| strategy.plan(s, false, &mut rng).mix.kind).collect();
    let cut = kinds.iter().filter(|&&k| k == MixKind::CutMix).count();
    assert!((900..1100).contains(&cut), "{cut} of 2000 batches used CutMix");
    let mut again = SeededRng::new(1);
    assert!(kinds
        .iter()
        .enumerate()
        .all(|(s, &k)| strategy.plan(s as u64, false, &mut again).mix.kind == k));
    // Paused batches draw nothing: the stream is untouched in the EP.
    let paused = Strategy {
        cutmix_prob: 0.5,
        ..Strategy::mixup_pause(0.4)
    };
    let mut r = SeededRng::new(2);
    let before = r.clone();
    let plan = paused.plan(0, true, &mut r);
    assert!(!plan.mix.mixes());
    assert_eq!(r, before);
}

fn random_config(rng: &mut SeededRng) -> StrategyConfig {
    let kind = StrategyKind::ALL[rng.below(5) as usize];
    let ep = match rng.below(3) {
        0 => EpEnd::Epochs {
            epochs: rng.below(30) as u32,
        },
        1 => EpEnd::Steps {
            steps: rng.below(100_000),
        },
        _ => EpEnd::Accuracy {
            monitor: [Monitor::Auto, Monitor::TrainClean, Monitor::Probe][rng.below(3) as usize],
            threshold: if rng.below(2) == 0 {
                Threshold::Raw {
                    value: 0.01 + 0.99 * rng.uniform(),
                }
            } else {
                Threshold::ChanceNormalized {
                    value: 0.01 + 0.99 * rng.uniform(),
                    classes: 2 + rng.below(1000) as u32,
                }
            },
            eval_every: None,
            window: (rng.below(2) == 0).then(|| 1 + rng.below(50)),
            probe_rows: (rng.below(2) == 0).then(|| 1 + rng.below(5000)),
            probe_budget: 0.001 + 0.5 * rng.uniform(),
            probe_every: (rng.below(2) == 0).then(|| 1 + rng.below(500)),
        },
    };
    StrategyConfig {
        kind,
        alpha: rng.uniform() * 2.0,
        boost: 0.5 + rng.uniform() * 4.0,
        drop_share: if rng.below(2) == 0 {
            None
        } else {
            Some(rng.uniform() * 0.5)
        },
        scope: if rng.below(2) == 0 {
            RemovalScope::Local
        } else {
            RemovalScope::Global
        },
        cutmix_prob: rng.uniform(),
        cutmix_alpha: 0.1 + rng.uniform(),
        lambda: if rng.below(2) == 0 {
            LambdaMode::Batch
        } else {
            LambdaMode::PerSample
        },
        pairing: [PairingMode::Permutation, PairingMode::Flip, PairingMode::Roll][rng.below(3) as usize],
        ep,
    }
}

#[test]
fn configs_round_trip_through_toml() {
    let mut rng = SeededRng::new(77);
    for _ in 0..500 {
        let config = random_config(&mut rng);
        let text = config.to_toml().unwrap();
        let back = StrategyConfig::from_toml(&text).unwrap_or_else(|e| panic!("{e}\n{text}"));
        assert_eq!(back, config, "{text}");
        assert!(config.build().is_ok());
    }
}

#[test]
fn the_documented_example_parses_with_defaults() {
    let text = r#"
        [model]
        name = "ignored by the strategy section"
        [strategy]
        kind = "alpha-boost"
        alpha = 0.5
        [strategy.ep]
        end = "accuracy"
        threshold = { kind = "chance-normalized", value = 0.45, classes = 10 }
    "#;
    let c = StrategyConfig::from_toml(text).unwrap();
    assert_eq!(
        c.strategy().policy,
        MixPolicy::Boost {
            alpha: 0.5,
            boosted: 1.0
        }
    );
    assert_eq!(c.lambda, LambdaMode::Batch);
    let hlr = StrategyConfig::from_toml("[strategy]\nkind = \"high-loss-removal\"\n").unwrap();
    assert_eq!(hlr.strategy().drop_share, 0.1, "the documented default share");
    assert_eq!(hlr.ep, EpEnd::default_accuracy());
    assert_eq!(hlr.ep.monitor(), Some(Monitor::Auto), "the monitor defaults to auto");
}

#[test]
fn invalid_configs_are_rejected_with_their_field_named() {
    let cases = [
        ("kind = \"mixup\"\nalpha = -1.0", "strategy.alpha"),
        ("kind = \"alpha-boost\"\nboost = 0.0", "strategy.boost"),
        ("kind = \"mixup\"\ndrop_share = 1.0", "strategy.drop_share"),
        ("kind = \"mixup\"\ndrop_share = -0.1", "strategy.drop_share"),
        ("kind = \"mixup\"\ncutmix_prob = 1.5", "strategy.cutmix_prob"),
        ("kind = \"mixup\"\ncutmix_alpha = 0.0", "strategy.cutmix_alpha"),
        ("kind = \"mixup\"\n[strategy.ep]\nend = \"accuracy\"\nmonitor = \"val\"\neval_every = 10\nthreshold = { kind = \"raw\", value = 0.0 }", "ep.threshold"),
        ("kind = \"mixup\"\n[strategy.ep]\nend = \"accuracy\"\nmonitor = \"val\"\neval_every = 10\nthreshold = { kind = \"raw\", value = 1.5 }", "ep.threshold"),
        ("kind = \"mixup\"\n[strategy.ep]\nend = \"accuracy\"\nmonitor = \"val\"\neval_every = 0\nthreshold = { kind = \"raw\", value = 0.5 }", "ep.eval_every"),
        ("kind = \"mixup\"\n[strategy.ep]\nend = \"accuracy\"\nmonitor = \"val\"\neval_every = 5\nthreshold = { kind = \"chance-normalized\", value = 0.5, classes = 1 }", "ep.classes"),
        ("kind = \"mixup\"\n[strategy.ep]\nend = \"accuracy\"\neval_every = 5", "ep.eval_every"),
        ("kind = \"mixup\"\n[strategy.ep]\nend = \"accuracy\"\nwindow = 0", "ep.window"),
        ("kind = \"mixup\"\n[strategy.ep]\nend = \"accuracy\"\nprobe_rows = 0", "ep.probe_rows"),
        ("kind = \"mixup\"\n[strategy.ep]\nend = \"accuracy\"\nprobe_budget = 0.0", "ep.probe_budget"),
        ("kind = \"mixup\"\n[strategy.ep]\nend = \"accuracy\"\nprobe_every = 0", "ep.probe_every"),
        ("kind = \"mixup\"\nalpah = 0.3", "alpah"),
        ("kind = \"mixup-stop\"", "mixup-stop"),
    ];
    for (body, field) in cases {
        let text = format!("[strategy]\n{body}\n");
        match StrategyConfig::from_toml(&text) {
            Ok(c) => panic!("accepted {c:?} from\n{text}"),
            Err(e) => assert!(e.to_string().contains(field), "`{e}` does not name `{field}`"),
        }
    }
}

#[test]
fn auto_follows_the_paper_on_its_own_settings() {
    let t = AutoThresholds::default();
    let pick = |n: u64, p: u64, mixup: bool, acc: Option<(f64, f64)>| {
        recommend(
            &ProblemScale {
                train_samples: n,
                parameters: p,
                mixup_applicable: mixup,
                early_accuracy: acc,
            },
            &t,
        )
        .strategy
        .policy
    };
    // CIFAR-10 with ResNet18, Tiny-ImageNet with ViT-S or PreActResNet50: Mixup Pause.
    assert!(matches!(pick(50_000, 11_000_000, true, None), MixPolicy::Pause { .. }));
    assert!(matches!(
        pick(100_000, 22_000_000, true, Some((0.3, 0.3))),
        MixPolicy::Pause { .. }
    ));
    // ViT-T on ImageNet-1K, underfitting early: Alpha Boost.
    assert!(matches!(
        pick(1_281_167, 5_700_000, true, Some((0.20, 0.21))),
        MixPolicy::Boost { .. }
    ));
    // Large but already fitting the training set faster than validation: no boost.
    assert!(matches!(
        pick(1_281_167, 5_700_000, true, Some((0.5, 0.3))),
        MixPolicy::Pause { .. }
    ));
    // Time series / LM: High-Loss Removal.
    let r = recommend(
        &ProblemScale {
            train_samples: 10_000,
            parameters: 100_000,
            mixup_applicable: false,
            early_accuracy: None,
        },
        &t,
    );
    assert_eq!(r.strategy.drop_share, 0.1);
    assert!(r.reason.contains("Mixup does not apply"), "{}", r.reason);
    assert!(r.to_string().contains("high-loss-removal"));
}

#[test]
fn auto_watches_the_batches_when_the_ep_does_not_mix_and_a_probe_when_it_does() {
    let cases = [
        (Strategy::vanilla(), Monitor::TrainClean),
        (Strategy::mixup_pause(0.4), Monitor::TrainClean),
        (Strategy::high_loss_removal(0.1), Monitor::TrainClean),
        (Strategy::mixup(0.4), Monitor::Probe),
        (Strategy::alpha_boost(0.4, 2.0), Monitor::Probe),
    ];
    for (strategy, expected) in cases {
        let s = Schedule::new(strategy, PhaseController::new(EpEnd::default_accuracy()).unwrap()).unwrap();
        assert_eq!(s.watching(), Some(expected), "{strategy}");
        assert_eq!(s.phase().end_rule().monitor(), Some(expected), "resolved in the rule");
    }
    let fixed = Schedule::new(
        Strategy::mixup(0.4),
        PhaseController::new(EpEnd::Steps { steps: 3 }).unwrap(),
    )
    .unwrap();
    assert_eq!(fixed.watching(), None, "a fixed length watches nothing");
}

/// Feeds `correct[i]` of `batch` predictions at step i until the EP ends; returns the end.
fn feed(p: &mut PhaseController, correct: &[f64], batch: f64) -> Option<enlighten::strategy::EpEndInfo> {
    for (step, &c) in correct.iter().enumerate() {
        let step = step as u64;
        assert!(p.in_ep(step, 0));
        if let Some(end) = p.observe_counts(Monitor::TrainClean, c, batch, step, 0) {
            return Some(end);
        }
    }
    None
}

#[test]
fn train_clean_ends_on_the_window_mean_with_its_interval_and_standard_error() {
    let mut rng = SeededRng::new(9);
    for _ in 0..200 {
        let window = 1 + rng.below(6);
        let batch = (16 + rng.below(200)) as f64;
        let threshold = 0.3 + 0.4 * rng.uniform();
        let correct: Vec<f64> = (0..60)
            .map(|s| (batch * ((s as f64 / 60.0) + 0.2 * rng.uniform())).min(batch).floor())
            .collect();
        let mut end = EpEnd::accuracy(Monitor::TrainClean, Threshold::Raw { value: threshold });
        if let EpEnd::Accuracy { window: w, .. } = &mut end {
            *w = Some(window);
        }
        let mut p = PhaseController::new(end).unwrap();
        let got = feed(&mut p, &correct, batch);
        // The first step whose last `window` batches reach the threshold together.
        let mean = |s: usize| correct[s + 1 - window as usize..=s].iter().sum::<f64>() / (batch * window as f64);
        let first = (window as usize - 1..60).find(|&s| mean(s) >= threshold);
        match (got, first) {
            (Some(e), Some(s)) => {
                assert_eq!(e.step, s as u64 + 1);
                assert_eq!(e.accuracy, Some(mean(s)));
                // The previous window was below: the crossing is after its oldest step.
                let before = (s >= window as usize).then_some(s as u64 + 1 - window);
                assert_eq!(e.last_below, before, "the previous window's oldest step");
                assert_eq!(
                    e.interval().1 - e.interval().0,
                    if before.is_some() { window } else { s as u64 + 1 }
                );
                let n = batch * window as f64;
                let se = (mean(s) * (1.0 - mean(s)) / n).sqrt();
                assert!((e.std_error.unwrap() - se).abs() < 1e-12);
                assert_eq!(e.predictions, Some(n));
                assert_eq!(e.monitor, Some(Monitor::TrainClean));
            }
            (None, None) => {}
            (g, f) => panic!("ended {g:?}, expected at {f:?}"),
        }
    }
}

#[test]
fn the_default_window_holds_at_least_256_predictions() {
    let mut p = PhaseController::new(EpEnd::accuracy(Monitor::TrainClean, Threshold::Raw { value: 0.5 })).unwrap();
    // Batches of 100, all correct: the window is full, and decides, at the third step.
    let end = feed(&mut p, &[100.0; 5], 100.0).unwrap();
    assert_eq!((end.step, end.last_below, end.predictions), (3, None, Some(300.0)));
}

#[test]
fn a_resumed_controller_continues_its_window() {
    let correct: Vec<f64> = (0..40).map(|s| (s * 3) as f64).collect();
    let end = EpEnd::accuracy(Monitor::TrainClean, Threshold::Raw { value: 0.5 });
    let mut straight = PhaseController::new(end).unwrap();
    let want = feed(&mut straight, &correct, 128.0).unwrap();
    let mut first = PhaseController::new(end).unwrap();
    assert!(feed(&mut first, &correct[..want.step as usize - 1], 128.0).is_none());
    let saved = serde_json::to_string(&first).unwrap();
    let mut resumed: PhaseController = serde_json::from_str(&saved).unwrap();
    let rest = want.step as usize - 1;
    assert!(resumed.in_ep(rest as u64, 0));
    let got = resumed
        .observe_counts(Monitor::TrainClean, correct[rest], 128.0, rest as u64, 0)
        .expect("the window carried over ends the EP at the same step");
    assert_eq!(got, want);
}

#[test]
fn a_probe_runs_only_when_planned_and_only_during_the_ep() {
    let mut s = Schedule::new(
        Strategy::alpha_boost(0.4, 2.0),
        PhaseController::new(EpEnd::default_accuracy()).unwrap(),
    )
    .unwrap();
    assert!(!(0..100).any(|st| s.probe_due(st)), "nothing due before a plan");
    s.plan_probe(7);
    assert!(s.probe_due(7) && !s.probe_due(6));
    assert_eq!(
        s.observe_counts(Monitor::TrainClean, 100.0, 100.0, 7, 0),
        None,
        "not the watched monitor"
    );
    assert_eq!(s.observe_counts(Monitor::Probe, 40.0, 100.0, 7, 0), None);
    s.plan_probe(19);
    let end = s.observe_counts(Monitor::Probe, 60.0, 100.0, 19, 0).unwrap();
    assert_eq!((end.last_below, end.step, end.interval()), (Some(8), 20, (8, 20)));
    assert!((end.std_error.unwrap() - (0.6f64 * 0.4 / 100.0).sqrt()).abs() < 1e-12);
    s.plan_probe(30);
    assert!(!s.probe_due(30), "no probes after the EP");
    assert_eq!(s.watching(), None);
}

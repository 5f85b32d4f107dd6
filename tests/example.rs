//! Runs the examples: mixup_pause.rs (the EP ends, Mixup is off before the end and on after, and
//! the loss comes down), high_loss_removal.rs (tch-rs's MNIST loop with High-Loss Removal learns
//! a synthetic MNIST) and mixup_into.rs (one buffer for every step, the loss comes down).

#[path = "../examples/mixup_pause.rs"]
mod example;
#[path = "../examples/high_loss_removal.rs"]
mod high_loss_removal;
#[path = "../examples/mixup_into.rs"]
mod mixup_into;

use enlighten::testing::serial;
use tch::vision::dataset::Dataset;
use tch::{Device, Kind, Tensor};

#[test]
fn the_mixup_pause_example_trains_and_switches_mixup_on_at_the_ep_end() {
    // The examples seed libtorch's global generator: one at a time, each run is its seed's.
    let _one_at_a_time = serial();
    let (log, schedule) = example::run(200).unwrap();
    let end = schedule.phase().ended().expect("the EP ends on this easy problem").step;
    assert!(end > 0 && end < 200, "EP end at step {end}");
    for (plan, _) in &log {
        assert_eq!(plan.in_ep, plan.step < end);
        assert_eq!(
            plan.mix.mixes(),
            plan.step >= end,
            "Mixup off in the EP, on after (step {})",
            plan.step
        );
    }
    let first: f64 = log[..10].iter().map(|(_, l)| l).sum::<f64>() / 10.0;
    let last_unmixed = log[..end as usize].last().unwrap().1;
    assert!(
        last_unmixed < first,
        "loss went down during the EP: {first} -> {last_unmixed}"
    );
}

/// MNIST's shapes without the download: 28x28 images in [0, 1] flattened to 784 values, where
/// class k is a bright 8x8 square at one of ten places, over noise.
fn synthetic_mnist(train: i64, test: i64) -> Dataset {
    let images = |n: i64, labels: &Tensor| {
        let x = Tensor::rand([n, 28, 28], (Kind::Float, Device::Cpu)) * 0.3;
        for (i, k) in Vec::<i64>::try_from(labels).unwrap().into_iter().enumerate() {
            let (r, c) = (2 + 12 * (k / 5), 5 * (k % 5));
            let _ = x.get(i as i64).narrow(0, r, 8).narrow(1, c, 8).fill_(1.0);
        }
        x.view([n, 784])
    };
    tch::manual_seed(0);
    let (train_labels, test_labels) = (
        Tensor::randint(10, [train], (Kind::Int64, Device::Cpu)),
        Tensor::randint(10, [test], (Kind::Int64, Device::Cpu)),
    );
    Dataset {
        train_images: images(train, &train_labels),
        train_labels,
        test_images: images(test, &test_labels),
        test_labels,
        labels: 10,
    }
}

#[test]
fn the_mnist_loop_with_high_loss_removal_learns() {
    // The examples seed libtorch's global generator: one at a time, each run is its seed's.
    let _one_at_a_time = serial();
    let m = synthetic_mnist(2048, 512);
    let accuracies = high_loss_removal::run(&m, 2, Device::Cpu).unwrap();
    let last = *accuracies.last().unwrap();
    assert!(last > 0.5, "test accuracy {accuracies:?} (chance 0.1)");
}

#[test]
fn mixup_into_writes_every_step_into_one_buffer_and_the_loss_comes_down() {
    // The examples seed libtorch's global generator: one at a time, each run is its seed's.
    let _one_at_a_time = serial();
    let log = mixup_into::run(150, Device::Cpu).unwrap();
    assert!(log.iter().all(|s| s.buffer == log[0].buffer), "the mixed batch moved");
    let mean = |s: &[mixup_into::Step]| s.iter().map(|s| s.loss).sum::<f64>() / s.len() as f64;
    let (first, last) = (mean(&log[..20]), mean(&log[log.len() - 20..]));
    assert!(last < first, "loss {first} -> {last}");
}

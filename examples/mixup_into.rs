//! Mixup into a buffer allocated once, in a plain tch loop (the lines enlighten adds or changes
//! are marked `enlighten:`): each step draws lambda ~ Beta(alpha, alpha) and a random
//! permutation from a seeded generator, blends the batch into the same preallocated tensor in
//! one pass (`Mixup::forward_into`, no allocation per step), and trains on the compact targets.
//!     cargo run --release --example mixup_into
use enlighten::ops::loss::CrossEntropy;
use enlighten::ops::mixup::{Lambda, Mixup, Pairing};
use enlighten::SeededRng;
use tch::nn::{self, Module, OptimizerConfig};
use tch::{Device, Kind, Tensor};

/// What each step did: its loss and the address the mixed batch was written to.
pub struct Step {
    pub loss: f64,
    pub buffer: usize,
}

/// Trains a small MLP on two Gaussian blobs under Mixup (alpha 0.4) for `steps` steps.
pub fn run(steps: u64, device: Device) -> enlighten::Result<Vec<Step>> {
    tch::manual_seed(0);
    let y = Tensor::randint(2, [512], (Kind::Int64, device));
    let x = Tensor::randn([512, 16], (Kind::Float, device)) + y.unsqueeze(1).to_kind(Kind::Float) * 1.5;
    let vs = nn::VarStore::new(device);
    let net = nn::seq()
        .add(nn::linear(vs.root(), 16, 32, Default::default()))
        .add_fn(|t| t.relu())
        .add(nn::linear(vs.root(), 32, 2, Default::default()));
    let mut opt = nn::Sgd {
        momentum: 0.9,
        ..Default::default()
    }
    .build(&vs, 0.05)?;
    let mut rng = SeededRng::new(0); // enlighten: lambdas and partners from a seeded generator
    let mut mixed = Tensor::empty([64, 16], (Kind::Float, device)); // enlighten: the one buffer
    let mut log = Vec::new();
    for _ in 0..steps {
        let idx = Tensor::randint(512, [64], (Kind::Int64, device));
        let (xb, yb) = (x.index_select(0, &idx), y.index_select(0, &idx));
        // enlighten: the batch mixed in place of `xb`, and the loss against the mixed labels.
        let mix = Mixup {
            lam: Lambda::Batch(rng.beta(0.4, 0.4)),
            pairing: Pairing::permutation(64, &mut rng, device),
        };
        mix.forward_into(&xb, &mut mixed)?;
        let out = CrossEntropy::default().forward_with_stats(&net.forward(&mixed), &mix.targets(&yb))?;
        opt.backward_step(&out.loss);
        log.push(Step {
            loss: out.loss.double_value(&[]),
            buffer: mixed.data_ptr() as usize,
        });
    }
    Ok(log)
}

#[allow(dead_code)] // the integration test includes this file for `run` only
fn main() -> enlighten::Result<()> {
    let device = enlighten::cuda::device(); // CUDA 0 when libtorch sees a GPU, else the CPU
    for (i, step) in run(200, device)?.iter().enumerate().step_by(20) {
        println!("step {i:3}: loss {:.4}", step.loss);
    }
    Ok(())
}

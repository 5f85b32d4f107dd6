//! A whole training step with every strategy op on its kernel path (emulated), counted for reads
//! of device values back to the host: plan, Mixup and CutMix, forward, cross-entropy with
//! High-Loss Removal, backward, optimiser step, zero counts, dead units and BENR. None may read
//! back: on a GPU each read would drain the queue and stall the step.

use enlighten::cuda::host_reads;
use enlighten::ops::loss::CrossEntropy;
use enlighten::ops::mixup::{LambdaMode, MixSpec};
use enlighten::ops::stats::{zero_counts, Benr, DeadUnits};
use enlighten::strategy::{EpEnd, PhaseController, Schedule, Strategy};
use enlighten::SeededRng;
use enlighten_emulator::{emulate, Profile};
use tch::nn::{self, Module, OptimizerConfig};
use tch::{Device, Kind, Tensor};

fn training_steps(steps: u64) -> enlighten::Result<()> {
    tch::manual_seed(0);
    let vs = nn::VarStore::new(Device::Cpu);
    let hidden = nn::linear(vs.root() / "hidden", 48, 32, Default::default());
    let head = nn::linear(vs.root() / "head", 32, 10, Default::default());
    let mut opt = nn::Sgd::default().build(&vs, 0.05)?;
    let phase = PhaseController::new(EpEnd::Steps { steps: 1_000 })?;
    let mut schedule = Schedule::new(Strategy::alpha_boost(0.4, 2.0).with_removal(0.25), phase)?;
    let mut rng = SeededRng::new(3);
    let params = vs.trainable_variables();
    let mut benr = Benr::new(&params.iter().collect::<Vec<_>>())?;
    let mut dead = DeadUnits::new();
    for step in 0..steps {
        let x = Tensor::randn([24, 3, 4, 4], (Kind::Float, Device::Cpu));
        let y = Tensor::randint(10, [24], (Kind::Int64, Device::Cpu));
        let plan = schedule.plan(step, 0, &mut rng);
        assert!(
            plan.mix.mixes() && plan.drop_share > 0.0,
            "the step exercises mixing and removal"
        );
        // Odd steps: CutMix with a box per sample (the boxes are clipped on the device).
        let spec = if step % 2 == 1 {
            MixSpec {
                lambda: LambdaMode::PerSample,
                ..MixSpec::cutmix(1.0)
            }
        } else {
            plan.mix
        };
        let (mixed, targets) = spec.forward(&x, &y, &mut rng)?;
        let h = hidden.forward(&mixed.view([24, 48])).relu();
        let logits = head.forward(&h);
        let loss = CrossEntropy::with_removal(plan.drop_share).forward(&logits, &targets)?;
        opt.zero_grad();
        loss.backward();
        opt.step();
        let _counts = zero_counts(&[&h], None)?;
        let _alive = dead.update(&[&h], None)?;
        benr.step(&params.iter().collect::<Vec<_>>())?;
    }
    Ok(())
}

#[test]
fn a_training_step_reads_nothing_back_to_the_host() {
    let reads = emulate(Profile::TINY, || {
        let before = host_reads();
        training_steps(4).unwrap();
        host_reads() - before
    });
    assert_eq!(reads, 0, "device values read back to the host during training steps");
}

#[test]
fn the_counter_sees_a_read() {
    // The counter is shown able to fail: reading a statistic back is one counted read.
    let reads = emulate(Profile::TINY, || {
        let before = host_reads();
        let h = Tensor::randn([8, 5], (Kind::Float, Device::Cpu)).relu();
        enlighten::ops::stats::zero_shares(&[&h], None).unwrap();
        host_reads() - before
    });
    assert_eq!(reads, 1);
}

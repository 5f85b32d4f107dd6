//! A plain tch training loop with enlighten's fused ops under Mixup Pause (the lines enlighten
//! adds or changes are marked `enlighten:`): no Mixup during the Enlightenment Period, which
//! ends once clean training accuracy reaches 50%, Mixup after.
//!     cargo run --release --example mixup_pause
use enlighten::ops::loss::CrossEntropy;
use enlighten::strategy::{BatchPlan, EpEnd, Monitor, PhaseController, Schedule, Strategy, Threshold};
use enlighten::SeededRng;
use tch::nn::{self, Module, OptimizerConfig};
use tch::{Device, Kind, Tensor};

/// Trains a small MLP on two Gaussian blobs; returns every step's plan and loss, and the schedule.
pub fn run(steps: u64) -> enlighten::Result<(Vec<(BatchPlan, f64)>, Schedule)> {
    tch::manual_seed(0);
    let y = Tensor::randint(2, [512], (Kind::Int64, Device::Cpu));
    let x = Tensor::randn([512, 16], (Kind::Float, Device::Cpu)) + y.unsqueeze(1).to_kind(Kind::Float) * 0.8;
    let vs = nn::VarStore::new(Device::Cpu);
    let net = nn::seq()
        .add(nn::linear(vs.root(), 16, 32, Default::default()))
        .add_fn(|t| t.relu())
        .add(nn::linear(vs.root(), 32, 2, Default::default()));
    let mut opt = nn::Sgd {
        momentum: 0.9,
        ..Default::default()
    }
    .build(&vs, 0.02)?;
    // enlighten: the schedule that plans each batch. Mixup Pause's EP batches are not mixed:
    // their own-label accuracy, smoothed over the last steps holding 256 predictions, ends the EP
    // (what `Monitor::Auto` picks for it).
    let end = EpEnd::accuracy(Monitor::TrainClean, Threshold::Raw { value: 0.5 });
    let mut schedule = Schedule::new(Strategy::mixup_pause(0.4), PhaseController::new(end)?)?;
    let (mut rng, mut log) = (SeededRng::new(0), Vec::new());
    for step in 0..steps {
        let idx = Tensor::randint(512, [64], (Kind::Int64, Device::Cpu));
        // enlighten: this batch's plan, its mix, and the loss with the plan's removal.
        let plan = schedule.plan(step, 0, &mut rng);
        let (mixed, targets) = plan
            .mix
            .forward(&x.index_select(0, &idx), &y.index_select(0, &idx), &mut rng)?;
        let out = CrossEntropy::with_removal(plan.drop_share).forward_with_stats(&net.forward(&mixed), &targets)?;
        opt.backward_step(&out.loss);
        if schedule.watching().is_some() {
            // enlighten: the EP ends on the accuracy the schedule monitors; one read of the
            // kernel's count per step, during the EP only.
            let correct = out.correct.int64_value(&[]) as f64;
            schedule.observe_counts(Monitor::TrainClean, correct, 64.0, step, 0);
        }
        log.push((plan, out.loss.double_value(&[])));
    }
    Ok((log, schedule))
}

#[allow(dead_code)] // the integration test includes this file for `run` only
fn main() -> enlighten::Result<()> {
    let (log, schedule) = run(200)?;
    for (plan, loss) in log.iter().step_by(20) {
        println!("{plan}: loss {loss:.4}");
    }
    println!("{schedule}");
    Ok(())
}

//! A whole training step with every strategy op on its kernel path (emulated), counted for reads
//! of device values back to the host: plan, Mixup and CutMix, forward, cross-entropy with
//! High-Loss Removal, backward, optimiser step, zero counts, dead units and BENR, the batch
//! uploaded from the host as the trainer does. None may read back: on a GPU each read would
//! drain the queue and stall the step. On a GPU (the bundle runs ignored cases) the definitive
//! check: with a clock64() spin kernel queued, the host issues the steps long before it ends.
//! The trainer's whole `train` is covered by trainer/tests/step_sync.rs.

use std::time::{Duration, Instant};

use enlighten::cuda::{host_reads, to_device_async};
use enlighten::ops::loss::CrossEntropy;
use enlighten::ops::mixup::{LambdaMode, MixSpec};
use enlighten::ops::stats::{zero_counts, Benr, DeadUnits};
use enlighten::strategy::{EpEnd, PhaseController, Schedule, Strategy};
use enlighten::SeededRng;
use enlighten_emulator::{emulate, Profile};
use tch::nn::{self, Module, OptimizerConfig};
use tch::{Device, Kind, Tensor};

/// libtorch's CUDA backend loaded before any tch call of any test: `tch::manual_seed` asks
/// libtorch about CUDA, which keeps its first answer (enlighten::cuda::probe's docs). The probe
/// runs once; a test arriving meanwhile waits for it.
fn cuda_first() {
    let _ = enlighten::cuda::probe();
}

fn training_steps(device: Device, steps: u64) -> enlighten::Result<()> {
    cuda_first();
    tch::manual_seed(0);
    let vs = nn::VarStore::new(device);
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
        let x = to_device_async(&Tensor::randn([24, 3, 4, 4], (Kind::Float, Device::Cpu)), device)?;
        let y = to_device_async(&Tensor::randint(10, [24], (Kind::Int64, Device::Cpu)), device)?;
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
        training_steps(Device::Cpu, 4).unwrap();
        host_reads() - before
    });
    assert_eq!(reads, 0, "device values read back to the host during training steps");
}

#[test]
fn the_counter_sees_a_read() {
    // The counter is shown able to fail: reading a statistic back is one counted read.
    cuda_first();
    let reads = emulate(Profile::TINY, || {
        let before = host_reads();
        let h = Tensor::randn([8, 5], (Kind::Float, Device::Cpu)).relu();
        enlighten::ops::stats::zero_shares(&[&h], None).unwrap();
        host_reads() - before
    });
    assert_eq!(reads, 1);
}

/// Queues libtorch's clock64() spin kernel (`at::cuda::sleep`, PyTorch's `torch.cuda._sleep`) on
/// the current stream of CUDA device 0, for `cycles` GPU clock cycles.
fn queue_spin(cycles: i64) {
    let name = c"_ZN2at4cuda5sleepEl";
    // SAFETY: libtorch_cuda.so is loaded with RTLD_GLOBAL (enlighten::cuda::device); the name is
    // at::cuda::sleep(int64_t), which takes one int64 by value: the declared signature.
    let f = unsafe { libc::dlsym(libc::RTLD_DEFAULT, name.as_ptr()) };
    assert!(!f.is_null(), "at::cuda::sleep is not in the loaded libtorch_cuda");
    // SAFETY: as above; a launch error throws a C++ exception, which C-unwind lets through.
    let sleep: unsafe extern "C-unwind" fn(i64) = unsafe { std::mem::transmute(f) };
    unsafe { sleep(cycles) };
}

/// The host's time to issue the steps behind a spin, the whole time once the queue drained, and
/// the spin's own time.
fn issue_behind_spin(steps: u64) -> (Duration, Duration, Duration) {
    // About 300 ms at an H100/H200's 1.6-2 GHz.
    let cycles = 600_000_000;
    let t = Instant::now();
    queue_spin(cycles);
    tch::Cuda::synchronize(0);
    let spin = t.elapsed();
    let t = Instant::now();
    queue_spin(cycles);
    training_steps(Device::Cuda(0), steps).unwrap();
    let issued = t.elapsed();
    tch::Cuda::synchronize(0);
    (issued, t.elapsed(), spin)
}

#[test]
#[ignore = "CUDA only: the GPU bundle runs it (--include-ignored)"]
fn on_a_gpu_the_host_issues_training_steps_while_a_spin_kernel_runs() {
    if let Err(why) = enlighten::cuda::probe() {
        panic!("this check needs CUDA device 0: {why}");
    }
    // Kernels loaded, cuBLAS and the caching allocators warm, before anything is timed.
    training_steps(Device::Cuda(0), 2).unwrap();
    tch::Cuda::synchronize(0);
    let before = host_reads();
    let (issued, total, spin) = issue_behind_spin(10);
    println!("spin {spin:?}; 10 training steps issued behind it in {issued:?}, all done after {total:?}");
    assert_eq!(host_reads(), before, "device values read back during the steps");
    assert!(
        total >= spin.mul_f64(0.9),
        "the spin kept the queue busy (else the check shows nothing)"
    );
    assert!(
        issued < spin / 2,
        "the host waited for the GPU while issuing the steps: {issued:?} of a {spin:?} spin"
    );
}

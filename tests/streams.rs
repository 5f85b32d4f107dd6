//! PyTorch's stream contract, on a GPU: the ops run under a non-default stream (one from
//! libtorch's pool, which does not synchronise with the legacy default stream) with slow work
//! queued on it before their inputs are written, and give what they give on the default stream.
//! A launch that went anywhere but the caller's current stream would read inputs and uploaded
//! tables before they arrive. Every case of tests/ops.rs also runs that way (`stream::`). Without
//! a GPU the cases are reported as ignored, never as passed.

mod common;

use enlighten::cuda::with_pool_stream;
use enlighten::ops::loss::{CrossEntropy, Targets};
use enlighten::ops::mixup::MixSpec;
use enlighten::ops::stats::zero_counts;
use enlighten::SeededRng;
use libtest_mimic::{Arguments, Trial};
use tch::{Device, Kind, Tensor};

const CUDA: Device = Device::Cuda(0);

/// Tens of milliseconds of matrix products on the current stream, so that whatever is queued
/// after them on that stream runs late, and anything launched elsewhere runs first.
fn queue_slow_work() {
    let mut a = Tensor::randn([4096, 4096], (Kind::Float, CUDA)) / 64.0;
    for _ in 0..24 {
        a = a.matmul(&a);
    }
}

/// Mixup, the loss with High-Loss Removal (selection kernels and their tables) and the zero
/// counts (a pointer table), on inputs copied from the host on the current stream; results on
/// the host.
fn run_ops(x_host: &Tensor, y_host: &Tensor) -> Vec<Tensor> {
    let (x, y) = (x_host.to_device(CUDA), y_host.to_device(CUDA));
    let (mixed, targets) = MixSpec::mixup(0.4).forward(&x, &y, &mut SeededRng::new(7)).unwrap();
    let logits = mixed.reshape([x.size()[0], -1]).narrow(1, 0, 10).contiguous();
    let opts = CrossEntropy {
        label_smoothing: 0.1,
        ignore_index: None,
        drop_share: 0.25,
    };
    let out = opts.loss_and_grad(&logits, Targets::Mixed(&targets)).unwrap();
    let counts = zero_counts(&[&mixed, &x], None).unwrap();
    [mixed, out.per_sample, out.keep, out.threshold, counts]
        .iter()
        .map(|t| t.to_device(Device::Cpu))
        .collect()
}

fn same_results_on_a_busy_pool_stream() {
    tch::manual_seed(3);
    let x = Tensor::randn([64, 3, 32, 32], (Kind::Float, Device::Cpu));
    let y = Tensor::randint(10, [64], (Kind::Int64, Device::Cpu));
    let expected = run_ops(&x, &y);
    let got = with_pool_stream(0, || {
        queue_slow_work();
        run_ops(&x, &y)
    })
    .unwrap();
    for (i, (e, g)) in expected.iter().zip(&got).enumerate() {
        common::assert_bitwise_eq(&format!("result {i}"), e, g);
    }
}

fn main() {
    let args = Arguments::from_args();
    let cuda = enlighten::cuda::probe();
    if let Err(reason) = &cuda {
        println!("CUDA cases not run: {reason}");
    }
    let ignored = cuda.is_err();
    let mut trials = vec![Trial::test("cuda::same_results_on_a_busy_pool_stream", || {
        same_results_on_a_busy_pool_stream();
        Ok(())
    })
    .with_ignored_flag(ignored)];
    for (name, body) in common::cases() {
        trials.push(
            Trial::test(format!("stream::{name}"), move || {
                with_pool_stream(0, || {
                    queue_slow_work();
                    body(CUDA);
                })
                .map_err(|e| e.to_string().into())
            })
            .with_ignored_flag(ignored),
        );
    }
    libtest_mimic::run(&args, trials).exit();
}

//! The op test bodies, run on the CPU always and on CUDA when a device is present. Without one
//! the CUDA cases are reported as ignored, with the probe's reason printed first.

mod common;

use libtest_mimic::{Arguments, Trial};
use tch::Device;

fn main() {
    let args = Arguments::from_args();
    let cuda = enlighten::cuda::probe();
    if let Err(reason) = &cuda {
        println!("CUDA cases not run: {reason}");
    }
    let mut trials = Vec::new();
    for (name, body) in common::cases() {
        trials.push(Trial::test(format!("cpu::{name}"), move || {
            body(Device::Cpu);
            Ok(())
        }));
        trials.push(
            Trial::test(format!("cuda::{name}"), move || {
                body(Device::Cuda(0));
                Ok(())
            })
            .with_ignored_flag(cuda.is_err()),
        );
    }
    libtest_mimic::run(&args, trials).exit();
}

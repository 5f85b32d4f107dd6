//! The op test bodies, run three ways: on the CPU path (`cpu::`), on CUDA when a device is present
//! (`cuda::`, ignored without one, with the probe's reason printed first), and on the CPU through
//! the CUDA execution-model emulator (`emu::`): the CUDA path's host code and the kernel source
//! itself, executed with guard pages, poisoned outputs and several thread schedules.

mod common;

use enlighten_emulator::Profile;
use libtest_mimic::{Arguments, Trial};
use tch::Device;

fn main() {
    let args = Arguments::from_args();
    let cuda = enlighten::cuda::probe();
    if let Err(reason) = &cuda {
        println!("CUDA cases not run: {reason}");
    }
    let emulated = enlighten_emulator::available();
    if let Err(reason) = &emulated {
        println!("emulated cases not run: {reason}");
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
        trials.push(
            Trial::test(format!("emu::{name}"), move || {
                enlighten_emulator::emulate(Profile::TINY, || body(Device::Cpu));
                Ok(())
            })
            .with_ignored_flag(emulated.is_err()),
        );
    }
    libtest_mimic::run(&args, trials).exit();
}

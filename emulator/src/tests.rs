//! The emulator shown able to fail: each test kernel of cpp/defects.cu carries one known
//! defect, and each must be reported with a message that names it.

use enlighten::cuda::executor::{Access, Arg, Executor, Shape, TensorArg};
use enlighten::cuda::Kernel;
use enlighten::Error;
use tch::{Device, Kind, Tensor};

use super::{emulate, has_entry, Emulator, Profile};

/// A tensor argument as the library's launch passes it.
fn tensor(name: &'static str, t: &Tensor, access: Access) -> Arg {
    Arg::Tensor(TensorArg {
        name,
        tensor: t.shallow_clone(),
        access,
    })
}

/// Runs the test kernel `name` as the library's launch would hand it over.
fn launch(name: &'static str, profile: Profile, shape: Shape, args: Vec<Arg>) -> Result<(), Error> {
    Emulator { profile }.begin().run(name, shape, args)
}

/// `blocks` blocks of `threads` threads, with `dynamic_shared` bytes of shared memory each.
const fn blocks(blocks: u32, threads: u32, dynamic_shared: u32) -> Shape {
    Shape {
        grid: [blocks, 1, 1],
        block: [threads, 1, 1],
        dynamic_shared,
    }
}

/// Launches a test kernel `(const float* x, float* out, int64_t n)` over 1000 elements.
fn launch_copy_like(name: &'static str, shape: Shape) -> (Result<(), Error>, Tensor, Tensor) {
    let x = Tensor::arange(1000, (Kind::Float, Device::Cpu)) * 0.5 + 1.0;
    let out = Tensor::full([1000], -7.0, (Kind::Float, Device::Cpu));
    let args = vec![
        tensor("x", &x, Access::Read),
        tensor("out", &out, Access::Write),
        Arg::I64(1000),
    ];
    let result = launch(name, Profile::TINY, shape, args);
    (result, x, out)
}

fn message(r: Result<(), Error>) -> String {
    match r {
        Err(Error::Emulated { message, .. }) => message,
        other => panic!("expected an emulator error, got {other:?}"),
    }
}

const ELEMENTWISE: Shape = blocks(2, 128, 0);

#[test]
fn a_correct_kernel_passes_every_check() {
    let (r, x, out) = launch_copy_like("defect_free_copy", ELEMENTWISE);
    r.unwrap();
    assert!(out.equal(&x));
}

#[test]
fn a_write_one_element_past_the_end_faults_naming_the_argument() {
    let (r, ..) = launch_copy_like("defect_write_past_end", ELEMENTWISE);
    let m = message(r);
    assert!(
        m.contains("`out`") && (m.contains("past the end") || m.contains("element 1000")),
        "{m}"
    );
    assert!(m.contains("kernel defect_write_past_end, block"), "{m}");
}

#[test]
fn a_block_sum_without_its_barrier_differs_between_schedules() {
    let (r, ..) = launch_copy_like("defect_block_sum_without_barrier", blocks(1, 256, 0));
    let m = message(r);
    assert!(
        m.contains("element 0 of `out`") && m.contains("between schedule 0"),
        "{m}"
    );
}

#[test]
fn an_element_never_written_is_named() {
    let (r, ..) = launch_copy_like("defect_skips_an_element", ELEMENTWISE);
    let m = message(r);
    assert!(m.contains("element 500 of `out`") && m.contains("never written"), "{m}");
}

#[test]
fn a_shuffle_from_a_lane_outside_the_mask_is_refused() {
    let (r, ..) = launch_copy_like("defect_shuffle_outside_mask", ELEMENTWISE);
    let m = message(r);
    assert!(m.contains("__shfl_sync") && m.contains("not in the mask"), "{m}");
}

#[test]
fn arguments_that_do_not_match_the_declaration_are_refused() {
    let x = Tensor::ones([4], (Kind::Float, Device::Cpu));
    let args = vec![
        tensor("x", &x, Access::Read),
        tensor("out", &x.empty_like(), Access::Write),
        Arg::I32(4),
    ];
    let r = launch("defect_free_copy", Profile::TINY, ELEMENTWISE, args);
    let m = message(r);
    assert!(
        m.contains("parameter 2 is declared a 8-byte integer, the launch passes a 4-byte integer"),
        "{m}"
    );
}

#[test]
fn a_write_to_an_input_faults() {
    let x = Tensor::ones([64], (Kind::Float, Device::Cpu));
    // The kernel writes its second argument; declared as an input, its pages are read-only.
    let args = vec![
        tensor("x", &x, Access::Read),
        tensor("y", &x.copy(), Access::Read),
        Arg::I64(64),
    ];
    let r = launch("defect_free_copy", Profile::TINY, ELEMENTWISE, args);
    let m = message(r);
    assert!(m.contains("write to element 0 of `y`, an input"), "{m}");
}

/// A copy through `bytes` of dynamic shared memory on a 128-thread grid.
fn launch_dynamic(name: &'static str, bytes: u32) -> Result<(), Error> {
    let x = Tensor::arange(1000, (Kind::Float, Device::Cpu));
    let out = x.empty_like();
    let args = vec![
        tensor("x", &x, Access::Read),
        tensor("out", &out, Access::Write),
        Arg::I64(1000),
    ];
    launch(name, Profile::TINY, blocks(2, 128, bytes), args)?;
    assert!(out.equal(&x));
    Ok(())
}

#[test]
fn dynamic_shared_memory_is_guarded_and_limited_by_the_profile() {
    launch_dynamic("defect_free_dynamic_copy", 128 * 4).unwrap();
    let m = message(launch_dynamic("defect_dynamic_shared_past_end", 128 * 4));
    assert!(
        m.contains("write past the end of the dynamic shared memory: byte 512, and the launch asked for 512"),
        "{m}"
    );
    let too_much = Profile::TINY.max_shared_per_block + 1;
    let m = message(launch_dynamic("defect_free_dynamic_copy", too_much));
    assert!(
        m.contains("bytes of dynamic shared memory a block; the tiny profile allows"),
        "{m}"
    );
}

#[test]
fn every_library_kernel_is_in_the_emulator() {
    for k in Kernel::ALL {
        assert!(has_entry(k.name()), "{} is missing from the emulator build", k.name());
    }
}

#[test]
fn results_do_not_depend_on_the_device_profile() {
    use enlighten::ops::loss::CrossEntropy;
    use enlighten::ops::mixup::{Lambda, Mixup, Pairing};
    tch::manual_seed(5);
    let x = Tensor::randn([300, 3, 8, 8], (Kind::Float, Device::Cpu));
    let logits = Tensor::randn([300, 10], (Kind::Float, Device::Cpu));
    let y = Tensor::randint(10, [300], (Kind::Int64, Device::Cpu));
    let run = |profile| {
        emulate(profile, || {
            let mix = Mixup {
                lam: Lambda::Batch(0.3),
                pairing: Pairing::Roll(2),
            };
            let mixed = mix.forward(&x).unwrap();
            let out = CrossEntropy::with_removal(0.1).loss_and_grad(&logits, &y).unwrap();
            (mixed, out.per_sample, out.grad.unwrap())
        })
    };
    let (tiny, h100) = (run(Profile::TINY), run(Profile::H100));
    assert!(
        tiny.0.equal(&h100.0),
        "Mixup differs between the tiny and the H100 grid"
    );
    assert!(
        tiny.1.equal(&h100.1) && tiny.2.equal(&h100.2),
        "cross-entropy differs between the grids"
    );
}

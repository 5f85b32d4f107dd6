//! The emulator shown able to fail: each test kernel of cpp/defects.cu carries one known
//! defect, and each must be reported with a message that names it.

use enlighten::cuda::executor::{Access, Arg, Executor, Function, Shape, TensorArg};
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
    Emulator::new(profile).begin().run(name, shape, args)
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
fn a_block_sum_without_its_barrier_reads_partials_not_yet_written() {
    let (r, ..) = launch_copy_like("defect_block_sum_without_barrier", blocks(1, 256, 0));
    let m = message(r);
    assert!(
        m.contains("reads uninitialised byte 4 of shared `defect_block_sum_without_barrier::partial`"),
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
        m.contains("0 bytes of static and 16385 of dynamic shared memory a block; the tiny profile allows 16384"),
        "{m}"
    );
}

/// The copy `(x, out, n)` over 1000 elements launched on `emulator` as `kernel` after loading it
/// with `prepare` (the library's opt-in, or a stand-in); the error's kernel and message.
fn load_and_launch(
    emulator: &Emulator,
    kernel: &'static str,
    prepare: &dyn Fn(&dyn Function) -> Result<(), Error>,
    shape: Shape,
) -> Result<(), (&'static str, String)> {
    let x = Tensor::arange(1000, (Kind::Float, Device::Cpu));
    let out = x.empty_like();
    let args = vec![
        tensor("x", &x, Access::Read),
        tensor("out", &out, Access::Write),
        Arg::I64(1000),
    ];
    let run = || {
        emulator.load(kernel, prepare)?;
        emulator.begin().run(kernel, shape, args)
    };
    match run() {
        Ok(()) => Ok(()),
        Err(Error::Emulated { kernel, message }) => Err((kernel, message)),
        Err(other) => panic!("expected an emulator error, got {other:?}"),
    }
}

/// Opts a function in to all the shared memory the H100 leaves beside its static memory, as
/// the library does when it loads one.
fn opt_in_fully(f: &dyn Function) -> Result<(), Error> {
    f.set_max_dynamic_shared(Profile::H100.max_shared_per_block - f.static_shared()?)
}

#[test]
fn dynamic_shared_memory_past_48_kib_needs_the_opt_in() {
    let shape = blocks(2, 128, 64 * 1024);
    let not_opted = Emulator::new(Profile::H100);
    let (kernel, m) = load_and_launch(&not_opted, "defect_free_dynamic_copy", &|_| Ok(()), shape).unwrap_err();
    assert_eq!(kernel, "defect_free_dynamic_copy");
    assert!(
        m.contains("65536 bytes of dynamic shared memory a block")
            && m.contains("did not opt in")
            && m.contains("49152 at most"),
        "{m}"
    );
    let partly = Emulator::new(Profile::H100);
    let opt_in_60k = |f: &dyn Function| f.set_max_dynamic_shared(60 * 1024);
    let (_, m) = load_and_launch(&partly, "defect_free_dynamic_copy", &opt_in_60k, shape).unwrap_err();
    assert!(m.contains("the kernel opted in to 61440"), "{m}");
    // Opted in once at load: this and every later launch of the function may use it all.
    let opted = Emulator::new(Profile::H100);
    load_and_launch(&opted, "defect_free_dynamic_copy", &opt_in_fully, shape).unwrap();
    let fail_if_called = |_: &dyn Function| Err(Error::Internal("a loaded function is prepared again".into()));
    load_and_launch(
        &opted,
        "defect_free_dynamic_copy",
        &fail_if_called,
        blocks(2, 128, 200 * 1024),
    )
    .unwrap();
}

#[test]
fn an_opt_in_past_what_static_shared_memory_leaves_is_refused() {
    let emulator = Emulator::new(Profile::H100);
    let all = |f: &dyn Function| f.set_max_dynamic_shared(Profile::H100.max_shared_per_block);
    let (kernel, m) = load_and_launch(&emulator, "defect_static_and_dynamic_copy", &all, ELEMENTWISE).unwrap_err();
    assert_eq!(kernel, "defect_static_and_dynamic_copy");
    assert!(
        m.contains("MAX_DYNAMIC_SHARED_SIZE_BYTES) to 232448 bytes; the H100 profile allows 224256")
            && m.contains("8192 bytes of static shared memory"),
        "{m}"
    );
}

#[test]
fn static_and_dynamic_shared_memory_together_must_fit_the_block() {
    let shape = blocks(2, 128, 128 * 4);
    let roomy = Emulator::new(Profile::TINY);
    load_and_launch(&roomy, "defect_static_and_dynamic_copy", &|_| Ok(()), shape).unwrap();
    // Either part fits a block of 8 KiB + 256 bytes; both together do not.
    let small = Profile {
        max_shared_per_block: 8 * 1024 + 256,
        ..Profile::TINY
    };
    let (kernel, m) = load_and_launch(
        &Emulator::new(small),
        "defect_static_and_dynamic_copy",
        &|_| Ok(()),
        shape,
    )
    .unwrap_err();
    assert_eq!(kernel, "defect_static_and_dynamic_copy");
    assert!(
        m.contains(
            "8192 bytes of static and 512 of dynamic shared memory a block; the tiny profile allows 8448 together"
        ),
        "{m}"
    );
}

#[test]
fn a_block_larger_than_the_launch_bounds_is_refused() {
    let emulator = Emulator::new(Profile::TINY);
    load_and_launch(&emulator, "defect_bounded_copy", &|_| Ok(()), blocks(2, 128, 0)).unwrap();
    let (kernel, m) = load_and_launch(&emulator, "defect_bounded_copy", &|_| Ok(()), blocks(2, 256, 0)).unwrap_err();
    assert_eq!(kernel, "defect_bounded_copy");
    assert!(
        m.contains("256 threads a block; the kernel's __launch_bounds__ allow 128"),
        "{m}"
    );
}

#[test]
fn a_block_whose_registers_outgrow_the_register_file_is_refused() {
    let emulator = Emulator::new(Profile::TINY);
    load_and_launch(&emulator, "defect_too_many_registers", &|_| Ok(()), blocks(2, 256, 0)).unwrap();
    let (kernel, m) =
        load_and_launch(&emulator, "defect_too_many_registers", &|_| Ok(()), blocks(1, 1024, 0)).unwrap_err();
    assert_eq!(kernel, "defect_too_many_registers");
    assert!(
        m.contains("1024 threads a block at") && m.contains("the tiny profile has 65536 a block (too many resources"),
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

// ---- the memory checker: defects whose outputs agree under every schedule -----------------------

/// The message a copy-like test kernel is refused with on the elementwise grid.
fn refusal(name: &'static str) -> String {
    message(launch_copy_like(name, ELEMENTWISE).0)
}

#[test]
fn two_threads_writing_one_shared_word_between_barriers_race() {
    let m = refusal("defect_shared_write_race");
    assert!(
        m.contains("writes byte 0 of shared `defect_shared_write_race::any_large`")
            && m.contains("wrote it between the same two barriers (data race)"),
        "{m}"
    );
}

#[test]
fn a_read_of_shared_memory_the_block_never_wrote_is_named() {
    let m = refusal("defect_reads_unwritten_shared");
    assert!(
        m.contains("thread (64, 0, 0): reads uninitialised byte 256 of shared `defect_reads_unwritten_shared::stage`"),
        "{m}"
    );
}

#[test]
fn two_blocks_writing_one_element_are_refused() {
    let m = refusal("defect_blocks_write_one_element");
    assert!(
        m.contains("writes element 0 of `out`, block (0, 0, 0) thread (0, 0, 0) wrote it in the same launch"),
        "{m}"
    );
}

#[test]
fn a_block_reading_what_another_block_writes_is_refused() {
    let m = refusal("defect_block_reads_another_block");
    assert!(
        m.contains("of `out`") && m.contains("in the same launch (blocks run in no promised order"),
        "{m}"
    );
}

#[test]
fn an_overrun_of_a_static_shared_array_stops_at_its_exact_end() {
    let m = refusal("defect_shared_array_overrun");
    assert!(
        m.contains(
            "write of 4 bytes at byte 256 of shared `defect_shared_array_overrun::lower`, which has 256: past its end"
        ),
        "{m}"
    );
}

#[test]
fn the_dynamic_buffer_is_guarded_at_its_exact_size_on_both_ends() {
    // 127 floats: the buffer's last 4 bytes before its 16-byte rounding are not the launch's.
    let m = message(launch_dynamic("defect_free_dynamic_copy", 127 * 4));
    assert!(
        m.contains("thread (127, 0, 0): write past the end of the dynamic shared memory: byte 508, and the launch asked for 508"),
        "{m}"
    );
    let m = message(launch_dynamic("defect_dynamic_shared_before_start", 128 * 4));
    assert!(
        m.contains("thread (0, 0, 0): write of 4 bytes 4 bytes before the start of the dynamic shared memory"),
        "{m}"
    );
}

#[test]
fn a_misaligned_pack_is_refused_by_ubsan() {
    let m = refusal("defect_misaligned_pack");
    assert!(
        m.contains("misaligned access at") && m.contains("defects.cu") && m.contains("needs 16-byte alignment"),
        "{m}"
    );
}

#[test]
fn a_signed_overflow_is_refused_by_ubsan() {
    let m = refusal("defect_int_overflow");
    assert!(
        m.contains("signed integer overflow in * of 'int'") && m.contains("defects.cu"),
        "{m}"
    );
}

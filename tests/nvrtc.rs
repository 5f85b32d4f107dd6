//! The kernels compile at run time with NVRTC, through the library's own NVRTC path, with no GPU:
//! for sm_80 and sm_90, without a single warning, and the cubins hold every entry point of
//! kernels/entry_points.txt. scripts/setup installs NVRTC and points ENLIGHTEN_NVRTC at it; where
//! that is set, or in CI, a missing NVRTC fails these tests instead of skipping them.

use enlighten::cuda::nvrtc::{Arch, Nvrtc};

fn nvrtc_required() -> bool {
    std::env::var_os("ENLIGHTEN_NVRTC").is_some() || std::env::var("CI").is_ok_and(|v| v == "true" || v == "1")
}

/// The entry points listed in kernels/entry_points.txt, read here rather than through the
/// library, so the test checks the compiled code against the list itself.
fn listed_entry_points() -> Vec<String> {
    let list = concat!(env!("CARGO_MANIFEST_DIR"), "/kernels/entry_points.txt");
    std::fs::read_to_string(list)
        .unwrap_or_else(|e| panic!("{list}: {e}"))
        .lines()
        .map(|l| l.split('#').next().unwrap_or("").trim().to_string())
        .filter(|l| !l.is_empty())
        .collect()
}

fn compiles_for(arch: Arch) {
    let nvrtc = match Nvrtc::locate() {
        Ok(nvrtc) => nvrtc,
        Err(e) if nvrtc_required() => panic!("NVRTC is required here (ENLIGHTEN_NVRTC or CI is set): {e}"),
        Err(e) => {
            println!("NVRTC test not run: {e} (run scripts/setup)");
            return;
        }
    };
    let cubin = nvrtc.compile(arch).unwrap_or_else(|e| panic!("{e}"));
    println!(
        "NVRTC {:?} ({}): {arch} cubin of {} bytes in {:.1} s",
        nvrtc.version(),
        nvrtc.library().display(),
        cubin.bytes.len(),
        cubin.seconds
    );
    assert!(
        cubin.log.is_empty(),
        "NVRTC warned while compiling for {arch}:\n{}",
        cubin.log
    );
    let found = cubin.entry_points().unwrap_or_else(|e| panic!("{arch}: {e}"));
    let missing: Vec<String> = listed_entry_points()
        .into_iter()
        .filter(|name| !found.contains(name))
        .collect();
    assert!(missing.is_empty(), "{arch} cubin lacks entry points {missing:?}");
}

#[test]
fn nvrtc_compiles_every_kernel_for_sm_80() {
    compiles_for(Arch::new(8, 0));
}

#[test]
fn nvrtc_compiles_every_kernel_for_sm_90() {
    compiles_for(Arch::new(9, 0));
}

/// The fatbin headers are read right: the SASS the library sees in nvcc's fatbin is exactly the
/// `sm_XY` list build.rs compiled (ENLIGHTEN_CUDA_TARGETS or its default), so a device whose
/// architecture is missing goes to NVRTC instead of a wrong image.
#[test]
fn fatbin_architectures_are_the_build_targets() {
    if enlighten::cuda::fatbin().is_empty() {
        println!("built without nvcc: no fatbin to read");
        return;
    }
    let targets =
        std::env::var("ENLIGHTEN_CUDA_TARGETS").unwrap_or_else(|_| "sm_80,sm_86,sm_89,sm_90,compute_80".into());
    let expected: Vec<String> = targets
        .split(',')
        .map(str::trim)
        .filter(|t| t.starts_with("sm_"))
        .map(str::to_string)
        .collect();
    let found: Vec<String> = enlighten::cuda::fatbin_architectures()
        .iter()
        .map(Arch::to_string)
        .collect();
    assert_eq!(found, expected);
}

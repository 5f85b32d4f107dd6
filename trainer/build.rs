//! The trainer's C++ (bridge/): c10d's TCPStore and ProcessGroupGloo always, and the NCCL
//! backend as a shared library of its own when its headers are at hand; and an rpath to
//! libtorch so the `enlighten` binary, the tests and the examples run without LD_LIBRARY_PATH.
//!
//! Variables read: `GLOO_INCLUDE` (required: gloo's headers, which the torch wheel does not ship;
//! scripts/setup fetches them), `NCCL_INCLUDE` (optional: nccl.h for the NCCL backend).

use std::env;
use std::path::{Path, PathBuf};

fn main() {
    println!("cargo:rerun-if-changed=bridge");
    println!("cargo:rerun-if-env-changed=GLOO_INCLUDE");
    println!("cargo:rerun-if-env-changed=NCCL_INCLUDE");
    println!("cargo::rustc-check-cfg=cfg(enlighten_nccl)");
    // torch-sys's `doc-only` (docs.rs, `--all-features`) has no libtorch: enough to check and
    // document the trainer, nothing to link it against.
    let Ok(lib) = env::var("DEP_TCH_LIBTORCH_LIB").map(PathBuf::from) else {
        println!("cargo:warning=enlighten-trainer: torch-sys reports no libtorch (its doc-only feature): the c10d bridge is not built, so nothing links");
        return;
    };
    let include = lib.parent().expect("libtorch's lib/ has a parent").join("include");
    // tch embeds no rpath; point the binaries at the libtorch they linked.
    println!("cargo:rustc-link-arg=-Wl,-rpath,{}", lib.display());

    let gloo = env::var("GLOO_INCLUDE").expect("the trainer needs GLOO_INCLUDE (gloo's headers): run scripts/setup");
    let guard = env::var("DEP_ENLIGHTEN_BRIDGE_INCLUDE").expect("enlighten reports its bridge's headers");
    cc::Build::new()
        .cpp(true)
        .std("c++17")
        .opt_level(2)
        .define("_GLIBCXX_USE_CXX11_ABI", "1")
        .define("GLOG_USE_GLOG_EXPORT", None)
        .define("USE_DISTRIBUTED", None)
        .define("USE_C10D_GLOO", None)
        .flag("-Wno-unused-parameter")
        .include(&include)
        .include(include.join("torch/csrc/api/include"))
        .include(&guard)
        .include(gloo)
        .file("bridge/c10d.cpp")
        .compile("enlighten_c10d");
    println!("cargo:rustc-link-search=native={}", lib.display());
    compile_nccl_bridge(&lib, &include, Path::new(&guard));
}

/// bridge/nccl.cpp as a shared library of its own (`ENLIGHTEN_NCCL_LIBRARY`, embedded by
/// src/distributed/nccl.rs, cfg `enlighten_nccl`): it links libtorch_cuda.so, which only a GPU
/// machine can load, so the trainer loads it at run time when NCCL is asked for. Needs nccl.h
/// (`NCCL_INCLUDE`, from scripts/setup) and the CUDA runtime headers beside the nvcc the library
/// found; without them the trainer builds without NCCL and says so when asked for it.
/// `--no-undefined` makes the link prove that every symbol the factory uses is exported by
/// libtorch.
fn compile_nccl_bridge(lib: &Path, include: &Path, guard: &Path) {
    let Ok(nccl) = env::var("NCCL_INCLUDE") else {
        println!("cargo:warning=enlighten-trainer: NCCL_INCLUDE not set (run scripts/setup); building without the NCCL backend");
        return;
    };
    let Some(cuda_include) = env::var("DEP_ENLIGHTEN_NVCC")
        .ok()
        .and_then(|n| Some(Path::new(&n).parent()?.parent()?.join("include")))
    else {
        println!(
            "cargo:warning=enlighten-trainer: no nvcc, so no CUDA runtime headers; building without the NCCL backend"
        );
        return;
    };
    let out = PathBuf::from(env::var("OUT_DIR").expect("cargo sets OUT_DIR")).join("libenlighten_nccl.so");
    let compiler = cc::Build::new().cpp(true).get_compiler();
    let mut cmd = compiler.to_command();
    cmd.args(["-std=c++17", "-O2", "-fPIC", "-shared", "-Wno-interference-size"])
        .args([
            "-D_GLIBCXX_USE_CXX11_ABI=1",
            "-DGLOG_USE_GLOG_EXPORT",
            "-DUSE_DISTRIBUTED",
        ])
        .args(["-DUSE_C10D_NCCL", "-DUSE_CUDA"])
        .arg(format!("-I{}", include.display()))
        .arg(format!("-I{}", include.join("torch/csrc/api/include").display()))
        .arg(format!("-I{}", guard.display()))
        .arg(format!("-I{nccl}"))
        .arg(format!("-I{}", cuda_include.display()))
        .arg("-Ibridge/cuda-shim")
        .arg("bridge/nccl.cpp")
        .arg("-o")
        .arg(&out)
        .arg(format!("-L{}", lib.display()))
        .args(["-Wl,--no-undefined", "-Wl,--no-as-needed"])
        .args(["-ltorch_cuda", "-lc10_cuda", "-ltorch_cpu", "-lc10"]);
    let output = cmd.output().expect("run the C++ compiler for bridge/nccl.cpp");
    assert!(
        output.status.success(),
        "compiling bridge/nccl.cpp failed:\n{}",
        String::from_utf8_lossy(&output.stderr)
    );
    println!("cargo:rustc-cfg=enlighten_nccl");
    println!("cargo:rustc-env=ENLIGHTEN_NCCL_LIBRARY={}", out.display());
}

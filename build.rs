//! Compiles every `kernels/*.cu` into one fatbin that the library embeds when nvcc is at hand
//! (without it the library compiles them at first use with NVRTC), keeps the ptxas report, builds
//! the C++ bridge to libtorch, and adds an rpath to libtorch for this crate's own tests. The kernel
//! entry points come from one list, kernels/entry_points.txt, for the fatbin and for Rust; the
//! kernel sources, the generated headers and the nvcc found are exported to dependents' build
//! scripts (the emulator crate compiles the same sources as host C++).
//!
//! Variables read (all optional):
//! - `NVCC`: the nvcc to use (scripts/setup writes it into .cargo/config.toml); else `nvcc` on PATH
//!   or under `CUDA_HOME`/`CUDA_PATH`.
//! - `ENLIGHTEN_CUDA_TARGETS`: comma-separated `sm_XY` (SASS) and `compute_XY` (PTX) targets;
//!   default `sm_80,sm_86,sm_89,sm_90,compute_80`.
//! - `REQUIRE_NVCC=1`: fail the build instead of building a library without a fatbin.

use std::env;
use std::fmt::Write as _;
use std::fs;
use std::path::{Path, PathBuf};
use std::process::Command;

const DEFAULT_TARGETS: &str = "sm_80,sm_86,sm_89,sm_90,compute_80";

fn main() {
    for var in [
        "NVCC",
        "CUDA_HOME",
        "CUDA_PATH",
        "ENLIGHTEN_CUDA_TARGETS",
        "REQUIRE_NVCC",
        "PATH",
    ] {
        println!("cargo:rerun-if-env-changed={var}");
    }
    let manifest = PathBuf::from(env::var("CARGO_MANIFEST_DIR").expect("cargo sets it"));
    let out_dir = PathBuf::from(env::var("OUT_DIR").expect("cargo sets OUT_DIR"));
    let entries = entry_points(Path::new("kernels/entry_points.txt"));
    write_kernel_constants(&entries, &out_dir);
    write_shared_constants(Path::new("kernels/constants.txt"), &out_dir);
    write_kernel_sources(&manifest, &out_dir);
    // For dependents' build scripts (DEP_ENLIGHTEN_*): one copy of the bridge's headers and of
    // the kernels, whoever compiles them.
    println!("cargo:bridge_include={}", manifest.join("bridge").display());
    println!("cargo:kernels={}", manifest.join("kernels").display());
    println!("cargo:generated={}", out_dir.display());

    // docs.rs has no libtorch (tch's `doc-only`): documentation needs no native code.
    if env::var_os("CARGO_FEATURE_DOC_ONLY").is_some() {
        println!("cargo:rustc-env=ENLIGHTEN_LIBTORCH_LIB=");
        fs::write(out_dir.join("enlighten.fatbin"), []).expect("write empty fatbin");
        return;
    }
    let lib = PathBuf::from(env::var("DEP_TCH_LIBTORCH_LIB").expect("torch-sys reports where libtorch is"));
    add_libtorch_rpath(&lib);
    compile_bridge(&lib);
    compile_kernels(&out_dir);
}

/// The kernels' fatbin with nvcc when there is one; without nvcc an empty fatbin, and the
/// kernels are compiled at first use by NVRTC.
fn compile_kernels(out_dir: &Path) {
    let fatbin = out_dir.join("enlighten.fatbin");
    let kernels = discover_kernels(Path::new("kernels"));
    let require = env::var("REQUIRE_NVCC").is_ok_and(|v| v == "1");
    match find_nvcc() {
        Some(nvcc) => {
            println!("cargo:nvcc={}", nvcc.display());
            compile(&nvcc, &kernels, out_dir, &fatbin);
        }
        None if require => panic!("REQUIRE_NVCC=1 but no nvcc was found: run scripts/setup, or set NVCC=/path/to/nvcc"),
        None => {
            fs::write(&fatbin, []).expect("write empty fatbin");
            fs::write(out_dir.join("ptxas-report.txt"), "built without nvcc\n").expect("write report");
        }
    }
}

/// tch embeds no rpath; point this crate's own tests, examples and benches at the libtorch they
/// linked (a link argument reaches only this package's targets, never a dependent's binary).
fn add_libtorch_rpath(lib: &Path) {
    println!("cargo:rustc-link-arg=-Wl,-rpath,{}", lib.display());
    println!("cargo:rustc-env=ENLIGHTEN_LIBTORCH_LIB={}", lib.display());
}

/// The C++ bridge to libtorch (bridge/): the autograd node, libtorch's thread pool and the
/// message convention. Flags as torch-sys compiles tch's own C++: C++17, libtorch's ABI, its two
/// include folders.
fn compile_bridge(lib: &Path) {
    println!("cargo:rerun-if-changed=bridge");
    let include = lib.parent().expect("libtorch's lib/ has a parent").join("include");
    cc::Build::new()
        .cpp(true)
        .std("c++17")
        .opt_level(2)
        .define("_GLIBCXX_USE_CXX11_ABI", "1")
        .define("GLOG_USE_GLOG_EXPORT", None)
        .flag("-Wno-unused-parameter")
        .include(&include)
        .include(include.join("torch/csrc/api/include"))
        .file("bridge/message.cpp")
        .file("bridge/autograd.cpp")
        .file("bridge/parallel.cpp")
        .file("bridge/stream.cpp")
        .file("bridge/pinned.cpp")
        // at::parallel_for is a header template whose `#pragma omp parallel` runs serially unless
        // compiled with OpenMP; its GOMP calls must reach libtorch's own libgomp (one pool).
        .flag("-fopenmp")
        .compile("enlighten_bridge");
    println!("cargo:rustc-link-search=native={}", lib.display());
    println!("cargo:rustc-link-arg=-l:libgomp.so.1");
}

/// Every `.cu` directly under `kernels/`, sorted so the build is reproducible.
fn discover_kernels(dir: &Path) -> Vec<PathBuf> {
    println!("cargo:rerun-if-changed={}", dir.display());
    let mut files: Vec<PathBuf> = fs::read_dir(dir)
        .expect("kernels/ directory")
        .map(|e| e.expect("kernels/ entry").path())
        .filter(|p| matches!(p.extension().and_then(|e| e.to_str()), Some("cu" | "cuh")))
        .collect();
    files.sort();
    for f in &files {
        println!("cargo:rerun-if-changed={}", f.display());
    }
    files.retain(|p| p.extension().is_some_and(|e| e == "cu"));
    files
}

/// kernel_sources.rs, included by src/cuda/kernel_source.rs: every kernels/*.cu and *.cuh and the
/// generated kernel_constants.cuh embedded by name (NVRTC gets them as in-memory headers, so the
/// library compiles its kernels at run time from exactly the source nvcc sees here), and the
/// translation units in build order.
fn write_kernel_sources(manifest: &Path, out_dir: &Path) {
    let dir = manifest.join("kernels");
    let mut files: Vec<PathBuf> = fs::read_dir(&dir)
        .expect("kernels/ directory")
        .map(|e| e.expect("kernels/ entry").path())
        .filter(|p| matches!(p.extension().and_then(|e| e.to_str()), Some("cu" | "cuh")))
        .collect();
    files.sort();
    files.push(out_dir.join("kernel_constants.cuh"));
    let name = |p: &Path| {
        p.file_name()
            .and_then(|n| n.to_str())
            .expect("UTF-8 file name")
            .to_string()
    };
    let mut src = String::from(
        "// Generated by build.rs: the kernel source, embedded.\npub(super) const FILES: &[(&str, &str)] = &[\n",
    );
    for f in &files {
        println!("cargo:rerun-if-changed={}", f.display());
        writeln!(src, "    ({:?}, include_str!({:?})),", name(f), f.display().to_string()).expect("string write");
    }
    src.push_str("];\npub(super) const UNITS: &[&str] = &[\n");
    for f in files.iter().filter(|p| p.extension().is_some_and(|e| e == "cu")) {
        writeln!(src, "    {:?},", name(f)).expect("string write");
    }
    src.push_str("];\n");
    fs::write(out_dir.join("kernel_sources.rs"), src).expect("write kernel sources");
}

/// The entry point names, one per line; `#` starts a comment.
fn entry_points(list: &Path) -> Vec<String> {
    println!("cargo:rerun-if-changed={}", list.display());
    let text = fs::read_to_string(list).unwrap_or_else(|e| panic!("{}: {e}", list.display()));
    let names: Vec<String> = text
        .lines()
        .map(|l| l.split('#').next().unwrap_or("").trim())
        .filter(|l| !l.is_empty())
        .map(str::to_string)
        .collect();
    for n in &names {
        assert!(
            n.chars()
                .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '_'),
            "{}: `{n}` is not a lower-case C identifier",
            list.display()
        );
    }
    names
}

/// `kernels! { MIXUP_F32 = "mixup_f32", ... }`, included by src/cuda/fatbin.rs.
fn write_kernel_constants(entries: &[String], out_dir: &Path) {
    let mut src = String::from("// Generated by build.rs from kernels/entry_points.txt.\nkernels! {\n");
    for e in entries {
        writeln!(src, "    {} = \"{e}\",", e.to_uppercase()).expect("string write");
    }
    src.push_str("}\n");
    fs::write(out_dir.join("kernel_entries.rs"), src).expect("write kernel constants");
}

/// `NAME = integer` lines shared by the kernels and Rust: kernel_constants.cuh for the kernels
/// (found through `-I OUT_DIR`), shared_constants.rs for src/cuda/constants.rs.
fn write_shared_constants(list: &Path, out_dir: &Path) {
    println!("cargo:rerun-if-changed={}", list.display());
    let text = fs::read_to_string(list).unwrap_or_else(|e| panic!("{}: {e}", list.display()));
    let mut cuh = String::from("// Generated by build.rs from kernels/constants.txt.\n#pragma once\n");
    let mut rs = String::from("// Generated by build.rs from kernels/constants.txt.\n");
    for line in text
        .lines()
        .map(|l| l.split('#').next().unwrap_or("").trim())
        .filter(|l| !l.is_empty())
    {
        let (name, value) = line
            .split_once('=')
            .unwrap_or_else(|| panic!("{}: `{line}` is not NAME = value", list.display()));
        let (name, value) = (name.trim(), value.trim());
        let value: i32 = value
            .parse()
            .unwrap_or_else(|_| panic!("{}: `{value}` is not an integer", list.display()));
        writeln!(cuh, "constexpr int {name} = {value};").expect("string write");
        writeln!(rs, "pub const {name}: i32 = {value};").expect("string write");
    }
    fs::write(out_dir.join("kernel_constants.cuh"), cuh).expect("write kernel constants header");
    fs::write(out_dir.join("shared_constants.rs"), rs).expect("write shared constants");
}

fn find_nvcc() -> Option<PathBuf> {
    if let Ok(p) = env::var("NVCC") {
        let p = PathBuf::from(p);
        assert!(
            p.is_file(),
            "NVCC={} does not exist: rerun scripts/setup or fix NVCC",
            p.display()
        );
        return Some(p);
    }
    let mut candidates: Vec<PathBuf> = ["CUDA_HOME", "CUDA_PATH"]
        .iter()
        .filter_map(|v| env::var(v).ok())
        .map(|home| PathBuf::from(home).join("bin/nvcc"))
        .collect();
    if let Some(path) = env::var_os("PATH") {
        candidates.extend(env::split_paths(&path).map(|d| d.join("nvcc")));
    }
    candidates.into_iter().find(|p| p.is_file())
}

/// One translation unit that includes every kernel file (a unity build): nvcc accepts a single
/// input per fatbin, and one TU lets the .cuh helpers be shared without relocatable device code.
fn compile(nvcc: &Path, kernels: &[PathBuf], out_dir: &Path, fatbin: &Path) {
    let manifest = PathBuf::from(env::var("CARGO_MANIFEST_DIR").expect("cargo sets it"));
    let unity = out_dir.join("enlighten_kernels.cu");
    let mut src = String::from("// Generated by build.rs: every kernels/*.cu in one translation unit.\n");
    for k in kernels {
        writeln!(src, "#include \"{}\"", manifest.join(k).display()).expect("string write");
    }
    fs::write(&unity, src).expect("write unity source");

    let targets = env::var("ENLIGHTEN_CUDA_TARGETS").unwrap_or_else(|_| DEFAULT_TARGETS.into());
    let mut cmd = Command::new(nvcc);
    cmd.args([
        "-fatbin",
        "-O3",
        "-lineinfo",
        "-std=c++17",
        "--no-compress",
        "-Xptxas",
        "-v",
    ])
    .args(["--threads", "0"])
    .arg(format!("-I{}", manifest.join("kernels").display()))
    .arg(format!("-I{}", out_dir.display()));
    for t in targets.split(',').map(str::trim).filter(|t| !t.is_empty()) {
        let gencode = match t.split_once('_') {
            Some(("sm", n)) => format!("arch=compute_{n},code=sm_{n}"),
            Some(("compute", n)) => format!("arch=compute_{n},code=compute_{n}"),
            _ => panic!("ENLIGHTEN_CUDA_TARGETS: `{t}` is neither sm_XY nor compute_XY"),
        };
        cmd.arg("-gencode").arg(gencode);
    }
    cmd.arg(&unity).arg("-o").arg(fatbin);

    let output = cmd
        .output()
        .unwrap_or_else(|e| panic!("could not run {}: {e}", nvcc.display()));
    let log = String::from_utf8_lossy(&output.stderr).into_owned();
    if !output.status.success() {
        panic!(
            "nvcc failed ({}):\n{log}{}",
            output.status,
            String::from_utf8_lossy(&output.stdout)
        );
    }
    let report = out_dir.join("ptxas-report.txt");
    fs::write(&report, &log).expect("write ptxas report");
    for (kernel, arch, spill) in spilling_kernels(&log) {
        println!(
            "cargo:warning=enlighten: kernel {kernel} spills on {arch}: {spill} (report: {})",
            report.display()
        );
    }
}

/// ptxas prints, per entry and arch, a "Compiling entry function 'NAME' for 'sm_XY'" line
/// followed by a "N bytes stack frame, N bytes spill stores, N bytes spill loads" line.
fn spilling_kernels(log: &str) -> Vec<(String, String, String)> {
    let mut current: Option<(String, String)> = None;
    let mut found = Vec::new();
    for line in log.lines() {
        if let Some(rest) = line.split("Compiling entry function '").nth(1) {
            let name = rest.split('\'').next().unwrap_or("?").to_string();
            let arch = rest
                .split("for '")
                .nth(1)
                .and_then(|a| a.split('\'').next())
                .unwrap_or("?");
            current = Some((name, arch.to_string()));
        } else if line.contains("spill stores") {
            let spills = !(line.contains(" 0 bytes spill stores") && line.contains(" 0 bytes spill loads"));
            if let (true, Some((name, arch))) = (spills, &current) {
                found.push((name.clone(), arch.clone(), line.trim().to_string()));
            }
        }
    }
    found
}

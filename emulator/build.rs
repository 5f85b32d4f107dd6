//! Compiles the library's kernels a second time, as host C++ against cpp/cuda_emu.h, with the
//! emulator's runtime (cpp/runtime.cpp) and its test kernels (cpp/defects.cu), into one static
//! library; and adds an rpath to libtorch for this crate's own tests.
//!
//! Everything about the kernels comes from the `enlighten` crate's build script (its `links`
//! metadata), so both builds use one copy: `DEP_ENLIGHTEN_KERNELS` (kernels/: the sources and
//! entry_points.txt), `DEP_ENLIGHTEN_GENERATED` (kernel_constants.cuh) and `DEP_ENLIGHTEN_NVCC`
//! (the nvcc whose include folder has `cuda_fp16.h`/`cuda_bf16.h`, which support host compilers).
//! Without nvcc there is no emulator (cfg `enlighten_emulator` unset) and `available()` says so.
//!
//! The launch rules need what the GPU compiler makes of each kernel, so the same sources (with
//! the test kernels) are also compiled to PTX for compute_90 and assembled by ptxas for sm_90
//! (the H100/H200): each entry's `.maxntid` (its `__launch_bounds__`) from the PTX, and its
//! registers and static shared memory from ptxas's report, go into the entry table.

use std::collections::HashMap;
use std::env;
use std::fmt::Write as _;
use std::fs;
use std::path::{Path, PathBuf};
use std::process::Command;

fn main() {
    println!("cargo::rustc-check-cfg=cfg(enlighten_emulator)");
    // torch-sys's `doc-only` (docs.rs, `--all-features`) links no libtorch: nothing to run against.
    let Ok(lib) = env::var("DEP_TCH_LIBTORCH_LIB").map(PathBuf::from) else {
        println!("cargo:warning=enlighten-emulator: torch-sys reports no libtorch (its doc-only feature): building without the emulator");
        return;
    };
    // tch embeds no rpath; point this crate's tests at the libtorch they linked.
    println!("cargo:rustc-link-arg=-Wl,-rpath,{}", lib.display());
    let dep = |name: &str| env::var(format!("DEP_ENLIGHTEN_{name}")).ok().map(PathBuf::from);
    let (Some(kernels), Some(generated)) = (dep("KERNELS"), dep("GENERATED")) else {
        panic!("the enlighten crate reports its kernels and generated headers (DEP_ENLIGHTEN_*)");
    };
    let Some(nvcc) = dep("NVCC") else {
        println!("cargo:warning=enlighten-emulator: enlighten was built without nvcc, so there are no CUDA headers: building without the emulator");
        return;
    };
    let include = nvcc
        .parent()
        .and_then(Path::parent)
        .map(|p| p.join("include"))
        .expect("nvcc lives in <cuda>/bin");
    let entries = entry_points(&kernels.join("entry_points.txt"));
    compile_emulator(&nvcc, &include, &kernels, &generated, &entries);
}

/// The entry point names, one per line; `#` starts a comment (the library's build script has
/// checked that each is a C identifier).
fn entry_points(list: &Path) -> Vec<String> {
    println!("cargo:rerun-if-changed={}", list.display());
    let text = fs::read_to_string(list).unwrap_or_else(|e| panic!("{}: {e}", list.display()));
    text.lines()
        .map(|l| l.split('#').next().unwrap_or("").trim())
        .filter(|l| !l.is_empty())
        .map(str::to_string)
        .collect()
}

/// Every `.cu` directly under `dir`, sorted so the build is reproducible (every `.cuh` is
/// watched too).
fn discover_kernels(dir: &Path) -> Vec<PathBuf> {
    println!("cargo:rerun-if-changed={}", dir.display());
    let mut files: Vec<PathBuf> = fs::read_dir(dir)
        .unwrap_or_else(|e| panic!("{}: {e}", dir.display()))
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

/// The kernels and the emulator's test kernels compiled as host C++ with the emulator runtime,
/// into a static library. f16/bf16 come from nvcc's own headers, which support host compilers.
///
/// The kernels' translation unit is instrumented (ThreadSanitizer's load/store hooks and UBSan's
/// alignment and signed-overflow checks, both answered by the emulator's own cpp/checker.cpp and
/// cpp/ubsan.cpp, no sanitizer runtime) and keeps declaration order (-fno-toplevel-reorder), so
/// every `__shared__` array sits between red zones; the layout of its shared memory section is
/// read back from the object file and compiled into the runtime, which is not instrumented.
fn compile_emulator(nvcc: &Path, cuda_include: &Path, kernels: &Path, generated: &Path, entries: &[String]) {
    let manifest = PathBuf::from(env::var("CARGO_MANIFEST_DIR").expect("cargo sets it"));
    let out_dir = PathBuf::from(env::var("OUT_DIR").expect("cargo sets OUT_DIR"));
    let emu_dir = manifest.join("cpp");
    for f in [
        "cuda_emu.h",
        "emu_abi.h",
        "entries.h",
        "checker.h",
        "runtime.cpp",
        "checker.cpp",
        "ubsan.cpp",
        "defects.cu",
    ] {
        println!("cargo:rerun-if-changed={}", emu_dir.join(f).display());
    }
    println!(
        "cargo:rerun-if-changed={}",
        generated.join("kernel_constants.cuh").display()
    );
    let defects = emu_dir.join("defects.cu");
    let sources: Vec<PathBuf> = discover_kernels(kernels).into_iter().chain([defects.clone()]).collect();
    let figures = gpu_figures(nvcc, &sources, &[kernels, generated], &out_dir);
    let unity = out_dir.join("emulated_kernels.cpp");
    fs::write(&unity, unity_source(&sources, &defects, entries, &figures)).expect("write emulator source");
    let includes = [cuda_include, kernels, generated, emu_dir.as_path()];
    let objects = host_build(&includes)
        .flag("-fsanitize=thread")
        .flag("--param=tsan-instrument-func-entry-exit=0")
        .flag("-fsanitize=alignment,signed-integer-overflow")
        .flag("-fno-toplevel-reorder")
        .file(&unity)
        .compile_intermediates();
    let layout = out_dir.join("shared_layout.cpp");
    fs::write(&layout, shared_layout_source(&objects)).expect("write the shared memory layout");
    host_build(&includes)
        .file(emu_dir.join("runtime.cpp"))
        .file(emu_dir.join("checker.cpp"))
        .file(emu_dir.join("ubsan.cpp"))
        .file(&layout)
        .objects(&objects)
        .compile("emulated_kernels");
    println!("cargo:rustc-cfg=enlighten_emulator");
}

/// The compiler settings both halves share: C++17, no FMA contraction (the _rn intrinsics are
/// exact host arithmetic), no strict aliasing (the kernels reinterpret packs).
fn host_build(includes: &[&Path]) -> cc::Build {
    let mut b = cc::Build::new();
    b.cpp(true)
        .std("c++17")
        .opt_level(2)
        .flag("-ffp-contract=off")
        .flag("-fno-strict-aliasing")
        .flag("-Wno-unknown-pragmas"); // #pragma unroll is nvcc's
    for dir in includes {
        b.include(dir);
    }
    b
}

/// The kernels' translation unit: the emulator header, every kernel source between two red
/// zones of the shared memory section, and the entry table.
fn unity_source(sources: &[PathBuf], defects: &Path, entries: &[String], figures: &HashMap<String, Figures>) -> String {
    let mut src = String::from("// Generated by build.rs: the kernels as host C++, and their entry table.\n");
    src.push_str("#include \"cuda_emu.h\"\n#include \"entries.h\"\n#include <string.h>\nEMU_SHARED_RED_ZONE\n");
    for k in sources {
        writeln!(src, "#include \"{}\"", k.display()).expect("string write");
    }
    src.push_str("EMU_SHARED_RED_ZONE\n");
    src.push_str(
        "extern \"C\" const EmuEntry* emu_find(const char* name) {\n    static const EmuEntry entries[] = {\n",
    );
    for e in entries.iter().cloned().chain(test_kernels(defects)) {
        let f = figures
            .get(&e)
            .unwrap_or_else(|| panic!("ptxas reported nothing for the entry point {e}"));
        let (threads, shared, registers) = (f.max_threads, f.static_shared, f.registers);
        writeln!(src, "        EMU_ENTRY({e}, {threads}, {shared}, {registers}),").expect("string write");
    }
    src.push_str("    };\n    for (const EmuEntry& e : entries)\n        if (strcmp(e.name, name) == 0) return &e;\n");
    src.push_str("    return nullptr;\n}\n");
    src
}

/// The static shared arrays of the kernels' object (objdump's symbol table: every object in the
/// section `emu_shared` that is not a red zone) as the runtime's table. Refuses a layout that
/// leaves an array without a red zone on either side, and a `__shared__` declared in a template
/// (GCC places a template's statics in their own sections, ignoring the attribute, so the
/// emulator could neither poison nor guard it).
fn shared_layout_source(objects: &[PathBuf]) -> String {
    let [object] = objects else {
        panic!("the kernels compile to one object, got {objects:?}")
    };
    let symbols = run_stdout(Command::new("objdump").args(["-t", "-C"]).arg(object));
    let headers = run_stdout(Command::new("objdump").arg("-h").arg(object));
    let section_bytes = headers
        .lines()
        .find_map(|l| {
            let f: Vec<&str> = l.split_whitespace().collect();
            (f.get(1) == Some(&"emu_shared")).then(|| u64::from_str_radix(f[2], 16).expect("a section size"))
        })
        .unwrap_or(0);
    let mut arrays: Vec<(u64, u64, String)> = Vec::new();
    for line in symbols.lines().filter(|l| l.contains(" O ")) {
        let Some((left, right)) = line.split_once('\t') else {
            continue;
        };
        let (value, section) = (left.split_whitespace().next(), left.split_whitespace().last());
        let Some((size, name)) = right.split_once(' ') else {
            continue;
        };
        if section != Some("emu_shared") {
            assert!(
                !name.contains("emu_red_zone_"),
                "a __shared__ array in `{name}` is outside the shared memory section ({section:?}): declare \
                 __shared__ arrays in the entry points, not in templates, and pass them in"
            );
            continue;
        }
        if name.contains("emu_red_zone_") {
            continue;
        }
        let hex = |s: &str| u64::from_str_radix(s, 16).expect("objdump prints hex");
        arrays.push((hex(value.expect("a symbol value")), hex(size), name.trim().to_string()));
    }
    arrays.sort();
    let mut red_from = 0;
    for (i, (offset, size, name)) in arrays.iter().enumerate() {
        let next = arrays.get(i + 1).map_or(section_bytes, |a| a.0);
        assert!(
            *offset > red_from && offset + size < next,
            "shared array `{name}` has no red zone on one side in the emulator's layout"
        );
        red_from = offset + size;
    }
    let mut src = String::from("// Generated by build.rs: the static shared arrays of the kernels' object file.\n");
    src.push_str("#include \"checker.h\"\nnamespace emu {\nextern const SharedArray shared_arrays[] = {\n");
    for (offset, size, name) in &arrays {
        writeln!(src, "    {{{name:?}, {offset}, {size}}},").expect("string write");
    }
    if arrays.is_empty() {
        src.push_str("    {nullptr, 0, 0},\n");
    }
    writeln!(
        src,
        "}};\nextern const uint32_t shared_array_count = {};\nextern const uint64_t shared_section_bytes = {section_bytes};\n}}",
        arrays.len()
    )
    .expect("string write");
    src
}

/// Runs a tool and returns what it printed.
fn run_stdout(cmd: &mut Command) -> String {
    let out = cmd.output().unwrap_or_else(|e| panic!("could not run {cmd:?}: {e}"));
    assert!(
        out.status.success(),
        "{cmd:?} failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).into_owned()
}

/// The `extern "C" __global__ void [__launch_bounds__(N)] NAME(` kernels of the emulator's test
/// file.
fn test_kernels(file: &Path) -> Vec<String> {
    let text = fs::read_to_string(file).unwrap_or_else(|e| panic!("{}: {e}", file.display()));
    text.lines()
        .filter_map(|l| l.strip_prefix("extern \"C\" __global__ void "))
        .map(|rest| match rest.strip_prefix("__launch_bounds__(") {
            Some(bounded) => bounded.split_once(')').map_or(bounded, |(_, name)| name),
            None => rest,
        })
        .filter_map(|rest| rest.split('(').next())
        .map(|name| name.trim().to_string())
        .collect()
}

/// What the GPU compiler makes of one entry point on sm_90.
#[derive(Debug, Default, Clone, Copy)]
struct Figures {
    /// Threads a block by `__launch_bounds__` (the PTX's `.maxntid`); 0 without bounds.
    max_threads: u32,
    /// Bytes of static shared memory a block.
    static_shared: u32,
    /// Registers a thread.
    registers: u32,
}

/// Compiles `sources` (one translation unit) to PTX for compute_90 and assembles it for sm_90,
/// and reads each entry's figures from the PTX and from ptxas's report.
fn gpu_figures(nvcc: &Path, sources: &[PathBuf], includes: &[&Path], out_dir: &Path) -> HashMap<String, Figures> {
    let unity = out_dir.join("gpu_figures.cu");
    let mut src = String::from("// Generated by build.rs: the kernels and test kernels, for their GPU figures.\n");
    for k in sources {
        writeln!(src, "#include \"{}\"", k.display()).expect("string write");
    }
    fs::write(&unity, src).expect("write the figures' source");
    let ptx = out_dir.join("gpu_figures.ptx");
    let mut cmd = Command::new(nvcc);
    cmd.args(["-ptx", "-arch=compute_90", "-std=c++17"]);
    for dir in includes {
        cmd.arg(format!("-I{}", dir.display()));
    }
    run(cmd.arg(&unity).arg("-o").arg(&ptx));
    let ptxas = nvcc.with_file_name("ptxas");
    let report = run(Command::new(&ptxas)
        .args(["-arch=sm_90", "-v", "-o"])
        .arg(out_dir.join("gpu_figures.cubin"))
        .arg(&ptx));
    let mut figures = bounds_of(&fs::read_to_string(&ptx).expect("read the PTX"));
    read_ptxas_report(&report, &mut figures);
    figures
}

/// Runs a compiler; its diagnostics (stderr), where ptxas writes its report.
fn run(cmd: &mut Command) -> String {
    let out = cmd.output().unwrap_or_else(|e| panic!("could not run {cmd:?}: {e}"));
    let log = String::from_utf8_lossy(&out.stderr).into_owned();
    if !out.status.success() {
        panic!("{cmd:?} failed ({}):\n{log}", out.status);
    }
    log
}

/// Every `.entry NAME(` of a PTX file, with the product of its `.maxntid` (0 when it has none).
fn bounds_of(ptx: &str) -> HashMap<String, Figures> {
    let mut figures = HashMap::new();
    let mut current: Option<String> = None;
    for line in ptx.lines().map(str::trim) {
        if let Some(rest) = line.split(".entry ").nth(1) {
            let name = rest.split('(').next().unwrap_or(rest).trim().to_string();
            figures.insert(name.clone(), Figures::default());
            current = Some(name);
        } else if let (Some(dims), Some(name)) = (line.strip_prefix(".maxntid"), &current) {
            let threads = dims
                .split(',')
                .map(|d| d.trim().parse::<u32>().expect("a .maxntid dimension"))
                .product();
            figures.get_mut(name).expect("entry seen").max_threads = threads;
        } else if line == "{" {
            current = None;
        }
    }
    figures
}

/// ptxas prints, per entry, "Compiling entry function 'NAME' for 'sm_90'" and then
/// "Used N registers, used B barriers[, M bytes smem]".
fn read_ptxas_report(report: &str, figures: &mut HashMap<String, Figures>) {
    let mut current: Option<String> = None;
    for line in report.lines() {
        if let Some(rest) = line.split("Compiling entry function '").nth(1) {
            current = rest.split('\'').next().map(str::to_string);
        } else if let (Some(used), Some(name)) = (line.split("Used ").nth(1), &current) {
            let f = figures.entry(name.clone()).or_default();
            for part in used.split(',').map(str::trim) {
                let number = || part.split(' ').next().and_then(|n| n.parse::<u32>().ok());
                if part.ends_with(" registers") {
                    f.registers = number().expect("a register count");
                } else if part.ends_with(" bytes smem") {
                    f.static_shared = number().expect("a shared memory size");
                }
            }
        }
    }
}

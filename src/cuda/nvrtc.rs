//! NVRTC, CUDA's run-time compiler, found at run time: the library compiles its embedded kernel
//! source for a device's exact architecture when the build had no nvcc fatbin for it. NVRTC
//! needs no GPU, so this also runs (and is tested) on machines without one.
//!
//! libnvrtc is never linked: it is opened with `dlopen` from, in order,
//! - `$ENLIGHTEN_NVRTC` (the library file, or a folder holding it) when set, and then nothing else;
//! - the folders of the CUDA libraries this process has loaded (libtorch_cuda, libc10_cuda,
//!   libcudart, libnvrtc), and the wheel layouts beside them (`../../nvidia/cu13/lib`,
//!   `../../nvidia/cuda_nvrtc/lib`): a pip PyTorch ships libnvrtc there;
//! - the same places for the libtorch this crate was built against;
//! - the loader's search path (`libnvrtc.so.13`, `libnvrtc.so.12`).
//!
//! libnvrtc opens its builtins library (`libnvrtc-builtins.so.13.0`) by name, so the one beside the
//! chosen libnvrtc is opened first, by path: the loader then finds it already loaded, and no
//! `LD_LIBRARY_PATH` is needed. NVRTC has no copy of `cuda_fp16.h`/`cuda_bf16.h`; they come from
//! the `include` folder beside libnvrtc (the CUDA runtime wheel puts them there) or beside the
//! loaded CUDA runtime.

use std::ffi::{c_char, c_int, c_void, CStr, CString};
use std::fmt;
use std::path::{Path, PathBuf};
use std::sync::OnceLock;
use std::time::Instant;

/// A GPU architecture, `sm_{major}{minor}` (9.0 is `sm_90`, an H100/H200).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct Arch {
    /// The compute capability's major version.
    pub major: u32,
    /// The compute capability's minor version.
    pub minor: u32,
}

impl Arch {
    /// The architecture of compute capability `major.minor`.
    pub const fn new(major: u32, minor: u32) -> Arch {
        Arch { major, minor }
    }

    /// `major * 10 + minor`, as nvcc's and the fatbin's architecture numbers count (90 = sm_90).
    pub fn number(self) -> u32 {
        self.major * 10 + self.minor
    }
}

impl fmt::Display for Arch {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "sm_{}{}", self.major, self.minor)
    }
}

/// Why NVRTC could not give the kernels; each case names what was missing.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum NvrtcError {
    /// No libnvrtc could be opened at any of the places searched.
    #[error("no libnvrtc found (searched: {})", .searched.join("; "))]
    NotFound {
        /// Each place tried, with the loader's reason.
        searched: Vec<String>,
    },
    /// libnvrtc opened but lacks a function this library calls.
    #[error("{library}: missing symbol {symbol}")]
    MissingSymbol {
        /// The library opened.
        library: String,
        /// The function not found in it.
        symbol: &'static str,
    },
    /// No folder with `cuda_fp16.h` was found for NVRTC's include path.
    #[error("no CUDA headers (cuda_fp16.h) for NVRTC (searched: {})", .searched.iter().map(|p| p.display().to_string()).collect::<Vec<_>>().join("; "))]
    NoHeaders {
        /// The folders tried.
        searched: Vec<PathBuf>,
    },
    /// An NVRTC call other than the compilation failed.
    #[error("NVRTC {call} failed: {message}")]
    Api {
        /// The NVRTC function.
        call: &'static str,
        /// NVRTC's description of the error.
        message: String,
    },
    /// The kernel source did not compile; `log` is NVRTC's.
    #[error("NVRTC could not compile enlighten's kernels for {arch}:\n{log}")]
    Compile {
        /// The architecture compiled for.
        arch: Arch,
        /// NVRTC's compile log.
        log: String,
    },
}

/// The compile options, beside `--gpu-architecture` and the include folder. `-default-device`
/// makes unannotated functions device functions (the prelude's stand-ins); `-lineinfo` keeps the
/// source lines profilers and compute-sanitizer show, as build.rs asks nvcc to.
pub(crate) const OPTIONS: &[&str] = &["-std=c++17", "-default-device", "-lineinfo"];

/// The kernels compiled by NVRTC for one architecture.
#[derive(Debug, Clone)]
pub struct Cubin {
    /// The architecture compiled for.
    pub arch: Arch,
    /// The cubin (an ELF image of SASS for `arch`), as `cuModuleLoadData` takes it.
    pub bytes: Vec<u8>,
    /// NVRTC's compile log: empty when the source compiled without a warning.
    pub log: String,
    /// Wall-clock seconds the compilation took.
    pub seconds: f64,
}

impl Cubin {
    /// The kernel entry points in the cubin's symbol table, or what is wrong with the image.
    pub fn entry_points(&self) -> Result<Vec<String>, String> {
        super::elf::entry_points(&self.bytes)
    }
}

type NvrtcProgram = *mut c_void;
type Status = c_int;

/// The NVRTC functions this library calls, resolved from the opened libnvrtc.
struct Api {
    version: unsafe extern "C" fn(*mut c_int, *mut c_int) -> Status,
    create: unsafe extern "C" fn(
        *mut NvrtcProgram,
        *const c_char,
        *const c_char,
        c_int,
        *const *const c_char,
        *const *const c_char,
    ) -> Status,
    compile: unsafe extern "C" fn(NvrtcProgram, c_int, *const *const c_char) -> Status,
    log_size: unsafe extern "C" fn(NvrtcProgram, *mut usize) -> Status,
    log: unsafe extern "C" fn(NvrtcProgram, *mut c_char) -> Status,
    cubin_size: unsafe extern "C" fn(NvrtcProgram, *mut usize) -> Status,
    cubin: unsafe extern "C" fn(NvrtcProgram, *mut c_char) -> Status,
    destroy: unsafe extern "C" fn(*mut NvrtcProgram) -> Status,
    error_string: unsafe extern "C" fn(Status) -> *const c_char,
}

/// An opened libnvrtc and the CUDA headers it compiles against.
pub struct Nvrtc {
    library: PathBuf,
    include: PathBuf,
    version: (i32, i32),
    api: Api,
}

impl fmt::Debug for Nvrtc {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Nvrtc")
            .field("library", &self.library)
            .field("include", &self.include)
            .field("version", &self.version)
            .finish()
    }
}

impl Nvrtc {
    /// The process's NVRTC, found and opened on the first call (see the module docs for where
    /// it is looked for); later calls return the same answer.
    pub fn locate() -> Result<&'static Nvrtc, NvrtcError> {
        static FOUND: OnceLock<Result<Nvrtc, NvrtcError>> = OnceLock::new();
        FOUND
            .get_or_init(super::nvrtc_search::open)
            .as_ref()
            .map_err(Clone::clone)
    }

    pub(crate) fn from_parts(library: PathBuf, include: PathBuf, handle: *mut c_void) -> Result<Nvrtc, NvrtcError> {
        let name = library.display().to_string();
        let api = Api {
            version: symbol(handle, &name, "nvrtcVersion")?,
            create: symbol(handle, &name, "nvrtcCreateProgram")?,
            compile: symbol(handle, &name, "nvrtcCompileProgram")?,
            log_size: symbol(handle, &name, "nvrtcGetProgramLogSize")?,
            log: symbol(handle, &name, "nvrtcGetProgramLog")?,
            cubin_size: symbol(handle, &name, "nvrtcGetCUBINSize")?,
            cubin: symbol(handle, &name, "nvrtcGetCUBIN")?,
            destroy: symbol(handle, &name, "nvrtcDestroyProgram")?,
            error_string: symbol(handle, &name, "nvrtcGetErrorString")?,
        };
        let mut nvrtc = Nvrtc {
            library,
            include,
            version: (0, 0),
            api,
        };
        let (mut major, mut minor) = (0, 0);
        // SAFETY: nvrtcVersion writes two ints through valid pointers.
        nvrtc.check("nvrtcVersion", unsafe { (nvrtc.api.version)(&mut major, &mut minor) })?;
        nvrtc.version = (major, minor);
        Ok(nvrtc)
    }

    /// The libnvrtc file opened.
    pub fn library(&self) -> &Path {
        &self.library
    }

    /// The folder given to NVRTC as `-I` for `cuda_fp16.h` and `cuda_bf16.h`.
    pub fn include(&self) -> &Path {
        &self.include
    }

    /// NVRTC's version, `(major, minor)`.
    pub fn version(&self) -> (i32, i32) {
        self.version
    }

    fn check(&self, call: &'static str, status: Status) -> Result<(), NvrtcError> {
        if status == 0 {
            return Ok(());
        }
        // SAFETY: nvrtcGetErrorString returns a static NUL-terminated string for any status.
        let text = unsafe { (self.api.error_string)(status) };
        let message = if text.is_null() {
            format!("status {status}")
        } else {
            unsafe { CStr::from_ptr(text) }.to_string_lossy().into_owned()
        };
        Err(NvrtcError::Api { call, message })
    }

    /// Compiles the library's embedded kernel source to a cubin for `arch`. Needs no GPU.
    pub fn compile(&self, arch: Arch) -> Result<Cubin, NvrtcError> {
        let cstring = |s: &str| CString::new(s).expect("kernel source and options hold no NUL");
        let files = super::kernel_source::files();
        let names: Vec<CString> = files.iter().map(|(n, _)| cstring(n)).collect();
        let texts: Vec<CString> = files.iter().map(|(_, t)| cstring(t)).collect();
        let name_ptrs: Vec<*const c_char> = names.iter().map(|c| c.as_ptr()).collect();
        let text_ptrs: Vec<*const c_char> = texts.iter().map(|c| c.as_ptr()).collect();
        let unity = cstring(&super::kernel_source::unity());
        let options: Vec<CString> = OPTIONS
            .iter()
            .map(|o| cstring(o))
            .chain([
                cstring(&format!("--gpu-architecture={arch}")),
                cstring(&format!("-I{}", self.include.display())),
            ])
            .collect();
        let option_ptrs: Vec<*const c_char> = options.iter().map(|c| c.as_ptr()).collect();

        let started = Instant::now();
        let mut program: NvrtcProgram = std::ptr::null_mut();
        // SAFETY: every pointer array has `files.len()` entries of live NUL-terminated strings.
        let created = unsafe {
            (self.api.create)(
                &mut program,
                unity.as_ptr(),
                c"enlighten_kernels.cu".as_ptr(),
                files.len() as c_int,
                text_ptrs.as_ptr(),
                name_ptrs.as_ptr(),
            )
        };
        self.check("nvrtcCreateProgram", created)?;
        let program = Program {
            nvrtc: self,
            handle: program,
        };
        // SAFETY: a live program and `option_ptrs.len()` live option strings.
        let compiled = unsafe { (self.api.compile)(program.handle, option_ptrs.len() as c_int, option_ptrs.as_ptr()) };
        let log = program.log()?;
        if compiled != 0 {
            return Err(NvrtcError::Compile { arch, log });
        }
        Ok(Cubin {
            arch,
            bytes: program.cubin()?,
            log,
            seconds: started.elapsed().as_secs_f64(),
        })
    }
}

/// An NVRTC program, destroyed when dropped.
struct Program<'a> {
    nvrtc: &'a Nvrtc,
    handle: NvrtcProgram,
}

impl Program<'_> {
    fn log(&self) -> Result<String, NvrtcError> {
        let mut size = 0usize;
        // SAFETY: a live program; the buffer has the size NVRTC reported (NUL included).
        self.nvrtc.check("nvrtcGetProgramLogSize", unsafe {
            (self.nvrtc.api.log_size)(self.handle, &mut size)
        })?;
        let mut buf = vec![0u8; size.max(1)];
        self.nvrtc.check("nvrtcGetProgramLog", unsafe {
            (self.nvrtc.api.log)(self.handle, buf.as_mut_ptr().cast())
        })?;
        let end = buf.iter().position(|&b| b == 0).unwrap_or(buf.len());
        Ok(String::from_utf8_lossy(&buf[..end]).trim().to_string())
    }

    fn cubin(&self) -> Result<Vec<u8>, NvrtcError> {
        let mut size = 0usize;
        // SAFETY: as for the log.
        self.nvrtc.check("nvrtcGetCUBINSize", unsafe {
            (self.nvrtc.api.cubin_size)(self.handle, &mut size)
        })?;
        let mut buf = vec![0u8; size];
        self.nvrtc.check("nvrtcGetCUBIN", unsafe {
            (self.nvrtc.api.cubin)(self.handle, buf.as_mut_ptr().cast())
        })?;
        Ok(buf)
    }
}

impl Drop for Program<'_> {
    fn drop(&mut self) {
        // SAFETY: the program was created by nvrtcCreateProgram and is destroyed once.
        let _ = unsafe { (self.nvrtc.api.destroy)(&mut self.handle) };
    }
}

/// `name` from the opened library, as a function pointer of type `F`.
fn symbol<F: Copy>(handle: *mut c_void, library: &str, name: &'static str) -> Result<F, NvrtcError> {
    let c_name = CString::new(name).expect("symbol names hold no NUL");
    // SAFETY: dlsym on a live handle with a valid name.
    let ptr = unsafe { libc::dlsym(handle, c_name.as_ptr()) };
    if ptr.is_null() {
        return Err(NvrtcError::MissingSymbol {
            library: library.to_string(),
            symbol: name,
        });
    }
    assert_eq!(std::mem::size_of::<F>(), std::mem::size_of::<*mut c_void>());
    // SAFETY: F is a function pointer type matching NVRTC's declaration of `name` (nvrtc.h).
    Ok(unsafe { std::mem::transmute_copy::<*mut c_void, F>(&ptr) })
}

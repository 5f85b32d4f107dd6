//! Where libnvrtc and the CUDA headers are looked for (the order is documented in
//! [`super::nvrtc`]), and opening it so that its builtins library is found without
//! `LD_LIBRARY_PATH`.

use std::ffi::{c_void, CStr, CString};
use std::fs;
use std::path::{Path, PathBuf};

use super::nvrtc::{Nvrtc, NvrtcError};

/// libnvrtc's file names, newest first: NVRTC 13 ships with PyTorch's CUDA 13 wheels.
const NAMES: &[&str] = &["libnvrtc.so.13", "libnvrtc.so.12", "libnvrtc.so"];
/// Loaded libraries whose folders hold, or sit beside, CUDA's libraries.
const ANCHORS: &[&str] = &["libnvrtc.so", "libtorch_cuda.so", "libc10_cuda.so", "libcudart.so"];
/// From an anchor's folder to where wheels and toolkits keep libnvrtc.
const LIB_LAYOUTS: &[&str] = &[".", "../../nvidia/cu13/lib", "../../nvidia/cuda_nvrtc/lib", "../lib64"];

/// Opens the first libnvrtc found, with the include folder that has `cuda_fp16.h`.
pub(super) fn open() -> Result<Nvrtc, NvrtcError> {
    let (candidates, folders) = candidates();
    let mut searched: Vec<String> = folders
        .iter()
        .map(|f| format!("{}: no libnvrtc", f.display()))
        .collect();
    for candidate in candidates {
        match dlopen(&candidate) {
            Ok(handle) => {
                let library = loaded_path(&candidate);
                let include = include_folder(&library)?;
                return Nvrtc::from_parts(library, include, handle);
            }
            Err(reason) => searched.push(format!("{}: {reason}", candidate.display())),
        }
    }
    Err(NvrtcError::NotFound { searched })
}

/// The libraries to try, in order (bare names go through the loader's search path), and the
/// folders looked in that hold none.
fn candidates() -> (Vec<PathBuf>, Vec<PathBuf>) {
    if let Some(explicit) = std::env::var_os("ENLIGHTEN_NVRTC") {
        let explicit = PathBuf::from(explicit);
        let files = if explicit.is_dir() {
            NAMES.iter().map(|n| explicit.join(n)).collect()
        } else {
            vec![explicit]
        };
        return (files, Vec::new());
    }
    let mut folders = Vec::new();
    for anchor in loaded_folders().into_iter().chain(built_against()) {
        for layout in LIB_LAYOUTS {
            let folder = normalize(&anchor.join(layout));
            if folder.is_dir() && !folders.contains(&folder) {
                folders.push(folder);
            }
        }
    }
    let mut out: Vec<PathBuf> = folders
        .iter()
        .flat_map(|f| NAMES.iter().map(move |n| f.join(n)))
        .filter(|p| p.is_file())
        .collect();
    let empty = folders
        .into_iter()
        .filter(|f| !out.iter().any(|p| p.parent() == Some(f.as_path())))
        .collect();
    out.extend(NAMES.iter().map(PathBuf::from));
    (out, empty)
}

/// The folders of the CUDA libraries this process has mapped (/proc/self/maps).
fn loaded_folders() -> Vec<PathBuf> {
    let maps = fs::read_to_string("/proc/self/maps").unwrap_or_default();
    let mut folders: Vec<PathBuf> = Vec::new();
    for path in maps.lines().filter_map(|l| l.split_whitespace().nth(5)).map(Path::new) {
        let is_anchor = path
            .file_name()
            .and_then(|n| n.to_str())
            .is_some_and(|n| ANCHORS.iter().any(|a| n.starts_with(a)));
        if let (true, Some(parent)) = (is_anchor, path.parent()) {
            if !folders.iter().any(|f| f == parent) {
                folders.push(parent.to_path_buf());
            }
        }
    }
    folders
}

/// The lib folder of the libtorch this crate was built against, when the build knew it.
fn built_against() -> Option<PathBuf> {
    Some(env!("ENLIGHTEN_LIBTORCH_LIB"))
        .filter(|p| !p.is_empty())
        .map(PathBuf::from)
}

/// `a/b/../c` as `a/c`, without touching the file system (the folders may not exist).
fn normalize(path: &Path) -> PathBuf {
    let mut out = PathBuf::new();
    for part in path.components() {
        match part {
            std::path::Component::CurDir => {}
            std::path::Component::ParentDir => {
                out.pop();
            }
            other => out.push(other),
        }
    }
    out
}

/// Opens `library`, first opening the builtins library beside it by path, because libnvrtc
/// opens that one by name and would otherwise need it on the loader's path.
fn dlopen(library: &Path) -> Result<*mut c_void, String> {
    if let Some(folder) = library.parent().filter(|f| !f.as_os_str().is_empty()) {
        for builtins in builtins_beside(folder) {
            // A failure here shows up as libnvrtc's own error when it compiles; keep going.
            let _ = open_library(&builtins, libc::RTLD_NOW | libc::RTLD_GLOBAL);
        }
    }
    open_library(library, libc::RTLD_NOW | libc::RTLD_LOCAL)
}

/// `libnvrtc-builtins.so.*` in `folder` (not the `.alt` variants, which libnvrtc does not open by
/// default).
fn builtins_beside(folder: &Path) -> Vec<PathBuf> {
    let Ok(entries) = fs::read_dir(folder) else {
        return Vec::new();
    };
    let mut found: Vec<PathBuf> = entries
        .filter_map(|e| e.ok().map(|e| e.path()))
        .filter(|p| {
            p.file_name()
                .and_then(|n| n.to_str())
                .is_some_and(|n| n.starts_with("libnvrtc-builtins.so."))
        })
        .collect();
    found.sort();
    found
}

fn open_library(path: &Path, flags: libc::c_int) -> Result<*mut c_void, String> {
    let c_path = CString::new(path.as_os_str().as_encoded_bytes()).map_err(|_| "path holds a NUL".to_string())?;
    // SAFETY: dlopen with a valid NUL-terminated path. The handle is never closed: NVRTC stays
    // loaded for the process's lifetime, like the kernels compiled with it.
    let handle = unsafe { libc::dlopen(c_path.as_ptr(), flags) };
    if handle.is_null() {
        // SAFETY: dlerror returns null or a thread-local NUL-terminated message.
        let msg = unsafe { libc::dlerror() };
        return Err(if msg.is_null() {
            "dlopen failed".into()
        } else {
            unsafe { CStr::from_ptr(msg) }.to_string_lossy().into_owned()
        });
    }
    Ok(handle)
}

/// Where the loader found `candidate` (a bare name resolves through the search path).
fn loaded_path(candidate: &Path) -> PathBuf {
    if candidate.is_absolute() {
        return candidate.to_path_buf();
    }
    let maps = fs::read_to_string("/proc/self/maps").unwrap_or_default();
    maps.lines()
        .filter_map(|l| l.split_whitespace().nth(5))
        .map(PathBuf::from)
        .find(|p| {
            p.file_name()
                .is_some_and(|n| n.to_string_lossy().starts_with("libnvrtc.so"))
        })
        .unwrap_or_else(|| candidate.to_path_buf())
}

/// The first folder with `cuda_fp16.h`: beside libnvrtc, then beside the loaded CUDA libraries,
/// then in the built-against libtorch's wheel layout.
fn include_folder(library: &Path) -> Result<PathBuf, NvrtcError> {
    let beside = |folder: &Path| {
        [
            "../include",
            "../../nvidia/cu13/include",
            "../../nvidia/cuda_runtime/include",
        ]
        .iter()
        .map(|rel| normalize(&folder.join(rel)))
        .collect::<Vec<_>>()
    };
    let mut searched: Vec<PathBuf> = Vec::new();
    let anchors = library
        .parent()
        .map(Path::to_path_buf)
        .into_iter()
        .chain(loaded_folders())
        .chain(built_against());
    for folder in anchors.flat_map(|a| beside(&a)) {
        if searched.contains(&folder) {
            continue;
        }
        if folder.join("cuda_fp16.h").is_file() {
            return Ok(folder);
        }
        searched.push(folder);
    }
    Err(NvrtcError::NoHeaders { searched })
}

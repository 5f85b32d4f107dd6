//! The kernel source embedded in the library (kernels/*.cu, *.cuh and the generated
//! kernel_constants.cuh), as NVRTC compiles it at run time: one translation unit that includes
//! every `.cu` file, the way build.rs feeds nvcc, with the other files as in-memory headers.

include!(concat!(env!("OUT_DIR"), "/kernel_sources.rs"));

/// The translation unit NVRTC compiles: `#include "X.cu"` for every kernel file.
pub(crate) fn unity() -> String {
    UNITS.iter().map(|u| format!("#include \"{u}\"\n")).collect()
}

/// Every embedded file as (include name, text).
pub(crate) fn files() -> &'static [(&'static str, &'static str)] {
    FILES
}

/// A 64-bit FNV-1a hash of the embedded source and of everything else that shapes the compiled
/// code (`extra`: the compile options), for the on-disk cache's key. Not cryptographic: it only
/// has to change when the source does.
pub(crate) fn hash(extra: &[&str]) -> u64 {
    const PRIME: u64 = 0x0000_0100_0000_01b3;
    let mut h: u64 = 0xcbf2_9ce4_8422_2325;
    let mut eat = |bytes: &[u8]| {
        for &b in bytes.iter().chain([0u8].iter()) {
            h ^= u64::from(b);
            h = h.wrapping_mul(PRIME);
        }
    };
    for (name, text) in FILES {
        eat(name.as_bytes());
        eat(text.as_bytes());
    }
    for unit in UNITS {
        eat(unit.as_bytes());
    }
    for e in extra {
        eat(e.as_bytes());
    }
    h
}

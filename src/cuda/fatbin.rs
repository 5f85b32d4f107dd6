//! The fatbin that build.rs compiled from kernels/*.cu, and the one list of kernel entry points
//! the library launches. Launch sites take a [`Kernel`], which only this module can name, so a
//! test that checks every [`Kernel::ALL`] entry against the fatbin covers every launch.

static FATBIN: &[u8] = include_bytes!(concat!(env!("OUT_DIR"), "/enlighten.fatbin"));

/// The embedded fatbin (empty when the crate was built without nvcc).
pub fn fatbin() -> &'static [u8] {
    FATBIN
}

/// The name of an `extern "C"` kernel entry point in the fatbin (and in the emulator).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct Kernel(&'static str);

macro_rules! kernels {
    ($($ident:ident = $name:literal),* $(,)?) => {
        impl Kernel {
            $(pub const $ident: Kernel = Kernel($name);)*
            /// Every entry point the library launches (kernels/entry_points.txt).
            pub const ALL: &'static [Kernel] = &[$(Kernel::$ident),*];
        }
    };
}

include!(concat!(env!("OUT_DIR"), "/kernel_entries.rs"));

impl Kernel {
    pub fn name(self) -> &'static str {
        self.0
    }

    /// The variant of a kernel family for a storage dtype: `[f32, f16, bf16]`.
    pub(crate) fn for_dtype(kind: tch::Kind, [f32k, f16k, bf16k]: [Kernel; 3]) -> Kernel {
        match kind {
            tch::Kind::Half => f16k,
            tch::Kind::BFloat16 => bf16k,
            _ => f32k,
        }
    }
}

/// Whether the fatbin holds an entry point with exactly this name. The fatbin is built
/// uncompressed, so each entry's name appears NUL-terminated in the ELF string tables of its
/// SASS images, preceded by a NUL or by the '.' of a section name such as `.text.NAME`.
pub fn fatbin_has_entry(name: &str) -> bool {
    let needle: Vec<u8> = name.bytes().chain([0]).collect();
    FATBIN
        .windows(needle.len())
        .enumerate()
        .any(|(at, w)| w == needle.as_slice() && at > 0 && matches!(FATBIN[at - 1], 0 | b'.'))
}

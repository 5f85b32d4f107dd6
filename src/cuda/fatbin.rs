//! The fatbin that build.rs compiled from kernels/*.cu, and the one list of kernel entry points
//! the library launches. Launch sites take a [`Kernel`], which only this module can name, so a
//! test that checks every [`Kernel::ALL`] entry against the fatbin covers every launch.

static FATBIN: &[u8] = include_bytes!(concat!(env!("OUT_DIR"), "/enlighten.fatbin"));

/// The embedded fatbin (empty when the crate was built without nvcc; the kernels then come
/// from NVRTC, see [`super::kernels_origin`]).
pub fn fatbin() -> &'static [u8] {
    FATBIN
}

/// The architectures the embedded fatbin has SASS for (those devices load it without NVRTC).
pub fn fatbin_architectures() -> Vec<super::nvrtc::Arch> {
    sass_architectures(FATBIN)
}

/// The name of an `extern "C"` kernel entry point in the fatbin (and in the emulator).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct Kernel(&'static str);

macro_rules! kernels {
    ($($ident:ident = $name:literal),* $(,)?) => {
        impl Kernel {
            $(#[doc = concat!("The `", $name, "` entry point.")]
            pub const $ident: Kernel = Kernel($name);)*
            /// Every entry point the library launches (kernels/entry_points.txt).
            pub const ALL: &'static [Kernel] = &[$(Kernel::$ident),*];
        }
    };
}

include!(concat!(env!("OUT_DIR"), "/kernel_entries.rs"));

impl Kernel {
    /// The entry point's name, as in kernels/entry_points.txt.
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

/// The architectures `fatbin` holds SASS (cubin) images for, read from its container headers:
/// each container starts with magic 0xBA55ED50, a u16 version, a u16 header size and a u64
/// payload size; each image in it with a u16 kind (1 = PTX, 2 = cubin), a u32 header size at
/// byte 4, a u64 payload size at byte 8 and the architecture number (90 = sm_90) at byte 28.
/// Anything that does not parse ends the list, so a damaged fatbin is never taken for a match.
pub(crate) fn sass_architectures(fatbin: &[u8]) -> Vec<super::nvrtc::Arch> {
    const MAGIC: u32 = 0xBA55_ED50;
    let u16_at = |at: usize| {
        fatbin
            .get(at..at + 2)
            .map(|b| u16::from_le_bytes([b[0], b[1]]) as usize)
    };
    let u32_at = |at: usize| {
        fatbin
            .get(at..at + 4)
            .map(|b| u32::from_le_bytes(b.try_into().expect("4 bytes")))
    };
    let u64_at = |at: usize| {
        fatbin
            .get(at..at + 8)
            .map(|b| u64::from_le_bytes(b.try_into().expect("8 bytes")) as usize)
    };
    let mut found = Vec::new();
    let mut container = 0;
    while u32_at(container) == Some(MAGIC) {
        let (Some(header), Some(size)) = (u16_at(container + 6), u64_at(container + 8)) else {
            break;
        };
        let end = container.saturating_add(header).saturating_add(size).min(fatbin.len());
        let mut image = container + header;
        while image < end {
            let (Some(kind), Some(header), Some(size), Some(arch)) =
                (u16_at(image), u32_at(image + 4), u64_at(image + 8), u32_at(image + 28))
            else {
                return found;
            };
            if kind == 2 {
                found.push(super::nvrtc::Arch::new(arch / 10, arch % 10));
            }
            if header == 0 {
                return found;
            }
            image = image.saturating_add(header as usize).saturating_add(size);
        }
        container = end;
    }
    found
}

//! The fatbin that build.rs compiled from kernels/*.cu, and the one list of kernel entry points
//! the library launches. Launch sites take a [`Kernel`], which only this module can name, so a
//! test that checks every [`Kernel::ALL`] entry against the fatbin covers every launch.

static FATBIN: &[u8] = include_bytes!(concat!(env!("OUT_DIR"), "/enlighten.fatbin"));

/// The embedded fatbin (empty when the crate was built without nvcc).
pub fn fatbin() -> &'static [u8] {
    FATBIN
}

/// The name of an `extern "C"` kernel entry point in the fatbin.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct Kernel(&'static str);

macro_rules! kernels {
    ($($ident:ident = $name:literal),* $(,)?) => {
        impl Kernel {
            $(pub const $ident: Kernel = Kernel($name);)*
            /// Every entry point the library launches.
            pub const ALL: &'static [Kernel] = &[$(Kernel::$ident),*];
        }
    };
}

kernels! {
    MIXUP_F32 = "mixup_f32", MIXUP_F16 = "mixup_f16", MIXUP_BF16 = "mixup_bf16",
    MIXUP_FLIP_INPLACE_F32 = "mixup_flip_inplace_f32",
    MIXUP_FLIP_INPLACE_F16 = "mixup_flip_inplace_f16",
    MIXUP_FLIP_INPLACE_BF16 = "mixup_flip_inplace_bf16",
    MIXUP_U8_F32 = "mixup_u8_f32", MIXUP_U8_F16 = "mixup_u8_f16", MIXUP_U8_BF16 = "mixup_u8_bf16",
    CUTMIX_F32 = "cutmix_f32", CUTMIX_F16 = "cutmix_f16", CUTMIX_BF16 = "cutmix_bf16",
    CE_FORWARD_F32 = "ce_forward_f32", CE_FORWARD_F16 = "ce_forward_f16", CE_FORWARD_BF16 = "ce_forward_bf16",
    MSE_FORWARD_F32 = "mse_forward_f32", MSE_FORWARD_F16 = "mse_forward_f16", MSE_FORWARD_BF16 = "mse_forward_bf16",
    LOSS_SELECT = "loss_select", LOSS_COUNT_VALID = "loss_count_valid",
    SELECT_INIT = "select_init", SELECT_HIST = "select_hist", SELECT_DIGIT = "select_digit",
    SELECT_EQ_COUNT = "select_eq_count", SELECT_MARK = "select_mark", SELECT_FINAL = "select_final",
    ZERO_COUNTS = "zero_counts", MULTI_DOT = "multi_dot", MULTI_DIFF_SQ = "multi_diff_sq",
    PARTIALS_SUM = "partials_sum",
}

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

//! bf16 autocast on CUDA. tch's `autocast` turns autocasting on with libtorch's default CUDA
//! dtype (f16) and exposes no way to change it, so the dtype is set through libtorch's own
//! `at::autocast::set_autocast_dtype`, found by its (stable, C++) symbol in the process.

use std::ffi::CStr;

use tch::Kind;

use crate::error::{Error, Result};

/// `c10::DeviceType::CUDA`.
const CUDA: i8 = 1;
const SET: &CStr = c"_ZN2at8autocast18set_autocast_dtypeEN3c1010DeviceTypeENS1_10ScalarTypeE";
const GET: &CStr = c"_ZN2at8autocast18get_autocast_dtypeEN3c1010DeviceTypeE";

/// `c10::ScalarType` codes of the kinds autocast uses.
fn scalar_type(kind: Kind) -> Result<i8> {
    match kind {
        Kind::Half => Ok(5),
        Kind::Float => Ok(6),
        Kind::BFloat16 => Ok(15),
        other => Err(Error::value("kind", "Half, Float or BFloat16", format!("{other:?}"))),
    }
}

fn symbol(name: &CStr) -> Result<*mut libc::c_void> {
    // SAFETY: dlsym on the whole process with a NUL-terminated name; libtorch is linked in.
    let ptr = unsafe { libc::dlsym(libc::RTLD_DEFAULT, name.as_ptr()) };
    if ptr.is_null() {
        return Err(Error::value(
            "autocast",
            format!("a libtorch that exports {name:?} (bf16 autocast needs libtorch 2.4 or newer)"),
            "a libtorch without it",
        ));
    }
    Ok(ptr)
}

/// Sets the dtype that CUDA autocast casts to.
pub fn set_cuda_autocast_kind(kind: Kind) -> Result<()> {
    let code = scalar_type(kind)?;
    // SAFETY: the symbol is `void at::autocast::set_autocast_dtype(c10::DeviceType,
    // c10::ScalarType)`; both enums are int8 and passed by value as integers.
    let set: extern "C" fn(i8, i8) = unsafe { std::mem::transmute(symbol(SET)?) };
    set(CUDA, code);
    Ok(())
}

/// The dtype CUDA autocast casts to.
pub fn cuda_autocast_kind() -> Result<Kind> {
    // SAFETY: `c10::ScalarType at::autocast::get_autocast_dtype(c10::DeviceType)`, int8 enums.
    let get: extern "C" fn(i8) -> i8 = unsafe { std::mem::transmute(symbol(GET)?) };
    match get(CUDA) {
        5 => Ok(Kind::Half),
        6 => Ok(Kind::Float),
        15 => Ok(Kind::BFloat16),
        code => Err(Error::Internal(format!(
            "libtorch reports CUDA autocast scalar type {code}, none of Half, Float, BFloat16"
        ))),
    }
}

/// `f` under CUDA autocast when `on`, else `f` alone: tch's `autocast` calls libtorch's
/// deprecated `is_enabled`/`set_enabled`, which warn on every call, also when turning nothing on.
pub fn autocast_if<T>(on: bool, f: impl FnOnce() -> T) -> T {
    if on {
        tch::autocast(true, f)
    } else {
        f()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_cuda_autocast_kind_round_trips_without_a_gpu() {
        let before = cuda_autocast_kind().unwrap();
        set_cuda_autocast_kind(Kind::BFloat16).unwrap();
        assert_eq!(cuda_autocast_kind().unwrap(), Kind::BFloat16);
        set_cuda_autocast_kind(Kind::Half).unwrap();
        assert_eq!(cuda_autocast_kind().unwrap(), Kind::Half);
        set_cuda_autocast_kind(before).unwrap();
        assert!(set_cuda_autocast_kind(Kind::Int64).is_err());
    }
}

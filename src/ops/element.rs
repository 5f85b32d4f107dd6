//! Element types of the fused CPU paths, and borrowed slices over contiguous CPU tensors.

use half::{bf16, f16};
use tch::{Device, Kind, Tensor};

use crate::error::{Error, Result};

/// A floating storage type: read and written in its own type, computed in f32.
pub(crate) trait Element: Copy + Send + Sync + 'static {
    const KIND: Kind;
    fn to_f32(self) -> f32;
    fn from_f32(v: f32) -> Self;
}

impl Element for f32 {
    const KIND: Kind = Kind::Float;
    #[inline(always)]
    fn to_f32(self) -> f32 {
        self
    }
    #[inline(always)]
    fn from_f32(v: f32) -> Self {
        v
    }
}

impl Element for f16 {
    const KIND: Kind = Kind::Half;
    #[inline(always)]
    fn to_f32(self) -> f32 {
        f16::to_f32(self)
    }
    #[inline(always)]
    fn from_f32(v: f32) -> Self {
        f16::from_f32(v)
    }
}

impl Element for bf16 {
    const KIND: Kind = Kind::BFloat16;
    #[inline(always)]
    fn to_f32(self) -> f32 {
        bf16::to_f32(self)
    }
    #[inline(always)]
    fn from_f32(v: f32) -> Self {
        bf16::from_f32(v)
    }
}

/// The floating dtypes every op accepts.
pub(crate) const FLOAT_KINDS: &str = "f32, f16 or bf16";

pub(crate) fn check_float(arg: &'static str, t: &Tensor) -> Result<Kind> {
    match t.kind() {
        k @ (Kind::Float | Kind::Half | Kind::BFloat16) => Ok(k),
        got => Err(Error::Dtype { arg, expected: FLOAT_KINDS.into(), got }),
    }
}

pub(crate) fn check_kind(arg: &'static str, t: &Tensor, kind: Kind) -> Result<()> {
    if t.kind() == kind {
        Ok(())
    } else {
        Err(Error::Dtype { arg, expected: format!("{kind:?}"), got: t.kind() })
    }
}

pub(crate) fn check_same_device(arg: &'static str, t: &Tensor, like: &Tensor) -> Result<()> {
    if t.device() == like.device() {
        Ok(())
    } else {
        Err(Error::Device { arg, expected: format!("{:?} (the device of the input)", like.device()), got: t.device() })
    }
}

pub(crate) fn check_contiguous(arg: &'static str, t: &Tensor) -> Result<()> {
    if t.is_contiguous() {
        Ok(())
    } else {
        Err(Error::NotContiguous { arg, size: t.size(), strides: t.stride() })
    }
}

/// The elements of a contiguous CPU tensor of element type `T`.
///
/// Callers check device, dtype and contiguity first; the asserts guard the unsafe view.
pub(crate) fn cpu_slice<T: Element>(t: &Tensor) -> &[T] {
    assert!(t.device() == Device::Cpu && t.kind() == T::KIND && t.is_contiguous());
    let n = t.numel();
    if n == 0 {
        return &[];
    }
    // SAFETY: the tensor is a live, contiguous CPU tensor of n elements of type T; the slice
    // borrows the tensor, so the storage outlives it.
    unsafe { std::slice::from_raw_parts(t.data_ptr() as *const T, n) }
}

/// The elements of a contiguous CPU tensor, mutably. Same checks as [`cpu_slice`].
pub(crate) fn cpu_slice_mut<T: Element>(t: &mut Tensor) -> &mut [T] {
    assert!(t.device() == Device::Cpu && t.kind() == T::KIND && t.is_contiguous());
    let n = t.numel();
    if n == 0 {
        return &mut [];
    }
    // SAFETY: as in cpu_slice, and the exclusive borrow of the tensor handle stands for
    // exclusive access to its storage (ops reject outputs that overlap their inputs).
    unsafe { std::slice::from_raw_parts_mut(t.data_ptr() as *mut T, n) }
}

/// Plain-typed CPU slices (indices, u8 images, f32 lambdas).
pub(crate) fn cpu_plain<T: Copy>(t: &Tensor, kind: Kind) -> &[T] {
    assert!(t.device() == Device::Cpu && t.kind() == kind && t.is_contiguous());
    assert_eq!(std::mem::size_of::<T>(), kind.elt_size_in_bytes());
    let n = t.numel();
    if n == 0 {
        return &[];
    }
    // SAFETY: as in cpu_slice, with T matching the element size of `kind`.
    unsafe { std::slice::from_raw_parts(t.data_ptr() as *const T, n) }
}

/// Whether two tensors' storages overlap in memory.
pub(crate) fn overlaps(a: &Tensor, b: &Tensor) -> bool {
    if a.device() != b.device() {
        return false;
    }
    let span = |t: &Tensor| {
        let start = t.data_ptr() as usize;
        (start, start + t.numel() * t.kind().elt_size_in_bytes())
    };
    let (a0, a1) = span(a);
    let (b0, b1) = span(b);
    a0 < b1 && b0 < a1
}

//! Element types of the fused CPU paths, and borrowed slices over contiguous CPU tensors.

use half::slice::HalfFloatSliceExt;
use half::{bf16, f16};
use tch::{Device, Kind, Tensor};

use crate::error::{Error, Result};

#[cfg(target_arch = "x86_64")]
mod bf16x16;

/// A floating storage type: read and written in its own type, computed in f32.
pub(crate) trait Element: bytemuck::Pod + Send + Sync + 'static {
    const KIND: Kind;
    fn to_f32(self) -> f32;
    fn from_f32(v: f32) -> Self;
    /// Widens a run of elements into f32 (SIMD conversions for f16/bf16).
    fn widen(src: &[Self], dst: &mut [f32]);
    /// Rounds a run of f32 values into the storage type.
    fn narrow(src: &[f32], dst: &mut [Self]);
}

/// Elements converted per block: small enough to stay in L1 next to its inputs.
const BLOCK: usize = 256;

/// `out[k] = f(a[k], b[k])` computed in f32. f32 runs directly (so LLVM vectorises the loop);
/// f16/bf16 go through f32 blocks with vectorised conversions.
#[inline(always)]
pub(crate) fn map2<T: Element>(out: &mut [T], a: &[T], b: &[T], f: impl Fn(f32, f32) -> f32) {
    if T::KIND == Kind::Float {
        let (out, a, b): (&mut [f32], &[f32], &[f32]) = (
            bytemuck::cast_slice_mut(out),
            bytemuck::cast_slice(a),
            bytemuck::cast_slice(b),
        );
        for ((o, &x), &y) in out.iter_mut().zip(a).zip(b) {
            *o = f(x, y);
        }
        return;
    }
    if T::KIND == Kind::BFloat16 {
        return bf16_map2(
            bytemuck::cast_slice_mut(out),
            bytemuck::cast_slice(a),
            bytemuck::cast_slice(b),
            f,
        );
    }
    // The length all three share, as the other paths' zips take: every block triple is then equal.
    let n = out.len().min(a.len()).min(b.len());
    let (out, a, b) = (&mut out[..n], &a[..n], &b[..n]);
    let (mut fa, mut fb) = ([0f32; BLOCK], [0f32; BLOCK]);
    for ((o, a), b) in out.chunks_mut(BLOCK).zip(a.chunks(BLOCK)).zip(b.chunks(BLOCK)) {
        let n = o.len();
        T::widen(a, &mut fa[..n]);
        T::widen(b, &mut fb[..n]);
        for (x, &y) in fa[..n].iter_mut().zip(&fb[..n]) {
            *x = f(*x, y);
        }
        T::narrow(&fa[..n], o);
    }
}

/// Outputs of at least this many bytes are written by [`map2_streaming`] with stores that bypass
/// the caches. Past a few MiB an output no longer stays in a core's share of the caches until it
/// is read, and each of its lines would be read before it is overwritten: 4 bytes of traffic for
/// every 3 an out-of-place blend needs. Measured on Mixup into a 10 MB buffer (docs/RESULTS.md):
/// 0.65-0.71 ms streamed against 0.73-1.0 ms with plain stores.
pub(crate) const STREAM_FROM: usize = 4 << 20;

/// [`map2`] for outputs that do not fit a cache: results are computed 256 bytes (four cache
/// lines) at a time into L1 by [`map2`] itself and stored from there with non-temporal 16-byte
/// stores (SSE2 `movntdq`; the output's values before its first 16-byte boundary, and its last
/// ones, with plain stores), then fenced, so the rows are visible to whichever thread reads them
/// next. The same `f` on the same values: the bits of [`map2`].
pub(crate) fn map2_streaming<T: Element>(out: &mut [T], a: &[T], b: &[T], f: impl Fn(f32, f32) -> f32) {
    #[cfg(target_arch = "x86_64")]
    streamed(out, a, b, f);
    #[cfg(not(target_arch = "x86_64"))]
    map2(out, a, b, f);
}

#[cfg(target_arch = "x86_64")]
fn streamed<T: Element>(out: &mut [T], a: &[T], b: &[T], f: impl Fn(f32, f32) -> f32) {
    use std::arch::x86_64::{__m128i, _mm_load_si128, _mm_sfence, _mm_stream_si128};
    #[repr(C, align(16))]
    struct Chunk([u8; 256]);
    let per_chunk = 256 / std::mem::size_of::<T>();
    let n = out.len().min(a.len()).min(b.len());
    // In elements; usize::MAX (so: no aligned body) if the output cannot be aligned at all.
    let head = out.as_ptr().align_offset(16).min(n);
    let body = head + (n - head) / per_chunk * per_chunk;
    map2(&mut out[..head], &a[..head], &b[..head], &f);
    let mut buf = Chunk([0; 256]);
    for ((o, a), b) in out[head..body]
        .chunks_exact_mut(per_chunk)
        .zip(a[head..body].chunks_exact(per_chunk))
        .zip(b[head..body].chunks_exact(per_chunk))
    {
        map2(bytemuck::cast_slice_mut(&mut buf.0), a, b, &f);
        let (src, dst) = (buf.0.as_ptr().cast::<__m128i>(), o.as_mut_ptr().cast::<__m128i>());
        for k in 0..16 {
            // SAFETY: `o` starts 16-byte aligned (head) and holds 256 bytes, as does `buf`
            // (aligned by its type): each of the 16 loads and stores is aligned and in bounds.
            unsafe { _mm_stream_si128(dst.add(k), _mm_load_si128(src.add(k))) };
        }
    }
    map2(&mut out[body..n], &a[body..n], &b[body..n], &f);
    // SAFETY: a store fence has no preconditions; it orders the streaming stores before any
    // later store (the worker's signal that its rows are done).
    unsafe { _mm_sfence() };
}

/// [`map2`] on bf16 in one pass, without f32 blocks: widening is a shift and rounding a few
/// integer operations, so each element stays in registers. Sixteen values a step where the CPU
/// has AVX2 (checked at run time: the crate is built for baseline x86-64, whose SSE2 has no
/// 32-to-16-bit pack). No FMA on either path: `f`'s products and sums round as written.
#[inline(always)]
fn bf16_map2(out: &mut [bf16], a: &[bf16], b: &[bf16], f: impl Fn(f32, f32) -> f32) {
    #[cfg(target_arch = "x86_64")]
    if is_x86_feature_detected!("avx2") {
        // SAFETY: the CPU has AVX2, checked on the line above.
        let done = unsafe { bf16x16::map2(out, a, b, &f) };
        return bf16_map2_plain(&mut out[done..], &a[done..], &b[done..], f);
    }
    bf16_map2_plain(out, a, b, f);
}

/// The inputs are widened by the shift alone: a signalling NaN stays signalling until `f`'s
/// arithmetic quiets it, and the result is NaN either way (its payload is not promised).
#[inline(always)]
fn bf16_map2_plain(out: &mut [bf16], a: &[bf16], b: &[bf16], f: impl Fn(f32, f32) -> f32) {
    let widen = |v: bf16| f32::from_bits(u32::from(v.to_bits()) << 16);
    for ((o, &x), &y) in out.iter_mut().zip(a).zip(b) {
        *o = bf16_round(f(widen(x), widen(y)));
    }
}

/// bf16 to f32: the same bits as `half`'s conversion (a NaN quieted), without its branch.
#[inline(always)]
fn bf16_widen(s: bf16) -> f32 {
    let x = u32::from(s.to_bits());
    let nan = (x & 0x7fff) > 0x7f80;
    f32::from_bits(if nan { x | 0x0040 } else { x } << 16)
}

/// f32 to bf16: round to nearest even, a NaN quieted with its sign kept; `half`'s bits, without
/// its branch.
#[inline(always)]
fn bf16_round(v: f32) -> bf16 {
    let x = v.to_bits();
    let nan = v.is_nan();
    // Wrapping: a NaN near 0xffff_ffff would overflow, and its sum is not used.
    let rounded = x.wrapping_add(0x7fff + ((x >> 16) & 1)) >> 16;
    bf16::from_bits(if nan { (x >> 16) | 0x0040 } else { rounded } as u16)
}

/// `out[k] = f(k)` computed in f32, like [`map2`].
#[inline(always)]
pub(crate) fn fill_with<T: Element>(out: &mut [T], f: impl Fn(usize) -> f32) {
    if T::KIND == Kind::Float {
        for (k, o) in bytemuck::cast_slice_mut::<T, f32>(out).iter_mut().enumerate() {
            *o = f(k);
        }
        return;
    }
    let mut buf = [0f32; BLOCK];
    for (blk, o) in out.chunks_mut(BLOCK).enumerate() {
        let n = o.len();
        for (k, v) in buf[..n].iter_mut().enumerate() {
            *v = f(blk * BLOCK + k);
        }
        T::narrow(&buf[..n], o);
    }
}

/// `(a[k], b[k]) = f(a[k], b[k])` in place, computed in f32, like [`map2`]: bf16 sixteen values
/// a step where the CPU has AVX2 ([`bf16x16`]), f16 through f32 blocks.
#[inline(always)]
pub(crate) fn map_pair<T: Element>(a: &mut [T], b: &mut [T], f: impl Fn(f32, f32) -> (f32, f32)) {
    if T::KIND == Kind::Float {
        let (a, b): (&mut [f32], &mut [f32]) = (bytemuck::cast_slice_mut(a), bytemuck::cast_slice_mut(b));
        for (x, y) in a.iter_mut().zip(b.iter_mut()) {
            (*x, *y) = f(*x, *y);
        }
        return;
    }
    #[cfg(target_arch = "x86_64")]
    if T::KIND == Kind::BFloat16 && is_x86_feature_detected!("avx2") {
        // SAFETY: the CPU has AVX2, checked on the line above.
        let done = unsafe { bf16x16::map_pair(bytemuck::cast_slice_mut(a), bytemuck::cast_slice_mut(b), &f) };
        return map_pair_blocks(&mut a[done..], &mut b[done..], f);
    }
    map_pair_blocks(a, b, f);
}

/// [`map_pair`] through f32 blocks with vectorised conversions.
fn map_pair_blocks<T: Element>(a: &mut [T], b: &mut [T], f: impl Fn(f32, f32) -> (f32, f32)) {
    // The length both share, as the other paths' zips take: every block pair is then equal.
    let n = a.len().min(b.len());
    let (a, b) = (&mut a[..n], &mut b[..n]);
    let (mut fa, mut fb) = ([0f32; BLOCK], [0f32; BLOCK]);
    for (a, b) in a.chunks_mut(BLOCK).zip(b.chunks_mut(BLOCK)) {
        let n = a.len();
        T::widen(a, &mut fa[..n]);
        T::widen(b, &mut fb[..n]);
        for (x, y) in fa[..n].iter_mut().zip(fb[..n].iter_mut()) {
            (*x, *y) = f(*x, *y);
        }
        T::narrow(&fa[..n], a);
        T::narrow(&fb[..n], b);
    }
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
    fn widen(src: &[Self], dst: &mut [f32]) {
        dst.copy_from_slice(src);
    }
    fn narrow(src: &[f32], dst: &mut [Self]) {
        dst.copy_from_slice(src);
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
    fn widen(src: &[Self], dst: &mut [f32]) {
        src.convert_to_f32_slice(dst);
    }
    fn narrow(src: &[f32], dst: &mut [Self]) {
        dst.convert_from_f32_slice(src);
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
    /// `half` converts bf16 one value at a time with a branch for NaN; this select-based loop
    /// gives the same bits and vectorises, as does [`Element::narrow`] below.
    fn widen(src: &[Self], dst: &mut [f32]) {
        for (d, &s) in dst.iter_mut().zip(src) {
            *d = bf16_widen(s);
        }
    }
    fn narrow(src: &[f32], dst: &mut [Self]) {
        for (d, &v) in dst.iter_mut().zip(src) {
            *d = bf16_round(v);
        }
    }
}

/// The floating dtypes every op accepts.
pub(crate) const FLOAT_KINDS: &str = "f32, f16 or bf16";

pub(crate) fn check_float(arg: &'static str, t: &Tensor) -> Result<Kind> {
    match t.kind() {
        k @ (Kind::Float | Kind::Half | Kind::BFloat16) => Ok(k),
        got => Err(Error::Dtype {
            arg,
            expected: FLOAT_KINDS.into(),
            got,
        }),
    }
}

/// A non-empty batch `[B, ...]` on the CPU or a CUDA device; returns B.
pub(crate) fn check_batch(arg: &'static str, x: &Tensor) -> Result<i64> {
    let size = x.size();
    if size.is_empty() || x.numel() == 0 {
        return Err(Error::shape(arg, "a non-empty batch [B, ...] with B >= 1", &size));
    }
    if !matches!(x.device(), Device::Cpu | Device::Cuda(_)) {
        return Err(Error::Device {
            arg,
            expected: "cpu or cuda".into(),
            got: x.device(),
        });
    }
    Ok(size[0])
}

pub(crate) fn check_kind(arg: &'static str, t: &Tensor, kind: Kind) -> Result<()> {
    if t.kind() == kind {
        Ok(())
    } else {
        Err(Error::Dtype {
            arg,
            expected: format!("{kind:?}"),
            got: t.kind(),
        })
    }
}

pub(crate) fn check_same_device(arg: &'static str, t: &Tensor, like: &Tensor) -> Result<()> {
    if t.device() == like.device() {
        Ok(())
    } else {
        Err(Error::Device {
            arg,
            expected: format!("{:?} (the device of the input)", like.device()),
            got: t.device(),
        })
    }
}

pub(crate) fn check_contiguous(arg: &'static str, t: &Tensor) -> Result<()> {
    if t.is_contiguous() {
        Ok(())
    } else {
        Err(Error::NotContiguous {
            arg,
            size: t.size(),
            strides: t.stride(),
        })
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

/// Plain-typed CPU slices, mutably (int32 dead-unit flags).
pub(crate) fn cpu_plain_mut<T: Copy>(t: &mut Tensor, kind: Kind) -> &mut [T] {
    assert!(t.device() == Device::Cpu && t.kind() == kind && t.is_contiguous());
    assert_eq!(std::mem::size_of::<T>(), kind.elt_size_in_bytes());
    let n = t.numel();
    if n == 0 {
        return &mut [];
    }
    // SAFETY: as in cpu_slice_mut, with T matching the element size of `kind`.
    unsafe { std::slice::from_raw_parts_mut(t.data_ptr() as *mut T, n) }
}

/// The raw bytes of a contiguous CPU tensor of any dtype.
pub(crate) fn cpu_bytes(t: &Tensor) -> &[u8] {
    assert!(t.device() == Device::Cpu && t.is_contiguous());
    let n = t.numel() * t.kind().elt_size_in_bytes();
    if n == 0 {
        return &[];
    }
    // SAFETY: a live contiguous CPU tensor spans exactly n bytes; the slice borrows the tensor.
    unsafe { std::slice::from_raw_parts(t.data_ptr() as *const u8, n) }
}

/// The raw bytes of a contiguous CPU tensor of any dtype, mutably.
pub(crate) fn cpu_bytes_mut(t: &mut Tensor) -> &mut [u8] {
    assert!(t.device() == Device::Cpu && t.is_contiguous());
    let n = t.numel() * t.kind().elt_size_in_bytes();
    if n == 0 {
        return &mut [];
    }
    // SAFETY: a live contiguous CPU tensor spans exactly n bytes; exclusive as in cpu_slice_mut.
    unsafe { std::slice::from_raw_parts_mut(t.data_ptr() as *mut u8, n) }
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn bf16_narrow_gives_the_bits_of_bf16_from_f32() {
        // Ties both ways, the largest finite values (rounding up to infinity), infinities,
        // NaNs of both signs with and without the quiet bit, subnormals, and a sweep of bit
        // patterns with every low half-word shape.
        let mut bits: Vec<u32> = vec![
            0x3f80_8000,
            0x3f81_8000,
            0x3f80_8001,
            0x3f80_7fff,
            0x7f7f_ffff,
            0xff7f_ffff,
            0x7f80_0000,
            0xff80_0000,
            0x7f80_0001,
            0xff80_0001,
            0x7fc0_0000,
            0x7fbf_ffff,
            0x0000_0001,
            0x8000_8000,
            0xffff_8001,
            0xffff_ffff,
        ];
        bits.extend((0..200_000u32).map(|i| i.wrapping_mul(0x9e37_79b9) ^ (i << 3)));
        let src: Vec<f32> = bits.iter().map(|&b| f32::from_bits(b)).collect();
        let mut got = vec![bf16::ZERO; src.len()];
        <bf16 as Element>::narrow(&src, &mut got);
        for (v, g) in src.iter().zip(&got) {
            assert_eq!(g.to_bits(), bf16::from_f32(*v).to_bits(), "{:#010x}", v.to_bits());
        }
    }

    #[test]
    fn streaming_map2_gives_the_bits_of_map2() {
        // Every element offset from a 16-byte boundary, lengths around the 256-byte chunk and the
        // 16-byte store, values with NaN, infinities, subnormals and -0.0 among them; f32 and bf16.
        let specials = [f32::NAN, f32::INFINITY, f32::NEG_INFINITY, -0.0, 1e-40, -3.4e38, 7.0];
        let a: Vec<f32> = (0..1000u32)
            .map(|i| {
                specials
                    .get(i as usize % 97)
                    .copied()
                    .unwrap_or((i as f32 * 0.37).sin() * 1e3)
            })
            .collect();
        let b: Vec<f32> = (0..1000u32).map(|i| (i as f32 * 1.91).cos() * 1e-3).collect();
        check_streaming(&a, &b, |v: f32| v.to_bits());
        let (a, b): (Vec<bf16>, Vec<bf16>) = (
            a.iter().map(|&v| bf16::from_f32(v)).collect(),
            b.iter().map(|&v| bf16::from_f32(v)).collect(),
        );
        check_streaming(&a, &b, |v: bf16| u32::from(v.to_bits()));
    }

    fn check_streaming<T: Element>(a: &[T], b: &[T], bits: impl Fn(T) -> u32) {
        let f = |x: f32, y: f32| x * 0.3141 + y * (1.0 - 0.3141);
        for offset in 0..8 {
            for len in [0, 1, 3, 8, 63, 64, 65, 128, 129, 900] {
                let (a, b) = (&a[offset..offset + len], &b[offset..offset + len]);
                let mut expected = vec![T::from_f32(0.0); len + 8];
                let mut got = vec![T::from_f32(f32::NAN); len + 8];
                map2(&mut expected[offset..offset + len], a, b, f);
                map2_streaming(&mut got[offset..offset + len], a, b, f);
                let got: Vec<u32> = got[offset..offset + len].iter().map(|&v| bits(v)).collect();
                let expected: Vec<u32> = expected[offset..offset + len].iter().map(|&v| bits(v)).collect();
                assert_eq!(got, expected, "{:?}, offset {offset}, length {len}", T::KIND);
            }
        }
    }

    /// Every bf16 pattern against a scrambled partner (NaNs, infinities, subnormals, sums that
    /// round up to infinity), three short of a multiple of 16 for the vector paths' tails.
    fn every_bf16_with_a_partner() -> (Vec<bf16>, Vec<bf16>) {
        let n = usize::from(u16::MAX) + 1 - 3;
        let a = (0..=u16::MAX).map(bf16::from_bits).take(n).collect();
        let b = (0..=u16::MAX)
            .map(|i| bf16::from_bits(i.wrapping_mul(40503) ^ 0x5a5a))
            .take(n)
            .collect();
        (a, b)
    }

    /// A bf16's bits, every NaN as one: which input's payload an x86 add passes on depends on
    /// the operand order the vectoriser picks (the GPU writes its canonical NaN).
    fn bf16_bits(v: bf16) -> u16 {
        if v.is_nan() {
            0x7fc0
        } else {
            v.to_bits()
        }
    }

    /// Outputs start as this (not a value any blend of the patterns gives everywhere).
    const POISON: bf16 = bf16::from_bits(0x1234);

    fn assert_bits(path: &str, got: &[bf16], expected: &[u16], a: &[bf16], b: &[bf16]) {
        for (k, (&g, &e)) in got.iter().zip(expected).enumerate() {
            let (x, y) = (a[k].to_bits(), b[k].to_bits());
            assert_eq!(bf16_bits(g), e, "{path} path at {k}: {x:#06x} {y:#06x}");
        }
    }

    #[test]
    fn bf16_map2_gives_the_bits_of_half_on_both_paths() {
        // Blended as Mixup does: the run-time AVX2 path (where the CPU has it) and the plain
        // loop both give half's widen-compute-round bits.
        let (a, b) = every_bf16_with_a_partner();
        let f = |x: f32, y: f32| x * 0.3141 + y * (1.0 - 0.3141);
        let expected: Vec<u16> = a
            .iter()
            .zip(&b)
            .map(|(x, y)| bf16_bits(bf16::from_f32(f(x.to_f32(), y.to_f32()))))
            .collect();
        let mut got = vec![POISON; a.len()];
        super::bf16_map2(&mut got, &a, &b, f);
        assert_bits("dispatched", &got, &expected, &a, &b);
        let mut plain = vec![POISON; a.len()];
        super::bf16_map2_plain(&mut plain, &a, &b, f);
        assert_bits("plain", &plain, &expected, &a, &b);
    }

    #[test]
    fn bf16_map_pair_gives_the_bits_of_half_on_both_paths() {
        // Both rows of Mixup's in-place flip, each blended with the other at its own weight.
        let (a, b) = every_bf16_with_a_partner();
        let f = |x: f32, y: f32| (x * 0.3141 + y * (1.0 - 0.3141), y * 0.75 + x * (1.0 - 0.75));
        let round = |v: f32| bf16_bits(bf16::from_f32(v));
        let (expected_a, expected_b): (Vec<u16>, Vec<u16>) = a
            .iter()
            .zip(&b)
            .map(|(x, y)| f(x.to_f32(), y.to_f32()))
            .map(|(p, q)| (round(p), round(q)))
            .unzip();
        let (mut got_a, mut got_b) = (a.clone(), b.clone());
        map_pair(&mut got_a, &mut got_b, f);
        let (mut blocks_a, mut blocks_b) = (a.clone(), b.clone());
        super::map_pair_blocks(&mut blocks_a, &mut blocks_b, f);
        assert_bits("dispatched, first", &got_a, &expected_a, &a, &b);
        assert_bits("dispatched, second", &got_b, &expected_b, &a, &b);
        assert_bits("blocks, first", &blocks_a, &expected_a, &a, &b);
        assert_bits("blocks, second", &blocks_b, &expected_b, &a, &b);
    }

    fn check_unequal_lengths<T: Element>() {
        // Slices of different lengths: the paths stop where the shortest ends (as a zip does)
        // and leave the rest as it was; lengths past a block and a 16-value step.
        let val = |k: usize| T::from_f32(k as f32 * 0.25 - 7.0);
        let (long, short) = (BLOCK + 37, BLOCK + 5);
        let a: Vec<T> = (0..long).map(val).collect();
        let b: Vec<T> = (0..short).map(|k| val(k + 3)).collect();
        let blend = |x: f32, y: f32| x * 0.5 + y * 0.25;
        let mut out = vec![T::from_f32(99.0); long];
        map2(&mut out, &a, &b, blend);
        let mut pa = a.clone();
        let mut pb = b.clone();
        map_pair(&mut pa, &mut pb, |x, y| (blend(x, y), blend(y, x)));
        for k in 0..long {
            let (x, y) = (a[k].to_f32(), b.get(k).map_or(f32::NAN, |v| v.to_f32()));
            let (want_out, want_a) = if k < short {
                (blend(x, y), blend(x, y))
            } else {
                (99.0, x)
            };
            assert_eq!(
                out[k].to_f32(),
                T::from_f32(want_out).to_f32(),
                "{:?} map2 at {k}",
                T::KIND
            );
            assert_eq!(
                pa[k].to_f32(),
                T::from_f32(want_a).to_f32(),
                "{:?} map_pair at {k}",
                T::KIND
            );
        }
    }

    #[test]
    fn unequal_lengths_stop_at_the_shortest() {
        check_unequal_lengths::<f32>();
        check_unequal_lengths::<f16>();
        check_unequal_lengths::<bf16>();
    }

    #[test]
    fn bf16_widen_gives_the_bits_of_bf16_to_f32() {
        // Every bf16 bit pattern: signalling and quiet NaNs, infinities, subnormals, zeros.
        let src: Vec<bf16> = (0..=u16::MAX).map(bf16::from_bits).collect();
        let mut got = vec![0f32; src.len()];
        <bf16 as Element>::widen(&src, &mut got);
        for (v, g) in src.iter().zip(&got) {
            assert_eq!(g.to_bits(), v.to_f32().to_bits(), "{:#06x}", v.to_bits());
        }
    }
}

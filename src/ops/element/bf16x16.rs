//! bf16 sixteen values at a time with AVX2, for the element-wise loops of [`super`].
//!
//! A bf16 is the high half of an f32, so widening is an interleave with zeros (`vpunpck[lh]wd`)
//! and narrowing, after the rounding, a pack (`vpackusdw`). Both work within 128-bit lanes, so
//! the pack puts every value back where the interleave took it from: the loops in between see
//! the 16 values in the interleave's order and compute element-wise, which the compiler
//! vectorises. About 20 instructions for 16 values where the compiler's own vectorisation of the
//! plain loops takes 40 (zero-extending loads, shifts, a cross-lane permute after the pack): on
//! one core these loops are bound by instructions, not by memory.
//!
//! The bits are [`super::bf16_round`]'s of `f` on the shifted inputs, as on the plain paths: a
//! signalling NaN stays signalling until `f`'s arithmetic quiets it, and the rounding quiets any
//! NaN it is given, so the outputs equal those of widening with `half`'s quieting conversion.
//!
//! Every function here is `unsafe` for one reason only: it needs AVX2, which the callers check
//! at run time. Loads and stores go through `[bf16; 16]` references, so they are in bounds.

use std::arch::x86_64::*;

use half::bf16;

/// `out[k] = f(a[k], b[k])` over the longest multiple of 16 the three slices share; returns how
/// many elements that was (the caller does the rest).
///
/// # Safety
/// The CPU has AVX2.
#[target_feature(enable = "avx2")]
pub(super) unsafe fn map2(out: &mut [bf16], a: &[bf16], b: &[bf16], f: impl Fn(f32, f32) -> f32) -> usize {
    let mut done = 0;
    for ((o, a), b) in out.chunks_exact_mut(16).zip(a.chunks_exact(16)).zip(b.chunks_exact(16)) {
        let (xa, xb) = (widen(sixteen(a)), widen(sixteen(b)));
        let mut r = [0f32; 16];
        for ((r, &x), &y) in r.iter_mut().zip(&xa).zip(&xb) {
            *r = f(x, y);
        }
        narrow(r, sixteen_mut(o));
        done += 16;
    }
    done
}

/// `(a[k], b[k]) = f(a[k], b[k])` over the longest multiple of 16 both slices share; returns how
/// many elements that was.
///
/// # Safety
/// The CPU has AVX2.
#[target_feature(enable = "avx2")]
pub(super) unsafe fn map_pair(a: &mut [bf16], b: &mut [bf16], f: impl Fn(f32, f32) -> (f32, f32)) -> usize {
    let mut done = 0;
    for (a, b) in a.chunks_exact_mut(16).zip(b.chunks_exact_mut(16)) {
        let (xa, xb) = (widen(sixteen(a)), widen(sixteen(b)));
        let (mut ra, mut rb) = ([0f32; 16], [0f32; 16]);
        for (((ra, rb), &x), &y) in ra.iter_mut().zip(&mut rb).zip(&xa).zip(&xb) {
            (*ra, *rb) = f(x, y);
        }
        narrow(ra, sixteen_mut(a));
        narrow(rb, sixteen_mut(b));
        done += 16;
    }
    done
}

fn sixteen(s: &[bf16]) -> &[bf16; 16] {
    s.first_chunk().expect("a chunk of 16")
}

fn sixteen_mut(s: &mut [bf16]) -> &mut [bf16; 16] {
    s.first_chunk_mut().expect("a chunk of 16")
}

/// Sixteen bf16 values as f32, in the interleave's order.
#[inline]
#[target_feature(enable = "avx2")]
unsafe fn widen(src: &[bf16; 16]) -> [f32; 16] {
    let v = _mm256_loadu_si256(src.as_ptr().cast());
    let zero = _mm256_setzero_si256();
    // Any bits are valid f32 lanes.
    std::mem::transmute::<[__m256i; 2], [f32; 16]>([_mm256_unpacklo_epi16(zero, v), _mm256_unpackhi_epi16(zero, v)])
}

/// Rounds sixteen f32 values, in the interleave's order, to bf16 in their places.
#[inline]
#[target_feature(enable = "avx2")]
unsafe fn narrow(v: [f32; 16], dst: &mut [bf16; 16]) {
    let [lo, hi] = std::mem::transmute::<[f32; 16], [__m256; 2]>(v);
    // Each lane holds at most 0xffff, so the saturating pack is exact.
    _mm256_storeu_si256(dst.as_mut_ptr().cast(), _mm256_packus_epi32(round(lo), round(hi)));
}

/// [`super::bf16_round`] in eight lanes: each lane's bf16 bits in its low half.
#[inline]
#[target_feature(enable = "avx2")]
unsafe fn round(v: __m256) -> __m256i {
    let x = _mm256_castps_si256(v);
    let high = _mm256_srli_epi32::<16>(x);
    let bias = _mm256_add_epi32(_mm256_set1_epi32(0x7fff), _mm256_and_si256(high, _mm256_set1_epi32(1)));
    let rounded = _mm256_srli_epi32::<16>(_mm256_add_epi32(x, bias));
    let quiet = _mm256_or_si256(high, _mm256_set1_epi32(0x0040));
    let nan = _mm256_castps_si256(_mm256_cmp_ps::<_CMP_UNORD_Q>(v, v));
    _mm256_blendv_epi8(rounded, quiet, nan)
}

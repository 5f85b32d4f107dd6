//! Splitting row-wise CPU work over libtorch's own intra-op thread pool (`at::parallel_for`,
//! through bridge/parallel.cpp).
//!
//! A pool of our own competes for the cores with libtorch's OpenMP workers, which spin after
//! each tch op: measured on the 2-core build machine, a fused cross-entropy at 1024x1000 took
//! 450 us after another fused op but 790 us right after a tch `add_`. Scoped threads of our own
//! had to be kept to jobs over 2M elements for that reason. On libtorch's pool the fused ops and
//! the tch ops around them take turns on the same threads, and a job is worth splitting from
//! libtorch's own grain size up.

use std::any::Any;
use std::ffi::c_void;
use std::ops::Range;
use std::panic::{catch_unwind, resume_unwind, AssertUnwindSafe};
use std::sync::Mutex;

/// Element-equivalents below which one thread does the whole job: libtorch's
/// `at::internal::GRAIN_SIZE`, the threshold its own element-wise ops use.
const GRAIN: usize = 32 * 1024;

type RangeFn = extern "C" fn(closure: *mut c_void, begin: i64, end: i64);

extern "C" {
    fn enl_parallel_for(begin: i64, end: i64, grain: i64, body: RangeFn, closure: *mut c_void);
}

/// One parallel job: the body, and the first panic of any of its ranges.
struct Job<'a> {
    body: &'a (dyn Fn(Range<usize>) + Sync),
    panic: Mutex<Option<Box<dyn Any + Send>>>,
}

extern "C" fn run_range(closure: *mut c_void, begin: i64, end: i64) {
    // SAFETY: `closure` is the `&Job` that `for_ranges` passed, alive for the whole call.
    let job = unsafe { &*(closure as *const Job<'_>) };
    // A panic must not unwind into C++: keep it and raise it again on the calling thread.
    if let Err(payload) = catch_unwind(AssertUnwindSafe(|| (job.body)(begin as usize..end as usize))) {
        let mut first = job.panic.lock().unwrap_or_else(|e| e.into_inner());
        first.get_or_insert(payload);
    }
}

/// Calls `body` over disjoint ranges covering `0..rows`, on libtorch's pool, splitting only when
/// each thread gets at least [`GRAIN`] element-equivalents (`row_work` per row).
fn for_ranges(rows: usize, row_work: usize, body: &(dyn Fn(Range<usize>) + Sync)) {
    if rows == 0 {
        return;
    }
    let grain_rows = GRAIN.div_ceil(row_work.max(1)).max(1);
    let job = Job {
        body,
        panic: Mutex::new(None),
    };
    // SAFETY: `job` outlives the call, which returns only when every range has run; `run_range`
    // never unwinds.
    unsafe {
        enl_parallel_for(
            0,
            rows as i64,
            grain_rows as i64,
            run_range,
            &job as *const Job<'_> as *mut c_void,
        )
    };
    if let Some(payload) = job.panic.into_inner().unwrap_or_else(|e| e.into_inner()) {
        resume_unwind(payload);
    }
}

/// A mutable slice shared by the ranges of one job, each taking its own disjoint part.
struct Rows<A> {
    ptr: *mut A,
    len: usize,
    stride: usize,
}

// SAFETY: the ranges of one job are disjoint, so no two threads touch the same element; `A: Send`
// lets each thread have its elements.
unsafe impl<A: Send> Sync for Rows<A> {}

impl<A> Rows<A> {
    fn new(slice: &mut [A], stride: usize) -> Self {
        Rows {
            ptr: slice.as_mut_ptr(),
            len: slice.len(),
            stride,
        }
    }

    /// The rows `r` (elements `r.start * stride .. r.end * stride`).
    ///
    /// # Safety
    /// No two live results may overlap: callers pass disjoint row ranges.
    #[allow(clippy::mut_from_ref)]
    unsafe fn take(&self, r: Range<usize>) -> &mut [A] {
        let (start, end) = (r.start * self.stride, r.end * self.stride);
        assert!(start <= end && end <= self.len, "row range {r:?} outside the slice");
        std::slice::from_raw_parts_mut(self.ptr.add(start), end - start)
    }
}

/// Runs `f(rows, a_block, b_block)` over contiguous row blocks, one per worker, where `a` holds
/// `a_stride` elements per row and `b` holds `b_stride` (0 for "no second output"). `row_work`
/// is a row's cost in memory-bound element-equivalents (its length, times more for math-heavy
/// rows), which decides how many threads are worth it.
pub(crate) fn row_blocks<A: Send, B: Send>(
    rows: usize,
    row_work: usize,
    a: &mut [A],
    a_stride: usize,
    b: &mut [B],
    b_stride: usize,
    f: impl Fn(Range<usize>, &mut [A], &mut [B]) + Sync,
) {
    let (a, b) = (Rows::new(a, a_stride), Rows::new(b, b_stride));
    for_ranges(rows, row_work, &|r: Range<usize>| {
        // SAFETY: the ranges of one job are disjoint, so are the blocks.
        let (a_blk, b_blk) = unsafe { (a.take(r.clone()), b.take(r.clone())) };
        f(r, a_blk, b_blk)
    });
}

/// Like [`row_blocks`] over `top` (rows 0..rows), with the block of `bottom` that mirrors each
/// block: top rows s..e come with bottom rows rows-e..rows-s, as flip pairing needs.
pub(crate) fn mirrored_row_blocks<A: Send>(
    rows: usize,
    stride: usize,
    top: &mut [A],
    bottom: &mut [A],
    f: impl Fn(Range<usize>, &mut [A], &mut [A]) + Sync,
) {
    let (top, bottom) = (Rows::new(top, stride), Rows::new(bottom, stride));
    for_ranges(rows, 2 * stride, &|r: Range<usize>| {
        let mirror = rows - r.end..rows - r.start;
        // SAFETY: disjoint ranges of `0..rows` have disjoint mirrors.
        let (t_blk, b_blk) = unsafe { (top.take(r.clone()), bottom.take(mirror)) };
        f(r, t_blk, b_blk)
    });
}

/// [`row_blocks`] with a single output.
pub(crate) fn rows<A: Send>(
    rows: usize,
    row_work: usize,
    a: &mut [A],
    a_stride: usize,
    f: impl Fn(Range<usize>, &mut [A]) + Sync,
) {
    row_blocks::<A, u8>(rows, row_work, a, a_stride, &mut [], 0, |r, a, _| f(r, a));
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_row_is_visited_once_with_its_own_slices() {
        for n_rows in [1usize, 2, 3, 17, 1000] {
            let width = 300;
            let mut a = vec![0u32; n_rows * width];
            let mut b = vec![0u32; n_rows];
            row_blocks(n_rows, width, &mut a, width, &mut b, 1, |range, a, b| {
                for (k, i) in range.enumerate() {
                    a[k * width..(k + 1) * width].fill(i as u32 + 1);
                    b[k] += i as u32 + 1;
                }
            });
            for i in 0..n_rows {
                assert!(a[i * width..(i + 1) * width].iter().all(|&v| v == i as u32 + 1));
                assert_eq!(b[i], i as u32 + 1);
            }
        }
    }

    #[test]
    fn mirrored_blocks_pair_row_i_with_row_rows_minus_1_minus_i() {
        for n_rows in [1usize, 2, 5, 64, 999] {
            let width = 700;
            let mut top = vec![0u32; n_rows * width];
            let mut bottom = vec![0u32; n_rows * width];
            mirrored_row_blocks(n_rows, width, &mut top, &mut bottom, |range, t, b| {
                let len = range.len();
                for (k, i) in range.enumerate() {
                    t[k * width..(k + 1) * width].fill(i as u32 + 1);
                    // Bottom rows run backwards: block row len-1-k mirrors top row i.
                    let m = len - 1 - k;
                    b[m * width..(m + 1) * width].fill(i as u32 + 1);
                }
            });
            for i in 0..n_rows {
                assert!(top[i * width..(i + 1) * width].iter().all(|&v| v == i as u32 + 1));
                let m = n_rows - 1 - i;
                assert!(bottom[m * width..(m + 1) * width].iter().all(|&v| v == i as u32 + 1));
            }
        }
    }

    #[test]
    fn a_panic_in_a_range_reaches_the_caller() {
        let mut a = vec![0u8; 1 << 20];
        let caught = std::panic::catch_unwind(AssertUnwindSafe(|| {
            rows(1 << 20, 1, &mut a, 1, |range, _| {
                assert!(range.start != 0, "first range")
            })
        }));
        assert!(caught.is_err());
    }
}

//! Splitting row-wise CPU work over the cores with scoped threads.
//!
//! Scoped threads end when their block is done. A pool whose idle workers spin (rayon's do,
//! briefly) competes for the cores with libtorch's own OpenMP pool, which runs the very next
//! op of a training step; measured here, that contention made the following tch op several
//! times slower on 2 cores.

use std::ops::Range;
use std::sync::OnceLock;

/// Below this many elements per thread one thread does the whole job. Starting a thread costs
/// ~20 us, and on 2 cores a second thread competes with libtorch's OpenMP workers, which spin
/// after each op: measured on the build machine, a 393K-element Mixup took 115 us on two threads
/// and 59 us on one.
pub(crate) const MIN_ELEMS_PER_THREAD: usize = 1 << 21;

fn threads() -> usize {
    static N: OnceLock<usize> = OnceLock::new();
    *N.get_or_init(|| std::thread::available_parallelism().map(|n| n.get()).unwrap_or(1))
}

/// How many threads `rows` rows of `row_work` element-equivalents each are worth.
fn workers(rows: usize, row_work: usize) -> usize {
    let by_work = (rows * row_work.max(1)) / MIN_ELEMS_PER_THREAD;
    by_work.clamp(1, threads()).min(rows.max(1))
}

/// Runs `f(rows, a_block, b_block)` over contiguous row blocks, one per worker, where `a` holds
/// `a_stride` elements per row and `b` holds `b_stride` (0 for "no second output"). `row_work`
/// is a row's cost in memory-bound element-equivalents (its length, times more for math-heavy
/// rows), which decides how many threads are worth starting.
pub(crate) fn row_blocks<A: Send, B: Send>(
    rows: usize,
    row_work: usize,
    a: &mut [A],
    a_stride: usize,
    b: &mut [B],
    b_stride: usize,
    f: impl Fn(Range<usize>, &mut [A], &mut [B]) + Sync,
) {
    let n = workers(rows, row_work);
    if n == 1 {
        f(0..rows, a, b);
        return;
    }
    let per = rows.div_ceil(n);
    std::thread::scope(|s| {
        let (mut a, mut b) = (a, b);
        let mut start = 0;
        while start < rows {
            let end = (start + per).min(rows);
            let (a_blk, a_rest) = std::mem::take(&mut a).split_at_mut((end - start) * a_stride);
            let (b_blk, b_rest) = std::mem::take(&mut b).split_at_mut((end - start) * b_stride);
            (a, b) = (a_rest, b_rest);
            let f = &f;
            if end == rows {
                f(start..end, a_blk, b_blk); // the calling thread takes the last block
            } else {
                s.spawn(move || f(start..end, a_blk, b_blk));
            }
            start = end;
        }
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
    let n = workers(rows, 2 * stride);
    let per = rows.div_ceil(n.max(1)).max(1);
    std::thread::scope(|s| {
        let (mut top, mut bottom) = (top, bottom);
        let mut start = 0;
        while start < rows {
            let end = (start + per).min(rows);
            let (t_blk, t_rest) = std::mem::take(&mut top).split_at_mut((end - start) * stride);
            let rest_len = bottom.len() - (end - start) * stride;
            let (b_rest, b_blk) = std::mem::take(&mut bottom).split_at_mut(rest_len);
            (top, bottom) = (t_rest, b_rest);
            let f = &f;
            if end == rows {
                f(start..end, t_blk, b_blk);
            } else {
                s.spawn(move || f(start..end, t_blk, b_blk));
            }
            start = end;
        }
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
}

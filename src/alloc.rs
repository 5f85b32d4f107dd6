//! CPU allocator tuning for processes that run many large tensor ops.
//!
//! libtorch's CPU tensors come from glibc's malloc. By default buffers above a threshold that
//! glibc adapts at run time are mmapped and returned to the OS on free, so an op's temporaries
//! can cost a page fault per 4 KiB on every call, depending on what ran before: measured on the
//! 2-core build machine, the tch Mixup composite on a 128x3x32x32 batch took 0.11 ms in one
//! allocator state and 1.7 ms in another. Pinning the thresholds removes that variance.

/// Serves allocations below 32 MiB from the heap and keeps freed heap memory for reuse (up to
/// 1 GiB), as a long-running training process settles into anyway. Process-wide; call it once,
/// early (the benchmarks, the demo and the trainer do). Returns false if glibc refused.
pub fn tune_cpu_allocator() -> bool {
    #[cfg(all(target_os = "linux", target_env = "gnu"))]
    {
        // SAFETY: mallopt only changes allocator tunables.
        unsafe {
            libc::mallopt(libc::M_MMAP_THRESHOLD, 32 << 20) == 1 && libc::mallopt(libc::M_TRIM_THRESHOLD, 1 << 30) == 1
        }
    }
    #[cfg(not(all(target_os = "linux", target_env = "gnu")))]
    {
        false
    }
}

/// Bytes from which a fresh buffer is worth backing with huge pages: glibc serves buffers this
/// large with a new mmap (at most 32 MiB is its mmap threshold), whose every 4 KiB page faults
/// on first touch.
const HUGE_FROM: usize = 32 << 20;

/// Asks Linux to back the 2 MiB-aligned interior of a fresh, not yet written CPU tensor with
/// transparent huge pages, so an op's first touch of its output costs one fault per 2 MiB
/// instead of one per 4 KiB. Measured on the 2-core build machine: out-of-place Mixup at
/// 256x3x224x224 f32 spends most of its time in the output's page faults (see docs/RESULTS.md).
/// A hint only: the contents are unchanged, and systems without THP (or other tensors) ignore it.
pub(crate) fn prefer_huge_pages(t: &tch::Tensor) {
    #[cfg(target_os = "linux")]
    {
        const HUGE: usize = 2 << 20;
        let bytes = t.numel() * t.kind().elt_size_in_bytes();
        if t.device() != tch::Device::Cpu || bytes < HUGE_FROM {
            return;
        }
        let start = t.data_ptr() as usize;
        let (lo, hi) = (start.next_multiple_of(HUGE), (start + bytes) / HUGE * HUGE);
        if hi > lo {
            // SAFETY: [lo, hi) lies inside the tensor's live allocation; MADV_HUGEPAGE changes
            // how pages are backed, never their contents.
            unsafe { libc::madvise(lo as *mut libc::c_void, hi - lo, libc::MADV_HUGEPAGE) };
        }
    }
    #[cfg(not(target_os = "linux"))]
    let _ = (t, HUGE_FROM);
}

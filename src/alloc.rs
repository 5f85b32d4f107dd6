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

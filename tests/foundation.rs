//! The runtime glue on any machine: the probe's typed reason and the embedded fatbin.

use enlighten::cuda::{fatbin, fatbin_has_entry, probe, Kernel, Unavailable};

/// Whether the driver library can be opened, checked independently of cudarc.
fn driver_library_present() -> bool {
    ["libcuda.so.1", "libcuda.so"].iter().any(|name| {
        let c = std::ffi::CString::new(*name).unwrap();
        // SAFETY: dlopen with a valid C string; the handle is closed right away.
        let h = unsafe { libc::dlopen(c.as_ptr(), libc::RTLD_LAZY) };
        if !h.is_null() {
            unsafe { libc::dlclose(h) };
        }
        !h.is_null()
    })
}

#[test]
fn probe_gives_the_typed_reason_for_this_machine() {
    // Whether kernels are embedded is no part of the probe: they may be compiled at first use.
    let result = probe();
    if !driver_library_present() {
        assert_eq!(result, Err(Unavailable::NoDriver));
        assert!(result.unwrap_err().to_string().contains("libcuda"));
    } else {
        match result {
            Ok(info) => assert!(info.device_count >= 1 && info.driver_version > 0),
            Err(reason) => assert!(
                !matches!(
                    reason,
                    Unavailable::NoKernels | Unavailable::NoDeviceKernels { .. } | Unavailable::NoDriver
                ),
                "{reason}"
            ),
        }
    }
    assert_eq!(probe(), probe(), "the probe is cached and stable");
}

#[test]
fn every_kernel_the_library_launches_is_in_the_fatbin() {
    assert!(
        !fatbin().is_empty(),
        "this build has no kernels (nvcc was not found): run scripts/setup, or set NVCC, and rebuild"
    );
    let missing: Vec<&str> = Kernel::ALL
        .iter()
        .map(|k| k.name())
        .filter(|n| !fatbin_has_entry(n))
        .collect();
    assert!(missing.is_empty(), "entry points missing from the fatbin: {missing:?}");
}

#[test]
fn entry_lookup_is_exact() {
    assert!(!fatbin().is_empty(), "built without kernels");
    // Prefixes and extensions of real names must not match.
    for fake in ["mixup", "mixup_f3", "mixup_f32x", "no_such_kernel"] {
        assert!(!fatbin_has_entry(fake), "{fake} should not be found");
    }
}

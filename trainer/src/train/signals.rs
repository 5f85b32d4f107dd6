//! SIGINT (Ctrl-C) and SIGTERM (what schedulers send on preemption, and what `--nproc`'s ranks
//! get when their launcher dies) both ask the run to checkpoint after its step and stop; every
//! rank stops at the same step. The exit status then says which: 130 after SIGINT, 75
//! (EX_TEMPFAIL, "try again later") after SIGTERM: preempted, with a checkpoint to resume from.

use std::sync::atomic::{AtomicBool, AtomicI32, Ordering};

static REQUESTED: AtomicBool = AtomicBool::new(false);
static SIGNAL: AtomicI32 = AtomicI32::new(0);

/// The exit status of a run stopped by SIGTERM after its checkpoint.
pub const PREEMPTED: i32 = 75;
/// The exit status of a run stopped by SIGINT after its checkpoint (the shell's 128 + 2).
pub const INTERRUPTED: i32 = 130;

extern "C" fn on_signal(signal: libc::c_int) {
    // Only atomic stores: async-signal-safe.
    SIGNAL.store(signal, Ordering::SeqCst);
    REQUESTED.store(true, Ordering::SeqCst);
}

/// Installs the handlers of SIGINT and SIGTERM and returns the flag they set (what
/// [`TrainOptions::interrupt`](super::TrainOptions) takes); None if they could not be installed.
pub fn install() -> Option<&'static AtomicBool> {
    for signal in [libc::SIGINT, libc::SIGTERM] {
        // SAFETY: a zeroed sigaction with a handler that only stores atomics; SA_RESTART keeps
        // interrupted reads and writes going.
        let ok = unsafe {
            let mut action: libc::sigaction = std::mem::zeroed();
            action.sa_sigaction = on_signal as extern "C" fn(libc::c_int) as libc::sighandler_t;
            action.sa_flags = libc::SA_RESTART;
            libc::sigemptyset(&mut action.sa_mask);
            libc::sigaction(signal, &action, std::ptr::null_mut()) == 0
        };
        if !ok {
            return None;
        }
    }
    Some(&REQUESTED)
}

/// The last signal received (SIGINT or SIGTERM), if any.
pub fn received() -> Option<i32> {
    match SIGNAL.load(Ordering::SeqCst) {
        0 => None,
        s => Some(s),
    }
}

/// Records `signal` as this process's stop when it received none itself: another rank was
/// signalled, and every rank stops at the same step with the same meaning (a preempted rank
/// preempts the job).
pub fn adopt(signal: i32) {
    let _ = SIGNAL.compare_exchange(0, signal, Ordering::SeqCst, Ordering::SeqCst);
}

/// The signal whose stop `status` reports ([`exit_status`]'s inverse), if it is one.
pub fn from_exit_status(status: i32) -> Option<i32> {
    match status {
        PREEMPTED => Some(libc::SIGTERM),
        INTERRUPTED => Some(libc::SIGINT),
        _ => None,
    }
}

/// The exit status of a run that checkpointed and stopped on `signal`.
pub fn exit_status(signal: i32) -> i32 {
    if signal == libc::SIGTERM {
        PREEMPTED
    } else {
        INTERRUPTED
    }
}

/// What the stop was, in words: "preempted (SIGTERM)" or "interrupted (SIGINT)".
pub fn describe(signal: i32) -> &'static str {
    if signal == libc::SIGTERM {
        "preempted (SIGTERM)"
    } else {
        "interrupted (SIGINT)"
    }
}

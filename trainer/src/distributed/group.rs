//! A process group on c10d: rendezvous through a TCPStore, collectives by ProcessGroupGloo or
//! ProcessGroupNCCL, reached through bridge/c10d.cpp. Every failure, a peer gone or a timeout
//! included, comes back as [`Error::Libtorch`] naming the collective.

use std::ffi::{c_char, c_int, CString};
use std::net::IpAddr;
use std::ptr::{self, NonNull};
use std::sync::Arc;
use std::time::{Duration, Instant};

use tch::{Device, Tensor};
use torch_sys::C_tensor;

use super::heartbeat::Heartbeat;
use super::layout::{self, Show};
use super::store::{c_text, millis, Store};
use super::{ffi, nccl, rendezvous, Backend, Env};
use crate::error::{Error, Result};
use crate::DeviceChoice;

/// The processes of one job. Collectives are called by every rank in the same order; each
/// returns an error instead of hanging when a peer fails or does not answer within the timeout
/// given to [`ProcessGroup::new`].
pub struct ProcessGroup {
    handle: NonNull<ffi::Pg>,
    rank: usize,
    world_size: usize,
    backend: Backend,
    timeout: Duration,
    /// This rank's heartbeat: names the rank a failed collective waited on.
    heartbeat: Arc<Heartbeat>,
}

// SAFETY: the handle owns reference-counted c10d objects (a TCPStore and a Backend) with no
// thread affinity: c10d backends take calls from any thread (PyTorch calls them from whichever
// Python thread runs) and hand the work to their own threads under locks. Moving the group to
// another thread is therefore sound. It is deliberately not `Sync`: collectives issued from two
// threads at once could start in different orders on different ranks.
unsafe impl Send for ProcessGroup {}

impl ProcessGroup {
    /// Joins the job `env` describes: rank 0 serves the rendezvous store at
    /// `master_addr:master_port`, the ranks compare their WORLD_SIZE there, every rank then
    /// connects to every other. `timeout` bounds the rendezvous and every collective.
    /// `Backend::Auto` resolves against [`DeviceChoice::Auto`]. Gloo binds the interfaces in
    /// GLOO_SOCKET_IFNAME when set (as PyTorch does), the loopback address when the master is
    /// local, else the address this machine's hostname resolves to.
    pub fn new(env: &Env, backend: Backend, timeout: Duration) -> Result<ProcessGroup> {
        env.validate()?;
        let backend = match backend {
            Backend::Auto => backend.resolve(DeviceChoice::Auto.device()?),
            chosen => chosen,
        };
        let settings = Settings::of(env, backend, timeout)?;
        let (rendezvous_env, started) = (env.clone(), Instant::now());
        // c10d bounds the store's connect but not its first reply (a port that accepts and never
        // answers blocks forever), so the rendezvous runs on its own thread and this one waits
        // at most the timeout (and a little, so that c10d's own timeout error comes first).
        let (tx, rx) = std::sync::mpsc::channel();
        let meet = move || {
            // A group that came after the caller gave up drops here, owned by no one else.
            let _ = tx.send(join(&rendezvous_env, settings, started));
        };
        std::thread::Builder::new()
            .name("rendezvous".into())
            .spawn(meet)
            .map_err(|e| Error::Internal(format!("cannot start the rendezvous thread: {e}")))?;
        match rx.recv_timeout(timeout + RENDEZVOUS_GRACE) {
            Ok(joined) => joined,
            Err(_) => Err(rendezvous_timeout(env, timeout)),
        }
    }

    pub fn rank(&self) -> usize {
        self.rank
    }

    pub fn world_size(&self) -> usize {
        self.world_size
    }

    /// The backend in use (`Auto` already resolved).
    pub fn backend(&self) -> Backend {
        self.backend
    }

    /// The bound on the rendezvous and on every collective.
    pub fn timeout(&self) -> Duration {
        self.timeout
    }

    /// Starts summing each tensor over the ranks, in place; [`Work::wait`] waits for the sums.
    /// Until then the tensors belong to the collective: do not read or write them (as with
    /// PyTorch's `async_op=True`). Each tensor must be contiguous and have the same shape and
    /// dtype on every rank, in the same order.
    pub fn all_reduce_sum(&self, tensors: &[&Tensor]) -> Result<Work> {
        for tensor in tensors {
            collective_tensor("tensors", tensor)?;
        }
        let pointers: Vec<*const C_tensor> = tensors.iter().map(|t| t.as_ptr()).collect();
        let (collective, started) = (self.heartbeat.enter(), Instant::now());
        let mut work: *mut ffi::Work = ptr::null_mut();
        let mut message: *mut c_char = ptr::null_mut();
        // SAFETY: the group is live; `pointers` holds `tensors.len()` live tch tensors, which the
        // bridge copies (reference counts) before returning; it writes `work` only on success.
        let code = unsafe {
            ffi::enl_pg_allreduce_sum(self.raw(), pointers.as_ptr(), pointers.len(), &mut work, &mut message)
        };
        check("all_reduce_sum", code, message).map_err(|e| self.explain("all_reduce_sum", e, collective, started))?;
        let handle = NonNull::new(work).ok_or_else(|| Error::Internal("all_reduce_sum returned no work".into()))?;
        // NCCL's wait, with no timeout, orders the current CUDA stream after the collective and
        // returns at once, as DDP's does; its watchdog enforces the group's timeout instead.
        let timeout = match self.backend {
            Backend::Nccl => None,
            _ => Some(self.timeout),
        };
        Ok(Work {
            handle,
            timeout,
            collective,
            started,
            heartbeat: Arc::clone(&self.heartbeat),
            group_timeout: self.timeout,
        })
    }

    /// Every rank's `tensor`, concatenated along dimension 0 in rank order (stacked into
    /// `[world_size]` for a scalar). The ranks first check that their tensors agree in shape and
    /// dtype, so a mismatch is an error on every rank rather than a corrupted exchange.
    pub fn all_gather(&self, tensor: &Tensor) -> Result<Tensor> {
        collective_tensor("tensor", tensor)?;
        self.agree("tensor", &layout::of(tensor), tensor.device(), layout::show_tensor)?;
        self.gather_unchecked(tensor)
    }

    /// Overwrites `tensor` on every rank with rank `root`'s, in place (shapes and dtypes checked
    /// across the ranks first, as in [`ProcessGroup::all_gather`]).
    pub fn broadcast(&self, tensor: &Tensor, root: usize) -> Result<()> {
        collective_tensor("tensor", tensor)?;
        self.check_root(root)?;
        self.agree("tensor", &layout::of(tensor), tensor.device(), layout::show_tensor)?;
        self.broadcast_unchecked(tensor, root)
    }

    /// Returns once every rank has called it (or with an error when one does not in time).
    pub fn barrier(&self) -> Result<()> {
        let (collective, started) = (self.heartbeat.enter(), Instant::now());
        let mut message: *mut c_char = ptr::null_mut();
        // SAFETY: the group is live; the bridge never throws.
        let code = unsafe { ffi::enl_pg_barrier(self.raw(), &mut message) };
        check("barrier", code, message).map_err(|e| self.explain("barrier", e, collective, started))
    }

    /// Broadcast without the cross-rank layout check: for callers that checked it once for many
    /// tensors.
    pub(super) fn broadcast_unchecked(&self, tensor: &Tensor, root: usize) -> Result<()> {
        self.check_root(root)?;
        let (collective, started) = (self.heartbeat.enter(), Instant::now());
        let mut message: *mut c_char = ptr::null_mut();
        // SAFETY: the group and the tensor are live; `root` fits a c_int because it is below the
        // world size, which did; the bridge waits for the broadcast before returning.
        let code = unsafe { ffi::enl_pg_broadcast(self.raw(), tensor.as_ptr(), root as c_int, &mut message) };
        check("broadcast", code, message).map_err(|e| self.explain("broadcast", e, collective, started))
    }

    /// Checks that `values` (a tensor layout, or a fingerprint of many) are the same on every
    /// rank; an error on every rank names the first rank that differs from rank 0.
    pub(super) fn agree(&self, what: &'static str, values: &[i64], device: Device, show: Show) -> Result<()> {
        let local = enlighten::cuda::upload(values, device);
        let all = enlighten::cuda::read_vec::<i64>(&self.gather_unchecked(&local)?)?;
        let reference = &all[..values.len()];
        match all.chunks(values.len()).position(|row| row != reference) {
            None => Ok(()),
            Some(rank) => Err(Error::value(
                what,
                format!("the same on every rank, as rank 0's {}", show(reference)),
                format!("{} on rank {rank}", show(&all[rank * values.len()..][..values.len()])),
            )),
        }
    }

    fn gather_unchecked(&self, tensor: &Tensor) -> Result<Tensor> {
        let (collective, started) = (self.heartbeat.enter(), Instant::now());
        let mut out: *mut C_tensor = ptr::null_mut();
        let mut message: *mut c_char = ptr::null_mut();
        // SAFETY: the group and the tensor are live; the bridge waits for the exchange and writes
        // `out` (a new tensor we own) only on success.
        let code = unsafe { ffi::enl_pg_allgather(self.raw(), tensor.as_ptr(), &mut out, &mut message) };
        check("all_gather", code, message).map_err(|e| self.explain("all_gather", e, collective, started))?;
        // SAFETY: on success `out` is a heap-allocated at::Tensor handed over to us.
        Ok(unsafe { Tensor::from_ptr(out) })
    }

    fn check_root(&self, root: usize) -> Result<()> {
        if root >= self.world_size {
            let expected = format!("a rank below the world size {}", self.world_size);
            return Err(Error::value("root", expected, root));
        }
        Ok(())
    }

    /// A failed collective's error, naming the ranks it waited on when their heartbeats tell.
    fn explain(&self, operation: &'static str, e: Error, collective: u64, started: Instant) -> Error {
        self.heartbeat.explain(operation, e, collective, started, self.timeout)
    }

    fn raw(&self) -> *mut ffi::Pg {
        self.handle.as_ptr()
    }
}

impl std::fmt::Debug for ProcessGroup {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ProcessGroup")
            .field("rank", &self.rank)
            .field("world_size", &self.world_size)
            .field("backend", &self.backend)
            .field("timeout", &self.timeout)
            .finish()
    }
}

impl Drop for ProcessGroup {
    fn drop(&mut self) {
        // SAFETY: the handle came from enl_pg_new and is freed once, here. Work still in flight
        // keeps its own references to what it uses.
        unsafe { ffi::enl_pg_free(self.handle.as_ptr()) }
    }
}

/// The pending result of [`ProcessGroup::all_reduce_sum`]. Dropping it without waiting leaves
/// the collective to finish on its own.
pub struct Work {
    handle: NonNull<ffi::Work>,
    /// How long `wait` blocks the host at most; `None` (NCCL): not at all.
    timeout: Option<Duration>,
    /// The collective's number and start, and the heartbeat that explains its failure.
    collective: u64,
    started: Instant,
    heartbeat: Arc<Heartbeat>,
    group_timeout: Duration,
}

// SAFETY: the handle owns c10d Work objects, which PyTorch waits on from any thread (futures
// complete on the backends' own threads); nothing in it is tied to the thread that started it.
unsafe impl Send for Work {}

impl Work {
    /// Waits until the sums are in place: an error when a peer failed, or when the collective
    /// did not finish within the group's timeout. On NCCL, as in DDP, the host does not block:
    /// work queued afterwards on the current CUDA stream runs after the sums, and a collective
    /// that overruns the timeout is ended by NCCL's watchdog, which stops the process with its
    /// error (PyTorch's default TORCH_NCCL_ASYNC_ERROR_HANDLING).
    pub fn wait(self) -> Result<()> {
        // 0 is c10d's kNoTimeout.
        let timeout_ms = self.timeout.map_or(Ok(0), millis)?;
        let mut message: *mut c_char = ptr::null_mut();
        // SAFETY: the handle is live until `self` drops after this call; the bridge never throws.
        let code = unsafe { ffi::enl_work_wait(self.handle.as_ptr(), timeout_ms, &mut message) };
        check("Work::wait", code, message).map_err(|e| {
            self.heartbeat
                .explain("all_reduce_sum", e, self.collective, self.started, self.group_timeout)
        })
    }
}

impl std::fmt::Debug for Work {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Work")
            .field("timeout", &self.timeout)
            .finish_non_exhaustive()
    }
}

impl Drop for Work {
    fn drop(&mut self) {
        // SAFETY: the handle came from enl_pg_allreduce_sum and is freed once, here.
        unsafe { ffi::enl_work_free(self.handle.as_ptr()) }
    }
}

/// What every collective needs of a tensor: defined, dense and contiguous (c10d reads its
/// memory directly).
fn collective_tensor(arg: &'static str, tensor: &Tensor) -> Result<()> {
    if !tensor.defined() {
        return Err(Error::value(arg, "a defined tensor", "an undefined tensor"));
    }
    if !tensor.is_contiguous() {
        return Err(Error::NotContiguous {
            arg,
            size: tensor.size(),
            strides: tensor.stride(),
        });
    }
    Ok(())
}

/// What the bridge needs to build a group, checked and converted before the rendezvous starts.
struct Settings {
    rank: c_int,
    size: c_int,
    backend: Backend,
    timeout: Duration,
    timeout_ms: i64,
    interfaces: Option<CString>,
    hostname: Option<CString>,
    factory: Option<ffi::BackendFactory>,
    device: c_int,
}

impl Settings {
    fn of(env: &Env, backend: Backend, timeout: Duration) -> Result<Settings> {
        let interfaces = match std::env::var("GLOO_SOCKET_IFNAME") {
            Ok(names) => Some(c_text("GLOO_SOCKET_IFNAME", &names)?),
            Err(_) => None,
        };
        let hostname = if is_loopback(&env.master_addr) {
            Some(c_text("MASTER_ADDR", &env.master_addr)?)
        } else {
            None
        };
        let (factory, device) = match backend {
            Backend::Nccl => (Some(nccl::factory()?), small("LOCAL_RANK", env.local_rank)?),
            _ => (None, -1),
        };
        Ok(Settings {
            rank: small("RANK", env.rank)?,
            size: small("WORLD_SIZE", env.world_size)?,
            backend,
            timeout,
            timeout_ms: millis(timeout)?,
            interfaces,
            hostname,
            factory,
            device,
        })
    }
}

/// The rendezvous (on the thread [`ProcessGroup::new`] starts): the store, the ranks' WORLD_SIZE
/// compared, this rank's heartbeat, then the backend's own connections.
fn join(env: &Env, settings: Settings, started: Instant) -> Result<ProcessGroup> {
    let timeout = settings.timeout;
    let store =
        Store::new(&env.master_addr, env.master_port, env.rank == 0, timeout).map_err(|e| rendezvous_failed(env, e))?;
    rendezvous::agree_on_world_size(&store, env, started, timeout).map_err(|e| rendezvous_failed(env, e))?;
    let heartbeat = Heartbeat::start(&store, env.rank, env.world_size, timeout)?;
    let mut handle: *mut ffi::Pg = ptr::null_mut();
    let mut message: *mut c_char = ptr::null_mut();
    // SAFETY: the store is live (the group keeps its own reference); the strings are
    // NUL-terminated and live across the call; the factory, when given, is the NCCL library's
    // export with the declared signature; the bridge writes `handle` only on success and never
    // throws.
    let code = unsafe {
        ffi::enl_pg_new(
            store.raw(),
            settings.rank,
            settings.size,
            settings.timeout_ms,
            settings.interfaces.as_ref().map_or(ptr::null(), |s| s.as_ptr()),
            settings.hostname.as_ref().map_or(ptr::null(), |s| s.as_ptr()),
            settings.factory,
            settings.device,
            &mut handle,
            &mut message,
        )
    };
    check("ProcessGroup::new", code, message).map_err(|e| rendezvous_failed(env, e))?;
    let handle = NonNull::new(handle).ok_or_else(|| Error::Internal("enl_pg_new returned no group".into()))?;
    Ok(ProcessGroup {
        handle,
        rank: env.rank,
        world_size: env.world_size,
        backend: settings.backend,
        timeout,
        heartbeat: Arc::new(heartbeat),
    })
}

/// How much longer than the timeout the rendezvous is given before its thread is abandoned: a
/// little, for c10d's own error to come first when it is on time (its connect retries can
/// overshoot the timeout by seconds; the error here says the same).
const RENDEZVOUS_GRACE: Duration = Duration::from_millis(500);

/// The error of a rendezvous that did not finish in time, naming whom this rank waited on:
/// rank 0's store for the others, the ranks that did not join for rank 0.
fn rendezvous_timeout(env: &Env, timeout: Duration) -> Error {
    let who = if env.rank == 0 {
        format!(
            "not every rank of WORLD_SIZE = {} (the others joined no rendezvous at port {})",
            env.world_size, env.master_port
        )
    } else {
        format!(
            "rank 0 (the rendezvous store at {}:{}: not running, or another program on that port)",
            env.master_addr, env.master_port
        )
    };
    Error::NoAnswer {
        during: "rendezvous",
        who,
        seconds: timeout.as_secs(),
    }
}

/// A rendezvous error of c10d's, with whom this rank was waiting on.
fn rendezvous_failed(env: &Env, e: Error) -> Error {
    let Error::Libtorch { operation, message } = e else {
        return e;
    };
    let waiting_on = if env.rank == 0 {
        format!("waiting for the other ranks at port {}", env.master_port)
    } else {
        format!(
            "waiting for rank 0 (the rendezvous store at {}:{})",
            env.master_addr, env.master_port
        )
    };
    Error::Libtorch {
        operation,
        message: format!("{waiting_on}: {message}"),
    }
}

/// A bridge call's outcome, its message cut to what it says before C++'s stack frames.
pub(super) fn check(operation: &'static str, code: c_int, message: *mut c_char) -> Result<()> {
    crate::error::check_bridge(operation, code, message).map_err(|e| match e {
        Error::Libtorch { operation, message } => Error::Libtorch {
            operation,
            message: concise(&message),
        },
        other => other,
    })
}

/// The lines of a c10d message before its first stack frame ("Exception raised from",
/// "frame #").
fn concise(message: &str) -> String {
    let lines: Vec<&str> = message
        .lines()
        .take_while(|l| {
            let l = l.trim_start();
            !(l.starts_with("Exception raised from") || l.starts_with("frame #"))
        })
        .filter(|l| !l.trim().is_empty())
        .collect();
    if lines.is_empty() {
        message.trim().to_string()
    } else {
        lines.join(" ")
    }
}

fn small(name: &'static str, value: usize) -> Result<c_int> {
    c_int::try_from(value).map_err(|_| Error::value(name, "at most i32::MAX", value))
}

/// Whether every rank meets on this machine: the master is a loopback address or `localhost`.
fn is_loopback(addr: &str) -> bool {
    addr.eq_ignore_ascii_case("localhost") || addr.parse::<IpAddr>().is_ok_and(|ip| ip.is_loopback())
}

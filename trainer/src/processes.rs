//! `--nproc N`: a data-parallel job on one machine as N copies of a program, each given the
//! variables torchrun sets (RANK, WORLD_SIZE, LOCAL_RANK, LOCAL_WORLD_SIZE, MASTER_ADDR,
//! MASTER_PORT) with a free loopback port for the rendezvous. Rank 0 keeps the terminal (its
//! progress bar and results are the job's); every other rank writes `rank-<r>.log`. A rank that
//! exits with a failure stops the others at once, so a job never waits on a dead peer, and the
//! error names the rank, its exit status and the end of its log. Ctrl-C and SIGTERM are
//! forwarded (the signal received), and a job whose every rank then exits with the status of a
//! checkpointed stop ([`crate::train::signals::exit_status`]) ends Ok. The port
//! is released before rank 0 binds it, so another program could take it first: rank 0 then fails
//! to bind, and the job stops with that error.
//!
//! The module knows nothing of training: it runs whatever `program` is, which is what lets the
//! tests drive it with a shell script.

use std::ffi::OsString;
use std::fs;
use std::os::unix::process::CommandExt;
use std::path::PathBuf;
use std::process::{Command, ExitStatus, Stdio};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::mpsc;
use std::thread;
use std::time::{Duration, Instant};

use crate::distributed::free_port;
use crate::error::{Error, Result};
use crate::train::signals;

/// How long stopped ranks get to exit after SIGTERM before SIGKILL.
const TERMINATE_GRACE: Duration = Duration::from_secs(3);
/// Lines of a failed rank's log quoted in the error.
const LOG_TAIL_LINES: usize = 12;

/// One job: `program args...` started `nproc` times.
#[derive(Debug, Clone)]
pub struct Job {
    pub program: PathBuf,
    pub args: Vec<OsString>,
    pub nproc: usize,
    /// Where `rank-<r>.log` of ranks 1.. are written (created if missing).
    pub log_dir: PathBuf,
}

impl Job {
    /// The log file of `rank` (rank 0 writes to the terminal instead).
    pub fn log(&self, rank: usize) -> PathBuf {
        self.log_dir.join(format!("rank-{rank}.log"))
    }
}

/// Runs the job to its end: Ok when every rank exits with success; else the first failure's
/// error, once the other ranks are stopped. After an interrupt (Ctrl-C or SIGTERM, forwarded to
/// every rank) no rank is stopped early: each finishes its checkpoint; the job is Ok when every
/// rank exits with the interrupted status, else rank 0's outcome is the job's.
pub fn run(job: &Job, interrupt: Option<&AtomicBool>) -> Result<()> {
    if job.nproc == 0 {
        return Err(Error::value("--nproc", "at least 1 process", 0));
    }
    fs::create_dir_all(&job.log_dir).map_err(|e| Error::unwritable(job.log_dir.clone(), e))?;
    let port = free_port()?;
    let (tx, rx) = mpsc::channel();
    let mut pids = Vec::with_capacity(job.nproc);
    for rank in 0..job.nproc {
        match spawn(job, rank, port) {
            Ok(mut child) => {
                pids.push(child.id());
                let tx = tx.clone();
                // The waiter owns the child; the supervisor signals it by pid until it is reaped.
                thread::spawn(move || {
                    let _ = tx.send((rank, child.wait()));
                });
            }
            Err(e) => {
                stop(&pids, &vec![false; pids.len()], &rx);
                return Err(e);
            }
        }
    }
    drop(tx);
    supervise(job, &pids, &rx, interrupt)
}

/// Starts rank `rank` with the torchrun variables; ranks above 0 write their log file.
fn spawn(job: &Job, rank: usize, port: u16) -> Result<std::process::Child> {
    let mut cmd = Command::new(&job.program);
    cmd.args(&job.args)
        .env("RANK", rank.to_string())
        .env("LOCAL_RANK", rank.to_string())
        .env("WORLD_SIZE", job.nproc.to_string())
        .env("LOCAL_WORLD_SIZE", job.nproc.to_string())
        .env("MASTER_ADDR", "127.0.0.1")
        .env("MASTER_PORT", port.to_string())
        .stdin(Stdio::null());
    // N processes each using every core would oversubscribe the CPU; torchrun does the same.
    if std::env::var_os("OMP_NUM_THREADS").is_none() {
        let cores = thread::available_parallelism().map_or(1, |n| n.get());
        cmd.env("OMP_NUM_THREADS", (cores / job.nproc).max(1).to_string());
    }
    if rank > 0 {
        let path = job.log(rank);
        let file = fs::File::create(&path).map_err(|e| Error::unwritable(path.clone(), e))?;
        let err = file.try_clone().map_err(|e| Error::unwritable(path.clone(), e))?;
        cmd.stdout(file).stderr(err);
    }
    // SAFETY: prctl is async-signal-safe and touches no memory of the parent. It makes a rank
    // receive SIGTERM when the thread that started it ends (the launcher's, which outlives its
    // ranks unless the launcher is killed), so no rank outlives a killed job.
    unsafe {
        cmd.pre_exec(|| {
            libc::prctl(libc::PR_SET_PDEATHSIG, libc::SIGTERM);
            Ok(())
        });
    }
    cmd.spawn().map_err(|e| Error::Launch {
        rank,
        problem: format!("cannot start {}: {e}", job.program.display()),
    })
}

/// Waits for the ranks' exits, forwarding interrupts; the first failure stops the others.
fn supervise(
    job: &Job,
    pids: &[u32],
    rx: &mpsc::Receiver<(usize, std::io::Result<ExitStatus>)>,
    interrupt: Option<&AtomicBool>,
) -> Result<()> {
    let mut exited = vec![false; pids.len()];
    let mut interrupted = None;
    let mut outcome = Ok(());
    while exited.contains(&false) {
        if interrupt.is_some_and(|f| f.swap(false, Ordering::SeqCst)) {
            let received = signals::received().unwrap_or(libc::SIGINT);
            interrupted = Some(received);
            signal(pids, &exited, received);
        }
        let Ok((rank, status)) = rx.recv_timeout(Duration::from_millis(50)) else {
            continue;
        };
        exited[rank] = true;
        // A rank signalled on its own (a scheduler's SIGTERM to one process) stops the job as
        // a signal to the launcher would: every rank checkpoints at that step and says so.
        if let (None, Some(sig)) = (
            interrupted,
            status.as_ref().ok().and_then(|s| signals::from_exit_status(s.code()?)),
        ) {
            signals::adopt(sig);
            interrupted = Some(sig);
        }
        let stopped_as_asked =
            |s: &ExitStatus| interrupted.is_some_and(|sig| s.code() == Some(signals::exit_status(sig)));
        let status = match status {
            Ok(s) if s.success() || stopped_as_asked(&s) => continue,
            Ok(s) => s.to_string(),
            Err(e) => format!("an unknown status ({e})"),
        };
        let mut failed = failure(job, rank, &status, interrupted.is_some());
        if interrupted.is_some() {
            // Every rank stops at the same step after an interrupt; rank 0's error is the one
            // that says where the checkpoint is.
            if rank == 0 || outcome.is_ok() {
                outcome = Err(failed);
            }
            continue;
        }
        // A rank that a timeout failed may have waited on a peer that is stopped, not dead:
        // name that peer, which is the rank at fault.
        if let (Error::Launch { problem, .. }, Some(peers)) = (&mut failed, stopped_ranks(pids, &exited)) {
            problem.push_str(&format!(
                "\n  {peers} stopped (SIGSTOP or a debugger), not running: the rank the others waited on"
            ));
        }
        stop(pids, &exited, rx);
        return Err(failed);
    }
    outcome
}

/// "rank 1" / "ranks 1, 3": the ranks still alive that are stopped (state T in /proc), if any.
fn stopped_ranks(pids: &[u32], exited: &[bool]) -> Option<String> {
    let stopped: Vec<String> = pids
        .iter()
        .zip(exited)
        .enumerate()
        .filter(|(_, (pid, &done))| !done && is_stopped(**pid))
        .map(|(rank, _)| rank.to_string())
        .collect();
    match stopped.len() {
        0 => None,
        1 => Some(format!("rank {} is", stopped[0])),
        _ => Some(format!("ranks {} are", stopped.join(", "))),
    }
}

/// Whether process `pid` is stopped: the state after the command name in /proc/<pid>/stat.
fn is_stopped(pid: u32) -> bool {
    let Ok(stat) = fs::read_to_string(format!("/proc/{pid}/stat")) else {
        return false;
    };
    stat.rsplit_once(')')
        .and_then(|(_, rest)| rest.split_whitespace().next())
        .is_some_and(|state| state == "T" || state == "t")
}

/// Sends `signal` to every rank that has not exited.
fn signal(pids: &[u32], exited: &[bool], signal: i32) {
    for (pid, _) in pids.iter().zip(exited).filter(|(_, &done)| !done) {
        // SAFETY: kill(2) with a pid of a child this process started and has not reaped.
        unsafe { libc::kill(*pid as libc::pid_t, signal) };
    }
}

/// Terminates the ranks still running: SIGTERM, then SIGKILL after a grace period.
fn stop(pids: &[u32], exited: &[bool], rx: &mpsc::Receiver<(usize, std::io::Result<ExitStatus>)>) {
    let mut exited = exited.to_vec();
    exited.resize(pids.len(), false);
    signal(pids, &exited, libc::SIGTERM);
    let deadline = Instant::now() + TERMINATE_GRACE;
    while exited.contains(&false) {
        let left = deadline.saturating_duration_since(Instant::now());
        match rx.recv_timeout(left) {
            Ok((rank, _)) => exited[rank] = true,
            Err(_) => {
                signal(pids, &exited, libc::SIGKILL);
                // The waiters reap them; SIGKILL cannot be caught, so this returns promptly.
                while let Ok((rank, _)) = rx.recv_timeout(Duration::from_secs(5)) {
                    exited[rank] = true;
                    if !exited.contains(&false) {
                        break;
                    }
                }
                return;
            }
        }
    }
}

/// The error of a rank that exited with `status` (after an interrupt, or not): its log's last
/// lines (rank 0's output is on the terminal already).
fn failure(job: &Job, rank: usize, status: &str, interrupted: bool) -> Error {
    let detail = if rank == 0 {
        "its output is above".to_string()
    } else {
        let path = job.log(rank);
        let text = fs::read_to_string(&path).unwrap_or_default();
        let lines: Vec<&str> = text.lines().collect();
        let tail = lines[lines.len().saturating_sub(LOG_TAIL_LINES)..].join("\n  ");
        format!("the last lines of {}:\n  {tail}", path.display())
    };
    let cause = if interrupted { "was interrupted and " } else { "" };
    Error::Launch {
        rank,
        problem: format!("{cause}exited with {status}; {detail}"),
    }
}

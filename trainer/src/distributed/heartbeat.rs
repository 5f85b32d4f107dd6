//! Which rank a failed collective waited on. c10d's timeout says only "Operation timed out", on
//! the rank that waited; a rank that stopped (SIGSTOP, a debugger, a frozen machine) or fell
//! behind (stuck reading data) is the one at fault. So every rank counts the collectives it
//! starts (an atomic add per collective, nothing more on the hot path), and a thread of its own
//! leaves that count and a beat number in the store every few seconds, on a connection of its
//! own. When a collective fails, the rank that waited reads the others' heartbeats twice, a
//! couple of beats apart: a rank whose beat did not move is stopped or gone, a rank whose count
//! is below the failed collective's never reached it.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{mpsc, Arc};
use std::time::{Duration, Instant};

use super::store::Store;
use crate::error::{Error, Result};

/// A rank's published heartbeat: beats so far, collectives started.
#[derive(Debug, Clone, Copy, PartialEq)]
struct Beat {
    beat: u64,
    entered: u64,
}

/// This rank's heartbeat, and what it reads of the others' when a collective fails.
pub(super) struct Heartbeat {
    /// Collectives this rank has started.
    entered: Arc<AtomicU64>,
    /// A connection of its own whose calls wait at most two beats.
    store: Arc<Store>,
    rank: usize,
    world_size: usize,
    interval: Duration,
    /// Dropping it stops the publishing thread (at its next beat).
    _stop: mpsc::Sender<()>,
}

impl Heartbeat {
    /// Publishes a first beat and starts the thread that publishes one every interval: a quarter
    /// of the collective `timeout`, between 0.1 s and 2 s.
    pub(super) fn start(main: &Store, rank: usize, world_size: usize, timeout: Duration) -> Result<Heartbeat> {
        let interval = (timeout / 4).clamp(Duration::from_millis(100), Duration::from_secs(2));
        let store = Arc::new(main.connect_again(interval * 2)?);
        let entered = Arc::new(AtomicU64::new(0));
        publish(&store, rank, 1, 0)?;
        let (stop, stopped) = mpsc::channel::<()>();
        let (thread_store, thread_entered) = (Arc::clone(&store), Arc::clone(&entered));
        let beats = move || {
            let mut beat = 1;
            // Ends when the group drops (the sender with it). A failed write (rank 0 gone) is
            // not this thread's to report: the next collective fails and says so.
            while let Err(mpsc::RecvTimeoutError::Timeout) = stopped.recv_timeout(interval) {
                beat += 1;
                let _ = publish(&thread_store, rank, beat, thread_entered.load(Ordering::Relaxed));
            }
        };
        std::thread::Builder::new()
            .name("heartbeat".into())
            .spawn(beats)
            .map_err(|e| Error::Internal(format!("cannot start the heartbeat thread: {e}")))?;
        Ok(Heartbeat {
            entered,
            store,
            rank,
            world_size,
            interval,
            _stop: stop,
        })
    }

    /// Counts a collective this rank starts; returns its number (1, 2, ...), the same on every
    /// rank since every rank starts the same collectives in the same order.
    pub(super) fn enter(&self) -> u64 {
        self.entered.fetch_add(1, Ordering::Relaxed) + 1
    }

    /// The error of collective number `collective` (`operation`, started at `started`), with
    /// the ranks it waited on named when the heartbeats tell: a [`Error::NoAnswer`] when it
    /// failed by timing out, c10d's message followed by them otherwise (a peer gone).
    pub(super) fn explain(
        &self,
        operation: &'static str,
        error: Error,
        collective: u64,
        started: Instant,
        timeout: Duration,
    ) -> Error {
        let Error::Libtorch { operation: op, message } = error else {
            return error;
        };
        let timed_out = started.elapsed() >= timeout;
        match self.culprits(collective) {
            Some(who) if timed_out => Error::NoAnswer {
                during: operation,
                who,
                seconds: timeout.as_secs(),
            },
            Some(who) => Error::Libtorch {
                operation: op,
                message: format!("{message}; waiting on {who}"),
            },
            None => Error::Libtorch { operation: op, message },
        }
    }

    /// The ranks that stopped beating or never started collective `collective`, described; None
    /// when every other rank is alive and there.
    fn culprits(&self, collective: u64) -> Option<String> {
        let Ok(first) = self.read_others() else {
            return Some(self.store_silent());
        };
        std::thread::sleep(self.interval * 2);
        let Ok(second) = self.read_others() else {
            return Some(self.store_silent());
        };
        let silent_for = self.interval.as_secs_f64() * 2.0;
        let found: Vec<String> = first
            .iter()
            .zip(&second)
            .filter_map(|(&(rank, before), &(_, after))| match (before, after) {
                (Some(a), Some(b)) if a.beat == b.beat => Some(format!(
                    "rank {rank} (no heartbeat for {silent_for:.1} s: stopped, frozen or gone; at its last beat \
                     it had started {} collectives, this rank waited in collective {collective})",
                    b.entered
                )),
                (_, Some(b)) if b.entered < collective => Some(format!(
                    "rank {rank} (alive, but it had started {} collectives and this rank waited in collective \
                     {collective}: still computing or reading data)",
                    b.entered
                )),
                (_, None) => Some(format!("rank {rank} (no heartbeat ever)")),
                _ => None,
            })
            .collect();
        (!found.is_empty()).then(|| found.join(", "))
    }

    /// Rank 0 when the store it serves does not answer (it is stopped, frozen or gone); the
    /// store is then all this rank can tell.
    fn store_silent(&self) -> String {
        let waited = self.interval.as_secs_f64() * 2.0;
        if self.rank == 0 {
            format!("the store (this rank's own; it did not answer within {waited:.1} s)")
        } else {
            format!("rank 0 (its store did not answer within {waited:.1} s: stopped, frozen or gone)")
        }
    }

    /// Every other rank's last published heartbeat (None: never published).
    fn read_others(&self) -> Result<Vec<(usize, Option<Beat>)>> {
        (0..self.world_size)
            .filter(|&r| r != self.rank)
            .map(|r| {
                let key = key(r);
                if !self.store.check(&key)? {
                    return Ok((r, None));
                }
                Ok((r, parse(&self.store.get(&key)?)))
            })
            .collect()
    }
}

fn key(rank: usize) -> String {
    format!("enlighten/heartbeat/{rank}")
}

/// Writes "<beat> <entered>" under this rank's key.
fn publish(store: &Store, rank: usize, beat: u64, entered: u64) -> Result<()> {
    store.set(&key(rank), format!("{beat} {entered}").as_bytes())
}

fn parse(bytes: &[u8]) -> Option<Beat> {
    let text = std::str::from_utf8(bytes).ok()?;
    let (beat, entered) = text.split_once(' ')?;
    Some(Beat {
        beat: beat.parse().ok()?,
        entered: entered.parse().ok()?,
    })
}

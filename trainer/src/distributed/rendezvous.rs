//! The ranks' first meeting, before the process group: each leaves its WORLD_SIZE in the store
//! and reads rank 0's (rank 0 reads every other rank's), so that ranks started with different
//! sizes stop at once with one line naming the setting, instead of waiting for ranks that do not
//! exist until c10d's timeout. Rank 0 also learns here which ranks never came.

use std::time::{Duration, Instant};

use super::store::Store;
use super::Env;
use crate::error::{Error, Result};

/// Where the first rank to see a difference describes it for the others.
const MISMATCH: &str = "enlighten/world_size/mismatch";
/// How often the store is polled while ranks are missing.
const POLL: Duration = Duration::from_millis(20);
/// How long rank 0 keeps serving the store after a difference, for the others to read it.
const LINGER: Duration = Duration::from_secs(2);

fn size_key(rank: usize) -> String {
    format!("enlighten/world_size/{rank}")
}

/// Set by a rank once it has read the difference.
fn seen_key(rank: usize) -> String {
    format!("enlighten/world_size/seen/{rank}")
}

/// Waits until every rank rank 0 expects has left its WORLD_SIZE (rank 0) or until rank 0's is
/// there (the others), at most `timeout` after `started` (the rendezvous' start); an error on a
/// different size, or naming the ranks that did not come.
pub(super) fn agree_on_world_size(store: &Store, env: &Env, started: Instant, timeout: Duration) -> Result<()> {
    store.set(&size_key(env.rank), env.world_size.to_string().as_bytes())?;
    let mut waiting: Vec<usize> = if env.rank == 0 {
        (1..env.world_size).collect()
    } else {
        vec![0]
    };
    loop {
        if store.check(MISMATCH)? {
            let text = String::from_utf8_lossy(&store.get(MISMATCH)?).into_owned();
            return Err(stop_on_difference(store, env, text));
        }
        let mut still = Vec::new();
        for rank in waiting {
            if !store.check(&size_key(rank))? {
                still.push(rank);
                continue;
            }
            let theirs = String::from_utf8_lossy(&store.get(&size_key(rank))?).into_owned();
            if theirs != env.world_size.to_string() {
                // Said the same way by every rank that sees it: the other rank's size and rank 0's.
                let text = if env.rank == 0 {
                    difference(rank, &theirs, &env.world_size.to_string())
                } else {
                    difference(env.rank, &env.world_size.to_string(), &theirs)
                };
                let _ = store.set(MISMATCH, text.as_bytes());
                return Err(stop_on_difference(store, env, text));
            }
        }
        waiting = still;
        if waiting.is_empty() {
            return Ok(());
        }
        if started.elapsed() >= timeout {
            return Err(missing(env, &waiting, timeout));
        }
        std::thread::sleep(POLL);
    }
}

/// "3 on rank 1, 2 on rank 0".
fn difference(rank: usize, size: &str, rank0: &str) -> String {
    format!("WORLD_SIZE = {size} on rank {rank}, {rank0} on rank 0")
}

/// The error of a difference `text`, once the others can know it: each rank says it has read
/// it, and rank 0, whose process serves the store, waits (at most [`LINGER`]) until every rank
/// that came has, so that none sees the store vanish instead.
fn stop_on_difference(store: &Store, env: &Env, text: String) -> Error {
    let _ = store.set(&seen_key(env.rank), b"1");
    if env.rank == 0 {
        let unread =
            |r: &usize| store.check(&size_key(*r)).unwrap_or(false) && !store.check(&seen_key(*r)).unwrap_or(true);
        let started = Instant::now();
        while (1..env.world_size).any(|r| unread(&r)) && started.elapsed() < LINGER {
            std::thread::sleep(POLL);
        }
    }
    Error::value("WORLD_SIZE", "the same on every rank", text)
}

/// The ranks rank 0 waited for in vain (or rank 0, for the others).
fn missing(env: &Env, ranks: &[usize], timeout: Duration) -> Error {
    let who = match ranks {
        [0] => format!(
            "rank 0 (at {}:{}, which serves the rendezvous)",
            env.master_addr, env.master_port
        ),
        [one] => format!("rank {one} of WORLD_SIZE = {} (it never came)", env.world_size),
        many => {
            let list: Vec<String> = many.iter().map(ToString::to_string).collect();
            format!(
                "ranks {} of WORLD_SIZE = {} (they never came)",
                list.join(", "),
                env.world_size
            )
        }
    };
    Error::NoAnswer {
        during: "rendezvous",
        who,
        seconds: timeout.as_secs(),
    }
}

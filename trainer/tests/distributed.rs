//! The c10d process group on this machine: real processes (this test binary started again with
//! ENLIGHTEN_DIST_WORKER naming a scenario, and torchrun's variables) meeting on loopback with
//! Gloo. Each trial launches the ranks, waits for them with a deadline, and reads what they
//! report; the scenarios themselves are in distributed/workers.rs.

#[path = "distributed/workers.rs"]
mod workers;

use std::collections::HashMap;
use std::ffi::OsString;
use std::io::Read;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use enlighten_trainer::distributed::{free_port, Backend, Env, ProcessGroup};
use enlighten_trainer::Error;
use libtest_mimic::{Arguments, Failed, Trial};
use tch::Device;

const WORKER: &str = "ENLIGHTEN_DIST_WORKER";

fn main() {
    if let Ok(scenario) = std::env::var(WORKER) {
        std::process::exit(workers::run(&scenario));
    }
    let args = Arguments::from_args();
    let trials = vec![
        Trial::test("collectives_three_ranks", collectives),
        Trial::test("gradient_buckets_two_ranks", buckets),
        Trial::test("rank_exiting_early_fails_the_other", exit_early),
        Trial::test("silent_rank_times_out_the_other", silent_peer),
        Trial::test("missing_rank_times_out_the_rendezvous", missing_rank),
        Trial::test("env_errors_name_the_variable", env_errors),
        Trial::test("env_reads_a_job", env_reads_a_job),
        Trial::test("backend_names_and_resolution", backend_names),
        Trial::test("nccl_runs_or_says_why_not", nccl_single_rank),
    ];
    libtest_mimic::run(&args, trials).exit();
}

/// What one rank did: its exit code (None: killed at the deadline) and its output.
struct Outcome {
    rank: usize,
    code: Option<i32>,
    stdout: String,
    stderr: String,
}

impl Outcome {
    /// The value of a `key=value` line the worker printed.
    fn report(&self, key: &str) -> Option<String> {
        let prefix = format!("{key}=");
        self.stdout
            .lines()
            .find_map(|line| line.strip_prefix(&prefix).map(str::to_string))
    }

    fn describe(&self) -> String {
        format!(
            "rank {} exited with {:?}\n--- stdout\n{}--- stderr\n{}",
            self.rank, self.code, self.stdout, self.stderr
        )
    }
}

/// Starts `ranks` of a `world`-rank job running `scenario` and waits for them, killing what is
/// still running after `deadline`.
fn launch(scenario: &str, world: usize, ranks: &[usize], deadline: Duration) -> Result<Vec<Outcome>, Failed> {
    let port = free_port().map_err(|e| Failed::from(e.to_string()))?;
    let exe = std::env::current_exe().map_err(|e| Failed::from(e.to_string()))?;
    let mut children: Vec<(usize, Child)> = Vec::new();
    for &rank in ranks {
        let child = Command::new(&exe)
            .env(WORKER, scenario)
            .env("RANK", rank.to_string())
            .env("WORLD_SIZE", world.to_string())
            .env("LOCAL_RANK", rank.to_string())
            .env("MASTER_ADDR", "127.0.0.1")
            .env("MASTER_PORT", port.to_string())
            .env_remove("GLOO_SOCKET_IFNAME")
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .map_err(|e| Failed::from(format!("starting rank {rank}: {e}")))?;
        children.push((rank, child));
    }
    let start = Instant::now();
    let mut outcomes = Vec::new();
    for (rank, mut child) in children {
        let code = loop {
            match child.try_wait().map_err(|e| Failed::from(e.to_string()))? {
                Some(status) => break status.code(),
                None if start.elapsed() > deadline => {
                    // Our own child, killed by its handle.
                    let _ = child.kill();
                    let _ = child.wait();
                    break None;
                }
                None => std::thread::sleep(Duration::from_millis(20)),
            }
        };
        let mut stdout = String::new();
        let mut stderr = String::new();
        if let Some(mut out) = child.stdout.take() {
            let _ = out.read_to_string(&mut stdout);
        }
        if let Some(mut err) = child.stderr.take() {
            let _ = err.read_to_string(&mut stderr);
        }
        outcomes.push(Outcome {
            rank,
            code,
            stdout,
            stderr,
        });
    }
    Ok(outcomes)
}

/// Fails unless every rank exited with the code `expected(rank)` gives.
fn expect_codes(outcomes: &[Outcome], expected: impl Fn(usize) -> i32) -> Result<(), Failed> {
    for outcome in outcomes {
        if outcome.code != Some(expected(outcome.rank)) {
            return Err(format!("expected exit code {}: {}", expected(outcome.rank), outcome.describe()).into());
        }
    }
    Ok(())
}

fn collectives() -> Result<(), Failed> {
    let outcomes = launch("collectives", 3, &[0, 1, 2], Duration::from_secs(40))?;
    expect_codes(&outcomes, |_| 0)
}

fn buckets() -> Result<(), Failed> {
    let outcomes = launch("buckets", 2, &[0, 1], Duration::from_secs(40))?;
    expect_codes(&outcomes, |_| 0)?;
    // Both ranks print their averaged gradients' bits; they must be identical.
    let digests: Vec<Option<String>> = outcomes.iter().map(|o| o.report("grad_bits")).collect();
    if digests[0].is_none() || digests[0] != digests[1] {
        return Err(format!("gradient bits differ between ranks: {digests:?}").into());
    }
    Ok(())
}

/// The surviving rank's error must come within `bound` of its collective's start.
fn expect_prompt_error(outcome: &Outcome, bound: Duration) -> Result<(), Failed> {
    let elapsed: u64 = outcome
        .report("error_after_ms")
        .and_then(|v| v.parse().ok())
        .ok_or_else(|| Failed::from(format!("no error_after_ms reported: {}", outcome.describe())))?;
    if Duration::from_millis(elapsed) > bound {
        return Err(format!("the error took {elapsed} ms (bound {bound:?}): {}", outcome.describe()).into());
    }
    println!(
        "rank {} failed after {elapsed} ms: {}",
        outcome.rank,
        outcome.report("error").unwrap_or_default()
    );
    Ok(())
}

fn exit_early() -> Result<(), Failed> {
    let outcomes = launch("exit_early", 2, &[0, 1], Duration::from_secs(30))?;
    expect_codes(&outcomes, |rank| if rank == 1 { workers::EARLY_EXIT } else { 0 })?;
    expect_prompt_error(&outcomes[0], Duration::from_secs(5))
}

fn silent_peer() -> Result<(), Failed> {
    let outcomes = launch("silent_peer", 2, &[0, 1], Duration::from_secs(30))?;
    expect_codes(&outcomes, |_| 0)?;
    // The group's timeout is 2 s; allow for a loaded machine.
    expect_prompt_error(&outcomes[0], Duration::from_secs(6))
}

fn missing_rank() -> Result<(), Failed> {
    let outcomes = launch("missing_rank", 2, &[0], Duration::from_secs(30))?;
    expect_codes(&outcomes, |_| 0)?;
    expect_prompt_error(&outcomes[0], Duration::from_secs(6))
}

fn lookup(vars: &[(&'static str, &str)]) -> impl Fn(&'static str) -> Option<OsString> {
    let map: HashMap<&'static str, OsString> = vars.iter().map(|(k, v)| (*k, OsString::from(v))).collect();
    move |name| map.get(name).cloned()
}

const JOB: [(&str, &str); 5] = [
    ("RANK", "1"),
    ("WORLD_SIZE", "4"),
    ("LOCAL_RANK", "1"),
    ("MASTER_ADDR", "10.0.0.2"),
    ("MASTER_PORT", "29500"),
];

/// The job's variables with `name` replaced by `value` (or removed when `value` is None).
fn job_with(name: &'static str, value: Option<&'static str>) -> Vec<(&'static str, &'static str)> {
    let mut vars: Vec<_> = JOB.iter().copied().filter(|(k, _)| *k != name).collect();
    if let Some(value) = value {
        vars.push((name, value));
    }
    vars
}

fn env_errors() -> Result<(), Failed> {
    let cases: [(&'static str, Option<&'static str>, &'static str); 9] = [
        ("RANK", Some("4"), "RANK"),
        ("RANK", Some("-1"), "RANK"),
        ("RANK", None, "RANK"),
        ("WORLD_SIZE", Some("0"), "WORLD_SIZE"),
        ("WORLD_SIZE", Some("two"), "WORLD_SIZE"),
        ("LOCAL_RANK", Some("x"), "LOCAL_RANK"),
        ("MASTER_ADDR", None, "MASTER_ADDR"),
        ("MASTER_PORT", Some("70000"), "MASTER_PORT"),
        ("LOCAL_WORLD_SIZE", Some("1"), "LOCAL_RANK"),
    ];
    for (name, value, blamed) in cases {
        match Env::from_lookup(lookup(&job_with(name, value))) {
            Err(Error::Value { arg, .. }) if arg == blamed => {}
            other => return Err(format!("{name}={value:?}: expected an error naming {blamed}, got {other:?}").into()),
        }
    }
    let message = Env::from_lookup(lookup(&job_with("RANK", Some("7"))))
        .err()
        .map(|e| e.to_string())
        .unwrap_or_default();
    if !message.contains("RANK") || !message.contains("WORLD_SIZE = 4") || !message.contains('7') {
        return Err(format!("the message should name RANK, the world size and the value: {message}").into());
    }
    Ok(())
}

fn env_reads_a_job() -> Result<(), Failed> {
    let env = Env::from_lookup(lookup(&JOB))?.ok_or("a job was described")?;
    let expected = Env {
        rank: 1,
        world_size: 4,
        local_rank: 1,
        master_addr: "10.0.0.2".into(),
        master_port: 29500,
    };
    if env != expected {
        return Err(format!("read {env:?}, expected {expected:?}").into());
    }
    let none = Env::from_lookup(lookup(&job_with("WORLD_SIZE", None)))?;
    if none.is_some() {
        return Err("without WORLD_SIZE there is no job".into());
    }
    Ok(())
}

fn backend_names() -> Result<(), Failed> {
    // The trainer may hold the group and a pending all-reduce on another thread.
    fn sendable<T: Send>() {}
    sendable::<ProcessGroup>();
    sendable::<enlighten_trainer::distributed::Work>();
    sendable::<enlighten_trainer::distributed::GradientBuckets>();
    for backend in [Backend::Auto, Backend::Gloo, Backend::Nccl] {
        let parsed: Backend = backend.to_string().parse()?;
        #[derive(serde::Deserialize)]
        struct Section {
            backend: Backend,
        }
        let section: Section = toml::from_str(&format!("backend = \"{backend}\""))?;
        if parsed != backend || section.backend != backend {
            return Err(format!("{backend} does not round-trip").into());
        }
    }
    match "mpi".parse::<Backend>() {
        Err(Error::Value { arg: "backend", .. }) => {}
        other => return Err(format!("\"mpi\" should be refused naming `backend`: {other:?}").into()),
    }
    let resolved = [
        Backend::Auto.resolve(Device::Cpu),
        Backend::Auto.resolve(Device::Cuda(1)),
        Backend::Gloo.resolve(Device::Cuda(0)),
    ];
    if resolved != [Backend::Gloo, Backend::Nccl, Backend::Gloo] {
        return Err(format!("resolution: {resolved:?}").into());
    }
    Ok(())
}

/// A one-rank NCCL group: where CUDA runs, an all-reduce on the GPU; elsewhere (as in CI) a
/// prompt error saying why, not a crash or a hang.
fn nccl_single_rank() -> Result<(), Failed> {
    let env = Env {
        rank: 0,
        world_size: 1,
        local_rank: 0,
        master_addr: "127.0.0.1".into(),
        master_port: free_port()?,
    };
    let start = Instant::now();
    let result = ProcessGroup::new(&env, Backend::Nccl, Duration::from_secs(20));
    match (enlighten::cuda::probe(), result) {
        (Ok(_), Ok(group)) => {
            let t = tch::Tensor::ones([3], (tch::Kind::Float, Device::Cuda(0)));
            group.all_reduce_sum(&[&t])?.wait()?;
            let sum = t.sum(tch::Kind::Double).double_value(&[]);
            if sum != 3.0 {
                return Err(format!("one-rank NCCL all-reduce changed the values: sum {sum}").into());
            }
            println!("NCCL: a one-rank all-reduce on cuda:0 in {:?}", start.elapsed());
            Ok(())
        }
        (Ok(_), Err(e)) => Err(format!("CUDA runs here, but NCCL failed: {e}").into()),
        (Err(_), Ok(_)) => Err("an NCCL group without CUDA".into()),
        (Err(reason), Err(e)) => {
            println!("NCCL not run ({reason}): {e}");
            let named = matches!(
                &e,
                Error::Libtorch {
                    operation: "loading the NCCL backend",
                    ..
                }
            ) || matches!(&e, Error::Value { arg: "backend", .. });
            if !named || start.elapsed() > Duration::from_secs(5) {
                return Err(format!("expected a prompt error about the NCCL backend, got {e:?}").into());
            }
            Ok(())
        }
    }
}

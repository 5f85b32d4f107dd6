//! Data parallelism on the CPU over Gloo and the loopback interface: `enlighten train --nproc 2`
//! learns with both ranks ending bit-identical and ending the EP at the same step, global
//! High-Loss Removal on two ranks removes exactly what one process removes from the
//! concatenated batch, a two-rank checkpoint resumes on one process, `compare --nproc 2` trains
//! each run on both ranks, and a rank that fails alone stops the job with its error within
//! seconds.

use std::path::{Path, PathBuf};
use std::process::{Command, Output};
use std::time::{Duration, Instant};

use enlighten::ops::loss::{attach_gradient, reference, CrossEntropy, Targets};
use enlighten_trainer::distributed::{free_port, Backend, Env, ProcessGroup};
use enlighten_trainer::processes::Job;
use enlighten_trainer::train::{remove_highest_global, Summary};
use enlighten_trainer::Error;
use tch::{Device, Kind, Tensor};

mod support;
use enlighten::testing::serial;
use support::{scratch, write_dataset};

/// A small configuration of the dataset `write_dataset` writes: 256 training rows, 2 ranks of
/// 16 rows a step (8 steps an epoch), Mixup Pause ending on validation accuracy. The learning
/// rate is low enough that validation accuracy crosses 0.5 only after a few evaluations, where
/// the ranks' halves of the validation split disagree unless their counts are summed.
fn write_config(dir: &Path, name: &str, extra_run: &str) -> PathBuf {
    let path = dir.join(format!("{name}.toml"));
    let text = format!(
        r#"
        [run]
        name = "{name}"
        seed = 5
        device = "cpu"
        out_dir = "{out}"
        eval_every = 4
        log_every = 2
        collective_timeout_s = 20
        {extra_run}
        [data]
        dataset = "fashion-mnist"
        dir = "{data}"
        val_fraction = 0.2
        batch_size = 16
        augment = true
        pad = 2
        [model]
        name = "small-cnn"
        width = 8
        [optim]
        lr = 0.005
        epochs = 3
        warmup_epochs = 0.5
        [strategy]
        kind = "mixup-pause"
        alpha = 0.4
        [strategy.ep]
        end = "accuracy"
        threshold = {{ kind = "raw", value = 0.5 }}
        "#,
        out = dir.join("runs").display(),
        data = dir.join("data").display(),
    );
    std::fs::write(&path, text).unwrap();
    path
}

fn setup(name: &str) -> PathBuf {
    let dir = scratch(name);
    std::fs::create_dir_all(dir.join("data")).unwrap();
    write_dataset(&dir.join("data"));
    dir
}

/// `enlighten <args>` run to its end, its output kept.
fn enlighten(args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_enlighten"))
        .args(args)
        .env("OMP_NUM_THREADS", "1")
        .output()
        .unwrap()
}

fn text(bytes: &[u8]) -> String {
    String::from_utf8_lossy(bytes).into_owned()
}

/// The line of `output` that starts with `prefix`.
fn line<'a>(output: &'a str, prefix: &str) -> &'a str {
    output
        .lines()
        .find(|l| l.starts_with(prefix))
        .unwrap_or_else(|| panic!("no line starting {prefix:?} in:\n{output}"))
}

fn summary(dir: &Path, run: &str) -> Summary {
    let path = dir.join("runs").join(run).join("summary.json");
    serde_json::from_str(&std::fs::read_to_string(path).unwrap()).unwrap()
}

#[test]
fn two_processes_learn_end_the_ep_together_and_stay_bit_identical() {
    let _one = serial();
    let dir = setup("two");
    let config = write_config(&dir, "two", "");
    let out = enlighten(&["train", "--config", config.to_str().unwrap(), "--nproc", "2"]);
    let (stdout, stderr) = (text(&out.stdout), text(&out.stderr));
    assert!(out.status.success(), "stdout:\n{stdout}\nstderr:\n{stderr}");
    let rank1 = std::fs::read_to_string(dir.join("runs/two/logs/rank-1.log")).unwrap();
    // Rank 1 printed its own results into its log, rank 0 on the terminal.
    assert_eq!(line(&stdout, "rank "), "rank 0 of 2 (gloo), global batch 32");
    assert_eq!(line(&rank1, "rank "), "rank 1 of 2 (gloo), global batch 32");
    assert_eq!(
        line(&stdout, "parameters "),
        line(&rank1, "parameters "),
        "the ranks' parameters and buffers are bit-identical"
    );
    let ep_end = line(&stdout, "EP ended at step");
    assert_eq!(ep_end, line(&rank1, "EP ended at step"));
    let s = summary(&dir, "two");
    assert_eq!(
        (
            s.parallelism.world_size,
            s.parallelism.backend,
            s.parallelism.global_batch
        ),
        (2, Some(Backend::Gloo), 32)
    );
    assert_eq!(s.steps, 24, "3 epochs of 8 steps: each rank's shard is half the data");
    assert!(s.ep_end.is_some(), "the EP ended");
    assert!(s.test > 0.6, "test accuracy {} (4 classes)", s.test);
    let lines = support::metrics(&dir, "two");
    assert!(lines
        .iter()
        .all(|l| l.parallelism.world_size == 2 && l.parallelism.global_batch == 32));
    let (first, last) = (lines[0].loss, lines[lines.len() - 1].loss);
    assert!(last < 0.7 * first, "the loss fell from {first} to {last}");
    // Only rank 0 wrote run outputs.
    assert!(dir.join("runs/two/checkpoints/latest").exists());
    assert!(!dir.join("runs/two/logs/rank-0.log").exists());
}

#[test]
fn global_removal_in_the_trainer_keeps_the_ranks_together_and_differs_from_local() {
    let _one = serial();
    let dir = setup("scope");
    let mut digests = Vec::new();
    for scope in ["local", "global"] {
        let config = write_config(&dir, scope, "");
        let path = config.to_str().unwrap();
        let scope_set = format!("strategy.scope={scope}");
        let args = [
            "train",
            "--config",
            path,
            "--nproc",
            "2",
            "--set",
            "strategy.kind=high-loss-removal",
            "--set",
            "strategy.drop_share=0.25",
            "--set",
            &scope_set,
        ];
        let out = enlighten(&args);
        let stdout = text(&out.stdout);
        assert!(out.status.success(), "{stdout}\n{}", text(&out.stderr));
        let rank1 = std::fs::read_to_string(dir.join("runs").join(scope).join("logs/rank-1.log")).unwrap();
        assert_eq!(line(&stdout, "parameters "), line(&rank1, "parameters "), "{scope}");
        let lines = support::metrics(&dir, scope);
        assert!(
            lines.iter().any(|l| l.in_ep && l.drop_share == 0.25),
            "{scope}: removal in the EP"
        );
        digests.push(line(&stdout, "parameters ").to_string());
    }
    assert_ne!(
        digests[0], digests[1],
        "the global scope removes other rows than the local one"
    );
}

/// What rank `rank` of 2 computes for its half of a batch with global removal: its keep mask,
/// loss and logit gradient.
fn global_removal_rank(env: Env, logits: Tensor, labels: Tensor, share: f64) -> (Tensor, Tensor, Tensor) {
    let group = ProcessGroup::new(&env, Backend::Gloo, Duration::from_secs(20)).unwrap();
    let out = CrossEntropy::default().loss_and_grad(&logits, &labels).unwrap();
    let out = remove_highest_global(out, share, &group).unwrap();
    (out.keep, out.loss, out.grad.unwrap())
}

#[test]
fn global_removal_on_two_ranks_removes_what_one_process_removes_from_the_whole_batch() {
    // 2 x 8 rows, 5 classes; floor(0.25 x 16) = 4 of the 16 go: three rows of rank 1 clearly,
    // then one of two tied rows, row 3 of each rank (one process drops the lower index: rank 0's).
    let (b, c, share) = (8i64, 5i64, 0.25);
    let logits = Tensor::randn([2 * b, c], (Kind::Float, Device::Cpu)) * 0.5;
    let labels = Tensor::from_slice(&[0i64, 1, 2, 3, 4, 0, 1, 2, 0, 1, 2, 3, 4, 0, 1, 2]);
    let mut tied = logits.get(b + 3);
    tied.copy_(&logits.get(3));
    for (row, wrong) in [(b, 20.0), (b + 1, 15.0), (b + 2, 12.0), (3, 9.0), (b + 3, 9.0)] {
        let class = (labels.int64_value(&[row]) + 1) % c;
        let _ = logits.get(row).get(class).fill_(wrong);
    }
    let whole = CrossEntropy::with_removal(share)
        .loss_and_grad(&logits, &labels)
        .unwrap();
    let removed: Vec<i64> = Vec::try_from(whole.keep.logical_not().nonzero().squeeze_dim(1)).unwrap();
    assert_eq!(removed, [3, b, b + 1, b + 2], "one process's rule");
    let port = free_port().unwrap();
    let ranks: Vec<_> = (0..2)
        .map(|rank| {
            let env = Env {
                rank,
                world_size: 2,
                local_rank: rank,
                master_addr: "127.0.0.1".into(),
                master_port: port,
            };
            let at = rank as i64 * b;
            let (x, y) = (logits.narrow(0, at, b).copy(), labels.narrow(0, at, b).copy());
            std::thread::spawn(move || global_removal_rank(env, x, y, share))
        })
        .collect();
    let results: Vec<_> = ranks.into_iter().map(|h| h.join().unwrap()).collect();
    let keep = Tensor::cat(&[&results[0].0, &results[1].0], 0);
    assert!(keep.equal(&whole.keep), "keep {keep:?} vs one process {:?}", whole.keep);
    // The ranks' average loss and gradient (what DDP's averaging makes of them) are one
    // process's on the whole batch.
    let loss = (&results[0].1 + &results[1].1) / 2.0;
    assert!(
        loss.allclose(&whole.loss, 1e-6, 1e-7, false),
        "loss {loss:?} vs {:?}",
        whole.loss
    );
    let grad = Tensor::cat(&[&results[0].2, &results[1].2], 0) / 2.0;
    let whole_grad = whole.grad.unwrap();
    assert!(
        grad.allclose(&whole_grad, 1e-6, 1e-8, false),
        "gradient {grad:?} vs {whole_grad:?}"
    );
    // Each rank removing its own 2 highest would not have: rank 0 would drop row 3 and another.
    let local = CrossEntropy::with_removal(share)
        .forward_with_stats(&logits.narrow(0, 0, b), &labels.narrow(0, 0, b))
        .unwrap();
    assert_eq!(local.keep.logical_not().sum(Kind::Int64).int64_value(&[]), 2);
}

/// Mixed precision through the trainer's global removal: the gradient comes from
/// `loss_and_grad_f32` (as the trainer's steps take it) and stays f32 through the re-weighting
/// until the node scales it, so with f16 logits and `(loss * 65536).backward()` the gradient has
/// no more zeros than the f64 gradient times 65536 rounded to f16. From `loss_and_grad` (f16) it
/// had more than twice as many: every entry below f16's smallest subnormal before scaling.
#[test]
fn global_removal_keeps_f16_gradients_under_loss_scaling() {
    let env = Env {
        rank: 0,
        world_size: 1,
        local_rank: 0,
        master_addr: "127.0.0.1".into(),
        master_port: free_port().unwrap(),
    };
    let group = ProcessGroup::new(&env, Backend::Gloo, Duration::from_secs(20)).unwrap();
    let (b, c, share, scale) = (64i64, 4099i64, 0.25, 65536.0);
    tch::manual_seed(7);
    let logits = (Tensor::randn([b, c], (Kind::Float, Device::Cpu)) * 3.0).to_kind(Kind::Half);
    let labels = Tensor::randint(c, [b], (Kind::Int64, Device::Cpu));
    let x = logits.detach().set_requires_grad(true);
    let out = CrossEntropy::default().loss_and_grad_f32(&logits, &labels).unwrap();
    let out = remove_highest_global(out, share, &group).unwrap();
    (attach_gradient(&x, out).unwrap().loss * scale).backward();
    let whole = CrossEntropy::with_removal(share);
    let exact = reference::cross_entropy_f64(&logits, Targets::Index(&labels), &whole)
        .unwrap()
        .grad
        * scale;
    let zeros = |t: &Tensor| t.eq(0.0).sum(Kind::Int64).int64_value(&[]);
    let (got, expected) = (zeros(&x.grad()), zeros(&exact.to_kind(Kind::Half)));
    assert!(
        got <= expected,
        "{got} zero gradient entries, the f64 gradient rounded to f16 has {expected}"
    );
}

#[test]
fn a_two_rank_checkpoint_resumes_on_one_process() {
    let _one = serial();
    let dir = setup("resume");
    let config = write_config(&dir, "resume", "");
    let path = config.to_str().unwrap();
    let out = enlighten(&["train", "--config", path, "--nproc", "2", "--set", "run.max_steps=12"]);
    assert!(out.status.success(), "{}", text(&out.stderr));
    let ckpt = enlighten_trainer::train::load_checkpoint(&dir.join("runs/resume/checkpoints"))
        .unwrap()
        .unwrap();
    assert_eq!(ckpt.0.step, 12);
    assert_eq!(ckpt.0.layout.map(|l| l.global_batch), Some(32));
    // One process at 16 rows a step: epoch 1, 4 x 32 rows in, continues at step 16 + 8.
    let out = enlighten(&["train", "--config", path, "--resume"]);
    assert!(out.status.success(), "{}", text(&out.stderr));
    let s = summary(&dir, "resume");
    assert_eq!(
        (
            s.parallelism.world_size,
            s.parallelism.backend,
            s.parallelism.global_batch
        ),
        (1, None, 16)
    );
    assert_eq!(s.steps, 48);
    let steps: Vec<u64> = support::metrics(&dir, "resume").iter().map(|l| l.step).collect();
    let resumed = steps.iter().position(|&s| s >= 12).unwrap();
    assert!(
        steps[resumed] >= 24,
        "the first line after the resume is at step {}",
        steps[resumed]
    );
    assert!(s.test > 0.6, "test accuracy {}", s.test);
}

#[test]
fn compare_trains_every_run_on_two_processes_and_rank_0_reports() {
    let _one = serial();
    let dir = setup("compare");
    let config = write_config(&dir, "cmp", "");
    let path = config.to_str().unwrap();
    let args = [
        "compare",
        "--config",
        path,
        "--nproc",
        "2",
        "--strategies",
        "mixup,mixup-pause",
        "--seeds",
        "1",
    ];
    let out = enlighten(&args);
    let stdout = text(&out.stdout);
    assert!(out.status.success(), "{stdout}\n{}", text(&out.stderr));
    assert!(stdout.contains("| mixup-pause |"), "{stdout}");
    for run in ["cmp/mixup-s5", "cmp/mixup-pause-s5"] {
        let s = summary(&dir, run);
        assert_eq!((s.parallelism.world_size, s.parallelism.global_batch), (2, 32), "{run}");
    }
    assert!(dir.join("runs/cmp/report.md").exists());
    let rank1 = std::fs::read_to_string(dir.join("runs/cmp/logs/rank-1.log")).unwrap();
    assert!(
        !rank1.contains("report:"),
        "rank 1 trains but does not report:\n{rank1}"
    );
}

#[test]
fn a_failing_rank_stops_the_launched_job_with_its_log() {
    let dir = scratch("launch");
    let job = Job {
        program: "sh".into(),
        args: [
            "-c",
            "if [ \"$RANK\" = 1 ]; then echo \"rank $RANK of $WORLD_SIZE: no data\" >&2; exit 3; fi; sleep 60",
        ]
        .map(Into::into)
        .to_vec(),
        nproc: 3,
        log_dir: dir.clone(),
    };
    let started = Instant::now();
    let err = enlighten_trainer::processes::run(&job, None).unwrap_err();
    assert!(
        started.elapsed() < Duration::from_secs(10),
        "stopped after {:?}",
        started.elapsed()
    );
    let Error::Launch { rank, problem } = &err else {
        panic!("{err}");
    };
    assert_eq!(*rank, 1);
    assert!(problem.contains("exit status: 3"), "{problem}");
    assert!(problem.contains("rank 1 of 3: no data"), "{problem}");
    // Every rank got the torchrun variables; all of them exited.
    let ok = Job {
        args: ["-c", "echo $RANK $LOCAL_RANK $WORLD_SIZE $MASTER_ADDR $MASTER_PORT"]
            .map(Into::into)
            .to_vec(),
        ..job
    };
    enlighten_trainer::processes::run(&ok, None).unwrap();
    let log = std::fs::read_to_string(ok.log(2)).unwrap();
    let fields: Vec<&str> = log.split_whitespace().collect();
    assert_eq!(&fields[..4], ["2", "2", "3", "127.0.0.1"]);
    assert!(fields[4].parse::<u16>().unwrap() > 0);
}

#[test]
fn a_rank_that_fails_alone_stops_its_peer_within_the_timeout() {
    let _one = serial();
    let dir = setup("alone");
    let config = write_config(&dir, "alone", "");
    let port = free_port().unwrap().to_string();
    let started = Instant::now();
    // Two ranks started by hand, as torchrun would; rank 1 reads a folder that does not exist.
    let ranks: Vec<_> = (0..2)
        .map(|rank| {
            let mut cmd = Command::new(env!("CARGO_BIN_EXE_enlighten"));
            cmd.args(["train", "--config", config.to_str().unwrap()]);
            if rank == 1 {
                cmd.args(["--set", &format!("data.dir={}", dir.join("missing").display())]);
            }
            cmd.env("RANK", rank.to_string())
                .env("LOCAL_RANK", rank.to_string())
                .env("WORLD_SIZE", "2")
                .env("MASTER_ADDR", "127.0.0.1")
                .env("MASTER_PORT", &port)
                .env("OMP_NUM_THREADS", "1")
                .spawn_output()
        })
        .collect();
    let outputs: Vec<Output> = ranks.into_iter().map(|h| h.join().unwrap()).collect();
    // Gloo sees rank 1's connection close: rank 0 stops well within the 20 s timeout.
    assert!(
        started.elapsed() < Duration::from_secs(15),
        "took {:?}",
        started.elapsed()
    );
    assert!(!outputs[1].status.success());
    assert!(
        text(&outputs[1].stderr).contains("missing"),
        "{}",
        text(&outputs[1].stderr)
    );
    assert!(
        !outputs[0].status.success(),
        "rank 0 stopped with an error instead of hanging"
    );
    assert!(
        text(&outputs[0].stderr).contains("error"),
        "{}",
        text(&outputs[0].stderr)
    );
}

/// Runs a command on a thread, its output collected.
trait SpawnOutput {
    fn spawn_output(&mut self) -> std::thread::JoinHandle<Output>;
}

impl SpawnOutput for Command {
    fn spawn_output(&mut self) -> std::thread::JoinHandle<Output> {
        let child = self
            .stdout(std::process::Stdio::piped())
            .stderr(std::process::Stdio::piped())
            .spawn()
            .unwrap();
        std::thread::spawn(move || child.wait_with_output().unwrap())
    }
}

/// `enlighten <args>` started in the background, its output collected on a thread.
fn start(args: &[&str]) -> (u32, std::thread::JoinHandle<Output>) {
    let child = Command::new(env!("CARGO_BIN_EXE_enlighten"))
        .args(args)
        .env("OMP_NUM_THREADS", "1")
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    let pid = child.id();
    (pid, std::thread::spawn(move || child.wait_with_output().unwrap()))
}

#[test]
fn sigterm_to_the_launcher_checkpoints_every_rank_and_resume_gives_the_straight_digest() {
    let _one = serial();
    let dir = setup("sigterm");
    let straight = write_config(&dir, "straight", "checkpoint_every = 1000");
    let preempted = write_config(&dir, "preempted", "checkpoint_every = 1000");
    let out = enlighten(&["train", "--config", straight.to_str().unwrap(), "--nproc", "2"]);
    assert!(out.status.success(), "{}", text(&out.stderr));
    let digest = line(&text(&out.stdout), "parameters ").to_string();
    let (pid, job) = start(&["train", "--config", preempted.to_str().unwrap(), "--nproc", "2"]);
    // SIGTERM once the first metrics line is written (after step 1 of 24), as a scheduler would.
    let metrics = dir.join("runs/preempted/metrics.jsonl");
    let started = Instant::now();
    while std::fs::read_to_string(&metrics).map_or(true, |m| m.is_empty()) {
        assert!(started.elapsed() < Duration::from_secs(60), "no metrics line");
        std::thread::sleep(Duration::from_millis(20));
    }
    // SAFETY: kill(2) on the launcher this test started.
    unsafe { libc::kill(pid as libc::pid_t, libc::SIGTERM) };
    let out = job.join().unwrap();
    let stderr = text(&out.stderr);
    assert_eq!(out.status.code(), Some(75), "the preempted status; stderr:\n{stderr}");
    assert!(stderr.contains("preempted (SIGTERM)"), "{stderr}");
    let rank1 = std::fs::read_to_string(dir.join("runs/preempted/logs/rank-1.log")).unwrap();
    assert!(rank1.contains("preempted (SIGTERM)"), "rank 1 was told: {rank1}");
    let state = enlighten_trainer::train::load_checkpoint(&dir.join("runs/preempted/checkpoints"))
        .unwrap()
        .expect("a checkpoint at the stop")
        .0;
    assert!(state.step < 24, "stopped mid-run at step {}", state.step);
    let out = enlighten(&[
        "train",
        "--config",
        preempted.to_str().unwrap(),
        "--nproc",
        "2",
        "--resume",
    ]);
    assert!(out.status.success(), "{}", text(&out.stderr));
    assert_eq!(
        line(&text(&out.stdout), "parameters "),
        digest,
        "preempted + resumed = straight"
    );
}

#[test]
fn a_master_port_that_never_answers_or_is_closed_fails_within_the_timeout_naming_rank_0() {
    // A port that accepts connections and never answers (the store's first reply never comes).
    let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let silent = listener.local_addr().unwrap().port();
    std::thread::spawn(move || {
        let held: Vec<_> = listener.incoming().collect();
        drop(held);
    });
    let closed = free_port().unwrap();
    for port in [silent, closed] {
        let env = Env {
            rank: 1,
            world_size: 2,
            local_rank: 1,
            master_addr: "127.0.0.1".into(),
            master_port: port,
        };
        let started = Instant::now();
        let (tx, rx) = std::sync::mpsc::channel();
        std::thread::spawn(move || {
            let _ = tx.send(ProcessGroup::new(&env, Backend::Gloo, Duration::from_secs(2)).map(|_| ()));
        });
        let outcome = rx
            .recv_timeout(Duration::from_secs(30))
            .unwrap_or_else(|_| panic!("the rendezvous at port {port} hung"));
        let e = outcome.expect_err("no group without rank 0");
        assert!(
            started.elapsed() < Duration::from_secs(6),
            "took {:?}",
            started.elapsed()
        );
        let message = e.to_string();
        assert!(message.contains("rank 0"), "names the rank waited on: {message}");
        assert_eq!(message.lines().count(), 1, "one line: {message}");
    }
}

#[test]
fn a_stopped_rank_is_named_by_the_launcher() {
    let dir = scratch("stopped");
    let job = Job {
        program: "sh".into(),
        args: [
            "-c",
            "if [ \"$RANK\" = 1 ]; then kill -STOP $$; fi; sleep 1; echo timed out >&2; exit 4",
        ]
        .map(Into::into)
        .to_vec(),
        nproc: 2,
        log_dir: dir,
    };
    let err = enlighten_trainer::processes::run(&job, None).unwrap_err();
    let Error::Launch { rank, problem } = &err else {
        panic!("{err}");
    };
    assert_eq!(*rank, 0, "rank 0 failed first");
    assert!(problem.contains("rank 1 is stopped"), "{problem}");
}

#[test]
fn ranks_with_different_configurations_stop_at_start_up_naming_the_setting() {
    let _one = serial();
    let dir = setup("disagree");
    let config = write_config(&dir, "disagree", "");
    let port = free_port().unwrap().to_string();
    let started = Instant::now();
    let ranks: Vec<_> = (0..2)
        .map(|rank| {
            let mut cmd = Command::new(env!("CARGO_BIN_EXE_enlighten"));
            cmd.args(["train", "--config", config.to_str().unwrap()]);
            if rank == 1 {
                cmd.args(["--set", "data.batch_size=8"]);
            }
            cmd.env("RANK", rank.to_string())
                .env("LOCAL_RANK", rank.to_string())
                .env("WORLD_SIZE", "2")
                .env("MASTER_ADDR", "127.0.0.1")
                .env("MASTER_PORT", &port)
                .env("OMP_NUM_THREADS", "1")
                .spawn_output()
        })
        .collect();
    let outputs: Vec<Output> = ranks.into_iter().map(|h| h.join().unwrap()).collect();
    assert!(
        started.elapsed() < Duration::from_secs(15),
        "took {:?}",
        started.elapsed()
    );
    for (rank, out) in outputs.iter().enumerate() {
        let stderr = text(&out.stderr);
        assert!(!out.status.success(), "rank {rank} trained");
        assert!(
            stderr.contains("rank 1 differs from rank 0: data.batch_size = 8 on rank 1, 16 on rank 0"),
            "rank {rank}: {stderr}"
        );
    }
}

/// What the chaos test does to a running job.
#[derive(Debug, Clone, Copy, PartialEq)]
enum Fault {
    /// SIGKILL to the launcher's whole process group (the launcher and every rank at once).
    KillGroup,
    /// SIGKILL to the group while rank 0 writes a checkpoint (its `ckpt.tmp` folder exists).
    KillGroupMidWrite,
    /// SIGTERM to the launcher, as a scheduler preempting the job.
    Preempt,
    /// SIGTERM to rank 1 alone, as a scheduler preempting one process: the job stops as preempted.
    PreemptRank1,
}

/// SplitMix64: the test's "random" points, the same on every run of the test.
fn split_mix(state: &mut u64) -> u64 {
    *state = state.wrapping_add(0x9e37_79b9_7f4a_7c15);
    let mut z = *state;
    z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
    z ^ (z >> 31)
}

/// The highest step in a run's metrics.jsonl so far (a line being written is skipped).
fn last_logged_step(metrics: &Path) -> Option<u64> {
    let text = std::fs::read_to_string(metrics).ok()?;
    text.lines()
        .filter_map(|l| serde_json::from_str::<serde_json::Value>(l).ok())
        .filter_map(|v| v.get("step")?.as_u64())
        .max()
}

/// The pid of rank `rank` of the job whose process group is `group` (from /proc: its group and
/// the `RANK` the launcher gave it).
fn rank_pid(group: libc::pid_t, rank: usize) -> Option<libc::pid_t> {
    let wanted = format!("RANK={rank}");
    std::fs::read_dir("/proc").ok()?.flatten().find_map(|entry| {
        let pid: libc::pid_t = entry.file_name().to_str()?.parse().ok()?;
        // SAFETY: getpgid(2) reads another process's group; a vanished pid gives -1.
        let in_group = unsafe { libc::getpgid(pid) } == group && pid != group;
        let environ = std::fs::read(entry.path().join("environ")).ok()?;
        let has_rank = environ.split(|&b| b == 0).any(|v| v == wanted.as_bytes());
        (in_group && has_rank).then_some(pid)
    })
}

/// `enlighten <args>` in a process group of its own (its ranks join it), so that the whole job
/// can be killed at once as a node failure would.
fn start_group(args: &[&str]) -> std::process::Child {
    use std::os::unix::process::CommandExt;
    Command::new(env!("CARGO_BIN_EXE_enlighten"))
        .args(args)
        .env("OMP_NUM_THREADS", "1")
        .process_group(0)
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap()
}

/// Starts `args`, waits until the job logged step `step` and a step beyond any logged before it
/// started (or ended), then applies `fault`; true when the fault landed as meant (a mid-write
/// kill left `ckpt.tmp` behind), with the job's stderr.
fn inflict(args: &[&str], fault: Fault, step: u64, run_dir: &Path) -> (bool, String) {
    let (metrics, tmp) = (run_dir.join("metrics.jsonl"), run_dir.join("checkpoints/ckpt.tmp"));
    let step = step.max(last_logged_step(&metrics).map_or(0, |s| s + 1));
    let mut job = start_group(args);
    let started = Instant::now();
    let running = |job: &mut std::process::Child| job.try_wait().unwrap().is_none();
    while running(&mut job) && last_logged_step(&metrics).is_none_or(|s| s < step) {
        assert!(started.elapsed() < Duration::from_secs(60), "step {step} never came");
        std::thread::sleep(Duration::from_millis(2));
    }
    if fault == Fault::KillGroupMidWrite {
        while running(&mut job) && !tmp.exists() {
            std::thread::yield_now();
        }
    }
    let pid = job.id() as libc::pid_t;
    let (target, signal) = match fault {
        Fault::Preempt => (pid, libc::SIGTERM),
        Fault::PreemptRank1 => (rank_pid(pid, 1).expect("rank 1 is running"), libc::SIGTERM),
        Fault::KillGroup | Fault::KillGroupMidWrite => (-pid, libc::SIGKILL),
    };
    // SAFETY: kill(2) on the job this test started: its process group (its pgid is its pid),
    // the launcher alone (which forwards SIGTERM to its ranks), or one of its ranks.
    unsafe { libc::kill(target, signal) };
    let out = job.wait_with_output().unwrap();
    let stderr = text(&out.stderr);
    let landed = match fault {
        Fault::Preempt | Fault::PreemptRank1 => {
            assert_eq!(out.status.code(), Some(75), "preempted; stderr:\n{stderr}");
            true
        }
        Fault::KillGroup => true,
        Fault::KillGroupMidWrite => tmp.exists(),
    };
    (landed, stderr)
}

#[test]
fn kill_9_and_sigterm_at_random_points_then_resume_give_the_straight_digest() {
    let _one = serial();
    let dir = setup("chaos");
    let every_step = "checkpoint_every = 1";
    let straight = write_config(&dir, "straight", every_step);
    let chaos = write_config(&dir, "chaos", every_step);
    let out = enlighten(&["train", "--config", straight.to_str().unwrap(), "--nproc", "2"]);
    assert!(out.status.success(), "{}", text(&out.stderr));
    // Four faults in a seeded order at seeded steps of the 24.
    let mut seed = 20;
    let mut faults = [
        Fault::KillGroup,
        Fault::Preempt,
        Fault::KillGroupMidWrite,
        Fault::PreemptRank1,
    ];
    for i in (1..faults.len()).rev() {
        faults.swap(i, (split_mix(&mut seed) % (i as u64 + 1)) as usize);
    }
    let mut steps: Vec<u64> = faults.iter().map(|_| 2 + split_mix(&mut seed) % 18).collect();
    steps.sort_unstable();
    let path = chaos.to_str().unwrap();
    let (fresh, resume) = (
        ["train", "--config", path, "--nproc", "2"],
        ["train", "--config", path, "--nproc", "2", "--resume"],
    );
    let run_dir = dir.join("runs/chaos");
    let mut first = true;
    for (fault, step) in faults.into_iter().zip(steps) {
        // A mid-write kill that missed the write (the job was between writes) is tried again.
        for attempt in 0.. {
            assert!(attempt < 8, "no kill landed inside a checkpoint write");
            let args = if first { &fresh[..] } else { &resume[..] };
            first = false;
            let (landed, stderr) = inflict(args, fault, step, &run_dir);
            eprintln!("{fault:?} at step {step}: landed {landed}\n{stderr}");
            if landed {
                break;
            }
        }
    }
    let out = enlighten(&resume);
    assert!(out.status.success(), "{}", text(&out.stderr));
    assert_eq!(summary(&dir, "chaos").steps, 24);
    assert_eq!(
        summary(&dir, "chaos").parameter_digest,
        summary(&dir, "straight").parameter_digest,
        "killed, preempted and resumed = straight"
    );
}

/// `enlighten train --config <config> <extra...>` as rank `rank` of `world`, started as torchrun
/// starts its ranks: the variables set, no `--nproc`.
fn torchrun_rank(config: &Path, rank: usize, world: usize, port: u16, extra: &[&str]) -> std::process::Child {
    Command::new(env!("CARGO_BIN_EXE_enlighten"))
        .args(["train", "--config", config.to_str().unwrap()])
        .args(extra)
        .env("RANK", rank.to_string())
        .env("LOCAL_RANK", rank.to_string())
        .env("WORLD_SIZE", world.to_string())
        .env("MASTER_ADDR", "127.0.0.1")
        .env("MASTER_PORT", port.to_string())
        .env("OMP_NUM_THREADS", "1")
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap()
}

#[test]
fn a_rank_stopped_mid_run_is_named_by_rank_0_within_about_the_timeout_under_torchrun() {
    let _one = serial();
    let dir = setup("sigstop");
    let config = write_config(&dir, "sigstop", "");
    let port = free_port().unwrap();
    let timeout = ["--set", "run.collective_timeout_s=4"];
    let rank0 = torchrun_rank(&config, 0, 2, port, &timeout);
    let mut rank1 = torchrun_rank(&config, 1, 2, port, &timeout);
    let metrics = dir.join("runs/sigstop/metrics.jsonl");
    let started = Instant::now();
    while last_logged_step(&metrics).is_none() {
        assert!(started.elapsed() < Duration::from_secs(60), "no metrics line");
        std::thread::sleep(Duration::from_millis(10));
    }
    // SAFETY: kill(2) on a process this test started and has not reaped.
    unsafe { libc::kill(rank1.id() as libc::pid_t, libc::SIGSTOP) };
    let stopped = Instant::now();
    let out = rank0.wait_with_output().unwrap();
    let waited = stopped.elapsed();
    rank1.kill().unwrap();
    rank1.wait().unwrap();
    let stderr = text(&out.stderr);
    assert!(!out.status.success(), "rank 0 trained on: {stderr}");
    assert!(
        stderr.contains("rank 1 (no heartbeat") && stderr.contains("did not answer within 4 s"),
        "rank 0 names the stopped rank: {stderr}"
    );
    // The 4 s timeout, two heartbeats (1 s each) to tell a stopped rank, and a loaded machine.
    assert!(waited < Duration::from_secs(12), "rank 0 stopped after {waited:?}");
}

#[test]
fn ranks_with_different_world_sizes_stop_at_start_up_naming_world_size() {
    for sizes in [[2, 3], [3, 2]] {
        let port = free_port().unwrap();
        let started = Instant::now();
        let (tx, rx) = std::sync::mpsc::channel();
        for (rank, world_size) in sizes.into_iter().enumerate() {
            let env = Env {
                rank,
                world_size,
                local_rank: rank,
                master_addr: "127.0.0.1".into(),
                master_port: port,
            };
            let tx = tx.clone();
            std::thread::spawn(move || {
                let joined = ProcessGroup::new(&env, Backend::Gloo, Duration::from_secs(20));
                let _ = tx.send((rank, joined.map(|_| ())));
            });
        }
        let expected = format!("WORLD_SIZE = {} on rank 1, {} on rank 0", sizes[1], sizes[0]);
        for _ in 0..2 {
            let (rank, joined) = rx.recv_timeout(Duration::from_secs(40)).expect("the rendezvous hung");
            let message = joined.expect_err("no group of different sizes").to_string();
            assert!(message.contains(&expected), "rank {rank}: {message}");
            assert_eq!(message.lines().count(), 1, "one line: {message}");
        }
        // Well before the 20 s timeout: the difference is seen as soon as both ranks are there.
        assert!(
            started.elapsed() < Duration::from_secs(5),
            "took {:?}",
            started.elapsed()
        );
    }
}

#[test]
fn a_lone_non_zero_rank_fails_after_one_timeout_with_one_line() {
    let dir = setup("lone");
    let config = write_config(&dir, "lone", "");
    // Nobody serves this port: rank 0 was never started.
    let port = free_port().unwrap();
    let started = Instant::now();
    let out = torchrun_rank(&config, 1, 2, port, &["--set", "run.collective_timeout_s=4"])
        .wait_with_output()
        .unwrap();
    let took = started.elapsed();
    let stderr = text(&out.stderr);
    assert!(!out.status.success(), "{stderr}");
    let lines: Vec<&str> = stderr.lines().filter(|l| !l.trim().is_empty()).collect();
    assert_eq!(lines.len(), 1, "one line: {stderr}");
    assert!(lines[0].contains("rank 0"), "names rank 0: {stderr}");
    assert!(
        took >= Duration::from_secs(4) && took < Duration::from_secs(7),
        "one 4 s timeout, not two: {took:?}"
    );
}

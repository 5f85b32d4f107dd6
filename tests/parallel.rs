//! Data parallelism on the CPU over Gloo and the loopback interface: `enlighten train --nproc 2`
//! learns with both ranks ending bit-identical and ending the EP at the same step, global
//! High-Loss Removal on two ranks removes exactly what one process removes from the
//! concatenated batch, a two-rank checkpoint resumes on one process, `compare --nproc 2` trains
//! each run on both ranks, and a rank that fails alone stops the job with its error within
//! seconds.

use std::path::{Path, PathBuf};
use std::process::{Command, Output};
use std::time::{Duration, Instant};

use enlighten::distributed::{free_port, Backend, Env, ProcessGroup};
use enlighten::launch::Job;
use enlighten::ops::loss::{cross_entropy, CrossEntropy, Targets};
use enlighten::train::{remove_highest_global, Summary};
use enlighten::Error;
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
    let out = cross_entropy(&logits, Targets::Index(&labels), &CrossEntropy::default(), true).unwrap();
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
    let whole = cross_entropy(
        &logits,
        Targets::Index(&labels),
        &CrossEntropy::with_removal(share),
        true,
    )
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
    let local = cross_entropy(
        &logits.narrow(0, 0, b),
        Targets::Index(&labels.narrow(0, 0, b)),
        &CrossEntropy::with_removal(share),
        false,
    )
    .unwrap();
    assert_eq!(local.keep.logical_not().sum(Kind::Int64).int64_value(&[]), 2);
}

#[test]
fn a_two_rank_checkpoint_resumes_on_one_process() {
    let _one = serial();
    let dir = setup("resume");
    let config = write_config(&dir, "resume", "");
    let path = config.to_str().unwrap();
    let out = enlighten(&["train", "--config", path, "--nproc", "2", "--set", "run.max_steps=12"]);
    assert!(out.status.success(), "{}", text(&out.stderr));
    let ckpt = enlighten::train::load_checkpoint(&dir.join("runs/resume/checkpoints"))
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
    let err = enlighten::launch::run(&job, None).unwrap_err();
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
    enlighten::launch::run(&ok, None).unwrap();
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

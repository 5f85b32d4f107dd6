//! What each rank runs. A scenario returns Err with what went wrong (exit code 1); values the
//! launcher checks across ranks are printed as `key=value` lines.

use std::time::{Duration, Instant};

use enlighten_trainer::distributed::{broadcast_parameters, Backend, Env, GradientBuckets, ProcessGroup};
use enlighten_trainer::Error;
use tch::{Device, Kind, Tensor};

/// The exit code of the rank that leaves early in `exit_early`.
pub const EARLY_EXIT: i32 = 3;

type Outcome = Result<(), String>;

pub fn run(scenario: &str) -> i32 {
    // Ranks share two cores; libtorch's own thread pool would only compete.
    tch::set_num_threads(1);
    let result = match scenario {
        "collectives" => collectives(),
        "buckets" => buckets(),
        "exit_early" => exit_early(),
        "silent_peer" => silent_peer(),
        "missing_rank" => missing_rank(),
        other => Err(format!("unknown scenario {other}")),
    };
    match result {
        Ok(()) => 0,
        Err(message) => {
            eprintln!("{scenario}: {message}");
            1
        }
    }
}

fn env() -> Result<Env, String> {
    Env::from_env()
        .map_err(|e| e.to_string())?
        .ok_or_else(|| "WORLD_SIZE is not set".to_string())
}

fn group(timeout: Duration) -> Result<ProcessGroup, String> {
    ProcessGroup::new(&env()?, Backend::Gloo, timeout).map_err(|e| e.to_string())
}

fn ensure(condition: bool, what: impl FnOnce() -> String) -> Outcome {
    if condition {
        Ok(())
    } else {
        Err(what())
    }
}

fn values(tensor: &Tensor) -> Vec<f64> {
    Vec::<f64>::try_from(tensor.to_kind(Kind::Double).flatten(0, -1)).unwrap_or_default()
}

fn text(e: Error) -> String {
    e.to_string()
}

fn collectives() -> Outcome {
    let pg = group(Duration::from_secs(15))?;
    let r = pg.rank() as f64;
    ensure(pg.world_size() == 3 && pg.backend() == Backend::Gloo, || {
        "a 3-rank Gloo group".into()
    })?;
    // Two tensors of different dtypes in one call; 1 + 2 + 3 = 6.
    let a = Tensor::full([4], r + 1.0, (Kind::Float, Device::Cpu));
    let b = Tensor::arange(3, (Kind::Int64, Device::Cpu)) * (pg.rank() as i64 + 1);
    pg.all_reduce_sum(&[&a, &b]).and_then(|w| w.wait()).map_err(text)?;
    ensure(values(&a) == [6.0; 4], || {
        format!("all_reduce_sum f32: {:?}", values(&a))
    })?;
    ensure(values(&b) == [0.0, 6.0, 12.0], || {
        format!("all_reduce_sum i64: {:?}", values(&b))
    })?;

    let row = Tensor::from_slice(&[r * 10.0, r * 10.0 + 1.0]).view([1, 2]);
    let rows = pg.all_gather(&row).map_err(text)?;
    ensure(rows.size() == [3, 2], || format!("all_gather shape {:?}", rows.size()))?;
    ensure(values(&rows) == [0.0, 1.0, 10.0, 11.0, 20.0, 21.0], || {
        format!("all_gather {:?}", values(&rows))
    })?;
    let scalars = pg
        .all_gather(&Tensor::scalar_tensor(r, (Kind::Float, Device::Cpu)))
        .map_err(text)?;
    ensure(values(&scalars) == [0.0, 1.0, 2.0], || {
        format!("scalar all_gather {:?}", values(&scalars))
    })?;

    let t = Tensor::full([5], r, (Kind::Float, Device::Cpu));
    pg.broadcast(&t, 1).map_err(text)?;
    ensure(values(&t) == [1.0; 5], || format!("broadcast from 1: {:?}", values(&t)))?;
    refusals(&pg)?;
    // The group is Send: the last collective runs on another thread.
    std::thread::spawn(move || pg.barrier().map_err(text))
        .join()
        .map_err(|_| "the barrier's thread panicked".to_string())?
}

/// Mistakes every rank makes or sees alike, so the group stays in step: each is an error on
/// every rank, and the group still works afterwards.
fn refusals(pg: &ProcessGroup) -> Outcome {
    let rank = pg.rank() as i64;
    match pg.all_gather(&Tensor::zeros([rank + 1], (Kind::Float, Device::Cpu))) {
        Err(Error::Value { arg: "tensor", got, .. }) if got.contains("rank 1") && got.contains("[2]") => {}
        other => return Err(format!("shapes differing by rank: {other:?}")),
    }
    let kind = if rank == 2 { Kind::Double } else { Kind::Float };
    match pg.broadcast(&Tensor::zeros([2], (kind, Device::Cpu)), 0) {
        Err(Error::Value { arg: "tensor", got, .. }) if got.contains("rank 2") && got.contains("Double") => {}
        other => return Err(format!("dtypes differing by rank: {other:?}")),
    }
    let strided = Tensor::zeros([2, 3], (Kind::Float, Device::Cpu)).tr();
    match pg.all_reduce_sum(&[&strided]) {
        Err(Error::NotContiguous { arg: "tensors", .. }) => {}
        Err(other) => return Err(format!("a transposed tensor: {other}")),
        Ok(_) => return Err("a transposed tensor was accepted".into()),
    }
    match pg.broadcast(&Tensor::zeros([1], (Kind::Float, Device::Cpu)), 3) {
        Err(Error::Value { arg: "root", .. }) => Ok(()),
        other => Err(format!("root 3 of 3 ranks: {other:?}")),
    }
}

const SHAPES: [&[i64]; 6] = [&[3, 4], &[4], &[5, 2], &[7], &[2, 2, 2], &[6]];
/// Rank 1 computes no gradient for this parameter; rank 0 does.
const PARTLY_UNUSED: usize = 1;
/// No rank computes a gradient for this one.
const UNUSED: usize = 4;

/// Seeded tensors of SHAPES plus one f64 tensor (its own bucket: a dtype change).
fn tensors(seed: i64) -> Vec<Tensor> {
    tch::manual_seed(seed);
    let mut out: Vec<Tensor> = SHAPES
        .iter()
        .map(|s| Tensor::randn(*s, (Kind::Float, Device::Cpu)))
        .collect();
    out.push(Tensor::randn([3], (Kind::Double, Device::Cpu)));
    out
}

fn buckets() -> Outcome {
    let pg = group(Duration::from_secs(15))?;
    let rank = pg.rank();
    let params: Vec<Tensor> = tensors(rank as i64)
        .into_iter()
        .map(|p| p.set_requires_grad(true))
        .collect();
    // With an integer buffer (as batch norm's step counter): a bucket of its own.
    let counter = Tensor::from_slice(&[7 * rank as i64 + 3]);
    let mut state: Vec<Tensor> = params.iter().map(Tensor::shallow_clone).collect();
    state.push(counter.shallow_clone());
    broadcast_parameters(&pg, &state).map_err(text)?;
    for (param, expected) in params.iter().zip(tensors(0)) {
        ensure(param.equal(&expected), || {
            "broadcast_parameters: not rank 0's values".into()
        })?;
    }
    ensure(counter.int64_value(&[0]) == 3, || {
        format!("broadcast counter {counter:?}")
    })?;
    // 32 bytes: four buckets over these ~40 numbers: [6] (f64), [5, 4], [3, 2], [1, 0].
    let mut buckets =
        GradientBuckets::with_bucket_bytes(params.iter().map(Tensor::shallow_clone).collect(), 32).map_err(text)?;
    let layout = buckets.buckets();
    ensure(layout == [vec![6], vec![5, 4], vec![3, 2], vec![1, 0]], || {
        format!("bucket layout {layout:?}")
    })?;
    for step in 0..2 {
        backward(&params, rank, step);
        buckets.average(&pg).map_err(text)?;
        expect_mean(&params, step)?;
    }
    println!("grad_bits={:016x}", grad_bits(&params));
    mismatched_layout(&pg)
}

/// Gradients from seed (100 + 10 step + rank), through a real backward pass; the unused
/// parameters left out of the loss.
fn backward(params: &[Tensor], rank: usize, step: i64) {
    for param in params {
        let mut param = param.shallow_clone();
        param.zero_grad();
    }
    let grads = tensors(100 + 10 * step + rank as i64);
    let loss = params
        .iter()
        .zip(&grads)
        .enumerate()
        .filter(|(i, _)| *i != UNUSED && !(*i == PARTLY_UNUSED && rank == 1))
        .map(|(_, (p, g))| (p * g).sum(Kind::Double))
        .fold(Tensor::zeros([], (Kind::Double, Device::Cpu)), |acc, x| acc + x);
    loss.backward();
}

/// The mean of both ranks' gradients, bit for bit: (g0 + g1) / 2 rounds the same here as in
/// Gloo's sum followed by the division.
fn expect_mean(params: &[Tensor], step: i64) -> Outcome {
    let (g0, g1) = (tensors(100 + 10 * step), tensors(101 + 10 * step));
    for (i, param) in params.iter().enumerate() {
        let grad = param.grad();
        let expected = match i {
            UNUSED => {
                ensure(!grad.defined(), || "a parameter no rank used got a gradient".into())?;
                continue;
            }
            PARTLY_UNUSED => &g0[i] / 2.0,
            _ => (&g0[i] + &g1[i]) / 2.0,
        };
        ensure(grad.defined() && grad.equal(&expected), || {
            format!("step {step}: parameter {i}: {grad:?}")
        })?;
    }
    Ok(())
}

fn grad_bits(params: &[Tensor]) -> u64 {
    let mut hash: u64 = 0xcbf2_9ce4_8422_2325;
    for grad in params.iter().map(Tensor::grad).filter(Tensor::defined) {
        let bytes = Vec::<u8>::try_from(grad.view_dtype(Kind::Uint8).flatten(0, -1)).unwrap_or_default();
        for byte in bytes {
            hash = (hash ^ u64::from(byte)).wrapping_mul(0x0100_0000_01b3);
        }
    }
    hash
}

/// Rank 1 holds one parameter more: the first average is an error on both ranks.
fn mismatched_layout(pg: &ProcessGroup) -> Outcome {
    let mut params = vec![Tensor::zeros([4], (Kind::Float, Device::Cpu))];
    if pg.rank() == 1 {
        params.push(Tensor::zeros([2], (Kind::Float, Device::Cpu)));
    }
    let mut buckets = GradientBuckets::new(params).map_err(text)?;
    match buckets.average(pg) {
        Err(Error::Value { arg: "params", got, .. }) if got.contains("rank 1") => Ok(()),
        other => Err(format!("parameter lists differing by rank: {other:?}")),
    }
}

/// Prints when and how the collective failed, for the launcher to check.
fn report_failure(start: Instant, result: Result<(), Error>) -> Outcome {
    match result {
        Ok(()) => Err("the collective succeeded without its peer".into()),
        Err(e) => {
            println!("error_after_ms={}", start.elapsed().as_millis());
            println!("error={e}");
            Ok(())
        }
    }
}

/// Rank 1 dies after joining (no destructors, as in a crash); rank 0's all-reduce must fail.
fn exit_early() -> Outcome {
    let pg = group(Duration::from_secs(3))?;
    if pg.rank() == 1 {
        std::process::exit(EARLY_EXIT);
    }
    std::thread::sleep(Duration::from_millis(300));
    let t = Tensor::ones([4], (Kind::Float, Device::Cpu));
    let start = Instant::now();
    report_failure(start, pg.all_reduce_sum(&[&t]).and_then(|w| w.wait()))
}

/// Rank 1 stays alive but never joins the collective; rank 0 must time out (2 s).
fn silent_peer() -> Outcome {
    let pg = group(Duration::from_secs(2))?;
    if pg.rank() == 1 {
        std::thread::sleep(Duration::from_secs(5));
        return Ok(());
    }
    let t = Tensor::ones([4], (Kind::Float, Device::Cpu));
    let start = Instant::now();
    report_failure(start, pg.all_reduce_sum(&[&t]).and_then(|w| w.wait()))
}

/// Only rank 0 of two is started: the rendezvous must give up after the timeout (2 s).
fn missing_rank() -> Outcome {
    let env = env()?;
    let start = Instant::now();
    let result = ProcessGroup::new(&env, Backend::Gloo, Duration::from_secs(2)).map(drop);
    report_failure(start, result)
}

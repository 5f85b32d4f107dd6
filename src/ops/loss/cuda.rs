//! Launches of kernels/loss.cu. Argument order follows each kernel's parameter list.

use tch::{Kind, Tensor};

use super::{CeArgs, CrossEntropy, LossOutput};
use crate::cuda::constants::{CE_SCRATCH_BYTES, MSE_MAX_THREADS, RADIX_BITS, SELECT_STATE_LEN};
use crate::cuda::{max_shared_per_block, pack_len, packable, row_lanes, Grid, Kernel, Launch, BLOCK};
use crate::error::{Error, Result};
use crate::ops::mixup::Lambda;

const SELECT_THREADS: u32 = 1024;
/// Up to this many rows one block selects (loss_select); above, the multi-block path runs.
const SINGLE_BLOCK_MAX: i64 = 8192;
/// Elements of a row one block of mse_forward sums: longer rows are split over several blocks.
const MSE_CHUNK: i64 = 16384;
/// Rows per block in the multi-block marking pass.
const MARK_CHUNK: i64 = 4096;
/// Blocks of the histogram passes (grid-stride, so any count is valid).
const HIST_BLOCKS: i64 = 1024;

/// The variant of a loss kernel family for the input's dtype and the gradient's: `family`
/// is `[f32, f16, bf16]` (gradient in the input's dtype), `g32_family` `[f16, bf16]` with an f32
/// gradient (half inputs under autograd, see the loss module's docs).
fn loss_kernel(input: Kind, grad: Option<&Tensor>, family: [Kernel; 3], g32_family: [Kernel; 2]) -> Kernel {
    match (input, grad.map(Tensor::kind)) {
        (Kind::Half, Some(Kind::Float)) => g32_family[0],
        (Kind::BFloat16, Some(Kind::Float)) => g32_family[1],
        _ => Kernel::for_dtype(input, family),
    }
}

/// Threads per row: about four elements each, a whole number of warps, at most 1024.
fn row_threads(row_len: i64) -> u32 {
    ((row_len.max(1) as u64).div_ceil(4).next_power_of_two()).clamp(32, 1024) as u32
}

/// Rows of at most this many packs get a team of lanes within a warp in ce_forward, about a lane
/// a pack up to 32 (up to 1024 f32 or 2048 f16/bf16 classes), [`CE_TEAM_BLOCK`] threads a block:
/// a block-wide reduction per short row costs more than the row's bytes, and a warp on a row of a
/// few packs would leave most of its lanes idle. Longer rows get a block each.
const CE_TEAM_MAX_PACKS: i64 = 256;
const CE_TEAM_BLOCK: u32 = 256;

/// How ce_forward spreads rows: `lanes` threads a row within a warp (`teams` rows a block), or a
/// block a row (`lanes` 0).
struct RowTeams {
    lanes: u32,
    teams: i64,
    threads: u32,
}

impl RowTeams {
    fn of(packs: i64, c: i64) -> RowTeams {
        if packs <= CE_TEAM_MAX_PACKS {
            let lanes = row_lanes(packs, 32);
            RowTeams {
                lanes,
                teams: i64::from(CE_TEAM_BLOCK / lanes),
                threads: CE_TEAM_BLOCK,
            }
        } else {
            RowTeams {
                lanes: 0,
                teams: 1,
                threads: row_threads(c),
            }
        }
    }
}

/// ce_forward's shared memory: its reduction scratch, then for each team the packs of its row it
/// keeps between the statistics pass and the gradient pass (kernels/loss.cu, `Staging`).
struct Stage {
    /// Packs of a row kept in shared memory (the row's first ones; 0 without a gradient).
    packs: i64,
    shared_bytes: u32,
}

impl Stage {
    /// As many of the `c / n` packs of a `c`-column row as the device's shared memory holds
    /// beside the scratch, for each of `teams` rows (`n` divides `c` when `vectorized`).
    fn of(logits: &Tensor, c: i64, vectorized: bool, with_grad: bool, teams: i64) -> Result<Stage> {
        let scratch = CE_SCRATCH_BYTES as u32;
        if !with_grad {
            return Ok(Stage {
                packs: 0,
                shared_bytes: scratch,
            });
        }
        let n = if vectorized { pack_len(logits.kind()) } else { 1 };
        let pack_bytes = n * logits.kind().elt_size_in_bytes() as i64;
        let room = i64::from(max_shared_per_block(logits)?.saturating_sub(scratch)) / (pack_bytes * teams);
        let packs = (c / n).min(room);
        Ok(Stage {
            packs,
            shared_bytes: scratch + (teams * packs * pack_bytes) as u32,
        })
    }
}

/// Buffers the selection kernel writes: threshold and mean share one allocation.
struct SelectOut {
    keep: Tensor,
    scalars: Tensor,
    correct: Tensor,
}

impl SelectOut {
    fn new(b: i64, like: &Tensor) -> SelectOut {
        let dev = like.device();
        SelectOut {
            keep: Tensor::empty([b], (Kind::Bool, dev)),
            scalars: Tensor::empty([2], (Kind::Float, dev)),
            correct: Tensor::empty([1], (Kind::Int64, dev)),
        }
    }

    fn into_output(self, losses: Tensor, removed: i64, grad: Option<Tensor>) -> LossOutput {
        LossOutput {
            loss: self.scalars.get(1),
            per_sample: losses,
            keep: self.keep,
            threshold: self.scalars.get(0),
            correct: self.correct.get(0),
            removed,
            grad,
        }
    }
}

/// What the selection kernels rank: losses, the labels that say which rows are valid (label !=
/// ignore_index), the per-row correct flags to count, and how many rows to remove.
struct Ranking<'a> {
    losses: &'a Tensor,
    y: Option<&'a Tensor>,
    ignore: Option<i64>,
    correct: Option<&'a Tensor>,
    k: i64,
}

/// Selects (one block up to [`SINGLE_BLOCK_MAX`] rows, many above), then zeroes the gradient
/// rows it dropped over the whole grid.
fn launch_select(r: &Ranking<'_>, out: &SelectOut, grad: Option<&Tensor>) -> Result<()> {
    if r.losses.size()[0] > SINGLE_BLOCK_MAX {
        launch_select_multi(r, out)?;
    } else {
        launch_select_single(r, out)?;
    }
    match grad {
        Some(g) if r.k > 0 => launch_zero_removed(r, &out.keep, g),
        _ => Ok(()),
    }
}

fn launch_select_single(r: &Ranking<'_>, out: &SelectOut) -> Result<()> {
    let Ranking {
        losses,
        y,
        ignore,
        correct,
        k,
    } = *r;
    let threshold = out.scalars.get(0);
    let mean = out.scalars.get(1);
    Launch::new(Kernel::LOSS_SELECT)
        .input("losses", losses)?
        .rows("y", y, ignore)?
        .optional_input("correct", correct)?
        .i64(losses.size()[0])
        .i64(k)
        .output("keep", &out.keep)?
        .output("threshold", &threshold)?
        .output("mean", &mean)?
        .output("correct_out", &out.correct)?
        .run(Grid::SingleBlock {
            threads: SELECT_THREADS,
        })
}

/// zero_removed (kernels/loss.cu): the dropped rows of `grad` (a row per loss) set to 0 after the
/// selection wrote `keep`, by groups of lanes (about a row's 16-byte stores, up to a block) a
/// row: a short row does not hold a whole block.
fn launch_zero_removed(r: &Ranking<'_>, keep: &Tensor, grad: &Tensor) -> Result<()> {
    let b = r.losses.size()[0];
    let row_bytes = (grad.numel() / b as usize * grad.kind().elt_size_in_bytes()) as i64;
    let packs_per_row = (row_bytes + 15) / 16;
    let lanes = row_lanes(packs_per_row, BLOCK);
    Launch::new(Kernel::ZERO_REMOVED)
        .input("keep", keep)?
        .rows("y", r.y, r.ignore)?
        .i64(b)
        .inout("grad", grad)?
        .i64(row_bytes)
        .i32(lanes as i32)
        .run(Grid::RowGroups {
            rows: b,
            lanes,
            packs_per_row,
        })
}

/// The same selection over many blocks (kernels/loss.cu, "Multi-block selection"): the range of
/// the candidates' keys, a radix select of up to three passes whose histograms are built by all
/// blocks, then a tie count per block, the marking pass and one final reduction. Eleven
/// launches, still no host sync.
fn launch_select_multi(r: &Ranking<'_>, out: &SelectOut) -> Result<()> {
    let Ranking {
        losses,
        y,
        ignore,
        correct,
        k,
    } = *r;
    let b = losses.size()[0];
    let dev = losses.device();
    let state = Tensor::empty([i64::from(SELECT_STATE_LEN)], (Kind::Int64, dev));
    let hist = Tensor::empty([1i64 << RADIX_BITS], (Kind::Int, dev));
    let blocks = (b + MARK_CHUNK - 1) / MARK_CHUNK;
    let chunk = (b + blocks - 1) / blocks;
    let block_eq = Tensor::empty([blocks], (Kind::Int64, dev));
    let partials = Tensor::empty([3 * blocks], (Kind::Double, dev));
    let hist_grid = Grid::Blocks {
        blocks: blocks.min(HIST_BLOCKS) as u32,
        threads: 256,
    };
    Launch::new(Kernel::SELECT_INIT)
        .output("state", &state)?
        .output("hist", &hist)?
        .i64(k)
        .run(Grid::SingleBlock { threads: 256 })?;
    Launch::new(Kernel::SELECT_RANGE)
        .input("losses", losses)?
        .rows("y", y, ignore)?
        .i64(b)
        .inout("state", &state)?
        .run(hist_grid)?;
    // Enough passes for any range of 32-bit keys; those the range does not need return at once.
    for pass in 0..(32 + RADIX_BITS - 1) / RADIX_BITS {
        Launch::new(Kernel::SELECT_HIST)
            .input("losses", losses)?
            .rows("y", y, ignore)?
            .i64(b)
            .inout("state", &state)?
            .inout("hist", &hist)?
            .i32(pass)
            .run(hist_grid)?;
        Launch::new(Kernel::SELECT_DIGIT)
            .inout("state", &state)?
            .inout("hist", &hist)?
            .i32(pass)
            .run(Grid::SingleBlock { threads: 256 })?;
    }
    Launch::new(Kernel::SELECT_EQ_COUNT)
        .input("losses", losses)?
        .rows("y", y, ignore)?
        .i64(b)
        .i64(chunk)
        .input("state", &state)?
        .output("block_eq", &block_eq)?
        .run(Grid::Blocks {
            blocks: blocks as u32,
            threads: 256,
        })?;
    Launch::new(Kernel::SELECT_MARK)
        .input("losses", losses)?
        .rows("y", y, ignore)?
        .optional_input("correct", correct)?
        .i64(b)
        .i64(chunk)
        .input("state", &state)?
        .input("block_eq", &block_eq)?
        .output("keep", &out.keep)?
        .output("partials", &partials)?
        .run(Grid::Blocks {
            blocks: blocks as u32,
            threads: 256,
        })?;
    Launch::new(Kernel::SELECT_FINAL)
        .input("partials", &partials)?
        .i64(blocks)
        .input("state", &state)?
        .output("threshold", &out.scalars.get(0))?
        .output("mean", &out.scalars.get(1))?
        .output("correct_out", &out.correct)?
        .run(Grid::SingleBlock {
            threads: SELECT_THREADS,
        })
}

pub(in crate::ops) fn cross_entropy(
    logits: &Tensor,
    args: &CeArgs<'_>,
    opts: &CrossEntropy,
    grad: Option<Tensor>,
) -> Result<LossOutput> {
    let (b, c) = (logits.size()[0], logits.size()[1]);
    if c > i64::from(i32::MAX) {
        // ce_forward's argmax and target columns are 32-bit.
        return Err(Error::value("logits", "at most 2^31 - 1 classes on CUDA", c));
    }
    let dev = logits.device();
    let losses = Tensor::empty([b], (Kind::Float, dev));
    let correct = Tensor::empty([b], (Kind::Int, dev));
    let with_grad = grad.is_some();
    let tensors: Vec<&Tensor> = std::iter::once(logits).chain(grad.as_ref()).collect();
    let n = pack_len(logits.kind());
    let vectorized = packable(c, n, &tensors);
    let teams = RowTeams::of(if vectorized { c / n } else { c }, c);
    let stage = Stage::of(logits, c, vectorized, with_grad, teams.teams)?;
    let k = args.removed;
    // The gradient weight 1 / n_kept: known on the host unless rows are ignored.
    let (scale_t, scale) = match opts.ignore_index {
        Some(ignore) => {
            let s = Tensor::empty([1], (Kind::Float, dev));
            Launch::new(Kernel::LOSS_COUNT_VALID)
                .input("y", args.y_a)?
                .i64(ignore)
                .i64(b)
                .i64(k)
                .output("scale", &s)?
                .run(Grid::SingleBlock {
                    threads: SELECT_THREADS,
                })?;
            (Some(s), 0.0)
        }
        None => (None, 1.0 / (b - k) as f32),
    };
    let (lam_vec, lam) = match args.lam {
        None => (None, 1.0),
        Some(Lambda::Batch(l)) => (None, *l as f32),
        Some(Lambda::PerSample(t)) => (Some(t), 0.0),
    };
    Launch::new(loss_kernel(
        logits.kind(),
        grad.as_ref(),
        [Kernel::CE_FORWARD_F32, Kernel::CE_FORWARD_F16, Kernel::CE_FORWARD_BF16],
        [Kernel::CE_FORWARD_F16_G32, Kernel::CE_FORWARD_BF16_G32],
    ))
    .input("logits", logits)?
    .optional_output("grad", grad.as_ref())?
    .output("losses", &losses)?
    .output("correct", &correct)?
    .rows("y_a", Some(args.y_a), opts.ignore_index)?
    .optional_input("y_b", args.y_b)?
    .optional_input("lam", lam_vec)?
    .f32(lam)
    .f32(opts.label_smoothing as f32)
    .optional_input("scale", scale_t.as_ref())?
    .f32(scale)
    .i64(b)
    .i64(c)
    .i32(with_grad as i32)
    .i32(vectorized as i32)
    .i64(stage.packs)
    .i32(teams.lanes as i32)
    .dynamic_shared(stage.shared_bytes)
    .run(Grid::BlockPerRow {
        rows: (b + teams.teams - 1) / teams.teams,
        threads: teams.threads,
    })?;
    let out = SelectOut::new(b, logits);
    let ranking = Ranking {
        losses: &losses,
        y: Some(args.y_a),
        ignore: opts.ignore_index,
        correct: Some(&correct),
        k,
    };
    launch_select(&ranking, &out, grad.as_ref())?;
    Ok(out.into_output(losses, k, grad))
}

/// The selection kernel alone over f32 losses; `valid` (bool) marks rows that may be ranked.
pub(in crate::ops) fn remove_highest(losses: &Tensor, valid: Option<&Tensor>, k: i64) -> Result<LossOutput> {
    let b = losses.size()[0];
    // The kernel reads validity as "label != ignore_index": valid rows get label 1, ignore 0.
    let labels = valid.map(|v| v.to_kind(Kind::Int64));
    let out = SelectOut::new(b, losses);
    let ranking = Ranking {
        losses,
        y: labels.as_ref(),
        ignore: labels.as_ref().map(|_| 0),
        correct: None,
        k,
    };
    launch_select(&ranking, &out, None)?;
    Ok(out.into_output(losses.shallow_clone(), k, None))
}

pub(in crate::ops) fn mse(pred: &Tensor, target: &Tensor, k: i64, grad: Option<Tensor>) -> Result<LossOutput> {
    let b = pred.size()[0];
    let f = pred.numel() as i64 / b;
    let dev = pred.device();
    let losses = Tensor::empty([b], (Kind::Float, dev));
    let with_grad = grad.is_some();
    let tensors: Vec<&Tensor> = [pred, target].into_iter().chain(grad.as_ref()).collect();
    // A row longer than a chunk is spread over several blocks (kernels/loss.cu, mse_forward).
    let chunks = (f.max(1) + MSE_CHUNK - 1) / MSE_CHUNK;
    let partials = (chunks > 1).then(|| Tensor::empty([b * chunks], (Kind::Double, dev)));
    Launch::new(loss_kernel(
        pred.kind(),
        grad.as_ref(),
        [
            Kernel::MSE_FORWARD_F32,
            Kernel::MSE_FORWARD_F16,
            Kernel::MSE_FORWARD_BF16,
        ],
        [Kernel::MSE_FORWARD_F16_G32, Kernel::MSE_FORWARD_BF16_G32],
    ))
    .input("pred", pred)?
    .input("target", target)?
    .optional_output("grad", grad.as_ref())?
    .optional_output("losses", partials.is_none().then_some(&losses))?
    .optional_output("partials", partials.as_ref())?
    .f32(1.0 / (b - k) as f32)
    .i64(b)
    .i64(f)
    .i64(MSE_CHUNK)
    .i64(chunks)
    .i32(with_grad as i32)
    .i32(packable(f, pack_len(pred.kind()), &tensors) as i32)
    .run(Grid::BlockPerRow {
        rows: b * chunks,
        threads: row_threads(f.min(MSE_CHUNK)).min(MSE_MAX_THREADS as u32),
    })?;
    if let Some(partials) = &partials {
        Launch::new(Kernel::MSE_FINISH)
            .input("partials", partials)?
            .i64(chunks)
            .i64(b)
            .i64(f)
            .output("losses", &losses)?
            .run(Grid::Blocks {
                blocks: ((b + 255) / 256).min(1024) as u32,
                threads: 256,
            })?;
    }
    let out = SelectOut::new(b, pred);
    launch_select(
        &Ranking {
            losses: &losses,
            y: None,
            ignore: None,
            correct: None,
            k,
        },
        &out,
        grad.as_ref(),
    )?;
    Ok(out.into_output(losses, k, grad))
}

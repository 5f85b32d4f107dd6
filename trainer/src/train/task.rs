//! What differs between the trainer's tasks: how each dataset is loaded and split, which model
//! it builds, how a batch becomes a loss (through enlighten's fused ops, or the tch composite a
//! PyTorch user writes), and how a split is evaluated. Everything else in the loop is shared.

use tch::nn;
use tch::{Device, Kind, Reduction, Tensor};

use super::config::{Dataset, ModelName, OpsChoice, TaskKind, TrainConfig};
use super::parallel::{global_keep, remove_highest_global};
use crate::data::{self, CharCorpus};
use crate::distributed::ProcessGroup;
use crate::error::{Error, Result};
use crate::models::{self, Model, TransformerDims};
use enlighten::cuda::{read_f64, read_i64, to_device_async, upload};
use enlighten::ops::loss::{
    attach_gradient, reference as loss_reference, CrossEntropy, LmCrossEntropy, LossOutput, Mse, SequenceRank, Targets,
};
use enlighten::ops::mixup::{reference as mixup_reference, Mixup, Normalize};
use enlighten::strategy::BatchPlan;
use enlighten::SeededRng;

/// Inputs and targets of one split, on the CPU: u8 images / f32 series / f32 windows / int64
/// tokens, with int64 classes / f32 horizons / int64 next tokens.
#[derive(Debug)]
pub(crate) struct Part {
    pub inputs: Tensor,
    pub targets: Tensor,
}

impl Part {
    pub fn len(&self) -> i64 {
        self.inputs.size()[0]
    }

    fn rows(&self, rows: &[i64]) -> Part {
        let idx = Tensor::from_slice(rows);
        Part {
            inputs: self.inputs.index_select(0, &idx),
            targets: self.targets.index_select(0, &idx),
        }
    }

    /// Rank `rank`'s share of `world` for evaluation: every world-th row from row `rank`, no
    /// padding (the ranks' sums add up to the whole part's); the part itself for one rank.
    pub fn shard(&self, rank: usize, world: usize) -> Part {
        if world <= 1 {
            return self.shallow_clone();
        }
        let rows: Vec<i64> = (rank as i64..self.len()).step_by(world).collect();
        self.rows(&rows)
    }

    /// A view sharing storage, for the prefetch thread.
    pub fn shallow_clone(&self) -> Part {
        Part {
            inputs: self.inputs.shallow_clone(),
            targets: self.targets.shallow_clone(),
        }
    }
}

/// Per-channel normalisation of u8 images: the fused op's form and the composite's tensors.
#[derive(Debug)]
struct ImageNorm {
    fused: Normalize,
    mean: Tensor,
    std: Tensor,
}

/// A loaded task: its splits and what its model needs to know.
#[derive(Debug)]
pub(crate) struct TaskData {
    pub task: TaskKind,
    pub train: Part,
    pub val: Part,
    pub test: Part,
    /// Classes (image, series), vocabulary size (text), horizon (forecasting).
    pub outputs: i64,
    image_norm: Option<ImageNorm>,
    /// Image folders: the training split's files, decoded batch by batch (then `train.inputs` is
    /// a zero-stride placeholder of the right shape and `train.targets` the labels).
    pub train_stream: Option<std::sync::Arc<data::ImageSource>>,
    /// Image folders: the bad files left out of the validation and test sets (skip).
    eval_skipped: Vec<std::path::PathBuf>,
    /// enlighten's fused ops or the tch composites, and the cross-entropy's label smoothing.
    ops: OpsChoice,
    label_smoothing: f64,
}

/// One training batch's loss, reported loss and correct-prediction count (device scalars).
pub(crate) struct StepOut {
    pub loss: Tensor,
    pub reported: Tensor,
    pub correct: Tensor,
    /// How many predictions `correct` counts over (rows, or tokens for text; 0 for forecasts).
    pub predictions: i64,
}

/// A split's evaluation: the task's metric (accuracy, or MSE for forecasting) and mean loss.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Eval {
    pub metric: f64,
    pub loss: f64,
    /// The sums behind them (for the EP monitor's standard error).
    pub correct: f64,
    pub predictions: f64,
}

/// What an evaluation adds up (over a split, or over the ranks' shards of it): the summed loss,
/// the correct predictions and the predictions (rows, tokens or forecast values).
#[derive(Debug, Clone, Copy, PartialEq)]
pub(crate) struct EvalSums {
    pub loss: f64,
    pub correct: f64,
    pub predictions: f64,
}

/// Where a batch's High-Loss Removal ranks its losses.
#[derive(Clone, Copy)]
enum Removal<'a> {
    /// Within this batch, as the loss ops do.
    Local,
    /// Over the global batch of the group's ranks, removing this share of it.
    Global(&'a ProcessGroup, f64),
}

/// The differentiable loss of `out` (computed on the detached `input` with nothing removed and
/// with its gradient, in f32 by `loss_and_grad_f32` so that under mixed precision the loss scale
/// reaches a half gradient before it is rounded) once the global batch's highest losses are
/// removed.
fn global_autograd(input: &Tensor, out: LossOutput, share: f64, group: &ProcessGroup) -> Result<LossOutput> {
    Ok(attach_gradient(input, remove_highest_global(out, share, group)?)?)
}

/// The composite's form of global removal: the kept rows' sum of the differentiable `per_row`
/// losses over the global kept count per rank.
fn global_mean(per_row: &Tensor, share: f64, group: &ProcessGroup) -> Result<Tensor> {
    let valid = Tensor::ones(per_row.size().as_slice(), (Kind::Bool, per_row.device()));
    let (keep, count) = global_keep(per_row, &valid, share, group)?;
    Ok((per_row * keep.to_kind(Kind::Float)).sum(Kind::Float) / count)
}

/// Where a dataset's files live: `data.dir`, else `data_dir()/<folder>`.
fn folder(config: &TrainConfig, name: &str) -> std::path::PathBuf {
    config.data.dir.clone().unwrap_or_else(|| data::data_dir().join(name))
}

/// Per-column standardisation of `x` (`[N, C, ...]` over dim 1 for series, `[N, F]`) with the
/// statistics of `fit`.
fn standardise(fit: &Tensor, dims: &[i64], xs: &[&Tensor]) -> Vec<Tensor> {
    let mean = fit.mean_dim(dims, true, Kind::Float);
    let std = fit.std_dim(dims, false, true).clamp_min(1e-6);
    xs.iter().map(|x| ((*x - &mean) / &std).to_kind(Kind::Float)).collect()
}

/// Cuts a time-ordered `[N, ...]` tensor into train / val / test (test last), as `val_fraction`
/// and `test_fraction` of its rows: forecasting and text must not validate on the past.
fn split_in_time(x: &Tensor, val_fraction: f64, test_fraction: f64) -> (Tensor, Tensor, Tensor) {
    let n = x.size()[0];
    let n_test = (test_fraction * n as f64).round() as i64;
    let n_val = (val_fraction * n as f64).round() as i64;
    let n_train = n - n_test - n_val;
    (
        x.narrow(0, 0, n_train),
        x.narrow(0, n_train, n_val),
        x.narrow(0, n_train + n_val, n_test),
    )
}

/// Keeps a seeded `subset` of a training part's rows.
fn keep_subset(part: Part, subset: f64, seed: u64) -> Result<Part> {
    if subset >= 1.0 {
        return Ok(part);
    }
    let (_, rows) = data::split_rows(part.len(), 0.0, subset, seed)?;
    Ok(part.rows(&rows))
}

impl TaskData {
    /// The configured dataset, split, standardised where it is not images, on the CPU (image
    /// normalisation's tensors on `device`).
    pub fn load(config: &TrainConfig, device: Device) -> Result<TaskData> {
        match config.data.dataset {
            Dataset::FashionMnist | Dataset::Cifar10 | Dataset::Cifar100 | Dataset::Digits => {
                load_images(config, device)
            }
            Dataset::ImageFolder | Dataset::TinyImagenet | Dataset::Imagenet => load_folder(config, device),
            Dataset::Ucr => load_ucr(config),
            Dataset::VicElec => load_vic_elec(config),
            Dataset::Text | Dataset::Shakespeare => load_text(config),
        }
    }

    /// A task from its splits, with the run's choice of ops and label smoothing.
    fn new(
        config: &TrainConfig,
        task: TaskKind,
        outputs: i64,
        [train, val, test]: [Part; 3],
        image_norm: Option<ImageNorm>,
    ) -> TaskData {
        TaskData {
            task,
            train,
            val,
            test,
            outputs,
            image_norm,
            train_stream: None,
            eval_skipped: Vec::new(),
            ops: config.run.ops,
            label_smoothing: config.optim.label_smoothing,
        }
    }

    /// The configured model for this task's shapes.
    pub fn build_model(&self, config: &TrainConfig, vs: &nn::VarStore) -> Box<dyn Model> {
        let m = &config.model;
        let s = self.train.inputs.size();
        let root = vs.root();
        let dims = |d: TransformerDims| TransformerDims {
            width: m.width.unwrap_or(d.width),
            depth: m.depth.unwrap_or(d.depth),
            heads: m.heads.unwrap_or(d.heads),
        };
        match m.name {
            ModelName::SmallCnn => Box::new(models::small_cnn_with_width(
                &root,
                s[1],
                s[2],
                s[3],
                self.outputs,
                m.width.unwrap_or(32),
            )),
            ModelName::Resnet18 => Box::new(models::resnet18(&root, s[1], self.outputs)),
            ModelName::PreactResnet18 => Box::new(models::preact_resnet18(&root, s[1], self.outputs)),
            ModelName::VitTiny => Box::new(models::vit_tiny(
                &root,
                s[1],
                s[2],
                self.outputs,
                dims(TransformerDims::VIT_TINY),
            )),
            ModelName::VitS16 => Box::new(models::vit_s16(&root, s[2], self.outputs)),
            ModelName::VitT16 => Box::new(models::vit_t16(&root, s[2], self.outputs)),
            ModelName::VitS8 => Box::new(models::vit_s8(&root, s[2], self.outputs)),
            ModelName::Resnet50 => Box::new(models::resnet50(&root, s[1], self.outputs)),
            ModelName::PreactResnet50 => Box::new(models::preact_resnet50(&root, s[1], self.outputs)),
            ModelName::Resnet1d => Box::new(models::resnet1d(&root, s[1], self.outputs, m.width.unwrap_or(64))),
            ModelName::MlpForecaster => Box::new(models::mlp_forecaster(
                &root,
                s[1],
                s[2],
                self.outputs,
                m.width.unwrap_or(256),
            )),
            ModelName::CharTransformer => Box::new(models::char_transformer(
                &root,
                self.outputs,
                s[1],
                dims(TransformerDims::CHAR_SMALL),
            )),
        }
    }

    /// The model's input for a batch as stored (u8 images are normalised to f32 here).
    fn plain_input(&self, x: &Tensor) -> Result<Tensor> {
        match &self.image_norm {
            Some(n) => Ok(Mixup::identity().forward_u8(x, &n.fused, Kind::Float)?),
            None => Ok(x.shallow_clone()),
        }
    }

    /// One batch's loss as the plan says. `forward` runs the model (under autocast if asked).
    /// With `global`, High-Loss Removal ranks the losses of the whole global batch of the
    /// group's ranks instead of this batch's ([`remove_highest_global`]).
    pub fn step(
        &self,
        forward: &dyn Fn(&Tensor) -> Tensor,
        batch: (&Tensor, &Tensor),
        plan: &BatchPlan,
        rng: &mut SeededRng,
        global: Option<&ProcessGroup>,
    ) -> Result<StepOut> {
        let (x, y) = batch;
        let removal = match global {
            Some(group) if plan.drop_share > 0.0 => Removal::Global(group, plan.drop_share),
            _ => Removal::Local,
        };
        match self.task {
            TaskKind::Image | TaskKind::Series => self.classification_step(forward, x, y, plan, rng, removal),
            TaskKind::Forecast => self.forecast_step(forward, x, y, plan, removal),
            TaskKind::Text => self.text_step(forward, x, y, plan, removal),
        }
    }

    /// The cross-entropy options of a batch planned as `plan`.
    fn cross_entropy(&self, plan: &BatchPlan) -> CrossEntropy {
        CrossEntropy {
            label_smoothing: self.label_smoothing,
            ignore_index: None,
            drop_share: plan.drop_share,
        }
    }

    /// An image or series batch: mixed as planned, then cross-entropy against the mixed labels.
    fn classification_step(
        &self,
        forward: &dyn Fn(&Tensor) -> Tensor,
        x: &Tensor,
        y: &Tensor,
        plan: &BatchPlan,
        rng: &mut SeededRng,
        removal: Removal<'_>,
    ) -> Result<StepOut> {
        let b = x.size()[0];
        let opts = &self.cross_entropy(plan);
        match self.ops {
            OpsChoice::Fused => {
                let (x, targets) = match &self.image_norm {
                    Some(n) => plan.mix.forward_images(x, y, &n.fused, Kind::Float, rng)?,
                    None => plan.mix.forward(x, y, rng)?,
                };
                let logits = forward(&x);
                let out = match removal {
                    Removal::Local => opts.forward_with_stats(&logits, &targets)?,
                    Removal::Global(group, share) => {
                        let all = CrossEntropy {
                            drop_share: 0.0,
                            ..*opts
                        };
                        let out = all.loss_and_grad_f32(&logits.detach(), &targets)?;
                        global_autograd(&logits, out, share, group)?
                    }
                };
                Ok(StepOut {
                    reported: out.loss.detach(),
                    loss: out.loss,
                    correct: out.correct,
                    predictions: b,
                })
            }
            OpsChoice::Composite => {
                let x = match &self.image_norm {
                    Some(n) => (x.to_kind(Kind::Float) / 255.0 - &n.mean) / &n.std,
                    None => x.shallow_clone(),
                };
                let (x, targets) = mixup_reference::composite_batch(&plan.mix, &x, y, rng)?;
                let logits = forward(&x);
                let loss = match removal {
                    Removal::Local => loss_reference::composite(&logits, Targets::Mixed(&targets), opts)?,
                    Removal::Global(group, share) => global_mean(
                        &loss_reference::per_sample_ce_autograd(&logits, Targets::Mixed(&targets), opts)?,
                        share,
                        group,
                    )?,
                };
                let correct = logits.argmax(1, false).eq_tensor(&targets.y_a).sum(Kind::Int64);
                Ok(StepOut {
                    reported: loss.detach(),
                    loss,
                    correct,
                    predictions: b,
                })
            }
        }
    }

    /// A forecasting batch: the MSE over horizons per row, the highest rows dropped as planned.
    fn forecast_step(
        &self,
        forward: &dyn Fn(&Tensor) -> Tensor,
        x: &Tensor,
        y: &Tensor,
        plan: &BatchPlan,
        removal: Removal<'_>,
    ) -> Result<StepOut> {
        match self.ops {
            OpsChoice::Fused => {
                let pred = forward(x);
                let target = y.to_kind(pred.kind());
                let out = match removal {
                    Removal::Local => Mse {
                        drop_share: plan.drop_share,
                    }
                    .forward_with_stats(&pred, &target)?,
                    Removal::Global(group, share) => global_autograd(
                        &pred,
                        Mse::default().loss_and_grad_f32(&pred.detach(), &target)?,
                        share,
                        group,
                    )?,
                };
                Ok(StepOut {
                    reported: out.loss.detach(),
                    loss: out.loss,
                    correct: out.correct,
                    predictions: 0,
                })
            }
            OpsChoice::Composite => {
                let pred = forward(x);
                let per_row = (&pred - y.to_kind(pred.kind()))
                    .square()
                    .mean_dim(1, false, Kind::Float);
                let loss = match removal {
                    Removal::Local => loss_reference::mean_without_highest(&per_row, plan.drop_share)?,
                    Removal::Global(group, share) => global_mean(&per_row, share, group)?,
                };
                Ok(StepOut {
                    reported: loss.detach(),
                    loss,
                    correct: Tensor::zeros([], (Kind::Int64, x.device())),
                    predictions: 0,
                })
            }
        }
    }

    /// A text batch: next-token cross-entropy averaged per sequence, the highest sequences
    /// dropped as planned.
    fn text_step(
        &self,
        forward: &dyn Fn(&Tensor) -> Tensor,
        x: &Tensor,
        y: &Tensor,
        plan: &BatchPlan,
        removal: Removal<'_>,
    ) -> Result<StepOut> {
        let opts = &self.cross_entropy(plan);
        match self.ops {
            OpsChoice::Fused => {
                let logits = forward(x);
                let lm = LmCrossEntropy {
                    label_smoothing: opts.label_smoothing,
                    ignore_index: opts.ignore_index,
                    drop_share: opts.drop_share,
                    rank: SequenceRank::PerSequence,
                };
                let out = match removal {
                    Removal::Local => lm.forward_with_stats(&logits, y)?,
                    Removal::Global(group, share) => {
                        let all = LmCrossEntropy { drop_share: 0.0, ..lm };
                        global_autograd(&logits, all.loss_and_grad_f32(&logits.detach(), y)?, share, group)?
                    }
                };
                Ok(StepOut {
                    reported: out.loss.detach(),
                    loss: out.loss,
                    correct: out.correct,
                    predictions: y.numel() as i64,
                })
            }
            OpsChoice::Composite => {
                let logits = forward(x);
                let s = logits.size();
                let per_token = logits
                    .reshape([-1, s[2]])
                    .to_kind(Kind::Float)
                    .cross_entropy_loss::<Tensor>(&y.reshape([-1]), None, Reduction::None, -100, opts.label_smoothing);
                let per_sequence = per_token.view([s[0], s[1]]).mean_dim(1, false, Kind::Float);
                let loss = match removal {
                    Removal::Local => loss_reference::mean_without_highest(&per_sequence, plan.drop_share)?,
                    Removal::Global(group, share) => global_mean(&per_sequence, share, group)?,
                };
                let correct = logits.argmax(-1, false).eq_tensor(y).sum(Kind::Int64);
                Ok(StepOut {
                    reported: loss.detach(),
                    loss,
                    correct,
                    predictions: y.numel() as i64,
                })
            }
        }
    }

    /// The metric and mean loss of summed evaluations (NaN over no predictions).
    pub fn eval_from(&self, sums: EvalSums) -> Eval {
        if sums.predictions == 0.0 {
            return Eval {
                metric: f64::NAN,
                loss: f64::NAN,
                correct: 0.0,
                predictions: 0.0,
            };
        }
        let loss = sums.loss / sums.predictions;
        let metric = if self.task == TaskKind::Forecast {
            loss
        } else {
            sums.correct / sums.predictions
        };
        Eval {
            metric,
            loss,
            correct: sums.correct,
            predictions: sums.predictions,
        }
    }

    /// The loss, correct predictions and predictions summed over `part`, in eval mode, 512 rows
    /// at a time ([`TaskData::eval_from`] makes the metric of them).
    pub fn evaluate_sums(&self, forward: &dyn Fn(&Tensor) -> Tensor, part: &Part, device: Device) -> Result<EvalSums> {
        let n = part.len();
        let mut loss_sum = Tensor::zeros([], (Kind::Double, device));
        let mut correct = Tensor::zeros([], (Kind::Int64, device));
        let mut predictions = 0i64;
        tch::no_grad(|| -> Result<()> {
            for start in (0..n).step_by(512) {
                let len = 512.min(n - start);
                let x = self.plain_input(&to_device_async(&part.inputs.narrow(0, start, len), device)?)?;
                let y = to_device_async(&part.targets.narrow(0, start, len), device)?;
                let out = forward(&x).to_kind(Kind::Float);
                if self.task == TaskKind::Forecast {
                    loss_sum += (out - &y).square().sum(Kind::Double);
                    predictions += y.numel() as i64;
                } else {
                    let v = *out.size().last().unwrap_or(&1);
                    loss_sum += out
                        .reshape([-1, v])
                        .cross_entropy_loss::<Tensor>(&y.reshape([-1]), None, Reduction::Sum, -100, 0.0)
                        .to_kind(Kind::Double);
                    correct += out.argmax(-1, false).eq_tensor(&y).sum(Kind::Int64);
                    predictions += y.numel() as i64;
                }
            }
            Ok(())
        })?;
        Ok(EvalSums {
            loss: read_f64(&loss_sum)?,
            correct: read_i64(&correct)? as f64,
            predictions: predictions as f64,
        })
    }

    /// A fixed labelled batch for measurements (the zero-activation diagnostics, `analyze`):
    /// the first `rows` rows of the validation split, or of the training split when the
    /// validation split has fewer than `min_val` rows; inputs as the model takes them.
    pub fn fixed_batch(&self, rows: i64, min_val: i64, device: Device) -> Result<(Tensor, Tensor)> {
        let part = if self.val.len() >= min_val.max(1) {
            &self.val
        } else {
            &self.train
        };
        let n = rows.min(part.len());
        Ok((
            self.plain_input(&to_device_async(&part.inputs.narrow(0, 0, n), device)?)?,
            to_device_async(&part.targets.narrow(0, 0, n), device)?,
        ))
    }

    /// Whether the task's metric is better when higher (accuracy) or lower (MSE).
    pub fn higher_is_better(&self) -> bool {
        self.task != TaskKind::Forecast
    }

    /// The bad image files skipped so far (evaluation sets at load, training batches since).
    pub fn skipped_files(&self) -> Vec<std::path::PathBuf> {
        let mut all = self.eval_skipped.clone();
        all.extend(self.train_stream.iter().flat_map(|s| s.skipped()));
        all.sort();
        all.dedup();
        all
    }

    pub fn metric_name(&self) -> &'static str {
        if self.task == TaskKind::Forecast {
            "mse"
        } else {
            "accuracy"
        }
    }
}

/// The training and test images of an image dataset, as stored.
fn read_images(config: &TrainConfig) -> Result<(data::ImageSet, data::ImageSet)> {
    let d = &config.data;
    Ok(match d.dataset {
        Dataset::FashionMnist => data::fashion_mnist(&folder(config, "fashion-mnist"))?,
        Dataset::Cifar10 => data::cifar10(&d.dir.clone().unwrap_or_else(data::data_dir))?,
        Dataset::Cifar100 => data::cifar100(&d.dir.clone().unwrap_or_else(data::data_dir))?,
        _ => {
            // 1,797 images and no official split: a seeded share is the test set.
            let all = data::sklearn_digits(&folder(config, "digits").join("digits.csv.gz"))?;
            let order = SeededRng::new(config.run.seed ^ 0xD161_7500).permutation(all.len() as usize);
            let cut = (d.test_fraction * all.len() as f64) as usize;
            (
                all.select(&Tensor::from_slice(&order[cut..])),
                all.select(&Tensor::from_slice(&order[..cut])),
            )
        }
    })
}

/// Images: u8 splits with a seeded validation carve-out, normalised by the training split's
/// channel statistics (fused into Mixup, or as tensors for the composite).
fn load_images(config: &TrainConfig, device: Device) -> Result<TaskData> {
    let d = &config.data;
    let (train, test) = read_images(config)?;
    let splits = data::split(train, test, d.val_fraction, d.subset, config.run.seed)?;
    let (mean, std) = splits.train.channel_stats();
    let image_norm = image_norm(&mean, &std, device)?;
    let part = |s: data::ImageSet| Part {
        inputs: s.images,
        targets: s.labels,
    };
    let classes = splits.train.classes;
    Ok(TaskData::new(
        config,
        TaskKind::Image,
        classes,
        [part(splits.train), part(splits.val), part(splits.test)],
        Some(image_norm),
    ))
}

/// ImageNet's channel statistics (torchvision's Normalize), for the image-folder datasets.
const IMAGENET_MEAN: [f64; 3] = [0.485, 0.456, 0.406];
const IMAGENET_STD: [f64; 3] = [0.229, 0.224, 0.225];

/// Image folders (image-folder, tiny-imagenet, imagenet): the layout's file lists; where the
/// layout has no labelled test split its validation split is the test set and validation is
/// carved from the training files (`val_fraction`, seeded); `subset` keeps a seeded share of the
/// training files. Training batches are decoded by the pipeline with torchvision's training
/// transforms; validation and test images are decoded once with its evaluation transforms.
fn load_folder(config: &TrainConfig, device: Device) -> Result<TaskData> {
    let d = &config.data;
    let (name, default_size) = match d.dataset {
        Dataset::TinyImagenet => ("tiny-imagenet-200", 64),
        Dataset::Imagenet => ("imagenet", 224),
        _ => ("image-folder", 224),
    };
    let dir = folder(config, name);
    let layout = match d.dataset {
        Dataset::TinyImagenet => data::tiny_imagenet(&dir)?,
        Dataset::Imagenet => data::imagenet(&dir)?,
        _ => data::image_folder(&dir)?,
    };
    let seed = config.run.seed;
    config.check_monitor(layout.test.is_none())?;
    let (train, val, test) = match layout.test {
        Some(test) => {
            let (_, rows) = data::split_rows(layout.train.len() as i64, 0.0, d.subset, seed)?;
            (layout.train.select(&rows), layout.val, test)
        }
        None => {
            let (val_rows, rows) = data::split_rows(layout.train.len() as i64, d.val_fraction, d.subset, seed)?;
            (layout.train.select(&rows), layout.train.select(&val_rows), layout.val)
        }
    };
    let size = d.image_size.unwrap_or(default_size) as usize;
    let mut eval_skipped = Vec::new();
    let mut eval = |list: data::FileList| -> Result<Part> {
        let source = data::ImageSource::new(list, data::Transform::eval(size), d.workers, d.on_bad_file)
            .with_max_pixels(d.max_image_pixels);
        let set = source.decode_all()?;
        eval_skipped.extend(source.skipped());
        Ok(Part {
            inputs: set.images,
            targets: set.labels,
        })
    };
    let classes = train.classes.len() as i64;
    let (val, test) = (eval(val)?, eval(test)?);
    let s = size as i64;
    let train_part = Part {
        inputs: Tensor::zeros([1, 3, s, s], (Kind::Uint8, Device::Cpu)).expand([train.len() as i64, 3, s, s], false),
        targets: Tensor::from_slice(&train.labels),
    };
    let source = data::ImageSource::new(train, data::Transform::train(size), d.workers, d.on_bad_file)
        .with_max_pixels(d.max_image_pixels);
    // In error mode a bad training file fails the run now, not when its batch comes hours in.
    if d.on_bad_file == data::OnBadFile::Error {
        source.check_headers()?;
    }
    let mut task = TaskData::new(
        config,
        TaskKind::Image,
        classes,
        [train_part, val, test],
        Some(image_norm(&IMAGENET_MEAN, &IMAGENET_STD, device)?),
    );
    task.train_stream = Some(std::sync::Arc::new(source));
    task.eval_skipped = eval_skipped;
    Ok(task)
}

/// The fused op's and the composite's form of a per-channel normalisation.
fn image_norm(mean: &[f64], std: &[f64], device: Device) -> Result<ImageNorm> {
    let c = mean.len() as i64;
    Ok(ImageNorm {
        fused: Normalize::new(mean, std, device)?,
        mean: upload(mean, device).to_kind(Kind::Float).view([1, c, 1, 1]),
        std: upload(std, device).to_kind(Kind::Float).view([1, c, 1, 1]),
    })
}

/// UCR/UEA series: `<series>_{TRAIN,TEST}.ts` (the test file padded to the training length), a
/// seeded validation carve-out, per-channel standardisation by the training split.
fn load_ucr(config: &TrainConfig) -> Result<TaskData> {
    let d = &config.data;
    let name = d.series.clone().unwrap_or_default();
    let dir = folder(config, "ucr").join(&name);
    let train = data::read_ts(&dir.join(format!("{name}_TRAIN.ts")), d.length)?;
    let test_path = dir.join(format!("{name}_TEST.ts"));
    let test = data::read_ts(&test_path, Some(train.series.size()[2] as usize))?;
    if test.class_names != train.class_names {
        return Err(Error::Data {
            path: test_path,
            problem: format!(
                "classes {:?}, the training file has {:?}",
                test.class_names, train.class_names
            ),
            hint: "the TRAIN and TEST files must come from the same dataset".into(),
        });
    }
    let (val_rows, train_rows) = data::split_rows(train.labels.size()[0], d.val_fraction, d.subset, config.run.seed)?;
    let all = Part {
        inputs: train.series,
        targets: train.labels,
    };
    let (tr, va) = (all.rows(&train_rows), all.rows(&val_rows));
    let x = standardise(&tr.inputs, &[0, 2], &[&tr.inputs, &va.inputs, &test.series]);
    let parts = [
        Part {
            inputs: x[0].shallow_clone(),
            targets: tr.targets,
        },
        Part {
            inputs: x[1].shallow_clone(),
            targets: va.targets,
        },
        Part {
            inputs: x[2].shallow_clone(),
            targets: test.labels,
        },
    ];
    Ok(TaskData::new(
        config,
        TaskKind::Series,
        train.class_names.len() as i64,
        parts,
        None,
    ))
}

/// vic_elec: the series split in time and standardised by its training part; training windows
/// every `stride` steps, evaluation windows not overlapping.
fn load_vic_elec(config: &TrainConfig) -> Result<TaskData> {
    let d = &config.data;
    let series = data::read_vic_elec(&folder(config, "vic_elec").join("vic_elec.csv"))?;
    let (tr, va, te) = split_in_time(&series, d.val_fraction, d.test_fraction);
    let z = standardise(&tr, &[0], &[&tr, &va, &te]);
    let windows = |x: &Tensor, stride: i64| -> Result<Part> {
        let (inputs, targets) = data::forecast_windows(x, d.input_len, d.horizon, stride, 0)?;
        Ok(Part { inputs, targets })
    };
    let parts = [
        keep_subset(windows(&z[0], d.stride)?, d.subset, config.run.seed)?,
        windows(&z[1], d.horizon)?,
        windows(&z[2], d.horizon)?,
    ];
    Ok(TaskData::new(config, TaskKind::Forecast, d.horizon, parts, None))
}

/// A character corpus (a text file or folder; Shakespeare's plays by name) split in time, its
/// vocabulary from the training part, cut into `seq_len` sequences.
fn load_text(config: &TrainConfig) -> Result<TaskData> {
    let d = &config.data;
    let (text, source) = match (&d.dataset, &d.path) {
        (Dataset::Text, Some(path)) => (data::read_text(path, d.encoding)?, path.clone()),
        _ => {
            let dir = folder(config, "shakespeare");
            (data::read_shakespeare(&dir, d.encoding)?, dir)
        }
    };
    super::text_length::check(&source, &text, d)?;
    let splits = data::char_splits(&text, d.val_fraction, d.test_fraction)?;
    let sequences = |tokens: &Tensor| -> Result<Part> {
        let (inputs, targets) = CharCorpus {
            tokens: tokens.shallow_clone(),
            vocab: Vec::new(),
        }
        .sequences(d.seq_len, d.seq_len)?;
        Ok(Part { inputs, targets })
    };
    let parts = [
        keep_subset(sequences(&splits.train)?, d.subset, config.run.seed)?,
        sequences(&splits.val)?,
        sequences(&splits.test)?,
    ];
    Ok(TaskData::new(config, TaskKind::Text, splits.classes(), parts, None))
}

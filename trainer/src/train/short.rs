//! Short trainings for measurements (`enlighten analyze`): a configuration's task loaded once,
//! then its model trained for a few steps, vanilla or with Mixup, with a hook at every step.
//! This is the trainer's interface for the layer above; the loop's parts stay private.

use tch::{nn, Device, Tensor};

use super::config::TrainConfig;
use super::optim::{cosine_lr, Optimizer};
use super::prefetch::{BatchOrder, Batches};
use super::task::TaskData;
use crate::error::{Error, Result};
use crate::models::Model;
use enlighten::strategy::{StrategyConfig, StrategyKind};
use enlighten::SeededRng;

/// Called with (step, model, parameters) during a short training.
pub(crate) type StepHook<'a> = dyn FnMut(u64, &dyn Model, &[Tensor]) -> Result<()> + 'a;

/// A configuration's data, loaded once on its device, for any number of short trainings.
pub(crate) struct ShortRuns {
    task: TaskData,
    device: Device,
}

impl ShortRuns {
    pub(crate) fn load(config: &TrainConfig) -> Result<ShortRuns> {
        let device = config.run.device.device()?;
        Ok(ShortRuns {
            task: TaskData::load(config, device)?,
            device,
        })
    }

    /// A fixed labelled batch, inputs as the model takes them (see `TaskData::fixed_batch`).
    pub(crate) fn fixed_batch(&self, rows: i64, min_val: i64) -> Result<(Tensor, Tensor)> {
        self.task.fixed_batch(rows, min_val, self.device)
    }

    /// Trains `config`'s model (its width may differ from the loaded configuration's) for
    /// `steps` steps with Mixup at `alpha` (0: vanilla), calling `at(step, model, params)` before
    /// each step and once after the last.
    pub(crate) fn run(&self, config: &TrainConfig, alpha: f64, steps: u64, at: &mut StepHook<'_>) -> Result<()> {
        let (task, device) = (&self.task, self.device);
        tch::manual_seed(config.run.seed as i64);
        let vs = nn::VarStore::new(device);
        let model = task.build_model(config, &vs);
        let params = vs.trainable_variables();
        let mut opt = Optimizer::from_config(&config.optim, params.iter().map(Tensor::shallow_clone).collect());
        let kind = if alpha > 0.0 {
            StrategyKind::Mixup
        } else {
            StrategyKind::Vanilla
        };
        let mut schedule = StrategyConfig {
            alpha: alpha.max(1e-3),
            ..StrategyConfig::of_kind(kind)
        }
        .build()?;
        let mut rng = SeededRng::new(config.run.seed);
        let batch = config.data.batch_size.min(task.train.len());
        let per_epoch = (task.train.len() / batch).max(1) as u64;
        let mut batches = Batches::new(
            &task.train,
            task.train_stream.clone(),
            (
                BatchOrder {
                    seed: config.run.seed,
                    batch,
                    per_epoch,
                    rank: 0,
                    world: 1,
                },
                device,
            ),
            0,
            steps,
            0,
        );
        let forward = |x: &Tensor| model.forward(x, true, false).0;
        let total = per_epoch * config.optim.epochs as u64;
        for step in 0..steps {
            at(step, model.as_ref(), &params)?;
            let (x, y) = batches
                .next()
                .ok_or_else(|| Error::Internal(format!("no batch for step {step} of {steps}")))??;
            let plan = schedule.plan(step, (step / per_epoch) as u32, &mut rng);
            let out = task.step(&forward, (&x, &y), &plan, &mut rng, None)?;
            opt.zero_grad();
            out.loss.backward();
            opt.step(cosine_lr(config.optim.lr, step, 0, total.max(steps)), step + 1);
        }
        at(steps, model.as_ref(), &params)
    }
}

//! An MLP forecaster: the input window `[B, L, F]` flattened, two ReLU layers, and one output per
//! horizon step. Small and fast; on vic_elec it beats the seasonal-naive forecast within an epoch.

use tch::nn::{self, Module};
use tch::Tensor;

use super::{Model, Probes};

#[derive(Debug)]
pub struct MlpForecaster {
    fc1: nn::Linear,
    fc2: nn::Linear,
    out: nn::Linear,
}

/// Windows of `input_len` steps with `features` values each, `horizon` outputs, `hidden` units.
pub fn mlp_forecaster(vs: &nn::Path, input_len: i64, features: i64, horizon: i64, hidden: i64) -> MlpForecaster {
    MlpForecaster {
        fc1: nn::linear(vs / "fc1", input_len * features, hidden, Default::default()),
        fc2: nn::linear(vs / "fc2", hidden, hidden, Default::default()),
        out: nn::linear(vs / "out", hidden, horizon, Default::default()),
    }
}

impl Model for MlpForecaster {
    fn forward(&self, x: &Tensor, _train: bool, probe: bool) -> (Tensor, Vec<Tensor>) {
        let mut p = Probes::new(probe);
        let y = p.relu(self.fc1.forward(&x.flatten(1, -1)));
        let y = p.relu(self.fc2.forward(&y));
        (self.out.forward(&y), p.into_vec())
    }
}

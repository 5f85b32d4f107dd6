//! The trainer's image classifiers. Every model can return its post-ReLU activations (the
//! probes that `ops::stats::zero_counts` counts), in forward order, alongside the logits.

mod resnet;
mod small_cnn;

pub use resnet::{preact_resnet18, resnet18};
pub use small_cnn::small_cnn;

use tch::nn;
use tch::Tensor;

/// A classifier over `[B, C, H, W]` images.
pub trait Classifier: std::fmt::Debug + Send {
    /// Logits `[B, classes]`, and with `probe` the post-ReLU activations in forward order.
    fn forward(&self, x: &Tensor, train: bool, probe: bool) -> (Tensor, Vec<Tensor>);
}

/// Collects post-ReLU activations when probing.
pub(crate) struct Probes {
    on: bool,
    taken: Vec<Tensor>,
}

impl Probes {
    pub(crate) fn new(on: bool) -> Probes {
        Probes { on, taken: Vec::new() }
    }

    /// ReLU, keeping the result when probing.
    pub(crate) fn relu(&mut self, x: Tensor) -> Tensor {
        let y = x.relu();
        if self.on {
            self.taken.push(y.shallow_clone());
        }
        y
    }

    pub(crate) fn into_vec(self) -> Vec<Tensor> {
        self.taken
    }
}

/// A 3x3 convolution with the given stride and padding 1, without bias (a batch norm follows).
pub(crate) fn conv3x3(vs: nn::Path, c_in: i64, c_out: i64, stride: i64) -> nn::Conv2D {
    nn::conv2d(vs, c_in, c_out, 3, nn::ConvConfig { stride, padding: 1, bias: false, ..Default::default() })
}

/// Number of trainable parameters in a var store.
pub fn parameter_count(vs: &nn::VarStore) -> i64 {
    vs.trainable_variables().iter().map(|t| t.numel() as i64).sum()
}

//! The trainer's models: image classifiers (small CNN, ResNet18/50, PreActResNet18/50, ViT-tiny,
//! ViT-S/16, ViT-T/16, patch-8 ViT-S), a
//! 1-D ResNet for series, an MLP forecaster and a decoder-only transformer for character LMs.
//! Every model can return its hidden activations after the nonlinearity (the probes that
//! `ops::stats::zero_counts` counts), in forward order, alongside its output; for the
//! classifiers the last probe is the penultimate feature vector (what `enlighten analyze` embeds).

mod forecaster;
mod resnet;
mod resnet1d;
mod small_cnn;
mod transformer;

pub use forecaster::{mlp_forecaster, MlpForecaster};
pub use resnet::{preact_resnet18, preact_resnet50, resnet18, resnet50};
pub use resnet1d::{resnet1d, ResNet1d};
pub use small_cnn::{small_cnn, small_cnn_with_width};
pub use transformer::{
    char_transformer, vit, vit_s16, vit_s8, vit_t16, vit_tiny, CharTransformer, TransformerDims, Vit, VitTiny,
};

use tch::nn;
use tch::Tensor;

/// A trainable network: images `[B, C, H, W]` or series `[B, C, T]` to logits `[B, classes]`,
/// windows `[B, L, F]` to forecasts `[B, horizon]`, tokens `[B, T]` to logits `[B, T, vocab]`.
pub trait Model: std::fmt::Debug + Send {
    /// The output, and with `probe` the activations after each nonlinearity in forward order.
    fn forward(&self, x: &Tensor, train: bool, probe: bool) -> (Tensor, Vec<Tensor>);

    /// The tolerance under which a probed activation counts as zero: exact zeros after ReLU;
    /// models whose nonlinearity has no exact zeros (GELU) override it.
    fn probe_eps(&self) -> Option<f64> {
        None
    }

    /// Per probed layer, the share of its activations on `batch` (eval mode, no gradient) that
    /// count as zero ([`enlighten::ops::stats::zero_shares`]); empty for a model without probes.
    fn zero_shares(&self, batch: &Tensor) -> crate::Result<Vec<f64>> {
        let (_, probes) = tch::no_grad(|| self.forward(batch, false, true));
        let layers: Vec<&Tensor> = probes.iter().collect();
        Ok(enlighten::ops::stats::zero_shares(&layers, self.probe_eps())?)
    }
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

    /// GELU, keeping the result when probing (the zero counts then need an `eps`).
    pub(crate) fn gelu(&mut self, x: Tensor) -> Tensor {
        let y = x.gelu("none");
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
    nn::conv2d(
        vs,
        c_in,
        c_out,
        3,
        nn::ConvConfig {
            stride,
            padding: 1,
            bias: false,
            ..Default::default()
        },
    )
}

/// Number of trainable parameters in a var store.
pub fn parameter_count(vs: &nn::VarStore) -> i64 {
    vs.trainable_variables().iter().map(|t| t.numel() as i64).sum()
}

//! A small CNN fast enough for 2 CPU cores: two conv-BN-ReLU-pool stages, then an MLP head.

use tch::nn::{self, Module, ModuleT};
use tch::Tensor;

use super::{conv3x3, Model, Probes};

#[derive(Debug)]
pub struct SmallCnn {
    conv1: nn::Conv2D,
    bn1: nn::BatchNorm,
    conv2: nn::Conv2D,
    bn2: nn::BatchNorm,
    fc1: nn::Linear,
    fc2: nn::Linear,
}

/// For `c_in` x `h` x `w` images (h and w divisible by 4) and `classes` outputs.
pub fn small_cnn(vs: &nn::Path, c_in: i64, h: i64, w: i64, classes: i64) -> SmallCnn {
    small_cnn_with_width(vs, c_in, h, w, classes, 32)
}

/// The small CNN with `width` channels in the first convolution (32 by default), twice as many
/// in the second and four times as many hidden units: the width ablation of `enlighten analyze`.
pub fn small_cnn_with_width(vs: &nn::Path, c_in: i64, h: i64, w: i64, classes: i64, width: i64) -> SmallCnn {
    SmallCnn {
        conv1: conv3x3(vs / "conv1", c_in, width, 1),
        bn1: nn::batch_norm2d(vs / "bn1", width, Default::default()),
        conv2: conv3x3(vs / "conv2", width, 2 * width, 1),
        bn2: nn::batch_norm2d(vs / "bn2", 2 * width, Default::default()),
        fc1: nn::linear(vs / "fc1", 2 * width * (h / 4) * (w / 4), 4 * width, Default::default()),
        fc2: nn::linear(vs / "fc2", 4 * width, classes, Default::default()),
    }
}

impl Model for SmallCnn {
    fn forward(&self, x: &Tensor, train: bool, probe: bool) -> (Tensor, Vec<Tensor>) {
        let mut p = Probes::new(probe);
        let y = p
            .relu(self.bn1.forward_t(&self.conv1.forward(x), train))
            .max_pool2d_default(2);
        let y = p
            .relu(self.bn2.forward_t(&self.conv2.forward(&y), train))
            .max_pool2d_default(2);
        let y = p.relu(self.fc1.forward(&y.flatten(1, -1)));
        (self.fc2.forward(&y), p.into_vec())
    }
}

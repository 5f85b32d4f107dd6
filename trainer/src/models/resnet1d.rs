//! The 1-D ResNet of Wang et al. (2017), the standard deep baseline for UCR/UEA classification:
//! three residual blocks of conv(8)-conv(5)-conv(3) with batch norm, 64-128-128 channels, global
//! average pooling over time, a linear head. `width` scales the channels.

use tch::nn::{self, Module, ModuleT};
use tch::Tensor;

use super::{Model, Probes};

#[derive(Debug)]
struct Block {
    convs: Vec<(nn::Conv1D, nn::BatchNorm)>,
    /// A 1x1 projection with batch norm when the channel count changes.
    shortcut: Option<(nn::Conv1D, nn::BatchNorm)>,
}

impl Block {
    fn new(vs: nn::Path, c_in: i64, c_out: i64) -> Block {
        let conv = |name: &str, c_in: i64, k: i64| {
            // "Same" padding for the odd kernels; the even kernel 8 pads 4 and drops the extra step.
            let cfg = nn::ConvConfig {
                padding: k / 2,
                bias: false,
                ..Default::default()
            };
            (
                nn::conv1d(&vs / name, c_in, c_out, k, cfg),
                nn::batch_norm1d(&vs / format!("{name}_bn"), c_out, Default::default()),
            )
        };
        Block {
            convs: vec![conv("conv1", c_in, 8), conv("conv2", c_out, 5), conv("conv3", c_out, 3)],
            shortcut: (c_in != c_out).then(|| {
                let cfg = nn::ConvConfig {
                    bias: false,
                    ..Default::default()
                };
                (
                    nn::conv1d(&vs / "shortcut", c_in, c_out, 1, cfg),
                    nn::batch_norm1d(&vs / "shortcut_bn", c_out, Default::default()),
                )
            }),
        }
    }

    fn forward(&self, x: &Tensor, train: bool, p: &mut Probes) -> Tensor {
        let t = x.size()[2];
        let mut y = x.shallow_clone();
        for (i, (conv, bn)) in self.convs.iter().enumerate() {
            y = bn.forward_t(&conv.forward(&y).narrow(2, 0, t), train);
            if i + 1 < self.convs.len() {
                y = p.relu(y);
            }
        }
        let skip = match &self.shortcut {
            Some((conv, bn)) => bn.forward_t(&conv.forward(x), train),
            None => x.shallow_clone(),
        };
        p.relu(y + skip)
    }
}

#[derive(Debug)]
pub struct ResNet1d {
    blocks: Vec<Block>,
    head: nn::Linear,
}

/// For series with `c_in` channels and `classes` outputs; `width` is the first block's channel
/// count (64 in the original), the others have twice as many.
pub fn resnet1d(vs: &nn::Path, c_in: i64, classes: i64, width: i64) -> ResNet1d {
    let widths = [width, 2 * width, 2 * width];
    let mut c = c_in;
    let blocks = widths
        .iter()
        .enumerate()
        .map(|(i, &w)| {
            let b = Block::new(vs / format!("block{i}"), c, w);
            c = w;
            b
        })
        .collect();
    ResNet1d {
        blocks,
        head: nn::linear(vs / "head", c, classes, Default::default()),
    }
}

impl Model for ResNet1d {
    fn forward(&self, x: &Tensor, train: bool, probe: bool) -> (Tensor, Vec<Tensor>) {
        let mut p = Probes::new(probe);
        let mut y = x.shallow_clone();
        for b in &self.blocks {
            y = b.forward(&y, train, &mut p);
        }
        (self.head.forward(&y.mean_dim(2, false, y.kind())), p.into_vec())
    }
}

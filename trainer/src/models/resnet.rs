//! ResNet18 with the CIFAR stem (3x3 convolution, no max-pool) and PreActResNet18, as in the
//! CIFAR training code the paper's experiments follow; ResNet50 with ImageNet's stem (7x7
//! stride 2, max-pool; torchvision's layout, stride in the 3x3 convolution) and PreActResNet50
//! with the CIFAR stem (bottleneck blocks, expansion 4).

use tch::nn::{self, Module, ModuleT};
use tch::Tensor;

use super::{conv3x3, Model, Probes};

/// A 1x1 strided projection on the shortcut when the shape changes.
#[derive(Debug)]
struct Shortcut {
    conv: nn::Conv2D,
    bn: Option<nn::BatchNorm>,
}

impl Shortcut {
    fn new(vs: nn::Path, c_in: i64, c_out: i64, stride: i64, with_bn: bool) -> Option<Shortcut> {
        (stride != 1 || c_in != c_out).then(|| Shortcut {
            conv: nn::conv2d(
                &vs / "conv",
                c_in,
                c_out,
                1,
                nn::ConvConfig {
                    stride,
                    bias: false,
                    ..Default::default()
                },
            ),
            bn: with_bn.then(|| nn::batch_norm2d(&vs / "bn", c_out, Default::default())),
        })
    }

    fn forward(this: &Option<Shortcut>, x: &Tensor, train: bool) -> Tensor {
        match this {
            None => x.shallow_clone(),
            Some(s) => {
                let y = s.conv.forward(x);
                match &s.bn {
                    Some(bn) => bn.forward_t(&y, train),
                    None => y,
                }
            }
        }
    }
}

/// conv-BN-ReLU-conv-BN, plus the shortcut, then ReLU.
#[derive(Debug)]
struct BasicBlock {
    conv1: nn::Conv2D,
    bn1: nn::BatchNorm,
    conv2: nn::Conv2D,
    bn2: nn::BatchNorm,
    shortcut: Option<Shortcut>,
}

/// BN-ReLU-conv-BN-ReLU-conv, plus the shortcut (taken after the first BN-ReLU when projecting).
#[derive(Debug)]
struct PreActBlock {
    bn1: nn::BatchNorm,
    conv1: nn::Conv2D,
    bn2: nn::BatchNorm,
    conv2: nn::Conv2D,
    shortcut: Option<Shortcut>,
}

/// 1x1 reduce, 3x3 (the stride), 1x1 expand, each with BN (ReLU after the first two), plus the
/// shortcut, then ReLU.
#[derive(Debug)]
struct Bottleneck {
    convs: [nn::Conv2D; 3],
    bns: [nn::BatchNorm; 3],
    shortcut: Option<Shortcut>,
}

/// BN-ReLU before each of the three convolutions; the projection shortcut after the first BN-ReLU.
#[derive(Debug)]
struct PreActBottleneck {
    bns: [nn::BatchNorm; 3],
    convs: [nn::Conv2D; 3],
    shortcut: Option<Shortcut>,
}

#[derive(Debug)]
enum Block {
    Basic(BasicBlock),
    PreAct(PreActBlock),
    Bottleneck(Bottleneck),
    PreActBottleneck(PreActBottleneck),
}

fn conv1x1(vs: nn::Path, c_in: i64, c_out: i64) -> nn::Conv2D {
    nn::conv2d(
        vs,
        c_in,
        c_out,
        1,
        nn::ConvConfig {
            bias: false,
            ..Default::default()
        },
    )
}

/// The three convolutions of a bottleneck from `c_in` through `width` to `4 width`.
fn bottleneck_convs(vs: &nn::Path, c_in: i64, width: i64, stride: i64) -> [nn::Conv2D; 3] {
    [
        conv1x1(vs / "conv1", c_in, width),
        conv3x3(vs / "conv2", width, width, stride),
        conv1x1(vs / "conv3", width, 4 * width),
    ]
}

impl Block {
    fn new(vs: nn::Path, c_in: i64, c_out: i64, stride: i64, preact: bool) -> Block {
        if preact {
            Block::PreAct(PreActBlock {
                bn1: nn::batch_norm2d(&vs / "bn1", c_in, Default::default()),
                conv1: conv3x3(&vs / "conv1", c_in, c_out, stride),
                bn2: nn::batch_norm2d(&vs / "bn2", c_out, Default::default()),
                conv2: conv3x3(&vs / "conv2", c_out, c_out, 1),
                shortcut: Shortcut::new(&vs / "shortcut", c_in, c_out, stride, false),
            })
        } else {
            Block::Basic(BasicBlock {
                conv1: conv3x3(&vs / "conv1", c_in, c_out, stride),
                bn1: nn::batch_norm2d(&vs / "bn1", c_out, Default::default()),
                conv2: conv3x3(&vs / "conv2", c_out, c_out, 1),
                bn2: nn::batch_norm2d(&vs / "bn2", c_out, Default::default()),
                shortcut: Shortcut::new(&vs / "shortcut", c_in, c_out, stride, true),
            })
        }
    }

    /// A bottleneck block from `c_in` to `4 width` channels.
    fn bottleneck(vs: nn::Path, c_in: i64, width: i64, stride: i64, preact: bool) -> Block {
        let bn = |name: &str, c: i64| nn::batch_norm2d(&vs / name, c, Default::default());
        if preact {
            Block::PreActBottleneck(PreActBottleneck {
                bns: [bn("bn1", c_in), bn("bn2", width), bn("bn3", width)],
                convs: bottleneck_convs(&vs, c_in, width, stride),
                shortcut: Shortcut::new(&vs / "shortcut", c_in, 4 * width, stride, false),
            })
        } else {
            Block::Bottleneck(Bottleneck {
                convs: bottleneck_convs(&vs, c_in, width, stride),
                bns: [bn("bn1", width), bn("bn2", width), bn("bn3", 4 * width)],
                shortcut: Shortcut::new(&vs / "shortcut", c_in, 4 * width, stride, true),
            })
        }
    }

    fn forward(&self, x: &Tensor, train: bool, p: &mut Probes) -> Tensor {
        match self {
            Block::Bottleneck(b) => {
                let mut y = x.shallow_clone();
                for (i, (conv, bn)) in b.convs.iter().zip(&b.bns).enumerate() {
                    y = bn.forward_t(&conv.forward(&y), train);
                    if i < 2 {
                        y = p.relu(y);
                    }
                }
                p.relu(y + Shortcut::forward(&b.shortcut, x, train))
            }
            Block::PreActBottleneck(b) => {
                let a = p.relu(b.bns[0].forward_t(x, train));
                let short = if b.shortcut.is_some() {
                    Shortcut::forward(&b.shortcut, &a, train)
                } else {
                    x.shallow_clone()
                };
                let y = b.convs[0].forward(&a);
                let y = b.convs[1].forward(&p.relu(b.bns[1].forward_t(&y, train)));
                let y = b.convs[2].forward(&p.relu(b.bns[2].forward_t(&y, train)));
                y + short
            }
            Block::Basic(b) => {
                let y = p.relu(b.bn1.forward_t(&b.conv1.forward(x), train));
                let y = b.bn2.forward_t(&b.conv2.forward(&y), train);
                p.relu(y + Shortcut::forward(&b.shortcut, x, train))
            }
            Block::PreAct(b) => {
                let a = p.relu(b.bn1.forward_t(x, train));
                let short = if b.shortcut.is_some() {
                    Shortcut::forward(&b.shortcut, &a, train)
                } else {
                    x.shallow_clone()
                };
                let y = b.conv1.forward(&a);
                let y = b.conv2.forward(&p.relu(b.bn2.forward_t(&y, train)));
                y + short
            }
        }
    }
}

/// ResNet18/50 or PreActResNet18/50.
#[derive(Debug)]
pub struct ResNet {
    stem: nn::Conv2D,
    stem_bn: Option<nn::BatchNorm>,
    /// ImageNet's stem: the 3x3 stride-2 max-pool after the first BN-ReLU.
    max_pool: bool,
    blocks: Vec<Block>,
    /// PreAct: the BN-ReLU before pooling.
    final_bn: Option<nn::BatchNorm>,
    fc: nn::Linear,
}

fn build(vs: &nn::Path, c_in: i64, classes: i64, preact: bool) -> ResNet {
    let mut blocks = Vec::new();
    let mut c = 64;
    for (stage, (width, stride)) in [(64, 1), (128, 2), (256, 2), (512, 2)].into_iter().enumerate() {
        for i in 0..2 {
            let s = if i == 0 { stride } else { 1 };
            blocks.push(Block::new(vs / format!("layer{}", stage + 1) / i, c, width, s, preact));
            c = width;
        }
    }
    ResNet {
        stem: conv3x3(vs / "conv1", c_in, 64, 1),
        stem_bn: (!preact).then(|| nn::batch_norm2d(vs / "bn1", 64, Default::default())),
        max_pool: false,
        blocks,
        final_bn: preact.then(|| nn::batch_norm2d(vs / "bn_final", 512, Default::default())),
        fc: nn::linear(vs / "fc", 512, classes, Default::default()),
    }
}

/// ResNet18 with the CIFAR stem: 11,173,962 parameters for 3 channels and 10 classes.
pub fn resnet18(vs: &nn::Path, c_in: i64, classes: i64) -> ResNet {
    build(vs, c_in, classes, false)
}

/// PreActResNet18 (He et al., "Identity Mappings in Deep Residual Networks").
pub fn preact_resnet18(vs: &nn::Path, c_in: i64, classes: i64) -> ResNet {
    build(vs, c_in, classes, true)
}

/// Bottleneck ResNets of 3, 4, 6, 3 blocks (50 layers), widths 64-512 expanded 4x: ResNet50 with
/// ImageNet's stem (25,557,032 parameters for 1,000 classes, the published 25.56M) or
/// PreActResNet50 with the CIFAR stem.
fn build50(vs: &nn::Path, c_in: i64, classes: i64, preact: bool) -> ResNet {
    let mut blocks = Vec::new();
    let mut c = 64;
    for (stage, (width, n, stride)) in [(64, 3, 1), (128, 4, 2), (256, 6, 2), (512, 3, 2)]
        .into_iter()
        .enumerate()
    {
        for i in 0..n {
            let s = if i == 0 { stride } else { 1 };
            blocks.push(Block::bottleneck(
                vs / format!("layer{}", stage + 1) / i,
                c,
                width,
                s,
                preact,
            ));
            c = 4 * width;
        }
    }
    let stem = if preact {
        conv3x3(vs / "conv1", c_in, 64, 1)
    } else {
        nn::conv2d(
            vs / "conv1",
            c_in,
            64,
            7,
            nn::ConvConfig {
                stride: 2,
                padding: 3,
                bias: false,
                ..Default::default()
            },
        )
    };
    ResNet {
        stem,
        stem_bn: (!preact).then(|| nn::batch_norm2d(vs / "bn1", 64, Default::default())),
        max_pool: !preact,
        blocks,
        final_bn: preact.then(|| nn::batch_norm2d(vs / "bn_final", c, Default::default())),
        fc: nn::linear(vs / "fc", c, classes, Default::default()),
    }
}

/// ResNet50 (torchvision's layout, ImageNet stem) for `c_in` channels and `classes` outputs.
pub fn resnet50(vs: &nn::Path, c_in: i64, classes: i64) -> ResNet {
    build50(vs, c_in, classes, false)
}

/// PreActResNet50 with the CIFAR stem (He et al.'s pre-activation bottlenecks), as the paper's
/// CIFAR-100 experiments use.
pub fn preact_resnet50(vs: &nn::Path, c_in: i64, classes: i64) -> ResNet {
    build50(vs, c_in, classes, true)
}

impl Model for ResNet {
    fn forward(&self, x: &Tensor, train: bool, probe: bool) -> (Tensor, Vec<Tensor>) {
        let mut p = Probes::new(probe);
        let mut y = self.stem.forward(x);
        if let Some(bn) = &self.stem_bn {
            y = p.relu(bn.forward_t(&y, train));
        }
        if self.max_pool {
            y = y.max_pool2d([3, 3], [2, 2], [1, 1], [1, 1], false);
        }
        for b in &self.blocks {
            y = b.forward(&y, train, &mut p);
        }
        if let Some(bn) = &self.final_bn {
            y = p.relu(bn.forward_t(&y, train));
        }
        let pooled = y.adaptive_avg_pool2d([1, 1]).flatten(1, -1);
        (self.fc.forward(&pooled), p.into_vec())
    }
}

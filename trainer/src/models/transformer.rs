//! Pre-norm transformers: a decoder-only character LM (causal attention, ReLU MLP so its probes
//! have exact zeros) and Vision Transformers (class token, GELU MLP): ViT-tiny for 28/32-pixel
//! images (patch 4), and the paper's ViT-S/16 and ViT-T/16 at 224 pixels and patch-8 ViT-S at 64.

use tch::nn::{self, Module};
use tch::Tensor;

use super::{Model, Probes};

/// Width (model dimension), depth (blocks) and attention heads.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct TransformerDims {
    pub width: i64,
    pub depth: i64,
    pub heads: i64,
}

impl TransformerDims {
    /// ViT-Ti/4: 192 wide, 12 blocks, 3 heads.
    pub const VIT_TINY: TransformerDims = TransformerDims {
        width: 192,
        depth: 12,
        heads: 3,
    };
    /// ViT-S (Dosovitskiy et al.; Touvron et al.'s DeiT-S): 384 wide, 12 blocks, 6 heads.
    pub const VIT_SMALL: TransformerDims = TransformerDims {
        width: 384,
        depth: 12,
        heads: 6,
    };
    /// A char LM that trains on 2 CPU cores: 128 wide, 4 blocks, 4 heads.
    pub const CHAR_SMALL: TransformerDims = TransformerDims {
        width: 128,
        depth: 4,
        heads: 4,
    };
}

#[derive(Debug)]
struct Block {
    ln1: nn::LayerNorm,
    qkv: nn::Linear,
    proj: nn::Linear,
    ln2: nn::LayerNorm,
    fc1: nn::Linear,
    fc2: nn::Linear,
    heads: i64,
    causal: bool,
    gelu: bool,
}

impl Block {
    fn new(vs: nn::Path, d: i64, heads: i64, causal: bool, gelu: bool) -> Block {
        let ln = |name: &str| nn::layer_norm(&vs / name, vec![d], Default::default());
        Block {
            ln1: ln("ln1"),
            qkv: nn::linear(&vs / "qkv", d, 3 * d, Default::default()),
            proj: nn::linear(&vs / "proj", d, d, Default::default()),
            ln2: ln("ln2"),
            fc1: nn::linear(&vs / "fc1", d, 4 * d, Default::default()),
            fc2: nn::linear(&vs / "fc2", 4 * d, d, Default::default()),
            heads,
            causal,
            gelu,
        }
    }

    fn forward(&self, x: &Tensor, p: &mut Probes) -> Tensor {
        let s = x.size();
        let (b, t, d) = (s[0], s[1], s[2]);
        let qkv = self
            .qkv
            .forward(&self.ln1.forward(x))
            .view([b, t, 3, self.heads, d / self.heads])
            .permute([2, 0, 3, 1, 4]);
        let (q, k, v) = (qkv.get(0), qkv.get(1), qkv.get(2));
        let a = Tensor::scaled_dot_product_attention(&q, &k, &v, None::<Tensor>, 0.0, self.causal, None, false);
        let x = x + self.proj.forward(&a.transpose(1, 2).reshape([b, t, d]));
        let h = self.fc1.forward(&self.ln2.forward(&x));
        let h = if self.gelu { p.gelu(h) } else { p.relu(h) };
        x + self.fc2.forward(&h)
    }
}

fn blocks(vs: &nn::Path, dims: TransformerDims, causal: bool, gelu: bool) -> Vec<Block> {
    (0..dims.depth)
        .map(|i| Block::new(vs / format!("block{i}"), dims.width, dims.heads, causal, gelu))
        .collect()
}

/// Decoder-only character LM: token and learned position embeddings, causal blocks, a final
/// layer norm and a linear head over the vocabulary.
#[derive(Debug)]
pub struct CharTransformer {
    tokens: nn::Embedding,
    positions: Tensor,
    blocks: Vec<Block>,
    ln: nn::LayerNorm,
    head: nn::Linear,
}

/// For a `vocab`-symbol alphabet and contexts of at most `context` tokens.
pub fn char_transformer(vs: &nn::Path, vocab: i64, context: i64, dims: TransformerDims) -> CharTransformer {
    let d = dims.width;
    CharTransformer {
        tokens: nn::embedding(vs / "tokens", vocab, d, Default::default()),
        positions: vs.var("positions", &[context, d], nn::Init::Randn { mean: 0.0, stdev: 0.02 }),
        blocks: blocks(&(vs / "blocks"), dims, true, false),
        ln: nn::layer_norm(vs / "ln", vec![d], Default::default()),
        head: nn::linear(vs / "head", d, vocab, Default::default()),
    }
}

impl Model for CharTransformer {
    /// Int64 tokens `[B, T]` (T <= context) to logits `[B, T, vocab]`.
    fn forward(&self, x: &Tensor, _train: bool, probe: bool) -> (Tensor, Vec<Tensor>) {
        let mut p = Probes::new(probe);
        let t = x.size()[1];
        let mut h = self.tokens.forward(x) + self.positions.narrow(0, 0, t);
        for b in &self.blocks {
            h = b.forward(&h, &mut p);
        }
        (self.head.forward(&self.ln.forward(&h)), p.into_vec())
    }
}

/// A Vision Transformer: `patch` x `patch` patches embedded by a strided convolution, a class
/// token, learned positions, non-causal blocks with GELU MLPs, the class token's features after
/// the final norm to the head (timm's `vit_*_patch*` layout, so its parameter counts).
#[derive(Debug)]
pub struct Vit {
    patch: nn::Conv2D,
    cls: Tensor,
    positions: Tensor,
    blocks: Vec<Block>,
    ln: nn::LayerNorm,
    head: nn::Linear,
}

/// The ViT of small images (patch 4).
pub type VitTiny = Vit;

/// For `c_in` x `size` x `size` images (size divisible by 4) and `classes` outputs: patch 4.
pub fn vit_tiny(vs: &nn::Path, c_in: i64, size: i64, classes: i64, dims: TransformerDims) -> Vit {
    vit(vs, c_in, size, 4, classes, dims)
}

/// ViT-S/16 at 224 pixels: 22,050,664 parameters for 1,000 classes (the published 22.05M).
pub fn vit_s16(vs: &nn::Path, size: i64, classes: i64) -> Vit {
    vit(vs, 3, size, 16, classes, TransformerDims::VIT_SMALL)
}

/// ViT-T/16 at 224 pixels: 5,717,416 parameters for 1,000 classes (the published 5.72M).
pub fn vit_t16(vs: &nn::Path, size: i64, classes: i64) -> Vit {
    vit(vs, 3, size, 16, classes, TransformerDims::VIT_TINY)
}

/// ViT-S with 8 x 8 patches, the paper's Tiny-ImageNet model at 64 pixels (64 patches).
pub fn vit_s8(vs: &nn::Path, size: i64, classes: i64) -> Vit {
    vit(vs, 3, size, 8, classes, TransformerDims::VIT_SMALL)
}

/// A ViT for `c_in` x `size` x `size` images (size divisible by `patch`).
pub fn vit(vs: &nn::Path, c_in: i64, size: i64, patch: i64, classes: i64, dims: TransformerDims) -> Vit {
    let d = dims.width;
    let patches = (size / patch) * (size / patch);
    Vit {
        patch: nn::conv2d(
            vs / "patch",
            c_in,
            d,
            patch,
            nn::ConvConfig {
                stride: patch,
                ..Default::default()
            },
        ),
        cls: vs.var("cls", &[1, 1, d], nn::Init::Randn { mean: 0.0, stdev: 0.02 }),
        positions: vs.var(
            "positions",
            &[1, patches + 1, d],
            nn::Init::Randn { mean: 0.0, stdev: 0.02 },
        ),
        blocks: blocks(&(vs / "blocks"), dims, false, true),
        ln: nn::layer_norm(vs / "ln", vec![d], Default::default()),
        head: nn::linear(vs / "head", d, classes, Default::default()),
    }
}

impl Model for Vit {
    /// The probes are post-GELU (no exact zeros: count them with an `eps`); the last probe is
    /// not the penultimate feature, the class token after the final norm is.
    fn forward(&self, x: &Tensor, _train: bool, probe: bool) -> (Tensor, Vec<Tensor>) {
        let mut p = Probes::new(probe);
        let patches = self.patch.forward(x).flatten(2, -1).transpose(1, 2); // [B, N, d]
        let b = patches.size()[0];
        let cls = self.cls.expand([b, 1, -1], false).to_kind(patches.kind());
        let mut h = Tensor::cat(&[cls, patches], 1) + &self.positions;
        for blk in &self.blocks {
            h = blk.forward(&h, &mut p);
        }
        let features = self.ln.forward(&h.select(1, 0));
        (self.head.forward(&features), p.into_vec())
    }

    fn probe_eps(&self) -> Option<f64> {
        Some(1e-2)
    }
}

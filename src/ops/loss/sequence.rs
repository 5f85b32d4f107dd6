//! Language models: logits `[B, T, V]` and tokens `[B, T]`. Per-token cross-entropy from the
//! fused kernel, then either each sequence's mean over its non-ignored tokens is ranked and whole
//! sequences are removed (the default), or tokens are ranked individually.

use tch::{Kind, Tensor};

use super::{differentiable, remove_highest, CrossEntropy, LossOutput, Targets};
use crate::error::{Error, Result};

/// What High-Loss Removal ranks in a language-model batch.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum SequenceRank {
    /// Rank sequences by their mean token loss; the loss is the mean over kept sequences of
    /// each sequence's mean token loss. `per_sample` and `keep` are `[B]`.
    #[default]
    PerSequence,
    /// Rank tokens; the loss is the mean over kept tokens. `per_sample` and `keep` are `[B, T]`.
    PerToken,
}

/// The language-model loss op: next-token cross-entropy of logits `[B, T, V]` against tokens
/// `[B, T]`, with High-Loss Removal by sequence or by token. Sequences whose tokens are all
/// `ignore_index` are ignored (never ranked, not counted). Same forms as [`CrossEntropy`].
#[derive(Debug, Clone, Copy, PartialEq, Default)]
pub struct LmCrossEntropy {
    /// Label smoothing eps in [0, 1].
    pub label_smoothing: f64,
    /// Tokens equal to this are ignored (padding): loss 0, no gradient, not counted.
    pub ignore_index: Option<i64>,
    /// High-Loss Removal share r in [0, 1) of the sequences (or tokens) ranked.
    pub drop_share: f64,
    /// Whether sequences or tokens are ranked.
    pub rank: SequenceRank,
}

impl LmCrossEntropy {
    /// The mean loss over kept sequences (or tokens), differentiable with respect to `logits`.
    pub fn forward(&self, logits: &Tensor, tokens: &Tensor) -> Result<Tensor> {
        Ok(self.forward_with_stats(logits, tokens)?.loss)
    }

    /// [`forward`](Self::forward) with the per-sequence (or per-token) losses, keep mask and counts.
    pub fn forward_with_stats(&self, logits: &Tensor, tokens: &Tensor) -> Result<LossOutput> {
        differentiable(logits, |input, grad_kind| self.launch(input, tokens, grad_kind))
    }

    /// The loss and the kernel's gradient `d loss / d logits` as plain tensors, no autograd node.
    pub fn loss_and_grad(&self, logits: &Tensor, tokens: &Tensor) -> Result<LossOutput> {
        self.launch(logits, tokens, Some(logits.kind()))
    }

    /// [`loss_and_grad`](Self::loss_and_grad) with the gradient in f32 whatever the logits'
    /// dtype, for a gradient attached later under mixed precision (see
    /// [`CrossEntropy::loss_and_grad_f32`]).
    pub fn loss_and_grad_f32(&self, logits: &Tensor, tokens: &Tensor) -> Result<LossOutput> {
        self.launch(logits, tokens, Some(super::NODE_GRAD_KIND))
    }

    /// The cross-entropy of one token.
    pub(crate) fn token_loss(&self) -> CrossEntropy {
        CrossEntropy {
            label_smoothing: self.label_smoothing,
            ignore_index: self.ignore_index,
            drop_share: self.drop_share,
        }
    }

    /// The output with a gradient of dtype `grad_kind`, or without one (None).
    fn launch(&self, logits: &Tensor, tokens: &Tensor, grad_kind: Option<Kind>) -> Result<LossOutput> {
        let size = logits.size();
        if size.len() != 3 {
            return Err(Error::shape("logits", "[B, T, V]", &size));
        }
        let (b, t, v) = (size[0], size[1], size[2]);
        if tokens.size() != [b, t] {
            return Err(Error::shape(
                "tokens",
                format!("[{b}, {t}] (the logits' batch and time)"),
                &tokens.size(),
            ));
        }
        let flat = logits.f_reshape([b * t, v])?;
        let flat_tokens = tokens.f_reshape([b * t])?;
        let run = |opts: &CrossEntropy| opts.compute(&flat, Targets::Index(&flat_tokens), grad_kind);
        let opts = self.token_loss();
        if self.rank == SequenceRank::PerToken {
            let out = run(&opts)?;
            return Ok(LossOutput {
                per_sample: out.per_sample.view([b, t]),
                keep: out.keep.view([b, t]),
                grad: out.grad.map(|g| g.view([b, t, v])),
                ..out
            });
        }
        // Token losses and a gradient weighted 1/n_valid_tokens, with nothing removed yet.
        let tok = run(&CrossEntropy {
            drop_share: 0.0,
            ..opts
        })?;
        let valid_tokens = tok.keep.view([b, t]);
        let n_tok = valid_tokens.sum_dim_intlist(1, false, Kind::Float);
        let seq_loss = tok.per_sample.view([b, t]).sum_dim_intlist(1, false, Kind::Float) / n_tok.clamp_min(1.0);
        let valid_seq = n_tok.gt(0.0);
        let sel = remove_highest(&seq_loss, Some(&valid_seq), self.drop_share)?;
        // Token gradient weight: from 1/n_valid_tokens to keep_b / (n_tok_b * n_kept_sequences).
        let grad = tok.grad.map(|g| {
            let kept = sel.keep.to_kind(Kind::Float);
            let factor = &kept * n_tok.sum(Kind::Float) / (n_tok.clamp_min(1.0) * kept.sum(Kind::Float).clamp_min(1.0));
            g.view([b, t, v]) * factor.view([b, 1, 1]).to_kind(g.kind())
        });
        Ok(LossOutput {
            correct: tok.correct,
            grad,
            ..sel
        })
    }
}

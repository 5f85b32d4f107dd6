//! Language models: logits `[B, T, V]` and tokens `[B, T]`. Per-token cross-entropy from the
//! fused kernel, then either each sequence's mean over its non-ignored tokens is ranked and whole
//! sequences are removed (the default), or tokens are ranked individually.

use tch::{Kind, Tensor};

use super::{attach_gradient, cross_entropy, remove_highest, CrossEntropy, LossOutput, Targets};
use crate::error::{Error, Result};

/// What High-Loss Removal ranks in a language-model batch.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SequenceRank {
    /// Rank sequences by their mean token loss; the loss is the mean over kept sequences of
    /// each sequence's mean token loss. `per_sample` and `keep` are `[B]`.
    PerSequence,
    /// Rank tokens; the loss is the mean over kept tokens. `per_sample` and `keep` are `[B, T]`.
    PerToken,
}

/// Cross-entropy of a language-model batch with High-Loss Removal by sequence or by token.
/// Sequences whose tokens are all `ignore_index` are ignored (never ranked, not counted).
pub fn lm_cross_entropy(
    logits: &Tensor,
    tokens: &Tensor,
    opts: &CrossEntropy,
    rank: SequenceRank,
    with_grad: bool,
) -> Result<LossOutput> {
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
    if rank == SequenceRank::PerToken {
        let out = cross_entropy(&flat, Targets::Index(&flat_tokens), opts, with_grad)?;
        return Ok(LossOutput {
            per_sample: out.per_sample.view([b, t]),
            keep: out.keep.view([b, t]),
            grad: out.grad.map(|g| g.view([b, t, v])),
            ..out
        });
    }
    // Token losses and a gradient weighted 1/n_valid_tokens, with nothing removed yet.
    let tok = cross_entropy(
        &flat,
        Targets::Index(&flat_tokens),
        &CrossEntropy {
            drop_share: 0.0,
            ..*opts
        },
        with_grad,
    )?;
    let valid_tokens = tok.keep.view([b, t]);
    let n_tok = valid_tokens.sum_dim_intlist(1, false, Kind::Float);
    let seq_loss = tok.per_sample.view([b, t]).sum_dim_intlist(1, false, Kind::Float) / n_tok.clamp_min(1.0);
    let valid_seq = n_tok.gt(0.0);
    let sel = remove_highest(&seq_loss, Some(&valid_seq), opts.drop_share)?;
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

/// The differentiable form of [`lm_cross_entropy`] (see `cross_entropy_autograd`).
pub fn lm_cross_entropy_autograd(
    logits: &Tensor,
    tokens: &Tensor,
    opts: &CrossEntropy,
    rank: SequenceRank,
) -> Result<(Tensor, LossOutput)> {
    attach_gradient(logits, lm_cross_entropy(&logits.detach(), tokens, opts, rank, true)?)
}

//! The trainer's optimisers, written out so their state can be checkpointed (tch's optimisers
//! do not expose it): SGD with momentum, Nesterov and L2 weight decay (`torch.optim.SGD`), and
//! AdamW with decoupled weight decay (`torch.optim.AdamW`); optional gradient clipping by the
//! global norm, computed on the device (no host sync).

use tch::{no_grad, Kind, Tensor};

/// The update rule.
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum Rule {
    Sgd { momentum: f64, nesterov: bool },
    AdamW { beta1: f64, beta2: f64, eps: f64 },
}

#[derive(Debug)]
pub struct Optimizer {
    params: Vec<Tensor>,
    /// SGD: one momentum buffer per parameter. AdamW: first then second moments, interleaved.
    buffers: Vec<Tensor>,
    rule: Rule,
    weight_decay: f64,
    clip_norm: Option<f64>,
}

impl Optimizer {
    /// The optimiser `[optim]` of a configuration describes, over `params`.
    pub fn from_config(o: &super::config::OptimSection, params: Vec<Tensor>) -> Optimizer {
        let rule = match o.kind {
            super::config::OptimKind::Sgd => Rule::Sgd {
                momentum: o.momentum,
                nesterov: o.nesterov,
            },
            super::config::OptimKind::Adamw => Rule::AdamW {
                beta1: o.betas[0],
                beta2: o.betas[1],
                eps: o.eps,
            },
        };
        Optimizer::new(params, rule, o.weight_decay, o.clip_norm)
    }

    pub fn new(params: Vec<Tensor>, rule: Rule, weight_decay: f64, clip_norm: Option<f64>) -> Optimizer {
        let per_param = if matches!(rule, Rule::AdamW { .. }) { 2 } else { 1 };
        let buffers = params
            .iter()
            .flat_map(|p| (0..per_param).map(move |_| p.zeros_like()))
            .collect();
        Optimizer {
            params,
            buffers,
            rule,
            weight_decay,
            clip_norm,
        }
    }

    pub fn zero_grad(&mut self) {
        for p in &mut self.params {
            p.zero_grad();
        }
    }

    /// Scales the gradients so that their global norm is at most `max` (on the device).
    fn clip(&mut self, max: f64) {
        let grads: Vec<Tensor> = self.params.iter().map(|p| p.grad()).filter(|g| g.defined()).collect();
        if grads.is_empty() {
            return;
        }
        let squares: Vec<Tensor> = grads.iter().map(|g| g.square().sum(Kind::Float)).collect();
        let norm = Tensor::stack(&squares, 0).sum(Kind::Float).sqrt();
        let factor = (max / (norm + 1e-6)).clamp_max(1.0);
        for mut g in grads {
            let _ = g.g_mul_(&factor);
        }
    }

    /// One update with learning rate `lr`; `t` is the 1-based step number (AdamW's bias correction).
    pub fn step(&mut self, lr: f64, t: u64) {
        no_grad(|| {
            if let Some(max) = self.clip_norm {
                self.clip(max);
            }
            let wd = self.weight_decay;
            for (i, p) in self.params.iter_mut().enumerate() {
                let grad = p.grad();
                if !grad.defined() {
                    continue;
                }
                match self.rule {
                    Rule::Sgd { momentum, nesterov } => {
                        let g = if wd > 0.0 { &grad + &*p * wd } else { grad };
                        let b = &mut self.buffers[i];
                        let _ = b.g_mul_scalar_(momentum).g_add_(&g);
                        let d = if nesterov {
                            &g + &*b * momentum
                        } else {
                            b.shallow_clone()
                        };
                        let _ = p.g_sub_(&(d * lr));
                    }
                    Rule::AdamW { beta1, beta2, eps } => {
                        if wd > 0.0 {
                            let _ = p.g_mul_scalar_(1.0 - lr * wd);
                        }
                        let (mut m, mut v) = (
                            self.buffers[2 * i].shallow_clone(),
                            self.buffers[2 * i + 1].shallow_clone(),
                        );
                        let _ = m.g_mul_scalar_(beta1).g_add_(&(&grad * (1.0 - beta1)));
                        let _ = v.g_mul_scalar_(beta2).g_add_(&(grad.square() * (1.0 - beta2)));
                        let m_hat = &m / (1.0 - beta1.powi(t as i32));
                        let v_hat = &v / (1.0 - beta2.powi(t as i32));
                        let _ = p.g_sub_(&(m_hat / (v_hat.sqrt() + eps) * lr));
                    }
                }
            }
        });
    }

    /// The optimiser's state tensors, in a fixed order (for checkpoints).
    pub fn buffers(&self) -> &[Tensor] {
        &self.buffers
    }

    /// Restores tensors saved from [`Optimizer::buffers`].
    pub fn load_buffers(&mut self, saved: &[Tensor]) {
        no_grad(|| {
            for (b, s) in self.buffers.iter_mut().zip(saved) {
                b.copy_(s);
            }
        });
    }
}

/// Cosine decay to 0 over `total` steps after a linear warmup of `warmup` steps.
pub fn cosine_lr(base: f64, step: u64, warmup: u64, total: u64) -> f64 {
    if step < warmup {
        return base * (step + 1) as f64 / warmup as f64;
    }
    let t = (step - warmup) as f64 / (total - warmup).max(1) as f64;
    0.5 * base * (1.0 + (std::f64::consts::PI * t.min(1.0)).cos())
}

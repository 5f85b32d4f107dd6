//! SGD with momentum, Nesterov and decoupled-from-nothing (L2) weight decay, written out so its
//! state (the momentum buffers) can be checkpointed: tch's optimisers do not expose theirs.
//! The update is PyTorch's `torch.optim.SGD`:
//!   g = grad + wd p;  b = m b + g;  d = nesterov ? g + m b : b;  p -= lr d.

use tch::{no_grad, Tensor};

#[derive(Debug)]
pub struct Sgd {
    params: Vec<Tensor>,
    buffers: Vec<Tensor>,
    momentum: f64,
    nesterov: bool,
    weight_decay: f64,
}

impl Sgd {
    pub fn new(params: Vec<Tensor>, momentum: f64, nesterov: bool, weight_decay: f64) -> Sgd {
        let buffers = params.iter().map(|p| p.zeros_like()).collect();
        Sgd { params, buffers, momentum, nesterov, weight_decay }
    }

    pub fn zero_grad(&mut self) {
        for p in &mut self.params {
            p.zero_grad();
        }
    }

    pub fn step(&mut self, lr: f64) {
        no_grad(|| {
            for (p, b) in self.params.iter_mut().zip(&mut self.buffers) {
                let grad = p.grad();
                if !grad.defined() {
                    continue;
                }
                let g = if self.weight_decay > 0.0 { &grad + &*p * self.weight_decay } else { grad };
                let _ = b.g_mul_scalar_(self.momentum).g_add_(&g);
                let d = if self.nesterov { &g + &*b * self.momentum } else { b.shallow_clone() };
                let _ = p.g_sub_(&(d * lr));
            }
        });
    }

    /// The momentum buffers, in parameter order (for checkpoints).
    pub fn buffers(&self) -> &[Tensor] {
        &self.buffers
    }

    /// Restores buffers saved by [`Sgd::buffers`].
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

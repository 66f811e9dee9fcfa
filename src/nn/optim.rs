//! Gradient optimizers: take `Var`s and the gradients of a backward pass, and update the
//! `Var`s in place with PyTorch's exact rules.
//!
//! candle-nn's own SGD has no momentum and its AdamW cannot express Adam's coupled weight
//! decay, so both are written here. Each update follows `torch.optim` (version 2) with its
//! defaults for the options a recipe cannot set: no dampening, no `amsgrad`, no `maximize`.
//! A parameter without a gradient is left alone, as PyTorch skips parameters whose `.grad` is
//! `None`. The learning rate is given at every step, so schedules live outside.

use candle_core::backprop::GradStore;
use candle_core::{Result, Tensor, Var};

use crate::check::spec;

/// One optimizer over a fixed list of `Var`s.
pub trait Optimizer {
    /// Updates every variable from its gradient in `grads`, with learning rate `lr`.
    fn step(&mut self, grads: &GradStore, lr: f64) -> Result<()>;
}

/// The optimizer that `settings` asks for, or `None` for the gradient-free `random_search`.
pub fn build(settings: &spec::Optimizer, vars: Vec<Var>) -> Option<Box<dyn Optimizer>> {
    match *settings {
        spec::Optimizer::Sgd { momentum, weight_decay, nesterov, .. } => {
            Some(Box::new(Sgd::new(vars, momentum, weight_decay, nesterov)))
        }
        spec::Optimizer::Adam { beta1, beta2, eps, weight_decay, .. } => {
            Some(Box::new(Adam::new(vars, beta1, beta2, eps, weight_decay, false)))
        }
        spec::Optimizer::AdamW { beta1, beta2, eps, weight_decay, .. } => {
            Some(Box::new(Adam::new(vars, beta1, beta2, eps, weight_decay, true)))
        }
        spec::Optimizer::RandomSearch { .. } => None,
    }
}

/// Stochastic gradient descent with PyTorch's momentum:
///
/// ```text
/// g = grad + weight_decay * p
/// b = g                       (first step)
/// b = momentum * b + g        (later steps)
/// g = g + momentum * b        (nesterov)   or   g = b   (otherwise)
/// p = p - lr * g
/// ```
pub struct Sgd {
    vars: Vec<Var>,
    momentum: f64,
    weight_decay: f64,
    nesterov: bool,
    /// The momentum buffer of each variable, absent until its first step.
    buffers: Vec<Option<Tensor>>,
}

impl Sgd {
    pub fn new(vars: Vec<Var>, momentum: f64, weight_decay: f64, nesterov: bool) -> Self {
        let buffers = vec![None; vars.len()];
        Sgd { vars, momentum, weight_decay, nesterov, buffers }
    }
}

impl Optimizer for Sgd {
    fn step(&mut self, grads: &GradStore, lr: f64) -> Result<()> {
        for (var, buffer) in self.vars.iter().zip(self.buffers.iter_mut()) {
            let Some(grad) = grads.get(var) else { continue };
            let p = var.as_detached_tensor();
            let mut g = grad.detach();
            if self.weight_decay != 0.0 {
                g = (g + (&p * self.weight_decay)?)?;
            }
            if self.momentum != 0.0 {
                let b = match buffer.take() {
                    Some(b) => ((b * self.momentum)? + &g)?,
                    None => g.clone(),
                };
                g = if self.nesterov { (g + (&b * self.momentum)?)? } else { b.clone() };
                *buffer = Some(b);
            }
            var.set(&(p - (g * lr)?)?)?;
        }
        Ok(())
    }
}

/// Adam, or AdamW when `decoupled`, with PyTorch's bias correction:
///
/// ```text
/// p = p * (1 - lr * weight_decay)             (AdamW)
/// g = grad + weight_decay * p                 (Adam)
/// m = beta1 * m + (1 - beta1) * g
/// v = beta2 * v + (1 - beta2) * g^2
/// p = p - lr / (1 - beta1^t) * m / (sqrt(v) / sqrt(1 - beta2^t) + eps)
/// ```
pub struct Adam {
    vars: Vec<Var>,
    beta1: f64,
    beta2: f64,
    eps: f64,
    weight_decay: f64,
    decoupled: bool,
    /// The step count `t`, shared by all variables because each step updates them all.
    t: i32,
    /// First and second moments of each variable, absent until its first step.
    moments: Vec<Option<(Tensor, Tensor)>>,
}

impl Adam {
    pub fn new(
        vars: Vec<Var>,
        beta1: f64,
        beta2: f64,
        eps: f64,
        weight_decay: f64,
        decoupled: bool,
    ) -> Self {
        let moments = vec![None; vars.len()];
        Adam { vars, beta1, beta2, eps, weight_decay, decoupled, t: 0, moments }
    }
}

impl Optimizer for Adam {
    fn step(&mut self, grads: &GradStore, lr: f64) -> Result<()> {
        self.t = self.t.saturating_add(1);
        let bias1 = 1.0 - self.beta1.powi(self.t);
        let bias2_sqrt = (1.0 - self.beta2.powi(self.t)).sqrt();
        for (var, moments) in self.vars.iter().zip(self.moments.iter_mut()) {
            let Some(grad) = grads.get(var) else { continue };
            let mut p = var.as_detached_tensor();
            let mut g = grad.detach();
            if self.weight_decay != 0.0 {
                if self.decoupled {
                    p = (p * (1.0 - lr * self.weight_decay))?;
                } else {
                    g = (g + (&p * self.weight_decay)?)?;
                }
            }
            let (m, v) = match moments.take() {
                Some((m, v)) => (m, v),
                None => (g.zeros_like()?, g.zeros_like()?),
            };
            let m = ((m * self.beta1)? + (&g * (1.0 - self.beta1))?)?;
            let v = ((v * self.beta2)? + (g.sqr()? * (1.0 - self.beta2))?)?;
            let denom = ((v.sqrt()? / bias2_sqrt)? + self.eps)?;
            let p = (p - (m.div(&denom)? * (lr / bias1))?)?;
            var.set(&p)?;
            *moments = Some((m, v));
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use candle_core::Device;

    /// Steps `opt` on the loss `sum(p^2)` (gradient `2p`) and returns `p` after each step.
    fn run(opt: &mut dyn Optimizer, var: &Var, lr: f64, steps: usize) -> Result<Vec<Vec<f32>>> {
        let mut out = Vec::new();
        for _ in 0..steps {
            let loss = var.as_tensor().sqr()?.sum_all()?;
            opt.step(&loss.backward()?, lr)?;
            out.push(var.as_tensor().to_vec1()?);
        }
        Ok(out)
    }

    fn assert_close(got: &[f32], want: &[f32]) {
        for (g, w) in got.iter().zip(want) {
            assert!((g - w).abs() < 1e-6, "got {got:?}, want {want:?}");
        }
    }

    /// `torch.optim.SGD([p], lr=0.1, momentum=0.9)` on `sum(p^2)` from `p = [1, -2]`, worked
    /// by hand from the documented rule:
    /// step 1: `g = [2, -4]`, `b = g`, `p = [0.8, -1.6]`;
    /// step 2: `g = [1.6, -3.2]`, `b = 0.9 * [2, -4] + g = [3.4, -6.8]`, `p = [0.46, -0.92]`.
    #[test]
    fn sgd_momentum_two_steps() -> Result<()> {
        let var = Var::new(&[1f32, -2.], &Device::Cpu)?;
        let mut opt = Sgd::new(vec![var.clone()], 0.9, 0.0, false);
        let ps = run(&mut opt, &var, 0.1, 2)?;
        assert_close(&ps[0], &[0.8, -1.6]);
        assert_close(&ps[1], &[0.46, -0.92]);
        Ok(())
    }

    /// `torch.optim.SGD([p], lr=0.1, momentum=0.5, weight_decay=0.1, nesterov=True)` on
    /// `sum(p^2)` from `p = [1]`, by hand:
    /// step 1: `g = 2 + 0.1 = 2.1`, `b = 2.1`, `g = 2.1 + 0.5 * 2.1 = 3.15`, `p = 0.685`;
    /// step 2: `g = 1.37 + 0.0685 = 1.4385`, `b = 1.05 + 1.4385 = 2.4885`,
    /// `g = 1.4385 + 1.24425 = 2.68275`, `p = 0.685 - 0.268275 = 0.416725`.
    #[test]
    fn sgd_nesterov_with_weight_decay() -> Result<()> {
        let var = Var::new(&[1f32], &Device::Cpu)?;
        let mut opt = Sgd::new(vec![var.clone()], 0.5, 0.1, true);
        let ps = run(&mut opt, &var, 0.1, 2)?;
        assert_close(&ps[0], &[0.685]);
        assert_close(&ps[1], &[0.416725]);
        Ok(())
    }

    /// `torch.optim.AdamW([p], lr=0.1, weight_decay=0.01)` (betas 0.9, 0.999, eps 1e-8) on
    /// `sum(p^2)` from `p = [1, -2]`, one step by hand: decay gives `p = [0.999, -1.998]`;
    /// `m = [0.2, -0.4]`, `v = [0.004, 0.016]`; corrected `m = [2, -4]`, `v = [4, 16]`;
    /// the step is `0.1 * [2/2, -4/4] = [0.1, -0.1]` (eps moves it by under 1e-9), so
    /// `p = [0.899, -1.898]`.
    #[test]
    fn adamw_one_step() -> Result<()> {
        let var = Var::new(&[1f32, -2.], &Device::Cpu)?;
        let mut opt = Adam::new(vec![var.clone()], 0.9, 0.999, 1e-8, 0.01, true);
        let ps = run(&mut opt, &var, 0.1, 1)?;
        assert_close(&ps[0], &[0.899, -1.898]);
        Ok(())
    }

    /// `torch.optim.Adam([p], lr=0.1, weight_decay=0.5)` on `sum(p^2)` from `p = [1]`, one step
    /// by hand: `g = 2 + 0.5 = 2.5`; corrected `m = 2.5`, `v = 6.25`; `p = 1 - 0.1 = 0.9`.
    /// Coupled decay only changes the gradient, which Adam's first step normalises away.
    #[test]
    fn adam_one_step() -> Result<()> {
        let var = Var::new(&[1f32], &Device::Cpu)?;
        let mut opt = Adam::new(vec![var.clone()], 0.9, 0.999, 1e-8, 0.5, false);
        let ps = run(&mut opt, &var, 0.1, 1)?;
        assert_close(&ps[0], &[0.9]);
        Ok(())
    }
}

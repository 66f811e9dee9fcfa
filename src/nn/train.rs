//! The training loop: takes an architecture, starting weights, [`TrainSettings`] and data, and
//! returns trained weights with a per-epoch history.
//!
//! Each epoch shuffles the training samples with a generator forked from the caller's, cuts
//! them into mini-batches of `batch` (the last one smaller), and takes one optimizer step per
//! batch. The learning rate is set per epoch by the schedule. After each epoch the validation
//! split, when given and not empty, is scored without dropout.
//!
//! - Gradient optimizers (`sgd`, `adam`, `adamw`) run a backward pass over `Var`s and update
//!   them with the rules in [`optim`]; multilayer perceptrons on the CPU take the fused path of
//!   [`super::dense`] instead, which computes the same steps without candle's autograd.
//! - `random_search(sigma)` uses no gradients. For each mini-batch it computes the loss of the
//!   current weights, draws noise `N(0, sigma^2)` for every parameter, computes the loss of the
//!   perturbed weights on the same batch (with the same dropout masks, so the two losses are
//!   comparable), and keeps the perturbation only when that loss is strictly lower. The
//!   reported batch loss is the one of the weights kept; a perturbation whose loss is not
//!   finite is simply rejected. The schedule does not apply to `sigma`.
//! - Early stopping (`patience(k)`) watches the validation loss: an epoch improves only when
//!   its loss is strictly lower than the best so far, training stops once `k` epochs in a row
//!   have not improved, and the weights of the best epoch are returned. Without validation
//!   data there is nothing to watch, so patience is ignored and the last weights are returned.
//!
//! A loss that becomes NaN or infinite ends training at once with [`TrainError::NonFinite`].

use std::collections::BTreeMap;

use candle_core::{DType, Tensor, Var};
use tracing::{debug, trace};

use super::dense::Dense;
use super::metrics::{check_labels, loss, score};
use super::model::{arch_weights, forward};
use super::optim;
use super::quant::{fake_quantize, Scheme};
use super::Weights;
use crate::check::spec::{Arch, Loss, Schedule, Stop, TrainSettings};
use crate::rng::Rng;

/// The data of a training run. Features are `[n, ..arch.input]`, labels are class indices
/// `[n]` (u32).
#[derive(Debug, Clone, Copy)]
pub struct TrainData<'a> {
    pub train_x: &'a Tensor,
    pub train_y: &'a Tensor,
    /// Validation features and labels, scored after every epoch.
    pub val: Option<(&'a Tensor, &'a Tensor)>,
    pub classes: usize,
}

/// What one epoch measured.
#[derive(Debug, Clone, PartialEq)]
pub struct EpochStats {
    /// The epoch, counting from 1.
    pub epoch: usize,
    /// The learning rate of the epoch (the noise scale for `random_search`).
    pub lr: f64,
    /// The mean training loss over the epoch's batches, weighted by batch size.
    pub train_loss: f64,
    pub val_loss: Option<f64>,
    pub val_accuracy: Option<f64>,
}

/// The result of [`fit`].
#[derive(Debug, Clone)]
pub struct FitOutcome {
    /// Contiguous f32 tensors on the data's device, detached from any graph.
    pub weights: Weights,
    pub history: Vec<EpochStats>,
    /// The epoch whose weights were returned (1-based; 0 when no epoch ran).
    pub best_epoch: usize,
    pub stopped_early: bool,
}

/// Receives the stats of each epoch as training goes.
pub trait Progress {
    fn epoch(&self, stats: &EpochStats, total_epochs: usize);
}

/// No progress reporting.
impl Progress for () {
    fn epoch(&self, _stats: &EpochStats, _total_epochs: usize) {}
}

#[derive(thiserror::Error, miette::Diagnostic, Debug)]
pub enum TrainError {
    #[error("loss became {value} in epoch {epoch}")]
    #[diagnostic(
        code(recipe::train::non_finite),
        help("lower the learning rate, or scale the data")
    )]
    NonFinite { epoch: usize, value: f64 },
    #[error("weights became NaN or infinite in epoch {epoch}")]
    #[diagnostic(
        code(recipe::train::non_finite),
        help("lower the learning rate, or scale the data")
    )]
    NonFiniteWeights { epoch: usize },
    #[error("the training split is empty")]
    #[diagnostic(code(recipe::train::empty))]
    Empty,
    #[error("batch size must be at least 1")]
    #[diagnostic(code(recipe::train::batch))]
    ZeroBatch,
    #[error("the training split has {samples} samples but {labels} labels")]
    #[diagnostic(code(recipe::train::labels))]
    LabelCount { samples: usize, labels: usize },
    #[error("the model's output shape {output:?} does not fit {classes} classes")]
    #[diagnostic(code(recipe::train::classes))]
    Classes { output: Vec<usize>, classes: usize },
    #[error(transparent)]
    #[diagnostic(code(recipe::train::tensor))]
    Candle(#[from] candle_core::Error),
}

/// The learning rate of epoch `epoch` (0-based) of `epochs`, from the base rate `lr`.
///
/// Cosine follows PyTorch's `CosineAnnealingLR` with `T_max = epochs` and `eta_min = 0`,
/// stepped once per epoch. `step(every, gamma)` multiplies by `gamma` every `every` epochs; an
/// `every` of zero never steps.
pub fn schedule_lr(schedule: &Schedule, lr: f64, epoch: usize, epochs: usize) -> f64 {
    match *schedule {
        Schedule::Constant => lr,
        Schedule::Cosine if epochs == 0 => lr,
        Schedule::Cosine => {
            let progress = epoch as f64 / epochs as f64;
            lr * 0.5 * (1.0 + (std::f64::consts::PI * progress).cos())
        }
        Schedule::Step { every: 0, .. } => lr,
        Schedule::Step { every, gamma } => {
            let steps = i32::try_from(epoch / every).unwrap_or(i32::MAX);
            lr * gamma.powi(steps)
        }
    }
}

/// Trains `init` (weights of `arch`) with `settings` on `data`, drawing every random choice
/// from `rng`, and reports each epoch to `progress`.
///
/// Only the parameters of `arch` are trained and returned; other tensors of `init` are left
/// out. `init` is not changed.
pub fn fit(
    arch: &Arch,
    init: &Weights,
    settings: &TrainSettings,
    data: &TrainData,
    rng: &mut Rng,
    progress: &dyn Progress,
) -> Result<FitOutcome, TrainError> {
    fit_constrained(arch, init, settings, data, rng, progress, &Constraints::default())
}

/// What training must respect besides the loss.
#[derive(Debug, Clone, Default)]
pub struct Constraints {
    /// Weights multiplied by their mask (0 or 1 per entry, same shape) after every update, so
    /// that pruned weights stay exactly zero while the rest train.
    pub masks: Weights,
    /// Weights the forward pass sees fake-quantized: quantized and dequantized with their
    /// scheme, while the gradient flows straight through to the float weights underneath
    /// (the straight-through estimator of quantization-aware training).
    pub fake_quant: BTreeMap<String, Scheme>,
    /// Train on candle's autograd even where the fused path of [`super::dense`] applies, to
    /// compare the two.
    pub plain: bool,
}

/// [`fit`] under `constraints`.
///
/// Masking the weights after the step rather than the gradient before it also covers what a
/// gradient mask would miss: momentum and weight decay, which move a weight whose gradient is
/// zero, and the noise of `random_search`. Fake quantization applies to the gradient
/// optimizers and to validation scores; `random_search` perturbs and scores float weights.
pub fn fit_constrained(
    arch: &Arch,
    init: &Weights,
    settings: &TrainSettings,
    data: &TrainData,
    rng: &mut Rng,
    progress: &dyn Progress,
    constraints: &Constraints,
) -> Result<FitOutcome, TrainError> {
    let masks = &constraints.masks;
    let fake = &constraints.fake_quant;
    // Check what would otherwise fail deep inside a batch, or panic in `chunks`.
    let train_x = data.train_x.to_dtype(DType::F32)?;
    let train_y = data.train_y.to_dtype(DType::U32)?;
    let n = train_x.dim(0)?;
    if n == 0 {
        return Err(TrainError::Empty);
    }
    if settings.batch == 0 {
        return Err(TrainError::ZeroBatch);
    }
    if train_y.dims() != [n] {
        return Err(TrainError::LabelCount { samples: n, labels: train_y.elem_count() });
    }
    if arch.output() != [data.classes] {
        let output = arch.output().to_vec();
        return Err(TrainError::Classes { output, classes: data.classes });
    }
    check_labels(&train_y, data.classes)?;
    let dev = train_x.device().clone();
    let val = match data.val {
        Some((xs, ys)) if xs.dim(0)? > 0 => Some((xs.to_dtype(DType::F32)?, ys)),
        _ => None,
    };
    let patience = match (&settings.stop, &val) {
        (Some(Stop::Patience { epochs }), Some(_)) => Some(*epochs),
        _ => None,
    };

    let params = arch_weights(arch, init)?;
    // Models the fused path covers train there, on copies of their own.
    let mut fused = match constraints.plain || !fake.is_empty() {
        true => None,
        false => Dense::new(
            arch,
            &params,
            masks,
            &settings.optimizer,
            settings.loss,
            data.classes,
            (&train_x, &train_y),
        )?,
    };
    debug!(fused = fused.is_some(), "training path");
    // Otherwise every parameter becomes a `Var` with its own storage, so `init` stays as it
    // was; on the fused path there are none and the candle-side state below stays empty.
    let mut vars = Vec::with_capacity(params.len());
    if fused.is_none() {
        for (name, t) in params {
            vars.push((name, Var::from_tensor(&t.to_device(&dev)?.detach())?));
        }
    }
    let mut masked: Vec<(Var, Tensor)> = Vec::new();
    for (name, var) in &vars {
        if let Some(mask) = masks.get(name) {
            masked.push((var.clone(), mask.to_device(&dev)?.to_dtype(DType::F32)?));
        }
    }
    let apply_masks = || -> candle_core::Result<()> {
        for (var, mask) in &masked {
            // `w * 0` is `-0.0` for a negative `w`; adding zero makes it a
            // plain zero, so pruned entries are bit-identical whatever their
            // sign was.
            var.set(&var.as_tensor().mul(mask)?.affine(1.0, 0.0)?)?;
        }
        Ok(())
    };
    apply_masks()?;
    let mut opt = optim::build(&settings.optimizer, vars.iter().map(|(_, v)| v.clone()).collect());

    let mut history = Vec::with_capacity(settings.epochs);
    let mut best: Option<(f64, usize, Weights)> = None;
    let mut since_best = 0;
    let mut stopped_early = false;
    for epoch_idx in 0..settings.epochs {
        let epoch = epoch_idx + 1;
        let lr =
            schedule_lr(&settings.schedule, settings.optimizer.lr(), epoch_idx, settings.epochs);
        let mut epoch_rng = rng.fork(&format!("epoch {epoch}"));
        let order = epoch_rng.permutation(n);
        let mut dropout_rng = epoch_rng.fork("dropout");
        let mut noise_rng = epoch_rng.fork("noise");

        // One step per mini-batch, accumulating the loss weighted by batch size.
        let mut loss_sum = 0.0;
        for chunk in order.chunks(settings.batch) {
            let b_sz = chunk.len();
            if let Some(dense) = fused.as_mut() {
                let value = dense.step(chunk, lr, &mut dropout_rng);
                if !value.is_finite() {
                    return Err(TrainError::NonFinite { epoch, value });
                }
                trace!(epoch, b_sz, loss = value, "batch");
                loss_sum += value * b_sz as f64;
                continue;
            }
            let idx: Vec<u32> = chunk.iter().map(|&i| i as u32).collect();
            let idx = Tensor::from_vec(idx, b_sz, &dev)?;
            let xs = train_x.index_select(&idx, 0)?;
            let ys = train_y.index_select(&idx, 0)?;
            let batch_loss = match opt.as_mut() {
                Some(opt) => {
                    let view = quantized_view(&vars, fake)?;
                    let out = forward(arch, &view, &xs, Some(&mut dropout_rng))?;
                    let batch_loss = loss(settings.loss, &out, &ys)?;
                    let value = scalar(&batch_loss)?;
                    if !value.is_finite() {
                        return Err(TrainError::NonFinite { epoch, value });
                    }
                    opt.step(&batch_loss.backward()?, lr)?;
                    value
                }
                None => {
                    let sigma = settings.optimizer.lr();
                    let batch = Batch { arch, xs: &xs, ys: &ys, loss: settings.loss };
                    let value =
                        search_step(&batch, &vars, sigma, &mut dropout_rng, &mut noise_rng)?;
                    if !value.is_finite() {
                        return Err(TrainError::NonFinite { epoch, value });
                    }
                    value
                }
            };
            apply_masks()?;
            trace!(epoch, b_sz, loss = batch_loss, "batch");
            loss_sum += batch_loss * b_sz as f64;
        }
        let train_loss = loss_sum / n as f64;

        // A rate too high can overflow the weights on the last batch without any loss seeing
        // it, so the weights themselves are checked too.
        let finite = match &fused {
            Some(dense) => dense.all_finite(),
            None => all_finite(&vars)?,
        };
        if !finite {
            return Err(TrainError::NonFiniteWeights { epoch });
        }

        // Score the validation split with the weights as they are now.
        let (mut val_loss, mut val_accuracy) = (None, None);
        if let Some((val_x, val_y)) = &val {
            let now = match &fused {
                Some(dense) => dense.weights(&dev)?,
                None => quantized_view(&vars, fake)?,
            };
            let scores = score(arch, &now, val_x, val_y, settings.loss, data.classes)?;
            if !scores.loss.is_finite() {
                return Err(TrainError::NonFinite { epoch, value: scores.loss });
            }
            val_loss = Some(scores.loss);
            val_accuracy = Some(scores.accuracy);
        }
        let stats = EpochStats { epoch, lr, train_loss, val_loss, val_accuracy };
        debug!(?stats, "epoch done");
        progress.epoch(&stats, settings.epochs);
        history.push(stats);

        // Keep a copy of the best weights so far, and stop when patience runs out.
        if let (Some(patience), Some(val_loss)) = (patience, val_loss) {
            if best.as_ref().is_none_or(|(best_loss, _, _)| val_loss < *best_loss) {
                let weights = match &fused {
                    Some(dense) => dense.weights(&dev)?,
                    None => snapshot(&vars)?,
                };
                best = Some((val_loss, epoch, weights));
                since_best = 0;
            } else {
                since_best += 1;
                if since_best >= patience {
                    debug!(epoch, patience, "validation loss stopped improving");
                    stopped_early = true;
                    break;
                }
            }
        }
    }

    let (weights, best_epoch) = match (best, &fused) {
        (Some((_, epoch, weights)), _) => (weights, epoch),
        (None, Some(dense)) => (dense.weights(&dev)?, history.len()),
        (None, None) => (snapshot(&vars)?, history.len()),
    };
    Ok(FitOutcome { weights, history, best_epoch, stopped_early })
}

/// The inputs that both losses of a random-search step share.
struct Batch<'a> {
    arch: &'a Arch,
    xs: &'a Tensor,
    ys: &'a Tensor,
    loss: Loss,
}

impl Batch<'_> {
    /// The loss of `weights` on the batch, with dropout masks from `dropout`.
    fn loss(&self, weights: &Weights, dropout: &mut Rng) -> candle_core::Result<f64> {
        let out = forward(self.arch, weights, self.xs, Some(dropout))?;
        scalar(&loss(self.loss, &out, self.ys)?)
    }
}

/// One random-search step on `batch`: perturb every variable by `N(0, sigma^2)` noise and keep
/// the perturbation if it lowers the loss. Returns the loss of the weights kept.
fn search_step(
    batch: &Batch,
    vars: &[(String, Var)],
    sigma: f64,
    dropout: &mut Rng,
    noise: &mut Rng,
) -> candle_core::Result<f64> {
    // Both passes replay the same dropout masks, so only the weights differ between them.
    let mut masks = dropout.fork("batch");
    let current = snapshot(vars)?;
    let before = batch.loss(&current, &mut masks.clone())?;

    let mut perturbed = Weights::new();
    for (name, _) in vars {
        let p = &current[name];
        let values: Vec<f32> =
            (0..p.elem_count()).map(|_| (noise.normal() * sigma) as f32).collect();
        let noise = Tensor::from_vec(values, p.shape(), p.device())?;
        perturbed.insert(name.clone(), (p + noise)?);
    }
    let after = batch.loss(&perturbed, &mut masks)?;

    // A NaN candidate compares false, so it is rejected like a worse one.
    if after < before {
        for (name, var) in vars {
            var.set(&perturbed[name])?;
        }
        return Ok(after);
    }
    Ok(before)
}

/// Detached copies of the variables, safe to keep while the variables go on changing.
/// The variables as the forward pass sees them: fake-quantized where `fake` names a scheme,
/// with the difference to the float weight detached, so that the gradient of the quantized
/// value is taken as the gradient of the float one.
fn quantized_view(
    vars: &[(String, Var)],
    fake: &BTreeMap<String, Scheme>,
) -> candle_core::Result<Weights> {
    let mut view = Weights::new();
    for (name, var) in vars {
        let w = var.as_tensor();
        let seen = match fake.get(name) {
            Some(scheme) => w.add(&fake_quantize(w, *scheme)?.sub(w)?.detach())?,
            None => w.clone(),
        };
        view.insert(name.clone(), seen);
    }
    Ok(view)
}

fn snapshot(vars: &[(String, Var)]) -> candle_core::Result<Weights> {
    vars.iter().map(|(name, v)| Ok((name.clone(), v.as_detached_tensor().copy()?))).collect()
}

/// Whether every value of every variable is finite.
fn all_finite(vars: &[(String, Var)]) -> candle_core::Result<bool> {
    for (_, var) in vars {
        // A sum of absolute values is finite exactly when every value is; summing in f64 keeps
        // large but finite f32 weights from overflowing it.
        let total = var.as_tensor().abs()?.to_dtype(DType::F64)?.sum_all()?;
        if !total.to_scalar::<f64>()?.is_finite() {
            return Ok(false);
        }
    }
    Ok(true)
}

/// A scalar tensor as f64.
fn scalar(t: &Tensor) -> candle_core::Result<f64> {
    t.to_dtype(DType::F64)?.to_scalar::<f64>()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::check::spec::Optimizer;
    use crate::nn::model::{init, tests::mlp};
    use crate::nn::score;
    use candle_core::Device;

    /// Three Gaussian blobs in 2-D, at `(0, 3)`, `(3, -2)` and `(-3, -2)` with unit spread:
    /// features `[n, 2]` and labels `[n]`.
    fn blobs(n: usize, seed: u64) -> (Tensor, Tensor) {
        let centres = [(0.0, 3.0), (3.0, -2.0), (-3.0, -2.0)];
        let mut rng = Rng::new(seed, "blobs");
        let (mut xs, mut ys) = (Vec::with_capacity(2 * n), Vec::with_capacity(n));
        for i in 0..n {
            let (cx, cy) = centres[i % 3];
            xs.push((cx + rng.normal()) as f32);
            xs.push((cy + rng.normal()) as f32);
            ys.push((i % 3) as u32);
        }
        let dev = Device::Cpu;
        (Tensor::from_vec(xs, (n, 2), &dev).unwrap(), Tensor::from_vec(ys, n, &dev).unwrap())
    }

    fn settings(optimizer: Optimizer, loss: Loss, epochs: usize) -> TrainSettings {
        TrainSettings { optimizer, loss, epochs, batch: 16, schedule: Schedule::Cosine, stop: None }
    }

    fn sgd(lr: f64) -> Optimizer {
        Optimizer::Sgd { lr, momentum: 0.9, weight_decay: 0.0, nesterov: false }
    }

    /// Trains the blob MLP from a fixed start with `settings` and `seed`.
    fn run(settings: &TrainSettings, seed: u64) -> Result<FitOutcome, TrainError> {
        let (train_x, train_y) = blobs(240, 1);
        let (val_x, val_y) = blobs(90, 2);
        let arch = mlp(2, 16, 3);
        let start = init(&arch, &mut Rng::new(0, "init"), &Device::Cpu)?;
        let data = TrainData {
            train_x: &train_x,
            train_y: &train_y,
            val: Some((&val_x, &val_y)),
            classes: 3,
        };
        fit(&arch, &start, settings, &data, &mut Rng::new(seed, "train"), &())
    }

    fn values(ws: &Weights) -> Vec<Vec<f32>> {
        ws.values().map(|t| t.flatten_all().unwrap().to_vec1().unwrap()).collect()
    }

    #[test]
    fn gradient_optimizers_separate_blobs() -> Result<(), TrainError> {
        let adam =
            Optimizer::Adam { lr: 0.01, beta1: 0.9, beta2: 0.999, eps: 1e-8, weight_decay: 0.0 };
        let adamw =
            Optimizer::AdamW { lr: 0.01, beta1: 0.9, beta2: 0.999, eps: 1e-8, weight_decay: 0.01 };
        for optimizer in [sgd(0.05), adam, adamw] {
            let outcome = run(&settings(optimizer.clone(), Loss::CrossEntropy, 10), 7)?;
            let (first, last) = (&outcome.history[0], &outcome.history[9]);
            assert!(last.train_loss < first.train_loss, "{optimizer:?}: {:?}", outcome.history);
            let accuracy = last.val_accuracy.unwrap_or(0.0);
            assert!(accuracy >= 0.95, "{optimizer:?}: accuracy {accuracy}");
            assert_eq!((outcome.best_epoch, outcome.stopped_early), (10, false));
            for t in outcome.weights.values() {
                assert_eq!(t.dtype(), DType::F32);
                assert!(t.is_contiguous() && !t.is_variable());
            }
        }
        Ok(())
    }

    #[test]
    fn same_seed_gives_identical_weights() -> Result<(), TrainError> {
        let settings = settings(sgd(0.05), Loss::Mse, 3);
        let a = run(&settings, 11)?;
        let b = run(&settings, 11)?;
        let c = run(&settings, 12)?;
        assert_eq!(values(&a.weights), values(&b.weights));
        assert_eq!(a.history, b.history);
        assert_ne!(values(&a.weights), values(&c.weights));
        Ok(())
    }

    #[test]
    fn random_search_lowers_the_loss() -> Result<(), TrainError> {
        let settings = settings(Optimizer::RandomSearch { sigma: 0.05 }, Loss::CrossEntropy, 3);
        let outcome = run(&settings, 3)?;
        let (train_x, train_y) = blobs(240, 1);
        let arch = mlp(2, 16, 3);
        let start = init(&arch, &mut Rng::new(0, "init"), &Device::Cpu)?;
        let before = score(&arch, &start, &train_x, &train_y, Loss::CrossEntropy, 3)?.loss;
        let after = score(&arch, &outcome.weights, &train_x, &train_y, Loss::CrossEntropy, 3)?;
        assert!(after.loss < before, "{} !< {before}", after.loss);
        Ok(())
    }

    #[test]
    fn huge_rate_is_non_finite() {
        let mut settings = settings(sgd(1e6), Loss::Mse, 5);
        settings.schedule = Schedule::Constant;
        match run(&settings, 0) {
            Err(TrainError::NonFinite { epoch, value }) => {
                assert!(!value.is_finite());
                assert!((1..=5).contains(&epoch), "{epoch}");
            }
            other => panic!("expected a non-finite loss, got {other:?}"),
        }
    }

    /// With a tiny, noisy validation set the loss soon stops improving; whenever training
    /// stops early the best epoch lies `patience` epochs back and its weights are returned.
    #[test]
    fn patience_keeps_the_best_epoch() -> Result<(), TrainError> {
        let (train_x, train_y) = blobs(60, 1);
        // Labels shuffled against the blobs make the validation loss rise as training fits.
        let (val_x, _) = blobs(6, 5);
        let val_y = Tensor::new(&[1u32, 2, 0, 2, 0, 1], &Device::Cpu)?;
        let arch = mlp(2, 16, 3);
        let start = init(&arch, &mut Rng::new(0, "init"), &Device::Cpu)?;
        let data = TrainData {
            train_x: &train_x,
            train_y: &train_y,
            val: Some((&val_x, &val_y)),
            classes: 3,
        };
        let mut settings = settings(sgd(0.05), Loss::CrossEntropy, 30);
        settings.stop = Some(Stop::Patience { epochs: 2 });
        let outcome = fit(&arch, &start, &settings, &data, &mut Rng::new(0, "train"), &())?;

        assert!(outcome.stopped_early, "{:?}", outcome.history);
        assert_eq!(outcome.best_epoch + 2, outcome.history.len());
        let losses: Vec<f64> = outcome.history.iter().filter_map(|s| s.val_loss).collect();
        let best = losses[outcome.best_epoch - 1];
        assert!(losses.iter().all(|&l| l >= best));
        let rescored = score(&arch, &outcome.weights, &val_x, &val_y, Loss::CrossEntropy, 3)?;
        assert!((rescored.loss - best).abs() < 1e-9, "{} vs {best}", rescored.loss);
        Ok(())
    }

    #[test]
    fn bad_inputs_are_errors() -> Result<(), TrainError> {
        let (train_x, train_y) = blobs(30, 1);
        let arch = mlp(2, 4, 3);
        let start = init(&arch, &mut Rng::new(0, "init"), &Device::Cpu)?;
        let data = TrainData { train_x: &train_x, train_y: &train_y, val: None, classes: 3 };
        let mut zero_batch = settings(sgd(0.1), Loss::Mse, 1);
        zero_batch.batch = 0;
        let mut rng = Rng::new(0, "train");
        let err = fit(&arch, &start, &zero_batch, &data, &mut rng, &());
        assert!(matches!(err, Err(TrainError::ZeroBatch)));
        let four = TrainData { classes: 4, ..data };
        let err = fit(&arch, &start, &settings(sgd(0.1), Loss::Mse, 1), &four, &mut rng, &());
        assert!(matches!(err, Err(TrainError::Classes { .. })));
        Ok(())
    }

    #[test]
    fn schedules_follow_pytorch() {
        let cosine: Vec<f64> = (0..4).map(|e| schedule_lr(&Schedule::Cosine, 1.0, e, 4)).collect();
        // 0.5 * (1 + cos(pi * e / 4)) for e = 0..4.
        let want = [1.0, 0.853553, 0.5, 0.146447];
        assert!(cosine.iter().zip(want).all(|(a, b)| (a - b).abs() < 1e-6), "{cosine:?}");
        let step = Schedule::Step { every: 2, gamma: 0.1 };
        let rates: Vec<f64> = (0..5).map(|e| schedule_lr(&step, 1.0, e, 5)).collect();
        let want = [1.0, 1.0, 0.1, 0.1, 0.01];
        assert!(rates.iter().zip(want).all(|(a, b)| (a - b).abs() < 1e-12), "{rates:?}");
    }
}

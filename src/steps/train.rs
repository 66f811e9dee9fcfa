//! The `train` step: fresh or given weights, fitted to a dataset split.

use std::collections::BTreeMap;
use std::sync::Arc;

use candle_core::DType;

use crate::check::{Arch, Finetune, Init, TrainSpec};
use crate::exec::progress::EpochProgress;
use crate::exec::{Artifact, Context, Inputs, StepError, WeightsArtifact};
use crate::nn::metrics::score;
use crate::nn::train::{fit, fit_constrained, Constraints, Progress, TrainData, TrainError};
use crate::nn::Weights;
use crate::rng::Rng;

pub fn run(spec: &TrainSpec, inputs: &Inputs, ctx: &Context) -> Result<Artifact, StepError> {
    let progress = EpochProgress::new(ctx.progress, &ctx.node.name, spec.settings.epochs);
    let trained = train(spec, inputs, ctx, Rng::new(ctx.seed, "train"), &progress);
    progress.finish();
    let (weights, metrics) = trained?;
    let arch = Some(spec.arch.clone());
    Ok(Artifact::Weights(Arc::new(WeightsArtifact::plain(arch, weights, ctx.node, metrics))))
}

/// Train as `spec` says, drawing every random choice from `rng`: the weights, and metrics
/// that record the starting point's scores, the last training loss, the epochs run and the
/// validation scores of the weights returned (when there is a validation split).
pub(crate) fn train(
    spec: &TrainSpec,
    inputs: &Inputs,
    ctx: &Context,
    mut rng: Rng,
    progress: &dyn Progress,
) -> Result<(Weights, BTreeMap<String, f64>), StepError> {
    let init = match &spec.init {
        Init::Model(_) => crate::nn::model::init(&spec.arch, &mut rng.fork("init"), ctx.dev)?,
        Init::Weights(name) => {
            let from = inputs.weights(name);
            let mut weights = BTreeMap::new();
            for (k, t) in &from.tensors {
                weights.insert(k.clone(), t.to_device(ctx.dev)?);
            }
            weights
        }
    };

    let dataset = inputs.dataset(&spec.data.block);
    let part = dataset.part(spec.data.split);
    let (train_x, train_y) = part.tensors(&dataset.features, ctx.dev)?;
    let val = if spec.data.split == crate::check::Split::Train && dataset.val.n > 0 {
        Some(dataset.val.tensors(&dataset.features, ctx.dev)?)
    } else {
        None
    };
    let data = TrainData {
        train_x: &train_x,
        train_y: &train_y,
        val: val.as_ref().map(|(x, y)| (x, y)),
        classes: dataset.classes,
    };

    // The starting point's scores, so that what training gained is on
    // record beside the result.
    let mut metrics = BTreeMap::new();
    let loss = spec.settings.loss;
    let start = score(&spec.arch, &init, &train_x, &train_y, loss, dataset.classes)?;
    metrics.insert("initial_train_loss".to_string(), start.loss);
    if let Some((val_x, val_y)) = &val {
        let start = score(&spec.arch, &init, val_x, val_y, loss, dataset.classes)?;
        metrics.insert("initial_val_accuracy".to_string(), start.accuracy);
    }

    let outcome = fit(&spec.arch, &init, &spec.settings, &data, &mut rng.fork("fit"), progress);
    let outcome = outcome.map_err(train_error)?;

    if let Some(last) = outcome.history.last() {
        metrics.insert("train_loss".to_string(), last.train_loss);
    }
    metrics.insert("epochs".to_string(), outcome.history.len() as f64);
    metrics.insert("best_epoch".to_string(), outcome.best_epoch as f64);
    if let Some(best) = outcome.history.get(outcome.best_epoch.saturating_sub(1)) {
        if let (Some(loss), Some(acc)) = (best.val_loss, best.val_accuracy) {
            metrics.insert("val_loss".to_string(), loss);
            metrics.insert("val_accuracy".to_string(), acc);
        }
    }
    tracing::info!(?metrics, stopped_early = outcome.stopped_early, "trained");
    Ok((outcome.weights, metrics))
}

/// Retraining inside a `prune` or `quantize` step: `weights` trained with the settings of
/// `finetune` under `constraints`, and the last epoch's training and best validation scores.
/// Pruned weights are checked to come out exactly zero.
#[allow(clippy::too_many_arguments)]
pub(crate) fn retrain(
    arch: &Arch,
    weights: &Weights,
    constraints: &Constraints,
    finetune: &Finetune,
    inputs: &Inputs,
    ctx: &Context,
    label: &str,
    rng: &mut Rng,
) -> Result<(Weights, BTreeMap<String, f64>), StepError> {
    let dataset = inputs.dataset(&finetune.data.block);
    let part = dataset.part(finetune.data.split);
    let (train_x, train_y) = part.tensors(&dataset.features, ctx.dev)?;
    let val = if finetune.data.split == crate::check::Split::Train && dataset.val.n > 0 {
        Some(dataset.val.tensors(&dataset.features, ctx.dev)?)
    } else {
        None
    };
    let data = TrainData {
        train_x: &train_x,
        train_y: &train_y,
        val: val.as_ref().map(|(x, y)| (x, y)),
        classes: dataset.classes,
    };
    let progress = EpochProgress::new(ctx.progress, label, finetune.settings.epochs);
    let outcome = fit_constrained(
        arch,
        weights,
        &finetune.settings,
        &data,
        &mut rng.fork(label),
        &progress,
        constraints,
    );
    progress.finish();
    let outcome = outcome.map_err(train_error)?;

    // Tensors the architecture does not train pass through unchanged.
    let mut out = weights.clone();
    out.extend(outcome.weights);

    // Pruned weights must come out of retraining exactly zero; a mask
    // that leaked would silently undo the pruning.
    for (name, mask) in &constraints.masks {
        let leaked = out[name].mul(&mask.affine(-1.0, 1.0)?)?.ne(0f64)?;
        let count = leaked.to_dtype(DType::F32)?.sum_all()?.to_scalar::<f32>()?;
        if count > 0.0 {
            return Err(StepError::new(
                format!("retraining revived {count} pruned weights of `{name}`"),
                "this is a bug in recipe; please report it with the recipe",
            ));
        }
    }
    let mut metrics = BTreeMap::new();
    if let Some(best) = outcome.history.get(outcome.best_epoch.saturating_sub(1)) {
        metrics.insert("train_loss".to_string(), best.train_loss);
        if let (Some(loss), Some(acc)) = (best.val_loss, best.val_accuracy) {
            metrics.insert("val_loss".to_string(), loss);
            metrics.insert("val_accuracy".to_string(), acc);
        }
    }
    Ok((out, metrics))
}

/// Training failures a user can act on.
pub(crate) fn train_error(e: TrainError) -> StepError {
    match e {
        TrainError::NonFinite { epoch, value } => StepError::new(
            format!("the loss became {value} in epoch {epoch}"),
            "training diverged: lower the learning rate, or scale the data with \
             `scale = standard`",
        ),
        TrainError::NonFiniteWeights { epoch } => StepError::new(
            format!("the weights became NaN or infinite in epoch {epoch}"),
            "training diverged: lower the learning rate, or scale the data with \
             `scale = standard`",
        ),
        other => StepError::new(other.to_string(), "check the data and the model"),
    }
}

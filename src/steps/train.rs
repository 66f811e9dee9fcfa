//! The `train` step: fresh or given weights, fitted to a dataset split.

use std::collections::BTreeMap;
use std::sync::Arc;

use crate::check::{Init, TrainSpec};
use crate::exec::progress::EpochProgress;
use crate::exec::{Artifact, Context, Inputs, StepError, WeightsArtifact};
use crate::nn::metrics::score;
use crate::nn::train::{fit, TrainData, TrainError};
use crate::rng::Rng;

pub fn run(spec: &TrainSpec, inputs: &Inputs, ctx: &Context) -> Result<Artifact, StepError> {
    let mut rng = Rng::new(ctx.seed, "train");
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

    let progress = EpochProgress::new(ctx.progress, &ctx.node.name, spec.settings.epochs);
    let outcome = fit(&spec.arch, &init, &spec.settings, &data, &mut rng.fork("fit"), &progress);
    progress.finish();
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
    Ok(Artifact::Weights(Arc::new(WeightsArtifact {
        arch: Some(spec.arch.clone()),
        tensors: outcome.weights,
        made_by: ctx.node.name.clone(),
        step_hash: ctx.node.hash.clone(),
        metrics,
    })))
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

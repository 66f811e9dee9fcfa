//! The `prune` step: zero or remove weights by magnitude, in one round or
//! gradually, retraining between rounds with pruned weights held at zero.
//!
//! Unstructured and `n_of_m` pruning keep the tensors' shapes and make
//! zeros; `channels` removes whole output channels and hands on a smaller
//! dense model with its new architecture. Gradual pruning reaches the
//! target along the cubic schedule of Zhu and Gupta (2017): round `r` of
//! `k` prunes to `s * (1 - (1 - r/k)^3)`.

use std::collections::BTreeMap;
use std::sync::Arc;

use candle_core::{DType, Tensor};

use crate::check::{Arch, Pattern, PruneAmount, PruneSpec, Scope};
use crate::exec::{Artifact, Context, Inputs, StepError, WeightsArtifact};
use crate::nn::train::Constraints;
use crate::nn::{channels, prune, Weights};
use crate::rng::Rng;
use crate::steps::stream::{self, Streamed};
use crate::steps::train::retrain;

pub fn run(spec: &PruneSpec, inputs: &Inputs, ctx: &Context) -> Result<Artifact, StepError> {
    let from = inputs.weights(&spec.from);
    if let Some(streamed) = &from.stream {
        return streamed_prune(spec, streamed, ctx);
    }
    let mut weights: Weights = BTreeMap::new();
    for (name, t) in &from.tensors {
        weights.insert(name.clone(), t.to_device(ctx.dev)?);
    }
    let mut arch = from.arch.clone();
    let targets = super::selected(&weights, &spec.targets, &spec.ignore);
    let mut rng = Rng::new(ctx.seed, "prune");
    let mut metrics = BTreeMap::new();

    // Channel counts before any round, so each round's share is of the
    // original width.
    let original: BTreeMap<usize, usize> = match (&arch, spec.pattern) {
        (Some(a), Pattern::Channels) => layers_of(&targets)
            .into_iter()
            .filter(|l| channels::successor(a, *l).is_ok())
            .map(|l| (l, out_width(a, l)))
            .collect(),
        _ => BTreeMap::new(),
    };

    for round in 1..=spec.steps {
        let amount = match spec.amount {
            PruneAmount::Sparsity(s) => {
                PruneAmount::Sparsity(prune::cubic_schedule(s, round, spec.steps))
            }
            threshold => threshold,
        };
        match spec.pattern {
            Pattern::Unstructured => magnitude(&mut weights, &targets, amount, spec.scope)?,
            Pattern::NOfM { n, m } => {
                for name in &targets {
                    let t = &weights[name];
                    let dims = t.dims().to_vec();
                    let row: usize = dims[1..].iter().product();
                    let mut values = t.flatten_all()?.to_dtype(DType::F32)?.to_vec1::<f32>()?;
                    prune::n_of_m(&mut values, row, n, m).map_err(|e| {
                        StepError::new(format!("`{name}`: {e}"), "see `recipe check`")
                    })?;
                    let t = Tensor::from_vec(values, dims, ctx.dev)?;
                    weights.insert(name.clone(), t);
                }
            }
            Pattern::Channels => {
                let a = arch.clone().expect("the checker requires an architecture for channels");
                let PruneAmount::Sparsity(share) = amount else {
                    unreachable!("the checker gives channel pruning a share")
                };
                let (new_arch, new_weights) = remove_channels(&a, &weights, &original, share)?;
                arch = Some(new_arch);
                weights = new_weights;
            }
        }
        tracing::debug!(round, sparsity = sparsity(&weights, &targets)?, "pruned");

        if let Some(finetune) = &spec.finetune {
            let Some(a) = &arch else {
                unreachable!("the checker requires an architecture to retrain")
            };
            let label = format!("{} {round}/{}", ctx.node.name, spec.steps);
            let masks = if spec.pattern == Pattern::Channels {
                Weights::new()
            } else {
                masks_of(&weights, &targets)?
            };
            let constraints = Constraints { masks, ..Constraints::default() };
            let outcome =
                retrain(a, &weights, &constraints, finetune, inputs, ctx, &label, &mut rng)?;
            for (k, v) in outcome.1 {
                metrics.insert(k, v);
            }
            weights = outcome.0;
        }
    }

    metrics.insert("sparsity".to_string(), sparsity(&weights, &targets)?);
    metrics.insert("rounds".to_string(), spec.steps as f64);
    if let Some(a) = &arch {
        let params: usize = a.params().iter().map(|(_, s)| s.iter().product::<usize>()).sum();
        metrics.insert("parameters".to_string(), params as f64);
    }
    Ok(Artifact::Weights(Arc::new(WeightsArtifact::plain(arch, weights, ctx.node, metrics))))
}

/// Pruning weights that stay on disk: the rule is worked out now (a global sparsity reads
/// the targets twice) and applied as later steps read the tensors. Without retraining,
/// gradual rounds end where one round would, so the target amount is applied at once.
fn streamed_prune(
    spec: &PruneSpec,
    streamed: &Streamed,
    ctx: &Context,
) -> Result<Artifact, StepError> {
    let checkpoint = streamed.open(ctx.base_dir)?;
    let targets = stream::targets(&checkpoint, &spec.targets, &spec.ignore);
    let pattern = match spec.pattern {
        Pattern::NOfM { n, m } => Some((n, m)),
        Pattern::Unstructured => None,
        Pattern::Channels => unreachable!("the checker requires an architecture for channels"),
    };
    let rule = stream::rule(streamed, &checkpoint, &targets, spec.amount, spec.scope, pattern)?;
    let mut metrics = BTreeMap::new();
    metrics.insert("pruned_tensors".to_string(), targets.len() as f64);
    let next = streamed.with(stream::Op::Prune { targets, rule });
    let mut weights = WeightsArtifact::streamed(next, ctx.node);
    weights.metrics = metrics;
    Ok(Artifact::Weights(Arc::new(weights)))
}

/// The layer positions of `NAME.weight` tensors among `names`.
fn layers_of(names: &[String]) -> Vec<usize> {
    names.iter().filter_map(|n| n.strip_suffix(".weight")?.parse().ok()).collect()
}

fn out_width(arch: &Arch, layer: usize) -> usize {
    match arch.layers[layer] {
        crate::check::Layer::Linear { out } | crate::check::Layer::Conv2d { out, .. } => out,
        _ => 0,
    }
}

fn magnitude(
    weights: &mut Weights,
    targets: &[String],
    amount: PruneAmount,
    scope: Scope,
) -> Result<(), StepError> {
    let mut values: Vec<Vec<f32>> = Vec::with_capacity(targets.len());
    for name in targets {
        values.push(weights[name].flatten_all()?.to_dtype(DType::F32)?.to_vec1::<f32>()?);
    }
    let mut slices: Vec<&mut [f32]> = values.iter_mut().map(|v| v.as_mut_slice()).collect();
    prune::magnitude(&mut slices, amount, scope);
    for (name, v) in targets.iter().zip(values) {
        let t = &weights[name];
        let pruned = Tensor::from_vec(v, t.dims(), t.device())?;
        weights.insert(name.clone(), pruned);
    }
    Ok(())
}

/// Remove, in every prunable target layer, the channels of smallest L2
/// norm until `share` of its original channels are gone.
fn remove_channels(
    arch: &Arch,
    weights: &Weights,
    original: &BTreeMap<usize, usize>,
    share: f64,
) -> Result<(Arch, Weights), StepError> {
    let (mut arch, mut weights) = (arch.clone(), weights.clone());
    for (&layer, &width) in original {
        let keep_n = width - ((share * width as f64).round() as usize).min(width - 1);
        let now = out_width(&arch, layer);
        if keep_n >= now {
            continue;
        }
        let w = weights[&format!("{layer}.weight")].flatten_all()?.to_vec1::<f32>()?;
        let norms = prune::channel_norms(&w, now);
        let keep = prune::channels_to_keep(&norms, now - keep_n);
        (arch, weights) = channels::remove_channels(&arch, &weights, layer, &keep)?;
    }
    Ok((arch, weights))
}

/// A 0/1 mask of the non-zero entries of each target.
fn masks_of(weights: &Weights, targets: &[String]) -> Result<Weights, StepError> {
    let mut masks = Weights::new();
    for name in targets {
        let t = &weights[name];
        masks.insert(name.clone(), t.ne(0f64)?.to_dtype(DType::F32)?);
    }
    Ok(masks)
}

/// The share of zeros among the target tensors.
fn sparsity(weights: &Weights, targets: &[String]) -> Result<f64, StepError> {
    let (mut zeros, mut total) = (0usize, 0usize);
    for name in targets {
        let Some(t) = weights.get(name) else { continue };
        let values = t.flatten_all()?.to_dtype(DType::F32)?.to_vec1::<f32>()?;
        zeros += values.iter().filter(|v| **v == 0.0).count();
        total += values.len();
    }
    Ok(if total == 0 { 0.0 } else { zeros as f64 / total as f64 })
}

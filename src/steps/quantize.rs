//! The `quantize` step: takes weights and returns them quantized to an integer scheme or a
//! GGML format, optionally after quantization-aware retraining, and optionally keeping in
//! float the layers whose quantization costs more accuracy than the tolerance allows.
//!
//! The order of work:
//!
//! 1. Select the target tensors (globs; rank 2 or more).
//! 2. With `tolerance`, choose which targets to quantize: measure each target's sensitivity
//!    (validation accuracy with only it quantized), then add targets from the least to the
//!    most sensitive, keeping each one whose addition leaves the accuracy within the
//!    tolerance of the float model's (relative: `tolerance = 1%` allows 99% of the float
//!    accuracy) and leaving the others in float.
//! 3. With `finetune`, retrain with the chosen targets fake-quantized in the forward pass and
//!    gradients passed straight through to the float weights; weights that were zero (a
//!    pruned input) are held at zero.
//! 4. Quantize the chosen targets once, at the end.
//!
//! Zeros stay zero for every integer scheme (the range always holds zero, and zero maps to
//! the zero point exactly) and for `q8_0`, `q4_0` and `q6_k`, whose blocks are scaled without
//! an offset. `q4_k` stores an offset per sub-block, so a zero comes back as a small value
//! unless its whole sub-block is zero.

use std::collections::BTreeMap;
use std::sync::Arc;

use candle_core::{DType, Tensor};

use crate::check::{QuantSpec, Split};
use crate::exec::{Artifact, Context, Inputs, StepError, WeightsArtifact};
use crate::nn::metrics::score_with;
use crate::nn::quant::{matmuls, QuantMap, Quantized, Scheme};
use crate::nn::train::Constraints;
use crate::nn::Weights;
use crate::rng::Rng;
use crate::steps::stream;
use crate::steps::train::retrain;

pub fn run(spec: &QuantSpec, inputs: &Inputs, ctx: &Context) -> Result<Artifact, StepError> {
    let from = inputs.weights(&spec.from);
    if let Some(streamed) = &from.stream {
        // Weights on disk are quantized as later steps read them; without a model there is
        // neither retraining nor a tolerance to measure.
        let checkpoint = streamed.open(ctx.base_dir)?;
        let targets = stream::targets(&checkpoint, &spec.targets, &spec.ignore);
        let mut metrics = BTreeMap::new();
        metrics.insert("quantized_tensors".to_string(), targets.len() as f64);
        let scheme = stream::SchemeSpec {
            scheme: spec.scheme,
            granularity: spec.granularity,
            symmetric: spec.symmetric,
        };
        let next = streamed.with(stream::Op::Quantize { targets, scheme });
        let mut weights = WeightsArtifact::streamed(next, ctx.node);
        weights.metrics = metrics;
        return Ok(Artifact::Weights(Arc::new(weights)));
    }
    let mut weights = Weights::new();
    for (name, t) in &from.tensors {
        weights.insert(name.clone(), t.to_device(ctx.dev)?);
    }
    let scheme =
        Scheme { scheme: spec.scheme, granularity: spec.granularity, symmetric: spec.symmetric };
    let targets = super::selected(&weights, &spec.targets, &spec.ignore);
    let mut metrics = BTreeMap::new();
    let mut notes = Vec::new();

    let val = match &spec.calibration {
        Some(data) => Some((Calibration::new(inputs, &data.block, from, ctx)?, &data.block)),
        None => None,
    };

    // Which targets to quantize: all, or those the tolerance allows.
    let chosen = match (spec.tolerance, &val) {
        (Some(tolerance), Some((val, data))) => {
            let choice = choose(val, &weights, &targets, scheme, tolerance)?;
            metrics.insert("float_accuracy".to_string(), choice.float_accuracy);
            metrics.insert("kept_in_float".to_string(), choice.kept.len() as f64);
            notes.push(format!(
                "tolerance {:.2}% on {data}.val: float accuracy {:.2}%, the least allowed {:.2}%",
                tolerance * 100.0,
                choice.float_accuracy * 100.0,
                choice.float_accuracy * (1.0 - tolerance) * 100.0
            ));
            notes.extend(choice.lines);
            if !choice.kept.is_empty() {
                notes.push(format!("kept in float: {}", quoted(&choice.kept)));
            }
            choice.quantized
        }
        _ => targets.clone(),
    };

    // Quantization-aware retraining, pruned zeros held at zero.
    if let Some(finetune) = &spec.finetune {
        let arch = from.arch.as_ref().expect("the checker requires an architecture to retrain");
        let mut constraints = Constraints::default();
        for name in &targets {
            let t = &weights[name];
            let mask = t.ne(0f64)?.to_dtype(DType::F32)?;
            if mask.sum_all()?.to_scalar::<f32>()? < t.elem_count() as f32 {
                constraints.masks.insert(name.clone(), mask);
            }
        }
        constraints.fake_quant = chosen.iter().map(|n| (n.clone(), scheme)).collect();
        let mut rng = Rng::new(ctx.seed, "quantize");
        let label = format!("{} (quantization-aware)", ctx.node.name);
        let (trained, m) =
            retrain(arch, &weights, &constraints, finetune, inputs, ctx, &label, &mut rng)?;
        weights = trained;
        metrics.extend(m);
    }

    // Quantize once, at the end; the tensors then hold the values the quantized form stands
    // for, which is what every later step runs.
    let mut quant = QuantMap::new();
    for name in &chosen {
        let q = Quantized::new(&weights[name], scheme).map_err(|e| {
            StepError::new(format!("cannot quantize `{name}`: {e}"), "see `recipe check`")
        })?;
        weights.insert(name.clone(), q.dequantize(ctx.dev)?);
        quant.insert(name.clone(), q);
    }
    if let Some((val, _)) = &val {
        let accuracy = val.accuracy(&weights, &quant)?;
        metrics.insert("val_accuracy".to_string(), accuracy);
        notes.push(format!("final validation accuracy {:.2}%", accuracy * 100.0));
    }
    metrics.insert("quantized_tensors".to_string(), quant.len() as f64);

    let mut out = WeightsArtifact::plain(from.arch.clone(), weights, ctx.node, metrics);
    out.quant = quant;
    out.notes = notes;
    Ok(Artifact::Weights(Arc::new(out)))
}

/// The validation split a tolerance is measured on.
struct Calibration<'a> {
    arch: &'a crate::check::Arch,
    xs: Tensor,
    ys: Tensor,
    classes: usize,
}

impl<'a> Calibration<'a> {
    fn new(
        inputs: &Inputs,
        data: &str,
        from: &'a WeightsArtifact,
        ctx: &Context,
    ) -> Result<Self, StepError> {
        let dataset = inputs.dataset(data);
        let (xs, ys) = dataset.part(Split::Val).tensors(&dataset.features, ctx.dev)?;
        let arch = from.arch.as_ref().expect("the checker requires an architecture");
        Ok(Calibration { arch, xs, ys, classes: dataset.classes })
    }

    /// The accuracy of `weights`, running quantized linear layers as evaluation does.
    fn accuracy(&self, weights: &Weights, quant: &QuantMap) -> Result<f64, StepError> {
        let qmm = matmuls(quant)?;
        let loss = crate::check::Loss::CrossEntropy;
        Ok(score_with(self.arch, weights, &qmm, &self.xs, &self.ys, loss, self.classes)?.accuracy)
    }
}

/// What the tolerance chose.
struct Choice {
    float_accuracy: f64,
    /// The targets to quantize, in name order.
    quantized: Vec<String>,
    /// The targets kept in float, in the order they were tried.
    kept: Vec<String>,
    /// One line per decision, in the order they were made.
    lines: Vec<String>,
}

/// Choose the targets to quantize so that the validation accuracy stays within `tolerance`
/// of the float model's, relative to it: a tolerance of 1% allows 97% for a float 97.98%.
fn choose(
    val: &Calibration,
    weights: &Weights,
    targets: &[String],
    scheme: Scheme,
    tolerance: f64,
) -> Result<Choice, StepError> {
    let float_accuracy = val.accuracy(weights, &QuantMap::new())?;
    let dev = val.xs.device();

    // Each target quantized once, and its accuracy when it is the only one quantized.
    let mut forms = BTreeMap::new();
    let mut alone = Vec::with_capacity(targets.len());
    for name in targets {
        let q = Quantized::new(&weights[name], scheme)?;
        let mut trial = weights.clone();
        trial.insert(name.clone(), q.dequantize(dev)?);
        let quant: QuantMap = [(name.clone(), q.clone())].into();
        alone.push((val.accuracy(&trial, &quant)?, name.clone()));
        forms.insert(name.clone(), q);
    }

    // Least sensitive first: highest accuracy alone, ties in name order.
    alone.sort_by(|a, b| b.0.total_cmp(&a.0).then_with(|| a.1.cmp(&b.1)));
    let (mut current, mut quant) = (weights.clone(), QuantMap::new());
    let (mut quantized, mut kept, mut lines) = (Vec::new(), Vec::new(), Vec::new());
    for (acc_alone, name) in alone {
        let q = &forms[&name];
        let mut trial = current.clone();
        trial.insert(name.clone(), q.dequantize(dev)?);
        let mut trial_quant = quant.clone();
        trial_quant.insert(name.clone(), q.clone());
        let acc = val.accuracy(&trial, &trial_quant)?;
        let fits = acc >= float_accuracy * (1.0 - tolerance);
        lines.push(format!(
            "`{name}`: {:.2}% alone, {:.2}% with the layers before: {}",
            acc_alone * 100.0,
            acc * 100.0,
            if fits { "quantized" } else { "kept in float" }
        ));
        if fits {
            (current, quant) = (trial, trial_quant);
            quantized.push(name);
        } else {
            kept.push(name);
        }
    }
    quantized.sort();
    Ok(Choice { float_accuracy, quantized, kept, lines })
}

fn quoted(names: &[String]) -> String {
    names.iter().map(|n| format!("`{n}`")).collect::<Vec<_>>().join(", ")
}

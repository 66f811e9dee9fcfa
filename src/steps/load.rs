//! The `load` step: weights from a safetensors file, dense, sparse or integer-quantized.

use std::collections::BTreeMap;
use std::path::Path;
use std::sync::Arc;

use candle_core::DType;

use crate::check::LoadSpec;
use crate::exec::{Artifact, Context, StepError, WeightsArtifact};
use crate::nn::quant::{QuantMap, Quantized};

pub fn run(spec: &LoadSpec, ctx: &Context) -> Result<Artifact, StepError> {
    let full = ctx.base_dir.join(&spec.path);
    let (raw, metadata) = crate::formats::safetensors::read(&full)
        .map_err(|e| StepError::new(e.with_path(&spec.path).to_string(), help(&spec.path)))?;
    let damaged =
        |e: String| StepError::new(format!("`{}`: {e}", spec.path.display()), help(&spec.path));
    let (raw, ints) =
        crate::formats::quant::decode(raw, &metadata).map_err(|e| damaged(e.to_string()))?;
    let raw = crate::formats::sparse::decode(raw, &metadata).map_err(|e| damaged(e.to_string()))?;
    let mut tensors = BTreeMap::new();
    let mut quant = QuantMap::new();
    // Integer tensors run as the values they stand for, and keep their quantized form so that
    // saving them again writes the same integers.
    for (name, q) in ints {
        let q = Quantized::Int(q);
        tensors.insert(name.clone(), q.dequantize(ctx.dev)?);
        quant.insert(name, q);
    }
    for (name, t) in raw {
        let mut tensor = t.to_tensor(ctx.dev)?;
        // A model runs in f32; without one the tensors pass through as
        // stored.
        if spec.arch.is_some() && tensor.dtype() != DType::F32 {
            tensor = tensor.to_dtype(DType::F32)?;
        }
        tensors.insert(name, tensor);
    }
    // Files written by `recipe` carry the metrics of the step that made
    // them; keep them so a loaded model can be traced.
    let metrics: BTreeMap<String, f64> =
        metadata.get("metrics").and_then(|m| serde_json::from_str(m).ok()).unwrap_or_default();
    let mut weights = WeightsArtifact::plain(spec.arch.clone(), tensors, ctx.node, metrics);
    weights.quant = quant;
    Ok(Artifact::Weights(Arc::new(weights)))
}

fn help(path: &Path) -> String {
    format!("`{}` changed since the recipe was checked, or is damaged", path.display())
}

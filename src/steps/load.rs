//! The `load` step: weights from a safetensors file (dense, sparse or integer-quantized) or a
//! GGUF file (GGML formats).

use std::collections::BTreeMap;
use std::path::Path;
use std::sync::Arc;

use candle_core::quantized::GgmlDType;
use candle_core::{DType, Device};

use crate::check::{LoadSpec, QuantScheme};
use crate::exec::{Artifact, Context, StepError, WeightsArtifact};
use crate::formats::checkpoint::Checkpoint;
use crate::formats::safetensors::{Metadata, RawTensor, Tensors};
use crate::formats::{quant, sparse};
use crate::nn::quant::{QuantMap, Quantized};
use crate::nn::Weights;
use crate::steps::stream::{read_error, Streamed};

pub fn run(spec: &LoadSpec, ctx: &Context) -> Result<Artifact, StepError> {
    let full = ctx.base_dir.join(&spec.path);
    let is_gguf = spec.path.extension().is_some_and(|e| e.eq_ignore_ascii_case("gguf"));
    let failed =
        |e: String| StepError::new(format!("`{}`: {e}", spec.path.display()), help(&spec.path));
    if is_gguf {
        let (tensors, quant, metadata) = read_gguf(&full, ctx.dev).map_err(failed)?;
        return finish(spec, tensors, quant, &metadata, ctx);
    }
    let checkpoint = Checkpoint::open(&full).map_err(|e| read_error(e.with_path(&spec.path)))?;
    // A checkpoint with no model stays on disk; one in a layout of this program's own
    // (sparse or integer tensors) is small, and read whole.
    let layout = [sparse::METADATA_KEY, quant::METADATA_KEY]
        .iter()
        .any(|k| checkpoint.metadata.contains_key(*k));
    if spec.arch.is_none() && !layout {
        // Every float is read once now, so that a value that is not finite is refused with
        // its tensor's name before any work is done.
        let mut buf = Vec::new();
        for name in checkpoint.tensors.keys().filter(|n| checkpoint.is_float(n)) {
            checkpoint.check_finite(name, &mut buf).map_err(read_error)?;
        }
        let streamed = Streamed { path: spec.path.clone(), ops: Vec::new() };
        let mut weights = WeightsArtifact::streamed(streamed, ctx.node);
        weights.metrics = recorded_metrics(&checkpoint.metadata);
        return Ok(Artifact::Weights(Arc::new(weights)));
    }
    let mut raw = Tensors::new();
    for (name, (_, at)) in &checkpoint.tensors {
        let data = checkpoint.bytes(name).map_err(read_error)?;
        raw.insert(name.clone(), RawTensor { dtype: at.dtype, shape: at.shape.clone(), data });
    }
    let (tensors, quant, metadata) =
        decode_safetensors(raw, checkpoint.metadata.clone(), ctx.dev).map_err(failed)?;
    finish(spec, tensors, quant, &metadata, ctx)
}

/// Weights read whole, in f32 when they follow a model.
fn finish(
    spec: &LoadSpec,
    mut tensors: Weights,
    quant: QuantMap,
    metadata: &Metadata,
    ctx: &Context,
) -> Result<Artifact, StepError> {
    // A model runs in f32; without one the tensors pass through as stored.
    if spec.arch.is_some() {
        for t in tensors.values_mut() {
            if t.dtype() != DType::F32 {
                *t = t.to_dtype(DType::F32)?;
            }
        }
    }
    let metrics = recorded_metrics(metadata);
    let mut weights = WeightsArtifact::plain(spec.arch.clone(), tensors, ctx.node, metrics);
    weights.quant = quant;
    Ok(Artifact::Weights(Arc::new(weights)))
}

/// Files written by `recipe` carry the metrics of the step that made them; they are kept so
/// that loaded weights can be traced.
fn recorded_metrics(metadata: &Metadata) -> BTreeMap<String, f64> {
    ["metrics", "recipe.metrics"]
        .iter()
        .find_map(|k| metadata.get(*k).and_then(|m| serde_json::from_str(m).ok()))
        .unwrap_or_default()
}

/// The tensors of a safetensors file's contents, in their stored dtypes: sparse tensors made
/// dense again, integer tensors as the values they stand for, with their quantized form kept
/// so that saving them again writes the same integers.
pub fn decode_safetensors(
    raw: Tensors,
    metadata: Metadata,
    dev: &Device,
) -> Result<(Weights, QuantMap, Metadata), String> {
    let (raw, ints) = crate::formats::quant::decode(raw, &metadata).map_err(|e| e.to_string())?;
    let raw = crate::formats::sparse::decode(raw, &metadata).map_err(|e| e.to_string())?;
    let mut tensors = BTreeMap::new();
    let mut quant = QuantMap::new();
    for (name, q) in ints {
        let q = Quantized::Int(q);
        tensors.insert(name.clone(), q.dequantize(dev).map_err(|e| e.to_string())?);
        quant.insert(name, q);
    }
    for (name, t) in raw {
        let tensor = t.to_tensor(dev).map_err(|e| format!("tensor `{name}`: {e}"))?;
        tensors.insert(name, tensor);
    }
    Ok((tensors, quant, metadata))
}

/// The tensors of a GGUF file: those in a GGML format with their quantized form, as the
/// values they stand for; float ones as they are.
pub fn read_gguf(path: &Path, dev: &Device) -> Result<(Weights, QuantMap, Metadata), String> {
    let (entries, metadata) = crate::formats::gguf::read(path, dev).map_err(|e| e.to_string())?;
    let mut tensors = BTreeMap::new();
    let mut quant = QuantMap::new();
    for (name, (q, t)) in entries {
        let scheme = match q.dtype() {
            GgmlDType::Q8_0 => Some(QuantScheme::Q8_0),
            GgmlDType::Q4_0 => Some(QuantScheme::Q4_0),
            GgmlDType::Q4K => Some(QuantScheme::Q4K),
            GgmlDType::Q6K => Some(QuantScheme::Q6K),
            GgmlDType::F32 | GgmlDType::F16 | GgmlDType::BF16 => None,
            other => return Err(format!("tensor `{name}` is {other:?}, which recipe cannot run")),
        };
        if let Some(scheme) = scheme {
            let shape = t.dims().to_vec();
            quant.insert(name.clone(), Quantized::Ggml { tensor: Arc::new(q), shape, scheme });
        }
        tensors.insert(name, t);
    }
    Ok((tensors, quant, metadata))
}

fn help(path: &Path) -> String {
    format!("`{}` changed since the recipe was checked, or is damaged", path.display())
}

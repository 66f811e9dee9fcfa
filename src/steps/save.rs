//! The `save` step: weights to a safetensors or GGUF file whose metadata traces them to the
//! recipe and step that made them.
//!
//! Which file a weights artifact becomes follows from its quantization: weights quantized to a
//! GGML format are written as GGUF (the checker makes sure the path says `.gguf`); all others
//! as safetensors, integer-quantized tensors in the layout of [`crate::formats::quant`] and,
//! with `format = sparse`, float tensors in the layout of [`crate::formats::sparse`].

use std::collections::BTreeMap;

use crate::check::{SaveFormat, SaveSpec};
use crate::exec::{Artifact, Context, Inputs, StepError, WeightsArtifact};
use crate::formats::safetensors::{to_bytes, RawTensor};
use crate::formats::{gguf, quant, sparse};
use crate::graph::PROGRAM_VERSION;
use crate::nn::quant::Quantized;

pub fn run(spec: &SaveSpec, inputs: &Inputs, ctx: &Context) -> Result<Artifact, StepError> {
    let weights = inputs.weights(&spec.from);
    if let Some(streamed) = &weights.stream {
        let files = super::stream::save(spec, weights, streamed, ctx)?;
        return Ok(Artifact::Files(files));
    }
    if let Some(shard_size) = spec.shard_size {
        if let Stored::Safetensors(raw, meta) =
            stored(weights, spec.format, metadata(weights, ctx))?
        {
            let files = super::stream::write_shards(&spec.path, raw, &meta, shard_size, ctx)?;
            return Ok(Artifact::Files(files));
        }
    }
    let bytes = file_bytes(weights, spec.format, metadata(weights, ctx))?;
    ctx.write_output(&spec.path, &bytes)?;
    tracing::info!(path = %spec.path.display(), bytes = bytes.len(), "saved");
    Ok(Artifact::Files(vec![spec.path.clone()]))
}

/// What the weights are saved as in `format`, with `meta` in its metadata.
pub fn stored(
    weights: &WeightsArtifact,
    format: SaveFormat,
    mut meta: BTreeMap<String, String>,
) -> Result<Stored, StepError> {
    let ggml = weights.quant.values().any(|q| matches!(q, Quantized::Ggml { .. }));
    if ggml {
        let mut entries = BTreeMap::new();
        for (name, t) in &weights.tensors {
            let entry = match weights.quant.get(name) {
                Some(Quantized::Ggml { tensor, shape, .. }) => {
                    gguf::Entry::Quantized { tensor, shape }
                }
                _ => gguf::Entry::Float(t),
            };
            entries.insert(name.clone(), entry);
        }
        return gguf::to_bytes(&entries, &gguf_metadata(meta))
            .map(Stored::Gguf)
            .map_err(|e| StepError::new(e.to_string(), "this is a bug in recipe"));
    }

    // Float tensors, sparse if asked; then the integer tensors beside them.
    let mut raw = BTreeMap::new();
    let mut ints = BTreeMap::new();
    for (name, t) in &weights.tensors {
        match weights.quant.get(name) {
            Some(Quantized::Int(q)) => {
                ints.insert(name.clone(), q.clone());
            }
            _ => {
                raw.insert(name.clone(), RawTensor::from_tensor(t)?);
            }
        }
    }
    if format == SaveFormat::Sparse {
        let (stored, index) = sparse::encode(&raw);
        raw = stored;
        meta.insert(sparse::METADATA_KEY.to_string(), index);
    }
    if !ints.is_empty() {
        let (stored, index) = quant::encode(&ints);
        raw.extend(stored);
        meta.insert(quant::METADATA_KEY.to_string(), index);
    }
    for (name, t) in &raw {
        t.check().map_err(|detail| {
            StepError::new(format!("tensor `{name}`: {detail}"), "this is a bug in recipe")
        })?;
    }
    Ok(Stored::Safetensors(raw, meta))
}

/// What weights are saved as: the bytes of a GGUF file, or the tensors and metadata of a
/// safetensors file.
pub enum Stored {
    Gguf(Vec<u8>),
    Safetensors(BTreeMap<String, RawTensor>, BTreeMap<String, String>),
}

/// The bytes of the file the weights are saved as, in `format`, with `meta` in its metadata.
pub fn file_bytes(
    weights: &WeightsArtifact,
    format: SaveFormat,
    meta: BTreeMap<String, String>,
) -> Result<Vec<u8>, StepError> {
    Ok(match stored(weights, format, meta)? {
        Stored::Gguf(bytes) => bytes,
        Stored::Safetensors(raw, meta) => to_bytes(&raw, &meta),
    })
}

/// `meta` as a GGUF file holds it: GGUF readers group keys by a dotted prefix, so ours go
/// under `recipe.`, and the recipe's name under the conventional `general.name`.
pub fn gguf_metadata(meta: BTreeMap<String, String>) -> BTreeMap<String, String> {
    let mut gguf_meta: BTreeMap<String, String> = meta
        .into_iter()
        .filter(|(k, _)| k != "format")
        .map(|(k, v)| (format!("recipe.{k}"), v))
        .collect();
    if let Some(name) = gguf_meta.get("recipe.recipe").cloned() {
        gguf_meta.insert("general.name".to_string(), name);
    }
    gguf_meta
}

/// What a saved file says about where it came from. Every value is
/// deterministic, so two runs of a recipe write identical files.
pub fn metadata(weights: &WeightsArtifact, ctx: &Context) -> BTreeMap<String, String> {
    let mut meta = BTreeMap::new();
    meta.insert("format".to_string(), "pt".to_string());
    meta.insert("program".to_string(), PROGRAM_VERSION.to_string());
    meta.insert("recipe".to_string(), ctx.recipe_name.to_string());
    // The save step's own hash covers every setting and input file the weights came from, and
    // nothing else, so editing an unrelated block leaves the file (and its cache entry) alone.
    meta.insert("recipe_hash".to_string(), ctx.node.hash.clone());
    meta.insert("step".to_string(), weights.made_by.clone());
    meta.insert("step_hash".to_string(), weights.step_hash.clone());
    meta.insert(
        "metrics".to_string(),
        serde_json::to_string(&weights.metrics).expect("metrics serialise"),
    );
    if let Some(arch) = &weights.arch {
        meta.insert(
            "architecture".to_string(),
            serde_json::to_string(arch).expect("architectures serialise"),
        );
    }
    meta
}

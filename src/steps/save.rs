//! The `save` step: weights to a safetensors file whose metadata traces
//! them to the recipe and step that made them.

use std::collections::BTreeMap;

use crate::check::{SaveFormat, SaveSpec};
use crate::exec::{Artifact, Context, Inputs, StepError, WeightsArtifact};
use crate::formats::safetensors::{write, RawTensor};
use crate::formats::sparse;
use crate::graph::PROGRAM_VERSION;

pub fn run(spec: &SaveSpec, inputs: &Inputs, ctx: &Context) -> Result<Artifact, StepError> {
    let weights = inputs.weights(&spec.from);
    let (raw, mut meta) = (raw_tensors(weights, spec.format)?, metadata(weights, ctx));
    if let Some(index) = raw.1 {
        meta.insert(sparse::METADATA_KEY.to_string(), index);
    }
    let full = ctx.base_dir.join(&spec.path);
    write(&full, &raw.0, &meta).map_err(|e| {
        StepError::new(e.with_path(&spec.path).to_string(), "check that the folder can be written")
    })?;
    tracing::info!(path = %spec.path.display(), "saved");
    Ok(Artifact::File(spec.path.clone()))
}

/// The tensors as they are written in `format`, and for the sparse format
/// the index of sparse tensors for the metadata.
pub fn raw_tensors(
    weights: &WeightsArtifact,
    format: SaveFormat,
) -> Result<(BTreeMap<String, RawTensor>, Option<String>), StepError> {
    let mut raw = BTreeMap::new();
    for (name, t) in &weights.tensors {
        raw.insert(name.clone(), RawTensor::from_tensor(t)?);
    }
    Ok(match format {
        SaveFormat::Dense => (raw, None),
        SaveFormat::Sparse => {
            let (stored, index) = sparse::encode(&raw);
            (stored, Some(index))
        }
    })
}

/// What a saved file says about where it came from. Every value is
/// deterministic, so two runs of a recipe write identical files.
pub fn metadata(weights: &WeightsArtifact, ctx: &Context) -> BTreeMap<String, String> {
    let mut meta = BTreeMap::new();
    meta.insert("format".to_string(), "pt".to_string());
    meta.insert("program".to_string(), PROGRAM_VERSION.to_string());
    meta.insert("recipe".to_string(), ctx.recipe_name.to_string());
    meta.insert("recipe_hash".to_string(), ctx.recipe_hash.to_string());
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

//! Step outputs as cache entries: takes an [`Artifact`] and returns the manifest and payload
//! files that store it, and the reverse.
//!
//! Every artifact must come back exactly as it was made, since the steps that read it (and the
//! files they write) must not depend on whether it was computed or taken from the cache:
//!
//! - a dataset is `dataset.safetensors`, the features and labels of each split;
//! - weights are `weights.safetensors` (tensors in their own dtypes, integer-quantized ones in
//!   the layout of [`crate::formats::quant`]) and, when some are in a GGML format,
//!   `weights.gguf` holding those in their blocks;
//! - an architecture, an eval table and a saved file's path are plain JSON in the manifest.

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::sync::Arc;

use candle_core::Device;
use serde::{Deserialize, Serialize};

use super::cache::{Cache, Manifest, Output};
use super::{Artifact, WeightsArtifact};
use crate::check::Arch;
use crate::data::{Dataset, Part};
use crate::formats::gguf;
use crate::formats::safetensors::{to_bytes, Dtype, RawTensor};
use crate::graph::{Node, PROGRAM_VERSION};
use crate::nn::quant::Quantized;
use crate::steps::eval::Table;

const DATASET: &str = "dataset.safetensors";
const WEIGHTS: &str = "weights.safetensors";
const GGML: &str = "weights.gguf";

/// What the manifest says about weights beyond their tensors.
#[derive(Serialize, Deserialize)]
struct WeightsDetail {
    arch: Option<Arch>,
    made_by: String,
    step_hash: String,
    /// Weights left in a checkpoint: its path and the operations on it, and no payload.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    stream: Option<crate::steps::stream::Streamed>,
}

/// What the manifest says about a dataset beyond its splits.
#[derive(Serialize, Deserialize)]
struct DatasetDetail {
    features: Vec<usize>,
    classes: usize,
}

/// Payload files of a cache entry: each file's name in the entry and its bytes.
pub type Payload = Vec<(String, Vec<u8>)>;

/// The manifest (file hashes still to fill in) and payload files of a step's output.
pub fn encode(node: &Node, artifact: &Artifact) -> Result<(Manifest, Payload), String> {
    let mut manifest = Manifest {
        step: node.name.clone(),
        kind: node.kind.to_string(),
        hash: node.hash.clone(),
        program: PROGRAM_VERSION.to_string(),
        payload: BTreeMap::new(),
        outputs: Vec::new(),
        metrics: BTreeMap::new(),
        notes: Vec::new(),
        detail: serde_json::Value::Null,
    };
    let mut payload = Vec::new();
    let output =
        |path: &PathBuf| Output { path: path.clone(), blob: String::new(), hash: String::new() };
    match artifact {
        Artifact::Dataset(d) => {
            let detail = DatasetDetail { features: d.features.clone(), classes: d.classes };
            manifest.detail = serde_json::to_value(detail).expect("details serialise");
            for (split, part) in [("train", &d.train), ("val", &d.val), ("test", &d.test)] {
                manifest.metrics.insert(format!("{split}_samples"), part.n as f64);
            }
            payload.push((DATASET.to_string(), dataset_bytes(d)));
        }
        Artifact::Arch(arch) => {
            manifest.detail = serde_json::to_value(arch.as_ref()).expect("architectures serialise");
        }
        Artifact::Weights(w) => {
            let detail = WeightsDetail {
                arch: w.arch.clone(),
                made_by: w.made_by.clone(),
                step_hash: w.step_hash.clone(),
                stream: w.stream.as_deref().cloned(),
            };
            manifest.detail = serde_json::to_value(detail).expect("details serialise");
            manifest.metrics = w.metrics.clone();
            manifest.notes = w.notes.clone();
            manifest.outputs = w.written.iter().map(output).collect();
            if w.stream.is_none() {
                payload.extend(weights_files(w)?);
            }
        }
        Artifact::Metrics(table) => {
            manifest.detail = serde_json::to_value(table.as_ref()).expect("tables serialise");
            for (model, values) in &table.rows {
                for (metric, v) in values {
                    manifest.metrics.insert(format!("{model}.{}", metric.name()), *v);
                }
            }
            manifest.outputs = table.path.iter().map(output).collect();
        }
        Artifact::Files(paths) => {
            manifest.detail = serde_json::to_value(paths).expect("paths serialise");
            manifest.outputs = paths.iter().map(output).collect();
        }
    }
    Ok((manifest, payload))
}

/// The artifact a cache entry holds, its tensors on `dev`.
pub fn decode(manifest: &Manifest, cache: &Cache, dev: &Device) -> Result<Artifact, String> {
    let detail = manifest.detail.clone();
    let bad =
        |e: serde_json::Error| format!("its manifest does not describe a {}: {e}", manifest.kind);
    let file = |name: &str| cache.file(&manifest.hash, name);
    Ok(match manifest.kind.as_str() {
        "data" => {
            let detail: DatasetDetail = serde_json::from_value(detail).map_err(bad)?;
            Artifact::Dataset(Arc::new(read_dataset(&file(DATASET), detail)?))
        }
        "model" => Artifact::Arch(Arc::new(serde_json::from_value(detail).map_err(bad)?)),
        "eval" => Artifact::Metrics(Arc::new(serde_json::from_value(detail).map_err(bad)?)),
        "save" => Artifact::Files(serde_json::from_value(detail).map_err(bad)?),
        _ => {
            let detail: WeightsDetail = serde_json::from_value(detail).map_err(bad)?;
            let (mut tensors, mut quant) = (Default::default(), Default::default());
            if detail.stream.is_none() {
                let (raw, metadata) =
                    crate::formats::safetensors::read(&file(WEIGHTS)).map_err(|e| e.to_string())?;
                (tensors, quant, _) = crate::steps::load::decode_safetensors(raw, metadata, dev)?;
            }
            if manifest.payload.contains_key(GGML) {
                let (t, q, _) = crate::steps::load::read_gguf(&file(GGML), dev)?;
                tensors.extend(t);
                quant.extend(q);
            }
            Artifact::Weights(Arc::new(WeightsArtifact {
                arch: detail.arch,
                tensors,
                made_by: detail.made_by,
                step_hash: detail.step_hash,
                metrics: manifest.metrics.clone(),
                quant,
                notes: manifest.notes.clone(),
                written: manifest.outputs.iter().map(|o| o.path.clone()).collect(),
                stream: detail.stream.map(Arc::new),
            }))
        }
    })
}

/// The eval table a manifest of an eval step holds, without reading any payload.
pub fn table(manifest: &Manifest) -> Option<Table> {
    (manifest.kind == "eval").then(|| serde_json::from_value(manifest.detail.clone()).ok())?
}

fn dataset_bytes(d: &Dataset) -> Vec<u8> {
    let mut raw = BTreeMap::new();
    let width: usize = d.features.iter().product();
    for (split, part) in [("train", &d.train), ("val", &d.val), ("test", &d.test)] {
        let xs = part.xs.iter().flat_map(|v| v.to_le_bytes()).collect();
        let ys = part.ys.iter().flat_map(|v| v.to_le_bytes()).collect();
        let x = RawTensor { dtype: Dtype::F32, shape: vec![part.n, width], data: xs };
        let y = RawTensor { dtype: Dtype::U32, shape: vec![part.n], data: ys };
        raw.insert(format!("{split}.x"), x);
        raw.insert(format!("{split}.y"), y);
    }
    to_bytes(&raw, &BTreeMap::new())
}

fn read_dataset(path: &std::path::Path, detail: DatasetDetail) -> Result<Dataset, String> {
    let (raw, _) = crate::formats::safetensors::read(path).map_err(|e| e.to_string())?;
    let part = |split: &str| -> Result<Part, String> {
        let get = |name: String| raw.get(&name).ok_or(format!("`{name}` is missing"));
        let (x, y) = (get(format!("{split}.x"))?, get(format!("{split}.y"))?);
        let xs = x.to_f32s().ok_or("features are not f32")?;
        let ys = y.to_f64s().ok_or("labels are not integers")?.into_iter().map(|v| v as u32);
        Ok(Part { xs, ys: ys.collect(), n: y.elem_count() })
    };
    Ok(Dataset {
        features: detail.features,
        classes: detail.classes,
        train: part("train")?,
        val: part("val")?,
        test: part("test")?,
    })
}

/// `weights.safetensors` and, when some tensors are in a GGML format, `weights.gguf`.
fn weights_files(w: &WeightsArtifact) -> Result<Vec<(String, Vec<u8>)>, String> {
    let mut raw = BTreeMap::new();
    let mut ints = BTreeMap::new();
    let mut ggml = BTreeMap::new();
    for (name, t) in &w.tensors {
        match w.quant.get(name) {
            Some(Quantized::Int(q)) => {
                ints.insert(name.clone(), q.clone());
            }
            Some(Quantized::Ggml { tensor, shape, .. }) => {
                ggml.insert(name.clone(), gguf::Entry::Quantized { tensor, shape });
            }
            None => {
                raw.insert(name.clone(), RawTensor::from_tensor(t).map_err(|e| e.to_string())?);
            }
        }
    }
    let mut meta = BTreeMap::new();
    if !ints.is_empty() {
        let (stored, index) = crate::formats::quant::encode(&ints);
        raw.extend(stored);
        meta.insert(crate::formats::quant::METADATA_KEY.to_string(), index);
    }
    let mut files = vec![(WEIGHTS.to_string(), to_bytes(&raw, &meta))];
    if !ggml.is_empty() {
        let bytes = gguf::to_bytes(&ggml, &BTreeMap::new()).map_err(|e| e.to_string())?;
        files.push((GGML.to_string(), bytes));
    }
    Ok(files)
}

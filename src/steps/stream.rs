//! Weight-only steps on a checkpoint that stays on disk.
//!
//! A `load` without a model gives [`Streamed`] weights: the checkpoint and the list of
//! `prune` and `quantize` operations applied to it so far, not the tensors. Each operation
//! is worked out when its step runs (a global pruning threshold needs a pass over the
//! data) and applied when a later step reads the tensors: `save` and `eval` visit them one
//! at a time, in name order, through a [`Walk`], so memory holds about one tensor whatever
//! the checkpoint's size, and a tensor no operation targets is handed on as its stored
//! bytes.
//!
//! Global magnitude pruning is exact, with the rule of the in-memory path: the `k` weights
//! of smallest (`|w|` bit pattern, position) across the targets in name order become zero.
//! The threshold comes from two passes of radix selection over the targets: a histogram of
//! the top 16 bits of every `|w|`, then of the low 15 bits of those in the bucket that
//! holds the k-th smallest. The weights equal to the threshold that must go are the first
//! ones met in that order, which a walk counts off as it goes.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use candle_core::quantized::GgmlDType;
use candle_core::{Device, Tensor};
use rayon::prelude::*;
use serde::{Deserialize, Serialize};

use crate::check::{
    Granularity, Metric, PruneAmount, QuantScheme, SaveFormat, SaveSpec, Scope, TensorSelection,
};
use crate::exec::{Context, StepError, WeightsArtifact};
use crate::formats::checkpoint::Checkpoint;
use crate::formats::gguf::{GgufStream, Planned};
use crate::formats::safetensors::{Dtype, RawTensor, SafetensorsStream};
use crate::formats::{quant, sparse};
use crate::nn::prune;
use crate::nn::quant::{Quantized, Scheme};

/// A checkpoint on disk and what to do to its tensors.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Streamed {
    /// The checkpoint, a safetensors file or an index of shards, as the recipe names it.
    pub path: PathBuf,
    pub ops: Vec<Op>,
}

/// One weight-only operation on the tensors named in `targets`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub enum Op {
    Prune { targets: Vec<String>, rule: Rule },
    Quantize { targets: Vec<String>, scheme: SchemeSpec },
}

/// How a pruning operation chooses the weights it zeroes.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub enum Rule {
    /// Every `|w| < t`.
    Threshold(f64),
    /// The given share of each tensor.
    Layer(f64),
    /// Every `|w|` whose pattern is below `key`, and the first `ties` equal to it.
    Global { key: u32, ties: u64 },
    /// Keep the `n` largest of every `m` consecutive weights of a row.
    NOfM { n: usize, m: usize },
}

/// A quantization scheme, as stored with the operation.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
pub struct SchemeSpec {
    pub scheme: QuantScheme,
    pub granularity: Granularity,
    pub symmetric: bool,
}

impl SchemeSpec {
    pub fn scheme(self) -> Scheme {
        Scheme { scheme: self.scheme, granularity: self.granularity, symmetric: self.symmetric }
    }
}

/// A tensor as a walk hands it on.
pub enum Visited {
    /// No operation targets it: its stored bytes.
    Stored { dtype: Dtype, shape: Vec<usize>, bytes: Vec<u8> },
    /// Changed: its values, its stored dtype, and its quantized form when the last
    /// operation on it quantized it, with that quantization's error. The values of a tensor
    /// quantized last are only worked out by a walk that measures; others leave them empty.
    Changed {
        dtype: Dtype,
        shape: Vec<usize>,
        values: Vec<f32>,
        quant: Option<(Quantized, QuantError)>,
    },
}

impl Streamed {
    /// Open the checkpoint; relative paths start from `base_dir`.
    pub fn open(&self, base_dir: &Path) -> Result<Checkpoint, StepError> {
        Checkpoint::open(&base_dir.join(&self.path)).map_err(|e| {
            StepError::new(e.to_string(), "the checkpoint changed or moved since it was checked")
        })
    }

    /// These weights with `op` added.
    pub fn with(&self, op: Op) -> Streamed {
        let mut next = self.clone();
        next.ops.push(op);
        next
    }

    /// The names of the tensors the operations so far quantize (the last operation on each
    /// decides).
    pub fn quantized(&self, names: impl Iterator<Item = String>) -> BTreeMap<String, Scheme> {
        let mut out = BTreeMap::new();
        for name in names {
            let last = self.ops.iter().rev().find(|op| op.touches(&name));
            if let Some(Op::Quantize { scheme, .. }) = last {
                out.insert(name, scheme.scheme());
            }
        }
        out
    }
}

impl Op {
    pub fn targets(&self) -> &[String] {
        match self {
            Op::Prune { targets, .. } | Op::Quantize { targets, .. } => targets,
        }
    }

    /// Whether the operation works on tensor `name`.
    pub fn touches(&self, name: &str) -> bool {
        self.targets().iter().any(|t| t == name)
    }
}

/// The float tensors of `checkpoint` that `targets` minus `ignore` select, in name order.
pub fn targets(checkpoint: &Checkpoint, targets: &[String], ignore: &[String]) -> Vec<String> {
    let selection = TensorSelection::new(targets, ignore);
    checkpoint
        .tensors
        .iter()
        .filter(|(name, (_, at))| {
            selection.selects(name, at.shape.len()) && checkpoint.is_float(name)
        })
        .map(|(name, _)| name.clone())
        .collect()
}

/// A visit of a checkpoint's tensors in name order with operations applied.
pub struct Walk<'a> {
    checkpoint: &'a Checkpoint,
    ops: &'a [Op],
    /// For each global pruning operation, the ties at its threshold still to zero.
    ties: Vec<u64>,
    /// Whether to dequantize what was quantized last and measure the error, which saving
    /// does not need.
    measure: bool,
}

impl<'a> Walk<'a> {
    pub fn new(checkpoint: &'a Checkpoint, streamed: &'a Streamed) -> Walk<'a> {
        Walk::with_ops(checkpoint, &streamed.ops)
    }

    /// A walk that hands on quantized tensors without their dequantized values.
    pub fn for_saving(checkpoint: &'a Checkpoint, streamed: &'a Streamed) -> Walk<'a> {
        Walk { measure: false, ..Walk::with_ops(checkpoint, &streamed.ops) }
    }

    fn with_ops(checkpoint: &'a Checkpoint, ops: &'a [Op]) -> Self {
        let ties = ops
            .iter()
            .map(|op| match op {
                Op::Prune { rule: Rule::Global { ties, .. }, .. } => *ties,
                _ => 0,
            })
            .collect();
        Walk { checkpoint, ops, ties, measure: true }
    }

    /// The tensor `name`; tensors must be visited in name order for global pruning's ties.
    pub fn visit(&mut self, name: &str) -> Result<Visited, StepError> {
        let (_, at) = &self.checkpoint.tensors[name];
        let touched = self.ops.iter().any(|op| op.touches(name));
        if !touched {
            let bytes = self.checkpoint.bytes(name).map_err(read_error)?;
            return Ok(Visited::Stored { dtype: at.dtype, shape: at.shape.clone(), bytes });
        }
        let mut values = self.checkpoint.values(name).map_err(read_error)?;
        let mut quant = None;
        for (i, op) in self.ops.iter().enumerate() {
            if !op.touches(name) {
                continue;
            }
            quant = None;
            match op {
                Op::Prune { rule, .. } => {
                    apply_rule(rule, &mut values, &at.shape, &mut self.ties[i]).map_err(|e| {
                        StepError::new(format!("`{name}`: {e}"), "see `recipe check`")
                    })?;
                }
                Op::Quantize { scheme, .. } => {
                    let later = self.ops[i + 1..].iter().any(|op| op.touches(name));
                    let t = Tensor::from_vec(values, at.shape.as_slice(), &Device::Cpu)?;
                    let q = Quantized::new(&t, scheme.scheme()).map_err(|e| {
                        StepError::new(
                            format!("cannot quantize `{name}`: {e}"),
                            "see `recipe check`",
                        )
                    })?;
                    if !later && !self.measure {
                        values = Vec::new();
                        quant = Some((q, QuantError::default()));
                        continue;
                    }
                    let before = t.flatten_all()?.to_vec1::<f32>()?;
                    values = q.dequantize(&Device::Cpu)?.flatten_all()?.to_vec1::<f32>()?;
                    quant = Some((q, QuantError::of(&before, &values)));
                }
            }
        }
        Ok(Visited::Changed { dtype: at.dtype, shape: at.shape.clone(), values, quant })
    }
}

pub fn read_error(e: crate::formats::safetensors::FormatError) -> StepError {
    StepError::new(e.to_string(), "the checkpoint changed since it was checked, or is damaged")
}

fn apply_rule(
    rule: &Rule,
    values: &mut [f32],
    shape: &[usize],
    ties: &mut u64,
) -> Result<(), prune::PruneError> {
    match *rule {
        Rule::Threshold(t) => {
            prune::magnitude(&mut [values], PruneAmount::Threshold(t), Scope::Layer);
        }
        Rule::Layer(s) => {
            prune::magnitude(&mut [values], PruneAmount::Sparsity(s), Scope::Layer);
        }
        Rule::NOfM { n, m } => {
            let row: usize = shape[1..].iter().product();
            prune::n_of_m(values, row, n, m)?;
        }
        Rule::Global { key, ties: _ } => {
            values.par_chunks_mut(1 << 16).for_each(|chunk| {
                for w in chunk {
                    *w = if prune::key(*w) < key { 0.0 } else { *w };
                }
            });
            // The ties go in order, the lower index first, while some are left to zero.
            for w in values.iter_mut() {
                if *ties == 0 {
                    break;
                }
                if prune::key(*w) == key {
                    *w = 0.0;
                    *ties -= 1;
                }
            }
        }
    }
    Ok(())
}

/// The pruning rule for `amount` over `scope` on the `targets` of `streamed`, which for a
/// global sparsity takes two passes over the targets as the earlier operations leave them.
pub fn rule(
    streamed: &Streamed,
    checkpoint: &Checkpoint,
    targets: &[String],
    amount: PruneAmount,
    scope: Scope,
    pattern: Option<(usize, usize)>,
) -> Result<Rule, StepError> {
    if let Some((n, m)) = pattern {
        return Ok(Rule::NOfM { n, m });
    }
    let s = match (amount, scope) {
        (PruneAmount::Threshold(t), _) => return Ok(Rule::Threshold(t)),
        (PruneAmount::Sparsity(s), Scope::Layer) => return Ok(Rule::Layer(s)),
        (PruneAmount::Sparsity(s), Scope::Global) => s,
    };
    let n: u64 = targets
        .iter()
        .map(|t| checkpoint.tensors[t].1.shape.iter().product::<usize>() as u64)
        .sum();
    let k = prune::prune_count(s, n as usize) as u64;
    if k == 0 {
        return Ok(Rule::Global { key: 0, ties: 0 });
    }
    if k >= n {
        return Ok(Rule::Global { key: u32::MAX, ties: 0 });
    }
    // The k-th smallest key (0-based k - 1) lies in one top bucket, then at one low value.
    let top = histogram(streamed, checkpoint, targets, 1 << 16, |key| Some((key >> 15) as usize))?;
    let (bucket, below_bucket) = nth_bucket(&top, k - 1);
    let low = histogram(streamed, checkpoint, targets, 1 << 15, |key| {
        ((key >> 15) as usize == bucket).then_some((key & 0x7fff) as usize)
    })?;
    let (value, below_value) = nth_bucket(&low, k - 1 - below_bucket);
    let key = ((bucket as u32) << 15) | value as u32;
    let ties = k - below_bucket - below_value;
    Ok(Rule::Global { key, ties })
}

/// The targets as the earlier operations leave them, one at a time, counted into a
/// histogram of `buckets` by `slot` of each `|w|` pattern (`None` leaves a value out).
fn histogram(
    streamed: &Streamed,
    checkpoint: &Checkpoint,
    targets: &[String],
    buckets: usize,
    slot: impl Fn(u32) -> Option<usize> + Sync,
) -> Result<Vec<u64>, StepError> {
    let mut walk = Walk::with_ops(checkpoint, &streamed.ops);
    let (mut raw, mut values) = (Vec::new(), Vec::new());
    let mut hist = vec![0u64; buckets];
    for name in checkpoint.tensors.keys().filter(|n| targets.contains(n)) {
        if streamed.ops.iter().any(|op| op.touches(name)) {
            match walk.visit(name)? {
                Visited::Changed { values: v, .. } => values = v,
                Visited::Stored { .. } => unreachable!("a touched tensor is changed"),
            }
        } else {
            checkpoint.values_into(name, &mut raw, &mut values).map_err(read_error)?;
        }
        let counts = values
            .par_chunks(1 << 20)
            .map(|chunk| {
                let mut h = vec![0u64; buckets];
                for &w in chunk {
                    if let Some(i) = slot(prune::key(w)) {
                        h[i] += 1;
                    }
                }
                h
            })
            .reduce(|| vec![0u64; buckets], add);
        hist = add(hist, counts);
    }
    Ok(hist)
}

fn add(mut a: Vec<u64>, b: Vec<u64>) -> Vec<u64> {
    a.iter_mut().zip(b).for_each(|(x, y)| *x += y);
    a
}

/// The bucket of `hist` holding the element of 0-based rank `rank`, and how many elements
/// lie in the buckets before it.
fn nth_bucket(hist: &[u64], rank: u64) -> (usize, u64) {
    let mut before = 0;
    for (i, &count) in hist.iter().enumerate() {
        if before + count > rank {
            return (i, before);
        }
        before += count;
    }
    (hist.len() - 1, before)
}

/// Save streamed weights as `spec` asks, one tensor at a time: a GGUF file, or safetensors,
/// sharded again when the checkpoint was (in shards no larger than its largest). Returns the
/// files written, relative to the output folder.
pub fn save(
    spec: &SaveSpec,
    weights: &WeightsArtifact,
    streamed: &Streamed,
    ctx: &Context,
) -> Result<Vec<PathBuf>, StepError> {
    let checkpoint = streamed.open(ctx.base_dir)?;
    let full = ctx.output_path(&spec.path)?;
    let meta = super::save::metadata(weights, ctx);
    let cannot = |e: String| StepError::new(e, "check that the folder can be written");
    if spec.path.extension().is_some_and(|e| e == "gguf") {
        save_gguf(&checkpoint, streamed, &full, meta).map_err(cannot)?;
        return Ok(vec![spec.path.clone()]);
    }
    let largest_input =
        || checkpoint.files.iter().filter_map(|f| std::fs::metadata(f).ok()).map(|m| m.len()).max();
    let shard_size = spec.shard_size.or_else(|| checkpoint.sharded.then(largest_input).flatten());
    let files = save_safetensors(&checkpoint, streamed, &full, spec.format, meta, shard_size)
        .map_err(cannot)?;
    Ok(relative(&spec.path, &files))
}

/// Safetensors tensors written as shards of at most `shard_size` bytes of data each, with an
/// index; the files written, relative to the output folder.
pub fn write_shards(
    path: &Path,
    tensors: BTreeMap<String, RawTensor>,
    meta: &BTreeMap<String, String>,
    shard_size: u64,
    ctx: &Context,
) -> Result<Vec<PathBuf>, StepError> {
    let cannot = |e: crate::formats::safetensors::FormatError| {
        StepError::new(e.to_string(), "check that the folder can be written")
    };
    let mut out = SafetensorsStream::create(&ctx.output_path(path)?).map_err(cannot)?;
    for (name, t) in &tensors {
        out.push(name, t).map_err(cannot)?;
    }
    let files = out.finish(meta, Some(shard_size)).map_err(cannot)?;
    Ok(relative(path, &files))
}

/// Files written beside `path`, named as `path` is (relative to the output folder).
fn relative(path: &Path, files: &[PathBuf]) -> Vec<PathBuf> {
    let folder = path.parent().unwrap_or(Path::new(""));
    files.iter().map(|f| folder.join(f.file_name().unwrap_or_default())).collect()
}

/// The stored bytes of changed values in `dtype`, the dtype they were read from.
fn stored(dtype: Dtype, values: &[f32]) -> Vec<u8> {
    match dtype {
        Dtype::F16 => values.iter().flat_map(|&v| half::f16::from_f32(v).to_le_bytes()).collect(),
        Dtype::BF16 => values.iter().flat_map(|&v| half::bf16::from_f32(v).to_le_bytes()).collect(),
        _ => values.iter().flat_map(|v| v.to_le_bytes()).collect(),
    }
}

fn save_safetensors(
    checkpoint: &Checkpoint,
    streamed: &Streamed,
    path: &Path,
    format: SaveFormat,
    mut meta: BTreeMap<String, String>,
    shard_size: Option<u64>,
) -> Result<Vec<PathBuf>, String> {
    let mut out = SafetensorsStream::create(path).map_err(|e| e.to_string())?;
    let mut ints = serde_json::Map::new();
    let mut sparse_index = serde_json::Map::new();
    let mut walk = Walk::for_saving(checkpoint, streamed);
    for name in checkpoint.tensors.keys() {
        let parts = match walk.visit(name).map_err(|e| e.message)? {
            Visited::Stored { dtype, shape, bytes } => {
                BTreeMap::from([(name.clone(), RawTensor { dtype, shape, data: bytes })])
            }
            Visited::Changed { quant: Some((Quantized::Int(q), _)), .. } => {
                let (parts, index) = quant::encode(&BTreeMap::from([(name.clone(), q)]));
                merge(&mut ints, &index);
                parts
            }
            Visited::Changed { quant: Some((Quantized::Ggml { .. }, _)), .. } => {
                return Err(format!("`{name}` is in a GGML format, which only GGUF files hold"));
            }
            Visited::Changed { dtype, shape, values, quant: None } => {
                let t = RawTensor { dtype, shape, data: stored(dtype, &values) };
                let one = BTreeMap::from([(name.clone(), t)]);
                if format == SaveFormat::Sparse {
                    let (parts, index) = sparse::encode(&one);
                    merge(&mut sparse_index, &index);
                    parts
                } else {
                    one
                }
            }
        };
        for (part, t) in &parts {
            out.push(part, t).map_err(|e| e.to_string())?;
        }
    }
    if !ints.is_empty() {
        meta.insert(quant::METADATA_KEY.into(), serde_json::Value::Object(ints).to_string());
    }
    if !sparse_index.is_empty() {
        let index = serde_json::Value::Object(sparse_index).to_string();
        meta.insert(sparse::METADATA_KEY.into(), index);
    }
    out.finish(&meta, shard_size).map_err(|e| e.to_string())
}

/// Add the entries of one tensor's layout index (a JSON object) to `all`.
fn merge(all: &mut serde_json::Map<String, serde_json::Value>, index: &str) {
    if let Ok(serde_json::Value::Object(entries)) = serde_json::from_str(index) {
        all.extend(entries);
    }
}

fn save_gguf(
    checkpoint: &Checkpoint,
    streamed: &Streamed,
    path: &Path,
    meta: BTreeMap<String, String>,
) -> Result<(), String> {
    let quantized = streamed.quantized(checkpoint.tensors.keys().cloned());
    let mut planned = Vec::new();
    let mut shapes = BTreeMap::new();
    for (name, (_, at)) in &checkpoint.tensors {
        let plan = match quantized.get(name).and_then(|s| s.ggml()) {
            Some(ggml) => {
                let rest: usize = at.shape[1..].iter().product();
                Planned::ggml(name, ggml, vec![at.shape[0], rest])
            }
            None => {
                // GGUF holds at most four dimensions; more are folded into the second.
                let dims = if at.shape.len() <= 4 {
                    at.shape.clone()
                } else {
                    vec![at.shape[0], at.shape[1..].iter().product()]
                };
                match at.dtype {
                    Dtype::F32 => Planned::ggml(name, GgmlDType::F32, dims),
                    Dtype::F16 => Planned::ggml(name, GgmlDType::F16, dims),
                    Dtype::BF16 => Planned::ggml(name, GgmlDType::BF16, dims),
                    other => Planned::plain(name, other, dims).ok_or_else(|| {
                        format!("`{name}` holds {other}, which GGUF cannot store")
                    })?,
                }
            }
        };
        if plan.dims != at.shape {
            shapes.insert(name.clone(), at.shape.clone());
        }
        planned.push(plan);
    }
    let gguf_meta = super::save::gguf_metadata(meta);
    let mut out =
        GgufStream::create(path, &gguf_meta, &shapes, planned).map_err(|e| e.to_string())?;
    let mut walk = Walk::for_saving(checkpoint, streamed);
    for name in checkpoint.tensors.keys() {
        let data = match walk.visit(name).map_err(|e| e.message)? {
            Visited::Stored { bytes, .. } => bytes,
            Visited::Changed { quant: Some((Quantized::Ggml { tensor, .. }, _)), .. } => {
                let data = tensor.data().map_err(|e| e.to_string())?;
                out.push(name, &data).map_err(|e| e.to_string())?;
                continue;
            }
            Visited::Changed { quant: Some((Quantized::Int(_), _)), .. } => {
                return Err(format!("`{name}` is integer-quantized, which GGUF does not hold"));
            }
            Visited::Changed { dtype, values, quant: None, .. } => stored(dtype, &values),
        };
        out.push(name, &data).map_err(|e| e.to_string())?;
    }
    out.finish().map_err(|e| e.to_string())
}

/// How far quantization moved a tensor: `||w - dequant(quant(w))||^2` and `||w||^2`, in f64.
#[derive(Debug, Clone, Copy, Default)]
pub struct QuantError {
    pub diff: f64,
    pub norm: f64,
}

impl QuantError {
    fn of(before: &[f32], after: &[f32]) -> QuantError {
        let mut e = QuantError::default();
        for (&x, &y) in before.iter().zip(after) {
            e.diff += (f64::from(x) - f64::from(y)).powi(2);
            e.norm += f64::from(x).powi(2);
        }
        e
    }

    /// `||w - dequant(quant(w))|| / ||w||`; 0 for a tensor of zeros.
    pub fn relative(self) -> f64 {
        if self.norm == 0.0 {
            0.0
        } else {
            (self.diff / self.norm).sqrt()
        }
    }
}

/// The eval rows of streamed weights `name`: one for the whole checkpoint, then one per
/// tensor an operation changed (`NAME/TENSOR`), each with the bytes it takes saved in
/// `format`, its share of zeros (over tensors of rank 2 or more for the whole) and the
/// relative error of its quantization (over the quantized tensors for the whole).
pub fn measure(
    name: &str,
    streamed: &Streamed,
    format: SaveFormat,
    ctx: &Context,
) -> Result<Vec<super::eval::Row>, StepError> {
    let checkpoint = streamed.open(ctx.base_dir)?;
    let mut walk = Walk::new(&checkpoint, streamed);
    let mut rows = Vec::new();
    let (mut size_all, mut zeros, mut total) = (0u64, 0u64, 0u64);
    let mut error_all = QuantError::default();
    for tensor in checkpoint.tensors.keys() {
        let (size, shape, values, error) = match walk.visit(tensor)? {
            Visited::Stored { dtype, shape, bytes } => {
                size_all += bytes.len() as u64;
                if shape.len() >= 2 && crate::formats::checkpoint::is_float(dtype) {
                    let values = crate::formats::checkpoint::to_f32(dtype, &bytes)
                        .expect("a float dtype converts");
                    zeros += values.iter().filter(|v| **v == 0.0).count() as u64;
                    total += values.len() as u64;
                }
                continue;
            }
            Visited::Changed { dtype, shape, values, quant } => {
                let size = match &quant {
                    Some((Quantized::Int(q), _)) => {
                        let one = BTreeMap::from([(tensor.clone(), q.clone())]);
                        quant::encode(&one).0.values().map(|p| p.data.len()).sum()
                    }
                    Some((Quantized::Ggml { tensor: q, .. }, _)) => {
                        q.data().map_err(StepError::from)?.len()
                    }
                    None => {
                        let data = stored(dtype, &values);
                        let t = RawTensor { dtype, shape: shape.clone(), data };
                        if format == SaveFormat::Sparse {
                            let one = BTreeMap::from([(tensor.clone(), t)]);
                            sparse::encode(&one).0.values().map(|p| p.data.len()).sum()
                        } else {
                            t.data.len()
                        }
                    }
                };
                (size, shape, values, quant.map(|(_, e)| e))
            }
        };
        size_all += size as u64;
        let z = values.iter().filter(|v| **v == 0.0).count() as u64;
        if shape.len() >= 2 {
            zeros += z;
            total += values.len() as u64;
        }
        if let Some(e) = error {
            // The whole's error is that of all quantized tensors as one long vector.
            error_all.diff += e.diff;
            error_all.norm += e.norm;
        }
        let mut row = BTreeMap::new();
        row.insert(Metric::Size, size as f64);
        row.insert(Metric::Sparsity, z as f64 / values.len().max(1) as f64);
        row.insert(Metric::Error, error.map_or(0.0, QuantError::relative));
        rows.push((format!("{name}/{tensor}"), row));
    }
    let mut whole = BTreeMap::new();
    whole.insert(Metric::Size, size_all as f64);
    whole.insert(Metric::Sparsity, if total == 0 { 0.0 } else { zeros as f64 / total as f64 });
    whole.insert(Metric::Error, error_all.relative());
    rows.insert(0, (name.to_string(), whole));
    Ok(rows)
}

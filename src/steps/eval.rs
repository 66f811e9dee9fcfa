//! The `eval` step: a table of metrics for several weights on one split,
//! printed by the command line and written as JSON when asked.

use std::collections::BTreeMap;
use std::fmt::Write as _;
use std::path::PathBuf;
use std::sync::Arc;

use crate::check::{EvalSpec, Loss, Metric, SaveFormat};
use crate::exec::{Artifact, Context, Inputs, StepError, WeightsArtifact};
use crate::nn::metrics::{latency, score_with};
use crate::nn::quant::{matmuls, Quantized};

/// How many single-sample forward passes the latency median is taken over.
const LATENCY_REPEATS: usize = 50;

/// One row of a table: what was measured, and the figures.
pub type Row = (String, BTreeMap<Metric, f64>);

/// The result of an eval step.
#[derive(Debug, Clone, PartialEq, serde::Serialize, serde::Deserialize)]
pub struct Table {
    /// The eval block's name.
    pub name: String,
    /// The split evaluated on, as `digits.test`.
    pub data: String,
    pub samples: usize,
    pub metrics: Vec<Metric>,
    /// One row per evaluated block, in the order the recipe lists them.
    pub rows: Vec<Row>,
    /// Where the JSON copy was written, relative to the recipe folder.
    pub path: Option<PathBuf>,
    /// How quantized rows were run, one line each, printed under the table.
    pub notes: Vec<String>,
}

impl Table {
    /// The table as aligned text.
    pub fn render(&self) -> String {
        let mut header = vec!["model".to_string()];
        header.extend(self.metrics.iter().map(|m| heading(*m)));
        let mut lines = vec![header];
        for (name, values) in &self.rows {
            let mut line = vec![name.clone()];
            line.extend(self.metrics.iter().map(|m| format_metric(*m, values[m])));
            lines.push(line);
        }
        let widths: Vec<usize> = (0..lines[0].len())
            .map(|i| lines.iter().map(|l| l[i].chars().count()).max().unwrap_or(0))
            .collect();
        let mut out = match self.data.as_str() {
            "" => format!("eval {} (weights only)\n", self.name),
            data => format!("eval {} on {data} ({} samples)\n", self.name, self.samples),
        };
        for line in lines {
            let cells: Vec<String> = line
                .iter()
                .zip(&widths)
                .enumerate()
                .map(|(i, (c, w))| if i == 0 { format!("{c:<w$}") } else { format!("{c:>w$}") })
                .collect();
            let _ = writeln!(out, "  {}", cells.join("  ").trim_end());
        }
        for note in &self.notes {
            let _ = writeln!(out, "  {note}");
        }
        out
    }

    /// `{"base": {"accuracy": 0.97, "size": 35240}, ...}`; sizes in bytes,
    /// latency in milliseconds, shares as fractions.
    pub fn to_json(&self) -> String {
        let mut root = serde_json::Map::new();
        for (name, values) in &self.rows {
            let mut row = serde_json::Map::new();
            for m in &self.metrics {
                let v = values[m];
                let value = match m {
                    Metric::Size => serde_json::Value::from(v as u64),
                    _ => serde_json::Value::from(v),
                };
                row.insert(m.name().to_string(), value);
            }
            root.insert(name.clone(), serde_json::Value::Object(row));
        }
        let mut text = serde_json::to_string_pretty(&root).expect("metrics serialise");
        text.push('\n');
        text
    }
}

fn heading(m: Metric) -> String {
    match m {
        Metric::Latency => "latency (ms)".into(),
        other => other.name().into(),
    }
}

fn format_metric(m: Metric, v: f64) -> String {
    match m {
        Metric::Accuracy | Metric::Sparsity => format!("{:.2}%", v * 100.0),
        Metric::Loss => format!("{v:.4}"),
        Metric::Size => human_bytes(v as u64),
        Metric::Latency => format!("{v:.3}"),
        Metric::Error => format!("{:.3}%", v * 100.0),
    }
}

/// `35240` as `34.4 KiB`.
pub fn human_bytes(n: u64) -> String {
    const UNITS: [&str; 4] = ["KiB", "MiB", "GiB", "TiB"];
    if n < 1024 {
        return format!("{n} B");
    }
    let mut v = n as f64 / 1024.0;
    let mut unit = 0;
    while v >= 1024.0 && unit + 1 < UNITS.len() {
        v /= 1024.0;
        unit += 1;
    }
    format!("{v:.1} {}", UNITS[unit])
}

pub fn run(spec: &EvalSpec, inputs: &Inputs, ctx: &Context) -> Result<Artifact, StepError> {
    // The split the models run on, when a metric runs them.
    let mut split = None;
    if let Some(data) = &spec.data {
        let dataset = inputs.dataset(&data.block);
        let part = dataset.part(data.split);
        let runs_model = spec.metrics.iter().any(|m| matches!(m, Metric::Accuracy | Metric::Loss));
        if runs_model && part.n == 0 {
            return Err(StepError::new(
                format!("the {} split of `{}` is empty", data.split.name(), data.block),
                "give the split a share in the data block's `split`",
            ));
        }
        let (xs, ys) = part.tensors(&dataset.features, ctx.dev)?;
        split = Some((xs, ys, dataset.classes, part.n));
    }

    let mut rows = Vec::with_capacity(spec.models.len());
    let mut notes = Vec::new();
    for (name, format) in spec.models.iter().zip(&spec.formats) {
        let weights = inputs.weights(name);
        if let Some(streamed) = &weights.stream {
            rows.extend(super::stream::measure(name, streamed, *format, ctx)?);
            continue;
        }
        let run = split.as_ref().map(|(xs, ys, classes, _)| (xs, ys, *classes));
        let values = measure(spec, weights, *format, run)?;
        rows.push((name.clone(), values));
        notes.extend(quantized_note(name, weights));
    }
    let table = Table {
        name: ctx.node.name.clone(),
        data: spec
            .data
            .as_ref()
            .map_or(String::new(), |d| format!("{}.{}", d.block, d.split.name())),
        samples: split.map_or(0, |s| s.3),
        metrics: spec.metrics.clone(),
        rows,
        path: spec.path.clone(),
        notes,
    };
    if let Some(path) = &spec.path {
        ctx.write_output(path, table.to_json().as_bytes())?;
    }
    Ok(Artifact::Metrics(Arc::new(table)))
}

fn measure(
    spec: &EvalSpec,
    weights: &WeightsArtifact,
    format: SaveFormat,
    split: Option<(&candle_core::Tensor, &candle_core::Tensor, usize)>,
) -> Result<BTreeMap<Metric, f64>, StepError> {
    let mut values = BTreeMap::new();
    let qmm = &matmuls(&weights.quant)?;
    let needs_scores = spec.metrics.iter().any(|m| matches!(m, Metric::Accuracy | Metric::Loss));
    if let (true, Some((xs, ys, classes))) = (needs_scores, split) {
        let arch = weights.arch.as_ref().expect("the checker requires an architecture");
        // The loss reported is cross-entropy whatever the training loss was,
        // so that rows trained differently stay comparable.
        let scores = score_with(arch, &weights.tensors, qmm, xs, ys, Loss::CrossEntropy, classes)?;
        values.insert(Metric::Accuracy, scores.accuracy);
        values.insert(Metric::Loss, scores.loss);
    }
    for m in &spec.metrics {
        match m {
            Metric::Size => {
                values.insert(*m, saved_size(weights, format)? as f64);
            }
            Metric::Sparsity => {
                values.insert(*m, sparsity(weights)?);
            }
            Metric::Latency => {
                let arch = weights.arch.as_ref().expect("the checker requires an architecture");
                let (xs, _, _) = split.expect("the checker requires data to run the model");
                let sample = xs.narrow(0, 0, 1.min(xs.dim(0)?))?;
                let t = latency(arch, &weights.tensors, qmm, &sample, LATENCY_REPEATS)?;
                values.insert(*m, t.as_secs_f64() * 1e3);
            }
            Metric::Error => {
                return Err(StepError::new(
                    "the error metric measures checkpoints streamed from disk; these weights \
                     were read whole",
                    "measure the error of weights loaded without a `model`",
                ))
            }
            Metric::Accuracy | Metric::Loss => {}
        }
    }
    Ok(values)
}

/// The bytes of the file the weights are saved as in `format`, without the metadata that
/// says where they came from.
fn saved_size(weights: &WeightsArtifact, format: SaveFormat) -> Result<usize, StepError> {
    Ok(crate::steps::save::file_bytes(weights, format, BTreeMap::new())?.len())
}

/// How the weights of `name` run, when they are quantized.
fn quantized_note(name: &str, weights: &WeightsArtifact) -> Option<String> {
    let q = weights.quant.values().next()?;
    let float = weights.tensors.keys().filter(|k| !weights.quant.contains_key(*k)).count();
    let how = match q {
        Quantized::Int(_) => "run dequantized to f32",
        Quantized::Ggml { .. } => {
            "linear layers run on candle's quantized matmul, convolutions dequantized"
        }
    };
    let scheme = q.describe();
    let n = weights.quant.len();
    Some(format!("`{name}`: {n} tensors in {scheme} ({how}), {float} in f32"))
}

/// The share of zeros among the entries of weight matrices and filters
/// (tensors of rank 2 or more); biases and other vectors are left out, as
/// pruning never touches them.
pub fn sparsity(weights: &WeightsArtifact) -> Result<f64, StepError> {
    let (mut zeros, mut total) = (0usize, 0usize);
    for t in weights.tensors.values().filter(|t| t.rank() >= 2) {
        let values = t.flatten_all()?.to_dtype(candle_core::DType::F32)?.to_vec1::<f32>()?;
        zeros += values.iter().filter(|v| **v == 0.0).count();
        total += values.len();
    }
    Ok(if total == 0 { 0.0 } else { zeros as f64 / total as f64 })
}

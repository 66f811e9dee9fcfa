//! `recipe inspect`: what a weights file holds, as text: each tensor's dtype, shape, share of
//! zeros, stored bytes and layout (dense, sparse, an integer scheme or a GGML format), then the
//! metadata a run wrote into it, or the same as JSON for scripts. Takes safetensors and GGUF
//! files.

use std::collections::BTreeMap;
use std::fmt::Write as _;
use std::path::Path;

use candle_core::Device;

use super::quant::IntTensor;
use super::safetensors::{self, FormatError, RawTensor};
use super::{gguf, quant, sparse};

/// One line of the report.
#[derive(serde::Serialize)]
struct Row {
    name: String,
    dtype: String,
    shape: Vec<usize>,
    zeros: Option<f64>,
    bytes: usize,
    layout: String,
}

fn rows(path: &Path, shown: &Path) -> Result<(Vec<Row>, BTreeMap<String, String>), FormatError> {
    if path.extension().is_some_and(|e| e == "gguf") {
        gguf_rows(path, shown)
    } else {
        safetensors_rows(path, shown)
    }
}

/// The report as JSON: `{"file", "bytes", "tensors": [{"name", "dtype", "shape", "zeros",
/// "bytes", "layout"}], "metadata": {...}}`, `zeros` being the share of zero entries (`null`
/// where it has no meaning) and metadata values that hold JSON included as JSON.
pub fn inspect_json(path: &Path, shown: &Path) -> Result<String, FormatError> {
    let (rows, metadata) = rows(path, shown)?;
    let file_len = std::fs::metadata(path).map(|m| m.len()).unwrap_or(0);
    let metadata: serde_json::Map<String, serde_json::Value> = metadata
        .into_iter()
        .map(|(k, v)| {
            let value = match serde_json::from_str::<serde_json::Value>(&v) {
                Ok(json @ (serde_json::Value::Object(_) | serde_json::Value::Array(_))) => json,
                _ => serde_json::Value::String(v),
            };
            (k, value)
        })
        .collect();
    let report = serde_json::json!({
        "file": shown.display().to_string(),
        "bytes": file_len,
        "tensors": rows,
        "metadata": metadata,
    });
    Ok(serde_json::to_string_pretty(&report).expect("reports serialise"))
}

/// A report on the weights file at `path`; `shown` is how the report names it.
pub fn inspect(path: &Path, shown: &Path) -> Result<String, FormatError> {
    let (rows, metadata) = rows(path, shown)?;
    let file_len = std::fs::metadata(path).map(|m| m.len()).unwrap_or(0);

    let mut cells =
        vec![["tensor", "dtype", "shape", "zeros", "stored", "layout"].map(String::from)];
    for r in &rows {
        let shape = r.shape.iter().map(usize::to_string).collect::<Vec<_>>().join(", ");
        cells.push([
            r.name.clone(),
            r.dtype.clone(),
            format!("[{shape}]"),
            r.zeros.map_or("-".to_string(), |z| format!("{:.2}%", z * 100.0)),
            crate::steps::eval::human_bytes(r.bytes as u64),
            r.layout.clone(),
        ]);
    }
    let mut out = format!(
        "{}: {} tensors, {} ({file_len} bytes)\n",
        shown.display(),
        rows.len(),
        crate::steps::eval::human_bytes(file_len)
    );
    let widths: Vec<usize> =
        (0..6).map(|i| cells.iter().map(|r| r[i].chars().count()).max().unwrap_or(0)).collect();
    for row in &cells {
        let line: Vec<String> = row
            .iter()
            .zip(&widths)
            .enumerate()
            .map(
                |(i, (c, w))| {
                    if (3..5).contains(&i) {
                        format!("{c:>w$}")
                    } else {
                        format!("{c:<w$}")
                    }
                },
            )
            .collect();
        let _ = writeln!(out, "  {}", line.join("  ").trim_end());
    }
    let hidden = [sparse::METADATA_KEY, quant::METADATA_KEY, gguf::SHAPES_KEY];
    let shown_meta: BTreeMap<&String, &String> =
        metadata.iter().filter(|(k, _)| !hidden.contains(&k.as_str())).collect();
    if !shown_meta.is_empty() {
        out.push_str("metadata\n");
        let width = shown_meta.keys().map(|k| k.len()).max().unwrap_or(0);
        for (k, v) in shown_meta {
            let _ = writeln!(out, "  {k:<width$}  {v}");
        }
    }
    Ok(out)
}

fn safetensors_rows(
    path: &Path,
    shown: &Path,
) -> Result<(Vec<Row>, BTreeMap<String, String>), FormatError> {
    let (stored, metadata) = safetensors::read(path).map_err(|e| e.with_path(shown))?;
    let bad = |key: &str, detail: String| FormatError::BadTensor {
        path: shown.to_path_buf(),
        name: key.to_string(),
        detail,
    };
    let (plain, ints) = quant::decode(stored.clone(), &metadata)
        .map_err(|e| bad(quant::METADATA_KEY, e.to_string()))?;
    let dense =
        sparse::decode(plain, &metadata).map_err(|e| bad(sparse::METADATA_KEY, e.to_string()))?;

    let mut rows = Vec::new();
    for (name, t) in &dense {
        let sparse_parts =
            (stored.get(&format!("{name}.mask")), stored.get(&format!("{name}.values")));
        let (bytes, layout) = match sparse_parts {
            (Some(mask), Some(values)) if !stored.contains_key(name) => {
                (mask.data.len() + values.data.len(), "sparse")
            }
            _ => (t.data.len(), "dense"),
        };
        rows.push(Row {
            name: name.clone(),
            dtype: format!("{:?}", t.dtype),
            shape: t.shape.clone(),
            zeros: zeros(t),
            bytes,
            layout: layout.to_string(),
        });
    }
    for (name, q) in &ints {
        rows.push(int_row(name, q));
    }
    rows.sort_by(|a, b| a.name.cmp(&b.name));
    Ok((rows, metadata))
}

fn int_row(name: &str, q: &IntTensor) -> Row {
    let values = q.dequantize();
    let zero = values.iter().filter(|v| **v == 0.0).count();
    let granularity = match q.scheme.granularity {
        crate::check::spec::Granularity::PerTensor => "per_tensor".to_string(),
        crate::check::spec::Granularity::PerChannel => "per_channel".to_string(),
        crate::check::spec::Granularity::Group(g) => format!("group({g})"),
    };
    let kind = if q.scheme.symmetric { "symmetric" } else { "asymmetric" };
    Row {
        name: name.to_string(),
        dtype: format!("int{}", q.scheme.bits),
        shape: q.shape.clone(),
        zeros: Some(if values.is_empty() { 0.0 } else { zero as f64 / values.len() as f64 }),
        bytes: q.stored_bytes(),
        layout: format!("int{} {granularity} {kind}", q.scheme.bits),
    }
}

fn gguf_rows(
    path: &Path,
    shown: &Path,
) -> Result<(Vec<Row>, BTreeMap<String, String>), FormatError> {
    let (tensors, metadata) = gguf::read(path, &Device::Cpu).map_err(|e| {
        let detail = match e {
            gguf::GgufError::Read { message, .. } => message,
            other => other.to_string(),
        };
        FormatError::Gguf { path: shown.to_path_buf(), detail }
    })?;
    let mut rows = Vec::new();
    for (name, (q, t)) in &tensors {
        let values = t.flatten_all().and_then(|t| t.to_vec1::<f32>()).unwrap_or_default();
        let zero = values.iter().filter(|v| **v == 0.0).count();
        let dtype = ggml_name(q.dtype());
        rows.push(Row {
            name: name.clone(),
            dtype: dtype.clone(),
            shape: t.dims().to_vec(),
            zeros: Some(if values.is_empty() { 0.0 } else { zero as f64 / values.len() as f64 }),
            bytes: q.storage_size_in_bytes(),
            layout: if dtype == "f32" { "dense".into() } else { format!("ggml {dtype}") },
        });
    }
    Ok((rows, metadata))
}

/// A GGML type as recipes name it.
fn ggml_name(dtype: candle_core::quantized::GgmlDType) -> String {
    use candle_core::quantized::GgmlDType as G;
    match dtype {
        G::Q8_0 => "q8_0".into(),
        G::Q4_0 => "q4_0".into(),
        G::Q4K => "q4_k".into(),
        G::Q6K => "q6_k".into(),
        other => format!("{other:?}").to_lowercase(),
    }
}

/// The share of zero entries, for dtypes that can be read as numbers.
fn zeros(t: &RawTensor) -> Option<f64> {
    let values = t.to_f64s()?;
    if values.is_empty() {
        return Some(0.0);
    }
    Some(values.iter().filter(|v| **v == 0.0).count() as f64 / values.len() as f64)
}

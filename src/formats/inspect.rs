//! `recipe inspect`: what a weights file holds, as text: each tensor's
//! dtype, shape, share of zeros and stored bytes (dense or sparse), then the
//! metadata a run wrote into it.

use std::collections::BTreeMap;
use std::fmt::Write as _;
use std::path::Path;

use super::safetensors::{self, FormatError, RawTensor};
use super::sparse;

/// A report on the safetensors file at `path`; `shown` is how the report
/// names it.
pub fn inspect(path: &Path, shown: &Path) -> Result<String, FormatError> {
    let (stored, metadata) = safetensors::read(path).map_err(|e| e.with_path(shown))?;
    let file_len = std::fs::metadata(path).map(|m| m.len()).unwrap_or(0);
    let dense = sparse::decode(stored.clone(), &metadata).map_err(|e| FormatError::BadTensor {
        path: shown.to_path_buf(),
        name: sparse::METADATA_KEY.to_string(),
        detail: e.to_string(),
    })?;

    let mut rows = vec![["tensor", "dtype", "shape", "zeros", "stored"].map(String::from)];
    for (name, t) in &dense {
        let (bytes, layout) =
            match (stored.get(&format!("{name}.mask")), stored.get(&format!("{name}.values"))) {
                (Some(mask), Some(values)) if !stored.contains_key(name) => {
                    (mask.data.len() + values.data.len(), "sparse")
                }
                _ => (t.data.len(), "dense"),
            };
        let shape = t.shape.iter().map(usize::to_string).collect::<Vec<_>>().join(", ");
        rows.push([
            name.clone(),
            format!("{:?}", t.dtype),
            format!("[{shape}]"),
            zeros(t).map_or("-".to_string(), |z| format!("{:.2}%", z * 100.0)),
            format!("{} {layout}", crate::steps::eval::human_bytes(bytes as u64)),
        ]);
    }

    let mut out = format!(
        "{}: {} tensors, {} ({file_len} bytes)\n",
        shown.display(),
        dense.len(),
        crate::steps::eval::human_bytes(file_len)
    );
    let widths: Vec<usize> =
        (0..5).map(|i| rows.iter().map(|r| r[i].chars().count()).max().unwrap_or(0)).collect();
    for row in &rows {
        let cells: Vec<String> = row
            .iter()
            .zip(&widths)
            .enumerate()
            .map(|(i, (c, w))| if i >= 3 { format!("{c:>w$}") } else { format!("{c:<w$}") })
            .collect();
        let _ = writeln!(out, "  {}", cells.join("  ").trim_end());
    }
    let shown_meta: BTreeMap<&String, &String> =
        metadata.iter().filter(|(k, _)| k.as_str() != sparse::METADATA_KEY).collect();
    if !shown_meta.is_empty() {
        out.push_str("metadata\n");
        let width = shown_meta.keys().map(|k| k.len()).max().unwrap_or(0);
        for (k, v) in shown_meta {
            let _ = writeln!(out, "  {k:<width$}  {v}");
        }
    }
    Ok(out)
}

/// The share of zero entries, for dtypes that can be read as numbers.
fn zeros(t: &RawTensor) -> Option<f64> {
    let values = t.to_f64s()?;
    if values.is_empty() {
        return Some(0.0);
    }
    Some(values.iter().filter(|v| **v == 0.0).count() as f64 / values.len() as f64)
}

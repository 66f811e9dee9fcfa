//! The plan as text, for `recipe plan`: the steps in run order, whether each will run or comes
//! from the cache, what each reads and writes and the bytes it writes.

use std::collections::BTreeMap;
use std::fmt::Write as _;
use std::path::PathBuf;

use super::Graph;
use crate::check::{
    Checked, Granularity, Pattern, PruneAmount, QuantScheme, QuantSpec, SaveFormat, Spec,
    TensorInfo, TensorSelection,
};

/// The steps the cache holds, by name, with the bytes of each file they wrote.
pub type CachedSteps = BTreeMap<String, Vec<(PathBuf, u64)>>;

/// One line per step, then its reads and writes, indented. Steps in `cached` show as cached,
/// with the real sizes of their files; the others as running, with the sizes known before.
pub fn render_plan(checked: &Checked, graph: &Graph, cached: &CachedSteps) -> String {
    let mut out = String::new();
    let n = graph.nodes.len();
    let hits = graph.nodes.iter().filter(|n| cached.contains_key(&n.name)).count();
    let _ = writeln!(
        out,
        "recipe {}: {n} step{}, {} to run, {hits} cached",
        checked.settings.name,
        if n == 1 { "" } else { "s" },
        n - hits,
    );
    for (idx, node) in graph.nodes.iter().enumerate() {
        let Some(block) = checked.block(&node.name) else { continue };
        let _ = writeln!(
            out,
            "{:>3}. {:<8} {:<16} {:<6} {}",
            idx + 1,
            node.kind,
            node.name,
            if cached.contains_key(&node.name) { "cached" } else { "runs" },
            &node.hash[..12]
        );
        let mut reads: Vec<String> = node.inputs.iter().map(|i| format!("`{i}`")).collect();
        reads.extend(node.reads.iter().map(|p| p.display().to_string()));
        if let Spec::Data(d) = &block.spec {
            if let crate::check::Source::Builtin(name) = &d.source {
                reads.push(format!("builtin \"{name}\""));
            }
        }
        if !reads.is_empty() {
            let _ = writeln!(out, "       reads  {}", reads.join(", "));
        }
        if let Some(files) = cached.get(&node.name) {
            for (path, bytes) in files {
                let size = crate::steps::eval::human_bytes(*bytes);
                let _ = writeln!(out, "       writes {} ({size})", path.display());
            }
            continue;
        }
        for path in &node.writes {
            let size = match &block.spec {
                Spec::Save(s) => {
                    let bound =
                        if upper_bound_only(checked, &s.from) { "at most" } else { "about" };
                    weights_bytes(checked, &s.from, s.format)
                        .map(|b| format!(" ({bound} {})", crate::steps::eval::human_bytes(b)))
                        .unwrap_or_default()
                }
                _ => String::new(),
            };
            let _ = writeln!(out, "       writes {}{size}", path.display());
        }
    }
    out
}

/// Whether the bytes of a block's weights can only be bounded before running: channel pruning
/// decides the new widths as it runs, and a quantization tolerance decides which layers stay
/// in float.
fn upper_bound_only(checked: &Checked, name: &str) -> bool {
    match checked.block(name).map(|b| &b.spec) {
        Some(Spec::Prune(p)) => {
            p.pattern == Pattern::Channels || upper_bound_only(checked, &p.from)
        }
        Some(Spec::Quantize(q)) => q.tolerance.is_some() || upper_bound_only(checked, &q.from),
        _ => false,
    }
}

/// The tensor bytes of a block's weights when they are known before
/// running. In the sparse format, matrices pruned to a share `s` take a bit
/// per entry and the `1 - s` non-zero values.
fn weights_bytes(checked: &Checked, name: &str, format: SaveFormat) -> Option<u64> {
    if let Spec::Quantize(q) = &checked.block(name)?.spec {
        return quantized_bytes(checked, q);
    }
    let tensors = tensors_of(checked, name)?;
    let pruned = match (&checked.block(name)?.spec, format) {
        (Spec::Prune(p), SaveFormat::Sparse) => match p.amount {
            PruneAmount::Sparsity(s) => s,
            PruneAmount::Threshold(_) => 0.0,
        },
        _ => 0.0,
    };
    let bytes = |t: &TensorInfo| {
        let n = t.shape.iter().product::<usize>() as f64;
        let dense = n * dtype_size(&t.dtype) as f64;
        let sparse = n / 8.0 + (1.0 - pruned) * dense;
        if t.shape.len() >= 2 && sparse < dense {
            sparse
        } else {
            dense
        }
    };
    Some(tensors.iter().map(bytes).sum::<f64>().round() as u64)
}

/// The bytes of quantized weights as the integer layout or GGUF stores them: every targeted
/// tensor in its scheme, the others as they were. With a tolerance this is the most they can
/// take, every layer quantized being the least.
fn quantized_bytes(checked: &Checked, q: &QuantSpec) -> Option<u64> {
    let tensors = tensors_of(checked, &q.from)?;
    let selection = TensorSelection::new(&q.targets, &q.ignore);
    let mut total = 0u64;
    for t in &tensors {
        let n = t.shape.iter().product::<usize>() as u64;
        let dense = n * dtype_size(&t.dtype);
        if !selection.selects(&t.name, t.shape.len()) {
            total += dense;
            continue;
        }
        let (rows, row) = (t.shape[0] as u64, n / (t.shape[0].max(1) as u64));
        let quantized = match (q.scheme, q.granularity) {
            (QuantScheme::Int8 | QuantScheme::Int4, granularity) => {
                let values = if q.scheme == QuantScheme::Int8 { n } else { n.div_ceil(2) };
                let scales = match granularity {
                    Granularity::PerTensor => 1,
                    Granularity::PerChannel => rows,
                    Granularity::Group(g) => rows * row.div_ceil(g as u64),
                };
                let zero_points = if q.symmetric { 0 } else { scales };
                values + 4 * scales + zero_points
            }
            // Bytes of one block of 32 (q8_0, q4_0) or 256 (q4_k, q6_k) values, as GGML lays
            // them out.
            (QuantScheme::Q8_0, _) => n / 32 * 34,
            (QuantScheme::Q4_0, _) => n / 32 * 18,
            (QuantScheme::Q4K, _) => n / 256 * 144,
            (QuantScheme::Q6K, _) => n / 256 * 210,
        };
        total += if q.tolerance.is_some() { dense } else { quantized };
    }
    Some(total)
}

fn tensors_of(checked: &Checked, name: &str) -> Option<Vec<TensorInfo>> {
    let arch_tensors = |arch: &crate::check::Arch| {
        arch.params()
            .into_iter()
            .map(|(name, shape)| TensorInfo { name, dtype: "F32".into(), shape })
            .collect()
    };
    match &checked.block(name)?.spec {
        Spec::Load(l) => Some(l.tensors.clone()),
        Spec::Train(t) => Some(arch_tensors(&t.arch)),
        Spec::Search(s) => Some(arch_tensors(&s.train.arch)),
        Spec::Prune(p) => tensors_of(checked, &p.from),
        // Quantized sizes depend on the scheme; they are known once the
        // step has run.
        _ => None,
    }
}

/// For `recipe check`: the tensors each `prune` and `quantize` step works on (its targets
/// minus its ignores, of rank 2 or more, in floats), as the headers and architectures say.
pub fn render_touched(checked: &Checked) -> String {
    let mut out = String::new();
    for block in &checked.blocks {
        let (from, targets, ignore) = match &block.spec {
            Spec::Prune(p) => (&p.from, &p.targets, &p.ignore),
            Spec::Quantize(q) => (&q.from, &q.targets, &q.ignore),
            _ => continue,
        };
        let Some(tensors) = names_of(checked, from) else { continue };
        let selection = TensorSelection::new(targets, ignore);
        let floats = ["F32", "F16", "BF16"];
        let touched: Vec<&TensorInfo> = tensors
            .iter()
            .filter(|t| selection.selects(&t.name, t.shape.len()) && floats.contains(&&*t.dtype))
            .collect();
        let _ = writeln!(
            out,
            "{} `{}` works on {} of {} tensors:",
            block.spec.kind(),
            block.name,
            touched.len(),
            tensors.len()
        );
        let width = touched.iter().map(|t| t.name.len()).max().unwrap_or(0);
        for t in touched {
            let _ = writeln!(out, "  {:<width$}  {:?} {}", t.name, t.shape, t.dtype);
        }
    }
    out
}

/// The tensors of the weights `name` by name, shape and dtype, whatever became of them.
fn names_of(checked: &Checked, name: &str) -> Option<Vec<TensorInfo>> {
    match &checked.block(name)?.spec {
        Spec::Quantize(q) => names_of(checked, &q.from),
        _ => tensors_of(checked, name),
    }
}

fn dtype_size(dtype: &str) -> u64 {
    match dtype {
        "F64" | "I64" | "U64" => 8,
        "F32" | "I32" | "U32" => 4,
        "F16" | "BF16" | "I16" | "U16" => 2,
        _ => 1,
    }
}

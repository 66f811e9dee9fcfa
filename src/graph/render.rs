//! The plan as text, for `recipe plan`: the steps in run order with what
//! each reads and writes.

use std::fmt::Write as _;

use super::Graph;
use crate::check::{Checked, Pattern, PruneAmount, SaveFormat, Spec, TensorInfo};

/// One line per step, then its reads and writes, indented.
pub fn render_plan(checked: &Checked, graph: &Graph) -> String {
    let mut out = String::new();
    let n = graph.nodes.len();
    let _ = writeln!(
        out,
        "recipe {}: {n} step{}",
        checked.settings.name,
        if n == 1 { "" } else { "s" }
    );
    for (idx, node) in graph.nodes.iter().enumerate() {
        let Some(block) = checked.block(&node.name) else { continue };
        let _ = writeln!(
            out,
            "{:>3}. {:<8} {:<16} runs   {}",
            idx + 1,
            node.kind,
            node.name,
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
        for path in &node.writes {
            let size = match &block.spec {
                Spec::Save(s) => {
                    // Channel pruning decides the new widths as it runs.
                    let bound = match checked.block(&s.from).map(|b| &b.spec) {
                        Some(Spec::Prune(p)) if p.pattern == Pattern::Channels => "at most",
                        _ => "about",
                    };
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

/// The tensor bytes of a block's weights when they are known before
/// running. In the sparse format, matrices pruned to a share `s` take a bit
/// per entry and the `1 - s` non-zero values.
fn weights_bytes(checked: &Checked, name: &str, format: SaveFormat) -> Option<u64> {
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

fn dtype_size(dtype: &str) -> u64 {
    match dtype {
        "F64" | "I64" | "U64" => 8,
        "F32" | "I32" | "U32" => 4,
        "F16" | "BF16" | "I16" | "U16" => 2,
        _ => 1,
    }
}

//! The graph as Graphviz DOT, for `recipe graph`.

use std::fmt::Write as _;

use super::Graph;

/// DOT text with one node per step, labelled with its kind, and one edge
/// per input. Node order is the run order, so the text is stable.
pub fn to_dot(graph: &Graph, name: &str) -> String {
    let mut out = String::new();
    let _ = writeln!(out, "digraph {} {{", quote(name));
    let _ = writeln!(out, "  rankdir=LR;");
    let _ = writeln!(out, "  node [shape=box, fontname=\"Helvetica\"];");
    for node in &graph.nodes {
        let shape = match node.kind {
            "data" => "cylinder",
            "model" => "component",
            "save" => "note",
            "eval" => "tab",
            _ => "box",
        };
        let label = format!("{}\\n{}", node.kind, node.name);
        let _ = writeln!(out, "  {} [label=\"{}\", shape={}];", quote(&node.name), label, shape);
    }
    for node in &graph.nodes {
        for input in &node.inputs {
            let _ = writeln!(out, "  {} -> {};", quote(input), quote(&node.name));
        }
    }
    out.push_str("}\n");
    out
}

/// Block names are plain identifiers, but quoting keeps DOT keywords such
/// as `node` or `graph` from being read as syntax.
fn quote(name: &str) -> String {
    format!("\"{}\"", name.replace('\\', "\\\\").replace('"', "\\\""))
}

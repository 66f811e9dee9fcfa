//! The execution graph: checked blocks as a DAG of steps in run order, each
//! with a content hash.
//!
//! A node's hash covers its checked settings, the recipe seed and device,
//! the hashes of the nodes it reads, the content of every file it reads and
//! the program version. Equal hashes mean equal outputs, which is what makes
//! a hash usable as a cache key.

mod dot;
mod render;

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};

use serde::Serialize;

pub use dot::to_dot;
pub use render::{render_plan, render_touched, CachedSteps};

use crate::check::{Checked, SearchSpec, Spec};
use crate::digest::FileHashes;

/// The version that goes into every hash: a new program may compute
/// different numbers, so its results must not be mistaken for old ones.
pub const PROGRAM_VERSION: &str = concat!("recipe ", env!("CARGO_PKG_VERSION"));

/// Steps in run order.
#[derive(Debug, Clone, Serialize)]
pub struct Graph {
    pub nodes: Vec<Node>,
}

#[derive(Debug, Clone, Serialize)]
pub struct Node {
    /// The block name.
    pub name: String,
    /// The block kind, `train`, `save`...
    pub kind: &'static str,
    /// Names of the nodes this one reads, in the order of its settings.
    pub inputs: Vec<String>,
    /// Files read, relative to the recipe folder as written.
    pub reads: Vec<PathBuf>,
    /// Files written, as written in the recipe.
    pub writes: Vec<PathBuf>,
    /// Hex blake3 content hash.
    pub hash: String,
}

impl Graph {
    pub fn node(&self, name: &str) -> Option<&Node> {
        self.nodes.iter().find(|n| n.name == name)
    }

    /// The graph restricted to `target` and what it needs, in the same
    /// order; `None` when there is no such node.
    pub fn only(&self, target: &str) -> Option<Graph> {
        self.node(target)?;
        let mut keep = BTreeSet::from([target.to_string()]);
        for node in self.nodes.iter().rev() {
            if keep.contains(&node.name) {
                keep.extend(node.inputs.iter().cloned());
            }
        }
        let nodes = self.nodes.iter().filter(|n| keep.contains(&n.name)).cloned().collect();
        Some(Graph { nodes })
    }
}

/// A file the graph could not hash.
#[derive(Debug, thiserror::Error)]
#[error("cannot read `{}`: {source}", path.display())]
pub struct GraphError {
    pub path: PathBuf,
    #[source]
    pub source: std::io::Error,
}

/// Build the graph of a checked recipe. Data and weight files are hashed, so this reads them
/// whole, unless `hashes` remembers them unchanged.
pub fn plan(checked: &Checked, base_dir: &Path, files: &FileHashes) -> Result<Graph, GraphError> {
    let order = topological_order(checked);
    let settings = serde_json::to_string(&checked.settings).expect("settings serialise");
    let mut hashes: BTreeMap<&str, String> = BTreeMap::new();
    let mut nodes = Vec::with_capacity(order.len());
    for block in order {
        let inputs: Vec<String> = dedup(block.spec.inputs());
        let reads = reads(&block.spec);
        let writes = writes(&block.spec, &checked.settings.name, &block.name);

        let mut hasher = blake3::Hasher::new();
        hasher.update(PROGRAM_VERSION.as_bytes());
        hasher.update(settings.as_bytes());
        hasher.update(block.name.as_bytes());
        hasher.update(serde_json::to_string(&block.spec).expect("specs serialise").as_bytes());
        for input in &inputs {
            hasher.update(hashes[input.as_str()].as_bytes());
        }
        for path in &reads {
            let full = base_dir.join(path);
            let hash = files.hash(&full).map_err(|source| GraphError { path: full, source })?;
            hasher.update(hash.as_bytes());
        }
        let hash = hasher.finalize().to_hex().to_string();
        hashes.insert(&block.name, hash.clone());
        nodes.push(Node {
            name: block.name.clone(),
            kind: block.spec.kind(),
            inputs,
            reads,
            writes,
            hash,
        });
    }
    Ok(Graph { nodes })
}

fn dedup(names: Vec<&str>) -> Vec<String> {
    let mut out: Vec<String> = Vec::new();
    for n in names {
        if !out.iter().any(|o| o == n) {
            out.push(n.to_string());
        }
    }
    out
}

/// Blocks in an order where each follows its inputs; among blocks that
/// are ready together, the one written first goes first.
fn topological_order(checked: &Checked) -> Vec<&crate::check::Block> {
    let mut placed: BTreeSet<&str> = BTreeSet::new();
    let mut order = Vec::with_capacity(checked.blocks.len());
    while order.len() < checked.blocks.len() {
        let next = checked
            .blocks
            .iter()
            .find(|b| {
                !placed.contains(b.name.as_str())
                    && b.spec.inputs().iter().all(|i| placed.contains(i))
            })
            .expect("the checker rejects cycles, so some block is always ready");
        placed.insert(&next.name);
        order.push(next);
    }
    order
}

fn reads(spec: &Spec) -> Vec<PathBuf> {
    match spec {
        Spec::Data(d) => d.source.files().into_iter().cloned().collect(),
        Spec::Load(l) => std::iter::once(&l.path).chain(&l.shards).cloned().collect(),
        _ => vec![],
    }
}

fn writes(spec: &Spec, recipe: &str, block: &str) -> Vec<PathBuf> {
    match spec {
        Spec::Save(s) => vec![s.path.clone()],
        Spec::Eval(e) => e.path.iter().cloned().collect(),
        Spec::Search(_) => SearchSpec::table_files(recipe, block).to_vec(),
        _ => vec![],
    }
}

//! Execution: runs the steps of a [`Graph`] in order and hands each the
//! outputs of the steps it reads.
//!
//! The scheduler owns everything that is not the work of one step: the
//! device, the per-step random streams, progress display and turning a
//! step's failure into a diagnostic that points at the block that asked for
//! it.

pub mod progress;

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Instant;

use miette::Diagnostic;
use thiserror::Error;
use tracing::{info, info_span};

pub use progress::ProgressMode;

use crate::check::{self, Arch, Checked};
use crate::data::Dataset;
use crate::graph::{Graph, Node};
use crate::nn::quant::QuantMap;
use crate::nn::Weights;
use crate::span::Span;
use crate::steps;

/// What a step hands to the steps that read it.
#[derive(Debug, Clone)]
pub enum Artifact {
    Dataset(Arc<Dataset>),
    Arch(Arc<Arch>),
    Weights(Arc<WeightsArtifact>),
    Metrics(Arc<steps::eval::Table>),
    File(PathBuf),
}

/// Weights with what is known about them.
#[derive(Debug, Clone)]
pub struct WeightsArtifact {
    /// The layers the tensors belong to, when known.
    pub arch: Option<Arch>,
    pub tensors: Weights,
    /// The step that made the weights.
    pub made_by: String,
    /// That step's content hash.
    pub step_hash: String,
    /// That step's metrics, e.g. the final validation accuracy.
    pub metrics: BTreeMap<String, f64>,
    /// The quantized form of the tensors that have one; `tensors` then holds the values it
    /// stands for.
    pub quant: QuantMap,
    /// What the step has to say about the weights beyond numbers, one line each (for example
    /// which layers a quantization kept in float); the command line prints them.
    pub notes: Vec<String>,
    /// Files the step wrote besides the weights (a search's trial table), relative to the
    /// recipe's folder.
    pub written: Vec<PathBuf>,
}

impl WeightsArtifact {
    /// Weights with no quantized form and nothing to note.
    pub fn plain(
        arch: Option<Arch>,
        tensors: Weights,
        node: &Node,
        metrics: BTreeMap<String, f64>,
    ) -> Self {
        WeightsArtifact {
            arch,
            tensors,
            made_by: node.name.clone(),
            step_hash: node.hash.clone(),
            metrics,
            quant: QuantMap::new(),
            notes: Vec::new(),
            written: Vec::new(),
        }
    }
}

/// How to run.
#[derive(Debug, Clone)]
pub struct RunOptions {
    /// Overrides the recipe's `device` when set.
    pub device: Option<check::Device>,
    /// The recipe's folder: relative paths start here.
    pub base_dir: PathBuf,
    pub progress: ProgressMode,
    /// How many trials of a search train side by side.
    pub jobs: usize,
}

/// What a run produced.
#[derive(Debug, Default)]
pub struct RunReport {
    /// The output of every step that ran, by block name.
    pub outputs: BTreeMap<String, Artifact>,
    /// Files written, in the order they were written.
    pub written: Vec<PathBuf>,
    /// Eval tables, in run order.
    pub tables: Vec<Arc<steps::eval::Table>>,
    /// The notes of steps that made weights, by step, in run order.
    pub notes: Vec<(String, Vec<String>)>,
}

/// What every step may use besides its inputs.
pub struct Context<'a> {
    pub dev: &'a candle_core::Device,
    /// The seed of this step's random stream, derived from the recipe seed
    /// and the block name.
    pub seed: u64,
    pub base_dir: &'a Path,
    pub block: &'a check::Block,
    pub node: &'a Node,
    /// A hash of the whole checked recipe, written into saved files.
    pub recipe_hash: &'a str,
    pub recipe_name: &'a str,
    pub progress: ProgressMode,
    /// How many trials of a search train side by side.
    pub jobs: usize,
}

/// A step's outputs so far, by block name.
pub struct Inputs<'a> {
    outputs: &'a BTreeMap<String, Artifact>,
}

impl Inputs<'_> {
    pub fn dataset(&self, name: &str) -> &Arc<Dataset> {
        match self.outputs.get(name) {
            Some(Artifact::Dataset(d)) => d,
            _ => unreachable!("the checker makes `{name}` a dataset run before its readers"),
        }
    }

    pub fn weights(&self, name: &str) -> &Arc<WeightsArtifact> {
        match self.outputs.get(name) {
            Some(Artifact::Weights(w)) => w,
            _ => unreachable!("the checker makes `{name}` weights run before their readers"),
        }
    }

    pub fn arch(&self, name: &str) -> &Arc<Arch> {
        match self.outputs.get(name) {
            Some(Artifact::Arch(a)) => a,
            _ => unreachable!("the checker makes `{name}` a model run before its readers"),
        }
    }
}

/// A step failed, or cannot run at all.
#[derive(Debug, Error, Diagnostic)]
pub enum RunError {
    #[error("step `{name}` failed: {message}")]
    #[diagnostic(code(recipe::run::step_failed), help("{help}"))]
    Step {
        #[label("in this step")]
        span: Span,
        name: String,
        message: String,
        help: String,
    },

    #[error("device {device} is not available: {message}")]
    #[diagnostic(code(recipe::run::device), help("{help}"))]
    Device { device: String, message: String, help: String },
}

/// A failure inside a step, before the scheduler adds where it happened.
#[derive(Debug)]
pub struct StepError {
    pub message: String,
    pub help: String,
}

impl StepError {
    pub fn new(message: impl Into<String>, help: impl Into<String>) -> Self {
        StepError { message: message.into(), help: help.into() }
    }
}

impl From<candle_core::Error> for StepError {
    fn from(e: candle_core::Error) -> Self {
        StepError::new(format!("tensor operation failed: {e}"), "this is a bug in recipe")
    }
}

/// The candle device for a recipe device.
pub fn device(device: check::Device) -> Result<candle_core::Device, RunError> {
    match device {
        check::Device::Cpu => Ok(candle_core::Device::Cpu),
        check::Device::Cuda(index) => cuda(index),
    }
}

#[cfg(feature = "cuda")]
fn cuda(index: usize) -> Result<candle_core::Device, RunError> {
    candle_core::Device::new_cuda(index).map_err(|e| RunError::Device {
        device: format!("cuda({index})"),
        message: e.to_string(),
        help: "check the GPU index and the CUDA driver, or run with `--device cpu`".into(),
    })
}

#[cfg(not(feature = "cuda"))]
fn cuda(index: usize) -> Result<candle_core::Device, RunError> {
    Err(RunError::Device {
        device: format!("cuda({index})"),
        message: "this build of recipe has no CUDA support".into(),
        help: "rebuild with `cargo build --release --features cuda`, or run with `--device cpu`"
            .into(),
    })
}

/// A hash of the checked recipe: changes to comments or layout leave it
/// alone, changes to any setting do not.
pub fn recipe_hash(checked: &Checked) -> String {
    let json = serde_json::to_string(checked).expect("the checked form serialises");
    blake3::hash(json.as_bytes()).to_hex().to_string()
}

/// Run every step of `graph`.
pub fn run(checked: &Checked, graph: &Graph, options: &RunOptions) -> Result<RunReport, RunError> {
    let blocks: BTreeMap<&str, &check::Block> =
        checked.blocks.iter().map(|b| (b.name.as_str(), b)).collect();

    let dev = device(options.device.unwrap_or(checked.settings.device))?;
    let recipe_hash = recipe_hash(checked);
    let mut report = RunReport::default();
    for node in &graph.nodes {
        let block = blocks[node.name.as_str()];
        let _span = info_span!("step", name = %node.name, kind = node.kind).entered();
        let ctx = Context {
            dev: &dev,
            seed: step_seed(checked.settings.seed, &node.name),
            base_dir: &options.base_dir,
            block,
            node,
            recipe_hash: &recipe_hash,
            recipe_name: &checked.settings.name,
            progress: options.progress,
            jobs: options.jobs,
        };
        let started = Instant::now();
        let inputs = Inputs { outputs: &report.outputs };
        let artifact = steps::run(&block.spec, &inputs, &ctx).map_err(|e| RunError::Step {
            span: block.span,
            name: node.name.clone(),
            message: e.message,
            help: e.help,
        })?;
        info!(elapsed_ms = started.elapsed().as_millis() as u64, "step done");
        match &artifact {
            Artifact::File(path) => report.written.push(path.clone()),
            Artifact::Metrics(table) => {
                report.written.extend(table.path.iter().cloned());
                report.tables.push(table.clone());
            }
            Artifact::Weights(w) => {
                report.written.extend(w.written.iter().cloned());
                if !w.notes.is_empty() {
                    report.notes.push((node.name.clone(), w.notes.clone()));
                }
            }
            _ => {}
        }
        report.outputs.insert(node.name.clone(), artifact);
    }
    Ok(report)
}

/// Each step draws from its own stream, so adding or removing a block does
/// not change the random numbers any other block sees.
fn step_seed(seed: u64, name: &str) -> u64 {
    let mut rng = crate::rng::Rng::new(seed, &format!("step/{name}"));
    rng.next_u64()
}

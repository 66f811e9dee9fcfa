//! Execution: runs the steps of a [`Graph`] in order and hands each the
//! outputs of the steps it reads.
//!
//! The scheduler owns everything that is not the work of one step: the
//! device, the per-step random streams, progress display and turning a
//! step's failure into a diagnostic that points at the block that asked for
//! it. [`run_trial`] is the other way in: one trial of a search, as a task of
//! a cluster job trains it from what the driver left in the cache.

pub mod artifacts;
pub mod cache;
pub mod lockfile;
pub mod progress;
pub mod slurm;

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Instant;

use miette::Diagnostic;
use serde::Serialize;
use thiserror::Error;
use tracing::{info, info_span, warn};

pub use cache::{Cache, Lookup, Manifest};
pub use progress::ProgressMode;
pub use slurm::{Executor, SlurmOptions};

use crate::check::{self, Arch, Checked};
use crate::data::Dataset;
use crate::digest::FileHashes;
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
    Files(Vec<PathBuf>),
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
    /// Weights that stay in a checkpoint on disk, with the operations still to apply to them;
    /// `tensors` is then empty.
    pub stream: Option<Arc<steps::stream::Streamed>>,
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
            stream: None,
        }
    }

    /// Weights left in a checkpoint on disk.
    pub fn streamed(streamed: steps::stream::Streamed, node: &Node) -> Self {
        let mut w = WeightsArtifact::plain(None, Weights::new(), node, BTreeMap::new());
        w.stream = Some(Arc::new(streamed));
        w
    }
}

/// How to run.
#[derive(Debug, Clone)]
pub struct RunOptions {
    /// Overrides the recipe's `device` when set.
    pub device: Option<check::Device>,
    /// The recipe's folder: relative paths start here, and the cache lives in it.
    pub base_dir: PathBuf,
    pub progress: ProgressMode,
    /// How many steps, and how many trials of a search, run side by side.
    pub jobs: usize,
    /// Take unchanged steps from the cache; when false every step runs (and is stored).
    pub use_cache: bool,
    /// Where the trials of a search train.
    pub executor: Executor,
}

impl RunOptions {
    /// Options for a quiet run in `base_dir` with the cache, one job at a time.
    pub fn new(base_dir: impl Into<PathBuf>) -> RunOptions {
        RunOptions {
            device: None,
            base_dir: base_dir.into(),
            progress: ProgressMode::Quiet,
            jobs: 1,
            use_cache: true,
            executor: Executor::Local,
        }
    }
}

/// Whether a step ran or its result came from the cache.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
pub enum Outcome {
    Ran,
    Cached,
}

/// What became of one step of a run.
#[derive(Debug, Clone)]
pub struct StepRecord {
    pub name: String,
    pub kind: &'static str,
    pub hash: String,
    pub outcome: Outcome,
    /// The step's cache entry: its metrics and the files it wrote, with their hashes.
    pub manifest: Manifest,
    /// Wall time of the step, zero when cached.
    pub elapsed_ms: u64,
}

/// What a run produced.
#[derive(Debug, Default)]
pub struct RunReport {
    /// The output of every step that ran or was read back from the cache, by block name.
    pub outputs: BTreeMap<String, Artifact>,
    /// Files written (or put back from the cache), in run order.
    pub written: Vec<PathBuf>,
    /// Eval tables, in run order, cached ones included.
    pub tables: Vec<Arc<steps::eval::Table>>,
    /// The notes of steps that made weights, by step, in run order.
    pub notes: Vec<(String, Vec<String>)>,
    /// Every step of the graph, in run order.
    pub steps: Vec<StepRecord>,
    /// Cache entries that failed their checks and were recomputed, with the reason.
    pub damaged: Vec<(String, String)>,
}

impl RunReport {
    /// The names of the steps that ran rather than came from the cache.
    pub fn ran(&self) -> Vec<&str> {
        self.steps.iter().filter(|s| s.outcome == Outcome::Ran).map(|s| s.name.as_str()).collect()
    }
}

/// What every step may use besides its inputs.
pub struct Context<'a> {
    pub dev: &'a candle_core::Device,
    /// The seed of this step's random stream, derived from the recipe seed
    /// and the block name.
    pub seed: u64,
    /// Where relative input paths start.
    pub base_dir: &'a Path,
    /// Where the run writes.
    pub out: &'a check::OutputRoot,
    pub block: &'a check::Block,
    pub node: &'a Node,
    pub recipe_name: &'a str,
    pub progress: ProgressMode,
    /// How many trials of a search train side by side.
    pub jobs: usize,
    /// Where the trials of a search train.
    pub executor: &'a Executor,
}

impl Context<'_> {
    /// Where `path`, an output of the recipe, lies in the output folder, checked again now.
    pub fn output_path(&self, path: &Path) -> Result<PathBuf, StepError> {
        self.out.resolve(path).map_err(|escape| {
            StepError::new(
                format!(
                    "`{}` would be written outside the output folder: {}",
                    path.display(),
                    escape.reason()
                ),
                "something changed the folder during the run; check it and run again",
            )
        })
    }

    /// Write `bytes` to `path`, an output of the recipe, all at once or not at all. The path
    /// is checked against the output folder again, just before writing, in case a folder on
    /// the way became a link to elsewhere while the run went on.
    pub fn write_output(&self, path: &Path, bytes: &[u8]) -> Result<(), StepError> {
        let full = self.output_path(path)?;
        crate::formats::write_atomic(&full, bytes).map_err(|e| {
            StepError::new(
                format!("cannot write `{}`: {e}", path.display()),
                "check that the folder can be written",
            )
        })
    }
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

    #[error("{message}")]
    #[diagnostic(code(recipe::run::cache), help("{help}"))]
    Cache { message: String, help: String },

    #[error("{message}")]
    #[diagnostic(code(recipe::run::executor), help("{help}"))]
    Executor { message: String, help: String },

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

/// Run every step of `graph` whose result the cache does not hold, and read back from the
/// cache what those steps need.
///
/// A run goes in four passes: look every step up in the cache (a damaged entry is reported
/// and counts as missing); read back the cached outputs that a step to run reads; run the
/// missing steps, each as soon as its inputs are there, up to `jobs` at once, storing each
/// result as it comes; and put back any file a cached step wrote that was since deleted or
/// changed. Each step's result depends only on its inputs and seed, so neither the order of
/// finishing nor the cache changes what is written.
pub fn run(checked: &Checked, graph: &Graph, options: &RunOptions) -> Result<RunReport, RunError> {
    let blocks: BTreeMap<&str, &check::Block> =
        checked.blocks.iter().map(|b| (b.name.as_str(), b)).collect();
    let dev = device(options.device.unwrap_or(checked.settings.device))?;
    if let Executor::Slurm(_) = options.executor {
        slurm::find_commands().map_err(|message| RunError::Executor {
            message,
            help: "install Slurm's client commands (Debian: `slurm-client`) and put them on the \
                   PATH, or run with `--executor local`"
                .into(),
        })?;
    }
    let base = options.base_dir.as_path();
    let out = &checked.out_root;
    let root = out.dir.as_path();
    let hashes = FileHashes::open(root);
    let cache = Cache::open(root).map_err(|e| cache_error(root, e))?;
    // What killed runs left half-written; the lock taken above keeps live runs out.
    for node in &graph.nodes {
        for path in &node.writes {
            cache::remove_stale_temporaries(&root.join(path));
        }
    }
    steps::search::remove_stale_temporaries(root);
    let mut report = RunReport::default();

    // What the cache holds.
    let mut found: BTreeMap<&str, Manifest> = BTreeMap::new();
    if options.use_cache {
        for node in &graph.nodes {
            match cache.lookup(&node.hash, &hashes) {
                Lookup::Hit(m) => {
                    found.insert(&node.name, *m);
                }
                Lookup::Miss => {}
                Lookup::Damaged(why) => {
                    warn!(
                        "the cache entry of step `{}` is damaged ({why}); recomputing",
                        node.name
                    );
                    report.damaged.push((node.name.clone(), why));
                }
            }
        }
    }

    // Cached outputs that a step to run reads.
    let to_run: Vec<&Node> =
        graph.nodes.iter().filter(|n| !found.contains_key(n.name.as_str())).collect();
    let mut outputs: BTreeMap<String, Artifact> = BTreeMap::new();
    for node in &graph.nodes {
        let needed = to_run.iter().any(|r| r.inputs.contains(&node.name));
        if let (true, Some(manifest)) = (needed, found.get(node.name.as_str())) {
            let artifact =
                artifacts::decode(manifest, &cache, &dev).map_err(|message| RunError::Cache {
                    message: format!(
                        "the cache entry of step `{}` cannot be read: {message}",
                        node.name
                    ),
                    help: "remove `.recipe/cache` or run with `--no-cache`".into(),
                })?;
            outputs.insert(node.name.clone(), artifact);
        }
    }

    // The missing steps, side by side where they are independent.
    let recipe_name = checked.settings.name.as_str();
    let run_one = |node: &Node, inputs: BTreeMap<String, Artifact>| {
        let block = blocks[node.name.as_str()];
        let _span = info_span!("step", name = %node.name, kind = node.kind).entered();
        let ctx = Context {
            dev: &dev,
            seed: step_seed(checked.settings.seed, &node.name),
            base_dir: base,
            out,
            block,
            node,
            recipe_name,
            progress: options.progress,
            jobs: options.jobs,
            executor: &options.executor,
        };
        let started = Instant::now();
        let failed = |message: String, help: String| RunError::Step {
            span: block.span,
            name: node.name.clone(),
            message,
            help,
        };
        let artifact = steps::run(&block.spec, &Inputs { outputs: &inputs }, &ctx)
            .map_err(|e| failed(e.message, e.help))?;
        let elapsed_ms = started.elapsed().as_millis() as u64;
        info!(elapsed_ms, "step done");
        let (manifest, payload) = artifacts::encode(node, &artifact)
            .map_err(|e| failed(format!("cannot store the result: {e}"), BUG.into()))?;
        let manifest = cache.store(manifest, &payload, root).map_err(|e| {
            failed(
                format!("cannot store the result in the cache: {e}"),
                format!("check that `{}` can be written", root.join(cache::CACHE_DIR).display()),
            )
        })?;
        Ok::<_, RunError>((artifact, manifest, elapsed_ms))
    };
    let mut ran = schedule(&to_run, &mut outputs, options.jobs, &run_one)?;

    // Files of cached steps that were deleted or changed since.
    for node in &graph.nodes {
        let Some(manifest) = found.get(node.name.as_str()) else { continue };
        for output in &manifest.outputs {
            // The checker confined the paths the recipe writes; a manifest could still have
            // been edited by hand.
            let full = out.resolve(&output.path).map_err(|escape| RunError::Cache {
                message: format!(
                    "the cache entry of step `{}` names `{}`, outside the output folder: {}",
                    node.name,
                    output.path.display(),
                    escape.reason()
                ),
                help: "remove `.recipe/cache` or run with `--no-cache`".into(),
            })?;
            if hashes.hash(&full).is_ok_and(|h| h == output.hash) {
                continue;
            }
            let restored =
                crate::formats::copy_atomic(&cache.file(&node.hash, &output.blob), &full);
            restored.map_err(|e| RunError::Cache {
                message: format!("cannot put back `{}`: {e}", output.path.display()),
                help: "check that the folder can be written".into(),
            })?;
            report.written.push(output.path.clone());
        }
    }
    // The memo only saves time; a failure to write it loses nothing.
    if let Err(e) = hashes.save() {
        warn!("cannot remember file hashes: {e}");
    }

    // The report, in run order.
    for node in &graph.nodes {
        let (manifest, outcome, elapsed_ms) = match ran.remove(&node.name) {
            Some((manifest, elapsed)) => {
                report.written.extend(manifest.outputs.iter().map(|o| o.path.clone()));
                (manifest, Outcome::Ran, elapsed)
            }
            None => (
                found.remove(node.name.as_str()).expect("a step ran or was cached"),
                Outcome::Cached,
                0,
            ),
        };
        let table = match outputs.get(&node.name) {
            Some(Artifact::Metrics(t)) => Some(t.clone()),
            _ => artifacts::table(&manifest).map(Arc::new),
        };
        report.tables.extend(table);
        if !manifest.notes.is_empty() {
            report.notes.push((node.name.clone(), manifest.notes.clone()));
        }
        report.steps.push(StepRecord {
            name: node.name.clone(),
            kind: node.kind,
            hash: node.hash.clone(),
            outcome,
            manifest,
            elapsed_ms,
        });
    }
    report.outputs = outputs;
    Ok(report)
}

/// One trial of a search, as a task of a cluster job trains it.
#[derive(Debug, Clone)]
pub struct TrialTask {
    /// The search step.
    pub step: String,
    /// Its hash when the driver submitted the task: a task refuses to train for a recipe
    /// that has changed since.
    pub hash: String,
    pub index: usize,
    pub rung: usize,
    /// Where the task ran (Slurm's job and task ids), recorded with the trial's result.
    pub ran_under: BTreeMap<String, String>,
}

/// Train one trial of a search step into its trial store, reading the step's inputs from
/// the cache that the driver filled. Takes no lock: the driver holds it, and a task writes
/// only its own trial's file, whole or not at all.
pub fn run_trial(
    checked: &Checked,
    graph: &Graph,
    base_dir: &Path,
    task: &TrialTask,
) -> Result<steps::search::report::Trial, RunError> {
    let refused = |message: String, help: &str| RunError::Executor { message, help: help.into() };
    let node = graph.node(&task.step).ok_or_else(|| {
        refused(format!("the recipe has no step `{}`", task.step), "check `--step`")
    })?;
    if node.hash != task.hash {
        return Err(refused(
            format!(
                "step `{}` changed since its trials were submitted (hash {} then, {} now)",
                node.name,
                short(&task.hash),
                short(&node.hash)
            ),
            "the recipe, its inputs and `--set` must stay as they were while its trials run; \
             run the recipe again to submit them anew",
        ));
    }
    let block = checked.blocks.iter().find(|b| b.name == node.name).expect("a node is a block");
    let check::Spec::Search(spec) = &block.spec else {
        return Err(refused(format!("step `{}` is not a search", node.name), "check `--step`"));
    };
    let dev = device(checked.settings.device)?;
    let out = &checked.out_root;
    let cache = Cache::read_only(&out.dir);
    let hashes = FileHashes::open(&out.dir);
    let mut outputs = BTreeMap::new();
    for input in &node.inputs {
        let missing = || {
            refused(
                format!(
                    "the cache holds no result of step `{input}`, which the trials of `{}` read",
                    node.name
                ),
                "the driver stores it before it submits the trials: the recipe's folder and its \
                 `.recipe` must be on a filesystem that every node shares",
            )
        };
        let input_node = graph.node(input).ok_or_else(missing)?;
        let Lookup::Hit(manifest) = cache.lookup(&input_node.hash, &hashes) else {
            return Err(missing());
        };
        let artifact = artifacts::decode(&manifest, &cache, &dev).map_err(|message| {
            refused(format!("the cache entry of step `{input}` cannot be read: {message}"), BUG)
        })?;
        outputs.insert(input.clone(), artifact);
    }
    let ctx = Context {
        dev: &dev,
        seed: step_seed(checked.settings.seed, &node.name),
        base_dir,
        out,
        block,
        node,
        recipe_name: &checked.settings.name,
        progress: ProgressMode::Lines,
        jobs: 1,
        executor: &Executor::Local,
    };
    steps::search::run_task(
        spec,
        &Inputs { outputs: &outputs },
        &ctx,
        task.index,
        task.rung,
        &task.ran_under,
    )
    .map_err(|e| RunError::Step {
        span: block.span,
        name: node.name.clone(),
        message: e.message,
        help: e.help,
    })
}

fn short(hash: &str) -> &str {
    &hash[..hash.len().min(12)]
}

/// The steps of `graph` whose results the cache of `base_dir` holds, with the bytes of each
/// file they wrote, for `recipe plan`. Looks only: takes no lock and changes nothing.
pub fn cached_steps(graph: &Graph, base_dir: &Path) -> crate::graph::CachedSteps {
    let cache = Cache::read_only(base_dir);
    let hashes = FileHashes::open(base_dir);
    let mut out = crate::graph::CachedSteps::new();
    for node in &graph.nodes {
        if let Lookup::Hit(m) = cache.lookup(&node.hash, &hashes) {
            let files = m
                .outputs
                .iter()
                .map(|o| {
                    let bytes = std::fs::metadata(cache.file(&node.hash, &o.blob));
                    (o.path.clone(), bytes.map(|m| m.len()).unwrap_or(0))
                })
                .collect();
            out.insert(node.name.clone(), files);
        }
    }
    out
}

const BUG: &str = "this is a bug in recipe";

type Ran = BTreeMap<String, (Manifest, u64)>;

/// Run `nodes` (in run order), each once its inputs are in `outputs`, at most `jobs` at a
/// time. After a failure no new step starts; the steps running finish, and the failure of the
/// earliest step in run order is returned.
fn schedule<F>(
    nodes: &[&Node],
    outputs: &mut BTreeMap<String, Artifact>,
    jobs: usize,
    run_one: &F,
) -> Result<Ran, RunError>
where
    F: Fn(&Node, BTreeMap<String, Artifact>) -> Result<(Artifact, Manifest, u64), RunError> + Sync,
{
    let mut ran = Ran::new();
    let mut failures: Vec<(usize, RunError)> = Vec::new();
    std::thread::scope(|scope| {
        let (tx, rx) = std::sync::mpsc::channel();
        let mut started = vec![false; nodes.len()];
        let mut running = 0;
        loop {
            for (idx, node) in nodes.iter().enumerate() {
                if !failures.is_empty() || running >= jobs.max(1) {
                    break;
                }
                if started[idx] || !node.inputs.iter().all(|i| outputs.contains_key(i)) {
                    continue;
                }
                let inputs: BTreeMap<String, Artifact> =
                    node.inputs.iter().map(|i| (i.clone(), outputs[i].clone())).collect();
                started[idx] = true;
                running += 1;
                let tx = tx.clone();
                let node: &Node = node;
                scope.spawn(move || {
                    // The receiver outlives every sender.
                    let _ = tx.send((idx, run_one(node, inputs)));
                });
            }
            if running == 0 {
                break;
            }
            let (idx, result) = rx.recv().expect("a running step always reports");
            running -= 1;
            match result {
                Ok((artifact, manifest, elapsed)) => {
                    outputs.insert(nodes[idx].name.clone(), artifact);
                    ran.insert(nodes[idx].name.clone(), (manifest, elapsed));
                }
                Err(e) => failures.push((idx, e)),
            }
        }
    });
    failures.sort_by_key(|(idx, _)| *idx);
    match failures.into_iter().next() {
        Some((_, e)) => Err(e),
        None => Ok(ran),
    }
}

fn cache_error(base: &Path, e: std::io::Error) -> RunError {
    RunError::Cache {
        message: format!(
            "cannot open the cache in `{}`: {e}",
            base.join(cache::CACHE_DIR).display()
        ),
        help: "check that the recipe's folder can be written".into(),
    }
}

/// Each step draws from its own stream, so adding or removing a block does
/// not change the random numbers any other block sees.
fn step_seed(seed: u64, name: &str) -> u64 {
    let mut rng = crate::rng::Rng::new(seed, &format!("step/{name}"));
    rng.next_u64()
}

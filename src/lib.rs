//! `recipe`: model-optimization pipelines as declarative text files.
//!
//! A recipe (`NAME.opt`) says how to get from data and a model to a smaller,
//! faster model: train, search, prune, quantize, evaluate, save. The
//! library turns its text into results in stages, each with its own module:
//!
//! ```text
//!  text ──syntax::parse──▶ ast::File ──check::check──▶ Checked
//!       ──graph::plan──▶ Graph ──exec::run──▶ RunReport (weights, tables, files)
//! ```
//!
//! - [`syntax`]: the pest grammar (`grammar/recipe.pest`) and an AST that
//!   mirrors the text, every node with its span.
//! - [`check`]: names, types, defaults, ranges and tensor shapes; the
//!   checked form has no optional setting left.
//! - [`graph`]: the steps as a DAG in run order, each with a content hash.
//! - [`exec`]: the scheduler; [`steps`] holds the work of each block kind,
//!   on [`nn`] (models, optimizers, training) and candle tensors.
//! - At the bottom, used by all: [`data`] readers, weight [`formats`],
//!   the seeded [`rng`], [`span`]s and [`diag`]nostics.
//!
//! [`compile`] chains the first three stages for a file on disk:
//!
//! ```no_run
//! let recipe = recipe::Recipe::read("recipes/digits.opt".as_ref()).unwrap();
//! let compiled = recipe.compile(&[]).map_err(|e| e.render(80)).unwrap();
//! println!("{} steps", compiled.graph.nodes.len());
//! ```

pub mod check;
pub mod data;
pub mod diag;
pub mod digest;
pub mod exec;
pub mod formats;
pub mod graph;
pub mod nn;
pub mod overrides;
pub mod rng;
pub mod span;
pub mod steps;
pub mod syntax;

use std::path::{Path, PathBuf};

pub use diag::Error;

/// A recipe file read from disk.
#[derive(Debug, Clone)]
pub struct Recipe {
    pub path: PathBuf,
    /// The text of the file; invalid UTF-8 was replaced.
    pub text: String,
    /// The folder a run writes into, when not the recipe's own (`--out-dir`): relative output
    /// paths, the cache and the lock file go there, and nothing may be written outside it.
    pub out_dir: Option<PathBuf>,
    /// A problem decoding the bytes, reported when the recipe is parsed.
    utf8_error: Option<syntax::SyntaxError>,
}

/// A recipe after checking and planning.
#[derive(Debug, Clone)]
pub struct Compiled {
    pub ast: syntax::ast::File,
    pub checked: check::Checked,
    pub graph: graph::Graph,
}

impl Recipe {
    /// Read a recipe file.
    pub fn read(path: &Path) -> Result<Recipe, Error> {
        let bytes = std::fs::read(path)
            .map_err(|source| Error::Read { path: path.to_path_buf(), source })?;
        Ok(Recipe::from_bytes(path, &bytes))
    }

    /// A recipe from bytes, as if read from `path`.
    pub fn from_bytes(path: &Path, bytes: &[u8]) -> Recipe {
        let (text, utf8_error) = match syntax::decode(bytes) {
            Ok(text) => (text, None),
            Err((text, e)) => (text, Some(e)),
        };
        Recipe { path: path.to_path_buf(), text, out_dir: None, utf8_error }
    }

    /// The folder relative paths in the recipe start from.
    pub fn base_dir(&self) -> PathBuf {
        match self.path.parent() {
            Some(p) if !p.as_os_str().is_empty() => p.to_path_buf(),
            _ => PathBuf::from("."),
        }
    }

    fn options(&self) -> check::CheckOptions {
        let mut options = check::CheckOptions::for_file(&self.path);
        options.base_dir = self.base_dir();
        options.out_dir = self.out_dir.clone();
        options
    }

    /// Parse the text into an AST.
    pub fn parse(&self) -> Result<syntax::ast::File, Error> {
        if let Some(e) = &self.utf8_error {
            return Err(diag::problems(self, None, vec![e.clone()]));
        }
        syntax::parse(&self.text).map_err(|errors| diag::problems(self, None, errors))
    }

    /// Parse, apply `--set` overrides (`block.key=value`) and check.
    pub fn check(
        &self,
        overrides: &[String],
    ) -> Result<(syntax::ast::File, check::Checked), Error> {
        let mut ast = self.parse()?;
        let shown = overrides::apply(&mut ast, &self.text, overrides)
            .map_err(|(text, errors)| diag::problems_in(self, &text, errors))?;
        let checked = check::check(&ast, &self.options())
            .map_err(|errors| diag::problems_in(self, &shown, errors))?;
        Ok((ast, checked))
    }

    /// Parse, check and plan.
    pub fn compile(&self, overrides: &[String]) -> Result<Compiled, Error> {
        self.compile_on(overrides, None)
    }

    /// Parse, check and plan for running on `device` (the recipe's own when `None`): the
    /// device is part of every step's hash, since it may compute different numbers.
    pub fn compile_on(
        &self,
        overrides: &[String],
        device: Option<check::Device>,
    ) -> Result<Compiled, Error> {
        self.compile_with(overrides, device, true)
    }

    /// Compile; `remember` saves the hashes of the files read, for the next compile.
    fn compile_with(
        &self,
        overrides: &[String],
        device: Option<check::Device>,
        remember: bool,
    ) -> Result<Compiled, Error> {
        let (ast, mut checked) = self.check(overrides)?;
        if let Some(device) = device {
            checked.settings.device = device;
        }
        let hashes = digest::FileHashes::open(&checked.out_root.dir);
        let graph = graph::plan(&checked, &self.base_dir(), &hashes)
            .map_err(|e| Error::Plan { message: e.to_string() })?;
        // The memo only saves time on the next run; failing to write it loses nothing.
        if remember {
            let _ = hashes.save();
        }
        Ok(Compiled { ast, checked, graph })
    }

    /// The lock file `NAME.lock`: beside the recipe, or in the output folder when there is
    /// one.
    pub fn lock_path(&self) -> PathBuf {
        let beside = self.path.with_extension("lock");
        match (&self.out_dir, beside.file_name()) {
            (Some(dir), Some(name)) => dir.join(name),
            _ => beside,
        }
    }

    /// Compile and run, with `only` restricting the run to one step and
    /// what it needs. A recipe read from a file gets its lock file, `NAME.lock`, beside it; one
    /// held in memory under a path where no file is does not.
    pub fn run(
        &self,
        overrides: &[String],
        only: Option<&str>,
        options: &exec::RunOptions,
    ) -> Result<(Compiled, exec::RunReport), Error> {
        let compiled = self.compile_on(overrides, options.device)?;
        let graph = match only {
            Some(name) => compiled.graph.only(name).ok_or_else(|| Error::NoSuchStep {
                name: name.to_string(),
                known: compiled.graph.nodes.iter().map(|n| n.name.clone()).collect(),
            })?,
            None => compiled.graph.clone(),
        };
        let mut options = options.clone();
        if let exec::Executor::Slurm(slurm) = &mut options.executor {
            // Tasks on other nodes start in other folders.
            let absolute = |p: &Path| std::path::absolute(p).unwrap_or_else(|_| p.to_path_buf());
            slurm.recipe = exec::slurm::TaskRecipe {
                file: absolute(&self.path),
                overrides: overrides.to_vec(),
                out_dir: self.out_dir.as_deref().map(absolute),
                device: options.device,
            };
        }
        let report = exec::run(&compiled.checked, &graph, &options)
            .map_err(|e| diag::run_error(self, overrides, e))?;
        if self.path.is_file() {
            self.write_lock(&compiled, &report)?;
        }
        Ok((compiled, report))
    }

    /// Train one trial of a search into its trial store, as a task of a cluster job does
    /// (`recipe trial`): compiles the recipe as the driver did and reads the search's inputs
    /// from the cache. Writes nothing else: many tasks run at once, and the driver holds the
    /// folder's lock.
    pub fn trial(
        &self,
        overrides: &[String],
        device: Option<check::Device>,
        task: &exec::TrialTask,
    ) -> Result<steps::search::report::Trial, Error> {
        let compiled = self.compile_with(overrides, device, false)?;
        exec::run_trial(&compiled.checked, &compiled.graph, &self.base_dir(), task)
            .map_err(|e| diag::run_error(self, overrides, e))
    }

    /// Record the run in the lock file. Steps this run did not reach (`--only`) keep their
    /// earlier record while their hash is unchanged.
    fn write_lock(&self, compiled: &Compiled, report: &exec::RunReport) -> Result<(), Error> {
        use exec::lockfile::LockFile;
        let path = self.lock_path();
        let full = &compiled.graph;
        let mut lock = LockFile::from_steps(&compiled.checked.settings.name, &report.steps);
        if let Ok(old) = LockFile::read(&path) {
            for (name, step) in old.steps {
                let current = full.node(&name).is_some_and(|n| n.hash == step.hash);
                if current && !lock.steps.contains_key(&name) {
                    lock.steps.insert(name, step);
                }
            }
        }
        // A run killed while it wrote the lock file left its temporary beside it.
        exec::cache::remove_stale_temporaries(&path);
        let text = lock.render();
        if std::fs::read_to_string(&path).ok().as_deref() == Some(text.as_str()) {
            return Ok(());
        }
        formats::write_atomic(&path, text.as_bytes())
            .map_err(|source| Error::Write { path: path.clone(), source })
    }
}

/// Read and compile a recipe file in one call.
pub fn compile(path: &Path, overrides: &[String]) -> Result<Compiled, Error> {
    Recipe::read(path)?.compile(overrides)
}

/// What [`clean`] removed and kept.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Cleaned {
    /// Cache entries removed.
    pub entries: usize,
    /// Folders of stored search trials removed.
    pub searches: usize,
    /// Folders of Slurm job scripts and logs removed, of searches no recipe has.
    pub slurm_logs: usize,
    /// Bytes freed.
    pub bytes: u64,
    /// Cache entries kept.
    pub kept: usize,
}

/// Remove the cache entries, stored search trials and Slurm logs of `dir` that none of its
/// recipes (`*.opt`, with no overrides) refers to. Every recipe is compiled first: when one fails,
/// nothing is removed, since its entries cannot be told from stale ones.
pub fn clean(dir: &Path) -> Result<Cleaned, Error> {
    let listing =
        std::fs::read_dir(dir).map_err(|source| Error::Read { path: dir.to_path_buf(), source })?;
    let mut recipes: Vec<PathBuf> = listing
        .flatten()
        .map(|e| e.path())
        .filter(|p| p.extension().is_some_and(|e| e == "opt") && p.is_file())
        .collect();
    recipes.sort();
    let mut keep = std::collections::BTreeSet::new();
    // The Slurm logs of a search lie under `RECIPE/STEP`, which outlives edits to the step.
    let mut searches = std::collections::BTreeSet::new();
    for path in &recipes {
        let compiled = compile(path, &[])?;
        let name = &compiled.checked.settings.name;
        for block in &compiled.checked.blocks {
            if let check::Spec::Search(_) = block.spec {
                searches.insert(Path::new(name).join(&block.name));
            }
        }
        keep.extend(compiled.graph.nodes.into_iter().map(|n| n.hash));
    }

    let io = |path: &Path| {
        let path = path.to_path_buf();
        move |source| Error::Write { path, source }
    };
    let cache = exec::Cache::open(dir).map_err(io(&dir.join(exec::cache::CACHE_DIR)))?;
    let mut cleaned = Cleaned::default();
    for hash in cache.entries().map_err(io(&dir.join(exec::cache::CACHE_DIR)))? {
        if keep.contains(&hash) {
            cleaned.kept += 1;
            continue;
        }
        cleaned.bytes += cache.entry_bytes(&hash);
        cache.remove(&hash).map_err(io(&dir.join(exec::cache::CACHE_DIR)))?;
        cleaned.entries += 1;
    }
    let trials = dir.join(steps::search::TRIAL_STORE);
    for entry in std::fs::read_dir(&trials).into_iter().flatten().flatten() {
        let name = entry.file_name().to_string_lossy().into_owned();
        if keep.contains(&name) {
            continue;
        }
        let path = entry.path();
        if path.is_dir() {
            cleaned.bytes += remove_folder(&path).map_err(io(&path))?;
            cleaned.searches += 1;
        }
    }
    let logs = dir.join(exec::slurm::SLURM_DIR);
    for recipe in std::fs::read_dir(&logs).into_iter().flatten().flatten() {
        for step in std::fs::read_dir(recipe.path()).into_iter().flatten().flatten() {
            let search = Path::new(&recipe.file_name()).join(step.file_name());
            let path = step.path();
            if searches.contains(&search) || !path.is_dir() {
                continue;
            }
            cleaned.bytes += remove_folder(&path).map_err(io(&path))?;
            cleaned.slurm_logs += 1;
        }
        // Only an emptied folder goes; a failure means something is left in it.
        let _ = std::fs::remove_dir(recipe.path());
    }
    Ok(cleaned)
}

/// Remove a folder of files (trials, or job scripts and logs); the bytes its files held.
fn remove_folder(path: &Path) -> std::io::Result<u64> {
    let files = std::fs::read_dir(path).into_iter().flatten().flatten();
    let bytes = files.filter_map(|f| f.metadata().ok()).map(|m| m.len()).sum();
    std::fs::remove_dir_all(path)?;
    Ok(bytes)
}

/// The changes in metrics between the lock files at git revision `rev` and in the working
/// tree, as text. `files` are recipes or lock files; when empty, every lock file beside a
/// recipe in the current folder and below.
pub fn metrics_diff(rev: &str, files: &[PathBuf]) -> Result<String, Error> {
    use exec::lockfile::{self, LockFile};
    let mut locks: Vec<PathBuf> = files.iter().map(|f| f.with_extension("lock")).collect();
    if locks.is_empty() {
        find_locks(Path::new("."), &mut locks);
        locks.sort();
    }
    if locks.is_empty() {
        return Err(Error::Command {
            message: "no lock file here: no `NAME.lock` beside a `NAME.opt`".into(),
            help: Some("`recipe run NAME.opt` writes one".into()),
        });
    }
    let mut out = String::new();
    for path in locks {
        let failed = |message: String| Error::Command {
            message,
            help: Some("is the folder in a git repository, and the revision in it?".into()),
        };
        let old = lockfile::at_revision(&path, rev).map_err(failed)?;
        let new =
            LockFile::read(&path).map_err(|message| Error::Command { message, help: None })?;
        let shown = path.strip_prefix("./").unwrap_or(&path).display().to_string();
        out.push_str(&format!("{shown}: {rev} -> working tree\n"));
        out.push_str(&lockfile::diff(&old, &new, (rev, "now")));
    }
    Ok(out)
}

/// Lock files beside a recipe under `dir`, skipping hidden folders and build output.
fn find_locks(dir: &Path, out: &mut Vec<PathBuf>) {
    for entry in std::fs::read_dir(dir).into_iter().flatten().flatten() {
        let path = entry.path();
        let name = entry.file_name().to_string_lossy().into_owned();
        if name.starts_with('.') || name == "target" {
            continue;
        }
        if path.is_dir() {
            find_locks(&path, out);
        } else if path.extension().is_some_and(|e| e == "lock")
            && path.with_extension("opt").is_file()
        {
            out.push(path);
        }
    }
}

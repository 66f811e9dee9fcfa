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
        Recipe { path: path.to_path_buf(), text, utf8_error }
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
        let (ast, checked) = self.check(overrides)?;
        let graph = graph::plan(&checked, &self.base_dir())
            .map_err(|e| Error::Plan { message: e.to_string() })?;
        Ok(Compiled { ast, checked, graph })
    }

    /// Compile and run, with `only` restricting the run to one step and
    /// what it needs.
    pub fn run(
        &self,
        overrides: &[String],
        only: Option<&str>,
        options: &exec::RunOptions,
    ) -> Result<(Compiled, exec::RunReport), Error> {
        let compiled = self.compile(overrides)?;
        let graph = match only {
            Some(name) => compiled.graph.only(name).ok_or_else(|| Error::NoSuchStep {
                name: name.to_string(),
                known: compiled.graph.nodes.iter().map(|n| n.name.clone()).collect(),
            })?,
            None => compiled.graph.clone(),
        };
        let report = exec::run(&compiled.checked, &graph, options)
            .map_err(|e| diag::run_error(self, overrides, e))?;
        Ok((compiled, report))
    }
}

/// Read and compile a recipe file in one call.
pub fn compile(path: &Path, overrides: &[String]) -> Result<Compiled, Error> {
    Recipe::read(path)?.compile(overrides)
}

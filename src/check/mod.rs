//! Checking: an [`ast::File`] becomes the [`Checked`] form, or a list of
//! every problem found.
//!
//! The pass runs in four steps: a symbol table of blocks (unknown kinds,
//! duplicate names), the references between blocks as written, cycles among
//! them, then each block in dependency order with the checked form of the
//! blocks it reads at hand (a model needs its dataset's shape, a train block
//! its model's architecture). A block whose inputs failed is skipped rather
//! than reported again, so one mistake gives one message.

mod blocks;
mod error;
pub mod memory;
mod outputs;
mod refs;
pub mod spec;
mod value;

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

pub use error::CheckError;
pub use outputs::{Escape, OutputRoot};
pub use spec::*;

use crate::span::Span;
use crate::syntax::ast;
use refs::Env;
use value::Errors;

/// The block kinds of the language.
pub const KINDS: [&str; 10] =
    ["recipe", "data", "model", "load", "train", "search", "prune", "quantize", "eval", "save"];

/// Where the recipe lives, for relative paths and the default name.
#[derive(Debug, Clone)]
pub struct CheckOptions {
    /// The folder that relative paths in the recipe start from.
    pub base_dir: PathBuf,
    /// The recipe name when the file has no `recipe` block (its file stem).
    pub default_name: String,
    /// The folder everything a run writes must stay in, when not the recipe's own
    /// (`--out-dir`). Relative output paths start from it.
    pub out_dir: Option<PathBuf>,
}

impl CheckOptions {
    pub fn for_file(path: &Path) -> Self {
        let base_dir = path.parent().map(Path::to_path_buf).unwrap_or_default();
        let default_name =
            path.file_stem().map(|s| s.to_string_lossy().into_owned()).unwrap_or_default();
        CheckOptions { base_dir, default_name, out_dir: None }
    }
}

/// Check a parsed recipe.
pub fn check(file: &ast::File, options: &CheckOptions) -> Result<Checked, Vec<CheckError>> {
    let mut errors = Errors::default();
    let out_dir = options.out_dir.as_deref().unwrap_or(&options.base_dir);
    let out = OutputRoot::new(out_dir, options.out_dir.is_some()).map_err(|e| {
        vec![CheckError::OutputRoot { dir: out_dir.display().to_string(), message: e.to_string() }]
    })?;

    // The symbol table: every named block with a known kind.
    let mut env = Env::new(&options.base_dir, &out);
    let mut recipe_block: Option<&ast::Block> = None;
    for block in &file.blocks {
        let kind = block.kind.name.as_str();
        if !KINDS.contains(&kind) {
            errors.push(CheckError::UnknownKind {
                span: block.kind.span,
                kind: kind.to_string(),
                suggestion: value::closest(kind, KINDS),
                known: value::list_words(KINDS),
            });
            continue;
        }
        if kind == "recipe" {
            match recipe_block {
                Some(first) => errors.push(CheckError::DuplicateRecipe {
                    span: block.kind.span,
                    first: first.kind.span,
                }),
                None => recipe_block = Some(block),
            }
            continue;
        }
        if let Some(first) = env.declare(block) {
            errors.push(CheckError::DuplicateBlock {
                span: block.name.span,
                first,
                name: block.name.name.clone(),
            });
        }
    }

    let settings = blocks::recipe(recipe_block, &options.default_name, &mut errors);

    // References as written, then cycles among them.
    let deps: BTreeMap<&str, Vec<(&str, Span)>> =
        env.blocks().map(|b| (b.name.name.as_str(), refs::references(b))).collect();
    let in_cycle = refs::cycles(&deps, &mut errors);

    // Each block once the blocks it reads are checked.
    for block in refs::dependency_order(&env, &deps, &in_cycle) {
        if deps[block.name.name.as_str()].iter().any(|(d, _)| env.failed(d)) {
            env.skip(block);
            continue;
        }
        // A block with bad settings but sound references still yields a
        // spec (with defaults in place of the bad values), so the blocks
        // that read it are checked too and every problem is reported.
        match blocks::block(block, &env, &mut errors) {
            Some(spec) => env.done(block, spec),
            None => env.skip(block),
        }
    }

    // A search writes its trial table under a name made of the recipe's and its own.
    if let Some(settings) = &settings {
        for block in file.blocks.iter().filter(|b| b.kind.name == "search") {
            if env.spec(&block.name.name).is_some() {
                for path in SearchSpec::table_files(&settings.name, &block.name.name) {
                    out.check(&path, block.name.span, &mut errors);
                }
            }
        }
    }
    outputs::check_state(&out, &options.default_name, &mut errors);
    match memory::Available::here() {
        Ok(available) => memory::check(file, &env, available, &mut errors),
        Err(message) => errors.push(CheckError::MemoryLimit { message }),
    }

    if !errors.0.is_empty() {
        errors.0.sort_by_key(error_start);
        return Err(errors.0);
    }
    let settings = settings.expect("recipe settings are only missing after an error");
    Ok(Checked { settings, blocks: env.into_checked(file), out_root: out })
}

/// Errors are listed in the order of the text they point at.
fn error_start(e: &CheckError) -> usize {
    use miette::Diagnostic;
    e.labels().and_then(|mut l| l.next()).map_or(0, |l| l.offset())
}

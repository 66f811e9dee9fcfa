//! Helpers shared by the integration tests: running a recipe in a scratch
//! folder and reading what it wrote.

#![allow(dead_code)]

use std::collections::BTreeMap;
use std::path::Path;
use std::process::{Command, Output};

use recipe::exec::RunOptions;
use recipe::Recipe;

/// What a run wrote, by path relative to the recipe folder.
pub struct Ran {
    pub files: BTreeMap<String, Vec<u8>>,
    pub report: recipe::exec::RunReport,
}

pub fn options(recipe: &Recipe) -> RunOptions {
    RunOptions::new(recipe.base_dir())
}

/// Runs the `recipe` binary with `args` in `dir`, rendering diagnostics at a width of 80
/// columns and without colour, as the snapshots hold them.
pub fn cli(args: &[&str], dir: &Path) -> Output {
    Command::new(env!("CARGO_BIN_EXE_recipe"))
        .args(args)
        .current_dir(dir)
        .env("COLUMNS", "80")
        .env("NO_COLOR", "1")
        .output()
        .expect("the binary runs")
}

/// A program's output as text.
pub fn text(bytes: &[u8]) -> String {
    String::from_utf8_lossy(bytes).into_owned()
}

/// Copy the recipe's folder (without earlier outputs) to a fresh temporary
/// folder, run the recipe there, and read back every file it wrote.
pub fn run_in_copy(path: &Path, overrides: &[String]) -> Ran {
    let dir = tempfile::tempdir().expect("a temporary folder");
    let src = path.parent().expect("a recipe lives in a folder");
    for entry in std::fs::read_dir(src).expect("the recipe folder is readable") {
        let entry = entry.expect("a folder entry");
        if entry.file_type().map(|t| t.is_file()).unwrap_or(false) {
            std::fs::copy(entry.path(), dir.path().join(entry.file_name())).expect("copy");
        }
    }
    let copy = dir.path().join(path.file_name().expect("a file name"));
    let recipe = Recipe::read(&copy).expect("the copy is readable");
    let (_, report) = recipe
        .run(overrides, None, &options(&recipe))
        .unwrap_or_else(|e| panic!("{} failed:\n{}", path.display(), e.render(80)));
    let files = report
        .written
        .iter()
        .map(|p| {
            let bytes = std::fs::read(dir.path().join(p)).expect("a written file exists");
            (p.display().to_string(), bytes)
        })
        .collect();
    Ran { files, report }
}

/// The string metadata of a safetensors file.
pub fn metadata(bytes: &[u8]) -> BTreeMap<String, String> {
    let (_, meta) = safetensors::SafeTensors::read_metadata(bytes).expect("a safetensors file");
    meta.metadata().clone().unwrap_or_default().into_iter().collect()
}

/// Every tensor of a safetensors file: dtype, shape and raw bytes.
pub fn read_tensors(bytes: &[u8]) -> BTreeMap<String, (String, Vec<usize>, Vec<u8>)> {
    let st = safetensors::SafeTensors::deserialize(bytes).expect("a safetensors file");
    st.tensors()
        .into_iter()
        .map(|(name, view)| {
            (name, (format!("{:?}", view.dtype()), view.shape().to_vec(), view.data().to_vec()))
        })
        .collect()
}

/// The Python of `RECIPE_PYTHON` (default `python3`) when it can import every module of
/// `modules` (comma-separated); `None`, with a note, when it cannot, unless
/// `RECIPE_REQUIRE_PYTHON` is set (as CI sets it), which makes a missing module a failure.
pub fn python_with(modules: &str) -> Option<String> {
    let python = std::env::var("RECIPE_PYTHON").unwrap_or_else(|_| "python3".into());
    let ok = Command::new(&python)
        .args(["-c", &format!("import {modules}")])
        .output()
        .is_ok_and(|o| o.status.success());
    if ok {
        return Some(python);
    }
    if std::env::var_os("RECIPE_REQUIRE_PYTHON").is_some() {
        panic!("`{python}` lacks one of {modules}, and RECIPE_REQUIRE_PYTHON is set");
    }
    eprintln!("skipped: `{python}` lacks one of {modules} (run .ci/run for the full check)");
    None
}

/// [`python_with`] numpy, safetensors and the `gguf` package.
pub fn python_with_gguf() -> Option<String> {
    python_with("numpy, safetensors, gguf")
}

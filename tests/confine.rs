//! A run writes only inside one folder: the recipe's own, or the one given with `--out-dir`.
//! Saved weights, eval reports, search tables, the cache and the lock file are all held to
//! it, through `..` and symbolic links, at check time and again just before writing. The
//! refusals of `save` and `eval` paths have snapshots in `tests/bad/`.

#![cfg(unix)]

mod common;

use std::os::unix::fs::symlink;
use std::path::Path;

use common::{cli, text};
use recipe::Recipe;

const SMALL: &str = r#"
recipe small { seed = 1 }
data digits { source = builtin("digits"), scale = standard }
model net { input = digits, layers = [linear(16), relu, linear(10)] }
train base { model = net, data = digits, optimizer = sgd(lr = 0.1), epochs = 1 }
eval report { models = [base], data = digits.test, metrics = [accuracy], path = "out/r.json" }
save shipped { from = base, path = "out/small.safetensors" }
"#;

/// A diagnostic's words without the line breaks and margins of its rendering.
fn flat(bytes: &[u8]) -> String {
    text(bytes).replace('│', " ").split_whitespace().collect::<Vec<_>>().join(" ")
}

/// The names in `dir`, sorted.
fn names(dir: &Path) -> Vec<String> {
    let mut names: Vec<String> = std::fs::read_dir(dir)
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .collect();
    names.sort();
    names
}

#[test]
fn out_dir_takes_every_write() {
    let recipes = tempfile::tempdir().unwrap();
    let out = tempfile::tempdir().unwrap();
    std::fs::write(recipes.path().join("small.opt"), SMALL).unwrap();
    let out_dir = out.path().join("run");
    let run = cli(&["run", "small.opt", "--out-dir", out_dir.to_str().unwrap()], recipes.path());
    assert_eq!(run.status.code(), Some(0), "{}", text(&run.stderr));
    assert_eq!(names(recipes.path()), ["small.opt"], "nothing written beside the recipe");
    assert_eq!(names(&out_dir), [".recipe", "out", "small.lock"]);
    assert_eq!(names(&out_dir.join("out")), ["r.json", "small.safetensors"]);
    let stdout = text(&run.stdout);
    assert!(stdout.contains(&format!("wrote {}", out_dir.join("out/r.json").display())));

    // The cache in the output folder serves the next run.
    let again = cli(&["run", "small.opt", "--out-dir", out_dir.to_str().unwrap()], recipes.path());
    assert!(text(&again.stdout).contains("all from the cache"), "{}", text(&again.stdout));
    assert_eq!(names(recipes.path()), ["small.opt"]);
}

#[test]
fn absolute_paths_need_an_out_dir_that_holds_them() {
    let recipes = tempfile::tempdir().unwrap();
    let out = tempfile::tempdir().unwrap();
    let target = out.path().join("abs.safetensors");
    let body = SMALL.replace("out/small.safetensors", target.to_str().unwrap());
    std::fs::write(recipes.path().join("small.opt"), body).unwrap();

    let refused = cli(&["check", "small.opt"], recipes.path());
    assert_eq!(refused.status.code(), Some(1));
    let err = text(&refused.stderr);
    assert!(err.contains("it is an absolute path"), "{err}");
    assert!(err.contains("--out-dir"), "the help names the way out: {err}");

    let elsewhere = out.path().join("elsewhere");
    let refused =
        cli(&["check", "small.opt", "--out-dir", elsewhere.to_str().unwrap()], recipes.path());
    assert_eq!(refused.status.code(), Some(1));
    assert!(flat(&refused.stderr).contains("would be written outside the output folder"));
    assert!(!elsewhere.exists(), "a check writes nothing");

    let ran = cli(&["run", "small.opt", "--out-dir", out.path().to_str().unwrap()], recipes.path());
    assert_eq!(ran.status.code(), Some(0), "{}", text(&ran.stderr));
    assert!(target.is_file());
}

#[test]
fn the_cache_and_the_lock_file_cannot_lead_out() {
    let outside = tempfile::tempdir().unwrap();
    for (link, points_to) in [(".recipe", "."), ("small.lock", "small.lock")] {
        let recipes = tempfile::tempdir().unwrap();
        std::fs::write(recipes.path().join("small.opt"), SMALL).unwrap();
        symlink(outside.path().join(points_to), recipes.path().join(link)).unwrap();
        let out = cli(&["run", "small.opt"], recipes.path());
        assert_eq!(out.status.code(), Some(1), "through `{link}`");
        let err = text(&out.stderr);
        assert!(err.contains(&format!("`{link}` is a symbolic link that leads out")), "{err}");
        assert!(names(outside.path()).is_empty(), "nothing written through `{link}`");
    }
}

#[test]
fn a_search_table_cannot_lead_out() {
    let outside = tempfile::tempdir().unwrap();
    let recipes = tempfile::tempdir().unwrap();
    let body = r#"
        data digits { source = builtin("digits") }
        model net { input = digits, layers = [linear(10)] }
        train base { model = net, data = digits, epochs = 1 }
        search tuned { train = base, trials = 2, space = { optimizer.lr = loguniform(1e-3, 1.0) } }
    "#;
    std::fs::write(recipes.path().join("s.opt"), body).unwrap();
    symlink(outside.path(), recipes.path().join("out")).unwrap();
    let out = cli(&["check", "s.opt"], recipes.path());
    assert_eq!(out.status.code(), Some(1));
    let err = text(&out.stderr);
    assert!(err.contains("`out/s-tuned-trials.csv` would be written outside"), "{err}");
    assert!(err.contains("search tuned"), "the diagnostic points at the search: {err}");
}

/// A folder replaced by a link after checking, as a long run could see, is caught just
/// before the write.
#[test]
fn a_link_made_during_the_run_is_caught_before_writing() {
    let outside = tempfile::tempdir().unwrap();
    let recipes = tempfile::tempdir().unwrap();
    let path = recipes.path().join("small.opt");
    std::fs::write(&path, SMALL).unwrap();
    let recipe = Recipe::read(&path).unwrap();
    let compiled = recipe.compile(&[]).unwrap();
    symlink(outside.path(), recipes.path().join("out")).unwrap();
    let options = recipe::exec::RunOptions::new(recipe.base_dir());
    let err = recipe::exec::run(&compiled.checked, &compiled.graph, &options).unwrap_err();
    let message = err.to_string() + &format!("{err:?}");
    assert!(message.contains("`out` is a symbolic link that leads out"), "{message}");
    assert!(names(outside.path()).is_empty());
}

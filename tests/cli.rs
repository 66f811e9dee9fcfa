//! The `recipe` binary as a user runs it: subcommands, exit codes (0 for
//! success, 1 for a failed recipe, 2 for a malformed command line), and
//! what it prints.

mod common;

use std::path::PathBuf;

use common::{cli, text};

fn package() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
}

/// A scratch folder holding one recipe.
fn scratch(name: &str, body: &str) -> tempfile::TempDir {
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(dir.path().join(name), body).unwrap();
    dir
}

const SMALL: &str = r#"
recipe small { seed = 1 }
data digits { source = builtin("digits"), scale = standard }
model net { input = digits, layers = [linear(32), relu, linear(10)] }
train base { model = net, data = digits, optimizer = sgd(lr = 0.1, momentum = 0.9), epochs = 3 }
eval report { models = [base], data = digits.test, metrics = [accuracy] }
save out { from = base, path = "out/small.safetensors" }
"#;

#[test]
fn check_accepts_a_good_recipe() {
    let out = cli(&["check", "recipes/digits.opt"], &package());
    assert_eq!(out.status.code(), Some(0), "{}", text(&out.stderr));
    assert!(text(&out.stdout).contains("no problems"));
}

#[test]
fn check_refuses_a_bad_recipe_with_exit_1() {
    let out = cli(&["check", "tests/bad/cycle.opt"], &package());
    assert_eq!(out.status.code(), Some(1));
    let err = text(&out.stderr);
    assert!(err.contains("cycle: a -> b -> a"), "{err}");
    assert!(err.contains("recipe::check::cycle"), "{err}");
}

#[test]
fn malformed_command_lines_exit_2() {
    assert_eq!(cli(&["run"], &package()).status.code(), Some(2));
    assert_eq!(cli(&["frobnicate"], &package()).status.code(), Some(2));
    let out = cli(&["run", "recipes/digits.opt", "--device", "tpu"], &package());
    assert_eq!(out.status.code(), Some(2));
}

#[test]
fn a_missing_file_exits_1() {
    let out = cli(&["check", "no/such.opt"], &package());
    assert_eq!(out.status.code(), Some(1));
    assert!(text(&out.stderr).contains("cannot read `no/such.opt`"));
}

#[test]
fn run_prints_the_table_and_writes_the_file() {
    let dir = scratch("small.opt", SMALL);
    let out = cli(&["run", "small.opt"], dir.path());
    assert_eq!(out.status.code(), Some(0), "{}", text(&out.stderr));
    let stdout = text(&out.stdout);
    assert!(stdout.contains("eval report on digits.test"), "{stdout}");
    assert!(stdout.contains("wrote out/small.safetensors"), "{stdout}");
    assert!(dir.path().join("out/small.safetensors").exists());
}

#[test]
fn only_runs_what_a_step_needs() {
    let dir = scratch("small.opt", SMALL);
    let out = cli(&["run", "small.opt", "--only", "base"], dir.path());
    assert_eq!(out.status.code(), Some(0), "{}", text(&out.stderr));
    assert!(!dir.path().join("out").exists(), "save did not run");

    let out = cli(&["run", "small.opt", "--only", "bse"], dir.path());
    assert_eq!(out.status.code(), Some(1));
    assert!(text(&out.stderr).contains("there is no step `bse`"));
}

#[test]
fn set_overrides_are_checked_like_the_file() {
    let dir = scratch("small.opt", SMALL);
    let out = cli(&["check", "small.opt", "--set", "base.epochs=0"], dir.path());
    assert_eq!(out.status.code(), Some(1));
    let err = text(&out.stderr);
    // The diagnostic quotes the override itself.
    assert!(err.contains("--set base.epochs=0"), "{err}");
    assert!(err.contains("epochs must be an integer of at least 1"), "{err}");

    let out = cli(&["run", "small.opt", "--set", "base.epochs=1", "--only", "base"], dir.path());
    assert_eq!(out.status.code(), Some(0), "{}", text(&out.stderr));
}

/// A learning rate that makes training diverge stops the step with a
/// diagnostic naming it and the epoch, and leaves no output behind.
#[test]
fn divergence_stops_the_step_and_writes_nothing() {
    let dir = scratch("small.opt", SMALL);
    let out = cli(
        &["run", "small.opt", "--set", "base.optimizer=sgd(lr = 1e12)", "--set", "base.loss=mse"],
        dir.path(),
    );
    assert_eq!(out.status.code(), Some(1));
    let err = text(&out.stderr);
    assert!(err.contains("step `base` failed"), "{err}");
    assert!(err.contains("in epoch 1"), "{err}");
    assert!(err.contains("train base"), "the diagnostic quotes the block: {err}");
    // The cache folder holds only its lock and the steps that finished, never `base`.
    let leftovers: Vec<_> =
        std::fs::read_dir(dir.path()).unwrap().map(|e| e.unwrap().file_name()).collect();
    assert_eq!(leftovers.len(), 2, "no output, no temporary file: {leftovers:?}");
    assert!(dir.path().join("small.opt").is_file() && dir.path().join(".recipe").is_dir());
    let mut cached: Vec<String> = std::fs::read_dir(dir.path().join(".recipe/cache"))
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .collect();
    cached.sort();
    assert_eq!(cached.len(), 3, "the lock, `digits` and `net`: {cached:?}");
    assert!(cached.iter().all(|n| n == "lock" || n.len() == 64), "{cached:?}");
}

#[test]
fn graph_prints_dot() {
    let out = cli(&["graph", "recipes/digits.opt"], &package());
    assert_eq!(out.status.code(), Some(0));
    insta::assert_snapshot!(text(&out.stdout));
}

#[test]
fn plan_lists_steps_in_run_order() {
    let out = cli(&["plan", "recipes/digits.opt"], &package());
    assert_eq!(out.status.code(), Some(0));
    let stdout = text(&out.stdout);
    let order: Vec<usize> = ["data     digits", "model    net", "train    base", "save     out"]
        .iter()
        .map(|s| stdout.find(s).unwrap_or_else(|| panic!("`{s}` in {stdout}")))
        .collect();
    assert!(order.windows(2).all(|w| w[0] < w[1]), "{stdout}");
}

#[cfg(not(feature = "cuda"))]
#[test]
fn cuda_without_the_feature_is_a_clear_error() {
    let dir = scratch("small.opt", SMALL);
    let out = cli(&["run", "small.opt", "--device", "cuda"], dir.path());
    assert_eq!(out.status.code(), Some(1));
    let err = text(&out.stderr);
    assert!(err.contains("no CUDA support"), "{err}");
    assert!(err.contains("--features cuda"), "{err}");
}

#[test]
fn inspect_shows_tensors_and_metadata() {
    let dir = scratch("small.opt", SMALL);
    assert_eq!(cli(&["run", "small.opt"], dir.path()).status.code(), Some(0));
    let out = cli(&["inspect", "out/small.safetensors"], dir.path());
    assert_eq!(out.status.code(), Some(0), "{}", text(&out.stderr));
    let stdout = text(&out.stdout);
    assert!(stdout.contains("0.weight  F32    [32, 64]"), "{stdout}");
    assert!(stdout.contains("recipe_hash"), "{stdout}");
    assert!(stdout.contains("step          base"), "{stdout}");

    std::fs::write(dir.path().join("junk.safetensors"), b"not a tensor file").unwrap();
    let out = cli(&["inspect", "junk.safetensors"], dir.path());
    assert_eq!(out.status.code(), Some(1));
    assert!(text(&out.stderr).contains("junk.safetensors"));
}

//! The step cache, the lock file and what they promise: an unchanged step never runs twice,
//! a changed one reruns with what follows it and nothing else, a killed run loses nothing and
//! leaves nothing half-written, and damage to the cache is found and repaired.

mod common;

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use common::cli;
use recipe::exec::{Outcome, RunOptions, RunReport};
use recipe::Recipe;

fn package() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
}

/// A small recipe: a dataset, two trainings of different lengths, a pruned model, two
/// quantizations of it on independent branches, an eval and two saves.
const SMALL: &str = r#"
recipe small { seed = 7 }

data digits {
  source = builtin("digits")
  scale  = standard
}

model net {
  input  = digits
  layers = [linear(32), relu, linear(10)]
}

train base {
  model     = net
  data      = digits
  optimizer = sgd(lr = 0.1, momentum = 0.9)
  epochs    = 3
}

prune sparse {
  from     = base
  sparsity = 50%
  finetune = train(epochs = 1, data = digits)
}

quantize eight {
  from   = sparse
  scheme = int8
}

quantize four {
  from        = sparse
  scheme      = int4
  granularity = group(32)
}

eval report {
  models  = [base, sparse, eight, four]
  data    = digits.test
  metrics = [accuracy, size, sparsity]
  path    = "out/report.json"
}

save out {
  from = eight
  path = "out/eight.safetensors"
}
"#;

fn write_recipe(dir: &Path, name: &str, text: &str) -> PathBuf {
    let path = dir.join(name);
    std::fs::write(&path, text).unwrap();
    path
}

fn run(path: &Path, overrides: &[String], jobs: usize) -> RunReport {
    let recipe = Recipe::read(path).unwrap();
    let options = RunOptions { jobs, ..RunOptions::new(recipe.base_dir()) };
    let (_, report) = recipe
        .run(overrides, None, &options)
        .unwrap_or_else(|e| panic!("{} failed:\n{}", path.display(), e.render(80)));
    report
}

/// Every file under `dir` but the cache, by relative path.
fn files(dir: &Path) -> BTreeMap<String, Vec<u8>> {
    fn walk(root: &Path, dir: &Path, out: &mut BTreeMap<String, Vec<u8>>) {
        for entry in std::fs::read_dir(dir).unwrap().flatten() {
            let path = entry.path();
            if path.is_dir() {
                if entry.file_name() != ".recipe" {
                    walk(root, &path, out);
                }
            } else {
                let rel = path.strip_prefix(root).unwrap().display().to_string();
                out.insert(rel, std::fs::read(&path).unwrap());
            }
        }
    }
    let mut out = BTreeMap::new();
    walk(dir, dir, &mut out);
    out
}

/// Names of temporary files and folders anywhere under `dir`, the cache included.
fn temporaries(dir: &Path) -> Vec<String> {
    let mut out = Vec::new();
    let mut stack = vec![dir.to_path_buf()];
    while let Some(d) = stack.pop() {
        for entry in std::fs::read_dir(&d).unwrap().flatten() {
            let name = entry.file_name().to_string_lossy().into_owned();
            if name.contains(".tmp-") || name.starts_with("tmp-") {
                out.push(entry.path().display().to_string());
            }
            if entry.path().is_dir() {
                stack.push(entry.path());
            }
        }
    }
    out
}

/// `recipes/digits.opt` run again runs nothing; a longer retraining of its pruning step
/// reruns that step and exactly the steps that read from it.
#[test]
fn only_changed_steps_and_their_dependents_run_again() {
    let dir = tempfile::tempdir().unwrap();
    let text = std::fs::read_to_string(package().join("recipes/digits.opt")).unwrap();
    let path = write_recipe(dir.path(), "digits.opt", &text);

    let first = run(&path, &[], 2);
    assert_eq!(first.ran().len(), first.steps.len(), "a fresh folder runs every step");
    let written = files(dir.path());

    let again = run(&path, &[], 2);
    assert!(again.ran().is_empty(), "an unchanged rerun runs nothing: {:?}", again.ran());
    assert_eq!(files(dir.path()), written, "and rewrites nothing");
    assert_eq!(again.tables.len(), 1, "the eval table still comes back, from the cache");
    assert_eq!(again.tables[0], first.tables[0]);

    let changed = text.replace("finetune = train(epochs = 3", "finetune = train(epochs = 4");
    assert_ne!(changed, text, "the recipe has a pruning retraining to change");
    write_recipe(dir.path(), "digits.opt", &changed);
    let third = run(&path, &[], 2);
    assert_eq!(third.ran(), ["sparse", "small", "report", "shipped"]);
    let outcome =
        |r: &RunReport, name: &str| r.steps.iter().find(|s| s.name == name).unwrap().outcome;
    assert_eq!(outcome(&third, "tuned"), Outcome::Cached);

    // The command line says so too.
    let out = cli(&["run", "digits.opt"], dir.path());
    assert!(out.status.success());
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(stdout.contains("9 steps, all from the cache"), "{stdout}");
    let plan =
        String::from_utf8_lossy(&cli(&["plan", "digits.opt"], dir.path()).stdout).to_string();
    assert!(plan.contains("0 to run, 9 cached"), "{plan}");
}

/// Files of cached steps that were deleted or edited are put back without running anything.
#[test]
fn deleted_outputs_come_back_from_the_cache() {
    let dir = tempfile::tempdir().unwrap();
    let path = write_recipe(dir.path(), "small.opt", SMALL);
    run(&path, &[], 1);
    let written = files(dir.path());
    std::fs::remove_file(dir.path().join("out/eight.safetensors")).unwrap();
    std::fs::write(dir.path().join("out/report.json"), "{}").unwrap();
    let again = run(&path, &[], 1);
    assert!(again.ran().is_empty(), "{:?}", again.ran());
    assert_eq!(files(dir.path()), written);
}

/// Steps on independent branches give the same results side by side as one at a time, and
/// `--no-cache` runs everything again to the same bytes.
#[test]
fn independent_branches_run_side_by_side_to_the_same_results() {
    let one = tempfile::tempdir().unwrap();
    let two = tempfile::tempdir().unwrap();
    let first = run(&write_recipe(one.path(), "small.opt", SMALL), &[], 1);
    let second = run(&write_recipe(two.path(), "small.opt", SMALL), &[], 4);
    assert_eq!(first.ran(), second.ran());
    assert_eq!(files(one.path()), files(two.path()));

    let recipe = Recipe::read(&one.path().join("small.opt")).unwrap();
    let options = RunOptions { use_cache: false, ..RunOptions::new(recipe.base_dir()) };
    let (_, forced) = recipe.run(&[], None, &options).unwrap();
    assert_eq!(forced.ran().len(), forced.steps.len());
    assert_eq!(files(one.path()), files(two.path()));
}

/// A flipped byte in a cached payload is reported, and only that step runs again.
#[test]
fn a_damaged_cache_entry_is_found_and_recomputed() {
    let dir = tempfile::tempdir().unwrap();
    let path = write_recipe(dir.path(), "small.opt", SMALL);
    let first = run(&path, &[], 1);
    let written = files(dir.path());
    let base = first.steps.iter().find(|s| s.name == "base").unwrap();
    let payload = dir.path().join(".recipe/cache").join(&base.hash).join("weights.safetensors");
    let mut bytes = std::fs::read(&payload).unwrap();
    let middle = bytes.len() - 100;
    bytes[middle] ^= 0x5a;
    std::fs::write(&payload, bytes).unwrap();

    let again = run(&path, &[], 1);
    assert_eq!(again.damaged.len(), 1, "{:?}", again.damaged);
    assert_eq!(again.damaged[0].0, "base");
    assert!(again.damaged[0].1.contains("weights.safetensors"), "{:?}", again.damaged);
    assert_eq!(again.ran(), ["base"], "what reads `base` still has its own entry");
    assert_eq!(files(dir.path()), written);
    assert!(run(&path, &[], 1).ran().is_empty(), "the entry is whole again");

    // Damage to the manifest is found as well.
    let manifest = dir.path().join(".recipe/cache").join(&base.hash).join("manifest.json");
    let text = std::fs::read_to_string(&manifest).unwrap().replacen(
        "\"val_accuracy\"",
        "\"val_accuracx\"",
        1,
    );
    std::fs::write(&manifest, text).unwrap();
    let third = run(&path, &[], 1);
    assert_eq!(third.ran(), ["base"]);
}

/// Killed with SIGKILL at several points, reruns finish with the bytes of an uninterrupted
/// run, and no temporary file survives. Every file present after a kill is whole.
#[test]
fn killed_runs_resume_to_the_same_bytes() {
    let args = ["run", "digits.opt", "--jobs", "2"];
    let text = std::fs::read_to_string(package().join("recipes/digits.opt")).unwrap();

    let reference = tempfile::tempdir().unwrap();
    write_recipe(reference.path(), "digits.opt", &text);
    let started = Instant::now();
    assert!(cli(&args, reference.path()).status.success());
    let whole_run = started.elapsed();
    let expected = files(reference.path());

    let dir = tempfile::tempdir().unwrap();
    write_recipe(dir.path(), "digits.opt", &text);
    let mut interrupted = 0;
    for k in 1..=6u32 {
        let mut child = Command::new(env!("CARGO_BIN_EXE_recipe"))
            .args(args)
            .current_dir(dir.path())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .unwrap();
        // Kill points spread over a whole run; each run resumes the one before.
        std::thread::sleep(whole_run.mul_f64(f64::from(k) / 8.0).min(Duration::from_secs(30)));
        if child.try_wait().unwrap().is_none() {
            interrupted += 1;
        }
        child.kill().ok();
        child.wait().unwrap();
        for (name, bytes) in files(dir.path()) {
            if let Some(want) = expected.get(&name) {
                assert!(&bytes == want, "after kill {k}, `{name}` is whole or absent");
            }
        }
    }
    assert!(interrupted >= 3, "only {interrupted} kills landed inside a run");
    let out = cli(&args, dir.path());
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    assert_eq!(files(dir.path()), expected, "the same files, byte for byte");
    assert_eq!(temporaries(dir.path()), Vec::<String>::new());
}

/// The lock file repeats byte for byte, and `metrics diff` shows what a change to a committed
/// recipe did to its metrics.
#[test]
fn lock_files_repeat_and_metrics_diff_shows_changes() {
    let one = tempfile::tempdir().unwrap();
    let two = tempfile::tempdir().unwrap();
    run(&write_recipe(one.path(), "small.opt", SMALL), &[], 1);
    run(&write_recipe(two.path(), "small.opt", SMALL), &[], 2);
    let lock = std::fs::read(one.path().join("small.lock")).unwrap();
    assert_eq!(lock, std::fs::read(two.path().join("small.lock")).unwrap());
    let text = String::from_utf8(lock).unwrap();
    assert!(text.contains("[steps.report.metrics]") && text.contains("\"eight.accuracy\""));

    let dir = one.path();
    let git = |args: &[&str]| {
        let out = Command::new("git")
            .args(["-c", "user.name=t", "-c", "user.email=t@example.com"])
            .args(args)
            .current_dir(dir)
            .output()
            .expect("git runs");
        assert!(out.status.success(), "git {args:?}: {}", String::from_utf8_lossy(&out.stderr));
    };
    git(&["init", "-q"]);
    git(&["add", "small.opt", "small.lock"]);
    git(&["commit", "-q", "-m", "three epochs"]);
    write_recipe(dir, "small.opt", &SMALL.replace("epochs    = 3", "epochs    = 6"));
    let report = run(&dir.join("small.opt"), &[], 2);
    assert!(report.ran().contains(&"base"));

    let out = cli(&["metrics", "diff"], dir);
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let diff = String::from_utf8_lossy(&out.stdout);
    assert!(diff.starts_with("small.lock: HEAD -> working tree"), "{diff}");
    for expected in ["base.accuracy", "train_loss", "HEAD", "now"] {
        assert!(diff.contains(expected), "`{expected}` in:\n{diff}");
    }
    assert!(!diff.contains("digits "), "the data did not change:\n{diff}");

    // Against itself nothing changed.
    git(&["add", "small.opt", "small.lock"]);
    git(&["commit", "-q", "-m", "six epochs"]);
    let out = cli(&["metrics", "diff", "HEAD", "small.opt"], dir);
    assert!(String::from_utf8_lossy(&out.stdout).contains("no metric changed"));
}

/// `recipe clean` removes what no recipe refers to any more, and keeps the rest.
#[test]
fn clean_removes_only_unreferenced_entries() {
    let dir = tempfile::tempdir().unwrap();
    let path = write_recipe(dir.path(), "small.opt", SMALL);
    let first = run(&path, &[], 2);
    write_recipe(dir.path(), "small.opt", &SMALL.replace("sparsity = 50%", "sparsity = 60%"));
    let second = run(&path, &[], 2);
    assert_eq!(second.ran(), ["sparse", "eight", "four", "report", "out"]);

    let cleaned = recipe::clean(dir.path()).unwrap();
    assert_eq!(cleaned.entries, 5, "the entries of the 50% steps");
    assert_eq!(cleaned.kept, first.steps.len());
    assert!(run(&path, &[], 1).ran().is_empty(), "what the recipe uses is still there");

    let out = cli(&["clean", "."], dir.path());
    assert!(String::from_utf8_lossy(&out.stdout).contains("removed 0 cache entries"));
}

/// Two runs started together in one folder take turns on the cache and both finish with the
/// files one run alone writes.
#[test]
fn concurrent_runs_in_one_folder_do_not_collide() {
    let reference = tempfile::tempdir().unwrap();
    run(&write_recipe(reference.path(), "small.opt", SMALL), &[], 1);
    let dir = tempfile::tempdir().unwrap();
    write_recipe(dir.path(), "small.opt", SMALL);
    let spawn = || {
        Command::new(env!("CARGO_BIN_EXE_recipe"))
            .args(["run", "small.opt"])
            .current_dir(dir.path())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap()
    };
    let (a, b) = (spawn(), spawn());
    let (a, b) = (a.wait_with_output().unwrap(), b.wait_with_output().unwrap());
    assert!(a.status.success() && b.status.success());
    let said =
        format!("{}{}", String::from_utf8_lossy(&a.stdout), String::from_utf8_lossy(&b.stdout));
    assert!(said.contains("all from the cache"), "the second waits and takes the first's:\n{said}");
    assert_eq!(files(dir.path()), files(reference.path()));
}

/// `recipe inspect --json` gives scripts the tensors and the metadata a run wrote.
#[test]
fn inspect_prints_json_for_scripts() {
    let dir = tempfile::tempdir().unwrap();
    let report = run(&write_recipe(dir.path(), "small.opt", SMALL), &[], 1);
    let out = cli(&["inspect", "--json", "out/eight.safetensors"], dir.path());
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let json: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    let tensors = json["tensors"].as_array().unwrap();
    let weight = tensors.iter().find(|t| t["name"] == "0.weight").unwrap();
    assert_eq!(weight["shape"], serde_json::json!([32, 64]));
    assert!(weight["layout"].as_str().unwrap().starts_with("int8"), "{weight}");
    let save = report.steps.iter().find(|s| s.name == "out").unwrap();
    assert_eq!(json["metadata"]["recipe_hash"], save.hash.as_str());
    assert!(json["metadata"]["metrics"].is_object(), "JSON metadata stays JSON");
}

//! Searches as users rely on them: the chosen trial is at least as good as the starting
//! configuration, successive halving finds as good a trial for a fraction of the epochs, the
//! results do not depend on `--jobs`, and an interrupted search resumes where it stopped.

mod common;

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::{Duration, Instant};

use recipe::exec::{Artifact, RunOptions};
use recipe::Recipe;

fn recipe_path(name: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("recipes").join(name)
}

/// Run a recipe in a fresh copy of its folder with `jobs` threads for trials, and return the
/// run's report and every file it wrote.
fn run_with_jobs(path: &Path, overrides: &[String], jobs: usize) -> common::Ran {
    let dir = tempfile::tempdir().unwrap();
    let copy = dir.path().join(path.file_name().unwrap());
    std::fs::copy(path, &copy).unwrap();
    let recipe = Recipe::read(&copy).unwrap();
    let options = RunOptions { jobs, ..common::options(&recipe) };
    let (_, report) = recipe
        .run(overrides, None, &options)
        .unwrap_or_else(|e| panic!("{} failed:\n{}", path.display(), e.render(80)));
    let files = report
        .written
        .iter()
        .map(|p| (p.display().to_string(), std::fs::read(dir.path().join(p)).unwrap()))
        .collect();
    common::Ran { files, report }
}

fn test_accuracy(ran: &common::Ran, report: &str, model: &str) -> f64 {
    let json: serde_json::Value = serde_json::from_slice(&ran.files[report]).unwrap();
    json[model]["accuracy"].as_f64().unwrap()
}

/// A 12-trial random search over the learning rate chooses a trial at least as good on the
/// test split as the configuration it started from.
#[test]
fn random_search_beats_its_starting_point() {
    let ran = run_with_jobs(&recipe_path("digits_search.opt"), &[], 2);
    let report = "out/digits-search-report.json";
    let (base, tuned) = (test_accuracy(&ran, report, "base"), test_accuracy(&ran, report, "tuned"));
    assert!(tuned >= base, "tuned {tuned} against base {base}");

    // The table lists all 12 trials, best first, in every form.
    let csv = String::from_utf8(ran.files["out/digits_search-tuned-trials.csv"].clone()).unwrap();
    assert_eq!(csv.lines().count(), 13, "{csv}");
    assert!(csv.starts_with("trial,optimizer.lr,val_loss,epochs,rung\n"), "{csv}");
    let json: serde_json::Value =
        serde_json::from_slice(&ran.files["out/digits_search-tuned-trials.json"]).unwrap();
    let best = json["best"].as_u64().unwrap();
    assert_eq!(json["trials"][0]["trial"].as_u64().unwrap(), best);
    let objectives: Vec<f64> = json["trials"]
        .as_array()
        .unwrap()
        .iter()
        .map(|t| t["objective"].as_f64().unwrap())
        .collect();
    assert!(objectives.windows(2).all(|w| w[0] <= w[1]), "best first: {objectives:?}");
    let svg = String::from_utf8(ran.files["out/digits_search-tuned-trials.svg"].clone()).unwrap();
    assert_eq!(svg.matches("<circle").count(), 12, "one point per trial");
    assert!(svg.contains("(log)"), "a log axis for a loguniform setting");
    assert!(svg.contains(&format!("trial {best}:")));
}

/// Successive halving over 27 trials spends at most 40% of the epochs of training all 27
/// fully, and its best is within a point of the full search's on the test split.
#[test]
fn halving_finds_as_good_a_trial_for_a_fraction_of_the_epochs() {
    let path = recipe_path("digits_halving.opt");
    let halving = run_with_jobs(&path, &[], 2);
    let full = run_with_jobs(&path, &["tuned.strategy=random".into()], 2);
    let spent = |ran: &common::Ran| {
        let Artifact::Weights(w) = &ran.report.outputs["tuned"] else { panic!("no weights") };
        w.metrics["epochs_spent"]
    };
    assert_eq!(spent(&full), 27.0 * 20.0);
    assert!(spent(&halving) <= 0.4 * spent(&full), "{} epochs", spent(&halving));
    let report = "out/digits-halving-report.json";
    let (h, f) = (test_accuracy(&halving, report, "tuned"), test_accuracy(&full, report, "tuned"));
    assert!(h >= f - 0.01, "halving {h} against the full search {f}");
}

/// One job or two: the same trial table and the same weights, byte for byte.
#[test]
fn jobs_do_not_change_the_results() {
    let path = recipe_path("digits_halving.opt");
    let one = run_with_jobs(&path, &[], 1);
    let two = run_with_jobs(&path, &[], 2);
    assert_eq!(one.files.keys().collect::<Vec<_>>(), two.files.keys().collect::<Vec<_>>());
    for (name, bytes) in &one.files {
        assert!(bytes == &two.files[name], "`{name}` differs between --jobs 1 and 2");
    }
    let weights = |ran: &common::Ran| {
        let Artifact::Weights(w) = &ran.report.outputs["tuned"] else { panic!("no weights") };
        w.tensors
            .iter()
            .map(|(k, t)| (k.clone(), t.flatten_all().unwrap().to_vec1::<f32>().unwrap()))
            .collect::<BTreeMap<_, _>>()
    };
    assert!(weights(&one) == weights(&two), "the chosen weights are the same");
}

/// Finished trials in the store of a folder.
fn stored_trials(dir: &Path) -> usize {
    let steps = std::fs::read_dir(dir.join(".recipe/trials")).into_iter().flatten().flatten();
    steps
        .map(|step| step.path())
        .filter(|p| p.is_dir())
        .flat_map(std::fs::read_dir)
        .map(|entries| {
            entries
                .filter_map(|e| e.ok())
                .filter(|e| {
                    let name = e.file_name().to_string_lossy().to_string();
                    !name.starts_with('.') && name.ends_with(".safetensors")
                })
                .count()
        })
        .sum()
}

/// A search killed halfway resumes from its finished trials and ends as an uninterrupted
/// run does.
#[test]
fn a_killed_search_resumes_where_it_stopped() {
    let path = recipe_path("digits_search.opt");
    let whole = run_with_jobs(&path, &[], 1);

    let dir = tempfile::tempdir().unwrap();
    std::fs::copy(&path, dir.path().join("digits_search.opt")).unwrap();
    let binary = env!("CARGO_BIN_EXE_recipe");
    let mut child = Command::new(binary)
        .args(["run", "digits_search.opt", "--jobs", "1"])
        .current_dir(dir.path())
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null())
        .spawn()
        .unwrap();
    let started = Instant::now();
    while stored_trials(dir.path()) < 3 && started.elapsed() < Duration::from_secs(300) {
        if child.try_wait().unwrap().is_some() {
            break;
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    child.kill().ok();
    child.wait().unwrap();
    let finished = stored_trials(dir.path());
    assert!(finished >= 3, "trials finished before the kill: {finished}");

    let out = Command::new(binary)
        .args(["run", "digits_search.opt", "--jobs", "1"])
        .current_dir(dir.path())
        .output()
        .unwrap();
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        stdout.contains(&format!("{finished} from the trial store")),
        "only the unfinished trials train again:\n{stdout}"
    );
    for (name, bytes) in &whole.files {
        let again = std::fs::read(dir.path().join(name)).unwrap();
        assert!(&again == bytes, "`{name}` equals the uninterrupted run's");
    }
}

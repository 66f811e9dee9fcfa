//! Search speed: the wall time of a 16-trial random search over the learning rate of the
//! digits MLP with `--jobs 2`, against the same search written with Optuna and PyTorch
//! (`bench/search_optuna.py`), measured in the same run on the same data.
//!
//! Each round runs the recipe's search in a fresh folder (so no trial comes from the trial
//! store), then the Python script; the figure is the median over the rounds. `recipe`'s time
//! is the whole run of the recipe (reading the data included); the script's excludes
//! starting Python and importing PyTorch and Optuna, which take seconds of their own.
//!
//! ```sh
//! cargo run --release --example bench_search -- --python /path/to/venv/bin/python
//! ```
//!
//! The Python needs torch, optuna and safetensors; without `--python` only `recipe` runs.
//! `--rounds N` (default 3) and `--jobs N` (default 2) change the work.

use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Instant;

use candle_core::{Device, Tensor};
use recipe::exec::{Artifact, RunOptions};
use recipe::Recipe;

const RECIPE: &str = r#"
recipe bench_search { seed = 42 }
data digits { source = builtin("digits"), split = [0.7, 0.15, 0.15], scale = standard }
model net { input = digits, layers = [linear(128), relu, linear(10)] }
train base {
  model = net, data = digits, optimizer = sgd(lr = 0.01, momentum = 0.9)
  epochs = 20, batch = 32, schedule = cosine
}
search tuned {
  train = base, strategy = random, trials = 16, objective = maximize(accuracy)
  space { optimizer.lr = loguniform(1e-3, 1.0) }
}
"#;

/// Seconds of one whole run of the search in a fresh folder, and its best validation
/// accuracy.
fn run_recipe(jobs: usize) -> (f64, f64) {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("bench_search.opt");
    std::fs::write(&path, RECIPE).unwrap();
    let recipe = Recipe::read(&path).unwrap();
    let options = RunOptions { jobs, ..RunOptions::new(recipe.base_dir()) };
    let start = Instant::now();
    let (_, report) = recipe.run(&[], Some("tuned"), &options).unwrap_or_else(|e| panic!("{e:?}"));
    let seconds = start.elapsed().as_secs_f64();
    let Some(Artifact::Weights(w)) = report.outputs.get("tuned") else { panic!("no weights") };
    (seconds, w.metrics["val_accuracy"])
}

/// The digits splits as the recipe prepares them, for the script.
fn write_data(path: &Path) {
    let text = r#"data digits { source = builtin("digits"), split = [0.7, 0.15, 0.15],
                                scale = standard }"#;
    let recipe = Recipe::from_bytes(Path::new("data.opt"), text.as_bytes());
    let options = RunOptions { use_cache: false, ..RunOptions::new(".") };
    let (_, report) = recipe.run(&[], None, &options).unwrap_or_else(|e| panic!("{e:?}"));
    let Some(Artifact::Dataset(data)) = report.outputs.get("digits") else { panic!("no data") };
    let d: usize = data.features.iter().product();
    let mut tensors = std::collections::HashMap::new();
    for (name, part) in [("train", &data.train), ("val", &data.val)] {
        let xs = Tensor::from_slice(&part.xs, (part.n, d), &Device::Cpu).unwrap();
        let ys: Vec<i64> = part.ys.iter().map(|&y| i64::from(y)).collect();
        tensors.insert(format!("x_{name}"), xs);
        tensors.insert(format!("y_{name}"), Tensor::from_vec(ys, part.n, &Device::Cpu).unwrap());
    }
    candle_core::safetensors::save(&tensors, path).unwrap();
}

fn run_python(python: &Path, data: &Path, jobs: usize) -> (f64, f64) {
    let script = Path::new(env!("CARGO_MANIFEST_DIR")).join("bench/search_optuna.py");
    let out = Command::new(python)
        .arg(script)
        .args(["--data".as_ref(), data.as_os_str()])
        .args(["--trials", "16", "--jobs", &jobs.to_string()])
        .output()
        .expect("the Python interpreter starts");
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let json: serde_json::Value = serde_json::from_slice(&out.stdout).expect("the script's JSON");
    (json["seconds"].as_f64().unwrap(), json["best"].as_f64().unwrap())
}

fn median(xs: &mut [f64]) -> f64 {
    xs.sort_by(f64::total_cmp);
    xs.get(xs.len() / 2).copied().unwrap_or(f64::NAN)
}

fn main() {
    let mut python: Option<PathBuf> = None;
    let (mut rounds, mut jobs) = (3, 2);
    let mut args = std::env::args().skip(1);
    while let Some(arg) = args.next() {
        match arg.as_str() {
            "--python" => python = args.next().map(PathBuf::from),
            "--rounds" => rounds = args.next().and_then(|r| r.parse().ok()).expect("--rounds N"),
            "--jobs" => jobs = args.next().and_then(|j| j.parse().ok()).expect("--jobs N"),
            other => panic!("unknown argument `{other}`"),
        }
    }
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("digits.safetensors");
    if python.is_some() {
        write_data(&data);
    }
    let (mut ours, mut theirs) = (Vec::new(), Vec::new());
    let (mut our_best, mut their_best) = (f64::NAN, f64::NAN);
    for _ in 0..rounds {
        let (s, best) = run_recipe(jobs);
        ours.push(s);
        our_best = best;
        if let Some(python) = &python {
            let (s, best) = run_python(python, &data, jobs);
            theirs.push(s);
            their_best = best;
        }
    }
    let (a, b) = (median(&mut ours), median(&mut theirs));
    println!("16-trial digits search, --jobs {jobs}, median of {rounds} rounds");
    println!("  recipe          {a:>7.2} s   best val accuracy {our_best:.4}");
    println!("  optuna+pytorch  {b:>7.2} s   best val accuracy {their_best:.4}");
    println!("  recipe / python {:>7.2}", a / b);
}

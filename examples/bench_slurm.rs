//! What a cluster costs: the wall time of an 8-trial random search of the digits MLP run
//! with `--executor slurm` against the same search run locally, in the same run.
//!
//! Each round runs the search in two fresh folders (so no trial comes from the trial store):
//! on this machine with `--jobs` threads, then as a Slurm array job of 8 tasks. Both times
//! are whole runs of the recipe, reading the data included; the Slurm one adds writing the
//! job script, `sbatch`, the wait for the scheduler, starting 8 processes that each compile
//! the recipe and read the data from the cache, and following the job. The two trial tables
//! must be byte-identical, or the benchmark stops.
//!
//! ```sh
//! bash .ci/slurm up                 # a single-node cluster, as root on Debian
//! cargo build --release
//! cargo run --release --example bench_slurm
//! ```
//!
//! `--rounds N` (default 3), `--epochs N` (a trial's, default 20), `--jobs N` (default: the
//! CPUs) and `--recipe PATH` (the binary the tasks run; default `target/release/recipe`)
//! change the work.

use std::path::{Path, PathBuf};
use std::time::Instant;

use recipe::exec::{Executor, RunOptions, SlurmOptions};
use recipe::Recipe;

const RECIPE: &str = r#"
recipe bench_slurm { seed = 42 }
data digits { source = builtin("digits"), split = [0.7, 0.15, 0.15], scale = standard }
model net { input = digits, layers = [linear(128), relu, linear(10)] }
train base {
  model = net, data = digits, optimizer = sgd(lr = 0.01, momentum = 0.9)
  epochs = EPOCHS, batch = 32, schedule = cosine
}
search tuned {
  train = base, strategy = random, trials = 8, objective = maximize(accuracy)
  space { optimizer.lr = loguniform(1e-3, 0.3) }
}
"#;

/// Seconds of one whole run of the search in a fresh folder, and its trial table as CSV.
fn run(executor: Executor, jobs: usize, epochs: usize) -> (f64, Vec<u8>) {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("bench_slurm.opt");
    std::fs::write(&path, RECIPE.replace("EPOCHS", &epochs.to_string())).unwrap();
    let recipe = Recipe::read(&path).unwrap();
    let options = RunOptions { jobs, executor, ..RunOptions::new(recipe.base_dir()) };
    let start = Instant::now();
    recipe.run(&[], Some("tuned"), &options).unwrap_or_else(|e| panic!("{}", e.render(100)));
    let seconds = start.elapsed().as_secs_f64();
    let table = std::fs::read(dir.path().join("out/bench_slurm-tuned-trials.csv")).unwrap();
    (seconds, table)
}

fn median(xs: &mut [f64]) -> f64 {
    xs.sort_by(f64::total_cmp);
    xs.get(xs.len() / 2).copied().unwrap_or(f64::NAN)
}

/// `target/release/recipe` beside `target/release/examples/bench_slurm`.
fn default_binary() -> PathBuf {
    let me = std::env::current_exe().expect("the example knows where it is");
    let release = me.parent().and_then(Path::parent).expect("target/release/examples");
    release.join("recipe")
}

fn main() {
    let mut binary = default_binary();
    let (mut rounds, mut epochs) = (3, 20);
    let mut jobs = std::thread::available_parallelism().map(|n| n.get()).unwrap_or(1);
    let mut args = std::env::args().skip(1);
    while let Some(arg) = args.next() {
        match arg.as_str() {
            "--recipe" => binary = args.next().map(PathBuf::from).expect("--recipe PATH"),
            "--rounds" => rounds = args.next().and_then(|r| r.parse().ok()).expect("--rounds N"),
            "--jobs" => jobs = args.next().and_then(|j| j.parse().ok()).expect("--jobs N"),
            "--epochs" => epochs = args.next().and_then(|e| e.parse().ok()).expect("--epochs N"),
            other => panic!("unknown argument `{other}`"),
        }
    }
    assert!(binary.is_file(), "no `recipe` binary at {}: cargo build --release", binary.display());
    let slurm = Executor::Slurm(Box::new(SlurmOptions::new(&binary)));
    let (mut local, mut cluster, mut overhead) = (Vec::new(), Vec::new(), Vec::new());
    for round in 0..rounds {
        let (a, table_a) = run(Executor::Local, jobs, epochs);
        let (b, table_b) = run(slurm.clone(), jobs, epochs);
        assert!(table_a == table_b, "the trial tables differ");
        println!("round {round}: local {a:.2} s, slurm {b:.2} s");
        local.push(a);
        cluster.push(b);
        overhead.push(b - a);
    }
    let (a, b, o) = (median(&mut local), median(&mut cluster), median(&mut overhead));
    println!(
        "8-trial digits search, {epochs} epochs a trial, median of {rounds} rounds, trial \
         tables identical"
    );
    let rows = [
        (format!("--executor local (--jobs {jobs})"), format!("{a:.2} s")),
        ("--executor slurm (8 tasks)".to_string(), format!("{b:.2} s")),
        ("overhead".to_string(), format!("{o:+.2} s")),
    ];
    for (what, time) in rows {
        println!("  {what:<32} {time:>8}");
    }
}

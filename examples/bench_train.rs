//! Training speed against PyTorch: milliseconds per epoch of `recipe`'s training loop and of
//! a PyTorch script doing the same work on the same data, measured in the same run.
//!
//! Three workloads:
//!
//! - `digits`: the digits MLP of `recipes/digits.opt` (64-128-10, SGD with momentum, batch
//!   32) on the 1,257 training samples of the built-in digits set. Per-operation overhead
//!   dominates here.
//! - `large`: a 784-512-512-10 MLP (SGD with momentum, batch 128) on 60,000 generated
//!   samples of 784 features and 10 classes. Matrix multiplication dominates here.
//! - `conv`: two convolutions (16 and 32 filters of 3x3, each with relu and a 2x2 max-pool)
//!   and a linear layer, on the same 60,000 samples read as 28x28 images, batch 128.
//!
//! Each round runs `recipe` for a few epochs on its fused path (what a `train` step runs; the
//! convolutional model has none and trains on candle's autograd), then on candle's autograd
//! (the plain path), then the PyTorch script on the same data (written to a temporary
//! safetensors file) with as many threads as `recipe` has, so that all three see the same
//! machine state. The first epoch of every run is a warm-up and is not counted; the figures
//! are the median, minimum and maximum of the other epochs over all rounds.
//!
//! ```sh
//! cargo run --release --example bench_train -- --python /path/to/venv/bin/python
//! ```
//!
//! Without `--python` only `recipe` is measured. `--rounds N` (default 5), `--only
//! digits|large|conv`, `--no-plain` (skip candle's autograd) and `--plain-only` (only candle's
//! autograd, for profiling it) change what runs.

use std::cell::RefCell;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Instant;

use candle_core::{Device, Tensor};
use recipe::check::spec::{Arch, Layer, Loss, Optimizer, Schedule, TrainSettings};
use recipe::exec::{Artifact, RunOptions};
use recipe::nn::train::{fit_constrained, Constraints};
use recipe::nn::{EpochStats, Progress, TrainData};
use recipe::rng::Rng;

/// One workload: data, model and training settings.
struct Workload {
    name: &'static str,
    /// The convolutional model rather than an MLP.
    conv: bool,
    xs: Vec<f32>,
    ys: Vec<u32>,
    features: usize,
    hidden: Vec<usize>,
    classes: usize,
    batch: usize,
    lr: f64,
    /// Epochs per run, the first of which is a warm-up.
    epochs: usize,
}

impl Workload {
    fn n(&self) -> usize {
        self.ys.len()
    }
}

/// Makes a workload's data; some take seconds, so only those asked for are made.
type MakeWorkload = fn() -> Workload;

/// The training split of the built-in digits set, as `recipes/digits.opt` prepares it.
fn digits() -> Workload {
    let text = r#"
        recipe bench { seed = 42 }
        data digits { source = builtin("digits"), split = [0.7, 0.15, 0.15], scale = standard }
    "#;
    let recipe = recipe::Recipe::from_bytes(Path::new("bench.opt"), text.as_bytes());
    let options = RunOptions { use_cache: false, ..RunOptions::new(".") };
    let (_, report) = recipe.run(&[], None, &options).unwrap_or_else(|e| panic!("{e:?}"));
    let Some(Artifact::Dataset(data)) = report.outputs.get("digits") else {
        panic!("the data step makes a dataset")
    };
    Workload {
        name: "digits",
        conv: false,
        xs: data.train.xs.clone(),
        ys: data.train.ys.clone(),
        features: data.features.iter().product(),
        hidden: vec![128],
        classes: data.classes,
        batch: 32,
        lr: 0.1,
        epochs: 21,
    }
}

/// 60,000 samples whose labels a random linear teacher gives, so that the task is learnable
/// and the loss falls as it would on real data.
fn large() -> Workload {
    let (n, d, classes) = (60_000, 784, 10);
    let mut rng = Rng::new(7, "bench/large");
    let xs: Vec<f32> = (0..n * d).map(|_| rng.normal() as f32).collect();
    let teacher: Vec<f32> = (0..d * classes).map(|_| rng.normal() as f32).collect();
    let ys = xs
        .chunks(d)
        .map(|x| {
            let logits = teacher.chunks(d).map(|w| x.iter().zip(w).map(|(a, b)| a * b).sum());
            let best =
                logits.enumerate().fold(
                    (0, f32::MIN),
                    |best, (c, v): (usize, f32)| {
                        if v > best.1 {
                            (c, v)
                        } else {
                            best
                        }
                    },
                );
            best.0 as u32
        })
        .collect();
    Workload {
        name: "large",
        conv: false,
        xs,
        ys,
        features: d,
        hidden: vec![512, 512],
        classes,
        batch: 128,
        lr: 0.01,
        epochs: 4,
    }
}

/// The `large` data as 28x28 images for a small convolutional network.
fn conv() -> Workload {
    Workload { name: "conv", conv: true, hidden: vec![], epochs: 2, ..large() }
}

/// Records when each epoch ended.
struct Clock(RefCell<Vec<Instant>>);

impl Progress for Clock {
    fn epoch(&self, _stats: &EpochStats, _total_epochs: usize) {
        self.0.borrow_mut().push(Instant::now());
    }
}

/// Milliseconds of each epoch after the first, and the last epoch's training loss, on the
/// fused path or, with `plain`, on candle's autograd.
fn run_recipe(w: &Workload, dev: &Device, plain: bool) -> (Vec<f64>, f64) {
    let mut layers = Vec::new();
    let input = if w.conv {
        layers.extend([
            Layer::Conv2d { out: 16, kernel: 3, stride: 1, padding: 1 },
            Layer::Relu,
            Layer::MaxPool { k: 2 },
            Layer::Conv2d { out: 32, kernel: 3, stride: 1, padding: 1 },
            Layer::Relu,
            Layer::MaxPool { k: 2 },
            Layer::Flatten,
        ]);
        vec![1, 28, 28]
    } else {
        vec![w.features]
    };
    for &h in &w.hidden {
        layers.push(Layer::Linear { out: h });
        layers.push(Layer::Relu);
    }
    layers.push(Layer::Linear { out: w.classes });
    let arch = Arch::new(input.clone(), layers).expect("the model fits its input");
    let settings = TrainSettings {
        optimizer: Optimizer::Sgd { lr: w.lr, momentum: 0.9, weight_decay: 0.0, nesterov: false },
        loss: Loss::CrossEntropy,
        epochs: w.epochs,
        batch: w.batch,
        schedule: Schedule::Constant,
        stop: None,
    };
    let mut dims = vec![w.n()];
    dims.extend(input);
    let xs = Tensor::from_slice(&w.xs, dims, dev).unwrap();
    let ys = Tensor::from_slice(&w.ys, w.n(), dev).unwrap();
    let data = TrainData { train_x: &xs, train_y: &ys, val: None, classes: w.classes };
    let init = recipe::nn::init(&arch, &mut Rng::new(1, "init"), dev).unwrap();

    let clock = Clock(RefCell::new(Vec::new()));
    let start = Instant::now();
    let constraints = Constraints { plain, ..Constraints::default() };
    let mut rng = Rng::new(1, "fit");
    let outcome =
        fit_constrained(&arch, &init, &settings, &data, &mut rng, &clock, &constraints).unwrap();
    let mut ends = vec![start];
    ends.extend(clock.0.into_inner());
    let ms = ends.windows(2).skip(1).map(|p| (p[1] - p[0]).as_secs_f64() * 1e3).collect();
    (ms, outcome.history.last().map_or(f64::NAN, |s| s.train_loss))
}

/// Write the workload's data where the PyTorch script reads it.
fn write_data(w: &Workload, path: &Path) {
    let xs = Tensor::from_slice(&w.xs, (w.n(), w.features), &Device::Cpu).unwrap();
    let ys: Vec<i64> = w.ys.iter().map(|&y| i64::from(y)).collect();
    let ys = Tensor::from_vec(ys, w.n(), &Device::Cpu).unwrap();
    let tensors = [("x".to_string(), xs), ("y".to_string(), ys)];
    candle_core::safetensors::save(&tensors.into_iter().collect(), path).unwrap();
}

/// Milliseconds of each epoch after the first, and the last epoch's loss, from PyTorch.
fn run_torch(python: &Path, w: &Workload, data: &Path) -> (Vec<f64>, f64) {
    let script = Path::new(env!("CARGO_MANIFEST_DIR")).join("bench/train_torch.py");
    let hidden: Vec<String> = w.hidden.iter().map(|h| h.to_string()).collect();
    let out = Command::new(python)
        .arg(script)
        .args(["--data".as_ref(), data.as_os_str()])
        .args(["--hidden", &hidden.join(",")])
        .args(["--batch", &w.batch.to_string()])
        .args(["--lr", &w.lr.to_string()])
        .args(["--epochs", &w.epochs.to_string()])
        .args(["--threads", &rayon::current_num_threads().to_string()])
        .args(["--model", if w.conv { "conv" } else { "mlp" }])
        .output()
        .expect("the Python interpreter starts");
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let json: serde_json::Value = serde_json::from_slice(&out.stdout).expect("the script's JSON");
    let ms: Vec<f64> = json["epoch_ms"]
        .as_array()
        .expect("epoch_ms")
        .iter()
        .skip(1)
        .map(|v| v.as_f64().unwrap())
        .collect();
    (ms, json["loss"].as_f64().unwrap_or(f64::NAN))
}

/// Median, minimum and maximum.
fn spread(xs: &mut [f64]) -> (f64, f64, f64) {
    xs.sort_by(f64::total_cmp);
    let median = match xs.len() {
        0 => f64::NAN,
        n if n % 2 == 1 => xs[n / 2],
        n => (xs[n / 2 - 1] + xs[n / 2]) / 2.0,
    };
    (median, xs.first().copied().unwrap_or(f64::NAN), xs.last().copied().unwrap_or(f64::NAN))
}

fn show((median, min, max): (f64, f64, f64)) -> String {
    if median.is_nan() {
        return "-".into();
    }
    format!("{median:.1} ({min:.1}-{max:.1})")
}

fn main() {
    let mut python: Option<PathBuf> = None;
    let mut rounds = 5;
    let mut only: Option<String> = None;
    let mut plain = true;
    let mut fused = true;
    let mut args = std::env::args().skip(1);
    while let Some(arg) = args.next() {
        match arg.as_str() {
            "--python" => python = args.next().map(PathBuf::from),
            "--rounds" => rounds = args.next().and_then(|r| r.parse().ok()).expect("--rounds N"),
            "--only" => only = args.next(),
            "--no-plain" => plain = false,
            "--plain-only" => fused = false,
            other => panic!("unknown argument `{other}`"),
        }
    }

    let dev = Device::Cpu;
    let dir = tempfile::tempdir().unwrap();
    println!(
        "threads: {} on both sides; ms per epoch, median (min-max)",
        rayon::current_num_threads()
    );
    println!(
        "{:<8}  {:>22}  {:>22}  {:>22}  {:>8}  {:>8}  final loss (r / pt)",
        "workload", "recipe", "candle autograd", "pytorch", "r/pt", "plain/pt"
    );
    let workloads: [(&str, MakeWorkload); 3] =
        [("digits", digits), ("large", large), ("conv", conv)];
    for (name, make) in workloads {
        if only.as_deref().is_some_and(|o| o != name) {
            continue;
        }
        let w = make();
        let data = dir.path().join(format!("{}.safetensors", w.name));
        if python.is_some() {
            write_data(&w, &data);
        }
        let (mut ours, mut candle, mut theirs) = (Vec::new(), Vec::new(), Vec::new());
        let (mut our_loss, mut their_loss) = (f64::NAN, f64::NAN);
        for _ in 0..rounds {
            if fused {
                let (ms, loss) = run_recipe(&w, &dev, false);
                ours.extend(ms);
                our_loss = loss;
            }
            // The convolutional model has no fused path: both runs would be the same.
            if plain && !w.conv {
                candle.extend(run_recipe(&w, &dev, true).0);
            }
            if let Some(python) = &python {
                let (ms, loss) = run_torch(python, &w, &data);
                theirs.extend(ms);
                their_loss = loss;
            }
        }
        let (a, b, c) = (spread(&mut ours), spread(&mut candle), spread(&mut theirs));
        println!(
            "{:<8}  {:>22}  {:>22}  {:>22}  {:>8.2}  {:>8.2}  {:.4} / {:.4}",
            w.name,
            show(a),
            show(b),
            show(c),
            a.0 / c.0,
            b.0 / c.0,
            our_loss,
            their_loss
        );
    }
}

//! Pruning speed: selecting the magnitude threshold for a sparsity target and masking one
//! large f32 tensor, against a plain copy of the same bytes (the physical limit: pruning must
//! at least read every weight and write the tensor back) and against PyTorch's `kthvalue` plus
//! `masked_fill_`, measured in the same run.
//!
//! Two sizes: 4096x4096 (64 MiB) and 16384x16384 (1 GiB). Figures are GB/s of tensor bytes,
//! the best of several repetitions, each on a fresh copy of the same normal weights.
//!
//! ```sh
//! cargo run --release --example bench_prune -- --python /path/to/venv/bin/python
//! ```
//!
//! Without `--python` only `recipe` and the copy are measured; `--sparsity S` (default 0.8)
//! and `--reps N` (default 5) change the work, `--only small|large` the sizes.

use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Instant;

use rayon::prelude::*;
use recipe::check::spec::{PruneAmount, Scope};
use recipe::nn::prune::magnitude;
use recipe::rng::Rng;

/// Normal weights, generated in parallel blocks with a stream per block so that the result
/// does not depend on the thread count.
fn weights(n: usize) -> Vec<f32> {
    let mut xs = vec![0f32; n];
    xs.par_chunks_mut(1 << 20).enumerate().for_each(|(i, block)| {
        let mut rng = Rng::new(3, &format!("bench/prune/{i}"));
        for x in block {
            *x = rng.normal() as f32;
        }
    });
    xs
}

/// The best of `reps` timings in seconds of `work` on `xs`, each after `xs` is reset to
/// `source`.
fn best_of(reps: usize, xs: &mut [f32], source: &[f32], work: impl Fn(&mut [f32])) -> f64 {
    (0..reps)
        .map(|_| {
            xs.copy_from_slice(source);
            let start = Instant::now();
            work(xs);
            start.elapsed().as_secs_f64()
        })
        .fold(f64::INFINITY, f64::min)
}

/// PyTorch's seconds for the same selection and masking on a tensor of `n` weights.
fn torch_seconds(python: &Path, n: usize, sparsity: f64, reps: usize) -> f64 {
    let script = Path::new(env!("CARGO_MANIFEST_DIR")).join("bench/prune_torch.py");
    let out = Command::new(python)
        .arg(script)
        .args(["--numel", &n.to_string()])
        .args(["--sparsity", &sparsity.to_string()])
        .args(["--reps", &reps.to_string()])
        .output()
        .expect("the Python interpreter starts");
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let json: serde_json::Value = serde_json::from_slice(&out.stdout).expect("the script's JSON");
    json["seconds"].as_f64().expect("seconds")
}

fn main() {
    let mut python: Option<PathBuf> = None;
    let mut sparsity = 0.8;
    let mut reps = 5;
    let mut only: Option<String> = None;
    let mut args = std::env::args().skip(1);
    while let Some(arg) = args.next() {
        match arg.as_str() {
            "--python" => python = args.next().map(PathBuf::from),
            "--sparsity" => sparsity = args.next().and_then(|s| s.parse().ok()).expect("S"),
            "--reps" => reps = args.next().and_then(|r| r.parse().ok()).expect("--reps N"),
            "--only" => only = args.next(),
            other => panic!("unknown argument `{other}`"),
        }
    }

    println!(
        "threads: rayon {}; sparsity {sparsity}; best of {reps}",
        rayon::current_num_threads()
    );
    println!("tensor          copy GB/s  recipe GB/s  pytorch GB/s  recipe/copy  recipe/pytorch");
    for (name, side) in [("small", 4096usize), ("large", 16384)] {
        if only.as_deref().is_some_and(|o| o != name) {
            continue;
        }
        let n = side * side;
        let gb = (n * 4) as f64 / 1e9;
        let source = weights(n);
        let mut xs = source.clone();

        let copy = best_of(reps, &mut xs, &source, |xs| {
            xs.copy_from_slice(std::hint::black_box(&source));
        });
        let ours = best_of(reps, &mut xs, &source, |xs| {
            std::hint::black_box(magnitude(
                &mut [xs],
                PruneAmount::Sparsity(sparsity),
                Scope::Layer,
            ));
        });
        let zeros = xs.iter().filter(|w| **w == 0.0).count();
        assert_eq!(zeros, (sparsity * n as f64).round() as usize, "exactly round(s * n) zeros");
        drop(xs);
        drop(source);

        let theirs = python.as_ref().map_or(f64::NAN, |p| torch_seconds(p, n, sparsity, reps));
        println!(
            "{side}x{side:<6}  {:>9.2}  {:>11.2}  {:>12.3}  {:>11.2}  {:>14.1}",
            gb / copy,
            gb / ours,
            gb / theirs,
            copy / ours,
            theirs / ours
        );
    }
}

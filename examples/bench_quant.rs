//! Quantization speed: per-channel symmetric int8 quantization of one large f32 matrix,
//! against a plain copy of the same bytes (the physical limit: quantizing must at least read
//! every weight), against PyTorch's `torch.quantize_per_channel` with its scales computed in
//! the timed region too, and against candle's GGML `q8_0` (blocks of 32 with one scale
//! each, the nearest thing candle has), all measured in the same run.
//!
//! Two sizes: 4096x4096 (64 MiB) and 16384x16384 (1 GiB). Figures are GB/s of input tensor
//! bytes, the best of several repetitions on the same normal weights; `recipe` and candle
//! allocate their output in every repetition, as a caller of either does.
//!
//! ```sh
//! cargo run --release --example bench_quant -- --python /path/to/venv/bin/python
//! ```
//!
//! Without `--python` PyTorch is not measured; `--reps N` (default 5) changes the work,
//! `--only small|large` the sizes.

use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Instant;

use candle_core::quantized::{GgmlDType, QTensor};
use candle_core::{Device, Tensor};
use rayon::prelude::*;
use recipe::check::spec::Granularity;
use recipe::formats::quant::{IntScheme, IntTensor};
use recipe::rng::Rng;

/// Normal weights, generated in parallel blocks with a stream per block so that the result
/// does not depend on the thread count.
fn weights(n: usize) -> Vec<f32> {
    let mut xs = vec![0f32; n];
    xs.par_chunks_mut(1 << 20).enumerate().for_each(|(i, block)| {
        let mut rng = Rng::new(3, &format!("bench/quant/{i}"));
        for x in block {
            *x = rng.normal() as f32;
        }
    });
    xs
}

/// The best of `reps` timings of `work`, in seconds.
fn best_of(reps: usize, mut work: impl FnMut()) -> f64 {
    (0..reps)
        .map(|_| {
            let start = Instant::now();
            work();
            start.elapsed().as_secs_f64()
        })
        .fold(f64::INFINITY, f64::min)
}

/// PyTorch's seconds for the same quantization of a `side` x `side` matrix.
fn torch_seconds(python: &Path, side: usize, reps: usize) -> f64 {
    let script = Path::new(env!("CARGO_MANIFEST_DIR")).join("bench/quant_torch.py");
    let out = Command::new(python)
        .arg(script)
        .args(["--side", &side.to_string()])
        .args(["--reps", &reps.to_string()])
        .output()
        .expect("the Python interpreter starts");
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let json: serde_json::Value = serde_json::from_slice(&out.stdout).expect("the script's JSON");
    json["seconds"].as_f64().expect("seconds")
}

fn main() {
    let mut python: Option<PathBuf> = None;
    let mut reps = 5;
    let mut only: Option<String> = None;
    let mut args = std::env::args().skip(1);
    while let Some(arg) = args.next() {
        match arg.as_str() {
            "--python" => python = args.next().map(PathBuf::from),
            "--reps" => reps = args.next().and_then(|r| r.parse().ok()).expect("--reps N"),
            "--only" => only = args.next(),
            other => panic!("unknown argument `{other}`"),
        }
    }

    let scheme = IntScheme { bits: 8, symmetric: true, granularity: Granularity::PerChannel };
    println!(
        "threads: rayon {}; int8 per-channel symmetric; best of {reps}",
        rayon::current_num_threads()
    );
    println!(
        "tensor          copy GB/s  recipe GB/s  pytorch GB/s  candle q8_0 GB/s  recipe/copy  \
         recipe/pytorch"
    );
    for (name, side) in [("small", 4096usize), ("large", 16384)] {
        if only.as_deref().is_some_and(|o| o != name) {
            continue;
        }
        let n = side * side;
        let gb = (n * 4) as f64 / 1e9;
        let source = weights(n);

        let mut xs = vec![0f32; n];
        let copy = best_of(reps, || xs.copy_from_slice(std::hint::black_box(&source)));
        drop(xs);

        let ours = best_of(reps, || {
            let q = IntTensor::quantize(std::hint::black_box(&source), &[side, side], scheme);
            std::hint::black_box(q.expect("the scheme fits the shape"));
        });
        let q = IntTensor::quantize(&source, &[side, side], scheme).unwrap();
        assert_eq!(q.values.len(), n);
        assert!(q.values.contains(&127) && q.values.contains(&-127), "each row's largest");
        drop(q);

        let tensor = Tensor::from_slice(&source, (side, side), &Device::Cpu).unwrap();
        drop(source);
        let candle = best_of(reps, || {
            let q = QTensor::quantize(std::hint::black_box(&tensor), GgmlDType::Q8_0);
            std::hint::black_box(q.expect("rows are whole blocks of 32"));
        });
        drop(tensor);

        let theirs = python.as_ref().map_or(f64::NAN, |p| torch_seconds(p, side, reps));
        println!(
            "{side}x{side:<6}  {:>9.2}  {:>11.2}  {:>12.3}  {:>16.3}  {:>11.2}  {:>14.1}",
            gb / copy,
            gb / ours,
            gb / theirs,
            gb / candle,
            copy / ours,
            theirs / ours
        );
    }
}

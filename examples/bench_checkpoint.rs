//! Pretrained checkpoints at scale: a generated `bf16` checkpoint of `--gib` GiB (4 by
//! default) in two shards, run through global 50% magnitude pruning and `q8_0` to GGUF by
//! the `recipe` binary, with its wall time and peak resident memory (from `/usr/bin/time
//! -v`) against the time to read the shards once, the physical limit of this work; then the
//! quantizers on the checkpoint's first tensors, in GB/s of `f32` values, against the
//! Python `gguf` package's `q8_0` and `q4_0` and PyTorch's `quantize_per_channel`, with how
//! many dequantized values the two sides disagree on.
//!
//! ```sh
//! cargo build --release
//! cargo run --release --example bench_checkpoint -- --python /path/to/venv/bin/python
//! ```
//!
//! `--dir DIR` keeps the checkpoint (default: a folder under the system's temporary one,
//! reused when present); `--tensors N` sets how many tensors the quantizers run on (8).

use std::io::{Read, Write};
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Instant;

use candle_core::{Device, Tensor};
use rayon::prelude::*;
use recipe::check::{Granularity, QuantScheme};
use recipe::formats::checkpoint::Checkpoint;
use recipe::nn::quant::{Quantized, Scheme};
use recipe::rng::Rng;

const SIDE: usize = 4096;

fn arg(name: &str) -> Option<String> {
    let args: Vec<String> = std::env::args().collect();
    args.iter().position(|a| a == name).and_then(|i| args.get(i + 1).cloned())
}

/// Write a checkpoint of `tensors` matrices of `SIDE` x `SIDE` normal `bf16` weights (scale
/// 0.02, as initialisations have it) in two shards, one norm vector per layer in `f32`, and
/// an index.
fn generate(dir: &Path, tensors: usize) {
    std::fs::create_dir_all(dir).unwrap();
    let mut map = serde_json::Map::new();
    let names: Vec<String> = (0..tensors)
        .map(|i| format!("layers.{:03}.{}.weight", i / 2, ["attn", "mlp"][i % 2]))
        .collect();
    for (s, part) in names.chunks(tensors.div_ceil(2)).enumerate() {
        let file = format!("model-{:05}-of-00002.safetensors", s + 1);
        let mut header = serde_json::Map::new();
        let mut offset = 0u64;
        let mut layout = Vec::new();
        for name in part {
            let len = (SIDE * SIDE * 2) as u64;
            let entry = serde_json::json!({"dtype": "BF16", "shape": [SIDE, SIDE],
                                           "data_offsets": [offset, offset + len]});
            header.insert(name.clone(), entry);
            layout.push((name.clone(), false));
            offset += len;
            let norm = name.replace(".weight", ".norm");
            let len = (SIDE * 4) as u64;
            let entry = serde_json::json!({"dtype": "F32", "shape": [SIDE],
                                           "data_offsets": [offset, offset + len]});
            header.insert(norm.clone(), entry);
            layout.push((norm, true));
            offset += len;
        }
        let mut text = serde_json::Value::Object(header).to_string();
        while !text.len().is_multiple_of(8) {
            text.push(' ');
        }
        let mut out = std::io::BufWriter::new(std::fs::File::create(dir.join(&file)).unwrap());
        out.write_all(&(text.len() as u64).to_le_bytes()).unwrap();
        out.write_all(text.as_bytes()).unwrap();
        // The header lists tensors in name order; safetensors lays data out in offset order,
        // which is the order written here.
        for (name, norm) in layout {
            let bytes: Vec<u8> = if norm {
                (0..SIDE).flat_map(|_| 1f32.to_le_bytes()).collect()
            } else {
                let mut values = vec![0u16; SIDE * SIDE];
                values.par_chunks_mut(1 << 16).enumerate().for_each(|(i, block)| {
                    let mut rng = Rng::new(11, &format!("{name}/{i}"));
                    for v in block {
                        *v = half::bf16::from_f32((rng.normal() * 0.02) as f32).to_bits();
                    }
                });
                values.iter().flat_map(|v| v.to_le_bytes()).collect()
            };
            out.write_all(&bytes).unwrap();
            map.insert(name, serde_json::Value::String(file.clone()));
        }
        out.flush().unwrap();
    }
    let index = serde_json::json!({"metadata": {}, "weight_map": map});
    std::fs::write(dir.join("model.safetensors.index.json"), index.to_string()).unwrap();
}

/// Seconds to read every shard once, in 8 MiB pieces.
fn read_once(files: &[PathBuf]) -> (f64, u64) {
    let start = Instant::now();
    let mut buf = vec![0u8; 8 << 20];
    let mut total = 0u64;
    for f in files {
        let mut file = std::fs::File::open(f).unwrap();
        loop {
            let n = file.read(&mut buf).unwrap();
            if n == 0 {
                break;
            }
            total += n as u64;
        }
    }
    (start.elapsed().as_secs_f64(), total)
}

/// Wall seconds and peak resident KiB of `recipe run` on the pipeline.
fn run_recipe(dir: &Path) -> (f64, u64) {
    let recipe = "load ck { path = \"model.safetensors.index.json\" }\n\
                  prune half { from = ck, sparsity = 50% }\n\
                  quantize q { from = half, scheme = q8_0 }\n\
                  save out { from = q, path = \"out/model.gguf\" }\n";
    std::fs::write(dir.join("bench.opt"), recipe).unwrap();
    let binary = Path::new(env!("CARGO_MANIFEST_DIR")).join("target/release/recipe");
    let start = Instant::now();
    let out = Command::new("/usr/bin/time")
        .arg("-v")
        .arg(&binary)
        .args(["run", "bench.opt", "--no-cache"])
        .current_dir(dir)
        .output()
        .expect("/usr/bin/time and target/release/recipe run");
    let seconds = start.elapsed().as_secs_f64();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "{stderr}");
    let rss = stderr
        .lines()
        .find_map(|l| l.trim().strip_prefix("Maximum resident set size (kbytes): "))
        .and_then(|v| v.parse().ok())
        .unwrap_or(0);
    (seconds, rss)
}

fn main() {
    let gib: usize = arg("--gib").and_then(|v| v.parse().ok()).unwrap_or(4);
    let dir = arg("--dir")
        .map(PathBuf::from)
        .unwrap_or_else(|| std::env::temp_dir().join(format!("recipe-bench-checkpoint-{gib}")));
    // Each matrix is 32 MiB in bf16.
    let tensors = gib * 32;
    if !dir.join("model.safetensors.index.json").exists() {
        println!("generating {gib} GiB of bf16 weights in {}", dir.display());
        generate(&dir, tensors);
    }
    let checkpoint = Checkpoint::open(&dir.join("model.safetensors.index.json")).unwrap();
    let (read_s, bytes) = read_once(&checkpoint.files);
    let gb = bytes as f64 / 1e9;
    println!("checkpoint: {} tensors in {} shards, {gb:.2} GB", checkpoint.tensors.len(), 2);
    println!("read once: {read_s:.2} s ({:.2} GB/s)", gb / read_s);
    let (run_s, rss) = run_recipe(&dir);
    let out_len = std::fs::metadata(dir.join("out/model.gguf")).map(|m| m.len()).unwrap_or(0);
    println!(
        "recipe run (load, global 50% prune, q8_0, save GGUF): {run_s:.2} s, {:.1}x reading \
         once; peak resident {:.0} MiB; output {:.2} GB",
        run_s / read_s,
        rss as f64 / 1024.0,
        out_len as f64 / 1e9
    );

    // The quantizers on the first tensors, as f32 values.
    let n: usize = arg("--tensors").and_then(|v| v.parse().ok()).unwrap_or(8);
    let names: Vec<&String> =
        checkpoint.tensors.keys().filter(|k| k.ends_with(".weight")).take(n).collect();
    let values: Vec<Vec<f32>> = names.iter().map(|k| checkpoint.values(k).unwrap()).collect();
    let f32_gb = (values.len() * SIDE * SIDE * 4) as f64 / 1e9;
    let schemes = [
        ("q8_0", QuantScheme::Q8_0, Granularity::PerChannel),
        ("q4_0", QuantScheme::Q4_0, Granularity::PerChannel),
        ("q4_k", QuantScheme::Q4K, Granularity::PerChannel),
        ("q6_k", QuantScheme::Q6K, Granularity::PerChannel),
        ("int8 per-channel", QuantScheme::Int8, Granularity::PerChannel),
        ("int8 per-tensor", QuantScheme::Int8, Granularity::PerTensor),
        ("int4 per-channel", QuantScheme::Int4, Granularity::PerChannel),
        ("int4 group(32)", QuantScheme::Int4, Granularity::Group(32)),
    ];
    let mut first = Vec::new();
    for (label, scheme, granularity) in schemes {
        let scheme = Scheme { scheme, granularity, symmetric: true };
        let tensors: Vec<Tensor> = values
            .iter()
            .map(|v| Tensor::from_vec(v.clone(), (SIDE, SIDE), &Device::Cpu).unwrap())
            .collect();
        let start = Instant::now();
        let quantized: Vec<Quantized> =
            tensors.iter().map(|t| Quantized::new(t, scheme).unwrap()).collect();
        let s = start.elapsed().as_secs_f64();
        // The relative error ||w - dequant(quant(w))|| / ||w||, worst tensor and overall.
        let (mut diff, mut norm, mut worst) = (0f64, 0f64, 0f64);
        for (q, v) in quantized.iter().zip(&values) {
            let back = q.dequantize(&Device::Cpu).unwrap().flatten_all().unwrap();
            let back = back.to_vec1::<f32>().unwrap();
            let d: f64 = v.iter().zip(&back).map(|(a, b)| f64::from(a - b).powi(2)).sum();
            let n: f64 = v.iter().map(|a| f64::from(*a).powi(2)).sum();
            worst = worst.max((d / n).sqrt());
            (diff, norm) = (diff + d, norm + n);
        }
        println!(
            "recipe {label}: {:.2} GB/s; relative error {:.3}% (worst tensor {:.3}%)",
            f32_gb / s,
            100.0 * (diff / norm).sqrt(),
            100.0 * worst
        );
        if matches!(label, "q8_0" | "q4_0" | "int8 per-channel") {
            let back = quantized[0].dequantize(&Device::Cpu).unwrap();
            first.push((label, back.flatten_all().unwrap().to_vec1::<f32>().unwrap()));
        }
    }
    let Some(python) = arg("--python") else { return };
    // The first tensor and this side's dequantized outputs, for the other side to compare.
    let scratch = dir.join("compare");
    std::fs::create_dir_all(&scratch).unwrap();
    let raw = |v: &[f32]| v.iter().flat_map(|x| x.to_le_bytes()).collect::<Vec<u8>>();
    std::fs::write(scratch.join("input.f32"), raw(&values[0])).unwrap();
    for (label, v) in &first {
        std::fs::write(scratch.join(format!("{}.f32", label.replace(' ', "_"))), raw(v)).unwrap();
    }
    let script = Path::new(env!("CARGO_MANIFEST_DIR")).join("bench/quant_checkpoint.py");
    let out = Command::new(python)
        .arg(script)
        .arg(&dir)
        .args(["--tensors", &n.to_string()])
        .output()
        .expect("the Python side runs");
    print!("{}", String::from_utf8_lossy(&out.stdout));
    eprint!("{}", String::from_utf8_lossy(&out.stderr));
}

//! Pretrained checkpoints loaded without a model: `bf16`, `f16` and `f32` tensors, one file
//! or shards behind an index, pruned and quantized one tensor at a time and saved as
//! safetensors (sharded again) or GGUF. What is not targeted passes through bit for bit.

mod common;

use std::collections::BTreeMap;
use std::path::Path;

use common::cli;
use recipe::check::{PruneAmount, Scope};
use recipe::formats::checkpoint::{to_f32, Checkpoint};
use recipe::formats::safetensors::{to_bytes, Dtype, RawTensor};
use recipe::rng::Rng;

/// Normally distributed values, stored as `dtype`.
fn tensor(rng: &mut Rng, dtype: Dtype, shape: &[usize], scale: f64) -> RawTensor {
    let n: usize = shape.iter().product();
    let values: Vec<f32> = (0..n).map(|_| (rng.normal() * scale) as f32).collect();
    let data = match dtype {
        Dtype::BF16 => values.iter().flat_map(|&v| half::bf16::from_f32(v).to_le_bytes()).collect(),
        Dtype::F16 => values.iter().flat_map(|&v| half::f16::from_f32(v).to_le_bytes()).collect(),
        _ => values.iter().flat_map(|v| v.to_le_bytes()).collect(),
    };
    RawTensor { dtype, shape: shape.to_vec(), data }
}

/// A small transformer-like checkpoint in two shards with an index: `bf16` matrices, an
/// `f16` one, `f32` norms and, with `buffers`, an `i64` buffer.
fn checkpoint(dir: &Path, buffers: bool) -> BTreeMap<String, RawTensor> {
    let mut rng = Rng::new(7, "checkpoint");
    let mut all = BTreeMap::new();
    let mut shards = [BTreeMap::new(), BTreeMap::new()];
    let specs: [(&str, Dtype, &[usize]); 7] = [
        ("embed.weight", Dtype::BF16, &[64, 32]),
        ("layers.0.attn.weight", Dtype::BF16, &[96, 32]),
        ("layers.0.mlp.weight", Dtype::F16, &[128, 32]),
        ("layers.0.norm.weight", Dtype::F32, &[32]),
        ("layers.1.attn.weight", Dtype::BF16, &[96, 32]),
        ("layers.1.mlp.weight", Dtype::BF16, &[128, 64]),
        ("position_ids", Dtype::I64, &[16]),
    ];
    for (i, (name, dtype, shape)) in specs.iter().enumerate() {
        if *dtype == Dtype::I64 && !buffers {
            continue;
        }
        let t = if *dtype == Dtype::I64 {
            let data = (0..16i64).flat_map(|v| v.to_le_bytes()).collect();
            RawTensor { dtype: *dtype, shape: shape.to_vec(), data }
        } else {
            tensor(&mut rng, *dtype, shape, 0.02)
        };
        shards[usize::from(i >= 4)].insert(name.to_string(), t.clone());
        all.insert(name.to_string(), t);
    }
    let mut map = serde_json::Map::new();
    for (i, shard) in shards.iter().enumerate() {
        let file = format!("model-{:05}-of-00002.safetensors", i + 1);
        std::fs::write(dir.join(&file), to_bytes(shard, &BTreeMap::new())).unwrap();
        for name in shard.keys() {
            map.insert(name.clone(), serde_json::Value::String(file.clone()));
        }
    }
    let index = serde_json::json!({ "metadata": {}, "weight_map": map });
    std::fs::write(dir.join("model.safetensors.index.json"), index.to_string()).unwrap();
    all
}

fn run(dir: &Path, recipe: &str) -> String {
    std::fs::write(dir.join("ck.opt"), recipe).unwrap();
    let out = cli(&["run", "ck.opt"], dir);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(0), "{stderr}");
    String::from_utf8_lossy(&out.stdout).into_owned()
}

/// Run `steps` after loading the checkpoint as `ck`.
fn run_steps(dir: &Path, steps: &str) -> String {
    run(dir, &format!("load ck {{ path = \"model.safetensors.index.json\" }}\n{steps}"))
}

/// The targets of [`MATRICES`] among the checkpoint's tensors.
fn targeted(name: &str, t: &RawTensor) -> bool {
    name.starts_with("layers.") && name.ends_with(".weight") && t.shape.len() == 2
}

const MATRICES: &str = r#"["layers.*.weight"]"#;

#[test]
fn global_pruning_of_shards_matches_the_in_memory_rule_and_keeps_the_rest() {
    let dir = tempfile::tempdir().unwrap();
    let original = checkpoint(dir.path(), true);
    run_steps(
        dir.path(),
        &format!(
            r#"
            prune half {{ from = ck, sparsity = 50%, targets = {MATRICES} }}
            save out {{ from = half, path = "out/pruned.safetensors" }}
            "#
        ),
    );
    // Sharded in, sharded out, with an index.
    let index = dir.path().join("out/pruned.safetensors.index.json");
    let saved = Checkpoint::open(&index).unwrap();
    assert!(saved.files.len() >= 2, "{:?}", saved.files);

    // The rule of the in-memory path, on the same values in the same order.
    let targets: Vec<&String> = original.keys().filter(|n| targeted(n, &original[*n])).collect();
    let mut expected: Vec<Vec<f32>> =
        targets.iter().map(|n| to_f32(original[*n].dtype, &original[*n].data).unwrap()).collect();
    let mut slices: Vec<&mut [f32]> = expected.iter_mut().map(|v| v.as_mut_slice()).collect();
    recipe::nn::prune::magnitude(&mut slices, PruneAmount::Sparsity(0.5), Scope::Global);
    for (name, want) in targets.iter().zip(&expected) {
        let got = saved.values(name).unwrap();
        assert_eq!(&got, want, "`{name}` pruned as the in-memory rule prunes");
        assert_eq!(saved.tensors[*name].1.dtype, original[*name].dtype, "dtype kept");
    }
    let zeros: usize = expected.iter().flatten().filter(|v| **v == 0.0).count();
    let total: usize = expected.iter().map(Vec::len).sum();
    // Exactly round(0.5 n) weights go, and the targets hold an even number of them.
    assert_eq!(zeros, total / 2);

    // Everything else, bit for bit.
    for (name, t) in &original {
        if !targets.contains(&name) {
            assert_eq!(saved.bytes(name).unwrap(), t.data, "`{name}` passes through");
            assert_eq!(saved.tensors[name].1.dtype, t.dtype);
        }
    }
}

#[test]
fn int8_per_channel_error_is_small_and_reported() {
    let dir = tempfile::tempdir().unwrap();
    checkpoint(dir.path(), true);
    let stdout = run_steps(
        dir.path(),
        &format!(
            r#"
            quantize q {{
                from = ck, scheme = int8, granularity = per_channel, targets = {MATRICES}
            }}
            eval report {{ models = [q], path = "out/report.json" }}
            "#
        ),
    );
    assert!(stdout.contains("eval report (weights only)"), "{stdout}");
    let report: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(dir.path().join("out/report.json")).unwrap())
            .unwrap();
    let rows = report.as_object().unwrap();
    for name in ["layers.0.attn.weight", "layers.0.mlp.weight", "layers.1.mlp.weight"] {
        let error = rows[&format!("q/{name}")]["error"].as_f64().unwrap();
        // The bound the format promises for normal weights: a per-row step of max|w| / 127
        // puts the error near 0.9% for rows of this length (measured 0.87% at scale).
        assert!(error > 0.0 && error < 0.01, "`{name}`: relative error {error}");
    }
    let whole = rows["q"]["error"].as_f64().unwrap();
    assert!(whole > 0.0 && whole < 0.01, "{whole}");
    // The lock file records the same figures.
    let lock = std::fs::read_to_string(dir.path().join("ck.lock")).unwrap();
    assert!(lock.contains("\"q/layers.0.attn.weight.error\""), "{lock}");
}

#[test]
fn q8_0_to_gguf_keeps_other_tensors_in_their_dtype() {
    let dir = tempfile::tempdir().unwrap();
    // candle's GGUF reader, used here to read the result, knows no integer tensors.
    let original = checkpoint(dir.path(), false);
    run_steps(
        dir.path(),
        &format!(
            r#"
            prune half {{ from = ck, sparsity = 50%, targets = {MATRICES} }}
            quantize q {{ from = half, scheme = q8_0, targets = {MATRICES} }}
            save out {{ from = q, path = "out/model.gguf" }}
            "#
        ),
    );
    let path = dir.path().join("out/model.gguf");
    let mut file = std::fs::File::open(&path).unwrap();
    let content = candle_core::quantized::gguf_file::Content::read(&mut file).unwrap();
    for (name, t) in &original {
        let info = &content.tensor_infos[name];
        let q = content.tensor(&mut file, name, &candle_core::Device::Cpu).unwrap();
        if targeted(name, t) {
            assert_eq!(info.ggml_dtype, candle_core::quantized::GgmlDType::Q8_0, "{name}");
        } else {
            assert_eq!(q.data().unwrap().as_ref(), t.data.as_slice(), "`{name}` bit for bit");
        }
    }
}

#[test]
fn a_non_finite_f16_value_is_refused_with_its_tensor() {
    let dir = tempfile::tempdir().unwrap();
    let mut tensors = BTreeMap::new();
    let mut data: Vec<u8> = (0..8).flat_map(|_| half::f16::from_f32(0.5).to_le_bytes()).collect();
    data[6..8].copy_from_slice(&half::f16::INFINITY.to_le_bytes());
    tensors
        .insert("blocks.3.w".to_string(), RawTensor { dtype: Dtype::F16, shape: vec![2, 4], data });
    std::fs::write(dir.path().join("m.safetensors"), to_bytes(&tensors, &BTreeMap::new())).unwrap();
    std::fs::write(
        dir.path().join("ck.opt"),
        "load ck { path = \"m.safetensors\" }\n\
         save out { from = ck, path = \"out/m.safetensors\" }\n",
    )
    .unwrap();
    let out = cli(&["run", "ck.opt"], dir.path());
    let err = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(1), "{err}");
    assert!(err.contains("tensor `blocks.3.w`") && err.contains("inf"), "{err}");
    assert!(!dir.path().join("out").exists(), "nothing written");
}

/// The `gguf` package, llama.cpp's reader, opens a streamed GGUF file with an integer buffer
/// and finds every untargeted tensor's bytes unchanged, in its own type.
#[test]
fn streamed_gguf_opens_in_the_gguf_package() {
    let Some(python) = common::python_with_gguf() else { return };
    let dir = tempfile::tempdir().unwrap();
    let original = checkpoint(dir.path(), true);
    run_steps(
        dir.path(),
        &format!(
            r#"
            quantize q {{ from = ck, scheme = q8_0, targets = {MATRICES} }}
            save out {{ from = q, path = "out/model.gguf" }}
            "#
        ),
    );
    let script = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/interop/gguf_raw.py");
    let out = std::process::Command::new(python)
        .arg(script)
        .arg(dir.path().join("out/model.gguf"))
        .output()
        .unwrap();
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let seen: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    for (name, t) in &original {
        let entry = &seen[name];
        let want = match (targeted(name, t), t.dtype) {
            (true, _) => "Q8_0",
            (false, Dtype::BF16) => "BF16",
            (false, Dtype::F32) => "F32",
            (false, Dtype::I64) => "I64",
            (false, other) => panic!("no {other} in the checkpoint"),
        };
        assert_eq!(entry["type"], want, "`{name}`");
        assert_eq!(entry["shape"], serde_json::json!(t.shape), "`{name}`");
        if !targeted(name, t) {
            let hex: String = t.data.iter().map(|b| format!("{b:02x}")).collect();
            assert_eq!(entry["hex"], hex, "`{name}` bit for bit");
        }
    }
}

#[test]
fn check_lists_the_tensors_each_step_works_on() {
    let dir = tempfile::tempdir().unwrap();
    checkpoint(dir.path(), true);
    let recipe = format!(
        r#"
        load ck {{ path = "model.safetensors.index.json" }}
        prune half {{ from = ck, sparsity = 50%, targets = {MATRICES}, ignore = ["*.mlp.*"] }}
        quantize q {{ from = half, scheme = int8 }}
        "#
    );
    std::fs::write(dir.path().join("ck.opt"), recipe).unwrap();
    let out = cli(&["check", "ck.opt"], dir.path());
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert_eq!(out.status.code(), Some(0), "{}", String::from_utf8_lossy(&out.stderr));
    insta::assert_snapshot!(stdout);
}

/// `shard_size` splits a safetensors output, whether the weights came from a checkpoint or
/// were trained here; the shards and their index read back as the whole.
#[test]
fn shard_size_splits_the_output() {
    let dir = tempfile::tempdir().unwrap();
    let original = checkpoint(dir.path(), true);
    run_steps(
        dir.path(),
        r#"
        save out { from = ck, path = "out/m.safetensors", shard_size = "20KB" }
        "#,
    );
    let saved = Checkpoint::open(&dir.path().join("out/m.safetensors.index.json")).unwrap();
    assert!(saved.files.len() >= 3, "{:?}", saved.files);
    for (i, f) in saved.files.iter().enumerate() {
        let name = format!("m-{:05}-of-{:05}.safetensors", i + 1, saved.files.len());
        assert_eq!(f.file_name().unwrap().to_str(), Some(name.as_str()));
    }
    for (name, t) in &original {
        assert_eq!(saved.bytes(name).unwrap(), t.data, "`{name}`");
    }

    let trained = tempfile::tempdir().unwrap();
    run(
        trained.path(),
        r#"
        data digits { source = builtin("digits") }
        model net { input = digits, layers = [linear(64), relu, linear(10)] }
        train base { model = net, data = digits, epochs = 1 }
        save out { from = base, path = "out/net.safetensors", shard_size = 10_000 }
        "#,
    );
    let index = trained.path().join("out/net.safetensors.index.json");
    assert_eq!(Checkpoint::open(&index).unwrap().tensors.len(), 4);

    std::fs::write(
        dir.path().join("g.opt"),
        "load ck { path = \"model.safetensors.index.json\" }\n\
         quantize q { from = ck, scheme = q8_0, targets = [\"layers.*\"] }\n\
         save out { from = q, path = \"out/m.gguf\", shard_size = 1000 }\n",
    )
    .unwrap();
    let out = cli(&["check", "g.opt"], dir.path());
    assert_eq!(out.status.code(), Some(1));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("`shard_size` does not apply to a GGUF file"), "{err}");
}

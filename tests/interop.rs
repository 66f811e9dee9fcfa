//! Files written by `recipe` are read by other tools: a saved MLP runs in
//! Python with numpy and the `safetensors` package alone, and predicts what
//! `recipe` predicts.
//!
//! The check needs a Python with numpy and safetensors, named by
//! `RECIPE_PYTHON` (default `python3`). `.ci/run` installs one and sets
//! `RECIPE_REQUIRE_PYTHON=1`, which turns a missing Python into a failure;
//! without it the test says what it skipped, so `cargo test` works on a
//! machine with only the Rust toolchain.

mod common;

use std::path::Path;
use std::process::Command;

use recipe::exec::Artifact;

fn python() -> Option<String> {
    common::python_with("numpy, safetensors")
}

#[test]
fn numpy_runs_a_saved_mlp_and_agrees() {
    let Some(python) = python() else { return };
    let path = Path::new(env!("CARGO_MANIFEST_DIR")).join("recipes/digits.opt");
    let ran = common::run_in_copy(&path, &[]);
    let dir = tempfile::tempdir().unwrap();
    let model = dir.path().join("model.safetensors");
    std::fs::write(&model, &ran.files["out/digits.safetensors"]).unwrap();

    // The test split as `recipe` scaled it, and `recipe`'s own outputs.
    let Artifact::Dataset(data) = &ran.report.outputs["digits"] else { panic!("no dataset") };
    let Artifact::Weights(weights) = &ran.report.outputs["base"] else { panic!("no weights") };
    let (xs, _) = data.test.tensors(&data.features, &candle_core::Device::Cpu).unwrap();
    let arch = weights.arch.as_ref().unwrap();
    let ours = recipe::nn::forward(arch, &weights.tensors, &xs, None).unwrap();
    let ours: Vec<Vec<f32>> = ours.to_vec2().unwrap();

    let inputs = dir.path().join("inputs.f32");
    let bytes: Vec<u8> = data.test.xs.iter().flat_map(|x| x.to_le_bytes()).collect();
    std::fs::write(&inputs, bytes).unwrap();
    let out = dir.path().join("outputs.f32");
    let script = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/interop/forward.py");
    let status = Command::new(&python)
        .arg(&script)
        .arg(&model)
        .arg(&inputs)
        .arg(data.test.n.to_string())
        .arg(data.features.iter().product::<usize>().to_string())
        .arg(&out)
        .status()
        .expect("python runs");
    assert!(status.success(), "the numpy forward pass failed");

    let theirs: Vec<f32> = std::fs::read(&out)
        .unwrap()
        .chunks_exact(4)
        .map(|c| f32::from_le_bytes([c[0], c[1], c[2], c[3]]))
        .collect();
    let classes = ours[0].len();
    assert_eq!(theirs.len(), ours.len() * classes);
    let argmax = |row: &[f32]| {
        row.iter().enumerate().max_by(|a, b| a.1.total_cmp(b.1)).map(|(i, _)| i).unwrap()
    };
    for (i, row) in ours.iter().enumerate() {
        let theirs = &theirs[i * classes..(i + 1) * classes];
        // Same f32 weights and inputs; only the order of additions in the
        // matrix products differs, worth a few ulps on outputs of size ~10.
        for (a, b) in row.iter().zip(theirs) {
            assert!((a - b).abs() <= 1e-4 * (1.0 + a.abs()), "sample {i}: {a} vs {b}");
        }
        assert_eq!(argmax(row), argmax(theirs), "sample {i} is predicted alike");
    }
    assert_eq!(classes, 10, "one score per digit");
}

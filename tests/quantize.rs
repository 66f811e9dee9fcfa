//! Quantization as users rely on it: the accuracy and bytes it costs, files that load back and
//! that llama.cpp's own reader opens with the same values, a tolerance that keeps sensitive
//! layers in float, and zeros of a pruned model that stay zero.

mod common;

use std::path::Path;
use std::process::Command;

use common::{metadata, read_tensors, run_in_copy};
use recipe::exec::Artifact;
use recipe::nn::quant::Quantized;

fn recipe_path(name: &str) -> std::path::PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("recipes").join(name)
}

fn report(ran: &common::Ran, path: &str) -> serde_json::Value {
    serde_json::from_slice(&ran.files[path]).expect("the report is JSON")
}

/// The figures of `recipes/digits_quantized.opt`, checked against what the recipe promises:
/// int8 per channel within half a point of float in under 30% of the bytes; int4 in groups
/// of 32 with one epoch of retraining within 2 points; the tolerance of 1% held on the test
/// split too; q8_0 close to float.
#[test]
fn quantized_models_keep_their_accuracy_in_fewer_bytes() {
    let ran = run_in_copy(&recipe_path("digits_quantized.opt"), &[]);
    let json = report(&ran, "out/digits-quantized-report.json");
    let acc = |m: &str| json[m]["accuracy"].as_f64().unwrap();
    let size = |m: &str| json[m]["size"].as_f64().unwrap();
    let base = acc("base");
    assert!(acc("channel8") >= base - 0.005, "int8: {} against {base}", acc("channel8"));
    assert!(size("channel8") <= 0.30 * size("base"), "int8 bytes {}", size("channel8"));
    assert!(acc("group4") >= base - 0.02, "int4: {} against {base}", acc("group4"));
    assert!(size("group4") <= 0.25 * size("base"), "int4 bytes {}", size("group4"));
    assert!(acc("careful4") >= base * 0.99, "tolerance: {} against {base}", acc("careful4"));
    assert!(acc("ggml8") >= base - 0.01, "q8_0: {} against {base}", acc("ggml8"));
    assert!(size("ggml8") <= 0.35 * size("base"), "q8_0 bytes {}", size("ggml8"));

    // The saved int8 file holds I8 values, F32 scales, and the scheme in its metadata.
    let saved = read_tensors(&ran.files["out/digits-int8.safetensors"]);
    assert_eq!(saved["0.weight.qweight"].0, "I8");
    assert_eq!(saved["0.weight.scale"].0, "F32");
    assert_eq!(saved["0.weight.scale"].1, vec![256]);
    assert!(!saved.contains_key("0.weight"));
    assert_eq!(saved["0.bias"].0, "F32", "biases stay float");
    let meta = metadata(&ran.files["out/digits-int8.safetensors"]);
    assert!(meta["quantization"].contains("\"per_channel\""), "{}", meta["quantization"]);
}

/// The tolerance names its decisions, and the layers it keeps in float are really float.
#[test]
fn the_tolerance_reports_its_choices() {
    // A 0% tolerance on int4 per tensor cannot keep every layer quantized.
    let ran = run_in_copy(&recipe_path("digits_quantized.opt"), &["careful4.tolerance=0%".into()]);
    let (_, notes) = ran.report.notes.iter().find(|(step, _)| step == "careful4").expect("notes");
    let text = notes.join("\n");
    assert!(text.contains("float accuracy"), "{text}");
    assert!(text.contains("`0.weight`") && text.contains("`2.weight`"), "{text}");
    let Artifact::Weights(w) = &ran.report.outputs["careful4"] else { panic!("no weights") };
    let kept = w.metrics["kept_in_float"] as usize;
    assert_eq!(w.quant.len() + kept, 2, "every target is decided");
    if kept > 0 {
        assert!(text.contains("kept in float:"), "{text}");
    }
    assert!(w.metrics["val_accuracy"] >= w.metrics["float_accuracy"] - 1e-12);
}

/// A saved integer model loads back to the same values and scores the same.
#[test]
fn integer_files_load_back_exactly() {
    let ran = run_in_copy(&recipe_path("digits_quantized.opt"), &[]);
    let dir = tempfile::tempdir().unwrap();
    std::fs::create_dir_all(dir.path().join("out")).unwrap();
    std::fs::write(
        dir.path().join("out/in.safetensors"),
        &ran.files["out/digits-int8.safetensors"],
    )
    .unwrap();
    let text = r#"
        recipe digits_quantized { seed = 42 }
        data digits { source = builtin("digits"), split = [0.7, 0.15, 0.15], scale = standard }
        model net { input = digits, layers = [linear(256), relu, linear(10)] }
        load int8 { path = "out/in.safetensors", model = net }
        eval again { models = [int8], data = digits.test, metrics = [accuracy, size],
                     path = "out/again.json" }
        save copy { from = int8, path = "out/copy.safetensors" }
    "#;
    std::fs::write(dir.path().join("reload.opt"), text).unwrap();
    let recipe = recipe::Recipe::read(&dir.path().join("reload.opt")).unwrap();
    let (_, report) = recipe
        .run(&[], None, &common::options(&recipe))
        .unwrap_or_else(|e| panic!("{}", e.render(80)));

    let Artifact::Weights(loaded) = &report.outputs["int8"] else { panic!("no weights") };
    let Artifact::Weights(made) = &ran.report.outputs["channel8"] else { panic!("no weights") };
    for (name, t) in &made.tensors {
        let a = t.flatten_all().unwrap().to_vec1::<f32>().unwrap();
        let b = loaded.tensors[name].flatten_all().unwrap().to_vec1::<f32>().unwrap();
        assert!(a == b, "`{name}` loads back as it was made");
    }
    let copy = std::fs::read(dir.path().join("out/copy.safetensors")).unwrap();
    assert_eq!(
        read_tensors(&copy),
        read_tensors(&ran.files["out/digits-int8.safetensors"]),
        "a load and a save write the same integers"
    );
    let again: serde_json::Value =
        serde_json::from_slice(&std::fs::read(dir.path().join("out/again.json")).unwrap()).unwrap();
    let before = report_value(&ran, "channel8", "accuracy");
    assert_eq!(again["int8"]["accuracy"].as_f64().unwrap(), before);
    assert_eq!(again["int8"]["size"].as_f64().unwrap(), report_value(&ran, "channel8", "size"));

    // `recipe inspect` names the scheme of every quantized tensor.
    let inspected = recipe::formats::inspect::inspect(
        &dir.path().join("out/copy.safetensors"),
        Path::new("copy.safetensors"),
    )
    .unwrap();
    assert!(inspected.contains("int8 per_channel symmetric"), "{inspected}");
}

fn report_value(ran: &common::Ran, model: &str, metric: &str) -> f64 {
    report(ran, "out/digits-quantized-report.json")[model][metric].as_f64().unwrap()
}

/// Quantizing a pruned model keeps every pruned weight exactly zero, with and without
/// quantization-aware retraining.
#[test]
fn quantizing_a_pruned_model_keeps_its_zeros() {
    let text = r#"
        recipe pruned_then_quantized { seed = 3 }
        data digits { source = builtin("digits"), scale = standard }
        model net { input = digits, layers = [linear(64), relu, linear(10)] }
        train base { model = net, data = digits, optimizer = sgd(lr = 0.1, momentum = 0.9),
                     epochs = 5 }
        prune sparse { from = base, sparsity = 70% }
        quantize int8 { from = sparse, scheme = int8, symmetric = false }
        quantize int4 { from = sparse, scheme = int4, granularity = group(16),
                        finetune = train(epochs = 1, data = digits) }
        quantize q4 { from = sparse, scheme = q4_0 }
        quantize q6 { from = sparse, scheme = q6_k, targets = ["2.weight"] }
    "#;
    let dir = tempfile::tempdir().unwrap();
    // q6_k needs rows of 256: the second layer's rows are 64 long, so widen the model.
    let text = text.replace("linear(64)", "linear(256)");
    std::fs::write(dir.path().join("pq.opt"), text).unwrap();
    let recipe = recipe::Recipe::read(&dir.path().join("pq.opt")).unwrap();
    let (_, report) = recipe
        .run(&[], None, &common::options(&recipe))
        .unwrap_or_else(|e| panic!("{}", e.render(80)));
    let Artifact::Weights(sparse) = &report.outputs["sparse"] else { panic!("no weights") };
    for step in ["int8", "int4", "q4", "q6"] {
        let Artifact::Weights(q) = &report.outputs[step] else { panic!("no weights") };
        assert!(!q.quant.is_empty(), "{step} quantized something");
        for name in q.quant.keys() {
            let before = sparse.tensors[name].flatten_all().unwrap().to_vec1::<f32>().unwrap();
            let after = q.tensors[name].flatten_all().unwrap().to_vec1::<f32>().unwrap();
            let revived = before.iter().zip(&after).filter(|(b, a)| **b == 0.0 && **a != 0.0);
            assert_eq!(revived.count(), 0, "{step}: `{name}` keeps its zeros");
        }
    }
}

/// Every GGML format `recipe` writes opens in the `gguf` package, llama.cpp's reader, and its
/// dequantization equals ours within 1e-6 for every tensor.
#[test]
fn gguf_files_open_in_llama_cpp_reader_with_the_same_values() {
    let text = r#"
        recipe ggml { seed = 5 }
        data digits { source = builtin("digits"), scale = standard }
        model net { input = digits, layers = [linear(256), relu, linear(256), relu, linear(10)] }
        train base { model = net, data = digits, epochs = 2 }
        quantize q8 { from = base, scheme = q8_0 }
        quantize q4 { from = base, scheme = q4_0 }
        quantize q4k { from = base, scheme = q4_k, targets = ["2.weight", "4.weight"] }
        quantize q6k { from = base, scheme = q6_k, targets = ["2.weight", "4.weight"] }
        save q8file { from = q8, path = "out/q8_0.gguf" }
        save q4file { from = q4, path = "out/q4_0.gguf" }
        save q4kfile { from = q4k, path = "out/q4_k.gguf" }
        save q6kfile { from = q6k, path = "out/q6_k.gguf" }
    "#;
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(dir.path().join("ggml.opt"), text).unwrap();
    let recipe = recipe::Recipe::read(&dir.path().join("ggml.opt")).unwrap();
    let (_, report) = recipe
        .run(&[], None, &common::options(&recipe))
        .unwrap_or_else(|e| panic!("{}", e.render(80)));

    // Our side: the files read back through candle equal the step's own weights.
    for (step, file) in [("q8", "q8_0"), ("q4", "q4_0"), ("q4k", "q4_k"), ("q6k", "q6_k")] {
        let Artifact::Weights(w) = &report.outputs[step] else { panic!("no weights") };
        assert!(w.quant.values().all(|q| matches!(q, Quantized::Ggml { .. })));
        let path = dir.path().join(format!("out/{file}.gguf"));
        let (tensors, meta) = recipe::formats::gguf::read(&path, &candle_core::Device::Cpu)
            .unwrap_or_else(|e| panic!("{e}"));
        assert_eq!(meta["general.name"], "ggml");
        assert!(meta.contains_key("recipe.recipe_hash"));
        assert_eq!(tensors.len(), w.tensors.len(), "{file}: every tensor is in the file");
        for (name, t) in &w.tensors {
            let a = t.flatten_all().unwrap().to_vec1::<f32>().unwrap();
            let b = tensors[name].1.flatten_all().unwrap().to_vec1::<f32>().unwrap();
            assert!(a == b, "{file}: `{name}` reads back as the step made it");
        }
    }

    // Their side: llama.cpp's Python reader dequantizes to the same values.
    let Some(python) = common::python_with_gguf() else { return };
    let script = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/interop/gguf_check.py");
    for file in ["q8_0", "q4_0", "q4_k", "q6_k"] {
        let path = dir.path().join(format!("out/{file}.gguf"));
        let (tensors, _) = recipe::formats::gguf::read(&path, &candle_core::Device::Cpu).unwrap();
        // The values as the file stores them: rows of the last dimension.
        let ours: std::collections::HashMap<String, candle_core::Tensor> = tensors
            .into_iter()
            .map(|(name, (q, _))| (name, q.dequantize(&candle_core::Device::Cpu).unwrap()))
            .collect();
        let ours_path = dir.path().join(format!("{file}-ours.safetensors"));
        candle_core::safetensors::save(&ours, &ours_path).unwrap();
        let report_path = dir.path().join(format!("{file}-report.json"));
        let out = Command::new(&python)
            .arg(&script)
            .arg(&path)
            .arg(&ours_path)
            .arg(&report_path)
            .output()
            .expect("python runs");
        assert!(out.status.success(), "{file}: {}", String::from_utf8_lossy(&out.stderr));
        let figures = std::fs::read_to_string(&report_path).unwrap();
        assert!(figures.contains(&file.to_uppercase()), "{figures}");
    }
}

//! Pruning as users rely on it: the accuracy it costs, the exact sparsity
//! it reaches, zeros that stay zero through retraining, N:M groups, channel
//! pruning that really shrinks the model, and a sparse file format that is
//! small and exact.

mod common;

use std::path::Path;

use common::{metadata, read_tensors, run_in_copy};
use recipe::exec::Artifact;

fn report(ran: &common::Ran, path: &str) -> serde_json::Value {
    serde_json::from_slice(&ran.files[path]).expect("the report is JSON")
}

fn recipe_path(name: &str) -> std::path::PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("recipes").join(name)
}

/// Global magnitude pruning of the digits MLP to 80% and 90%, each in two
/// rounds with retraining: within 1.5 and 3 points of the dense model.
#[test]
fn gradual_pruning_keeps_the_accuracy() {
    let ran = run_in_copy(&recipe_path("digits_pruned.opt"), &[]);
    let json = report(&ran, "out/digits-pruned-report.json");
    let acc = |m: &str| json[m]["accuracy"].as_f64().unwrap();
    let (base, s80, s90) = (acc("base"), acc("sparse80"), acc("sparse90"));
    assert!(s80 >= base - 0.015, "80%: {s80} against {base}");
    assert!(s90 >= base - 0.03, "90%: {s90} against {base}");

    // Exactly round(s * n) zeros among the 64*256 + 256*10 weights.
    let n = 64.0 * 256.0 + 256.0 * 10.0;
    for (block, s) in [("sparse80", 0.8f64), ("sparse90", 0.9)] {
        let zeros = json[block]["sparsity"].as_f64().unwrap() * n;
        assert_eq!(zeros.round(), (s * n).round(), "{block}");
        assert!((zeros - zeros.round()).abs() < 1e-6, "{block}: {zeros}");
    }
}

/// Every tensor a prune step touched keeps its zeros after the last round
/// of retraining, and untouched tensors (biases) are not pruned.
#[test]
fn zeros_stay_zero_through_retraining() {
    let ran = run_in_copy(
        &recipe_path("digits_pruned.opt"),
        &["sparse80.steps=3".into(), "sparse80.finetune.epochs=2".into()],
    );
    let Artifact::Weights(w) = &ran.report.outputs["sparse80"] else { panic!("no weights") };
    let (mut zeros, mut total) = (0, 0);
    for (name, t) in &w.tensors {
        let values = t.flatten_all().unwrap().to_vec1::<f32>().unwrap();
        let z = values.iter().filter(|v| **v == 0.0).count();
        if name.ends_with(".bias") {
            assert_eq!(z, 0, "`{name}` is not pruned");
        } else {
            zeros += z;
            total += values.len();
        }
    }
    // The last round prunes to exactly round(80% of n); any weight revived
    // by the retraining after it would lower the count.
    assert_eq!(zeros, (0.8 * total as f64).round() as usize);
}

/// A 90%-sparse model saved in the sparse format takes at most a quarter
/// of its dense bytes, and loads back bit for bit.
#[test]
fn sparse_files_are_small_and_exact() {
    let dense = run_in_copy(&recipe_path("digits_pruned.opt"), &["out.format=dense".into()]);
    let sparse = run_in_copy(&recipe_path("digits_pruned.opt"), &[]);
    let (d, s) = (
        &dense.files["out/digits-sparse90.safetensors"],
        &sparse.files["out/digits-sparse90.safetensors"],
    );
    let big = |bytes: &[u8]| -> usize {
        read_tensors(bytes)
            .iter()
            .filter(|(k, _)| k.starts_with("0.weight"))
            .map(|(_, t)| t.2.len())
            .sum()
    };
    assert!(big(s) * 4 <= big(d), "the sparse 0.weight takes {} of {} bytes", big(s), big(d));
    assert!(s.len() * 4 <= d.len() + 4096, "the whole file shrinks too");
    assert!(metadata(s).contains_key("sparse"));

    // Load the sparse file and save it dense: the tensors equal the dense
    // run's exactly.
    let dir = tempfile::tempdir().unwrap();
    std::fs::create_dir_all(dir.path().join("out")).unwrap();
    std::fs::write(dir.path().join("out/in.safetensors"), s).unwrap();
    let text = r#"
        data digits { source = builtin("digits"), scale = standard }
        model net { input = digits, layers = [linear(256), relu, linear(10)] }
        load sparse { path = "out/in.safetensors", model = net }
        save out { from = sparse, path = "out/dense.safetensors" }
    "#;
    std::fs::write(dir.path().join("reload.opt"), text).unwrap();
    let recipe = recipe::Recipe::read(&dir.path().join("reload.opt")).unwrap();
    recipe.run(&[], None, &common::options(&recipe)).unwrap_or_else(|e| panic!("{}", e.render(80)));
    let again = std::fs::read(dir.path().join("out/dense.safetensors")).unwrap();
    assert!(read_tensors(&again) == read_tensors(d), "a load and a dense save change nothing");
}

#[test]
fn n_of_m_leaves_at_most_n_in_every_group() {
    // The 80% block of the pruning recipe, turned into 2:4 pruning.
    let path = recipe_path("digits_pruned.opt");
    let text = std::fs::read_to_string(&path)
        .unwrap()
        .replace("  sparsity = 80%\n  scope    = global\n", "  pattern  = n_of_m(2, 4)\n");
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("nm.opt");
    std::fs::write(&file, text).unwrap();
    let ran = run_in_copy(&file, &[]);
    let Artifact::Weights(w) = &ran.report.outputs["sparse80"] else { panic!("no weights") };
    for name in ["0.weight", "2.weight"] {
        let values = w.tensors[name].flatten_all().unwrap().to_vec1::<f32>().unwrap();
        for group in values.chunks(4) {
            assert!(group.iter().filter(|v| **v != 0.0).count() <= 2, "{name}: {group:?}");
        }
        let zeros = values.iter().filter(|v| **v == 0.0).count();
        assert_eq!(zeros * 2, values.len(), "{name} is exactly half zeros");
    }
}

/// Channel pruning of half the hidden units: the file is about half the
/// size, the layer is really narrower, and retraining keeps the accuracy
/// within 2 points.
#[test]
fn channel_pruning_makes_a_smaller_dense_model() {
    let ran = run_in_copy(&recipe_path("digits_channels.opt"), &[]);
    let Artifact::Metrics(table) = &ran.report.outputs["report"] else { panic!("no table") };
    let row = |m: &str| &table.rows.iter().find(|(n, _)| n == m).unwrap().1;
    use recipe::check::Metric;
    let (base, slim) = (row("base"), row("slim"));
    let ratio = slim[&Metric::Size] / base[&Metric::Size];
    assert!((0.45..0.55).contains(&ratio), "size ratio {ratio}");
    assert!(slim[&Metric::Accuracy] >= base[&Metric::Accuracy] - 0.02);

    let saved = &ran.files["out/digits-slim.safetensors"];
    let tensors = read_tensors(saved);
    assert_eq!(tensors["0.weight"].1, vec![1024, 64]);
    assert_eq!(tensors["2.weight"].1, vec![10, 1024]);
    // The new architecture is recorded, so `load` rebuilds it.
    let arch = &metadata(saved)["architecture"];
    assert!(arch.contains("\"Linear\":{\"out\":1024}"), "{arch}");
}

/// Masks equal PyTorch's: `prune.global_unstructured` with `L1Unstructured` for
/// `scope = global`, and `prune.l1_unstructured` per tensor for `scope = layer`, at 50%, 80%
/// and 90% of the same weights. The fixture and the script that made it are in
/// `tests/fixtures/torch_prune/`; normal weights have no ties, so the masks must be equal
/// entry for entry.
#[test]
fn masks_equal_pytorch_pruning() {
    let fixture = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/torch_prune");
    let dir = tempfile::tempdir().unwrap();
    std::fs::copy(fixture.join("weights.safetensors"), dir.path().join("weights.safetensors"))
        .unwrap();
    let mut text = String::from(
        r#"
        data digits { source = builtin("digits") }
        model net { input = digits, layers = [linear(128), relu, linear(10)] }
        load torch { path = "weights.safetensors", model = net }
        "#,
    );
    for amount in [50, 80, 90] {
        for scope in ["global", "layer"] {
            text.push_str(&format!(
                "prune {scope}{amount} {{ from = torch, sparsity = {amount}%, scope = {scope} }}\n"
            ));
        }
    }
    std::fs::write(dir.path().join("masks.opt"), text).unwrap();
    let recipe = recipe::Recipe::read(&dir.path().join("masks.opt")).unwrap();
    let (_, report) = recipe
        .run(&[], None, &common::options(&recipe))
        .unwrap_or_else(|e| panic!("{}", e.render(80)));

    let masks = read_tensors(&std::fs::read(fixture.join("masks.safetensors")).unwrap());
    assert_eq!(masks.len(), 12, "two weights, three amounts, two scopes");
    for (key, (dtype, shape, torch_mask)) in &masks {
        assert_eq!(dtype, "U8");
        let (block, tensor) = key.split_once('.').unwrap();
        let Artifact::Weights(w) = &report.outputs[block] else { panic!("no weights") };
        let t = &w.tensors[tensor];
        assert_eq!(t.dims(), shape.as_slice(), "{key}");
        let ours: Vec<u8> = t
            .flatten_all()
            .unwrap()
            .to_vec1::<f32>()
            .unwrap()
            .iter()
            .map(|&v| u8::from(v != 0.0))
            .collect();
        let differ = ours.iter().zip(torch_mask).filter(|(a, b)| a != b).count();
        assert_eq!(
            differ,
            0,
            "{key}: {differ} of {} mask entries differ from PyTorch's",
            ours.len()
        );
    }
}

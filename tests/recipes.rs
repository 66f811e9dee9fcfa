//! The recipes in `recipes/` are what users copy, so each is held to what
//! it promises: its AST, checked form and plan are snapshotted, it runs to
//! the accuracy it is there to show, and two runs write identical files.

mod common;

use std::collections::BTreeMap;
use std::path::Path;

use common::{metadata, read_tensors, run_in_copy};
use recipe::Recipe;

fn read(path: &Path) -> Recipe {
    // Paths relative to the package keep snapshots free of the checkout's
    // location.
    let name = path.file_name().expect("a recipe has a file name");
    let shown = Path::new("recipes").join(name);
    Recipe::from_bytes(&shown, &std::fs::read(path).expect("the recipe is readable"))
}

#[test]
fn recipe_asts() {
    insta::glob!("../recipes", "*.opt", |path| {
        let ast = read(path).parse().unwrap_or_else(|e| panic!("{}", e.render(80)));
        insta::assert_json_snapshot!(ast);
    });
}

#[test]
fn recipe_checked_forms() {
    insta::glob!("../recipes", "*.opt", |path| {
        let (_, checked) = read(path).check(&[]).unwrap_or_else(|e| panic!("{}", e.render(80)));
        insta::assert_json_snapshot!(checked);
    });
}

#[test]
fn recipe_plans() {
    insta::glob!("../recipes", "*.opt", |path| {
        let compiled = read(path).compile(&[]).unwrap_or_else(|e| panic!("{}", e.render(80)));
        let fresh = recipe::graph::CachedSteps::new();
        insta::assert_snapshot!(recipe::graph::render_plan(
            &compiled.checked,
            &compiled.graph,
            &fresh
        ));
    });
}

/// Runs every recipe twice in fresh folders and compares every file the
/// runs wrote, byte for byte. Latency is the one metric that cannot repeat,
/// so recipes in `recipes/` do not write it to files.
#[test]
fn every_recipe_runs_and_repeats_byte_for_byte() {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("recipes");
    let mut names: Vec<_> = std::fs::read_dir(&dir)
        .expect("recipes/ is readable")
        .filter_map(|e| e.ok().map(|e| e.path()))
        .filter(|p| p.extension().is_some_and(|e| e == "opt"))
        .collect();
    names.sort();
    assert!(names.len() >= 3, "recipes/ holds the example recipes");
    for path in names {
        let first = run_in_copy(&path, &[]);
        let second = run_in_copy(&path, &[]);
        assert!(!first.files.is_empty(), "{} writes files", path.display());
        assert_eq!(
            first.files.keys().collect::<Vec<_>>(),
            second.files.keys().collect::<Vec<_>>(),
            "{}: both runs write the same files",
            path.display()
        );
        for (name, bytes) in &first.files {
            assert!(
                bytes == &second.files[name],
                "{}: `{name}` differs between runs",
                path.display()
            );
        }
    }
}

fn test_accuracy(report: &common::Ran, eval: &str, model: &str) -> f64 {
    let json: serde_json::Value =
        serde_json::from_slice(&report.files[eval]).expect("the report is JSON");
    json[model]["accuracy"].as_f64().expect("the report has an accuracy")
}

#[test]
fn digits_mlp_reaches_95_percent() {
    let ran = run_in_copy(&Path::new(env!("CARGO_MANIFEST_DIR")).join("recipes/digits.opt"), &[]);
    let acc = test_accuracy(&ran, "out/digits-report.json", "base");
    assert!(acc >= 0.95, "test accuracy {acc}");
}

#[test]
fn digits_cnn_reaches_97_percent() {
    let path = Path::new(env!("CARGO_MANIFEST_DIR")).join("recipes/digits_cnn.opt");
    let ran = run_in_copy(&path, &[]);
    let acc = test_accuracy(&ran, "out/digits-cnn-report.json", "base");
    assert!(acc >= 0.97, "test accuracy {acc}");
}

/// Gradient-free training must improve on its starting point: the saved
/// metrics hold the scores of the initial weights beside the final ones.
#[test]
fn random_search_improves_on_its_initial_weights() {
    let path = Path::new(env!("CARGO_MANIFEST_DIR")).join("recipes/digits_random_search.opt");
    let ran = run_in_copy(&path, &[]);
    let meta = metadata(&ran.files["out/digits-random-search.safetensors"]);
    let metrics: BTreeMap<String, f64> = serde_json::from_str(&meta["metrics"]).unwrap();
    assert!(
        metrics["train_loss"] < metrics["initial_train_loss"],
        "training loss fell: {metrics:?}"
    );
    assert!(
        metrics["val_accuracy"] > metrics["initial_val_accuracy"] + 0.3,
        "validation accuracy rose by more than 30 points: {metrics:?}"
    );
}

/// A saved model loads back through `load` with identical tensors, and
/// scores the same.
#[test]
fn saved_weights_reload_identically() {
    let path = Path::new(env!("CARGO_MANIFEST_DIR")).join("recipes/digits.opt");
    let ran = run_in_copy(&path, &[]);
    let saved = &ran.files["out/digits.safetensors"];

    let reload = r#"
        recipe digits { seed = 42 }
        data digits {
          source = builtin("digits")
          split  = [0.7, 0.15, 0.15]
          scale  = standard
        }
        model net { input = digits, layers = [linear(128), relu, linear(10)] }
        load trained { path = "out/digits.safetensors", model = net }
        eval again { models = [trained], data = digits.test, path = "out/again.json" }
        save copy { from = trained, path = "out/copy.safetensors" }
    "#;
    let dir = tempfile::tempdir().unwrap();
    std::fs::create_dir_all(dir.path().join("out")).unwrap();
    std::fs::write(dir.path().join("out/digits.safetensors"), saved).unwrap();
    let file = dir.path().join("reload.opt");
    std::fs::write(&file, reload).unwrap();
    let recipe = Recipe::read(&file).unwrap();
    let options = common::options(&recipe);
    recipe.run(&[], None, &options).unwrap_or_else(|e| panic!("{}", e.render(80)));

    let copy = std::fs::read(dir.path().join("out/copy.safetensors")).unwrap();
    assert_eq!(read_tensors(saved), read_tensors(&copy), "tensors survive a load and a save");
    let again: serde_json::Value =
        serde_json::from_slice(&std::fs::read(dir.path().join("out/again.json")).unwrap()).unwrap();
    let before = test_accuracy(&ran, "out/digits-report.json", "base");
    assert_eq!(again["trained"]["accuracy"].as_f64().unwrap(), before);
}

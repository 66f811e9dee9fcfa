//! The language reference, `docs/LANGUAGE.md`, is a contract: every example
//! in it parses, and put together with the blocks it refers to, checks and
//! runs. The examples are read from the document itself, so the two cannot
//! drift apart.

mod common;

use std::path::Path;

use recipe::Recipe;

/// The fenced code blocks of the reference, in order.
fn examples() -> Vec<String> {
    let doc =
        std::fs::read_to_string(Path::new(env!("CARGO_MANIFEST_DIR")).join("docs/LANGUAGE.md"))
            .expect("docs/LANGUAGE.md is readable");
    let mut blocks = Vec::new();
    let mut current: Option<String> = None;
    for line in doc.lines() {
        if line.trim_start().starts_with("```") {
            match current.take() {
                Some(block) => blocks.push(block),
                None => current = Some(String::new()),
            }
        } else if let Some(block) = &mut current {
            block.push_str(line);
            block.push('\n');
        }
    }
    blocks
}

/// Examples that are recipe text: the shape-of-a-file template uses
/// placeholders in capitals and is not.
fn recipe_examples() -> Vec<String> {
    examples().into_iter().filter(|e| !e.contains("KIND NAME")).collect()
}

/// The one example that is a whole recipe on its own.
fn whole_recipe() -> String {
    recipe_examples()
        .into_iter()
        .find(|e| e.starts_with("# digits.opt"))
        .expect("the reference ends with a whole recipe")
}

/// Every block example of the reference in one file: together they name
/// each block once, so they form one recipe.
fn all_blocks() -> String {
    recipe_examples().into_iter().filter(|e| !e.starts_with("# digits.opt")).collect()
}

#[test]
fn the_reference_has_its_examples() {
    // recipe, data, two models, train, search, prune, quantize, eval,
    // load and save, and the whole recipe.
    assert!(recipe_examples().len() >= 10, "found {}", recipe_examples().len());
}

#[test]
fn every_example_parses() {
    for example in recipe_examples() {
        if let Err(errors) = recipe::syntax::parse(&example) {
            panic!("example does not parse:\n{example}\n{errors:?}");
        }
    }
}

/// A folder with the block examples as one recipe and the weights file
/// that its `load` example reads, made by training the `net` example.
fn language_folder() -> tempfile::TempDir {
    let dir = tempfile::tempdir().unwrap();
    let blocks = all_blocks();
    std::fs::write(dir.path().join("language.opt"), &blocks).unwrap();

    // The `load` example reads weights/net.safetensors: make it by running
    // the examples' own data, `net` and `base` blocks and saving the result.
    let needed: String = recipe_examples()
        .into_iter()
        .filter(|e| ["data digits", "model net", "train base"].iter().any(|b| e.starts_with(b)))
        .collect();
    let maker = format!(
        "{needed}\nsave pretrained_file {{ from = base, path = \"weights/net.safetensors\" }}\n"
    );
    std::fs::write(dir.path().join("maker.opt"), maker).unwrap();
    let maker = Recipe::read(&dir.path().join("maker.opt")).unwrap();
    maker.run(&[], None, &common::options(&maker)).unwrap_or_else(|e| panic!("{}", e.render(80)));
    let recipe = Recipe::read(&dir.path().join("language.opt")).unwrap();
    assert!(recipe.compile(&[]).is_ok());
    dir
}

#[test]
fn examples_check_together_and_alone() {
    let dir = language_folder();
    let recipe = Recipe::read(&dir.path().join("language.opt")).unwrap();
    recipe.compile(&[]).unwrap_or_else(|e| panic!("{}", e.render(80)));

    std::fs::write(dir.path().join("whole.opt"), whole_recipe()).unwrap();
    let whole = Recipe::read(&dir.path().join("whole.opt")).unwrap();
    whole.compile(&[]).unwrap_or_else(|e| panic!("{}", e.render(80)));
}

/// Every block example runs as written, each with what it needs, and so does the whole
/// recipe at the end of the reference.
#[test]
fn examples_run_as_written() {
    let dir = language_folder();
    let recipe = Recipe::read(&dir.path().join("language.opt")).unwrap();
    let options = common::options(&recipe);
    let run = |overrides: &[&str], only: &str| {
        let overrides: Vec<String> = overrides.iter().map(|s| s.to_string()).collect();
        recipe
            .run(&overrides, Some(only), &options)
            .unwrap_or_else(|e| panic!("{}", e.render(80)))
            .1
    };

    // The CNN example trains too, in place of the MLP.
    let report = run(&["base.model=cnn", "base.epochs=2"], "base");
    assert!(report.outputs.contains_key("base"));

    // The load example.
    let report = run(&[], "pretrained");
    assert!(report.outputs.contains_key("pretrained"));

    // The eval example needs data, models, train, search, prune and quantize.
    let report = run(&["report.path=\"out/report.json\""], "report");
    for step in ["base", "tuned", "sparse", "small"] {
        assert!(report.outputs.contains_key(step), "`{step}` ran");
    }
    let table = &report.tables[0];
    assert_eq!(table.rows.len(), 4);
    for (_, values) in &table.rows {
        assert_eq!(values.len(), 5, "accuracy, loss, size, sparsity and latency");
    }
    let json: serde_json::Value =
        serde_json::from_slice(&std::fs::read(dir.path().join("out/report.json")).unwrap())
            .unwrap();
    assert!(json["small"]["accuracy"].as_f64().unwrap() > 0.9);

    // The save example, whose steps before it now come from the step cache.
    let report = run(&[], "out");
    assert!(dir.path().join("out/digits-int8.safetensors").exists());
    assert_eq!(report.ran(), ["out"]);

    std::fs::write(dir.path().join("whole.opt"), whole_recipe()).unwrap();
    let whole = Recipe::read(&dir.path().join("whole.opt")).unwrap();
    let (_, report) = whole
        .run(&[], None, &common::options(&whole))
        .unwrap_or_else(|e| panic!("{}", e.render(80)));
    assert_eq!(report.tables[0].rows.len(), 4);
    assert!(dir.path().join("out/digits-int8.safetensors").exists());
}

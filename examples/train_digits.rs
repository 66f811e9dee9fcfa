//! Using `recipe` as a library: compile a recipe held in a string, run it,
//! and read the trained weights and the eval table from the report.
//!
//! Run with `cargo run --release --example train_digits`.

use recipe::exec::{Artifact, RunOptions};
use recipe::Recipe;

const RECIPE: &str = r#"
recipe library_demo { seed = 1 }

data digits {
  source = builtin("digits")
  scale  = standard
}

model net {
  input  = digits
  layers = [linear(64), relu, linear(10)]
}

train base {
  model     = net
  data      = digits
  optimizer = adamw(lr = 0.003)
  epochs    = 15
}

eval report {
  models  = [base]
  data    = digits.test
  metrics = [accuracy, loss, size, latency]
}
"#;

fn main() {
    // A recipe does not need to live in a file; the path only names it in
    // diagnostics and anchors relative paths.
    let recipe = Recipe::from_bytes("library_demo.opt".as_ref(), RECIPE.as_bytes());
    let options = RunOptions { use_cache: false, ..RunOptions::new(".") };
    let (compiled, report) = match recipe.run(&[], None, &options) {
        Ok(done) => done,
        Err(e) => {
            eprint!("{}", e.render(100));
            std::process::exit(1);
        }
    };

    println!("ran {} steps", compiled.graph.nodes.len());
    if let Some(Artifact::Weights(w)) = report.outputs.get("base") {
        for (name, tensor) in &w.tensors {
            println!("  {name:<10} {:?}", tensor.dims());
        }
        println!("  training metrics: {:?}", w.metrics);
    }
    for table in &report.tables {
        print!("{}", table.render());
    }
}

//! No input makes `recipe` panic: thousands of damaged variants of the
//! recipes and bad recipes in the repository are parsed and checked, and
//! each must end in a result or a diagnostic.

use std::panic::{catch_unwind, AssertUnwindSafe};
use std::path::{Path, PathBuf};

use recipe::rng::Rng;
use recipe::Recipe;

/// Pieces of recipe syntax that damaged files are built from, so that the
/// variants reach the checker and not only the parser.
#[rustfmt::skip]
const TOKENS: &[&str] = &[
    "{", "}", "[", "]", "(", ")", "=", ",", "\n", ".", "%", "\"", "#", "-", "1e999", "0", "-1",
    "99999999999999999999", "1_000", "0.5", "150%", "digits", "net", "base", "linear(10)",
    "relu", "conv2d(4, 3)", "maxpool(9)", "reshape(2, 2)", "flatten", "train", "model", "data",
    "eval", "save", "load", "prune", "quantize", "search", "space", "split", "from", "true",
    "builtin(\"digits\")", "digits.test", "digits.nope", "sgd(lr = 0.1)", "choice()", "\\",
    "\u{e9}", "\u{0}",
];

fn fixtures() -> Vec<PathBuf> {
    let root = Path::new(env!("CARGO_MANIFEST_DIR"));
    let mut files = Vec::new();
    for dir in ["recipes", "tests/bad"] {
        for entry in std::fs::read_dir(root.join(dir)).expect("a fixture folder") {
            let path = entry.expect("an entry").path();
            // The deep-nesting file is large; it is covered by its snapshot.
            let large = std::fs::metadata(&path).map(|m| m.len() > 10_000).unwrap_or(true);
            if path.extension().is_some_and(|e| e == "opt") && !large {
                files.push(path);
            }
        }
    }
    files.sort();
    files
}

/// One damaged copy of `bytes`: a few random cuts, insertions and swaps.
fn mutate(bytes: &[u8], rng: &mut Rng) -> Vec<u8> {
    let mut out = bytes.to_vec();
    for _ in 0..1 + rng.below(4) {
        let at = rng.below(out.len() + 1);
        match rng.below(4) {
            0 if !out.is_empty() => {
                let end = (at + 1 + rng.below(12)).min(out.len());
                out.drain(at.min(end)..end);
            }
            1 => {
                let token = TOKENS[rng.below(TOKENS.len())].as_bytes();
                out.splice(at..at, token.iter().copied());
            }
            2 => out.insert(at, rng.below(256) as u8),
            _ => {
                let end = (at + rng.below(40)).min(out.len());
                let piece = out[at.min(end)..end].to_vec();
                let to = rng.below(out.len() + 1);
                out.splice(to..to, piece);
            }
        }
    }
    out
}

#[test]
fn damaged_recipes_never_panic() {
    let mut rng = Rng::new(2024, "mutations");
    let mut checked = 0;
    for path in fixtures() {
        let bytes = std::fs::read(&path).expect("readable");
        let shown = Path::new("tests/bad").join(path.file_name().expect("a name"));
        for _ in 0..400 {
            let damaged = mutate(&bytes, &mut rng);
            let outcome = catch_unwind(AssertUnwindSafe(|| {
                let recipe = Recipe::from_bytes(&shown, &damaged);
                if let Err(e) = recipe.check(&[]) {
                    // Rendering is part of the path a user sees.
                    assert!(!e.render(80).is_empty());
                }
            }));
            if outcome.is_err() {
                panic!(
                    "panicked on a variant of {}:\n{}",
                    path.display(),
                    String::from_utf8_lossy(&damaged)
                );
            }
            checked += 1;
        }
    }
    assert!(checked > 10_000, "{checked} variants");
}

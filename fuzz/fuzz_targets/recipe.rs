//! Arbitrary bytes as a recipe file: decoding, parsing, checking and planning must refuse
//! what is wrong with diagnostics, never panic, hang or exhaust memory; and whatever parses
//! must format to text that parses to the same recipe (the formatter asserts this itself).
//!
//! The recipe sits in a scratch folder holding small data and weights files, so paths the
//! fuzzer writes can reach real readers.

#![no_main]

use std::path::PathBuf;
use std::sync::OnceLock;

use libfuzzer_sys::fuzz_target;

fn folder() -> &'static PathBuf {
    static DIR: OnceLock<PathBuf> = OnceLock::new();
    DIR.get_or_init(|| {
        let dir = tempfile::Builder::new().prefix("recipe-fuzz").tempdir().unwrap().keep();
        let fixtures = concat!(env!("CARGO_MANIFEST_DIR"), "/../tests/bad/data");
        for entry in std::fs::read_dir(fixtures).unwrap() {
            let entry = entry.unwrap();
            std::fs::copy(entry.path(), dir.join(entry.file_name())).unwrap();
        }
        dir
    })
}

fuzz_target!(|bytes: &[u8]| {
    let recipe = recipe::Recipe::from_bytes(&folder().join("fuzz.opt"), bytes);
    if let Err(e) = recipe.compile(&[]) {
        let _ = e.render(80);
    }
    if let Ok(text) = std::str::from_utf8(bytes) {
        let _ = recipe::syntax::format(text);
    }
});

//! Arbitrary bytes as a data or weights file: every reader must refuse a damaged file with
//! an error, never panic, hang or exhaust memory. The first byte picks the reader; the rest
//! is the file.

#![no_main]

use std::path::{Path, PathBuf};
use std::sync::OnceLock;

use libfuzzer_sys::fuzz_target;
use recipe::check::{DataSpec, Scale, Source};

fn folder() -> &'static PathBuf {
    static DIR: OnceLock<PathBuf> = OnceLock::new();
    DIR.get_or_init(|| tempfile::Builder::new().prefix("recipe-fuzz").tempdir().unwrap().keep())
}

/// Check the source's header, then read it whole as a run would.
fn data(source: Source, dir: &Path) {
    let Ok(shape) = recipe::data::peek(&source, dir) else { return };
    let spec = DataSpec {
        source,
        split: [0.6, 0.2, 0.2],
        shuffle: true,
        scale: Scale::Standard,
        shape,
    };
    let _ = recipe::data::load(&spec, dir, 7);
}

/// A valid IDX labels file of `n` labels, to pair with fuzzed images, and the reverse.
fn idx_labels(n: u32) -> Vec<u8> {
    let mut bytes = vec![0, 0, 8, 1];
    bytes.extend_from_slice(&n.to_be_bytes());
    bytes.extend((0..n).map(|i| (i % 3) as u8));
    bytes
}

fn idx_images(n: u32) -> Vec<u8> {
    let mut bytes = vec![0, 0, 8, 3];
    for v in [n, 2, 2] {
        bytes.extend_from_slice(&v.to_be_bytes());
    }
    bytes.extend((0..4 * n).map(|i| i as u8));
    bytes
}

fuzz_target!(|bytes: &[u8]| {
    let Some((&which, file)) = bytes.split_first() else { return };
    let dir = folder();
    let write = |name: &str, bytes: &[u8]| {
        let path = dir.join(name);
        std::fs::write(&path, bytes).unwrap();
        PathBuf::from(name)
    };
    match which % 8 {
        0 => {
            let _ = recipe::formats::safetensors::read(&dir.join(write("w.safetensors", file)));
        }
        1 => {
            let path = dir.join(write("w.gguf", file));
            let _ = recipe::formats::gguf::read(&path, &candle_core::Device::Cpu);
        }
        2 => {
            let images = write("images.idx", file);
            let labels = write("labels.idx", &idx_labels(4));
            data(Source::Idx { images, labels }, dir);
        }
        3 => {
            let labels = write("labels.idx", file);
            let images = write("images.idx", &idx_images(4));
            data(Source::Idx { images, labels }, dir);
        }
        4 => {
            let path = write("d.csv", file);
            data(Source::Csv { path, label: "label".into() }, dir);
        }
        5 => {
            let path = write("d.safetensors", file);
            data(Source::Safetensors { path, x: "x".into(), y: "y".into() }, dir);
        }
        6 => {
            let path = dir.join(write("i.safetensors", file));
            let _ = recipe::formats::inspect::inspect(&path, &path);
            let _ = recipe::formats::inspect::inspect_json(&path, &path);
        }
        _ => {
            let path = dir.join(write("i.gguf", file));
            let _ = recipe::formats::inspect::inspect(&path, &path);
        }
    }
});

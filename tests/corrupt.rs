//! Damaged input files: every reader refuses them with a diagnostic that names the file and
//! what is wrong with it, exits with status 1, and never panics. Each file is made here from a
//! good one, damaged in one way.

mod common;

use std::io::Write as _;
use std::path::Path;

use common::cli;

/// Runs `args` in `dir` and checks that it fails cleanly with every one of `expected` in its
/// diagnostic, which is snapshotted as `name`.
fn refused(name: &str, args: &[&str], dir: &Path, expected: &[&str]) {
    let out = cli(args, dir);
    let err = String::from_utf8_lossy(&out.stderr);
    insta::assert_snapshot!(name, err);
    assert_eq!(out.status.code(), Some(1), "{args:?} should fail with status 1:\n{err}");
    assert!(!err.contains("panicked"), "{args:?} panicked:\n{err}");
    // Diagnostics wrap long lines; compare with the line breaks and their gutters removed.
    let flat: String = err
        .lines()
        .map(|l| l.trim_start_matches(|c: char| c.is_whitespace() || "│×".contains(c)))
        .collect::<Vec<_>>()
        .join(" ");
    for want in expected {
        assert!(flat.contains(want), "{args:?}: `{want}` not in:\n{err}");
    }
}

/// A recipe that only loads `file`, which `recipe check` reads the header of.
fn check_load(dir: &Path, file: &str, expected: &[&str]) {
    let text = format!("load w {{\n  path = \"{file}\"\n}}\n");
    std::fs::write(dir.join("load.opt"), text).unwrap();
    refused(&format!("{file}.check"), &["check", "load.opt"], dir, expected);
    inspect_refused(dir, file, expected);
}

/// `recipe inspect FILE` in `dir` fails cleanly; the snapshot is named after the file.
fn inspect_refused(dir: &Path, file: &str, expected: &[&str]) {
    refused(&format!("{file}.inspect"), &["inspect", file], dir, expected);
}

/// A recipe whose only block reads `source`; the snapshot is named after `file`.
fn check_data(dir: &Path, file: &str, source: &str, expected: &[&str]) {
    std::fs::write(dir.join("data.opt"), format!("data d {{\n  source = {source}\n}}\n")).unwrap();
    refused(&format!("{file}.check"), &["check", "data.opt"], dir, expected);
}

/// A good safetensors file of two `f32` tensors of six values each, and its header length.
fn good_safetensors() -> (Vec<u8>, usize) {
    let values: Vec<u8> = (0..6).flat_map(|i| (i as f32).to_le_bytes()).collect();
    let views = [("a", &values), ("b", &values)].map(|(name, data)| {
        (name, safetensors::tensor::TensorView::new(safetensors::Dtype::F32, vec![2, 3], data))
    });
    let views: Vec<(&str, _)> = views.into_iter().map(|(n, v)| (n, v.unwrap())).collect();
    let bytes = safetensors::serialize(views, None).unwrap();
    let n = u64::from_le_bytes(bytes[..8].try_into().unwrap()) as usize;
    (bytes, n)
}

/// `bytes` with its JSON header replaced by `header` (padded with spaces to keep alignment).
fn with_header(bytes: &[u8], n: usize, header: &str) -> Vec<u8> {
    let mut header = header.as_bytes().to_vec();
    while !header.len().is_multiple_of(8) {
        header.push(b' ');
    }
    let mut out = (header.len() as u64).to_le_bytes().to_vec();
    out.extend(header);
    out.extend(&bytes[8 + n..]);
    out
}

#[test]
fn damaged_safetensors_files_are_refused() {
    let dir = tempfile::tempdir().unwrap();
    let (good, n) = good_safetensors();
    let header = std::str::from_utf8(&good[8..8 + n]).unwrap().trim_end().to_string();
    let write = |name: &str, bytes: &[u8]| std::fs::write(dir.path().join(name), bytes).unwrap();

    write("cut.safetensors", &good[..good.len() - 10]);
    check_load(dir.path(), "cut.safetensors", &["`cut.safetensors` is truncated"]);

    write("tiny.safetensors", &good[..5]);
    check_load(dir.path(), "tiny.safetensors", &["`tiny.safetensors` is truncated"]);

    let mut past = good.clone();
    past[..8].copy_from_slice(&(1u64 << 20).to_le_bytes());
    write("past.safetensors", &past);
    check_load(dir.path(), "past.safetensors", &["past.safetensors", "runs past the end"]);

    let overlap = header.replace("[24,48]", "[12,36]");
    assert_ne!(overlap, header, "the header has the second tensor's offsets: {header}");
    write("overlap.safetensors", &with_header(&good, n, &overlap));
    check_load(dir.path(), "overlap.safetensors", &["overlap.safetensors", "overlaps"]);

    let beyond = header.replace("[24,48]", "[24,4800]");
    write("beyond.safetensors", &with_header(&good, n, &beyond));
    check_load(dir.path(), "beyond.safetensors", &["beyond.safetensors", "span 4776"]);

    let shape = header.replacen("[2,3]", "[3,3]", 1);
    write("shape.safetensors", &with_header(&good, n, &shape));
    check_load(dir.path(), "shape.safetensors", &["shape.safetensors", "[3, 3]"]);

    let dtype = header.replacen("F32", "F64", 1);
    write("dtype.safetensors", &with_header(&good, n, &dtype));
    check_load(dir.path(), "dtype.safetensors", &["dtype.safetensors", "F64"]);

    write("json.safetensors", &with_header(&good, n, "{\"a\": [1, 2"));
    check_load(dir.path(), "json.safetensors", &["json.safetensors", "not valid JSON"]);
}

/// An IDX file of `count` 2x2 images (magic 0x803) or labels (0x801).
fn idx(images: bool, count: u32) -> Vec<u8> {
    let mut out = Vec::new();
    if images {
        out.extend(0x803u32.to_be_bytes());
        for d in [count, 2, 2] {
            out.extend(d.to_be_bytes());
        }
        out.extend(vec![7u8; count as usize * 4]);
    } else {
        out.extend(0x801u32.to_be_bytes());
        out.extend(count.to_be_bytes());
        out.extend((0..count).map(|i| (i % 2) as u8));
    }
    out
}

#[test]
fn damaged_idx_files_are_refused() {
    let dir = tempfile::tempdir().unwrap();
    let write = |name: &str, bytes: &[u8]| std::fs::write(dir.path().join(name), bytes).unwrap();
    write("labels", &idx(false, 10));
    let source = |images: &str| format!("idx(images = \"{images}\", labels = \"labels\")");

    let mut magic = idx(true, 10);
    magic[2] = 0x12;
    write("magic", &magic);
    check_data(dir.path(), "magic", &source("magic"), &["`magic`", "magic number"]);

    let few = idx(true, 10);
    write("few", &few[..few.len() - 8]);
    check_data(dir.path(), "few", &source("few"), &["`few` is truncated"]);

    let mut gz = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::default());
    gz.write_all(&idx(true, 10)).unwrap();
    let gz = gz.finish().unwrap();
    write("cut.gz", &gz[..gz.len() / 2]);
    check_data(dir.path(), "cut.gz", &source("cut.gz"), &["`cut.gz`", "gzip"]);
}

#[test]
fn damaged_csv_files_are_refused() {
    let dir = tempfile::tempdir().unwrap();
    let cases: [(&str, &str, &[&str]); 5] = [
        ("ragged.csv", "a,b,label\n1,2,0\n3,1\n", &["`ragged.csv` row 2", "2 cells"]),
        ("cell.csv", "a,b,label\n1,2,0\n3,x,1\n", &["`cell.csv` row 2, column `b`", "`x`"]),
        ("nolabel.csv", "a,b,c\n1,2,0\n3,1,1\n", &["`nolabel.csv` has no column `label`"]),
        ("nan.csv", "a,b,label\n1,nan,0\n3,1,1\n", &["`nan.csv` row 1, column `b`", "finite"]),
        ("inf.csv", "a,b,label\n1,2,0\n-inf,1,1\n", &["`inf.csv` row 2, column `a`", "finite"]),
    ];
    for (name, text, expected) in cases {
        std::fs::write(dir.path().join(name), text).unwrap();
        check_data(dir.path(), name, &format!("csv(\"{name}\", label = \"label\")"), expected);
    }
}

#[test]
fn damaged_gguf_files_are_refused() {
    let dir = tempfile::tempdir().unwrap();
    let write = |name: &str, bytes: &[u8]| std::fs::write(dir.path().join(name), bytes).unwrap();
    let mut magic = b"GGUX".to_vec();
    magic.extend([0u8; 20]);
    write("magic.gguf", &magic);
    inspect_refused(dir.path(), "magic.gguf", &["`magic.gguf` is not a GGUF file", "magic"]);

    let mut version = b"GGUF".to_vec();
    version.extend(99u32.to_le_bytes());
    version.extend([0u8; 16]);
    write("version.gguf", &version);
    inspect_refused(dir.path(), "version.gguf", &["`version.gguf`", "version"]);

    write("short.gguf", b"GG");
    inspect_refused(dir.path(), "short.gguf", &["`short.gguf` is not a GGUF file"]);

    // A shape larger than the file holds: found by fuzzing, when candle allocated whatever
    // the header asked for.
    write("huge.gguf", &gguf_q8_0(&[32, 1 << 40]));
    inspect_refused(
        dir.path(),
        "huge.gguf",
        &["`huge.gguf`", "tensor `w`", "run past the end of the file"],
    );
    write("overflow.gguf", &gguf_q8_0(&[1 << 40, 1 << 40]));
    inspect_refused(
        dir.path(),
        "overflow.gguf",
        &["`overflow.gguf`", "more values than can be addressed"],
    );
}

/// A GGUF (version 3) file with one `q8_0` tensor `w` whose header gives `dims` (innermost
/// first) and whose data holds two blocks.
fn gguf_q8_0(dims: &[u64]) -> Vec<u8> {
    let mut out = b"GGUF".to_vec();
    out.extend(3u32.to_le_bytes());
    out.extend(1u64.to_le_bytes()); // tensors
    out.extend(0u64.to_le_bytes()); // metadata entries
    out.extend(1u64.to_le_bytes());
    out.push(b'w');
    out.extend((dims.len() as u32).to_le_bytes());
    for d in dims {
        out.extend(d.to_le_bytes());
    }
    out.extend(8u32.to_le_bytes()); // q8_0
    out.extend(0u64.to_le_bytes()); // offset
    out.resize(out.len().next_multiple_of(32), 0);
    for _ in 0..2 {
        out.extend(half_one());
        out.extend([1u8; 32]);
    }
    out
}

/// 1.0 as an IEEE half, little-endian.
fn half_one() -> [u8; 2] {
    0x3c00u16.to_le_bytes()
}

//! Integer quantization against PyTorch: per-channel int8 scales, zero points and integers
//! from `IntTensor::quantize` equal those of `torch.quantize_per_channel`, bit for bit.
//!
//! The reference is `tests/fixtures/torch_quant/`, made by `make.py` there with torch 2.15
//! on x86-64: for each weight, scales computed in float32 (`w.abs().amax(dim=1) / 127`
//! symmetric; `(hi - lo) / 255` with `lo = min(w.amin(1), 0)`, `hi = max(w.amax(1), 0)` and
//! zero point `clamp(-128 - round(lo / scale), -128, 127)` asymmetric), then
//! `torch.quantize_per_channel(w, scale.double(), zero_point.long(), axis=0,
//! dtype=torch.qint8).int_repr()`.

use std::path::Path;

use recipe::check::spec::Granularity;
use recipe::formats::quant::{IntScheme, IntTensor};
use safetensors::{Dtype, SafeTensors};

fn fixture(name: &str) -> Vec<u8> {
    let path = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/torch_quant").join(name);
    std::fs::read(&path).unwrap_or_else(|e| panic!("{}: {e}", path.display()))
}

fn f32s(file: &SafeTensors, name: &str) -> (Vec<f32>, Vec<usize>) {
    let t = file.tensor(name).unwrap_or_else(|e| panic!("`{name}`: {e}"));
    assert_eq!(t.dtype(), Dtype::F32, "`{name}`");
    let values =
        t.data().chunks_exact(4).map(|c| f32::from_le_bytes([c[0], c[1], c[2], c[3]])).collect();
    (values, t.shape().to_vec())
}

fn i8s(file: &SafeTensors, name: &str) -> Vec<i8> {
    let t = file.tensor(name).unwrap_or_else(|e| panic!("`{name}`: {e}"));
    assert_eq!(t.dtype(), Dtype::I8, "`{name}`");
    t.data().iter().map(|&b| b as i8).collect()
}

/// Every weight of the fixture, symmetric and asymmetric: scales equal bit for bit, zero
/// points and integers entry for entry. `ties` puts every entry on an exact half, with an
/// odd zero point in the asymmetric rows, where the order of rounding and adding the zero
/// point decides the result.
#[test]
fn per_channel_int8_equals_pytorch() {
    let (weights, expected) = (fixture("weights.safetensors"), fixture("expected.safetensors"));
    let weights = SafeTensors::deserialize(&weights).unwrap();
    let expected = SafeTensors::deserialize(&expected).unwrap();
    let mut names = weights.names();
    names.sort();
    assert_eq!(names, ["ties", "w", "w2"]);

    for name in names {
        let (xs, shape) = f32s(&weights, name);
        for (variant, symmetric) in [("sym", true), ("asym", false)] {
            let key = format!("{name}.{variant}");
            let scheme = IntScheme { bits: 8, symmetric, granularity: Granularity::PerChannel };
            let q = IntTensor::quantize(&xs, &shape, scheme).unwrap();

            let (scales, _) = f32s(&expected, &format!("{key}.scale"));
            let bits = |s: &[f32]| s.iter().map(|s| s.to_bits()).collect::<Vec<_>>();
            assert_eq!(bits(&q.scales), bits(&scales), "`{key}` scales");
            assert_eq!(q.zero_points, i8s(&expected, &format!("{key}.zero_point")), "`{key}`");

            let theirs = i8s(&expected, &format!("{key}.q"));
            assert_eq!(q.values.len(), theirs.len(), "`{key}`");
            let differ: Vec<_> = q
                .values
                .iter()
                .zip(&theirs)
                .enumerate()
                .filter(|(_, (a, b))| a != b)
                .map(|(i, (a, b))| format!("entry {i}: {a}, PyTorch {b}"))
                .collect();
            assert!(differ.is_empty(), "`{key}`: {} differ: {:?}", differ.len(), &differ[..]);
        }
    }
}

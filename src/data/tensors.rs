//! safetensors sources: takes a file with a features tensor `x` of shape
//! `[n, ...]` and a labels tensor `y` of shape `[n]`, and returns the
//! samples.
//!
//! `x` may hold any numeric dtype and is converted to f32; `y` may hold
//! integers, or floats with integral values. The feature shape of one
//! sample is `x`'s shape without its first dimension.

use std::path::Path;

use crate::formats::safetensors::{self as st, FormatError, RawTensor};

use super::{resolve, DataError, Raw};

/// Read the file; `x`'s data only when `features` is set (its header gives
/// the count and shape).
pub(super) fn read(
    base_dir: &Path,
    path: &Path,
    x: &str,
    y: &str,
    features: bool,
) -> Result<Raw, DataError> {
    let file = resolve(base_dir, path);
    let shown = |e: FormatError| DataError::Format(e.with_path(path));
    let tensor_err = |name: &str, detail: String| DataError::Tensor {
        path: path.to_owned(),
        name: name.to_owned(),
        detail,
    };

    // The shape of `x` decides the sample count and the feature shape.
    let (x_shape, x_raw) = if features {
        let raw = st::read_tensor(&file, x).map_err(shown)?;
        (raw.shape.clone(), Some(raw))
    } else {
        let header = st::read_header(&file).map_err(shown)?;
        let info = header.tensor(&file, x).map_err(shown)?;
        (info.shape.clone(), None)
    };
    let Some((&n, sample_shape)) = x_shape.split_first().filter(|(_, rest)| !rest.is_empty())
    else {
        return Err(tensor_err(
            x,
            format!(
                "shape {x_shape:?} is not [samples, features...]: it needs two dimensions or more"
            ),
        ));
    };

    // One integral label per sample.
    let y_raw = st::read_tensor(&file, y).map_err(shown)?;
    if y_raw.shape != [n] {
        return Err(tensor_err(
            y,
            format!("shape {:?} is not [{n}], one label per sample of `{x}`", y_raw.shape),
        ));
    }
    let labels = y_raw
        .to_f64s()
        .ok_or_else(|| tensor_err(y, format!("dtype {} is not numeric", y_raw.dtype)))?;
    let mut ys = Vec::with_capacity(n);
    for (i, &label) in labels.iter().enumerate() {
        let integral = label >= 0.0 && label.fract() == 0.0 && label <= f64::from(u32::MAX);
        if !integral {
            return Err(DataError::BadLabel {
                path: path.to_owned(),
                place: format!("tensor `{y}`, sample {i}"),
                value: label.to_string(),
            });
        }
        ys.push(label as u32);
    }

    let xs = match x_raw {
        Some(raw) => features_of(path, x, &raw, sample_shape)?,
        None => Vec::new(),
    };
    Ok(Raw { features: sample_shape.to_vec(), xs, ys })
}

/// The features as finite f32 values.
fn features_of(
    path: &Path,
    name: &str,
    raw: &RawTensor,
    sample_shape: &[usize],
) -> Result<Vec<f32>, DataError> {
    let xs = raw.to_f32s().ok_or_else(|| DataError::Tensor {
        path: path.to_owned(),
        name: name.to_owned(),
        detail: format!("dtype {} is not numeric", raw.dtype),
    })?;
    if let Some(i) = xs.iter().position(|x| !x.is_finite()) {
        let dim: usize = sample_shape.iter().product::<usize>().max(1);
        return Err(DataError::NotFinite {
            path: path.to_owned(),
            place: format!("tensor `{name}`, sample {}", i / dim),
            value: xs[i].to_string(),
        });
    }
    Ok(xs)
}

#[cfg(test)]
mod tests {
    use std::collections::BTreeMap;

    use candle_core::{DType, Device, Tensor};

    use super::*;

    fn write(dir: &Path, x: &Tensor, y: &Tensor) {
        let mut tensors = BTreeMap::new();
        tensors.insert("x".to_owned(), RawTensor::from_tensor(x).unwrap());
        tensors.insert("y".to_owned(), RawTensor::from_tensor(y).unwrap());
        st::write(&dir.join("d.safetensors"), &tensors, &BTreeMap::new()).unwrap();
    }

    fn load(dir: &Path, features: bool) -> Result<Raw, String> {
        read(dir, Path::new("d.safetensors"), "x", "y", features).map_err(|e| e.to_string())
    }

    #[test]
    fn round_trip_with_converted_dtypes() {
        let dir = tempfile::tempdir().unwrap();
        let dev = Device::Cpu;
        let x = Tensor::arange(0f32, 12.0, &dev).unwrap().reshape((3, 2, 2)).unwrap();
        let x = x.to_dtype(DType::F16).unwrap();
        let y = Tensor::new(&[2i64, 0, 1], &dev).unwrap();
        write(dir.path(), &x, &y);

        let raw = load(dir.path(), true).unwrap();
        assert_eq!(raw.features, [2, 2]);
        assert_eq!(raw.ys, [2, 0, 1]);
        assert_eq!(raw.xs, (0..12).map(|v| v as f32).collect::<Vec<_>>());

        let peeked = load(dir.path(), false).unwrap();
        assert!(peeked.xs.is_empty());
        assert_eq!((peeked.features, peeked.ys), (vec![2, 2], vec![2, 0, 1]));
    }

    #[test]
    fn float_labels_must_be_integral() {
        let dir = tempfile::tempdir().unwrap();
        let dev = Device::Cpu;
        let x = Tensor::zeros((2, 3), DType::F32, &dev).unwrap();
        write(dir.path(), &x, &Tensor::new(&[1f32, 4.0], &dev).unwrap());
        assert_eq!(load(dir.path(), true).unwrap().ys, [1, 4]);

        write(dir.path(), &x, &Tensor::new(&[1f32, 0.5], &dev).unwrap());
        assert_eq!(
            load(dir.path(), false).unwrap_err(),
            "`d.safetensors` tensor `y`, sample 1: label `0.5` is not a non-negative integer"
        );
    }

    #[test]
    fn shapes_and_names_are_checked() {
        let dir = tempfile::tempdir().unwrap();
        let dev = Device::Cpu;
        let x = Tensor::zeros((2, 3), DType::F32, &dev).unwrap();
        write(dir.path(), &x, &Tensor::new(&[1u32, 0, 1], &dev).unwrap());
        assert_eq!(
            load(dir.path(), true).unwrap_err(),
            "`d.safetensors`, tensor `y`: shape [3] is not [2], one label per sample of `x`"
        );

        let err = read(dir.path(), Path::new("d.safetensors"), "images", "y", false).unwrap_err();
        assert_eq!(err.to_string(), "`d.safetensors` has no tensor `images`; it holds `x`, `y`");

        write(dir.path(), &Tensor::zeros(2, DType::F32, &dev).unwrap(), &x);
        assert!(load(dir.path(), true).unwrap_err().contains("needs two dimensions or more"));
    }

    #[test]
    fn non_finite_features_are_rejected() {
        let dir = tempfile::tempdir().unwrap();
        let dev = Device::Cpu;
        let x = Tensor::new(&[[0f32, 1.0], [f32::NAN, 2.0]], &dev).unwrap();
        write(dir.path(), &x, &Tensor::new(&[0u8, 1], &dev).unwrap());
        assert_eq!(
            load(dir.path(), true).unwrap_err(),
            "`d.safetensors` tensor `x`, sample 1: `NaN` is not a finite number"
        );
        // A check reads no features, so it does not see the NaN.
        assert!(load(dir.path(), false).is_ok());
    }
}

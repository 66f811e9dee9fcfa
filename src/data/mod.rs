//! Dataset readers: takes a checked `data` block and returns its samples as
//! train, validation and test parts, shuffled, split and scaled.
//!
//! [`peek`] gives the header-level facts the checker needs (samples,
//! feature shape, classes) without building the features; [`load`] reads
//! everything. The sources live one per file: `csv`, `idx` (MNIST's
//! format) and `tensors` (safetensors); the builtin `digits` set is
//! embedded in the program.

mod csv;
mod idx;
mod tensors;

use std::io::{self, Read};
use std::path::{Path, PathBuf};

use candle_core::{Device, Tensor};

use crate::check::spec::{DataShape, DataSpec, Scale, Source, Split};
use crate::formats::safetensors::FormatError;
use crate::rng::Rng;

/// The UCI optical digits set as scikit-learn ships it: 1797 rows of 64
/// pixel values (0 to 16) and the label, with no header (see `DIGITS.md`).
const DIGITS_GZ: &[u8] = include_bytes!("digits.csv.gz");

/// The names `builtin("...")` accepts.
pub const BUILTINS: &[&str] = &["digits"];

/// Why a dataset could not be read. Every variant names the file as the
/// recipe wrote it.
#[derive(Debug, thiserror::Error)]
pub enum DataError {
    #[error("cannot read `{}`: {source}", path.display())]
    Read { path: PathBuf, source: io::Error },
    #[error("unknown builtin dataset `{name}`; known: {known}")]
    UnknownBuiltin { name: String, known: String },
    #[error("`{}` is empty: a header row naming the columns is required", path.display())]
    NoHeader { path: PathBuf },
    #[error("`{}` has no column `{label}`; its columns are {columns}", path.display())]
    NoLabelColumn { path: PathBuf, label: String, columns: String },
    #[error("`{}` row {row}: {found} cells, the header has {expected}", path.display())]
    Ragged { path: PathBuf, row: usize, found: usize, expected: usize },
    #[error("`{}` row {row}, column `{column}`: `{cell}` is not a number", path.display())]
    NotANumber { path: PathBuf, row: usize, column: String, cell: String },
    #[error("`{}` {place}: `{value}` is not a finite number", path.display())]
    NotFinite { path: PathBuf, place: String, value: String },
    #[error("`{}` {place}: label `{value}` is not a non-negative integer", path.display())]
    BadLabel { path: PathBuf, place: String, value: String },
    #[error(
        "`{}`: magic number 0x{found:08x} is not 0x{expected:08x}, that of IDX {what}",
        path.display()
    )]
    IdxMagic { path: PathBuf, found: u32, expected: u32, what: &'static str },
    #[error(
        "`{}` is truncated: its header promises {expected} bytes, it holds {actual}",
        path.display()
    )]
    Truncated { path: PathBuf, expected: u64, actual: u64 },
    #[error("`{}` has {extra} bytes after the {expected} its header describes", path.display())]
    TrailingBytes { path: PathBuf, expected: u64, extra: u64 },
    #[error(
        "`{}` holds {images} images but `{}` holds {labels} labels",
        images_path.display(),
        labels_path.display()
    )]
    CountMismatch { images_path: PathBuf, images: u64, labels_path: PathBuf, labels: u64 },
    #[error("`{}`: the gzip stream is corrupt or truncated: {source}", path.display())]
    Gzip { path: PathBuf, source: io::Error },
    #[error("`{}`, tensor `{name}`: {detail}", path.display())]
    Tensor { path: PathBuf, name: String, detail: String },
    #[error(transparent)]
    Format(#[from] FormatError),
}

/// A dataset in memory, split into its three parts.
#[derive(Debug, Clone)]
pub struct Dataset {
    /// The shape of one sample, e.g. `[64]`.
    pub features: Vec<usize>,
    /// One more than the largest label over all parts.
    pub classes: usize,
    pub train: Part,
    pub val: Part,
    pub test: Part,
}

impl Dataset {
    pub fn part(&self, split: Split) -> &Part {
        match split {
            Split::Train => &self.train,
            Split::Val => &self.val,
            Split::Test => &self.test,
        }
    }

    /// The facts [`peek`] reports, for the whole dataset.
    pub fn shape(&self) -> DataShape {
        DataShape {
            samples: self.train.n + self.val.n + self.test.n,
            features: self.features.clone(),
            classes: self.classes,
        }
    }
}

/// One part of a dataset: `n` samples.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Part {
    /// Features, row-major: `n` times the product of the feature shape.
    pub xs: Vec<f32>,
    /// Class indices, one per sample.
    pub ys: Vec<u32>,
    pub n: usize,
}

impl Part {
    /// The part as tensors: features `[n, ..features]` in f32 and labels
    /// `[n]` in u32.
    pub fn tensors(
        &self,
        features: &[usize],
        dev: &Device,
    ) -> candle_core::Result<(Tensor, Tensor)> {
        let mut shape = Vec::with_capacity(features.len() + 1);
        shape.push(self.n);
        shape.extend_from_slice(features);
        let xs = Tensor::from_slice(&self.xs, shape, dev)?;
        let ys = Tensor::from_slice(&self.ys, self.n, dev)?;
        Ok((xs, ys))
    }
}

/// What a reader returns: every sample, in file order. `xs` is empty when
/// the features were not asked for.
#[derive(Debug)]
struct Raw {
    features: Vec<usize>,
    xs: Vec<f32>,
    ys: Vec<u32>,
}

/// Header-level facts without building the features: used by the checker.
///
/// CSV files are read whole (the classes are counted from the label
/// column) but only the label cells are parsed; IDX files give their
/// image header and their labels; safetensors files their header and the
/// `y` tensor. A dataset with fewer than two classes is reported as it is.
pub fn peek(source: &Source, base_dir: &Path) -> Result<DataShape, DataError> {
    let raw = read(source, base_dir, false)?;
    Ok(DataShape { samples: raw.ys.len(), features: raw.features, classes: classes(&raw.ys) })
}

/// Read, shuffle, split and scale a dataset.
///
/// `seed` is the seed of this data block; the shuffle draws from
/// `Rng::new(seed, "shuffle")`. Scaling statistics come from the train
/// part only and are applied to all three, so nothing about the
/// validation or test samples leaks into training.
pub fn load(spec: &DataSpec, base_dir: &Path, seed: u64) -> Result<Dataset, DataError> {
    let raw = read(&spec.source, base_dir, true)?;
    let n = raw.ys.len();
    let dim: usize = raw.features.iter().product();
    let classes = classes(&raw.ys);

    // Shuffle before splitting, so each part is a random sample.
    let order: Vec<usize> =
        if spec.shuffle { Rng::new(seed, "shuffle").permutation(n) } else { (0..n).collect() };

    // Split into train, validation and test, in that order.
    let [n_train, n_val, _] = split_counts(n, spec.split);
    let gather = |idx: &[usize]| {
        let mut xs = Vec::with_capacity(idx.len() * dim);
        for &i in idx {
            xs.extend_from_slice(&raw.xs[i * dim..(i + 1) * dim]);
        }
        Part { xs, ys: idx.iter().map(|&i| raw.ys[i]).collect(), n: idx.len() }
    };
    let (train_idx, rest) = order.split_at(n_train);
    let (val_idx, test_idx) = rest.split_at(n_val);
    let mut train = gather(train_idx);
    let mut val = gather(val_idx);
    let mut test = gather(test_idx);

    // Fit the scaling on train, then apply it everywhere.
    if let Some(affine) = Affine::fit(spec.scale, &train.xs, dim) {
        for part in [&mut train, &mut val, &mut test] {
            affine.apply(&mut part.xs);
        }
    }

    Ok(Dataset { features: raw.features, classes, train, val, test })
}

/// The sizes of the train, validation and test parts: the first two are
/// rounded from the fractions, the test part takes what is left, and none
/// is negative even if the fractions are off.
pub fn split_counts(n: usize, split: [f64; 3]) -> [usize; 3] {
    // A float-to-integer cast saturates, so a negative fraction gives 0.
    let n_train = ((n as f64 * split[0]).round() as usize).min(n);
    let n_val = ((n as f64 * split[1]).round() as usize).min(n - n_train);
    [n_train, n_val, n - n_train - n_val]
}

/// A per-feature `(x - shift) / divisor`, fitted on the train part.
struct Affine {
    shift: Vec<f64>,
    divisor: Vec<f64>,
}

impl Affine {
    /// The transform for `scale` fitted on `xs` (rows of `dim` values), or
    /// `None` when there is nothing to do. Statistics are summed in f64,
    /// since f32 sums over many samples lose digits.
    fn fit(scale: Scale, xs: &[f32], dim: usize) -> Option<Affine> {
        if scale == Scale::None || xs.is_empty() || dim == 0 {
            return None;
        }
        let n = (xs.len() / dim) as f64;
        let mut min = vec![f64::INFINITY; dim];
        let mut max = vec![f64::NEG_INFINITY; dim];
        let mut sum = vec![0f64; dim];
        for row in xs.chunks_exact(dim) {
            for (j, &x) in row.iter().enumerate() {
                let x = f64::from(x);
                min[j] = min[j].min(x);
                max[j] = max[j].max(x);
                sum[j] += x;
            }
        }

        // A feature that does not vary on train gets divisor 1, so it maps
        // to a constant (0 on train) rather than to NaN. Comparing min and
        // max rather than the computed spread avoids dividing by a rounding
        // residue.
        let constant = |j: usize| min[j] == max[j];
        let affine = match scale {
            Scale::None => return None,
            Scale::MinMax => {
                let divisor = (0..dim).map(|j| if constant(j) { 1.0 } else { max[j] - min[j] });
                Affine { divisor: divisor.collect(), shift: min }
            }
            Scale::Standard => {
                let mean: Vec<f64> = sum.iter().map(|s| s / n).collect();
                let mut sq = vec![0f64; dim];
                for row in xs.chunks_exact(dim) {
                    for (j, &x) in row.iter().enumerate() {
                        sq[j] += (f64::from(x) - mean[j]).powi(2);
                    }
                }
                // The population deviation (divide by n), as scikit-learn's
                // StandardScaler uses.
                let divisor = (0..dim).map(|j| if constant(j) { 1.0 } else { (sq[j] / n).sqrt() });
                Affine { divisor: divisor.collect(), shift: mean }
            }
        };
        Some(affine)
    }

    fn apply(&self, xs: &mut [f32]) {
        let dim = self.shift.len();
        for row in xs.chunks_exact_mut(dim) {
            for (j, x) in row.iter_mut().enumerate() {
                *x = ((f64::from(*x) - self.shift[j]) / self.divisor[j]) as f32;
            }
        }
    }
}

/// One more than the largest label, or 0 for no samples.
fn classes(ys: &[u32]) -> usize {
    ys.iter().max().map_or(0, |&m| m as usize + 1)
}

/// A recipe path resolved against the recipe's folder.
fn resolve(base_dir: &Path, path: &Path) -> PathBuf {
    if path.is_absolute() {
        path.to_owned()
    } else {
        base_dir.join(path)
    }
}

/// Read every sample of `source`; the features only when `features` is
/// set.
fn read(source: &Source, base_dir: &Path, features: bool) -> Result<Raw, DataError> {
    match source {
        Source::Builtin(name) => builtin(name, features),
        Source::Csv { path, label } => {
            let text = std::fs::read(resolve(base_dir, path))
                .map_err(|source| DataError::Read { path: path.clone(), source })?;
            let text = String::from_utf8(text).map_err(|e| DataError::Read {
                path: path.clone(),
                source: io::Error::new(io::ErrorKind::InvalidData, e.utf8_error()),
            })?;
            // A CSV is already read whole to count its classes; parsing
            // every cell as well moves a bad cell from an error halfway
            // through a run to one at check time.
            let _ = features;
            csv::parse(&text, path, csv::LabelColumn::Named(label), true)
        }
        Source::Idx { images, labels } => idx::read(base_dir, images, labels, features),
        Source::Safetensors { path, x, y } => tensors::read(base_dir, path, x, y, features),
    }
}

fn builtin(name: &str, features: bool) -> Result<Raw, DataError> {
    let shown = PathBuf::from(format!("builtin(\"{name}\")"));
    match name {
        "digits" => {
            // Decoded once per process: a check, a plan and every data step read it.
            static DIGITS: std::sync::OnceLock<Result<Raw, String>> = std::sync::OnceLock::new();
            let raw = DIGITS.get_or_init(|| {
                let mut text = String::new();
                flate2::read::GzDecoder::new(DIGITS_GZ)
                    .read_to_string(&mut text)
                    .map_err(|e| e.to_string())?;
                csv::parse(&text, &shown, csv::LabelColumn::LastNoHeader, true)
                    .map_err(|e| e.to_string())
            });
            let raw = raw.as_ref().map_err(|e| DataError::Gzip {
                path: shown.clone(),
                source: io::Error::other(e.clone()),
            })?;
            let xs = if features { raw.xs.clone() } else { Vec::new() };
            Ok(Raw { features: raw.features.clone(), xs, ys: raw.ys.clone() })
        }
        _ => {
            let known: Vec<String> = BUILTINS.iter().map(|b| format!("`{b}`")).collect();
            Err(DataError::UnknownBuiltin { name: name.to_owned(), known: known.join(", ") })
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn digits(shuffle: bool, scale: Scale) -> DataSpec {
        DataSpec {
            source: Source::Builtin("digits".to_owned()),
            split: [0.7, 0.15, 0.15],
            shuffle,
            scale,
            shape: DataShape { samples: 1797, features: vec![64], classes: 10 },
        }
    }

    #[test]
    fn digits_has_the_published_shape() {
        let shape = peek(&Source::Builtin("digits".to_owned()), Path::new(".")).unwrap();
        assert_eq!(shape, DataShape { samples: 1797, features: vec![64], classes: 10 });

        let data = load(&digits(false, Scale::None), Path::new("."), 1).unwrap();
        assert_eq!(data.shape(), shape);
        let mut counts = [0usize; 10];
        for split in [Split::Train, Split::Val, Split::Test] {
            let part = data.part(split);
            assert_eq!(part.xs.len(), part.n * 64);
            for &y in &part.ys {
                counts[y as usize] += 1;
            }
        }
        // The reference counts are `numpy.bincount(sklearn.datasets.load_digits().target)`.
        assert_eq!(counts, [178, 182, 177, 183, 181, 182, 181, 179, 174, 180]);
        assert_eq!(counts.iter().sum::<usize>(), 1797);

        // Unscaled pixels are the integers 0 to 16.
        let all = data.train.xs.iter().chain(&data.val.xs).chain(&data.test.xs);
        assert!(all.copied().all(|x| (0.0..=16.0).contains(&x) && x.fract() == 0.0));
    }

    #[test]
    fn unknown_builtin_lists_the_known_ones() {
        let err = peek(&Source::Builtin("mnist".to_owned()), Path::new(".")).unwrap_err();
        assert_eq!(err.to_string(), "unknown builtin dataset `mnist`; known: `digits`");
    }

    #[test]
    fn split_sizes_round_and_sum() {
        // 1797 * 0.7 = 1257.9 and 1797 * 0.15 = 269.55 round up; test takes the rest.
        assert_eq!(split_counts(1797, [0.7, 0.15, 0.15]), [1258, 270, 269]);
        assert_eq!(split_counts(10, [0.8, 0.0, 0.2]), [8, 0, 2]);
        assert_eq!(split_counts(3, [0.9, 0.9, 0.0]), [3, 0, 0]);
        assert_eq!(split_counts(0, [0.7, 0.15, 0.15]), [0, 0, 0]);
        let data = load(&digits(true, Scale::None), Path::new("."), 1).unwrap();
        assert_eq!([data.train.n, data.val.n, data.test.n], [1258, 270, 269]);
    }

    #[test]
    fn shuffle_is_seeded() {
        let spec = digits(true, Scale::None);
        let a = load(&spec, Path::new("."), 7).unwrap();
        let b = load(&spec, Path::new("."), 7).unwrap();
        let c = load(&spec, Path::new("."), 8).unwrap();
        assert_eq!(a.train, b.train);
        assert_ne!(a.train.ys, c.train.ys);
        let unshuffled = load(&digits(false, Scale::None), Path::new("."), 7).unwrap();
        assert_ne!(a.train.ys, unshuffled.train.ys);

        // A shuffle moves samples without changing them: the label counts hold.
        let count = |d: &Dataset| {
            let mut ys: Vec<u32> =
                [&d.train, &d.val, &d.test].iter().flat_map(|p| p.ys.clone()).collect();
            ys.sort();
            ys
        };
        assert_eq!(count(&a), count(&unshuffled));
    }

    /// Per-feature mean and population deviation of `part`, in f64.
    fn moments(part: &Part, dim: usize) -> Vec<(f64, f64)> {
        (0..dim)
            .map(|j| {
                let col: Vec<f64> =
                    part.xs.iter().skip(j).step_by(dim).map(|&x| x.into()).collect();
                let n = col.len() as f64;
                let mean = col.iter().sum::<f64>() / n;
                let var = col.iter().map(|x| (x - mean).powi(2)).sum::<f64>() / n;
                (mean, var.sqrt())
            })
            .collect()
    }

    #[test]
    fn standard_scaling_centres_train() {
        let data = load(&digits(true, Scale::Standard), Path::new("."), 3).unwrap();
        let mut constant = 0;
        for (j, (mean, std)) in moments(&data.train, 64).into_iter().enumerate() {
            // The scaled values are rounded to f32 (relative error 6e-8) and
            // reach about 40 in magnitude for rare pixels, so the moments are
            // exact to a few 1e-6; 1e-5 leaves room.
            assert!(mean.abs() < 1e-5, "feature {j}: mean {mean}");
            if std == 0.0 {
                constant += 1;
            } else {
                assert!((std - 1.0).abs() < 1e-5, "feature {j}: std {std}");
            }
        }
        // Some border pixels of the digits are always 0: they stay 0, not NaN.
        assert!(constant > 0);
        let all = data.train.xs.iter().chain(&data.val.xs).chain(&data.test.xs);
        assert!(all.copied().all(f32::is_finite));
    }

    #[test]
    fn minmax_scaling_maps_train_to_unit_range() {
        let data = load(&digits(true, Scale::MinMax), Path::new("."), 3).unwrap();
        for j in 0..64 {
            let col = data.train.xs.iter().skip(j).step_by(64).copied();
            let (lo, hi) =
                col.fold((f32::INFINITY, f32::NEG_INFINITY), |(lo, hi), x| (lo.min(x), hi.max(x)));
            assert_eq!(lo, 0.0, "feature {j}");
            assert!(hi == 1.0 || hi == 0.0, "feature {j}: max {hi}");
        }
    }

    #[test]
    fn parts_become_tensors() {
        let data = load(&digits(false, Scale::None), Path::new("."), 0).unwrap();
        let (xs, ys) = data.test.tensors(&data.features, &Device::Cpu).unwrap();
        assert_eq!(xs.dims(), [269, 64]);
        assert_eq!(ys.dims(), [269]);
        assert_eq!(ys.dtype(), candle_core::DType::U32);
    }
}

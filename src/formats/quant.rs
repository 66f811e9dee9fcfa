//! The integer quantization layout: takes `f32` weights and an [`IntScheme`] (int8 or int4,
//! symmetric or asymmetric, one scale per tensor, per row or per group of a row) and returns
//! an [`IntTensor`] of integers, scales and zero points; turns such tensors into safetensors
//! tensors plus a metadata entry, and a file's tensors and metadata back into them.
//!
//! # Rows and groups
//!
//! A tensor of shape `[out, d1, d2, ..]` has `out` rows of `d1 * d2 * ..` entries each, in
//! row-major order. A rank-1 tensor is a single row; a rank-0 tensor cannot be quantized.
//! The granularity says which entries share a scale and a zero point:
//!
//! - `per_tensor`: all of them; the scales have shape `[1]`.
//! - `per_channel`: each row; shape `[out]`.
//! - `group(g)`: each run of `g` consecutive entries of a row; shape `[out, row / g]`, where
//!   `g` must divide the row length.
//!
//! # The mapping
//!
//! With `b` bits the integers lie in `qmin..=qmax`, that is `-2^(b-1)..=2^(b-1) - 1`
//! (int8 `-128..=127`, int4 `-8..=7`). Each group gets, in `f32`:
//!
//! - symmetric: zero point 0 and `scale = max|w| / (2^(b-1) - 1)` (int8 `/ 127`, int4 `/ 7`);
//! - asymmetric: with `lo = min(min w, 0)` and `hi = max(max w, 0)`, so that the range always
//!   holds zero as PyTorch's observers make it, `scale = (hi - lo) / (qmax - qmin)` and
//!   `zero_point = clamp(qmin - round(lo / scale), qmin, qmax)`.
//!
//! A group whose scale comes out 0 (all its entries are zero) gets scale 1.0 instead, so that
//! every entry quantizes to the zero point; so does a group whose scale is so small that
//! `1 / scale` overflows `f32` (for int8, a largest magnitude below about 4e-37), whose
//! entries then all quantize to the zero point too. NaN entries are left out when the range
//! is measured.
//!
//! Each entry is then mapped as PyTorch's CPU kernel for `torch.quantize_per_channel` maps it
//! (fbgemm's `Quantize` in the form PyTorch calls it), so that the integers equal its
//! `int_repr()` bit for bit:
//!
//! ```text
//! q = clamp(zero_point + round(w * (1 / scale)), qmin, qmax)
//! ```
//!
//! with the reciprocal and the product in `f32` and `round` half to even. The zero point is
//! added after rounding, as PyTorch does: adding it before would round an odd zero point plus
//! a half the other way. A NaN entry becomes 0 (not the zero point), as it does in
//! PyTorch on x86-64. An infinite entry makes its group's scale infinite and the group
//! dequantizes to NaN: the layout is meant for finite weights.
//!
//! Dequantization is `(q - zero_point) * scale` in `f32`. In a group of finite entries every
//! entry comes back within `scale / 2` (up to `f32` rounding), and zeros come back exactly
//! zero for every scheme: the range holds zero, so zero maps to the zero point.
//!
//! # Storage
//!
//! Quantized tensor `NAME` is stored in a safetensors file as up to three tensors:
//!
//! - `NAME.qweight`: for int8, `I8` with the tensor's shape. For int4, `U8` of shape
//!   `[ceil(n / 2)]` for `n` entries, two to a byte: entry `2i` in the low nibble of byte `i`
//!   and entry `2i + 1` in the high nibble, each as 4-bit two's complement; after an odd last
//!   entry the high nibble is 0.
//! - `NAME.scale`: `F32` of the scale shape above.
//! - `NAME.zero_point`: `I8` of the scale shape; written for asymmetric schemes only, as a
//!   symmetric scheme's zero points are all 0.
//!
//! The file's metadata key `quantization` holds a JSON object from each such `NAME` to
//! `{"scheme": "int8" | "int4", "granularity": "per_tensor" | "per_channel" | "group(G)",
//! "symmetric": BOOL, "shape": [...]}`, so that a reader knows which tensors to rebuild and
//! the checker knows the logical tensors from the header alone. Tensors and index entries are
//! written in name order, so the same input always gives the same bytes.

use std::collections::{BTreeMap, BTreeSet};

use rayon::prelude::*;
use serde::{Deserialize, Serialize};

use super::safetensors::{Dtype, RawTensor, Tensors};
use crate::check::spec::{Granularity, TensorInfo};

/// The metadata key that lists the quantized tensors.
pub const METADATA_KEY: &str = "quantization";

/// Entries per unit of parallel work: 64 KiB of `f32`, small enough to balance two or many
/// threads, large enough that scheduling costs nothing next to the work.
const CHUNK: usize = 1 << 14;

/// Independent running minima and maxima kept by the range folds; see [`abs_max`].
const LANES: usize = 8;

/// `1.5 * 2^23`; adding it rounds to an integer, see [`round_add`].
const MAGIC: f32 = 12_582_912.0;

/// The bit pattern of [`MAGIC`].
const MAGIC_BITS: i32 = MAGIC.to_bits() as i32;

/// How a tensor is quantized: the integer width, whether the zero point is fixed at 0, and
/// which entries share a scale.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct IntScheme {
    /// 8 or 4.
    pub bits: u32,
    pub symmetric: bool,
    pub granularity: Granularity,
}

impl IntScheme {
    /// The integer range, `qmin..=qmax`.
    fn range(self) -> (i32, i32) {
        let half = 1 << (self.bits.clamp(1, 8) - 1);
        (-half, half - 1)
    }

    /// The name of the integer type in the metadata.
    fn type_name(self) -> String {
        format!("int{}", self.bits)
    }

    /// The scale and zero point of a group with entries `xs`.
    #[inline]
    fn params(self, xs: &[f32]) -> (f32, i8) {
        if self.symmetric {
            self.symmetric_params(abs_max(xs))
        } else {
            let (lo, hi) = min_max(xs);
            self.asymmetric_params(lo, hi)
        }
    }

    fn symmetric_params(self, amax: f32) -> (f32, i8) {
        (usable(amax / self.range().1 as f32), 0)
    }

    /// `lo <= 0 <= hi`, as the folds make them.
    fn asymmetric_params(self, lo: f32, hi: f32) -> (f32, i8) {
        let (qmin, qmax) = self.range();
        let scale = usable((hi - lo) / (qmax - qmin) as f32);
        let zero_point =
            (qmin as f32 - (lo / scale).round_ties_even()).clamp(qmin as f32, qmax as f32);
        // The value is an integer in `qmin..=qmax`, or NaN for an infinite range, which the
        // saturating cast turns into 0.
        (scale, zero_point as i8)
    }
}

/// The scale to use for a computed one: itself, or 1.0 when it is 0 or its reciprocal is
/// not a finite `f32`, so that quantization never multiplies by infinity.
fn usable(scale: f32) -> f32 {
    if scale > 0.0 && (1.0 / scale).is_finite() {
        scale
    } else {
        1.0
    }
}

/// A tensor quantized to integers: one integer per entry and a scale and zero point per
/// group of entries, as the module documentation describes.
#[derive(Debug, Clone, PartialEq)]
pub struct IntTensor {
    pub scheme: IntScheme,
    pub shape: Vec<usize>,
    /// One per entry, row-major, unpacked: int4 values lie in `-8..=7`.
    pub values: Vec<i8>,
    /// One per group, row-major over [`IntTensor::scale_shape`].
    pub scales: Vec<f32>,
    /// As many as `scales`; all 0 for a symmetric scheme.
    pub zero_points: Vec<i8>,
}

/// Why a tensor cannot be quantized or a quantized file cannot be read.
#[derive(Debug, thiserror::Error, miette::Diagnostic, PartialEq, Eq)]
pub enum QuantError {
    #[error("{bits}-bit integers are not supported")]
    #[diagnostic(code(recipe::quant::bits), help("the integer layout has int8 and int4"))]
    Bits { bits: u32 },
    #[error("a rank-0 tensor has no rows to quantize")]
    #[diagnostic(code(recipe::quant::rank))]
    Rank0,
    #[error("rows of {row_len} entries do not split into groups of {group}")]
    #[diagnostic(
        code(recipe::quant::group_size),
        help("the group size must be at least 1 and divide the row length")
    )]
    GroupSize { row_len: usize, group: usize },
    #[error("{len} values do not fill a tensor of shape {shape:?}")]
    #[diagnostic(code(recipe::quant::length))]
    Length { len: usize, shape: Vec<usize> },
    #[error("the `quantization` metadata is not valid: {0}")]
    #[diagnostic(code(recipe::quant::metadata))]
    Metadata(String),
    #[error("quantized tensor `{name}` lacks `{part}`")]
    #[diagnostic(code(recipe::quant::missing))]
    Missing { name: String, part: String },
    #[error("quantized tensor `{name}` is inconsistent: {reason}")]
    #[diagnostic(code(recipe::quant::inconsistent))]
    Inconsistent { name: String, reason: String },
}

/// How a shape splits into rows and groups under a granularity.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct Layout {
    /// Entries in all.
    n: usize,
    rows: usize,
    row_len: usize,
    /// Entries per scale: `n`, `row_len` or the group size.
    group: usize,
    /// Scales in all.
    n_groups: usize,
}

impl Layout {
    /// The layout of `shape`, `None` when its entry count overflows `usize`, or why the
    /// granularity does not fit it.
    fn new(shape: &[usize], granularity: Granularity) -> Result<Option<Layout>, QuantError> {
        if shape.is_empty() {
            return Err(QuantError::Rank0);
        }
        let Some((rows, row_len)) = rows(shape) else { return Ok(None) };
        let n = rows * row_len;
        let (group, n_groups) = match granularity {
            Granularity::PerTensor => (n, 1),
            Granularity::PerChannel => (row_len, rows),
            Granularity::Group(g) => {
                if g == 0 || !row_len.is_multiple_of(g) {
                    return Err(QuantError::GroupSize { row_len, group: g });
                }
                (g, rows * (row_len / g))
            }
        };
        Ok(Some(Layout { n, rows, row_len, group, n_groups }))
    }
}

/// The rows of a shape and the entries in each, or `None` when the entry count overflows;
/// a rank-1 tensor is one row, and a rank-0 one a row of one entry.
fn rows(shape: &[usize]) -> Option<(usize, usize)> {
    let product = |dims: &[usize]| dims.iter().try_fold(1usize, |acc, &d| acc.checked_mul(d));
    let (rows, row_len) = match shape {
        [] | [_] => (1, product(shape)?),
        [out, rest @ ..] => (*out, product(rest)?),
    };
    rows.checked_mul(row_len)?;
    Some((rows, row_len))
}

/// The scale shape of a layout; see the module documentation.
fn scale_shape(granularity: Granularity, rows: usize, row_len: usize) -> Vec<usize> {
    match granularity {
        Granularity::PerTensor => vec![1],
        Granularity::PerChannel => vec![rows],
        Granularity::Group(g) => vec![rows, row_len.checked_div(g).unwrap_or(0)],
    }
}

fn check_bits(bits: u32) -> Result<(), QuantError> {
    match bits {
        4 | 8 => Ok(()),
        _ => Err(QuantError::Bits { bits }),
    }
}

impl IntTensor {
    /// Quantize `xs`, a tensor of `shape` in row-major order, with `scheme`.
    ///
    /// Fails for a width other than 8 or 4, a rank-0 shape, a group size that does not
    /// divide the row length, or a slice whose length is not the shape's entry count.
    ///
    /// ```
    /// use recipe::check::spec::Granularity;
    /// use recipe::formats::quant::{IntScheme, IntTensor};
    ///
    /// let scheme = IntScheme { bits: 8, symmetric: true, granularity: Granularity::PerChannel };
    /// let xs = [127.0, -63.5, 0.0, 0.0, 3.0, -254.0];
    /// let q = IntTensor::quantize(&xs, &[2, 3], scheme)?;
    /// assert_eq!(q.scale_shape(), [2]);
    /// assert_eq!(q.scales, [1.0, 2.0]);
    /// // -63.5 is a tie and goes to the even -64; 3.0 / 2.0 likewise to 2.
    /// assert_eq!(q.values, [127, -64, 0, 0, 2, -127]);
    /// assert_eq!(q.dequantize(), [127.0, -64.0, 0.0, 0.0, 4.0, -254.0]);
    /// # Ok::<(), recipe::formats::quant::QuantError>(())
    /// ```
    pub fn quantize(
        xs: &[f32],
        shape: &[usize],
        scheme: IntScheme,
    ) -> Result<IntTensor, QuantError> {
        check_bits(scheme.bits)?;
        let length = || QuantError::Length { len: xs.len(), shape: shape.to_vec() };
        let layout = Layout::new(shape, scheme.granularity)?.ok_or_else(length)?;
        if layout.n != xs.len() {
            return Err(length());
        }
        let bounds = scheme.range();
        let mut values = vec![0i8; layout.n];
        let mut scales = vec![0f32; layout.n_groups];
        let mut zero_points = vec![0i8; layout.n_groups];

        if scheme.granularity == Granularity::PerTensor {
            // One range over the whole tensor first, then every chunk with the same scale.
            let (scale, zero_point) = if scheme.symmetric {
                let amax = xs.par_chunks(CHUNK).map(abs_max).reduce(|| 0.0, max_of);
                scheme.symmetric_params(amax)
            } else {
                let (lo, hi) = xs
                    .par_chunks(CHUNK)
                    .map(min_max)
                    .reduce(|| (0.0, 0.0), |a, b| (min_of(a.0, b.0), max_of(a.1, b.1)));
                scheme.asymmetric_params(lo, hi)
            };
            values.par_chunks_mut(CHUNK).zip(xs.par_chunks(CHUNK)).for_each(|(qs, xs)| {
                quantize_run(xs, qs, scale, zero_point, bounds);
            });
            scales[0] = scale;
            zero_points[0] = zero_point;
        } else if let Some(per_task) = CHUNK.checked_div(layout.group) {
            // Each task takes whole groups, measuring a group while it is still in the cache
            // and quantizing it right after: the input is read from memory once.
            let per_task = per_task.max(1);
            let span = per_task * layout.group;
            values
                .par_chunks_mut(span)
                .zip(xs.par_chunks(span))
                .zip(scales.par_chunks_mut(per_task).zip(zero_points.par_chunks_mut(per_task)))
                .for_each(|((qs, xs), (ss, zs))| {
                    let groups =
                        qs.chunks_exact_mut(layout.group).zip(xs.chunks_exact(layout.group));
                    for ((qs, xs), (s, z)) in groups.zip(ss.iter_mut().zip(zs.iter_mut())) {
                        let (scale, zero_point) = scheme.params(xs);
                        quantize_run(xs, qs, scale, zero_point, bounds);
                        *s = scale;
                        *z = zero_point;
                    }
                });
        } else {
            // Rows without entries still have a scale each, that of an empty range.
            let (scale, zero_point) = scheme.params(&[]);
            scales.fill(scale);
            zero_points.fill(zero_point);
        }

        Ok(IntTensor { scheme, shape: shape.to_vec(), values, scales, zero_points })
    }

    /// The values back in `f32`: `(q - zero_point) * scale` per entry.
    ///
    /// # Panics
    ///
    /// When the parts disagree with the shape and scheme, which cannot happen to a tensor
    /// made by [`IntTensor::quantize`] or [`decode`].
    pub fn dequantize(&self) -> Vec<f32> {
        let layout = Layout::new(&self.shape, self.scheme.granularity)
            .ok()
            .flatten()
            .filter(|l| {
                l.n == self.values.len()
                    && l.n_groups == self.scales.len()
                    && l.n_groups == self.zero_points.len()
            })
            .expect("the quantized tensor's parts agree with its shape and scheme");
        let mut ys = vec![0f32; layout.n];

        if self.scheme.granularity == Granularity::PerTensor {
            let (scale, zero_point) = (self.scales[0], self.zero_points[0]);
            ys.par_chunks_mut(CHUNK).zip(self.values.par_chunks(CHUNK)).for_each(|(ys, qs)| {
                dequantize_run(qs, ys, scale, zero_point);
            });
        } else if let Some(per_task) = CHUNK.checked_div(layout.group) {
            let per_task = per_task.max(1);
            let span = per_task * layout.group;
            let params =
                self.scales.par_chunks(per_task).zip(self.zero_points.par_chunks(per_task));
            ys.par_chunks_mut(span).zip(self.values.par_chunks(span)).zip(params).for_each(
                |((ys, qs), (ss, zs))| {
                    let groups =
                        ys.chunks_exact_mut(layout.group).zip(qs.chunks_exact(layout.group));
                    for ((ys, qs), (&scale, &zero_point)) in groups.zip(ss.iter().zip(zs)) {
                        dequantize_run(qs, ys, scale, zero_point);
                    }
                },
            );
        }
        ys
    }

    /// The shape of the scales and zero points: `[1]` per tensor, `[out]` per channel and
    /// `[out, row / g]` per group of `g`, where a rank-1 tensor has one row.
    pub fn scale_shape(&self) -> Vec<usize> {
        let (rows, row_len) = rows(&self.shape).unwrap_or((0, 0));
        scale_shape(self.scheme.granularity, rows, row_len)
    }

    /// The bytes of the tensors [`encode`] writes for this one: the integers (two to a byte
    /// for int4), four per scale, and one per zero point when the scheme is asymmetric.
    pub fn stored_bytes(&self) -> usize {
        let values =
            if self.scheme.bits == 4 { self.values.len().div_ceil(2) } else { self.values.len() };
        let zero_points = if self.scheme.symmetric { 0 } else { self.zero_points.len() };
        values + 4 * self.scales.len() + zero_points
    }
}

/// Quantize then dequantize, for quantization-aware training: the values the quantized tensor
/// stands for, in `f32`, with the errors of [`IntTensor::quantize`].
pub fn fake_quantize(
    xs: &[f32],
    shape: &[usize],
    scheme: IntScheme,
) -> Result<Vec<f32>, QuantError> {
    Ok(IntTensor::quantize(xs, shape, scheme)?.dequantize())
}

/// The larger of two magnitudes, the first when they tie or the second is NaN.
#[inline(always)]
fn max_of(m: f32, a: f32) -> f32 {
    if a > m {
        a
    } else {
        m
    }
}

/// The smaller of two values, the first when they tie or the second is NaN.
#[inline(always)]
fn min_of(m: f32, a: f32) -> f32 {
    if a < m {
        a
    } else {
        m
    }
}

/// The largest `|w|` of `xs`, NaNs left out; 0 for an empty slice.
fn abs_max(xs: &[f32]) -> f32 {
    // A single running maximum is a chain of dependent steps that the compiler will not
    // reorder into vector lanes without fast-math flags, which Rust never sets. Eight
    // independent maxima are that reordering written out: they fill two SSE registers and
    // each step is one `maxps`. `max_of` is branch-free, a compare and a select.
    let mut acc = [0f32; LANES];
    let mut blocks = xs.chunks_exact(LANES);
    for block in &mut blocks {
        for (m, &w) in acc.iter_mut().zip(block) {
            *m = max_of(*m, w.abs());
        }
    }
    let tail = blocks.remainder().iter().fold(0f32, |m, &w| max_of(m, w.abs()));
    acc.into_iter().fold(tail, max_of)
}

/// The smallest and largest entries of `xs` widened to hold 0, NaNs left out; `(0, 0)` for
/// an empty slice.
fn min_max(xs: &[f32]) -> (f32, f32) {
    // Lanes as in `abs_max`; starting every lane at 0 is what puts 0 inside the range.
    let (mut lo, mut hi) = ([0f32; LANES], [0f32; LANES]);
    let mut blocks = xs.chunks_exact(LANES);
    for block in &mut blocks {
        for ((l, h), &w) in lo.iter_mut().zip(hi.iter_mut()).zip(block) {
            *l = min_of(*l, w);
            *h = max_of(*h, w);
        }
    }
    let tail =
        blocks.remainder().iter().fold((0f32, 0f32), |(l, h), &w| (min_of(l, w), max_of(h, w)));
    let lo = lo.into_iter().fold(tail.0, min_of);
    let hi = hi.into_iter().fold(tail.1, max_of);
    (lo, hi)
}

/// `round(t) + zero_point` as an integer, `round` half to even, for `|t| <= 2^22 - 256`
/// and `|zero_point| <= 128`; NaN gives an arbitrary value, which callers replace.
///
/// `t + 1.5 * 2^23` lies in `[2^23, 2^24)`, where consecutive `f32` values are exactly 1
/// apart, so the addition itself rounds `t` to the nearest integer, ties to the even one in
/// the default rounding mode (`1.5 * 2^23` is even, so the parity of the tie is that of
/// `round(t)`). Adding the integer zero point stays in that range and is exact. There the
/// bit pattern of an `f32` grows by one per unit, so subtracting the pattern of
/// `1.5 * 2^23` leaves `round(t) + zero_point`. Without SSE4.1, `f32::round_ties_even` is a
/// call into libm for each value and a saturating `f32` to `i32` cast is a branch per lane,
/// while these additions and the pattern arithmetic vectorise.
#[inline(always)]
fn round_add(t: f32, zero_point: f32) -> i32 {
    ((t + MAGIC) + zero_point).to_bits() as i32 - MAGIC_BITS
}

/// Dequantize `qs` into `ys` with one scale and zero point.
#[inline]
fn dequantize_run(qs: &[i8], ys: &mut [f32], scale: f32, zero_point: i8) {
    let zp = f32::from(zero_point);
    for (y, &q) in ys.iter_mut().zip(qs) {
        *y = (f32::from(q) - zp) * scale;
    }
}

/// Quantize `xs` into `qs` with one scale and zero point, as the module documentation says.
#[inline]
fn quantize_run(xs: &[f32], qs: &mut [i8], scale: f32, zero_point: i8, (qmin, qmax): (i32, i32)) {
    let inv = 1.0 / scale;
    let zp = f32::from(zero_point);

    // Clamping to the bounds less the zero point before rounding gives the same integers as
    // clamping after adding it: the bounds are integers and rounding is monotone. Clamping
    // first keeps `|t| <= 255` for `round_add`. NaN fails both comparisons and stays NaN,
    // and is then mapped to 0 as PyTorch's cast maps it; the select is a mask, not a branch.
    let (lo, hi) = (qmin as f32 - zp, qmax as f32 - zp);
    for (q, &w) in qs.iter_mut().zip(xs) {
        let t = w * inv;
        let t = if t < lo { lo } else { t };
        let t = if t > hi { hi } else { t };
        let v = round_add(t, zp);
        *q = if t.is_nan() { 0 } else { v as i8 };
    }
}

// ---------------------------------------------------------------------------
// storage

/// One tensor's entry in the `quantization` metadata.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
struct Entry {
    scheme: String,
    granularity: String,
    symmetric: bool,
    shape: Vec<usize>,
}

impl Entry {
    fn of(t: &IntTensor) -> Entry {
        let granularity = match t.scheme.granularity {
            Granularity::PerTensor => "per_tensor".to_string(),
            Granularity::PerChannel => "per_channel".to_string(),
            Granularity::Group(g) => format!("group({g})"),
        };
        Entry {
            scheme: t.scheme.type_name(),
            granularity,
            symmetric: t.scheme.symmetric,
            shape: t.shape.clone(),
        }
    }

    /// The scheme this entry names, or what is wrong with it.
    fn scheme(&self, name: &str) -> Result<IntScheme, QuantError> {
        let bad = |what: String| QuantError::Metadata(format!("tensor `{name}`: {what}"));
        let bits = match self.scheme.as_str() {
            "int8" => 8,
            "int4" => 4,
            other => return Err(bad(format!("unknown scheme `{other}`, not `int8` or `int4`"))),
        };
        let granularity = match self.granularity.as_str() {
            "per_tensor" => Granularity::PerTensor,
            "per_channel" => Granularity::PerChannel,
            other => other
                .strip_prefix("group(")
                .and_then(|rest| rest.strip_suffix(')'))
                .and_then(|g| g.parse().ok())
                .map(Granularity::Group)
                .ok_or_else(|| {
                    bad(format!(
                        "unknown granularity `{other}`, not `per_tensor`, `per_channel` or \
                         `group(G)`"
                    ))
                })?,
        };
        Ok(IntScheme { bits, symmetric: self.symmetric, granularity })
    }

    /// The scheme and layout, or what is wrong with them.
    fn layout(&self, name: &str) -> Result<(IntScheme, Layout), QuantError> {
        let scheme = self.scheme(name)?;
        let bad = |reason: String| QuantError::Inconsistent { name: name.to_string(), reason };
        match Layout::new(&self.shape, scheme.granularity) {
            Ok(Some(layout)) => Ok((scheme, layout)),
            Ok(None) => Err(bad(format!("the shape {:?} has too many entries", self.shape))),
            Err(e) => Err(bad(e.to_string())),
        }
    }
}

fn parse_index(
    metadata: &BTreeMap<String, String>,
) -> Result<Option<BTreeMap<String, Entry>>, QuantError> {
    let Some(index) = metadata.get(METADATA_KEY) else { return Ok(None) };
    serde_json::from_str(index).map(Some).map_err(|e| QuantError::Metadata(e.to_string()))
}

/// A stored part as a header describes it.
struct Part<'a> {
    dtype: String,
    shape: &'a [usize],
}

impl<'a> Part<'a> {
    fn of_raw(t: &'a RawTensor) -> Part<'a> {
        Part { dtype: t.dtype.to_string(), shape: &t.shape }
    }

    fn of_info(t: &'a TensorInfo) -> Part<'a> {
        Part { dtype: t.dtype.clone(), shape: &t.shape }
    }
}

/// Whether the stored parts of `name` have the dtypes and shapes its scheme and layout call
/// for; `zero_point` is `None` when the file has none.
fn check_parts(
    name: &str,
    scheme: IntScheme,
    layout: &Layout,
    shape: &[usize],
    qweight: Part,
    scale: Part,
    zero_point: Option<Part>,
) -> Result<(), QuantError> {
    let scales = scale_shape(scheme.granularity, layout.rows, layout.row_len);
    let packed = [layout.n.div_ceil(2)];
    let (qweight_dtype, qweight_shape) =
        if scheme.bits == 4 { (Dtype::U8, &packed[..]) } else { (Dtype::I8, shape) };
    let expected = [
        ("qweight", Some(qweight), qweight_dtype, qweight_shape),
        ("scale", Some(scale), Dtype::F32, &scales[..]),
        ("zero_point", zero_point, Dtype::I8, &scales[..]),
    ];
    for (part, found, dtype, shape) in expected {
        let Some(found) = found else { continue };
        if found.dtype != dtype.to_string() || found.shape != shape {
            return Err(QuantError::Inconsistent {
                name: name.to_string(),
                reason: format!(
                    "`{name}.{part}` is {} of shape {:?}, where {} of shape {shape:?} was expected",
                    found.dtype, found.shape, dtype
                ),
            });
        }
    }
    Ok(())
}

/// Store each quantized tensor as the safetensors tensors the module documentation lists;
/// returns them, in name order, and the JSON for the metadata key [`METADATA_KEY`].
///
/// The tensors are expected as [`IntTensor::quantize`] and [`decode`] make them; parts that
/// disagree with the shape are written as they are, and [`decode`] then rejects the file.
pub fn encode(quantized: &BTreeMap<String, IntTensor>) -> (BTreeMap<String, RawTensor>, String) {
    let mut out = BTreeMap::new();
    let mut index = BTreeMap::new();
    for (name, t) in quantized {
        let qweight = if t.scheme.bits == 4 {
            let data = pack_int4(&t.values);
            RawTensor { dtype: Dtype::U8, shape: vec![data.len()], data }
        } else {
            let data = t.values.iter().map(|&v| v as u8).collect();
            RawTensor { dtype: Dtype::I8, shape: t.shape.clone(), data }
        };
        out.insert(format!("{name}.qweight"), qweight);

        let scale_shape = t.scale_shape();
        let data = t.scales.iter().flat_map(|s| s.to_le_bytes()).collect();
        out.insert(
            format!("{name}.scale"),
            RawTensor { dtype: Dtype::F32, shape: scale_shape.clone(), data },
        );
        if !t.scheme.symmetric {
            let data = t.zero_points.iter().map(|&z| z as u8).collect();
            out.insert(
                format!("{name}.zero_point"),
                RawTensor { dtype: Dtype::I8, shape: scale_shape, data },
            );
        }
        index.insert(name.clone(), Entry::of(t));
    }
    (out, serde_json::to_string(&index).expect("the quantization index serialises"))
}

/// Two int4 values to a byte, the first in the low nibble.
fn pack_int4(values: &[i8]) -> Vec<u8> {
    values
        .chunks(2)
        .map(|pair| {
            let low = pair[0] as u8 & 0x0f;
            let high = pair.get(1).map_or(0, |&v| v as u8 & 0x0f);
            low | (high << 4)
        })
        .collect()
}

/// The `n` int4 values of `bytes`, each nibble sign-extended.
fn unpack_int4(bytes: &[u8], n: usize) -> Vec<i8> {
    // Shifting a nibble to the top of an `i8` and back arithmetically extends its sign.
    let mut values: Vec<i8> =
        bytes.iter().flat_map(|&b| [((b << 4) as i8) >> 4, (b as i8) >> 4]).collect();
    values.truncate(n);
    values
}

/// Split a file's tensors into the plain ones and the quantized ones, rebuilt from their
/// parts as the `quantization` metadata lists them. A file without that key comes back
/// unchanged, with no quantized tensors.
///
/// Every listed tensor must have its parts with the dtypes and shapes its scheme calls for,
/// integers within its range and, for a symmetric scheme, no zero point other than 0; the
/// error names the tensor and what is wrong.
pub fn decode(
    mut tensors: Tensors,
    metadata: &BTreeMap<String, String>,
) -> Result<(Tensors, BTreeMap<String, IntTensor>), QuantError> {
    let Some(index) = parse_index(metadata)? else { return Ok((tensors, BTreeMap::new())) };
    let mut quantized = BTreeMap::new();
    for (name, entry) in index {
        let (scheme, layout) = entry.layout(&name)?;
        let bad = |reason: String| QuantError::Inconsistent { name: name.clone(), reason };
        if tensors.contains_key(&name) {
            return Err(bad("it is stored as a plain tensor too".into()));
        }
        let mut take = |part: &str| {
            tensors.remove(&format!("{name}.{part}")).ok_or_else(|| QuantError::Missing {
                name: name.clone(),
                part: format!("{name}.{part}"),
            })
        };
        let qweight = take("qweight")?;
        let scale = take("scale")?;
        let zero_point = match take("zero_point") {
            Ok(t) => Some(t),
            Err(e) if !scheme.symmetric => return Err(e),
            Err(_) => None,
        };
        check_parts(
            &name,
            scheme,
            &layout,
            &entry.shape,
            Part::of_raw(&qweight),
            Part::of_raw(&scale),
            zero_point.as_ref().map(Part::of_raw),
        )?;
        for (part, t) in [
            ("qweight", Some(&qweight)),
            ("scale", Some(&scale)),
            ("zero_point", zero_point.as_ref()),
        ] {
            if let Some(Err(reason)) = t.map(RawTensor::check) {
                return Err(bad(format!("`{name}.{part}`: {reason}")));
            }
        }

        let (qmin, qmax) = scheme.range();
        let in_range = |v: &i8| (qmin..=qmax).contains(&i32::from(*v));
        let values = if scheme.bits == 4 {
            // A nibble always holds an int4 value; only the padding nibble can be wrong.
            if layout.n % 2 == 1 && qweight.data.last().is_some_and(|b| b >> 4 != 0) {
                return Err(bad("the unused high nibble of the last byte is not 0".into()));
            }
            unpack_int4(&qweight.data, layout.n)
        } else {
            qweight.data.iter().map(|&b| b as i8).collect()
        };
        let scales: Vec<f32> = scale
            .data
            .chunks_exact(4)
            .map(|c| f32::from_le_bytes([c[0], c[1], c[2], c[3]]))
            .collect();
        let zero_points: Vec<i8> = match &zero_point {
            Some(t) => t.data.iter().map(|&b| b as i8).collect(),
            None => vec![0; layout.n_groups],
        };
        if scheme.symmetric && zero_points.iter().any(|&z| z != 0) {
            return Err(bad("the scheme is symmetric but a zero point is not 0".into()));
        }
        if let Some(z) = zero_points.iter().find(|z| !in_range(z)) {
            return Err(bad(format!("the zero point {z} is outside {qmin}..={qmax}")));
        }
        quantized.insert(
            name.clone(),
            IntTensor { scheme, shape: entry.shape, values, scales, zero_points },
        );
    }
    Ok((tensors, quantized))
}

/// The tensors a header describes once quantized tensors are rebuilt: each quantized `NAME`
/// as `F32` of its original shape in place of its stored parts, the other tensors as they
/// are, in name order. The parts are checked for presence, dtype and shape, so the errors
/// are those [`decode`] would give for the same header, short of the ones that need data.
pub fn logical_tensors(
    tensors: &[TensorInfo],
    metadata: &BTreeMap<String, String>,
) -> Result<Vec<TensorInfo>, QuantError> {
    let Some(index) = parse_index(metadata)? else { return Ok(tensors.to_vec()) };
    let by_name: BTreeMap<&str, &TensorInfo> =
        tensors.iter().map(|t| (t.name.as_str(), t)).collect();
    let mut parts = BTreeSet::new();
    for (name, entry) in &index {
        let (scheme, layout) = entry.layout(name)?;
        if by_name.contains_key(name.as_str()) {
            return Err(QuantError::Inconsistent {
                name: name.clone(),
                reason: "it is stored as a plain tensor too".into(),
            });
        }
        let find = |part: &str| {
            let full = format!("{name}.{part}");
            by_name
                .get(full.as_str())
                .copied()
                .ok_or(QuantError::Missing { name: name.clone(), part: full.clone() })
        };
        let qweight = find("qweight")?;
        let scale = find("scale")?;
        let zero_point = match find("zero_point") {
            Ok(t) => Some(t),
            Err(e) if !scheme.symmetric => return Err(e),
            Err(_) => None,
        };
        check_parts(
            name,
            scheme,
            &layout,
            &entry.shape,
            Part::of_info(qweight),
            Part::of_info(scale),
            zero_point.map(Part::of_info),
        )?;
        parts.extend(
            [Some(qweight), Some(scale), zero_point].into_iter().flatten().map(|t| t.name.as_str()),
        );
    }

    let mut out: Vec<TensorInfo> =
        tensors.iter().filter(|t| !parts.contains(&t.name.as_str())).cloned().collect();
    for (name, entry) in index {
        out.push(TensorInfo { name, dtype: "F32".into(), shape: entry.shape });
    }
    out.sort_by(|a, b| a.name.cmp(&b.name));
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::rng::Rng;

    const ALL_GRANULARITIES: [Granularity; 3] =
        [Granularity::PerTensor, Granularity::PerChannel, Granularity::Group(4)];

    /// Every combination of width, symmetry and granularity, groups of 4.
    fn schemes() -> Vec<IntScheme> {
        let mut out = Vec::new();
        for bits in [8, 4] {
            for symmetric in [true, false] {
                for granularity in ALL_GRANULARITIES {
                    out.push(IntScheme { bits, symmetric, granularity });
                }
            }
        }
        out
    }

    fn normal(n: usize, label: &str) -> Vec<f32> {
        let mut rng = Rng::new(7, label);
        (0..n).map(|_| rng.normal() as f32).collect()
    }

    /// The plain scalar form of the mapping, written from the module documentation alone:
    /// `f32::max` and `f32::min` folds (which skip NaN), `round_ties_even`, and the zero
    /// point added after rounding and before clamping, as PyTorch orders it.
    fn reference(xs: &[f32], shape: &[usize], scheme: IntScheme) -> IntTensor {
        let qmax = (1i32 << (scheme.bits - 1)) - 1;
        let qmin = -qmax - 1;
        let rows = if shape.len() == 1 { 1 } else { shape[0] };
        let row_len = xs.len() / rows;
        let group = match scheme.granularity {
            Granularity::PerTensor => xs.len(),
            Granularity::PerChannel => row_len,
            Granularity::Group(g) => g,
        };
        let (mut values, mut scales, mut zero_points) = (vec![], vec![], vec![]);
        for g in xs.chunks(group) {
            let lo = g.iter().fold(0f32, |m, &w| m.min(w));
            let hi = g.iter().fold(0f32, |m, &w| m.max(w));
            let amax = g.iter().fold(0f32, |m, &w| m.max(w.abs()));
            let scale = if scheme.symmetric {
                amax / qmax as f32
            } else {
                (hi - lo) / (qmax - qmin) as f32
            };
            let scale = if scale > 0.0 && (1.0 / scale).is_finite() { scale } else { 1.0 };
            let zero_point = if scheme.symmetric {
                0.0
            } else {
                (qmin as f32 - (lo / scale).round_ties_even()).clamp(qmin as f32, qmax as f32)
            };
            for &w in g {
                let r = (w * (1.0 / scale)).round_ties_even() + zero_point;
                values.push(r.clamp(qmin as f32, qmax as f32) as i8);
            }
            scales.push(scale);
            zero_points.push(zero_point as i8);
        }
        IntTensor { scheme, shape: shape.to_vec(), values, scales, zero_points }
    }

    /// Rows of 40 whose every group of 4 holds the same range, chosen so that the scale is
    /// exactly 1/8 and the other entries are odd multiples of 1/16: every `w / scale` is then
    /// a tie, and the zero point of the asymmetric schemes is odd.
    fn tie_rows(scheme: IntScheme, rows: usize) -> Vec<f32> {
        let (lo, hi) = match (scheme.bits, scheme.symmetric) {
            (8, true) => (-127, 127),
            (4, true) => (-7, 7),
            (8, false) => (-81, 174),
            _ => (-5, 10),
        };
        let mut rng = Rng::new(1, "quant/ties");
        (0..rows * 40)
            .map(|i| match i % 4 {
                0 => hi as f32 / 8.0,
                1 => lo as f32 / 8.0,
                _ => (lo + rng.below((hi - lo) as usize) as i32) as f32 / 8.0 + 1.0 / 16.0,
            })
            .collect()
    }

    /// Rows of 40 of extreme values: NaN, infinities, the largest and smallest floats,
    /// subnormals, negative zeros, zeros, huge and tiny scales.
    fn extreme_rows() -> Vec<f32> {
        let specials = [
            f32::NAN,
            f32::INFINITY,
            f32::NEG_INFINITY,
            f32::MAX,
            -f32::MAX,
            f32::MIN_POSITIVE,
            1e-45,
            -3e-39,
            -0.0,
            0.0,
            1e30,
            -1e-30,
            0.5,
            -0.5,
            2.5,
        ];
        let mut rng = Rng::new(2, "quant/extremes");
        let mut xs = Vec::new();
        for row in 0..12 {
            for _ in 0..40 {
                let x = match row {
                    // Rows of one kind: subnormals only, zeros only, tiny normals only.
                    0 => -3e-39 * rng.uniform() as f32,
                    1 => 0.0,
                    2 => 1e-37 * rng.normal() as f32,
                    // Mostly normal values with specials mixed in.
                    _ if rng.below(4) == 0 => specials[rng.below(specials.len())],
                    _ => rng.normal() as f32 * 10f32.powi(row - 6),
                };
                xs.push(x);
            }
        }
        xs
    }

    fn assert_same(fast: &IntTensor, slow: &IntTensor, what: &str) {
        assert_eq!(fast.values, slow.values, "values, {what}");
        assert_eq!(fast.zero_points, slow.zero_points, "zero points, {what}");
        let bits = |s: &[f32]| s.iter().map(|s| s.to_bits()).collect::<Vec<_>>();
        assert_eq!(bits(&fast.scales), bits(&slow.scales), "scales, {what}");
    }

    #[test]
    fn the_fast_path_matches_a_plain_scalar_implementation() {
        for scheme in schemes() {
            let ties = tie_rows(scheme, 6);
            let extremes = extreme_rows();
            let normals = normal(37 * 64, "quant/reference");
            let cases: [(&[f32], Vec<usize>); 4] = [
                (&ties, vec![6, 40]),
                (&extremes, vec![12, 40]),
                (&extremes, vec![12, 5, 8]),
                (&normals, vec![37, 64]),
            ];
            for (xs, shape) in cases {
                let what = format!("{scheme:?} on {shape:?}");
                let fast = IntTensor::quantize(xs, &shape, scheme).unwrap();
                assert_same(&fast, &reference(xs, &shape, scheme), &what);
            }
            // The tie rows do hit ties: the scale is 1/8 and entries are odd sixteenths.
            let fast = IntTensor::quantize(&ties, &[6, 40], scheme).unwrap();
            assert!(fast.scales.iter().all(|&s| s == 0.125), "{scheme:?}");
        }

        // Lengths that leave a tail after the blocks of eight, and one row of many chunks.
        let scheme = IntScheme { bits: 8, symmetric: false, granularity: Granularity::PerChannel };
        let xs = normal(3 * 37, "quant/tail");
        assert_same(
            &IntTensor::quantize(&xs, &[3, 37], scheme).unwrap(),
            &reference(&xs, &[3, 37], scheme),
            "tails",
        );
        let xs = normal(5 * CHUNK + 3, "quant/long");
        for granularity in [Granularity::PerTensor, Granularity::PerChannel] {
            let scheme = IntScheme { bits: 8, symmetric: true, granularity };
            let shape = [5 * CHUNK + 3];
            let fast = IntTensor::quantize(&xs, &shape, scheme).unwrap();
            assert_same(&fast, &reference(&xs, &shape, scheme), "one long row");
        }
    }

    #[test]
    fn the_zero_point_is_added_after_rounding_as_pytorch_does() {
        // Range [-131, 124] gives scale 1 and zero point -128 + 131 = 3. PyTorch 2.15 maps
        // -0.5, 0.5 and 2.5 at scale 1 and zero point 3 to 3, 3 and 5
        // (`torch.quantize_per_channel(w, torch.tensor([1.0], dtype=torch.double),
        // torch.tensor([3]), 0, torch.qint8).int_repr()`); rounding after adding the zero
        // point would give 2, 4 and 6.
        let scheme = IntScheme { bits: 8, symmetric: false, granularity: Granularity::PerTensor };
        let q =
            IntTensor::quantize(&[-131.0, 124.0, -0.5, 0.5, 2.5, f32::NAN], &[6], scheme).unwrap();
        assert_eq!((q.scales[0], q.zero_points[0]), (1.0, 3));
        // NaN becomes 0, not the zero point, as in PyTorch's per-channel kernel.
        assert_eq!(q.values, [-128, 127, 3, 3, 5, 0]);
    }

    #[test]
    fn dequantization_is_within_half_a_scale() {
        let xs = normal(16 * 64, "quant/error");
        for scheme in schemes() {
            let q = IntTensor::quantize(&xs, &[16, 64], scheme).unwrap();
            let ys = q.dequantize();
            assert_eq!(ys, fake_quantize(&xs, &[16, 64], scheme).unwrap());
            let group = xs.len() / q.scales.len();
            for (i, (&x, &y)) in xs.iter().zip(&ys).enumerate() {
                let scale = q.scales[i / group];
                // Half a scale, plus the f32 rounding of `w * (1 / scale)` (a few units in
                // the last place of a value up to 255) and of the dequantized product.
                let tolerance = scale * (0.5 + 1e-4) + x.abs() * 1e-6;
                assert!((x - y).abs() <= tolerance, "{scheme:?}: entry {i}: {x} came back {y}");
            }
        }
    }

    #[test]
    fn zeros_stay_exactly_zero() {
        // Half the entries zero, one row all zero, one row all negative, one all positive.
        let mut xs = normal(8 * 16, "quant/zeros");
        for (i, x) in xs.iter_mut().enumerate() {
            match i / 16 {
                0 => *x = 0.0,
                1 => *x = -x.abs() - 0.1,
                2 => *x = x.abs() + 0.1,
                _ if i % 2 == 0 => *x = 0.0,
                _ => {}
            }
        }
        for scheme in schemes() {
            let ys = fake_quantize(&xs, &[8, 16], scheme).unwrap();
            for (i, (&x, &y)) in xs.iter().zip(&ys).enumerate() {
                if x == 0.0 {
                    assert_eq!(y, 0.0, "{scheme:?}: entry {i}");
                }
            }
        }
        // An all-zero group has scale 1 and every entry at the zero point.
        let scheme = IntScheme { bits: 8, symmetric: false, granularity: Granularity::Group(4) };
        let q = IntTensor::quantize(&[0.0; 8], &[1, 8], scheme).unwrap();
        assert_eq!(q.scales, [1.0, 1.0]);
        assert_eq!(q.values, [-128; 8]);
        assert_eq!(q.zero_points, [-128, -128]);
    }

    #[test]
    fn int4_packs_two_to_a_byte_low_nibble_first() {
        let scheme = IntScheme { bits: 4, symmetric: true, granularity: Granularity::PerTensor };
        let t = IntTensor {
            scheme,
            shape: vec![5],
            values: vec![1, -2, 7, -8, 3],
            scales: vec![0.5],
            zero_points: vec![0],
        };
        let (stored, index) = encode(&BTreeMap::from([("w".to_string(), t.clone())]));
        // 1 and -2 (0xe) make 0xe1; 7 and -8 (0x8) make 0x87; the odd last 3 makes 0x03.
        let qweight = &stored["w.qweight"];
        assert_eq!((qweight.dtype, &qweight.shape[..]), (Dtype::U8, &[3][..]));
        assert_eq!(qweight.data, [0xe1, 0x87, 0x03]);
        assert_eq!(stored["w.scale"].data, 0.5f32.to_le_bytes());
        assert!(!stored.contains_key("w.zero_point"), "symmetric schemes store no zero point");
        assert_eq!(t.stored_bytes(), 3 + 4);
        assert_eq!(
            index,
            r#"{"w":{"scheme":"int4","granularity":"per_tensor","symmetric":true,"shape":[5]}}"#
        );

        let metadata = BTreeMap::from([(METADATA_KEY.to_string(), index)]);
        let (plain, quantized) = decode(stored, &metadata).unwrap();
        assert!(plain.is_empty());
        assert_eq!(quantized["w"], t);
    }

    #[test]
    fn encoding_round_trips_exactly() {
        let mut quantized = BTreeMap::new();
        for (i, scheme) in schemes().into_iter().enumerate() {
            // Odd entry counts reach the padding nibble of int4.
            let shape = if i % 2 == 0 { vec![6, 12] } else { vec![3, 4, 3] };
            let n = shape.iter().product();
            let xs = normal(n, &format!("quant/round_trip/{i}"));
            quantized
                .insert(format!("{i}.weight"), IntTensor::quantize(&xs, &shape, scheme).unwrap());
        }
        let odd = IntScheme { bits: 4, symmetric: false, granularity: Granularity::PerChannel };
        let xs = normal(15, "quant/odd");
        quantized.insert("odd".to_string(), IntTensor::quantize(&xs, &[3, 5], odd).unwrap());

        let (mut stored, index) = encode(&quantized);
        assert_eq!(
            encode(&quantized),
            (stored.clone(), index.clone()),
            "encoding is deterministic"
        );
        for (name, t) in &quantized {
            let bytes: usize = stored
                .range(format!("{name}.")..format!("{name}/"))
                .map(|(_, t)| t.data.len())
                .sum();
            assert_eq!(bytes, t.stored_bytes(), "{name}");
        }
        let bias = RawTensor { dtype: Dtype::F32, shape: vec![1], data: 1f32.to_le_bytes().into() };
        stored.insert("0.bias".to_string(), bias.clone());

        let metadata = BTreeMap::from([(METADATA_KEY.to_string(), index)]);
        let (plain, decoded) = decode(stored.clone(), &metadata).unwrap();
        assert_eq!(plain, BTreeMap::from([("0.bias".to_string(), bias)]));
        assert_eq!(decoded, quantized);

        // Without the metadata key a file is all plain tensors.
        let (plain, decoded) = decode(stored.clone(), &BTreeMap::new()).unwrap();
        assert_eq!((plain, decoded.len()), (stored, 0));
    }

    #[test]
    fn scale_shapes_follow_the_granularity() {
        let shape_of = |shape: &[usize], granularity| {
            let scheme = IntScheme { bits: 8, symmetric: true, granularity };
            let n = shape.iter().product();
            let q = IntTensor::quantize(&normal(n, "quant/shapes"), shape, scheme).unwrap();
            assert_eq!(q.scales.len(), q.scale_shape().iter().product::<usize>());
            q.scale_shape()
        };
        assert_eq!(shape_of(&[6, 2, 4], Granularity::PerTensor), [1]);
        assert_eq!(shape_of(&[6, 2, 4], Granularity::PerChannel), [6]);
        assert_eq!(shape_of(&[6, 2, 4], Granularity::Group(4)), [6, 2]);
        assert_eq!(shape_of(&[8], Granularity::PerChannel), [1]);
        assert_eq!(shape_of(&[8], Granularity::Group(2)), [1, 4]);
        assert_eq!(shape_of(&[0, 4], Granularity::PerChannel), [0]);
        assert_eq!(shape_of(&[3, 0], Granularity::Group(2)), [3, 0]);
    }

    #[test]
    fn bad_arguments_are_errors() {
        let scheme = |bits, granularity| IntScheme { bits, symmetric: true, granularity };
        let xs = [0.5f32; 12];
        let quantize = |shape: &[usize], scheme| IntTensor::quantize(&xs, shape, scheme).err();
        assert_eq!(
            quantize(&[2, 6], scheme(8, Granularity::Group(4))),
            Some(QuantError::GroupSize { row_len: 6, group: 4 })
        );
        assert_eq!(
            quantize(&[2, 6], scheme(8, Granularity::Group(0))),
            Some(QuantError::GroupSize { row_len: 6, group: 0 })
        );
        assert_eq!(quantize(&[], scheme(8, Granularity::PerTensor)), Some(QuantError::Rank0));
        assert_eq!(
            quantize(&[2, 6], scheme(2, Granularity::PerTensor)),
            Some(QuantError::Bits { bits: 2 })
        );
        assert_eq!(
            quantize(&[3, 6], scheme(8, Granularity::PerChannel)),
            Some(QuantError::Length { len: 12, shape: vec![3, 6] })
        );
        assert_eq!(
            quantize(&[usize::MAX, 2], scheme(8, Granularity::PerChannel)),
            Some(QuantError::Length { len: 12, shape: vec![usize::MAX, 2] })
        );
        assert_eq!(
            QuantError::GroupSize { row_len: 6, group: 4 }.to_string(),
            "rows of 6 entries do not split into groups of 4"
        );
    }

    /// A stored asymmetric int8 tensor `w` of shape [2, 4] per channel, and its metadata.
    fn stored_example() -> (BTreeMap<String, RawTensor>, BTreeMap<String, String>) {
        let scheme = IntScheme { bits: 8, symmetric: false, granularity: Granularity::PerChannel };
        let q = IntTensor::quantize(&normal(8, "quant/example"), &[2, 4], scheme).unwrap();
        let (stored, index) = encode(&BTreeMap::from([("w".to_string(), q)]));
        (stored, BTreeMap::from([(METADATA_KEY.to_string(), index)]))
    }

    #[test]
    fn inconsistent_files_are_errors() {
        let decode_with = |edit: &dyn Fn(&mut BTreeMap<String, RawTensor>, &mut String)| {
            let (mut stored, mut metadata) = stored_example();
            edit(&mut stored, metadata.get_mut(METADATA_KEY).unwrap());
            decode(stored, &metadata).err().map(|e| e.to_string())
        };
        let err = |s: &str| Some(s.to_string());

        assert_eq!(decode_with(&|_, _| {}), None);
        assert_eq!(
            decode_with(&|stored, _| {
                stored.remove("w.scale");
            }),
            err("quantized tensor `w` lacks `w.scale`")
        );
        assert_eq!(
            decode_with(&|stored, _| {
                stored.remove("w.zero_point");
            }),
            err("quantized tensor `w` lacks `w.zero_point`")
        );
        assert_eq!(
            decode_with(&|stored, _| stored.get_mut("w.scale").unwrap().shape = vec![4]),
            err("quantized tensor `w` is inconsistent: `w.scale` is F32 of shape [4], where F32 \
                 of shape [2] was expected")
        );
        assert_eq!(
            decode_with(&|stored, _| stored.get_mut("w.qweight").unwrap().data.push(0)),
            err("quantized tensor `w` is inconsistent: `w.qweight`: dtype I8 and shape [2, 4] \
                 need 8 bytes, the tensor has 9")
        );
        assert_eq!(
            decode_with(&|_, index| *index = index.replace("int8", "int3")),
            err("the `quantization` metadata is not valid: tensor `w`: unknown scheme `int3`, \
                 not `int8` or `int4`")
        );
        assert_eq!(
            decode_with(&|_, index| *index = index.replace("per_channel", "group(3)")),
            err("quantized tensor `w` is inconsistent: rows of 4 entries do not split into \
                 groups of 3")
        );
        assert_eq!(
            decode_with(&|_, index| *index = index.replace("per_channel", "group(x)")),
            err("the `quantization` metadata is not valid: tensor `w`: unknown granularity \
                 `group(x)`, not `per_tensor`, `per_channel` or `group(G)`")
        );
        assert!(decode_with(&|_, index| index.push('}')).unwrap().starts_with("the `quant"));
        assert_eq!(
            decode_with(&|stored, _| {
                let t = stored["w.scale"].clone();
                stored.insert("w".into(), t);
            }),
            err("quantized tensor `w` is inconsistent: it is stored as a plain tensor too")
        );
        assert_eq!(
            decode_with(&|stored, index| {
                *index = index.replace("false", "true");
                stored.get_mut("w.zero_point").unwrap().data[1] = 5;
            }),
            err("quantized tensor `w` is inconsistent: the scheme is symmetric but a zero point \
                 is not 0")
        );
    }

    #[test]
    fn int4_files_are_checked_for_range_and_padding() {
        let scheme = IntScheme { bits: 4, symmetric: false, granularity: Granularity::PerTensor };
        let q = IntTensor::quantize(&normal(5, "quant/int4"), &[5], scheme).unwrap();
        let (stored, index) = encode(&BTreeMap::from([("w".to_string(), q)]));
        let metadata = BTreeMap::from([(METADATA_KEY.to_string(), index)]);

        let mut padded = stored.clone();
        padded.get_mut("w.qweight").unwrap().data[2] |= 0x10;
        assert!(matches!(decode(padded, &metadata), Err(QuantError::Inconsistent { .. })));

        let mut out_of_range = stored;
        out_of_range.get_mut("w.zero_point").unwrap().data[0] = 8;
        assert_eq!(
            decode(out_of_range, &metadata).unwrap_err().to_string(),
            "quantized tensor `w` is inconsistent: the zero point 8 is outside -8..=7"
        );
    }

    #[test]
    fn logical_tensors_replace_the_parts() {
        let (stored, metadata) = stored_example();
        let info = |name: &str, t: &RawTensor| TensorInfo {
            name: name.to_string(),
            dtype: t.dtype.to_string(),
            shape: t.shape.clone(),
        };
        let mut header: Vec<TensorInfo> = stored.iter().map(|(n, t)| info(n, t)).collect();
        header.push(TensorInfo { name: "b".into(), dtype: "F32".into(), shape: vec![2] });

        let logical = logical_tensors(&header, &metadata).unwrap();
        let expected = [("b", vec![2]), ("w", vec![2, 4])].map(|(name, shape)| TensorInfo {
            name: name.into(),
            dtype: "F32".into(),
            shape,
        });
        assert_eq!(logical, expected);
        assert_eq!(logical_tensors(&header, &BTreeMap::new()).unwrap(), header);

        header.retain(|t| t.name != "w.qweight");
        assert_eq!(
            logical_tensors(&header, &metadata),
            Err(QuantError::Missing { name: "w".into(), part: "w.qweight".into() })
        );
    }
}

//! The sparse layout of pruned tensors inside a safetensors file: a packed
//! bitmask of the non-zero positions and the non-zero values alone.
//!
//! A tensor `NAME` of shape `S` and `n` entries is stored as two tensors:
//!
//! - `NAME.mask`: `U8`, shape `[ceil(n / 8)]`. Bit `i % 8` (least
//!   significant first) of byte `i / 8` is set when entry `i` of the tensor,
//!   in row-major order, is non-zero. Bits past `n` are zero.
//! - `NAME.values`: the tensor's dtype, shape `[nnz]`: the non-zero entries
//!   in row-major order.
//!
//! The file's metadata key `sparse` holds a JSON object from each such
//! `NAME` to `{"dtype": ..., "shape": [...]}`, so a reader knows which
//! tensors to rebuild. A tensor is stored this way only when that is
//! smaller than its dense bytes, which for `f32` means below about 97% of
//! entries non-zero; other tensors stay dense under their own name.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

use super::safetensors::{Dtype, RawTensor};
use crate::check::spec::TensorInfo;

/// The metadata key that lists the tensors stored sparse.
pub const METADATA_KEY: &str = "sparse";

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
struct Entry {
    dtype: String,
    shape: Vec<usize>,
}

/// Why a sparse file cannot be rebuilt.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum SparseError {
    #[error("the `sparse` metadata is not valid: {0}")]
    Metadata(String),
    #[error("sparse tensor `{name}` lacks `{part}`")]
    Missing { name: String, part: String },
    #[error("sparse tensor `{name}` is inconsistent: {reason}")]
    Inconsistent { name: String, reason: String },
}

fn dtype_name(dtype: Dtype) -> String {
    format!("{dtype:?}")
}

fn is_zero(bytes: &[u8], dtype: Dtype) -> bool {
    match dtype {
        // Negative zero is zero too; its sign bit is the only bit set.
        Dtype::F32 => f32::from_le_bytes([bytes[0], bytes[1], bytes[2], bytes[3]]) == 0.0,
        Dtype::F64 => {
            let mut b = [0u8; 8];
            b.copy_from_slice(bytes);
            f64::from_le_bytes(b) == 0.0
        }
        Dtype::F16 | Dtype::BF16 => u16::from_le_bytes([bytes[0], bytes[1]]) & 0x7fff == 0,
        _ => bytes.iter().all(|b| *b == 0),
    }
}

/// The sparse form of one tensor: mask and values, or `None` when the
/// dense form is no larger.
fn encode_one(t: &RawTensor) -> Option<(RawTensor, RawTensor)> {
    let width = t.dtype.bitsize() / 8;
    let n = t.elem_count();
    if n == 0 || width == 0 || t.data.len() != n * width {
        return None;
    }
    let mut mask = vec![0u8; n.div_ceil(8)];
    let mut values = Vec::new();
    for (i, entry) in t.data.chunks_exact(width).enumerate() {
        if !is_zero(entry, t.dtype) {
            mask[i / 8] |= 1 << (i % 8);
            values.extend_from_slice(entry);
        }
    }
    if mask.len() + values.len() >= t.data.len() {
        return None;
    }
    let nnz = values.len() / width;
    let mask = RawTensor { dtype: Dtype::U8, shape: vec![mask.len()], data: mask };
    let values = RawTensor { dtype: t.dtype, shape: vec![nnz], data: values };
    Some((mask, values))
}

/// Store every tensor of `tensors` of rank 2 or more in the sparse layout
/// where that is smaller; returns the tensors to write and the metadata
/// entry to add.
pub fn encode(tensors: &BTreeMap<String, RawTensor>) -> (BTreeMap<String, RawTensor>, String) {
    let mut out = BTreeMap::new();
    let mut index = BTreeMap::new();
    for (name, t) in tensors {
        match (t.shape.len() >= 2).then(|| encode_one(t)).flatten() {
            Some((mask, values)) => {
                index.insert(
                    name.clone(),
                    Entry { dtype: dtype_name(t.dtype), shape: t.shape.clone() },
                );
                out.insert(format!("{name}.mask"), mask);
                out.insert(format!("{name}.values"), values);
            }
            None => {
                out.insert(name.clone(), t.clone());
            }
        }
    }
    (out, serde_json::to_string(&index).expect("the sparse index serialises"))
}

/// Rebuild the dense tensors of a file written by [`encode`]. Files
/// without the `sparse` metadata come back unchanged.
pub fn decode(
    mut tensors: BTreeMap<String, RawTensor>,
    metadata: &BTreeMap<String, String>,
) -> Result<BTreeMap<String, RawTensor>, SparseError> {
    let Some(index) = metadata.get(METADATA_KEY) else { return Ok(tensors) };
    let index: BTreeMap<String, Entry> =
        serde_json::from_str(index).map_err(|e| SparseError::Metadata(e.to_string()))?;
    for (name, entry) in index {
        let take = |tensors: &mut BTreeMap<String, RawTensor>, part: &str| {
            tensors.remove(&format!("{name}.{part}")).ok_or_else(|| SparseError::Missing {
                name: name.clone(),
                part: format!("{name}.{part}"),
            })
        };
        let mask = take(&mut tensors, "mask")?;
        let values = take(&mut tensors, "values")?;
        let bad = |reason: String| SparseError::Inconsistent { name: name.clone(), reason };
        if dtype_name(values.dtype) != entry.dtype {
            return Err(bad(format!(
                "values are {:?}, the index says {}",
                values.dtype, entry.dtype
            )));
        }
        let n: usize = entry.shape.iter().product();
        let width = values.dtype.bitsize() / 8;
        if width == 0 {
            return Err(bad(format!("values of {:?} cannot be stored sparse", values.dtype)));
        }
        if mask.dtype != Dtype::U8 || mask.data.len() != n.div_ceil(8) {
            return Err(bad(format!("the mask has {} bytes for {n} entries", mask.data.len())));
        }
        let set: usize = mask.data.iter().map(|b| b.count_ones() as usize).sum();
        if set * width != values.data.len() {
            let have = values.data.len() / width.max(1);
            return Err(bad(format!("the mask marks {set} non-zeros but there are {have} values")));
        }
        let mut data = vec![0u8; n * width];
        let mut next = values.data.chunks_exact(width);
        for i in 0..n {
            if mask.data[i / 8] & (1 << (i % 8)) != 0 {
                let v = next.next().ok_or_else(|| bad("too few values".into()))?;
                data[i * width..(i + 1) * width].copy_from_slice(v);
            }
        }
        tensors.insert(name, RawTensor { dtype: values.dtype, shape: entry.shape, data });
    }
    Ok(tensors)
}

/// The tensors a header describes once sparse tensors are rebuilt: the
/// names, dtypes and shapes a reader of the file sees after [`decode`].
pub fn logical_tensors(
    tensors: &[TensorInfo],
    metadata: &BTreeMap<String, String>,
) -> Result<Vec<TensorInfo>, SparseError> {
    let Some(index) = metadata.get(METADATA_KEY) else { return Ok(tensors.to_vec()) };
    let index: BTreeMap<String, Entry> =
        serde_json::from_str(index).map_err(|e| SparseError::Metadata(e.to_string()))?;
    let mut out: Vec<TensorInfo> = tensors
        .iter()
        .filter(|t| {
            let base = t.name.rsplit_once('.').map_or("", |(b, _)| b);
            !(index.contains_key(base)
                && (t.name.ends_with(".mask") || t.name.ends_with(".values")))
        })
        .cloned()
        .collect();
    for (name, entry) in index {
        out.push(TensorInfo { name, dtype: entry.dtype, shape: entry.shape });
    }
    out.sort_by(|a, b| a.name.cmp(&b.name));
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn f32_tensor(values: &[f32], shape: Vec<usize>) -> RawTensor {
        let data = values.iter().flat_map(|v| v.to_le_bytes()).collect();
        RawTensor { dtype: Dtype::F32, shape, data }
    }

    #[test]
    fn a_90_percent_sparse_tensor_takes_under_a_quarter_and_round_trips() {
        let n = 100 * 64;
        let values: Vec<f32> =
            (0..n).map(|i| if i % 10 == 3 { i as f32 * 0.5 - 7.0 } else { 0.0 }).collect();
        let dense = BTreeMap::from([
            ("0.weight".to_string(), f32_tensor(&values, vec![100, 64])),
            ("0.bias".to_string(), f32_tensor(&[1.0, 0.0], vec![2])),
        ]);
        let (stored, index) = encode(&dense);
        let sparse_bytes: usize = stored
            .iter()
            .filter(|(k, _)| k.starts_with("0.weight"))
            .map(|(_, t)| t.data.len())
            .sum();
        // 6,400 entries: 800 mask bytes and 640 values of 4 bytes, 3,360 of
        // 25,600 dense bytes.
        assert_eq!(sparse_bytes, 800 + 640 * 4);
        assert!(sparse_bytes * 4 <= n * 4);
        assert!(stored.contains_key("0.bias"), "vectors stay dense");

        let metadata = BTreeMap::from([(METADATA_KEY.to_string(), index)]);
        assert_eq!(decode(stored, &metadata).unwrap(), dense);
    }

    #[test]
    fn dense_tensors_stay_dense() {
        let values: Vec<f32> = (1..=64).map(|i| i as f32).collect();
        let dense = BTreeMap::from([("w".to_string(), f32_tensor(&values, vec![8, 8]))]);
        let (stored, index) = encode(&dense);
        assert_eq!(stored, dense);
        assert_eq!(index, "{}");
    }

    #[test]
    fn inconsistent_files_are_errors() {
        let values: Vec<f32> = (0..64).map(|i| if i == 5 { 2.0 } else { 0.0 }).collect();
        let dense = BTreeMap::from([("w".to_string(), f32_tensor(&values, vec![8, 8]))]);
        let (mut stored, index) = encode(&dense);
        let metadata = BTreeMap::from([(METADATA_KEY.to_string(), index)]);
        stored.get_mut("w.values").unwrap().data.extend_from_slice(&[0, 0, 0, 0]);
        assert!(matches!(decode(stored, &metadata), Err(SparseError::Inconsistent { .. })));
    }
}

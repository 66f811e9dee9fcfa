//! GGUF files, the format of llama.cpp and GGML: takes quantized and float tensors with string
//! metadata and returns the bytes of a file, and reads such a file back into tensors.
//!
//! Tensors are written by candle's GGUF writer (format version 2): quantized tensors in their
//! GGML block layout, float tensors as `F32`. GGML quantizes along rows, so a tensor of rank
//! above 2 (a convolution filter `[out, in, kh, kw]`) is stored as the matrix
//! `[out, in·kh·kw]`; the metadata key `recipe.shapes` (a JSON object from tensor name to
//! shape) records the shape of every tensor whose stored shape differs, so that a reader can
//! restore it. Every other metadata entry is written as a GGUF string.

use std::collections::BTreeMap;
use std::io::Cursor;
use std::path::Path;

use candle_core::quantized::{gguf_file, GgmlDType, QTensor};
use candle_core::{Device, Tensor};

/// The metadata key that records original shapes.
pub const SHAPES_KEY: &str = "recipe.shapes";

/// Why a GGUF file could not be written or read.
#[derive(Debug, thiserror::Error)]
pub enum GgufError {
    #[error("cannot write `{}`: {source}", path.display())]
    Write { path: std::path::PathBuf, source: std::io::Error },
    #[error("`{}` is not a GGUF file recipe can read: {message}", path.display())]
    Read { path: std::path::PathBuf, message: String },
    #[error("cannot encode tensor `{name}` for GGUF: {message}")]
    Encode { name: String, message: String },
}

/// A tensor to write: quantized already, or float to be stored as `F32`.
pub enum Entry<'a> {
    Quantized { tensor: &'a QTensor, shape: &'a [usize] },
    Float(&'a Tensor),
}

/// The bytes of a GGUF file holding `tensors` (in name order) and `metadata`.
pub fn to_bytes(
    tensors: &BTreeMap<String, Entry>,
    metadata: &BTreeMap<String, String>,
) -> Result<Vec<u8>, GgufError> {
    // Float tensors become F32 QTensors; they are made first so that every entry can be
    // borrowed for the writer at once.
    let mut floats = BTreeMap::new();
    let mut shapes = BTreeMap::new();
    for (name, entry) in tensors {
        match entry {
            Entry::Float(t) => {
                let encode = |e: candle_core::Error| GgufError::Encode {
                    name: name.clone(),
                    message: e.to_string(),
                };
                let t = t.to_dtype(candle_core::DType::F32).map_err(encode)?;
                let q = QTensor::quantize(&t, GgmlDType::F32).map_err(encode)?;
                floats.insert(name.clone(), q);
            }
            Entry::Quantized { tensor, shape } => {
                if tensor.shape().dims() != *shape {
                    shapes.insert(name.clone(), shape.to_vec());
                }
            }
        }
    }
    let mut meta: Vec<(String, gguf_file::Value)> =
        metadata.iter().map(|(k, v)| (k.clone(), gguf_file::Value::String(v.clone()))).collect();
    if !shapes.is_empty() {
        let json = serde_json::to_string(&shapes).expect("shapes serialise");
        meta.push((SHAPES_KEY.to_string(), gguf_file::Value::String(json)));
    }
    meta.sort_by(|a, b| a.0.cmp(&b.0));

    let refs: Vec<(&str, &QTensor)> = tensors
        .iter()
        .map(|(name, entry)| match entry {
            Entry::Quantized { tensor, .. } => (name.as_str(), *tensor),
            Entry::Float(_) => (name.as_str(), &floats[name]),
        })
        .collect();
    let meta_refs: Vec<(&str, &gguf_file::Value)> =
        meta.iter().map(|(k, v)| (k.as_str(), v)).collect();
    let mut bytes = Cursor::new(Vec::new());
    gguf_file::write(&mut bytes, &meta_refs, &refs)
        .map_err(|e| GgufError::Encode { name: "(file)".into(), message: e.to_string() })?;
    Ok(bytes.into_inner())
}

/// Write a GGUF file atomically (see [`super::write_atomic`]).
pub fn write(
    path: &Path,
    tensors: &BTreeMap<String, Entry>,
    metadata: &BTreeMap<String, String>,
) -> Result<(), GgufError> {
    let bytes = to_bytes(tensors, metadata)?;
    super::write_atomic(path, &bytes)
        .map_err(|source| GgufError::Write { path: path.to_owned(), source })
}

/// The tensors of a GGUF file by name, each as stored and dequantized to f32 in its original
/// shape.
pub type Tensors = BTreeMap<String, (QTensor, Tensor)>;

/// Every tensor of a GGUF file, dequantized to f32 on `dev`, and the file's string metadata.
pub fn read(path: &Path, dev: &Device) -> Result<(Tensors, BTreeMap<String, String>), GgufError> {
    let bad = |message: String| GgufError::Read { path: path.to_owned(), message };
    let bad_candle = |e: candle_core::Error| bad(candle_message(e));
    let mut file = std::fs::File::open(path).map_err(|e| bad(e.to_string()))?;
    let content = gguf_file::Content::read(&mut file).map_err(bad_candle)?;
    let mut metadata = BTreeMap::new();
    for (key, value) in &content.metadata {
        if let Ok(s) = value.to_string() {
            metadata.insert(key.clone(), s.clone());
        }
    }
    let shapes: BTreeMap<String, Vec<usize>> = match metadata.get(SHAPES_KEY) {
        Some(json) => serde_json::from_str(json).map_err(|e| bad(e.to_string()))?,
        None => BTreeMap::new(),
    };
    let file_len = file.metadata().map_err(|e| bad(e.to_string()))?.len();
    for (name, info) in &content.tensor_infos {
        stored_size(info, content.tensor_data_offset, file_len)
            .map_err(|m| bad(format!("tensor `{name}`: {m}")))?;
    }
    let mut tensors = BTreeMap::new();
    for name in content.tensor_infos.keys() {
        let q = content.tensor(&mut file, name, &Device::Cpu).map_err(bad_candle)?;
        let mut t = q.dequantize(&Device::Cpu).map_err(bad_candle)?;
        if let Some(shape) = shapes.get(name) {
            t = t
                .reshape(shape.as_slice())
                .map_err(|e| bad(format!("tensor `{name}`: {}", candle_message(e))))?;
        }
        let t = t.to_device(dev).map_err(bad_candle)?;
        tensors.insert(name.clone(), (q, t));
    }
    Ok((tensors, metadata))
}

/// The bytes a tensor's entry says it takes, if they lie inside a file of `file_len` bytes
/// whose tensor data starts at `data_start`. candle trusts a header's shape; a damaged one
/// could make it allocate without bound.
fn stored_size(
    info: &gguf_file::TensorInfo,
    data_start: u64,
    file_len: u64,
) -> Result<u64, String> {
    let dims = info.shape.dims();
    let elements = dims
        .iter()
        .try_fold(1u64, |n, &d| n.checked_mul(d as u64))
        .ok_or_else(|| format!("its shape {dims:?} holds more values than can be addressed"))?;
    let (block, size) = (info.ggml_dtype.block_size() as u64, info.ggml_dtype.type_size() as u64);
    if elements % block != 0 {
        return Err(format!(
            "its {elements} values are not a whole number of {:?} blocks of {block}",
            info.ggml_dtype
        ));
    }
    let bytes = (elements / block).saturating_mul(size);
    let end = data_start.saturating_add(info.offset).saturating_add(bytes);
    if end > file_len {
        return Err(format!(
            "its {bytes} bytes at offset {} run past the end of the file ({file_len} bytes)",
            data_start.saturating_add(info.offset)
        ));
    }
    Ok(bytes)
}

/// A candle error's message, without the backtrace candle attaches to it when `RUST_BACKTRACE`
/// is set: a diagnostic about a file should say what is wrong with the file.
fn candle_message(e: candle_core::Error) -> String {
    match e {
        candle_core::Error::WithBacktrace { inner, .. } => candle_message(*inner),
        other => other.to_string(),
    }
}

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
        check_extent(info, content.tensor_data_offset, file_len)
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

/// Whether the bytes a tensor's entry says it takes lie inside a file of `file_len` bytes
/// whose tensor data starts at `data_start`. candle trusts a header's shape; a damaged one
/// could make it allocate without bound.
fn check_extent(
    info: &gguf_file::TensorInfo,
    data_start: u64,
    file_len: u64,
) -> Result<(), String> {
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
    Ok(())
}

/// A candle error's message, without the backtrace candle attaches to it when `RUST_BACKTRACE`
/// is set: a diagnostic about a file should say what is wrong with the file.
fn candle_message(e: candle_core::Error) -> String {
    match e {
        candle_core::Error::WithBacktrace { inner, .. } => candle_message(*inner),
        other => other.to_string(),
    }
}

/// One tensor of a GGUF file written by [`GgufStream`]: its name, its GGUF type code, its
/// stored shape (outermost dimension first) and the bytes of its data.
#[derive(Debug, Clone)]
pub struct Planned {
    pub name: String,
    code: u32,
    pub dims: Vec<usize>,
    bytes: u64,
}

impl Planned {
    /// A tensor in a GGML type: a float type or a block format.
    pub fn ggml(name: &str, dtype: GgmlDType, dims: Vec<usize>) -> Planned {
        let n: u64 = dims.iter().map(|&d| d as u64).product();
        let bytes = n / dtype.block_size() as u64 * dtype.type_size() as u64;
        Planned { name: name.to_string(), code: ggml_code(dtype), dims, bytes }
    }

    /// A tensor of plain integers or doubles, which GGUF stores under types of their own
    /// (candle's reader does not know them): `I8`, `I16`, `I32`, `I64` or `F64`.
    pub fn plain(
        name: &str,
        dtype: super::safetensors::Dtype,
        dims: Vec<usize>,
    ) -> Option<Planned> {
        use super::safetensors::Dtype;
        let (code, size) = match dtype {
            Dtype::I8 => (24, 1),
            Dtype::I16 => (25, 2),
            Dtype::I32 => (26, 4),
            Dtype::I64 => (27, 8),
            Dtype::F64 => (28, 8),
            _ => return None,
        };
        let n: u64 = dims.iter().map(|&d| d as u64).product();
        Some(Planned { name: name.to_string(), code, dims, bytes: n * size })
    }

    /// The bytes of its data.
    pub fn bytes(&self) -> u64 {
        self.bytes
    }
}

/// The alignment of tensor data, GGUF's default.
const ALIGNMENT: u64 = 32;

/// A GGUF (version 3) file written one tensor at a time, so that a checkpoint larger than
/// memory can be converted: the header goes first, worked out from each tensor's type and
/// shape, then each tensor's data as it comes, in the planned order. The file appears at
/// its path only once every tensor is in.
pub struct GgufStream {
    file: super::AtomicFile,
    planned: Vec<Planned>,
    next: usize,
    path: std::path::PathBuf,
}

impl GgufStream {
    /// Start the file at `path` with string `metadata` (plus [`SHAPES_KEY`] from `shapes`,
    /// the original shapes of tensors stored with another) and the tensors of `planned`.
    pub fn create(
        path: &Path,
        metadata: &BTreeMap<String, String>,
        shapes: &BTreeMap<String, Vec<usize>>,
        planned: Vec<Planned>,
    ) -> Result<GgufStream, GgufError> {
        let write = |source| GgufError::Write { path: path.to_owned(), source };
        let mut meta = metadata.clone();
        if !shapes.is_empty() {
            meta.insert(SHAPES_KEY.into(), serde_json::to_string(shapes).expect("shapes"));
        }
        let string = |out: &mut Vec<u8>, s: &str| {
            out.extend((s.len() as u64).to_le_bytes());
            out.extend(s.as_bytes());
        };
        let mut head = b"GGUF".to_vec();
        head.extend(3u32.to_le_bytes());
        head.extend((planned.len() as u64).to_le_bytes());
        head.extend((meta.len() as u64).to_le_bytes());
        for (key, value) in &meta {
            string(&mut head, key);
            head.extend(8u32.to_le_bytes()); // a string
            string(&mut head, value);
        }
        let mut offset = 0u64;
        for t in &planned {
            string(&mut head, &t.name);
            head.extend((t.dims.len() as u32).to_le_bytes());
            for d in t.dims.iter().rev() {
                head.extend((*d as u64).to_le_bytes());
            }
            head.extend(t.code.to_le_bytes());
            head.extend(offset.to_le_bytes());
            offset = (offset + t.bytes()).next_multiple_of(ALIGNMENT);
        }
        head.resize(head.len().next_multiple_of(ALIGNMENT as usize), 0);
        let mut file = super::AtomicFile::create(path).map_err(write)?;
        file.write_all(&head).map_err(write)?;
        Ok(GgufStream { file, planned, next: 0, path: path.to_owned() })
    }

    /// The data of the next planned tensor, `name`.
    pub fn push(&mut self, name: &str, data: &[u8]) -> Result<(), GgufError> {
        let encode = |message: String| GgufError::Encode { name: name.to_string(), message };
        let Some(t) = self.planned.get(self.next) else {
            return Err(encode("more tensors than planned".into()));
        };
        if t.name != name || t.bytes() != data.len() as u64 {
            return Err(encode(format!(
                "expected `{}` of {} bytes, got {} bytes",
                t.name,
                t.bytes(),
                data.len()
            )));
        }
        let write = |source| GgufError::Write { path: self.path.clone(), source };
        self.file.write_all(data).map_err(write)?;
        let pad = (data.len() as u64).next_multiple_of(ALIGNMENT) - data.len() as u64;
        self.file.write_all(&vec![0u8; pad as usize]).map_err(write)?;
        self.next += 1;
        Ok(())
    }

    /// Put the file in place once every planned tensor is in.
    pub fn finish(self) -> Result<(), GgufError> {
        if self.next != self.planned.len() {
            let name = self.planned[self.next].name.clone();
            return Err(GgufError::Encode { name, message: "never written".into() });
        }
        let path = self.path.clone();
        self.file.commit().map_err(|source| GgufError::Write { path, source })
    }
}

/// The type code GGUF stores for `dtype`.
fn ggml_code(dtype: GgmlDType) -> u32 {
    match dtype {
        GgmlDType::F32 => 0,
        GgmlDType::F16 => 1,
        GgmlDType::Q4_0 => 2,
        GgmlDType::Q4_1 => 3,
        GgmlDType::Q5_0 => 6,
        GgmlDType::Q5_1 => 7,
        GgmlDType::Q8_0 => 8,
        GgmlDType::Q8_1 => 9,
        GgmlDType::Q2K => 10,
        GgmlDType::Q3K => 11,
        GgmlDType::Q4K => 12,
        GgmlDType::Q5K => 13,
        GgmlDType::Q6K => 14,
        GgmlDType::Q8K => 15,
        GgmlDType::BF16 => 30,
    }
}

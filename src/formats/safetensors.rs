//! safetensors files: takes named tensors and string metadata and returns
//! the bytes of a file, and takes a file and returns its header, one
//! tensor, or everything in it.
//!
//! The layout is an 8-byte little-endian header length `N`, `N` bytes of
//! JSON (`{"__metadata__": {..}, "NAME": {"dtype", "shape",
//! "data_offsets"}, ..}`) padded with spaces to a multiple of 8, then the
//! raw little-endian tensor data.
//!
//! Files are written by hand rather than with the `safetensors` crate: the
//! crate builds its header from a `HashMap`, so two runs would write the
//! same tensors in different byte orders, and the run cache and file hashes
//! need identical bytes for identical input. Here tensors and metadata
//! are laid out in name order. Reading goes through the crate, after a
//! validation of the header of our own that gives errors naming the
//! tensor and the problem.

use std::collections::BTreeMap;
use std::fmt::Write as _;
use std::fs::File;
use std::io::{self, Read, Seek, SeekFrom};
use std::path::{Path, PathBuf};

use candle_core::{DType, Device, Tensor};
pub use safetensors::Dtype;
use safetensors::SafeTensors;

use crate::check::spec::TensorInfo;

/// The largest header the `safetensors` crate accepts; a larger one would
/// make a file that other tools refuse.
const MAX_HEADER: u64 = 100_000_000;

/// The key under which the header stores string metadata.
const METADATA_KEY: &str = "__metadata__";

/// Named tensors, in name order.
pub type Tensors = BTreeMap<String, RawTensor>;

/// String metadata, in key order.
pub type Metadata = BTreeMap<String, String>;

/// Why a safetensors file could not be read or written.
#[derive(Debug, thiserror::Error)]
pub enum FormatError {
    #[error("cannot read `{}`: {source}", path.display())]
    Read { path: PathBuf, source: io::Error },
    #[error("cannot write `{}`: {source}", path.display())]
    Write { path: PathBuf, source: io::Error },
    #[error(
        "`{}` is truncated: {len} bytes, too short for the 8-byte header length",
        path.display()
    )]
    TooShort { path: PathBuf, len: u64 },
    #[error(
        "`{}`: the header length {header_len} runs past the end of the file ({file_len} bytes)",
        path.display()
    )]
    HeaderPastEnd { path: PathBuf, header_len: u64, file_len: u64 },
    #[error(
        "`{}`: the header length {header_len} is over the limit of {MAX_HEADER} bytes",
        path.display()
    )]
    HeaderTooLarge { path: PathBuf, header_len: u64 },
    #[error("`{}`: the header is not valid JSON: {detail}", path.display())]
    InvalidHeader { path: PathBuf, detail: String },
    #[error("`{}`, tensor `{name}`: {detail}", path.display())]
    BadTensor { path: PathBuf, name: String, detail: String },
    #[error(
        "`{}` is truncated: the header describes {expected} bytes of tensor data, \
         the file holds {actual}",
        path.display()
    )]
    DataTruncated { path: PathBuf, expected: u64, actual: u64 },
    #[error("`{}` has {extra} bytes after the last tensor", path.display())]
    TrailingBytes { path: PathBuf, extra: u64 },
    #[error("`{}` has no tensor `{name}`; it holds {available}", path.display())]
    MissingTensor { path: PathBuf, name: String, available: String },
    #[error("`{}`: {source}", path.display())]
    Crate { path: PathBuf, source: safetensors::SafeTensorError },
    /// An index of a sharded checkpoint that cannot be read, with why.
    #[error("`{}` is not a checkpoint index recipe can read: {detail}", path.display())]
    Index { path: PathBuf, detail: String },
    /// A GGUF file that cannot be read, with why.
    #[error("`{}` is not a GGUF file recipe can read: {detail}", path.display())]
    Gguf { path: PathBuf, detail: String },
}

impl FormatError {
    /// The same error naming the file as `shown`, e.g. the path as a recipe
    /// wrote it rather than as it was resolved.
    pub fn with_path(mut self, shown: &Path) -> Self {
        let path = match &mut self {
            FormatError::Read { path, .. }
            | FormatError::Write { path, .. }
            | FormatError::TooShort { path, .. }
            | FormatError::HeaderPastEnd { path, .. }
            | FormatError::HeaderTooLarge { path, .. }
            | FormatError::InvalidHeader { path, .. }
            | FormatError::BadTensor { path, .. }
            | FormatError::DataTruncated { path, .. }
            | FormatError::TrailingBytes { path, .. }
            | FormatError::MissingTensor { path, .. }
            | FormatError::Crate { path, .. }
            | FormatError::Index { path, .. }
            | FormatError::Gguf { path, .. } => path,
        };
        *path = shown.to_owned();
        self
    }
}

/// A named tensor ready to be written: dtype, shape and raw little-endian
/// bytes, in row-major order.
///
/// Unlike a candle tensor it can hold any safetensors dtype, `I8` included,
/// which candle has no type for.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RawTensor {
    pub dtype: Dtype,
    pub shape: Vec<usize>,
    pub data: Vec<u8>,
}

/// Encoders and decoders between candle element types and little-endian
/// bytes, one pair per type.
macro_rules! le_codec {
    ($encode:ident, $decode:ident, $ty:ty) => {
        fn $encode(t: &Tensor) -> candle_core::Result<Vec<u8>> {
            let values = t.flatten_all()?.to_vec1::<$ty>()?;
            Ok(values.iter().flat_map(|v| v.to_le_bytes()).collect())
        }

        fn $decode(data: &[u8]) -> Vec<$ty> {
            const SIZE: usize = std::mem::size_of::<$ty>();
            data.chunks_exact(SIZE)
                .map(|c| {
                    let mut bytes = [0u8; SIZE];
                    bytes.copy_from_slice(c);
                    <$ty>::from_le_bytes(bytes)
                })
                .collect()
        }
    };
}

le_codec!(encode_u8, decode_u8, u8);
le_codec!(encode_u32, decode_u32, u32);
le_codec!(encode_i16, decode_i16, i16);
le_codec!(encode_i32, decode_i32, i32);
le_codec!(encode_i64, decode_i64, i64);
le_codec!(encode_bf16, decode_bf16, half::bf16);
le_codec!(encode_f16, decode_f16, half::f16);
le_codec!(encode_f32, decode_f32, f32);
le_codec!(encode_f64, decode_f64, f64);

/// Decoders for the dtypes that candle cannot hold but a file may.
fn decode_i8(data: &[u8]) -> Vec<i8> {
    data.iter().map(|&b| i8::from_le_bytes([b])).collect()
}

fn decode_u16(data: &[u8]) -> Vec<u16> {
    data.chunks_exact(2).map(|c| u16::from_le_bytes([c[0], c[1]])).collect()
}

fn decode_u64(data: &[u8]) -> Vec<u64> {
    data.chunks_exact(8)
        .map(|c| {
            let mut bytes = [0u8; 8];
            bytes.copy_from_slice(c);
            u64::from_le_bytes(bytes)
        })
        .collect()
}

impl RawTensor {
    /// The bytes of a candle tensor, in its own dtype.
    ///
    /// Every candle dtype that safetensors also has is supported: `U8`,
    /// `U32`, `I16`, `I32`, `I64`, `BF16`, `F16`, `F32` and `F64`.
    pub fn from_tensor(t: &Tensor) -> candle_core::Result<Self> {
        let (dtype, data) = match t.dtype() {
            DType::U8 => (Dtype::U8, encode_u8(t)?),
            DType::U32 => (Dtype::U32, encode_u32(t)?),
            DType::I16 => (Dtype::I16, encode_i16(t)?),
            DType::I32 => (Dtype::I32, encode_i32(t)?),
            DType::I64 => (Dtype::I64, encode_i64(t)?),
            DType::BF16 => (Dtype::BF16, encode_bf16(t)?),
            DType::F16 => (Dtype::F16, encode_f16(t)?),
            DType::F32 => (Dtype::F32, encode_f32(t)?),
            DType::F64 => (Dtype::F64, encode_f64(t)?),
            other => {
                return Err(candle_core::Error::Msg(format!(
                    "tensors of dtype {other:?} cannot be stored in safetensors by this program"
                )))
            }
        };
        Ok(RawTensor { dtype, shape: t.dims().to_vec(), data })
    }

    /// A candle tensor with these bytes, in the same dtype.
    ///
    /// Fails for dtypes candle has no type for (`I8`, `U16`, `U64`, the
    /// 8-bit and smaller floats): widen those with [`RawTensor::to_f32s`]
    /// or by hand first.
    pub fn to_tensor(&self, dev: &Device) -> candle_core::Result<Tensor> {
        if let Err(detail) = self.check() {
            return Err(candle_core::Error::Msg(detail));
        }
        let shape = self.shape.as_slice();
        let data = self.data.as_slice();
        match self.dtype {
            Dtype::U8 => Tensor::from_vec(decode_u8(data), shape, dev),
            Dtype::U32 => Tensor::from_vec(decode_u32(data), shape, dev),
            Dtype::I16 => Tensor::from_vec(decode_i16(data), shape, dev),
            Dtype::I32 => Tensor::from_vec(decode_i32(data), shape, dev),
            Dtype::I64 => Tensor::from_vec(decode_i64(data), shape, dev),
            Dtype::BF16 => Tensor::from_vec(decode_bf16(data), shape, dev),
            Dtype::F16 => Tensor::from_vec(decode_f16(data), shape, dev),
            Dtype::F32 => Tensor::from_vec(decode_f32(data), shape, dev),
            Dtype::F64 => Tensor::from_vec(decode_f64(data), shape, dev),
            other => Err(candle_core::Error::Msg(format!(
                "candle has no dtype for safetensors {other}; convert the values first"
            ))),
        }
    }

    /// The number of elements, the product of the shape.
    pub fn elem_count(&self) -> usize {
        self.shape.iter().product()
    }

    /// The values widened to `f32`, for every numeric dtype (`BOOL` as 0
    /// and 1); `None` for the 8-bit and smaller floats and for complex
    /// values, which have no plain conversion. Integers beyond 2^24 lose
    /// precision, as any cast to `f32` does.
    pub fn to_f32s(&self) -> Option<Vec<f32>> {
        self.check().ok()?;
        let data = self.data.as_slice();
        let values = match self.dtype {
            Dtype::BOOL | Dtype::U8 => decode_u8(data).into_iter().map(f32::from).collect(),
            Dtype::I8 => decode_i8(data).into_iter().map(f32::from).collect(),
            Dtype::U16 => decode_u16(data).into_iter().map(f32::from).collect(),
            Dtype::I16 => decode_i16(data).into_iter().map(f32::from).collect(),
            Dtype::U32 => decode_u32(data).into_iter().map(|v| v as f32).collect(),
            Dtype::I32 => decode_i32(data).into_iter().map(|v| v as f32).collect(),
            Dtype::U64 => decode_u64(data).into_iter().map(|v| v as f32).collect(),
            Dtype::I64 => decode_i64(data).into_iter().map(|v| v as f32).collect(),
            Dtype::BF16 => decode_bf16(data).into_iter().map(f32::from).collect(),
            Dtype::F16 => decode_f16(data).into_iter().map(f32::from).collect(),
            Dtype::F32 => decode_f32(data),
            Dtype::F64 => decode_f64(data).into_iter().map(|v| v as f32).collect(),
            _ => return None,
        };
        Some(values)
    }

    /// The values widened to `f64`, as [`RawTensor::to_f32s`] does; exact
    /// for every integer up to 2^53.
    pub fn to_f64s(&self) -> Option<Vec<f64>> {
        self.check().ok()?;
        let data = self.data.as_slice();
        let values = match self.dtype {
            Dtype::U32 => decode_u32(data).into_iter().map(f64::from).collect(),
            Dtype::I32 => decode_i32(data).into_iter().map(f64::from).collect(),
            Dtype::U64 => decode_u64(data).into_iter().map(|v| v as f64).collect(),
            Dtype::I64 => decode_i64(data).into_iter().map(|v| v as f64).collect(),
            Dtype::F64 => decode_f64(data),
            // Every other numeric dtype is exact in f32 already.
            _ => self.to_f32s()?.into_iter().map(f64::from).collect(),
        };
        Some(values)
    }

    /// Whether the byte count agrees with the dtype and shape; the error
    /// says how they differ.
    pub fn check(&self) -> Result<(), String> {
        match byte_size(self.dtype, &self.shape) {
            Some(size) if size == self.data.len() => Ok(()),
            Some(size) => Err(format!(
                "dtype {} and shape {:?} need {size} bytes, the tensor has {}",
                self.dtype,
                self.shape,
                self.data.len()
            )),
            None => Err(format!(
                "dtype {} and shape {:?} do not fill a whole number of bytes",
                self.dtype, self.shape
            )),
        }
    }
}

/// The bytes a tensor of this dtype and shape takes, or `None` when that
/// overflows or is not a whole number of bytes.
fn byte_size(dtype: Dtype, shape: &[usize]) -> Option<usize> {
    let elems = shape.iter().try_fold(1usize, |acc, &d| acc.checked_mul(d))?;
    let bits = elems.checked_mul(dtype.bitsize())?;
    (bits % 8 == 0).then_some(bits / 8)
}

/// What a file header says, without any tensor data.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Header {
    /// Names, dtypes (`"F32"`, `"BF16"`, `"U8"`, spelt as safetensors
    /// spells them) and shapes, sorted by name.
    pub tensors: Vec<TensorInfo>,
    pub metadata: BTreeMap<String, String>,
}

impl Header {
    /// The tensor called `name`, or an error naming the file and listing
    /// the tensors it holds.
    pub fn tensor(&self, path: &Path, name: &str) -> Result<&TensorInfo, FormatError> {
        self.tensors
            .iter()
            .find(|t| t.name == name)
            .ok_or_else(|| missing_tensor(path, name, self.tensors.iter().map(|t| t.name.as_str())))
    }
}

fn missing_tensor<'a>(
    path: &Path,
    name: &str,
    names: impl Iterator<Item = &'a str>,
) -> FormatError {
    let names: Vec<String> = names.map(|n| format!("`{n}`")).collect();
    let available = if names.is_empty() { "no tensors".to_owned() } else { names.join(", ") };
    FormatError::MissingTensor { path: path.to_owned(), name: name.to_owned(), available }
}

/// Serialise tensors and metadata to the bytes of a safetensors file,
/// deterministically: the same input always gives the same bytes.
///
/// Metadata comes first in the header (left out when empty), then the
/// tensors in name order, their data in the same order. The caller must
/// give consistent tensors (see [`RawTensor::check`]) and no tensor named
/// `__metadata__`; [`write()`] checks both.
pub fn to_bytes(
    tensors: &BTreeMap<String, RawTensor>,
    metadata: &BTreeMap<String, String>,
) -> Vec<u8> {
    let header = header_bytes(
        tensors.iter().map(|(n, t)| (n.as_str(), t.dtype, &t.shape[..], t.data.len())),
        metadata,
    );
    let data_len: usize = tensors.values().map(|t| t.data.len()).sum();
    let mut bytes = Vec::with_capacity(header.len() + data_len);
    bytes.extend_from_slice(&header);
    for t in tensors.values() {
        bytes.extend_from_slice(&t.data);
    }
    bytes
}

/// The length prefix and padded JSON header of a file holding, in the order given (which
/// must be name order), tensors of the given names, dtypes, shapes and byte lengths.
fn header_bytes<'a>(
    tensors: impl Iterator<Item = (&'a str, Dtype, &'a [usize], usize)>,
    metadata: &BTreeMap<String, String>,
) -> Vec<u8> {
    let mut header = String::from("{");
    let mut first = true;
    if !metadata.is_empty() {
        header.push_str(&json_string(METADATA_KEY));
        header.push_str(":{");
        for (idx, (key, value)) in metadata.iter().enumerate() {
            if idx > 0 {
                header.push(',');
            }
            let _ = write!(header, "{}:{}", json_string(key), json_string(value));
        }
        header.push('}');
        first = false;
    }
    let mut offset = 0usize;
    for (name, dtype, shape, len) in tensors {
        if !first {
            header.push(',');
        }
        first = false;
        let shape: Vec<String> = shape.iter().map(usize::to_string).collect();
        let end = offset + len;
        let _ = write!(
            header,
            "{}:{{\"dtype\":\"{}\",\"shape\":[{}],\"data_offsets\":[{offset},{end}]}}",
            json_string(name),
            dtype,
            shape.join(",")
        );
        offset = end;
    }
    header.push('}');
    while header.len() % 8 != 0 {
        header.push(' ');
    }
    let mut bytes = Vec::with_capacity(8 + header.len());
    bytes.extend_from_slice(&(header.len() as u64).to_le_bytes());
    bytes.extend_from_slice(header.as_bytes());
    bytes
}

/// A safetensors file, or a set of shards with an index, written one tensor at a time.
///
/// The header lists every tensor's offsets in name order, so it is known only at the end:
/// tensors go to a spill file beside the output as they come, and [`SafetensorsStream::finish`]
/// writes the header and copies the data behind it. The data is written twice; memory holds
/// one tensor.
pub struct SafetensorsStream {
    path: PathBuf,
    spill_path: PathBuf,
    spill: File,
    entries: BTreeMap<String, (Dtype, Vec<usize>, u64, u64)>,
    end: u64,
}

impl SafetensorsStream {
    pub fn create(path: &Path) -> Result<SafetensorsStream, FormatError> {
        let write = |source| FormatError::Write { path: path.to_owned(), source };
        if let Some(parent) = path.parent().filter(|p| !p.as_os_str().is_empty()) {
            std::fs::create_dir_all(parent).map_err(write)?;
        }
        let spill_path = super::temporary(path, "-spill");
        let spill = std::fs::OpenOptions::new()
            .read(true)
            .write(true)
            .create(true)
            .truncate(true)
            .open(&spill_path)
            .map_err(write)?;
        Ok(SafetensorsStream {
            path: path.to_owned(),
            spill_path,
            spill,
            entries: BTreeMap::new(),
            end: 0,
        })
    }

    pub fn push(&mut self, name: &str, t: &RawTensor) -> Result<(), FormatError> {
        let bad = |detail: String| FormatError::BadTensor {
            path: self.path.clone(),
            name: name.to_owned(),
            detail,
        };
        if name == METADATA_KEY || self.entries.contains_key(name) {
            return Err(bad("the name is reserved or written twice".into()));
        }
        t.check().map_err(bad)?;
        use std::io::Write as _;
        self.spill
            .write_all(&t.data)
            .map_err(|source| FormatError::Write { path: self.path.clone(), source })?;
        let len = t.data.len() as u64;
        self.entries.insert(name.to_owned(), (t.dtype, t.shape.clone(), self.end, len));
        self.end += len;
        Ok(())
    }

    /// Write the file with `metadata`; or, with `shard_size`, shards of at most that many
    /// bytes of data each (or one tensor, if larger) named `STEM-00001-of-0000N.safetensors`
    /// and an index `NAME.index.json` listing where each tensor is. Returns the files written.
    pub fn finish(
        self,
        metadata: &BTreeMap<String, String>,
        shard_size: Option<u64>,
    ) -> Result<Vec<PathBuf>, FormatError> {
        let write = |source| FormatError::Write { path: self.path.clone(), source };
        let mut groups: Vec<Vec<&String>> = vec![Vec::new()];
        let mut size = 0u64;
        for (name, (_, _, _, len)) in &self.entries {
            let full = shard_size.is_some_and(|limit| size + len > limit);
            if full && !groups.last().is_some_and(Vec::is_empty) {
                groups.push(Vec::new());
                size = 0;
            }
            size += len;
            groups.last_mut().expect("one group at least").push(name);
        }
        let files: Vec<PathBuf> = match shard_size {
            None => vec![self.path.clone()],
            Some(_) => {
                let stem = self.path.file_stem().map(|s| s.to_string_lossy().into_owned());
                let stem = stem.unwrap_or_default();
                (1..=groups.len())
                    .map(|i| {
                        self.path.with_file_name(format!(
                            "{stem}-{i:05}-of-{:05}.safetensors",
                            groups.len()
                        ))
                    })
                    .collect()
            }
        };
        let mut written = Vec::new();
        let mut weight_map = BTreeMap::new();
        let mut buf = Vec::new();
        for (group, file) in groups.iter().zip(&files) {
            let tensors = group.iter().map(|name| {
                let (dtype, shape, _, len) = &self.entries[*name];
                (name.as_str(), *dtype, &shape[..], *len as usize)
            });
            let mut out = super::AtomicFile::create(file).map_err(write)?;
            out.write_all(&header_bytes(tensors, metadata)).map_err(write)?;
            for name in group {
                let (_, _, start, len) = self.entries[*name];
                buf.resize(len as usize, 0);
                read_exact_at(&self.spill, &mut buf, start).map_err(write)?;
                out.write_all(&buf).map_err(write)?;
                let file_name = file.file_name().map(|n| n.to_string_lossy().into_owned());
                weight_map.insert((*name).clone(), file_name.unwrap_or_default());
            }
            out.commit().map_err(write)?;
            written.push(file.clone());
        }
        if shard_size.is_some() {
            let index_path = {
                let mut name = self.path.file_name().unwrap_or_default().to_os_string();
                name.push(".index.json");
                self.path.with_file_name(name)
            };
            let index = serde_json::json!({
                "metadata": { "total_size": self.end },
                "weight_map": weight_map,
            });
            let text = serde_json::to_string_pretty(&index).expect("an index serialises");
            super::write_atomic(&index_path, text.as_bytes()).map_err(write)?;
            written.push(index_path);
        }
        Ok(written)
    }
}

impl Drop for SafetensorsStream {
    fn drop(&mut self) {
        let _ = std::fs::remove_file(&self.spill_path);
    }
}

/// Fill `buf` from `file` at `offset`, leaving the file position alone where the platform
/// allows.
#[cfg(unix)]
pub(crate) fn read_exact_at(file: &File, buf: &mut [u8], offset: u64) -> io::Result<()> {
    std::os::unix::fs::FileExt::read_exact_at(file, buf, offset)
}

#[cfg(not(unix))]
pub(crate) fn read_exact_at(mut file: &File, buf: &mut [u8], offset: u64) -> io::Result<()> {
    file.seek(SeekFrom::Start(offset))?;
    file.read_exact(buf)
}

fn json_string(s: &str) -> String {
    serde_json::Value::String(s.to_owned()).to_string()
}

/// Write a safetensors file atomically (see [`super::write_atomic`]),
/// creating parent folders.
pub fn write(
    path: &Path,
    tensors: &BTreeMap<String, RawTensor>,
    metadata: &BTreeMap<String, String>,
) -> Result<(), FormatError> {
    for (name, t) in tensors {
        let bad = |detail: String| FormatError::BadTensor {
            path: path.to_owned(),
            name: name.clone(),
            detail,
        };
        if name == METADATA_KEY {
            return Err(bad(format!("the name `{METADATA_KEY}` is reserved for metadata")));
        }
        t.check().map_err(bad)?;
    }
    let bytes = to_bytes(tensors, metadata);
    super::write_atomic(path, &bytes)
        .map_err(|source| FormatError::Write { path: path.to_owned(), source })
}

/// Read the header only: tensor names, dtypes, shapes and metadata. Only
/// the 8-byte length and the header itself are read; the header is checked
/// against the file's length, so a truncated file is found here too.
pub fn read_header(path: &Path) -> Result<Header, FormatError> {
    let mut file = open(path)?;
    let layout = read_layout(path, &mut file)?;
    Ok(layout.header())
}

/// Read one tensor, seeking past the others.
pub fn read_tensor(path: &Path, name: &str) -> Result<RawTensor, FormatError> {
    let mut file = open(path)?;
    let layout = read_layout(path, &mut file)?;
    let Some(entry) = layout.entries.get(name) else {
        return Err(layout.missing(path, name));
    };
    let (begin, end) = entry.data_offsets;
    let read_err = |source| FormatError::Read { path: path.to_owned(), source };
    file.seek(SeekFrom::Start(layout.data_start + begin as u64)).map_err(read_err)?;
    let mut data = vec![0u8; end - begin];
    file.read_exact(&mut data).map_err(read_err)?;
    Ok(RawTensor { dtype: entry.dtype, shape: entry.shape.clone(), data })
}

/// Read every tensor and the metadata.
pub fn read(path: &Path) -> Result<(Tensors, Metadata), FormatError> {
    let bytes = std::fs::read(path)
        .map_err(|source| FormatError::Read { path: path.to_owned(), source })?;
    let layout = parse_layout(path, &bytes, bytes.len() as u64)?;

    // Our own checks have passed, so the crate should accept the file; it
    // is still asked, so that we read exactly what other tools read.
    let st = SafeTensors::deserialize(&bytes)
        .map_err(|source| FormatError::Crate { path: path.to_owned(), source })?;
    let tensors = st
        .iter()
        .map(|(name, view)| {
            let raw = RawTensor {
                dtype: view.dtype(),
                shape: view.shape().to_vec(),
                data: view.data().to_vec(),
            };
            (name.to_owned(), raw)
        })
        .collect();
    Ok((tensors, layout.metadata))
}

/// Where one tensor's bytes lie in its file.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Located {
    pub dtype: Dtype,
    pub shape: Vec<usize>,
    /// The file offset of its first byte.
    pub start: u64,
    pub len: u64,
}

/// Every tensor of a file with where its bytes lie, and the file's metadata, from the
/// header alone (checked as [`read_header`] checks it).
pub fn locate(path: &Path) -> Result<(BTreeMap<String, Located>, Metadata), FormatError> {
    let mut file = open(path)?;
    let layout = read_layout(path, &mut file)?;
    let tensors = layout
        .entries
        .into_iter()
        .map(|(name, e)| {
            let (begin, end) = e.data_offsets;
            let located = Located {
                dtype: e.dtype,
                shape: e.shape,
                start: layout.data_start + begin as u64,
                len: (end - begin) as u64,
            };
            (name, located)
        })
        .collect();
    Ok((tensors, layout.metadata))
}

/// One tensor's entry in the header.
#[derive(Debug, Clone, serde::Deserialize)]
struct Entry {
    dtype: Dtype,
    shape: Vec<usize>,
    data_offsets: (usize, usize),
}

/// A checked header: where the data starts and what it holds.
#[derive(Debug)]
struct Layout {
    /// The file offset of the first byte of tensor data.
    data_start: u64,
    entries: BTreeMap<String, Entry>,
    metadata: BTreeMap<String, String>,
}

impl Layout {
    fn header(&self) -> Header {
        let tensors = self
            .entries
            .iter()
            .map(|(name, e)| TensorInfo {
                name: name.clone(),
                dtype: e.dtype.to_string(),
                shape: e.shape.clone(),
            })
            .collect();
        Header { tensors, metadata: self.metadata.clone() }
    }

    fn missing(&self, path: &Path, name: &str) -> FormatError {
        missing_tensor(path, name, self.entries.keys().map(String::as_str))
    }
}

fn open(path: &Path) -> Result<File, FormatError> {
    File::open(path).map_err(|source| FormatError::Read { path: path.to_owned(), source })
}

/// Read and check the header of an open file, leaving the tensor data
/// unread.
fn read_layout(path: &Path, file: &mut File) -> Result<Layout, FormatError> {
    let read_err = |source| FormatError::Read { path: path.to_owned(), source };
    let file_len = file.metadata().map_err(read_err)?.len();
    let header_len = header_len(path, file_len, |buf| file.read_exact(buf).map_err(read_err))?;
    let mut header = vec![0u8; header_len as usize];
    file.read_exact(&mut header).map_err(read_err)?;
    check_header(path, &header, file_len)
}

/// Check a whole file held in memory.
fn parse_layout(path: &Path, bytes: &[u8], file_len: u64) -> Result<Layout, FormatError> {
    let header_len = header_len(path, file_len, |buf| {
        buf.copy_from_slice(&bytes[..8]);
        Ok(())
    })?;
    check_header(path, &bytes[8..8 + header_len as usize], file_len)
}

/// Read the 8-byte header length with `read8` and check that the header
/// fits in the file.
fn header_len(
    path: &Path,
    file_len: u64,
    read8: impl FnOnce(&mut [u8; 8]) -> Result<(), FormatError>,
) -> Result<u64, FormatError> {
    if file_len < 8 {
        return Err(FormatError::TooShort { path: path.to_owned(), len: file_len });
    }
    let mut buf = [0u8; 8];
    read8(&mut buf)?;
    let header_len = u64::from_le_bytes(buf);
    if header_len > file_len - 8 {
        return Err(FormatError::HeaderPastEnd { path: path.to_owned(), header_len, file_len });
    }
    if header_len > MAX_HEADER {
        return Err(FormatError::HeaderTooLarge { path: path.to_owned(), header_len });
    }
    Ok(header_len)
}

/// Parse the JSON header and check every entry against the file: dtype
/// and shape against the byte count, offsets contiguous from the start of
/// the data, the last one at the end of the file.
fn check_header(path: &Path, header: &[u8], file_len: u64) -> Result<Layout, FormatError> {
    let invalid = |detail: String| FormatError::InvalidHeader { path: path.to_owned(), detail };
    let text = std::str::from_utf8(header).map_err(|e| invalid(format!("not UTF-8: {e}")))?;
    let value: serde_json::Value =
        serde_json::from_str(text).map_err(|e| invalid(e.to_string()))?;
    let serde_json::Value::Object(map) = value else {
        return Err(invalid("the header is not a JSON object".to_owned()));
    };

    // Split the metadata from the tensor entries.
    let mut metadata = BTreeMap::new();
    let mut entries = BTreeMap::new();
    for (key, value) in map {
        if key == METADATA_KEY {
            let serde_json::Value::Object(meta) = value else {
                return Err(invalid(format!("`{METADATA_KEY}` is not an object")));
            };
            for (k, v) in meta {
                let serde_json::Value::String(v) = v else {
                    return Err(invalid(format!("metadata `{k}` is not a string")));
                };
                metadata.insert(k, v);
            }
            continue;
        }
        let entry: Entry = serde_json::from_value(value).map_err(|e| FormatError::BadTensor {
            path: path.to_owned(),
            name: key.clone(),
            detail: format!("malformed entry: {e}"),
        })?;
        entries.insert(key, entry);
    }

    // Each tensor's byte count must match its dtype and shape.
    for (name, e) in &entries {
        let bad =
            |detail| FormatError::BadTensor { path: path.to_owned(), name: name.clone(), detail };
        let (begin, end) = e.data_offsets;
        if end < begin {
            return Err(bad(format!("offsets [{begin}, {end}] end before they begin")));
        }
        match byte_size(e.dtype, &e.shape) {
            Some(size) if size == end - begin => {}
            Some(size) => {
                return Err(bad(format!(
                    "dtype {} and shape {:?} need {size} bytes, its offsets [{begin}, {end}] \
                     span {}",
                    e.dtype,
                    e.shape,
                    end - begin
                )))
            }
            None => {
                return Err(bad(format!(
                    "dtype {} and shape {:?} do not fill a whole number of bytes",
                    e.dtype, e.shape
                )))
            }
        }
    }

    // In offset order the tensors must tile the data with no gap or
    // overlap; the `safetensors` crate refuses anything else.
    let mut by_offset: Vec<(&String, &Entry)> = entries.iter().collect();
    by_offset.sort_by_key(|(_, e)| e.data_offsets);
    let mut expected = 0usize;
    let mut previous: Option<&str> = None;
    for (name, e) in &by_offset {
        let begin = e.data_offsets.0;
        if begin != expected {
            let detail = match (begin < expected, previous) {
                (true, Some(prev)) => format!("its data overlaps that of tensor `{prev}`"),
                _ => format!("its data begins at {begin}, where {expected} was expected"),
            };
            return Err(FormatError::BadTensor {
                path: path.to_owned(),
                name: (*name).clone(),
                detail,
            });
        }
        expected = e.data_offsets.1;
        previous = Some(name);
    }

    // The data must end exactly at the end of the file.
    let data_start = 8 + header.len() as u64;
    let actual = file_len - data_start;
    let expected = expected as u64;
    if expected > actual {
        return Err(FormatError::DataTruncated { path: path.to_owned(), expected, actual });
    }
    if expected < actual {
        return Err(FormatError::TrailingBytes { path: path.to_owned(), extra: actual - expected });
    }
    Ok(Layout { data_start, entries, metadata })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sample() -> (BTreeMap<String, RawTensor>, BTreeMap<String, String>) {
        let dev = Device::Cpu;
        let w = Tensor::new(&[[1.5f32, -2.0, 0.25], [3.0, 4.0, -0.5]], &dev).unwrap();
        let b = w.to_dtype(DType::BF16).unwrap().sum(0).unwrap();
        let q = Tensor::new(&[0u8, 7, 255, 3], &dev).unwrap();
        let mut tensors = BTreeMap::new();
        tensors.insert("0.weight".to_owned(), RawTensor::from_tensor(&w).unwrap());
        tensors.insert("0.bias".to_owned(), RawTensor::from_tensor(&b).unwrap());
        tensors.insert("mask".to_owned(), RawTensor::from_tensor(&q).unwrap());
        let mut metadata = BTreeMap::new();
        metadata.insert("step".to_owned(), "train \"base\"".to_owned());
        metadata.insert("accuracy".to_owned(), "0.97".to_owned());
        (tensors, metadata)
    }

    #[test]
    fn round_trip_keeps_values_dtypes_and_metadata() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("out/w.safetensors");
        let (tensors, metadata) = sample();
        write(&path, &tensors, &metadata).unwrap();
        let (back, meta_back) = read(&path).unwrap();
        assert_eq!(back, tensors);
        assert_eq!(meta_back, metadata);

        let dev = Device::Cpu;
        let w = back["0.weight"].to_tensor(&dev).unwrap();
        assert_eq!(w.dtype(), DType::F32);
        assert_eq!(w.to_vec2::<f32>().unwrap(), [[1.5, -2.0, 0.25], [3.0, 4.0, -0.5]]);
        let b = back["0.bias"].to_tensor(&dev).unwrap();
        assert_eq!(b.dtype(), DType::BF16);
        let b: Vec<f32> = b.to_dtype(DType::F32).unwrap().to_vec1().unwrap();
        assert_eq!(b, [4.5, 2.0, -0.25]);
        let q = back["mask"].to_tensor(&dev).unwrap();
        assert_eq!(q.to_vec1::<u8>().unwrap(), [0, 7, 255, 3]);
    }

    #[test]
    fn output_is_byte_identical_and_readable_by_the_crate() {
        let (tensors, metadata) = sample();
        let a = to_bytes(&tensors, &metadata);
        let b = to_bytes(&tensors.clone(), &metadata.clone());
        assert_eq!(a, b);

        let header_len = u64::from_le_bytes(a[..8].try_into().unwrap()) as usize;
        assert_eq!(header_len % 8, 0);

        let st = SafeTensors::deserialize(&a).unwrap();
        let mut names = st.names();
        names.sort();
        assert_eq!(names, ["0.bias", "0.weight", "mask"]);
        let w = st.tensor("0.weight").unwrap();
        assert_eq!(w.dtype(), Dtype::F32);
        assert_eq!(w.shape(), [2, 3]);
        assert_eq!(w.data(), tensors["0.weight"].data.as_slice());
        let (_, meta) = SafeTensors::read_metadata(&a).unwrap();
        let meta = meta.metadata().clone().unwrap();
        assert_eq!(meta.get("step").map(String::as_str), Some("train \"base\""));
    }

    #[test]
    fn header_only_and_single_tensor_reads() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("w.safetensors");
        let (tensors, metadata) = sample();
        write(&path, &tensors, &metadata).unwrap();

        let header = read_header(&path).unwrap();
        assert_eq!(header.metadata, metadata);
        let summary: Vec<(&str, &str, &[usize])> = header
            .tensors
            .iter()
            .map(|t| (t.name.as_str(), t.dtype.as_str(), t.shape.as_slice()))
            .collect();
        assert_eq!(
            summary,
            [("0.bias", "BF16", &[3][..]), ("0.weight", "F32", &[2, 3]), ("mask", "U8", &[4])]
        );

        assert_eq!(read_tensor(&path, "mask").unwrap(), tensors["mask"]);
        let err = read_tensor(&path, "nope").unwrap_err().to_string();
        assert!(err.ends_with("has no tensor `nope`; it holds `0.bias`, `0.weight`, `mask`"));
    }

    #[test]
    fn empty_file_has_no_metadata_key() {
        let bytes = to_bytes(&BTreeMap::new(), &BTreeMap::new());
        assert_eq!(&bytes[8..], b"{}      ");
        assert!(SafeTensors::deserialize(&bytes).unwrap().is_empty());
    }

    #[test]
    fn i8_tensors_are_written_and_widened() {
        let raw = RawTensor { dtype: Dtype::I8, shape: vec![3], data: vec![0x80, 0xff, 0x05] };
        assert_eq!(raw.to_f32s().unwrap(), [-128.0, -1.0, 5.0]);
        assert!(raw.to_tensor(&Device::Cpu).is_err());
        let mut tensors = BTreeMap::new();
        tensors.insert("q".to_owned(), raw.clone());
        let bytes = to_bytes(&tensors, &BTreeMap::new());
        let st = SafeTensors::deserialize(&bytes).unwrap();
        assert_eq!(st.tensor("q").unwrap().dtype(), Dtype::I8);
    }

    #[test]
    fn truncated_files_are_reported() {
        let dir = tempfile::tempdir().unwrap();
        let (tensors, metadata) = sample();
        let bytes = to_bytes(&tensors, &metadata);

        // A file shorter than the header length itself.
        let path = dir.path().join("tiny.safetensors");
        std::fs::write(&path, &bytes[..5]).unwrap();
        let err = read_header(&path).unwrap_err();
        assert!(matches!(err, FormatError::TooShort { len: 5, .. }), "{err}");

        // A file cut inside the tensor data: the header reads, the check fails.
        let path = dir.path().join("cut.safetensors");
        std::fs::write(&path, &bytes[..bytes.len() - 3]).unwrap();
        let err = read_header(&path).unwrap_err();
        assert!(matches!(err, FormatError::DataTruncated { .. }), "{err}");
        assert!(err.to_string().contains("cut.safetensors` is truncated"), "{err}");
        assert!(matches!(read(&path), Err(FormatError::DataTruncated { .. })));
    }

    #[test]
    fn header_length_past_the_end_is_reported() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("long.safetensors");
        let mut bytes = 1000u64.to_le_bytes().to_vec();
        bytes.extend_from_slice(b"{}");
        std::fs::write(&path, &bytes).unwrap();
        let err = read_header(&path).unwrap_err().to_string();
        assert!(err.contains("the header length 1000 runs past the end of the file (10 bytes)"));
    }

    #[test]
    fn bad_headers_name_the_problem() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("bad.safetensors");
        let file = |header: &str, data_len: usize| {
            let mut bytes = (header.len() as u64).to_le_bytes().to_vec();
            bytes.extend_from_slice(header.as_bytes());
            bytes.extend(std::iter::repeat_n(0u8, data_len));
            std::fs::write(&path, &bytes).unwrap();
            read(&path).unwrap_err().to_string()
        };

        let err = file("{not json", 0);
        assert!(err.contains("the header is not valid JSON"), "{err}");

        let err = file(r#"{"a":{"dtype":"F32","shape":[2],"data_offsets":[0,4]}}"#, 4);
        assert!(err.contains("tensor `a`: dtype F32 and shape [2] need 8 bytes"), "{err}");

        let overlap = r#"{"a":{"dtype":"U8","shape":[4],"data_offsets":[0,4]},
                          "b":{"dtype":"U8","shape":[2],"data_offsets":[2,4]}}"#;
        let err = file(overlap, 4);
        assert!(err.contains("tensor `b`: its data overlaps that of tensor `a`"), "{err}");

        let err = file(r#"{"a":{"dtype":"U8","shape":[4],"data_offsets":[0,4]}}"#, 6);
        assert!(err.contains("has 2 bytes after the last tensor"), "{err}");
    }

    #[test]
    fn write_rejects_inconsistent_tensors() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("w.safetensors");
        let mut tensors = BTreeMap::new();
        tensors.insert(
            "w".to_owned(),
            RawTensor { dtype: Dtype::F32, shape: vec![2], data: vec![0; 5] },
        );
        let err = write(&path, &tensors, &BTreeMap::new()).unwrap_err().to_string();
        assert!(err.contains("tensor `w`: dtype F32 and shape [2] need 8 bytes"), "{err}");
        assert!(!path.exists());
    }
}

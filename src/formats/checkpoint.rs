//! Pretrained checkpoints: one safetensors file, or the shards a `*.index.json` lists (the
//! layout of Hugging Face's sharded checkpoints), read one tensor at a time.
//!
//! Opening reads the headers only. A tensor is read with a positioned read into a buffer of
//! its own size rather than through a memory map: pages of a map count towards the resident
//! memory of the process for as long as they stay mapped, while pages read into the kernel's
//! cache do not, so the process holds about one tensor however large the checkpoint.

use std::collections::BTreeMap;
use std::fs::File;
use std::path::{Path, PathBuf};

use rayon::prelude::*;

use super::safetensors::{locate, Dtype, FormatError, Located, Metadata};

/// A checkpoint's tensors, where each lies, and its metadata.
#[derive(Debug)]
pub struct Checkpoint {
    /// The files holding the tensors: the one file, or the shards in the index's order.
    pub files: Vec<PathBuf>,
    /// Every tensor by name, with the position of its file in `files`.
    pub tensors: BTreeMap<String, (usize, Located)>,
    /// The metadata of the first file.
    pub metadata: Metadata,
    /// Whether the tensors came through an index.
    pub sharded: bool,
    handles: Vec<File>,
}

/// Whether `path` names an index of shards rather than a safetensors file.
pub fn is_index(path: &Path) -> bool {
    path.extension().is_some_and(|e| e.eq_ignore_ascii_case("json"))
}

impl Checkpoint {
    /// Open the checkpoint at `path` (a `.safetensors` file or an index), reading and checking
    /// every header.
    pub fn open(path: &Path) -> Result<Checkpoint, FormatError> {
        let files = if is_index(path) { shards(path)? } else { vec![path.to_path_buf()] };
        let mut tensors = BTreeMap::new();
        let mut metadata = Metadata::new();
        let mut handles = Vec::with_capacity(files.len());
        for (index, file) in files.iter().enumerate() {
            let (located, meta) = locate(file)?;
            if index == 0 {
                metadata = meta;
            }
            for (name, at) in located {
                if let Some((other, _)) = tensors.insert(name.clone(), (index, at)) {
                    return Err(FormatError::Index {
                        path: path.to_path_buf(),
                        detail: format!(
                            "tensor `{name}` is in both `{}` and `{}`",
                            files[other].display(),
                            file.display()
                        ),
                    });
                }
            }
            let handle = File::open(file)
                .map_err(|source| FormatError::Read { path: file.clone(), source })?;
            handles.push(handle);
        }
        if is_index(path) {
            check_map(path, &files, &tensors)?;
        }
        Ok(Checkpoint { sharded: is_index(path), files, tensors, metadata, handles })
    }

    /// The header of the whole checkpoint, as one file's would be.
    pub fn header(&self) -> super::safetensors::Header {
        let tensors = self
            .tensors
            .iter()
            .map(|(name, (_, at))| crate::check::spec::TensorInfo {
                name: name.clone(),
                dtype: at.dtype.to_string(),
                shape: at.shape.clone(),
            })
            .collect();
        super::safetensors::Header { tensors, metadata: self.metadata.clone() }
    }

    /// Refuse float tensor `name` if a value is infinite or NaN, judged on the stored bits
    /// (read into `buf`, whose memory is reused).
    pub fn check_finite(&self, name: &str, buf: &mut Vec<u8>) -> Result<(), FormatError> {
        self.bytes_into(name, buf)?;
        let (file, at) = &self.tensors[name];
        let halves = || buf.chunks_exact(2).map(|c| u16::from_le_bytes([c[0], c[1]]));
        let words = || buf.chunks_exact(4).map(|c| u32::from_le_bytes([c[0], c[1], c[2], c[3]]));
        // All exponent bits set is an infinity or a NaN, in every IEEE format.
        let bad = match at.dtype {
            Dtype::BF16 => halves().position(|b| b & 0x7f80 == 0x7f80),
            Dtype::F16 => halves().position(|b| b & 0x7c00 == 0x7c00),
            Dtype::F32 => words().position(|w| w & 0x7f80_0000 == 0x7f80_0000),
            _ => None,
        };
        match bad {
            None => Ok(()),
            Some(i) => {
                let size = at.dtype.bitsize() / 8;
                let value = to_f32(at.dtype, &buf[i * size..][..size]).map_or(f32::NAN, |v| v[0]);
                Err(FormatError::BadTensor {
                    path: self.files[*file].clone(),
                    name: name.to_string(),
                    detail: format!("value {i} is {value}; the weights must be finite"),
                })
            }
        }
    }

    /// The stored bytes of tensor `name` into `buf`, whose memory is reused.
    pub fn bytes_into(&self, name: &str, buf: &mut Vec<u8>) -> Result<(), FormatError> {
        let Some((file, at)) = self.tensors.get(name) else {
            return Err(self.missing(name));
        };
        buf.resize(at.len as usize, 0);
        super::safetensors::read_exact_at(&self.handles[*file], buf, at.start)
            .map_err(|source| FormatError::Read { path: self.files[*file].clone(), source })
    }

    fn missing(&self, name: &str) -> FormatError {
        FormatError::MissingTensor {
            path: self.files[0].clone(),
            name: name.to_string(),
            available: format!("{} tensors", self.tensors.len()),
        }
    }

    /// The stored bytes of tensor `name`.
    pub fn bytes(&self, name: &str) -> Result<Vec<u8>, FormatError> {
        let mut buf = Vec::new();
        self.bytes_into(name, &mut buf)?;
        Ok(buf)
    }

    /// The values of float tensor `name` as `f32`. Whether they are finite is for
    /// [`Checkpoint::check_finite`], which a `load` runs once over every tensor.
    pub fn values(&self, name: &str) -> Result<Vec<f32>, FormatError> {
        let mut values = Vec::new();
        self.values_into(name, &mut Vec::new(), &mut values)?;
        Ok(values)
    }

    /// [`Checkpoint::values`] into `values`, through `raw`; the memory of both is reused.
    pub fn values_into(
        &self,
        name: &str,
        raw: &mut Vec<u8>,
        values: &mut Vec<f32>,
    ) -> Result<(), FormatError> {
        let (file, at) = &self.tensors[name];
        let bad = |detail: String| FormatError::BadTensor {
            path: self.files[*file].clone(),
            name: name.to_string(),
            detail,
        };
        if !is_float(at.dtype) {
            return Err(bad(format!("{} is not a float dtype this program reads", at.dtype)));
        }
        self.bytes_into(name, raw)?;
        let size = at.dtype.bitsize() / 8;
        values.resize(raw.len() / size, 0.0);
        const CHUNK: usize = 1 << 16;
        values.par_chunks_mut(CHUNK).zip(raw.par_chunks(CHUNK * size)).for_each(|(out, bytes)| {
            convert(at.dtype, bytes, out);
        });
        Ok(())
    }

    /// Whether tensor `name` holds floats that [`Checkpoint::values`] reads.
    pub fn is_float(&self, name: &str) -> bool {
        self.tensors.get(name).is_some_and(|(_, at)| is_float(at.dtype))
    }
}

/// Whether values of `dtype` can be read as `f32`.
pub fn is_float(dtype: Dtype) -> bool {
    matches!(dtype, Dtype::F32 | Dtype::F16 | Dtype::BF16)
}

/// Little-endian float bytes of `dtype` into `out`, which holds as many values.
fn convert(dtype: Dtype, bytes: &[u8], out: &mut [f32]) {
    let pairs = bytes.chunks_exact(2).map(|c| u16::from_le_bytes([c[0], c[1]]));
    match dtype {
        Dtype::F16 => {
            out.iter_mut().zip(pairs).for_each(|(o, b)| *o = half::f16::from_bits(b).to_f32())
        }
        Dtype::BF16 => {
            out.iter_mut().zip(pairs).for_each(|(o, b)| *o = f32::from_bits(u32::from(b) << 16))
        }
        _ => out.iter_mut().zip(bytes.chunks_exact(4)).for_each(|(o, c)| {
            *o = f32::from_le_bytes([c[0], c[1], c[2], c[3]]);
        }),
    }
}

/// Little-endian `F32`, `F16` or `BF16` bytes as `f32`.
pub fn to_f32(dtype: Dtype, bytes: &[u8]) -> Option<Vec<f32>> {
    let size = is_float(dtype).then_some(dtype.bitsize() / 8)?;
    let mut out = vec![0f32; bytes.len() / size];
    convert(dtype, bytes, &mut out);
    Some(out)
}

/// The shard files an index lists, in order of first appearance, beside the index.
fn shards(path: &Path) -> Result<Vec<PathBuf>, FormatError> {
    let bad = |detail: String| FormatError::Index { path: path.to_path_buf(), detail };
    let text = std::fs::read_to_string(path)
        .map_err(|source| FormatError::Read { path: path.to_path_buf(), source })?;
    let map = weight_map(&text).map_err(bad)?;
    let dir = path.parent().unwrap_or(Path::new(""));
    let mut files: Vec<PathBuf> = Vec::new();
    for shard in map.values() {
        let file = dir.join(shard);
        if !files.contains(&file) {
            files.push(file);
        }
    }
    if files.is_empty() {
        return Err(bad("its `weight_map` lists no tensors".into()));
    }
    Ok(files)
}

/// The `weight_map` of an index: tensor name to shard file name.
fn weight_map(text: &str) -> Result<BTreeMap<String, String>, String> {
    let value: serde_json::Value =
        serde_json::from_str(text).map_err(|e| format!("not valid JSON: {e}"))?;
    let map = value
        .get("weight_map")
        .and_then(|m| m.as_object())
        .ok_or("it has no `weight_map` object")?;
    map.iter()
        .map(|(name, file)| match file.as_str() {
            Some(f) => Ok((name.clone(), f.to_string())),
            None => Err(format!("the shard of `{name}` is not a file name")),
        })
        .collect()
}

/// The index and the shards must agree on where every tensor is.
fn check_map(
    path: &Path,
    files: &[PathBuf],
    tensors: &BTreeMap<String, (usize, Located)>,
) -> Result<(), FormatError> {
    let bad = |detail: String| FormatError::Index { path: path.to_path_buf(), detail };
    let text = std::fs::read_to_string(path)
        .map_err(|source| FormatError::Read { path: path.to_path_buf(), source })?;
    let map = weight_map(&text).map_err(bad)?;
    let dir = path.parent().unwrap_or(Path::new(""));
    for (name, shard) in &map {
        match tensors.get(name) {
            None => return Err(bad(format!("tensor `{name}` is not in `{shard}`"))),
            Some((file, _)) if files[*file] != dir.join(shard) => {
                return Err(bad(format!(
                    "tensor `{name}` is listed in `{shard}` but found in `{}`",
                    files[*file].display()
                )))
            }
            Some(_) => {}
        }
    }
    if let Some(name) = tensors.keys().find(|n| !map.contains_key(*n)) {
        return Err(bad(format!("tensor `{name}` is in a shard but not in the `weight_map`")));
    }
    Ok(())
}

//! Quantized weights for running: takes an f32 tensor and a scheme, and returns its quantized
//! form, the f32 values that form stands for, and, for the GGML formats, the quantized
//! matrix multiplications that linear layers run on.
//!
//! - Integer schemes (`int8`, `int4`) are [`IntTensor`]s; a model runs on their dequantized
//!   values, as no integer kernel of candle takes them.
//! - GGML formats (`q8_0`, `q4_0`, `q4_k`, `q6_k`) are candle [`QTensor`]s. Their blocks run
//!   along the last dimension, so a weight of shape `[out, ...]` is quantized as the matrix
//!   `[out, prod(...)]`: a linear weight as it is, a convolution filter flattened, as GGML
//!   stores convolutions. Linear layers then multiply through candle's quantized kernels,
//!   which also quantize the activations (to `q8_0` or `q8_K` blocks), so their outputs differ
//!   slightly from the dequantized weights' and their speed is the real quantized speed.
//!   Convolutions run on the dequantized filters.

use std::collections::BTreeMap;
use std::sync::Arc;

use candle_core::quantized::{GgmlDType, QMatMul, QTensor};
use candle_core::{bail, DType, Device, Result, Tensor};

use crate::check::spec::{Granularity, QuantScheme};
use crate::formats::quant::{IntScheme, IntTensor};

/// How a scheme quantizes, as checked.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Scheme {
    pub scheme: QuantScheme,
    /// Ignored by the GGML formats, which fix their own.
    pub granularity: Granularity,
    pub symmetric: bool,
}

impl Scheme {
    /// The integer scheme, or `None` for a GGML format.
    pub fn int(self) -> Option<IntScheme> {
        let bits = match self.scheme {
            QuantScheme::Int8 => 8,
            QuantScheme::Int4 => 4,
            _ => return None,
        };
        Some(IntScheme { bits, symmetric: self.symmetric, granularity: self.granularity })
    }

    /// The GGML type, or `None` for an integer scheme.
    pub fn ggml(self) -> Option<GgmlDType> {
        match self.scheme {
            QuantScheme::Int8 | QuantScheme::Int4 => None,
            QuantScheme::Q8_0 => Some(GgmlDType::Q8_0),
            QuantScheme::Q4_0 => Some(GgmlDType::Q4_0),
            QuantScheme::Q4K => Some(GgmlDType::Q4K),
            QuantScheme::Q6K => Some(GgmlDType::Q6K),
        }
    }
}

/// One quantized tensor.
#[derive(Debug, Clone)]
pub enum Quantized {
    Int(IntTensor),
    /// A GGML tensor of shape `[out, prod(shape[1..])]`, and the shape it stands for.
    Ggml {
        tensor: Arc<QTensor>,
        shape: Vec<usize>,
        scheme: QuantScheme,
    },
}

impl Quantized {
    /// Quantize `t` (any float dtype, rank 2 or more) with `scheme`.
    pub fn new(t: &Tensor, scheme: Scheme) -> Result<Quantized> {
        let shape = t.dims().to_vec();
        if shape.len() < 2 {
            bail!("only tensors of rank 2 or more are quantized, found shape {shape:?}");
        }
        let t = t.to_dtype(DType::F32)?;
        if let Some(int) = scheme.int() {
            let values = t.flatten_all()?.to_vec1::<f32>()?;
            return IntTensor::quantize(&values, &shape, int)
                .map(Quantized::Int)
                .map_err(|e| candle_core::Error::Msg(e.to_string()));
        }
        let dtype = scheme.ggml().expect("a scheme is an integer scheme or a GGML format");
        let matrix = t.flatten_from(1)?.contiguous()?;
        let tensor = quantize_rows(&matrix, dtype)?;
        Ok(Quantized::Ggml { tensor: Arc::new(tensor), shape, scheme: scheme.scheme })
    }

    /// The f32 values the quantized form stands for, in the original shape, on `dev`.
    pub fn dequantize(&self, dev: &Device) -> Result<Tensor> {
        match self {
            Quantized::Int(q) => Tensor::from_vec(q.dequantize(), q.shape.as_slice(), dev),
            Quantized::Ggml { tensor, shape, .. } => {
                tensor.dequantize(&Device::Cpu)?.reshape(shape.as_slice())?.to_device(dev)
            }
        }
    }

    /// The scheme's name, as a recipe writes it.
    pub fn describe(&self) -> String {
        match self {
            Quantized::Int(q) => {
                let g = match q.scheme.granularity {
                    Granularity::PerTensor => "per_tensor".to_string(),
                    Granularity::PerChannel => "per_channel".to_string(),
                    Granularity::Group(g) => format!("group({g})"),
                };
                let kind = if q.scheme.symmetric { "symmetric" } else { "asymmetric" };
                format!("int{} {g} {kind}", q.scheme.bits)
            }
            Quantized::Ggml { scheme, .. } => scheme.name().to_string(),
        }
    }
}

/// A matrix in a GGML format, its rows quantized in bands side by side: candle quantizes on
/// one thread, and every block lies within one row, so the bands' blocks laid end to end are
/// the whole matrix's, bit for bit.
fn quantize_rows(matrix: &Tensor, dtype: GgmlDType) -> Result<QTensor> {
    use rayon::prelude::*;
    let (rows, cols) = matrix.dims2()?;
    let threads = rayon::current_num_threads();
    // Bands of at least a million values, so that small matrices stay on one thread.
    let band = rows.div_ceil(threads).max((1 << 20) / cols.max(1)).max(1);
    if band >= rows || cols % dtype.block_size() != 0 {
        return QTensor::quantize(matrix, dtype);
    }
    // candle's quantizer reads a tensor's storage from its start, whatever view it is given,
    // so each band is a tensor of its own, copied from the matrix's contiguous storage.
    let (storage, layout) = matrix.storage_and_layout();
    let (candle_core::Storage::Cpu(cpu), true) = (&*storage, layout.is_contiguous()) else {
        return QTensor::quantize(matrix, dtype);
    };
    let values = &cpu.as_slice::<f32>()?[layout.start_offset()..][..rows * cols];
    let parts: Vec<Vec<u8>> = values
        .par_chunks(band * cols)
        .map(|chunk| {
            let part = Tensor::from_slice(chunk, (chunk.len() / cols, cols), &Device::Cpu)?;
            Ok(QTensor::quantize(&part, dtype)?.data()?.into_owned())
        })
        .collect::<Result<_>>()?;
    let bytes = parts.concat();
    candle_core::quantized::ggml_file::qtensor_from_ggml(
        dtype,
        &bytes,
        vec![rows, cols],
        &Device::Cpu,
    )
}

/// Quantized tensors by name.
pub type QuantMap = BTreeMap<String, Quantized>;

/// Quantize then dequantize: what the forward pass of quantization-aware training sees.
pub fn fake_quantize(t: &Tensor, scheme: Scheme) -> Result<Tensor> {
    Quantized::new(&t.detach(), scheme)?.dequantize(t.device())
}

/// The quantized matrix multiplications of the GGML tensors among `quant`, by tensor name,
/// for [`super::model::forward_with`].
pub fn matmuls(quant: &QuantMap) -> Result<BTreeMap<String, QMatMul>> {
    let mut out = BTreeMap::new();
    for (name, q) in quant {
        if let Quantized::Ggml { tensor, shape, .. } = q {
            if shape.len() == 2 {
                out.insert(name.clone(), QMatMul::from_arc(tensor.clone())?);
            }
        }
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Quantizing in bands on several threads gives the bytes of one pass on one thread.
    #[test]
    fn banded_quantization_equals_candles() {
        let mut rng = crate::rng::Rng::new(5, "bands");
        let (rows, cols) = (1030, 2048);
        let values: Vec<f32> = (0..rows * cols).map(|_| rng.normal() as f32).collect();
        let m = Tensor::from_vec(values, (rows, cols), &Device::Cpu).unwrap();
        let pool = rayon::ThreadPoolBuilder::new().num_threads(3).build().unwrap();
        for dtype in [GgmlDType::Q8_0, GgmlDType::Q4_0, GgmlDType::Q4K, GgmlDType::Q6K] {
            let banded = pool.install(|| quantize_rows(&m, dtype)).unwrap();
            let whole = QTensor::quantize(&m, dtype).unwrap();
            assert_eq!(banded.data().unwrap(), whole.data().unwrap(), "{dtype:?}");
            assert_eq!(banded.shape(), whole.shape());
        }
    }
}

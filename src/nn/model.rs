//! A sequential model: takes an [`Arch`] and returns fresh [`Weights`], or takes weights and a
//! batch `[b, ..arch.input]` and returns the output `[b, ..arch.output()]`.
//!
//! Layers follow PyTorch's `nn.Sequential` semantics and layouts, so weights move between the
//! two unchanged: a linear weight is `[out, in]` and applies to the last dimension, a
//! convolution weight is `[out, in, kh, kw]`, and `maxpool(k)` uses a stride of `k`.

use std::collections::BTreeMap;

use candle_core::quantized::QMatMul;
use candle_core::{bail, DType, Device, Module, Result, Tensor};

use super::Weights;
use crate::check::spec::{Arch, Layer};
use crate::rng::Rng;

/// Fresh weights as PyTorch initialises `nn.Linear` and `nn.Conv2d`.
///
/// Weights and biases are drawn from `U(-1/sqrt(fan_in), 1/sqrt(fan_in))`, where `fan_in` is
/// `in` for a linear layer and `in * kh * kw` for a convolution. (PyTorch's
/// `kaiming_uniform_(a = sqrt(5))` on the weight works out to the same bound.) Values are drawn
/// from `rng` in [`Arch::params`] order, each tensor row-major, so the same generator state gives
/// the same weights.
///
/// ```
/// # use recipe::check::spec::{Arch, Layer};
/// # use recipe::rng::Rng;
/// let arch = Arch {
///     input: vec![4],
///     layers: vec![Layer::Linear { out: 3 }],
///     shapes: vec![vec![3]],
/// };
/// let dev = candle_core::Device::Cpu;
/// let ws = recipe::nn::init(&arch, &mut Rng::new(0, "init"), &dev)?;
/// assert_eq!(ws["0.weight"].dims(), &[3, 4]);
/// assert_eq!(ws["0.bias"].dims(), &[3]);
/// # Ok::<(), candle_core::Error>(())
/// ```
pub fn init(arch: &Arch, rng: &mut Rng, dev: &Device) -> Result<Weights> {
    let mut weights = Weights::new();
    // A bias takes its bound from the weight of its layer, which `params` lists just before it.
    let mut bound = 0.0;
    for (name, shape) in arch.params() {
        if name.ends_with(".weight") {
            let fan_in: usize = shape.iter().skip(1).product();
            // PyTorch leaves an empty layer's parameters at zero rather than dividing by zero.
            bound = if fan_in == 0 { 0.0 } else { 1.0 / (fan_in as f64).sqrt() };
        }
        let n: usize = shape.iter().product();
        let values: Vec<f32> = (0..n).map(|_| rng.uniform_in(-bound, bound) as f32).collect();
        weights.insert(name, Tensor::from_vec(values, shape, dev)?);
    }
    Ok(weights)
}

/// The forward pass of a batch `xs: [b, ..arch.input]`, giving `[b, ..arch.output()]`.
///
/// `dropout` is the generator for dropout masks while training; with `None` (evaluation)
/// dropout layers pass their input through. Training uses inverted dropout as PyTorch does:
/// kept values are scaled by `1 / (1 - p)`, so evaluation needs no rescaling. The weights may be
/// plain tensors or the tensors of `Var`s, in which case gradients flow to them.
pub fn forward(
    arch: &Arch,
    weights: &Weights,
    xs: &Tensor,
    dropout: Option<&mut Rng>,
) -> Result<Tensor> {
    forward_with(arch, weights, &QMatMuls::new(), xs, dropout)
}

/// Quantized matrix multiplications that stand in for linear layers' weights, by weight name.
pub type QMatMuls = BTreeMap<String, QMatMul>;

/// [`forward`], with every linear layer whose weight has an entry in `qmm` multiplying
/// through that quantized kernel instead of its f32 weight (its bias stays f32).
pub fn forward_with(
    arch: &Arch,
    weights: &Weights,
    qmm: &QMatMuls,
    xs: &Tensor,
    mut dropout: Option<&mut Rng>,
) -> Result<Tensor> {
    let mut xs = xs.clone();
    for (idx, layer) in arch.layers.iter().enumerate() {
        xs = match layer {
            Layer::Linear { .. } => {
                let b = param(weights, idx, "bias")?;
                match qmm.get(&format!("{idx}.weight")) {
                    Some(q) => quantized_linear(&xs, q, b)?,
                    None => linear(&xs, param(weights, idx, "weight")?, b)?,
                }
            }
            Layer::Conv2d { out, stride, padding, .. } => {
                let (w, b) = (param(weights, idx, "weight")?, param(weights, idx, "bias")?);
                let ys = xs.conv2d(w, *padding, *stride, 1, 1)?;
                ys.broadcast_add(&b.reshape((1, *out, 1, 1))?)?
            }
            Layer::MaxPool { k } => xs.max_pool2d(*k)?,
            Layer::Flatten => xs.flatten_from(1)?,
            Layer::Reshape { shape } => {
                let mut dims = vec![xs.dim(0)?];
                dims.extend_from_slice(shape);
                xs.reshape(dims)?
            }
            Layer::Dropout { p } => match dropout.as_deref_mut() {
                Some(rng) => apply_dropout(&xs, *p, rng)?,
                None => xs,
            },
            Layer::Relu => xs.relu()?,
            // PyTorch's default `nn.GELU` is the exact form with erf, not the tanh estimate.
            Layer::Gelu => xs.gelu_erf()?,
            Layer::Tanh => xs.tanh()?,
            Layer::Sigmoid => candle_nn::ops::sigmoid(&xs)?,
        };
    }
    Ok(xs)
}

/// The tensor `{idx}.{kind}` of `weights`, or an error naming it.
fn param<'a>(weights: &'a Weights, idx: usize, kind: &str) -> Result<&'a Tensor> {
    let name = format!("{idx}.{kind}");
    match weights.get(&name) {
        Some(t) => Ok(t),
        None => bail!("weight `{name}` is missing"),
    }
}

/// [`linear`] through a quantized weight.
fn quantized_linear(xs: &Tensor, w: &QMatMul, b: &Tensor) -> Result<Tensor> {
    let dims = xs.dims().to_vec();
    let in_dim = *dims.last().unwrap_or(&0);
    let ys = w.forward(&xs.reshape(((), in_dim))?.contiguous()?)?.broadcast_add(b)?;
    let mut out_dims = dims;
    if let Some(last) = out_dims.last_mut() {
        *last = b.dim(0)?;
    }
    ys.reshape(out_dims)
}

/// `xs @ w.t() + b` over the last dimension of `xs`, whatever its rank.
fn linear(xs: &Tensor, w: &Tensor, b: &Tensor) -> Result<Tensor> {
    let w_t = w.t()?;
    match xs.dims() {
        [_, _] => xs.matmul(&w_t)?.broadcast_add(b),
        dims => {
            // Fold the leading dimensions into one, as matmul wants a matrix.
            let in_dim = *dims.last().unwrap_or(&0);
            let mut out_dims = dims.to_vec();
            if let Some(last) = out_dims.last_mut() {
                *last = w.dim(0)?;
            }
            let ys = xs.reshape(((), in_dim))?.matmul(&w_t)?.broadcast_add(b)?;
            ys.reshape(out_dims)
        }
    }
}

/// Inverted dropout with a mask drawn from `rng`, one value per element, row-major.
fn apply_dropout(xs: &Tensor, p: f64, rng: &mut Rng) -> Result<Tensor> {
    if p <= 0.0 {
        return Ok(xs.clone());
    }
    // With `p >= 1` every value is dropped, as in PyTorch, and no scale is needed.
    let scale = if p < 1.0 { (1.0 / (1.0 - p)) as f32 } else { 0.0 };
    let mask: Vec<f32> =
        (0..xs.elem_count()).map(|_| if rng.uniform() < p { 0.0 } else { scale }).collect();
    let mask = Tensor::from_vec(mask, xs.shape(), xs.device())?.to_dtype(xs.dtype())?;
    xs.mul(&mask)
}

/// Checks that `weights` holds every parameter of `arch` with its shape, and gives them back in
/// [`Arch::params`] order as contiguous f32 tensors.
pub(crate) fn arch_weights(arch: &Arch, weights: &Weights) -> Result<Vec<(String, Tensor)>> {
    let mut out = Vec::new();
    for (name, shape) in arch.params() {
        let Some(t) = weights.get(&name) else { bail!("weight `{name}` is missing") };
        if t.dims() != shape.as_slice() {
            bail!("weight `{name}` has shape {:?} but the model needs {shape:?}", t.dims());
        }
        out.push((name, t.to_dtype(DType::F32)?.contiguous()?));
    }
    Ok(out)
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;

    /// An MLP `[in] -> linear(hidden) -> relu -> dropout(0.2) -> linear(classes)`.
    pub(crate) fn mlp(input: usize, hidden: usize, classes: usize) -> Arch {
        Arch {
            input: vec![input],
            layers: vec![
                Layer::Linear { out: hidden },
                Layer::Relu,
                Layer::Dropout { p: 0.2 },
                Layer::Linear { out: classes },
            ],
            shapes: vec![vec![hidden], vec![hidden], vec![hidden], vec![classes]],
        }
    }

    /// The small CNN of the language's examples, on 8x8 inputs given as 64 features.
    fn cnn() -> Arch {
        Arch {
            input: vec![64],
            layers: vec![
                Layer::Reshape { shape: vec![1, 8, 8] },
                Layer::Conv2d { out: 4, kernel: 3, stride: 1, padding: 1 },
                Layer::Gelu,
                Layer::MaxPool { k: 2 },
                Layer::Flatten,
                Layer::Linear { out: 10 },
                Layer::Sigmoid,
            ],
            shapes: vec![
                vec![1, 8, 8],
                vec![4, 8, 8],
                vec![4, 8, 8],
                vec![4, 4, 4],
                vec![64],
                vec![10],
                vec![10],
            ],
        }
    }

    fn values(t: &Tensor) -> Vec<f32> {
        t.flatten_all().unwrap().to_vec1().unwrap()
    }

    #[test]
    fn init_follows_params_and_bounds() -> Result<()> {
        let dev = Device::Cpu;
        for arch in [mlp(5, 7, 3), cnn()] {
            let ws = init(&arch, &mut Rng::new(1, "init"), &dev)?;
            let params = arch.params();
            assert_eq!(ws.len(), params.len());
            for (idx, (name, shape)) in params.iter().enumerate() {
                assert_eq!(ws[name].dims(), shape.as_slice(), "{name}");
                assert_eq!(ws[name].dtype(), DType::F32);
                // The bias shares the bound of the weight listed just before it.
                let w_shape = if name.ends_with(".bias") { &params[idx - 1].1 } else { shape };
                let bound = 1.0 / (w_shape.iter().skip(1).product::<usize>() as f32).sqrt();
                assert!(values(&ws[name]).iter().all(|v| v.abs() <= bound), "{name}");
            }
        }
        Ok(())
    }

    #[test]
    fn init_repeats_with_its_seed() -> Result<()> {
        let dev = Device::Cpu;
        let arch = cnn();
        let a = init(&arch, &mut Rng::new(3, "init"), &dev)?;
        let b = init(&arch, &mut Rng::new(3, "init"), &dev)?;
        let c = init(&arch, &mut Rng::new(4, "init"), &dev)?;
        for name in a.keys() {
            assert_eq!(values(&a[name]), values(&b[name]), "{name}");
            assert_ne!(values(&a[name]), values(&c[name]), "{name}");
        }
        Ok(())
    }

    #[test]
    fn forward_shapes() -> Result<()> {
        let dev = Device::Cpu;
        let xs = Tensor::from_vec((0..5 * 64).map(|v| v as f32 / 100.0).collect(), (5, 64), &dev)?;
        let arch = cnn();
        let ws = init(&arch, &mut Rng::new(0, "init"), &dev)?;
        assert_eq!(forward(&arch, &ws, &xs, None)?.dims(), &[5, 10]);

        let arch = mlp(64, 16, 3);
        let ws = init(&arch, &mut Rng::new(0, "init"), &dev)?;
        let mut rng = Rng::new(0, "dropout");
        assert_eq!(forward(&arch, &ws, &xs, Some(&mut rng))?.dims(), &[5, 3]);
        assert_eq!(forward(&arch, &ws, &xs, None)?.dims(), &[5, 3]);
        Ok(())
    }

    #[test]
    fn forward_reports_a_missing_weight() -> Result<()> {
        let dev = Device::Cpu;
        let arch = mlp(4, 3, 2);
        let mut ws = init(&arch, &mut Rng::new(0, "init"), &dev)?;
        ws.remove("3.bias");
        let xs = Tensor::zeros((2, 4), DType::F32, &dev)?;
        let err = forward(&arch, &ws, &xs, None).unwrap_err();
        assert!(err.to_string().contains("weight `3.bias` is missing"), "{err}");
        Ok(())
    }

    /// `y = x W^T + b` with `W = [[1, 2, 3], [-1, 0, 0.5]]`, `b = [0.1, -0.2]` and
    /// `x = [[1, 1, 1], [2, -1, 4]]`, worked by hand:
    /// row 1: `[1+2+3+0.1, -1+0+0.5-0.2] = [6.1, -0.7]`,
    /// row 2: `[2-2+12+0.1, -2+0+2-0.2] = [12.1, -0.2]`.
    #[test]
    fn linear_forward_by_hand() -> Result<()> {
        let dev = Device::Cpu;
        let arch =
            Arch { input: vec![3], layers: vec![Layer::Linear { out: 2 }], shapes: vec![vec![2]] };
        let mut ws = Weights::new();
        ws.insert("0.weight".into(), Tensor::new(&[[1f32, 2., 3.], [-1., 0., 0.5]], &dev)?);
        ws.insert("0.bias".into(), Tensor::new(&[0.1f32, -0.2], &dev)?);
        let xs = Tensor::new(&[[1f32, 1., 1.], [2., -1., 4.]], &dev)?;
        let ys = values(&forward(&arch, &ws, &xs, None)?);
        for (y, want) in ys.iter().zip([6.1f32, -0.7, 12.1, -0.2]) {
            assert!((y - want).abs() < 1e-6, "{ys:?}");
        }
        Ok(())
    }

    #[test]
    fn dropout_scales_what_it_keeps() -> Result<()> {
        let dev = Device::Cpu;
        let xs = Tensor::ones((100, 10), DType::F32, &dev)?;
        let ys = values(&apply_dropout(&xs, 0.5, &mut Rng::new(0, "dropout"))?);
        assert!(ys.iter().all(|&y| y == 0.0 || y == 2.0));
        let kept = ys.iter().filter(|&&y| y > 0.0).count();
        // 1000 draws of p = 0.5 have a standard deviation of about 16 kept values.
        assert!((400..600).contains(&kept), "{kept}");
        Ok(())
    }
}

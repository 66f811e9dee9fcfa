//! Losses and scores: take model outputs or a model with a data split, and return a loss
//! tensor, [`Scores`] (accuracy and mean loss), or the latency of one forward pass.

use std::time::{Duration, Instant};

use candle_core::{bail, DType, Result, Tensor, D};

use super::model::{forward_with, QMatMuls};
use super::Weights;
use crate::check::spec::{Arch, Loss};

/// Rows per forward pass when scoring a split, to bound memory on large splits.
const SCORE_BATCH: usize = 1024;

/// Forward passes made before timing, so lazy allocations and caches do not count.
const WARM_UP: usize = 3;

/// Accuracy and mean loss over a split.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Scores {
    /// The share of samples whose largest output is their label, in `[0, 1]`.
    pub accuracy: f64,
    pub loss: f64,
}

/// The mean loss of outputs `[b, classes]` against labels `ys: [b]` (u32), as a scalar tensor.
///
/// Cross-entropy is log-softmax followed by the negative log-likelihood, averaged over the
/// batch (PyTorch's `CrossEntropyLoss`). MSE compares the raw outputs with one-hot targets and
/// averages over batch and classes (PyTorch's `MSELoss` with its default `'mean'`).
pub fn loss(kind: Loss, out: &Tensor, ys: &Tensor) -> Result<Tensor> {
    match kind {
        Loss::CrossEntropy => candle_nn::loss::cross_entropy(out, ys),
        Loss::Mse => {
            let (_, classes) = out.dims2()?;
            let targets = one_hot(ys, classes, out.dtype())?;
            out.sub(&targets)?.sqr()?.mean_all()
        }
    }
}

/// One-hot rows `[b, classes]` for labels `[b]`.
fn one_hot(ys: &Tensor, classes: usize, dtype: DType) -> Result<Tensor> {
    let ids = Tensor::arange(0u32, classes as u32, ys.device())?;
    ys.to_dtype(DType::U32)?.unsqueeze(1)?.broadcast_eq(&ids.unsqueeze(0)?)?.to_dtype(dtype)
}

/// Checks that every label of `ys` is below `classes`, so a loss never indexes past a row.
pub(crate) fn check_labels(ys: &Tensor, classes: usize) -> Result<()> {
    let labels: Vec<u32> = ys.to_dtype(DType::U32)?.flatten_all()?.to_vec1()?;
    if let Some(label) = labels.iter().find(|&&y| y as usize >= classes) {
        bail!("label {label} is outside the {classes} classes");
    }
    Ok(())
}

/// Accuracy and loss over a whole split `xs: [n, ..arch.input]`, `ys: [n]`, in batches of up
/// to 1024 rows, without dropout. The loss is the mean over all samples, as one batch of `n`
/// would give.
pub fn score(
    arch: &Arch,
    weights: &Weights,
    xs: &Tensor,
    ys: &Tensor,
    loss_kind: Loss,
    classes: usize,
) -> Result<Scores> {
    score_with(arch, weights, &QMatMuls::new(), xs, ys, loss_kind, classes)
}

/// [`score`], with linear layers running on the quantized kernels in `qmm` (see
/// [`forward_with`]).
pub fn score_with(
    arch: &Arch,
    weights: &Weights,
    qmm: &QMatMuls,
    xs: &Tensor,
    ys: &Tensor,
    loss_kind: Loss,
    classes: usize,
) -> Result<Scores> {
    let n = xs.dim(0)?;
    if n == 0 {
        bail!("cannot score an empty split");
    }
    if ys.dims() != [n] {
        bail!("{n} samples need {n} labels, found labels of shape {:?}", ys.dims());
    }
    let ys = ys.to_dtype(DType::U32)?;
    check_labels(&ys, classes)?;
    let (mut correct, mut loss_sum) = (0.0, 0.0);
    for start in (0..n).step_by(SCORE_BATCH) {
        let b_sz = SCORE_BATCH.min(n - start);
        let (batch_xs, batch_ys) = (xs.narrow(0, start, b_sz)?, ys.narrow(0, start, b_sz)?);
        let out = forward_with(arch, weights, qmm, &batch_xs, None)?;
        let batch_loss = loss(loss_kind, &out, &batch_ys)?.to_dtype(DType::F64)?;
        loss_sum += batch_loss.to_scalar::<f64>()? * b_sz as f64;
        let hits = out.argmax(D::Minus1)?.eq(&batch_ys)?.to_dtype(DType::F64)?.sum_all()?;
        correct += hits.to_scalar::<f64>()?;
    }
    Ok(Scores { accuracy: correct / n as f64, loss: loss_sum / n as f64 })
}

/// The median wall time of `repeats` forward passes of one sample, after a few warm-up
/// passes. `sample` is one sample (`[..arch.input]`) or a batch of one; `repeats` of zero
/// counts as one. The device is synchronised after each pass, so GPU time is counted in full.
/// Linear layers with an entry in `qmm` run on that quantized kernel.
pub fn latency(
    arch: &Arch,
    weights: &Weights,
    qmm: &QMatMuls,
    sample: &Tensor,
    repeats: usize,
) -> Result<Duration> {
    let xs = if sample.dims() == arch.input.as_slice() {
        sample.unsqueeze(0)?
    } else if sample.dims().first() == Some(&1) {
        sample.clone()
    } else {
        bail!("latency needs one sample, found shape {:?}", sample.dims());
    };
    let dev = xs.device();
    for _ in 0..WARM_UP {
        forward_with(arch, weights, qmm, &xs, None)?;
        dev.synchronize()?;
    }
    let mut times = Vec::with_capacity(repeats.max(1));
    for _ in 0..repeats.max(1) {
        let start = Instant::now();
        forward_with(arch, weights, qmm, &xs, None)?;
        dev.synchronize()?;
        times.push(start.elapsed());
    }
    times.sort();
    let mid = times.len() / 2;
    Ok(if times.len() % 2 == 1 { times[mid] } else { (times[mid - 1] + times[mid]) / 2 })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::nn::model::{forward, init, tests::mlp};
    use crate::rng::Rng;
    use candle_core::Device;

    /// Outputs `[[1, 0], [0, 3]]` against labels `[0, 0]`: one-hot `[[1, 0], [1, 0]]`, squared
    /// errors `[0, 0, 1, 9]`, mean 2.5. Cross-entropy: `-log_softmax` of the label entries,
    /// `log(1 + e^-1) = 0.313262` and `3 + log(1 + e^-3) = 3.048587`, mean 1.680925.
    #[test]
    fn losses_by_hand() -> Result<()> {
        let dev = Device::Cpu;
        let out = Tensor::new(&[[1f32, 0.], [0., 3.]], &dev)?;
        let ys = Tensor::new(&[0u32, 0], &dev)?;
        let mse = loss(Loss::Mse, &out, &ys)?.to_scalar::<f32>()?;
        assert!((mse - 2.5).abs() < 1e-6, "{mse}");
        let ce = loss(Loss::CrossEntropy, &out, &ys)?.to_scalar::<f32>()?;
        assert!((ce - 1.680925).abs() < 1e-5, "{ce}");
        Ok(())
    }

    #[test]
    fn score_matches_one_batch_and_checks_labels() -> Result<()> {
        let dev = Device::Cpu;
        let arch = mlp(4, 8, 3);
        let ws = init(&arch, &mut Rng::new(0, "init"), &dev)?;
        let n = 1500;
        let mut rng = Rng::new(0, "data");
        let xs: Vec<f32> = (0..n * 4).map(|_| rng.normal() as f32).collect();
        let xs = Tensor::from_vec(xs, (n, 4), &dev)?;
        let ys = Tensor::from_vec((0..n as u32).map(|i| i % 3).collect(), n, &dev)?;
        let scores = score(&arch, &ws, &xs, &ys, Loss::CrossEntropy, 3)?;
        let out = forward(&arch, &ws, &xs, None)?;
        let whole = loss(Loss::CrossEntropy, &out, &ys)?.to_scalar::<f32>()? as f64;
        assert!((scores.loss - whole).abs() < 1e-5, "{} vs {whole}", scores.loss);
        assert!((0.0..=1.0).contains(&scores.accuracy));

        let bad = Tensor::from_vec(vec![5u32; n], n, &dev)?;
        assert!(score(&arch, &ws, &xs, &bad, Loss::Mse, 3).is_err());
        Ok(())
    }

    #[test]
    fn latency_of_one_sample() -> Result<()> {
        let dev = Device::Cpu;
        let arch = mlp(4, 8, 3);
        let ws = init(&arch, &mut Rng::new(0, "init"), &dev)?;
        let sample = Tensor::zeros(4, DType::F32, &dev)?;
        let took = latency(&arch, &ws, &QMatMuls::new(), &sample, 5)?;
        assert!(took < Duration::from_secs(1), "{took:?}");
        assert!(latency(
            &arch,
            &ws,
            &QMatMuls::new(),
            &Tensor::zeros((2, 4), DType::F32, &dev)?,
            5
        )
        .is_err());
        Ok(())
    }
}

//! The fused training path for multilayer perceptrons on the CPU: takes an [`Arch`] of linear
//! layers and elementwise activations, its starting weights and the training data, and trains
//! the weights in place on plain `f32` buffers, one mini-batch at a time.
//!
//! candle's autograd allocates every activation and gradient afresh, feeds its matrix products
//! through transposed copies and hands each elementwise operation to a thread pool. On a
//! gemm-bound model that overhead costs more than the products themselves (see
//! `BENCHMARKS.md`). Here every buffer is allocated once per run, each linear layer is three
//! calls of the `gemm` crate (candle's own kernels) that read weights and activations through
//! strides instead of copies, bias, activation and loss gradients are single loops, and the
//! optimizer updates the weights where they lie.
//!
//! The path computes what [`super::train`]'s candle path computes, with the same rules: the
//! same dropout masks from the same generator, PyTorch's optimizer updates of [`super::optim`],
//! gradients as candle's autograd defines them (`relu` passes the gradient where its input is
//! at least zero). Results agree with it to float rounding, not bit for bit: the two sum in
//! different orders. It covers models whose layers are `linear` (on a vector per sample),
//! `relu`, `tanh`, `sigmoid`, `dropout`, `flatten` and `reshape`, trained with `sgd`, `adam` or
//! `adamw` on either loss, with or without pruning masks. Anything else (convolutions, `gelu`,
//! fake quantization, `random_search`, a GPU) trains on the candle path.

use candle_core::{Device, Tensor};
use rayon::prelude::*;

use super::Weights;
use crate::check::spec::{Arch, Layer, Loss, Optimizer};
use crate::rng::Rng;

/// Elementwise loops over more values than this are split between threads.
const PARALLEL_MIN: usize = 1 << 15;

/// One layer as the fused path runs it. Shape-only layers (`flatten`, `reshape`) move no data
/// in row-major order and are left out.
#[derive(Debug, Clone, Copy)]
enum Op {
    /// The layer's weight and bias are `params[param]` and `params[param + 1]`.
    Linear {
        param: usize,
        n_in: usize,
        n_out: usize,
    },
    Relu,
    Tanh,
    Sigmoid,
    /// `mask` indexes the run's dropout masks.
    Dropout {
        p: f64,
        mask: usize,
    },
}

/// A trained tensor with its gradient and optimizer state.
struct Param {
    name: String,
    shape: Vec<usize>,
    data: Vec<f32>,
    grad: Vec<f32>,
    /// 0 or 1 per entry: entries at 0 are held at zero after every update.
    mask: Option<Vec<f32>>,
    /// SGD's momentum buffer, or Adam's first moment; empty until the first step.
    m: Vec<f32>,
    /// Adam's second moment; empty until the first step.
    v: Vec<f32>,
}

/// A model, its optimizer state and its training data, ready to take optimizer steps.
pub struct Dense {
    ops: Vec<Op>,
    params: Vec<Param>,
    loss: Loss,
    optimizer: Optimizer,
    /// Adam's step count.
    t: i32,
    classes: usize,
    /// Training features, row-major `[n, width]`, and labels.
    xs: Vec<f32>,
    ys: Vec<u32>,
    /// The labels of the current batch.
    labels: Vec<u32>,
    /// `acts[i]` is the input of `ops[i]` for the current batch; the last is the output.
    acts: Vec<Vec<f32>>,
    /// The width of one sample in each of `acts`.
    widths: Vec<usize>,
    masks: Vec<Vec<f32>>,
    /// Gradients flowing backwards, two buffers used in turn.
    grad_out: Vec<f32>,
    grad_in: Vec<f32>,
}

impl Dense {
    /// The fused path for `arch` with `optimizer` and `loss`, starting from `params` (in
    /// [`Arch::params`] order) and training on `xs: [n, ..arch.input]` with labels `ys`, or
    /// `None` when the model or optimizer is one it does not cover.
    pub fn new(
        arch: &Arch,
        params: &[(String, Tensor)],
        masks: &Weights,
        optimizer: &Optimizer,
        loss: Loss,
        classes: usize,
        (xs, ys): (&Tensor, &Tensor),
    ) -> candle_core::Result<Option<Dense>> {
        if !xs.device().is_cpu() || matches!(optimizer, Optimizer::RandomSearch { .. }) {
            return Ok(None);
        }
        let Some((ops, widths)) = plan(arch) else { return Ok(None) };
        let mut out = Vec::with_capacity(params.len());
        for (name, t) in params {
            let mask = match masks.get(name) {
                Some(m) => Some(m.to_dtype(candle_core::DType::F32)?.flatten_all()?.to_vec1()?),
                None => None,
            };
            let data: Vec<f32> = t.flatten_all()?.to_vec1()?;
            out.push(Param {
                name: name.clone(),
                shape: t.dims().to_vec(),
                grad: vec![0.0; data.len()],
                data,
                mask,
                m: Vec::new(),
                v: Vec::new(),
            });
        }
        let n_dropout = ops.iter().filter(|op| matches!(op, Op::Dropout { .. })).count();
        let mut dense = Dense {
            ops,
            params: out,
            loss,
            optimizer: optimizer.clone(),
            t: 0,
            classes,
            xs: xs.flatten_all()?.to_vec1()?,
            ys: ys.to_vec1()?,
            labels: Vec::new(),
            acts: vec![Vec::new(); widths.len()],
            widths,
            masks: vec![Vec::new(); n_dropout],
            grad_out: Vec::new(),
            grad_in: Vec::new(),
        };
        dense.apply_masks();
        Ok(Some(dense))
    }

    /// One optimizer step on the training samples `rows` with learning rate `lr`, dropout
    /// masks drawn from `dropout` as the candle path draws them. Returns the batch's loss; when
    /// that is not finite the weights are left as they were.
    pub fn step(&mut self, rows: &[usize], lr: f64, dropout: &mut Rng) -> f64 {
        let b_sz = rows.len();
        let width = self.widths[0];
        let input = &mut self.acts[0];
        input.clear();
        for &row in rows {
            input.extend_from_slice(&self.xs[row * width..(row + 1) * width]);
        }
        self.forward(b_sz, Some(dropout));
        let mut labels = std::mem::take(&mut self.labels);
        labels.clear();
        labels.extend(rows.iter().map(|&r| self.ys[r]));
        let value = self.loss_and_gradient(&labels);
        self.labels = labels;
        if !value.is_finite() {
            return value;
        }
        self.backward(b_sz);
        self.update(lr);
        self.apply_masks();
        value
    }

    /// The current weights as tensors on `dev`, by name.
    pub fn weights(&self, dev: &Device) -> candle_core::Result<Weights> {
        self.params
            .iter()
            .map(|p| Ok((p.name.clone(), Tensor::from_slice(&p.data, p.shape.as_slice(), dev)?)))
            .collect()
    }

    /// Whether every weight is finite.
    pub fn all_finite(&self) -> bool {
        self.params.iter().all(|p| p.data.iter().all(|w| w.is_finite()))
    }

    /// The forward pass of the `b_sz` samples in `acts[0]`, with dropout when given a
    /// generator.
    fn forward(&mut self, b_sz: usize, mut dropout: Option<&mut Rng>) {
        for (i, op) in self.ops.iter().enumerate() {
            let (before, after) = self.acts.split_at_mut(i + 1);
            let (xs, ys) = (&before[i], &mut after[0]);
            set_len(ys, b_sz * self.widths[i + 1]);
            match *op {
                Op::Linear { param, n_in, n_out } => {
                    let (w, b) = (&self.params[param].data, &self.params[param + 1].data);
                    for row in ys.chunks_exact_mut(n_out) {
                        row.copy_from_slice(b);
                    }
                    // ys += xs [b, in] . w^T, with w [out, in] read as its transpose.
                    let lhs = MatRef::new(xs, b_sz, n_in, false);
                    let rhs = MatRef::new(w, n_in, n_out, true);
                    matmul(ys, lhs, rhs, true);
                }
                Op::Relu => map(xs, ys, |x| x.max(0.0)),
                Op::Tanh => map(xs, ys, f32::tanh),
                Op::Sigmoid => map(xs, ys, |x| 1.0 / (1.0 + (-x).exp())),
                Op::Dropout { p, mask } => {
                    let mask = &mut self.masks[mask];
                    mask.clear();
                    match dropout.as_deref_mut() {
                        Some(rng) if p > 0.0 => {
                            let scale = if p < 1.0 { (1.0 / (1.0 - p)) as f32 } else { 0.0 };
                            mask.extend((0..xs.len()).map(|_| {
                                if rng.uniform() < p {
                                    0.0
                                } else {
                                    scale
                                }
                            }));
                        }
                        _ => mask.resize(xs.len(), 1.0),
                    }
                    for ((y, x), m) in ys.iter_mut().zip(xs).zip(mask.iter()) {
                        *y = x * m;
                    }
                }
            }
        }
    }

    /// The mean loss of the output against `labels`, leaving its gradient in `grad_out`.
    fn loss_and_gradient(&mut self, labels: &[u32]) -> f64 {
        let out = self.acts.last().expect("a model has an output");
        let classes = self.classes;
        let b_sz = labels.len();
        set_len(&mut self.grad_out, out.len());
        let mut total = 0.0f64;
        match self.loss {
            Loss::CrossEntropy => {
                // d/dx of mean(-log softmax(x)[y]) is (softmax(x) - onehot(y)) / b.
                let inv_b = 1.0 / b_sz as f32;
                for ((row, grad), &y) in out
                    .chunks_exact(classes)
                    .zip(self.grad_out.chunks_exact_mut(classes))
                    .zip(labels)
                {
                    let max = row.iter().copied().fold(f32::NEG_INFINITY, f32::max);
                    let sum: f32 = row.iter().map(|&x| (x - max).exp()).sum();
                    let log_sum = sum.ln();
                    total -= f64::from(row[y as usize] - max - log_sum);
                    for (g, &x) in grad.iter_mut().zip(row) {
                        *g = (x - max - log_sum).exp() * inv_b;
                    }
                    grad[y as usize] -= inv_b;
                }
                total / b_sz as f64
            }
            Loss::Mse => {
                // d/dx of mean((x - onehot(y))^2) over all b * classes values.
                let n = (b_sz * classes) as f32;
                for ((row, grad), &y) in out
                    .chunks_exact(classes)
                    .zip(self.grad_out.chunks_exact_mut(classes))
                    .zip(labels)
                {
                    for (c, (g, &x)) in grad.iter_mut().zip(row).enumerate() {
                        let diff = x - if c == y as usize { 1.0 } else { 0.0 };
                        total += f64::from(diff * diff);
                        *g = 2.0 * diff / n;
                    }
                }
                total / f64::from(n)
            }
        }
    }

    /// Gradients of every parameter from the output's gradient in `grad_out`.
    fn backward(&mut self, b_sz: usize) {
        // Layers before the first linear one have no parameters to reach.
        let first = self.ops.iter().position(|op| matches!(op, Op::Linear { .. })).unwrap_or(0);
        for i in (first..self.ops.len()).rev() {
            let (xs, ys) = (&self.acts[i], &self.acts[i + 1]);
            let g = &self.grad_out;
            let gin = &mut self.grad_in;
            match self.ops[i] {
                Op::Linear { param, n_in, n_out } => {
                    // dw [out, in] = g^T [out, b] . xs [b, in]; db = the column sums of g.
                    let lhs = MatRef::new(g, n_out, b_sz, true);
                    let rhs = MatRef::new(xs, b_sz, n_in, false);
                    matmul(&mut self.params[param].grad, lhs, rhs, false);
                    let db = &mut self.params[param + 1].grad;
                    db.fill(0.0);
                    for row in g.chunks_exact(n_out) {
                        for (d, r) in db.iter_mut().zip(row) {
                            *d += r;
                        }
                    }
                    if i == first {
                        break;
                    }
                    // dxs [b, in] = g [b, out] . w [out, in].
                    set_len(gin, b_sz * n_in);
                    let lhs = MatRef::new(g, b_sz, n_out, false);
                    let rhs = MatRef::new(&self.params[param].data, n_out, n_in, false);
                    matmul(gin, lhs, rhs, false);
                }
                Op::Relu => zip_map(g, xs, gin, |g, x| if x >= 0.0 { g } else { 0.0 }),
                Op::Tanh => zip_map(g, ys, gin, |g, y| g * (1.0 - y * y)),
                Op::Sigmoid => zip_map(g, ys, gin, |g, y| g * y * (1.0 - y)),
                Op::Dropout { mask, .. } => zip_map(g, &self.masks[mask], gin, |g, m| g * m),
            }
            std::mem::swap(&mut self.grad_out, &mut self.grad_in);
        }
    }

    /// One update of every parameter by [`super::optim`]'s rules.
    ///
    /// Every setting is decided outside the loops over weights, which are then straight-line
    /// arithmetic on slices that the compiler vectorises. The state buffers start at zero, so
    /// the first momentum step `b = 0 * momentum + g` is PyTorch's `b = g`.
    fn update(&mut self, lr: f64) {
        match self.optimizer {
            Optimizer::Sgd { momentum, weight_decay, nesterov, .. } => {
                let (lr, momentum, wd) = (lr as f32, momentum as f32, weight_decay as f32);
                for p in &mut self.params {
                    if momentum == 0.0 {
                        chunked2(&mut p.data, &p.grad, move |ws, gs| {
                            for (w, &g) in ws.iter_mut().zip(gs) {
                                let g = if wd != 0.0 { g + *w * wd } else { g };
                                *w -= g * lr;
                            }
                        });
                        continue;
                    }
                    if p.m.is_empty() {
                        p.m.resize(p.data.len(), 0.0);
                    }
                    let sgd = match (wd != 0.0, nesterov) {
                        (false, false) => sgd_momentum::<false, false>,
                        (false, true) => sgd_momentum::<false, true>,
                        (true, false) => sgd_momentum::<true, false>,
                        (true, true) => sgd_momentum::<true, true>,
                    };
                    chunked3(&mut p.data, &p.grad, &mut p.m, move |ws, gs, bs| {
                        sgd(ws, gs, bs, lr, momentum, wd);
                    });
                }
            }
            Optimizer::Adam { beta1, beta2, eps, weight_decay, .. }
            | Optimizer::AdamW { beta1, beta2, eps, weight_decay, .. } => {
                let decoupled = matches!(self.optimizer, Optimizer::AdamW { .. });
                self.t = self.t.saturating_add(1);
                let rule = AdamRule {
                    beta1: beta1 as f32,
                    beta2: beta2 as f32,
                    one_minus_beta1: (1.0 - beta1) as f32,
                    one_minus_beta2: (1.0 - beta2) as f32,
                    eps: eps as f32,
                    bias2_sqrt: ((1.0 - beta2.powi(self.t)).sqrt()) as f32,
                    step_size: (lr / (1.0 - beta1.powi(self.t))) as f32,
                    decay: (1.0 - lr * weight_decay) as f32,
                    weight_decay: weight_decay as f32,
                };
                let adam = match (weight_decay != 0.0, decoupled) {
                    (false, _) => adam::<false, false>,
                    (true, false) => adam::<true, false>,
                    (true, true) => adam::<true, true>,
                };
                for p in &mut self.params {
                    if p.m.is_empty() {
                        p.m.resize(p.data.len(), 0.0);
                        p.v.resize(p.data.len(), 0.0);
                    }
                    let Param { data, grad, m, v, .. } = p;
                    let (data, grad) = (data.as_mut_slice(), grad.as_slice());
                    if data.len() >= PARALLEL_MIN {
                        let chunk = PARALLEL_MIN / 4;
                        data.par_chunks_mut(chunk)
                            .zip(grad.par_chunks(chunk))
                            .zip(m.par_chunks_mut(chunk))
                            .zip(v.par_chunks_mut(chunk))
                            .for_each(|(((w, g), m), v)| adam(w, g, m, v, &rule));
                    } else {
                        adam(data, grad, m, v, &rule);
                    }
                }
            }
            Optimizer::RandomSearch { .. } => unreachable!("the fused path takes no random search"),
        }
    }

    /// Pruned entries back to zero. As on the candle path, `w * mask + 0` makes every kept
    /// `-0.0` a plain zero too, so the two paths store the same bits for zeros.
    fn apply_masks(&mut self) {
        for p in &mut self.params {
            if let Some(mask) = &p.mask {
                for (w, m) in p.data.iter_mut().zip(mask) {
                    *w = *w * m + 0.0;
                }
            }
        }
    }
}

/// The fused ops of `arch` and the width of one sample before the first op and after each, or
/// `None` when a layer is not one the path covers.
fn plan(arch: &Arch) -> Option<(Vec<Op>, Vec<usize>)> {
    let mut ops = Vec::new();
    let mut widths = vec![arch.input.iter().product()];
    let mut param = 0;
    let mut n_dropout = 0;
    for (idx, layer) in arch.layers.iter().enumerate() {
        let in_shape = if idx == 0 { &arch.input } else { &arch.shapes[idx - 1] };
        let op = match *layer {
            // The checker gives linear layers flat inputs; anything else is left to candle.
            Layer::Linear { out } if in_shape.len() == 1 => {
                let op = Op::Linear { param, n_in: in_shape[0], n_out: out };
                param += 2;
                op
            }
            Layer::Relu => Op::Relu,
            Layer::Tanh => Op::Tanh,
            Layer::Sigmoid => Op::Sigmoid,
            Layer::Dropout { p } => {
                n_dropout += 1;
                Op::Dropout { p, mask: n_dropout - 1 }
            }
            Layer::Flatten | Layer::Reshape { .. } => continue,
            _ => return None,
        };
        ops.push(op);
        widths.push(arch.shapes[idx].iter().product());
    }
    ops.iter().any(|op| matches!(op, Op::Linear { .. })).then_some((ops, widths))
}

/// A matrix of `rows x cols` read in place from `data` through strides: row-major, or with
/// `transposed` the transpose of a row-major `cols x rows` one.
#[derive(Clone, Copy)]
struct MatRef<'a> {
    data: &'a [f32],
    rows: usize,
    cols: usize,
    /// The distance between neighbours in a row and in a column.
    col_stride: usize,
    row_stride: usize,
}

impl<'a> MatRef<'a> {
    fn new(data: &'a [f32], rows: usize, cols: usize, transposed: bool) -> Self {
        let (col_stride, row_stride) = if transposed { (rows, 1) } else { (1, cols) };
        let view = MatRef { data, rows, cols, col_stride, row_stride };
        assert!(view.fits(), "a matrix needs {rows} x {cols} values");
        view
    }

    /// Whether every entry lies inside `data`.
    fn fits(&self) -> bool {
        self.rows == 0
            || self.cols == 0
            || (self.rows - 1) * self.row_stride + (self.cols - 1) * self.col_stride
                < self.data.len()
    }

    /// Rows `start..start + len`.
    fn rows(&self, start: usize, len: usize) -> MatRef<'a> {
        assert!(start + len <= self.rows, "rows inside the matrix");
        let offset = (start * self.row_stride).min(self.data.len());
        MatRef { data: &self.data[offset..], rows: len, ..*self }
    }
}

/// `dst = lhs . rhs`, or `dst += lhs . rhs` with `accumulate`, for a row-major `dst`.
///
/// A large product is cut into bands of rows, one a thread, each a single-threaded gemm call.
/// That costs each thread a packing of `rhs` but no synchronisation inside gemm, which on two
/// cores was the cheaper side. Each entry of the result is still one dot product summed in
/// gemm's fixed order, so the bands, and the number of threads, do not change the result.
fn matmul(dst: &mut [f32], lhs: MatRef, rhs: MatRef, accumulate: bool) {
    let (m, k, n) = (lhs.rows, lhs.cols, rhs.cols);
    assert_eq!(rhs.rows, k, "inner dimensions agree");
    assert!(dst.len() >= m * n, "the destination holds {m} x {n} values");
    let dst = &mut dst[..m * n];
    if m == 0 || n == 0 {
        return;
    }
    if k == 0 {
        if !accumulate {
            dst.fill(0.0);
        }
        return;
    }
    let threads = rayon::current_num_threads();
    // Below about two million multiply-adds (some tens of microseconds) handing out the work
    // costs more than it saves: the digits MLP trains three times slower with it.
    let bands = if m * n * k >= 1 << 21 { threads.min(m.div_ceil(16)) } else { 1 };
    if bands <= 1 {
        gemm_band(dst, lhs, rhs, accumulate);
        return;
    }
    let band = m.div_ceil(bands);
    dst.par_chunks_mut(band * n).enumerate().for_each(|(i, dst)| {
        let rows = dst.len() / n;
        gemm_band(dst, lhs.rows(i * band, rows), rhs, accumulate);
    });
}

/// [`matmul`] on one thread.
fn gemm_band(dst: &mut [f32], lhs: MatRef, rhs: MatRef, accumulate: bool) {
    let (m, k, n) = (lhs.rows, lhs.cols, rhs.cols);
    assert!(lhs.fits() && rhs.fits() && rhs.rows == k && dst.len() >= m * n);
    // SAFETY: the assertion above says that every entry `lhs` and `rhs` address through their
    // strides lies inside their slices and that `dst` holds the `m x n` row-major result, so
    // gemm reads and writes inside the three slices only; `dst` is borrowed mutably and so
    // does not alias `lhs` or `rhs`.
    unsafe {
        gemm::gemm(
            m,
            n,
            k,
            dst.as_mut_ptr(),
            1,
            n as isize,
            accumulate,
            lhs.data.as_ptr(),
            lhs.col_stride as isize,
            lhs.row_stride as isize,
            rhs.data.as_ptr(),
            rhs.col_stride as isize,
            rhs.row_stride as isize,
            1.0,
            1.0,
            false,
            false,
            false,
            gemm::Parallelism::None,
        );
    }
}

/// Makes `buf` hold `len` values. Every caller overwrites them all, so only growth is
/// zero-filled (a batch is larger than the one before at most once an epoch).
fn set_len(buf: &mut Vec<f32>, len: usize) {
    buf.truncate(len);
    buf.resize(len, 0.0);
}

/// SGD with momentum over slices: `WD` adds weight decay, `NESTEROV` looks ahead.
fn sgd_momentum<const WD: bool, const NESTEROV: bool>(
    ws: &mut [f32],
    gs: &[f32],
    bs: &mut [f32],
    lr: f32,
    momentum: f32,
    wd: f32,
) {
    for ((w, &g), b) in ws.iter_mut().zip(gs).zip(bs) {
        let g = if WD { g + *w * wd } else { g };
        *b = *b * momentum + g;
        let step = if NESTEROV { g + *b * momentum } else { *b };
        *w -= step * lr;
    }
}

/// The constants of one Adam step.
struct AdamRule {
    beta1: f32,
    beta2: f32,
    one_minus_beta1: f32,
    one_minus_beta2: f32,
    eps: f32,
    bias2_sqrt: f32,
    step_size: f32,
    /// `1 - lr * weight_decay`, AdamW's shrinking of the weights.
    decay: f32,
    weight_decay: f32,
}

/// Adam over slices: `WD` applies weight decay, to the gradient (Adam) or, when `DECOUPLED`,
/// to the weights (AdamW).
fn adam<const WD: bool, const DECOUPLED: bool>(
    ws: &mut [f32],
    gs: &[f32],
    ms: &mut [f32],
    vs: &mut [f32],
    r: &AdamRule,
) {
    for (((w, &g), m), v) in ws.iter_mut().zip(gs).zip(ms).zip(vs) {
        let mut g = g;
        if WD && DECOUPLED {
            *w *= r.decay;
        } else if WD {
            g += *w * r.weight_decay;
        }
        *m = *m * r.beta1 + g * r.one_minus_beta1;
        *v = *v * r.beta2 + g * g * r.one_minus_beta2;
        let denom = v.sqrt() / r.bias2_sqrt + r.eps;
        *w -= *m / denom * r.step_size;
    }
}

/// `f` over the whole of two slices, or over matching chunks of them in parallel when they
/// are long.
fn chunked2(a: &mut [f32], b: &[f32], f: impl Fn(&mut [f32], &[f32]) + Sync + Send) {
    if a.len() >= PARALLEL_MIN {
        let chunk = PARALLEL_MIN / 4;
        a.par_chunks_mut(chunk).zip(b.par_chunks(chunk)).for_each(|(a, b)| f(a, b));
    } else {
        f(a, b);
    }
}

/// [`chunked2`] over three slices.
fn chunked3(
    a: &mut [f32],
    b: &[f32],
    c: &mut [f32],
    f: impl Fn(&mut [f32], &[f32], &mut [f32]) + Sync + Send,
) {
    if a.len() >= PARALLEL_MIN {
        let chunk = PARALLEL_MIN / 4;
        a.par_chunks_mut(chunk)
            .zip(b.par_chunks(chunk))
            .zip(c.par_chunks_mut(chunk))
            .for_each(|((a, b), c)| f(a, b, c));
    } else {
        f(a, b, c);
    }
}

/// `ys[i] = f(xs[i])`.
fn map(xs: &[f32], ys: &mut [f32], f: impl Fn(f32) -> f32 + Sync + Send + Copy) {
    chunked2(ys, xs, move |ys, xs| {
        for (y, &x) in ys.iter_mut().zip(xs) {
            *y = f(x);
        }
    });
}

/// `out[i] = f(gs[i], xs[i])`, with `out` resized to fit.
fn zip_map(
    gs: &[f32],
    xs: &[f32],
    out: &mut Vec<f32>,
    f: impl Fn(f32, f32) -> f32 + Sync + Send + Copy,
) {
    set_len(out, gs.len());
    if gs.len() >= PARALLEL_MIN {
        let chunk = PARALLEL_MIN / 4;
        out.par_chunks_mut(chunk).zip(gs.par_chunks(chunk)).zip(xs.par_chunks(chunk)).for_each(
            |((out, gs), xs)| {
                for ((o, &g), &x) in out.iter_mut().zip(gs).zip(xs) {
                    *o = f(g, x);
                }
            },
        );
    } else {
        for ((o, &g), &x) in out.iter_mut().zip(gs).zip(xs) {
            *o = f(g, x);
        }
    }
}

#[cfg(test)]
mod tests {
    use std::collections::BTreeMap;

    use candle_core::{DType, Var};

    use super::*;
    use crate::check::spec::{Schedule, TrainSettings};
    use crate::nn::metrics::loss;
    use crate::nn::model::{arch_weights, forward, init};
    use crate::nn::train::{fit_constrained, Constraints, TrainData};

    /// Every layer kind the path covers, in a model of three linear layers.
    fn arch() -> Arch {
        let layers = vec![
            Layer::Flatten,
            Layer::Linear { out: 24 },
            Layer::Relu,
            Layer::Dropout { p: 0.3 },
            Layer::Linear { out: 16 },
            Layer::Tanh,
            Layer::Linear { out: 12 },
            Layer::Sigmoid,
            Layer::Linear { out: 5 },
        ];
        Arch::new(vec![3, 4], layers).unwrap()
    }

    /// `n` samples of `[3, 4]` normal features and labels of 5 classes.
    fn data(n: usize, seed: u64) -> (Tensor, Tensor) {
        let mut rng = Rng::new(seed, "data");
        let xs: Vec<f32> = (0..n * 12).map(|_| rng.normal() as f32).collect();
        let ys: Vec<u32> = (0..n).map(|_| rng.below(5) as u32).collect();
        let dev = Device::Cpu;
        (Tensor::from_vec(xs, (n, 3, 4), &dev).unwrap(), Tensor::from_vec(ys, n, &dev).unwrap())
    }

    /// Equal to float rounding: the two paths sum products and batch gradients in different
    /// orders, which moves f32 results by a few units in the last place per operation; three
    /// epochs of this small model compound that to well inside the bound.
    fn close(got: &[f32], want: &[f32], what: &str) {
        assert_eq!(got.len(), want.len(), "{what}");
        for (i, (g, w)) in got.iter().zip(want).enumerate() {
            let tolerance = 1e-5 + 1e-4 * w.abs();
            assert!((g - w).abs() <= tolerance, "{what}[{i}]: fused {g}, candle {w}");
        }
    }

    /// The output, loss and every gradient of one batch equal candle's autograd within float
    /// rounding, dropout masks included, for both losses.
    #[test]
    fn forward_and_gradients_match_candle() {
        let arch = arch();
        let dev = Device::Cpu;
        let weights = init(&arch, &mut Rng::new(3, "init"), &dev).unwrap();
        let params = arch_weights(&arch, &weights).unwrap();
        let (xs, ys) = data(20, 1);
        for kind in [Loss::CrossEntropy, Loss::Mse] {
            // candle: `Var`s, the forward pass with dropout, the loss and its backward pass.
            let vars: Vec<(String, Var)> =
                params.iter().map(|(n, t)| (n.clone(), Var::from_tensor(t).unwrap())).collect();
            let view: Weights =
                vars.iter().map(|(n, v)| (n.clone(), v.as_tensor().clone())).collect();
            let out = forward(&arch, &view, &xs, Some(&mut Rng::new(9, "dropout"))).unwrap();
            let batch_loss = loss(kind, &out, &ys).unwrap();
            let grads = batch_loss.backward().unwrap();

            // The fused path on the same batch and the same masks.
            let optimizer =
                Optimizer::Sgd { lr: 0.1, momentum: 0.0, weight_decay: 0.0, nesterov: false };
            let mut dense =
                Dense::new(&arch, &params, &Weights::new(), &optimizer, kind, 5, (&xs, &ys))
                    .unwrap()
                    .expect("the path covers the model");
            let rows: Vec<usize> = (0..20).collect();
            let width = dense.widths[0];
            dense.acts[0] = dense.xs[..rows.len() * width].to_vec();
            dense.forward(rows.len(), Some(&mut Rng::new(9, "dropout")));
            let labels = dense.ys.clone();
            let value = dense.loss_and_gradient(&labels);
            dense.backward(rows.len());

            let want: Vec<f32> = out.flatten_all().unwrap().to_vec1().unwrap();
            close(dense.acts.last().unwrap(), &want, "output");
            let want_loss = batch_loss.to_dtype(DType::F64).unwrap().to_scalar::<f64>().unwrap();
            assert!((value - want_loss).abs() < 1e-5, "loss: fused {value}, candle {want_loss}");
            for (p, (name, var)) in dense.params.iter().zip(&vars) {
                let want: Vec<f32> =
                    grads.get(var).unwrap().flatten_all().unwrap().to_vec1().unwrap();
                close(&p.grad, &want, &format!("{kind:?} gradient of {name}"));
            }
        }
    }

    /// Whole training runs on both paths end with the same weights and losses within float
    /// rounding, for every optimizer, with pruning masks held at zero on both.
    #[test]
    fn training_matches_the_candle_path() {
        let arch = arch();
        let dev = Device::Cpu;
        let start = init(&arch, &mut Rng::new(4, "init"), &dev).unwrap();
        let (train_x, train_y) = data(90, 2);
        let (val_x, val_y) = data(30, 3);
        let train = TrainData {
            train_x: &train_x,
            train_y: &train_y,
            val: Some((&val_x, &val_y)),
            classes: 5,
        };
        // Every third entry of the first weight pruned.
        let n = 24 * 12;
        let mask: Vec<f32> = (0..n).map(|i| if i % 3 == 0 { 0.0 } else { 1.0 }).collect();
        let masks = BTreeMap::from([(
            "1.weight".to_string(),
            Tensor::from_vec(mask, (24, 12), &dev).unwrap(),
        )]);
        let optimizers = [
            Optimizer::Sgd { lr: 0.05, momentum: 0.9, weight_decay: 1e-3, nesterov: true },
            Optimizer::Sgd { lr: 0.05, momentum: 0.0, weight_decay: 0.0, nesterov: false },
            Optimizer::Adam { lr: 0.01, beta1: 0.9, beta2: 0.999, eps: 1e-8, weight_decay: 1e-2 },
            Optimizer::AdamW { lr: 0.01, beta1: 0.9, beta2: 0.999, eps: 1e-8, weight_decay: 1e-2 },
        ];
        for optimizer in optimizers {
            let settings = TrainSettings {
                optimizer: optimizer.clone(),
                loss: Loss::CrossEntropy,
                epochs: 3,
                batch: 16,
                schedule: Schedule::Cosine,
                stop: None,
            };
            let run = |plain: bool| {
                let constraints =
                    Constraints { masks: masks.clone(), plain, ..Constraints::default() };
                fit_constrained(
                    &arch,
                    &start,
                    &settings,
                    &train,
                    &mut Rng::new(5, "fit"),
                    &(),
                    &constraints,
                )
                .unwrap()
            };
            let (fused, plain) = (run(false), run(true));
            for (name, t) in &plain.weights {
                let want: Vec<f32> = t.flatten_all().unwrap().to_vec1().unwrap();
                let got: Vec<f32> = fused.weights[name].flatten_all().unwrap().to_vec1().unwrap();
                close(&got, &want, &format!("{optimizer:?}: {name}"));
            }
            let pruned: Vec<f32> =
                fused.weights["1.weight"].flatten_all().unwrap().to_vec1().unwrap();
            assert!(pruned.iter().step_by(3).all(|w| w.to_bits() == 0), "zeros stay zero");
            // Losses to float rounding, as the weights; validation accuracy may differ by a
            // sample whose two best classes the rounding reorders, one in 30.
            for (f, p) in fused.history.iter().zip(&plain.history) {
                assert!((f.train_loss - p.train_loss).abs() < 1e-5, "{f:?} against {p:?}");
                let (fa, pa) = (f.val_accuracy.unwrap(), p.val_accuracy.unwrap());
                assert!((fa - pa).abs() <= 1.0 / 30.0 + 1e-12, "{f:?} against {p:?}");
            }
        }
    }

    /// Convolutions, `gelu` and random search are left to the candle path.
    #[test]
    fn other_models_take_the_candle_path() {
        let conv = Arch::new(
            vec![1, 4, 4],
            vec![
                Layer::Conv2d { out: 2, kernel: 3, stride: 1, padding: 1 },
                Layer::Flatten,
                Layer::Linear { out: 3 },
            ],
        )
        .unwrap();
        let gelu = Arch::new(vec![4], vec![Layer::Linear { out: 3 }, Layer::Gelu]).unwrap();
        assert!(plan(&conv).is_none() && plan(&gelu).is_none());
        assert!(plan(&arch()).is_some());
    }
}

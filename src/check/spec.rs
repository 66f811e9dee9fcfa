//! The checked form of a recipe: every block resolved, typed and completed
//! with its defaults.
//!
//! Later stages read only these types. Nothing here is optional unless the
//! language makes it an opt-in feature (`stop`, `finetune`, `tolerance`,
//! an eval `path`): a missing setting has already been replaced by its
//! default, so the graph hashes and the steps see the same complete value.

use std::path::PathBuf;

use serde::{Deserialize, Serialize};

use crate::span::Span;

/// A recipe after checking: its global settings and its blocks in file order.
#[derive(Debug, Clone, Serialize)]
pub struct Checked {
    pub settings: RecipeSettings,
    pub blocks: Vec<Block>,
    /// Where the run writes: output paths, the cache and the lock file resolve inside it.
    #[serde(skip)]
    pub out_root: super::OutputRoot,
}

impl Checked {
    /// The block called `name`, if the recipe has one.
    pub fn block(&self, name: &str) -> Option<&Block> {
        self.blocks.iter().find(|b| b.name == name)
    }
}

/// Settings of the `recipe` block, or their defaults when the file has none.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct RecipeSettings {
    /// The name of the `recipe` block, or the file stem.
    pub name: String,
    pub seed: u64,
    pub device: Device,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
pub enum Device {
    Cpu,
    Cuda(usize),
}

/// As the recipe and `--device` write it: `cpu`, `cuda(N)`.
impl std::fmt::Display for Device {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Device::Cpu => f.write_str("cpu"),
            Device::Cuda(n) => write!(f, "cuda({n})"),
        }
    }
}

/// One checked block.
#[derive(Debug, Clone, Serialize)]
pub struct Block {
    pub name: String,
    /// The span of the whole block, for runtime diagnostics.
    #[serde(skip)]
    pub span: Span,
    pub spec: Spec,
}

/// What a block does, with every setting filled in.
#[derive(Debug, Clone, Serialize)]
pub enum Spec {
    Data(DataSpec),
    Model(ModelSpec),
    Load(LoadSpec),
    Train(TrainSpec),
    Search(SearchSpec),
    Prune(PruneSpec),
    Quantize(QuantSpec),
    Eval(EvalSpec),
    Save(SaveSpec),
}

impl Spec {
    /// The names of the blocks this one reads, in a fixed order.
    pub fn inputs(&self) -> Vec<&str> {
        match self {
            Spec::Data(_) => vec![],
            Spec::Model(m) => vec![m.input.as_str()],
            Spec::Load(l) => l.model.iter().map(String::as_str).collect(),
            Spec::Train(t) => t.inputs(),
            // The searched block's settings are copied into the search, which trains its
            // own trials: it needs what that block reads, not the block's own weights.
            Spec::Search(s) => s.train.inputs(),
            Spec::Prune(p) => {
                let mut names = vec![p.from.as_str()];
                if let Some(f) = &p.finetune {
                    names.push(f.data.block.as_str());
                }
                names
            }
            Spec::Quantize(q) => {
                let mut names = vec![q.from.as_str()];
                if let Some(f) = &q.finetune {
                    names.push(f.data.block.as_str());
                }
                if let Some(c) = &q.calibration {
                    if !names.contains(&c.block.as_str()) {
                        names.push(c.block.as_str());
                    }
                }
                names
            }
            Spec::Eval(e) => {
                let mut names: Vec<&str> = e.models.iter().map(String::as_str).collect();
                names.extend(e.data.iter().map(|d| d.block.as_str()));
                names
            }
            Spec::Save(s) => vec![s.from.as_str()],
        }
    }

    /// The keyword that introduces this kind of block.
    pub fn kind(&self) -> &'static str {
        match self {
            Spec::Data(_) => "data",
            Spec::Model(_) => "model",
            Spec::Load(_) => "load",
            Spec::Train(_) => "train",
            Spec::Search(_) => "search",
            Spec::Prune(_) => "prune",
            Spec::Quantize(_) => "quantize",
            Spec::Eval(_) => "eval",
            Spec::Save(_) => "save",
        }
    }
}

// ---------------------------------------------------------------------------
// data

#[derive(Debug, Clone, Serialize)]
pub struct DataSpec {
    pub source: Source,
    /// Fractions of the samples for train, validation and test; they sum to 1.
    pub split: [f64; 3],
    pub shuffle: bool,
    pub scale: Scale,
    /// What the header of the source says, learnt at check time.
    pub shape: DataShape,
}

#[derive(Debug, Clone, PartialEq, Serialize)]
pub enum Source {
    Builtin(String),
    /// A CSV file with a header row; `label` names the class column.
    Csv {
        path: PathBuf,
        label: String,
    },
    /// MNIST's IDX format, optionally gzipped.
    Idx {
        images: PathBuf,
        labels: PathBuf,
    },
    /// Features in tensor `x`, integer class labels in tensor `y`.
    Safetensors {
        path: PathBuf,
        x: String,
        y: String,
    },
}

impl Source {
    /// The files this source reads.
    pub fn files(&self) -> Vec<&PathBuf> {
        match self {
            Source::Builtin(_) => vec![],
            Source::Csv { path, .. } | Source::Safetensors { path, .. } => vec![path],
            Source::Idx { images, labels } => vec![images, labels],
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
pub enum Scale {
    None,
    Standard,
    MinMax,
}

/// The sample count, feature shape and class count of a dataset.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct DataShape {
    pub samples: usize,
    /// The shape of one sample, e.g. `[64]` or `[1, 28, 28]`.
    pub features: Vec<usize>,
    pub classes: usize,
}

/// A dataset split as named in a recipe: `digits`, `digits.train`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct DataRef {
    pub block: String,
    pub split: Split,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize)]
pub enum Split {
    Train,
    Val,
    Test,
}

impl Split {
    pub fn name(self) -> &'static str {
        match self {
            Split::Train => "train",
            Split::Val => "val",
            Split::Test => "test",
        }
    }
}

// ---------------------------------------------------------------------------
// model

#[derive(Debug, Clone, Serialize)]
pub struct ModelSpec {
    /// The data block that gives the input shape and class count.
    pub input: String,
    pub layers: Vec<Layer>,
    /// The inferred architecture.
    pub arch: Arch,
}

/// An architecture: layers with the shapes that flow between them.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Arch {
    /// The shape of one input sample.
    pub input: Vec<usize>,
    pub layers: Vec<Layer>,
    /// The shape of one sample after each layer.
    pub shapes: Vec<Vec<usize>>,
}

/// The most values one sample's layer output, or the weights of a model, may hold: 2^50,
/// 4 PiB as `f32`. Anything near it is refused by the memory check first; the bound keeps
/// every later size computation far from overflow.
pub const MAX_VALUES: usize = 1 << 50;

const TOO_LARGE: &str = "use smaller layers";

/// The number of values in `shape`, unless it overflows.
fn values(shape: &[usize]) -> Option<usize> {
    shape.iter().try_fold(1usize, |n, &d| n.checked_mul(d))
}

/// A layer that does not fit the shape flowing into it.
#[derive(Debug, Clone, PartialEq)]
pub struct ShapeError {
    /// The position of the layer in the list.
    pub index: usize,
    /// The shape of one sample arriving at the layer.
    pub input: Vec<usize>,
    pub reason: String,
    pub help: &'static str,
}

impl Arch {
    /// The architecture of `layers` on samples of shape `input`, with the
    /// shape after each layer inferred.
    pub fn new(input: Vec<usize>, layers: Vec<Layer>) -> Result<Arch, ShapeError> {
        let mut shape = input.clone();
        let mut shapes = Vec::with_capacity(layers.len());
        for (index, layer) in layers.iter().enumerate() {
            let fail = |reason: String, help: &'static str| ShapeError {
                index,
                input: shape.clone(),
                reason,
                help,
            };
            let next = match layer {
                Layer::Linear { out } => {
                    if shape.len() != 1 {
                        let reason =
                            format!("linear needs a flat input, got {} dimensions", shape.len());
                        return Err(fail(reason, "add `flatten` before it"));
                    }
                    vec![*out]
                }
                Layer::Conv2d { out, kernel, stride, padding } => {
                    let [_, h, w] = shape[..] else {
                        return Err(fail(
                            "conv2d needs an input of shape [channels, height, width]".into(),
                            "give the input that shape first, e.g. `reshape(1, 8, 8)`",
                        ));
                    };
                    let padded =
                        |side: usize| padding.checked_mul(2).and_then(|p| p.checked_add(side));
                    let (Some(hp), Some(wp)) = (padded(h), padded(w)) else {
                        return Err(fail(format!("padding {padding} is too large"), TOO_LARGE));
                    };
                    if *kernel > hp || *kernel > wp {
                        return Err(fail(
                            format!("a {kernel}x{kernel} kernel is larger than the padded input"),
                            "use a smaller kernel or more padding",
                        ));
                    }
                    vec![*out, (hp - kernel) / stride + 1, (wp - kernel) / stride + 1]
                }
                Layer::MaxPool { k } => {
                    let [c, h, w] = shape[..] else {
                        return Err(fail(
                            "maxpool needs an input of shape [channels, height, width]".into(),
                            "pool after a conv2d layer",
                        ));
                    };
                    if *k > h || *k > w {
                        return Err(fail(
                            format!("a {k}x{k} window is larger than the input"),
                            "use a smaller window",
                        ));
                    }
                    vec![c, h / k, w / k]
                }
                Layer::Flatten => vec![values(&shape).unwrap_or(usize::MAX)],
                Layer::Reshape { shape: to } => {
                    let (from_n, to_n) = (values(&shape), values(to));
                    if from_n != to_n || to_n.is_none() {
                        let from_n = from_n.map_or("too many".to_string(), |n| n.to_string());
                        let to_text =
                            to.iter().map(usize::to_string).collect::<Vec<_>>().join(", ");
                        return Err(fail(
                            format!("{from_n} values cannot take the shape [{to_text}]"),
                            "the new shape must hold as many values as the input",
                        ));
                    }
                    to.clone()
                }
                _ => shape.clone(),
            };
            if values(&next).is_none_or(|n| n > MAX_VALUES) {
                return Err(fail(format!("its output {next:?} is too large"), TOO_LARGE));
            }
            shapes.push(next.clone());
            shape = next;
        }
        let arch = Arch { input, layers, shapes };
        let weights = arch.params().iter().try_fold(0usize, |sum, (_, dims)| {
            values(dims).filter(|&n| n <= MAX_VALUES).and_then(|n| sum.checked_add(n))
        });
        if weights.is_none_or(|n| n > MAX_VALUES) {
            let index = arch.layers.len().saturating_sub(1);
            let input =
                if index == 0 { arch.input.clone() } else { arch.shapes[index - 1].clone() };
            let reason = "the model has more weights than any machine can hold".to_string();
            return Err(ShapeError { index, input, reason, help: TOO_LARGE });
        }
        Ok(arch)
    }

    /// The parameters of the architecture with their PyTorch names and
    /// shapes (`0.weight`, `[out, in]`), in layer order.
    pub fn params(&self) -> Vec<(String, Vec<usize>)> {
        let mut params = Vec::new();
        for (idx, layer) in self.layers.iter().enumerate() {
            let in_shape = if idx == 0 { &self.input } else { &self.shapes[idx - 1] };
            match *layer {
                Layer::Linear { out } => {
                    let fan_in = *in_shape.last().unwrap_or(&0);
                    params.push((format!("{idx}.weight"), vec![out, fan_in]));
                    params.push((format!("{idx}.bias"), vec![out]));
                }
                Layer::Conv2d { out, kernel, .. } => {
                    let c_in = in_shape.first().copied().unwrap_or(0);
                    params.push((format!("{idx}.weight"), vec![out, c_in, kernel, kernel]));
                    params.push((format!("{idx}.bias"), vec![out]));
                }
                _ => {}
            }
        }
        params
    }

    /// Whether `other` is this architecture with different widths of its
    /// hidden layers, as channel pruning leaves it: the same input, output
    /// and kinds of layers.
    pub fn same_but_widths(&self, other: &Arch) -> bool {
        let kinds_agree = self.layers.len() == other.layers.len()
            && self.layers.iter().zip(&other.layers).all(|(a, b)| match (a, b) {
                (Layer::Linear { .. }, Layer::Linear { .. }) => true,
                (
                    Layer::Conv2d { kernel, stride, padding, .. },
                    Layer::Conv2d { kernel: k, stride: s, padding: p, .. },
                ) => (kernel, stride, padding) == (k, s, p),
                _ => a == b,
            });
        kinds_agree && self.input == other.input && self.output() == other.output()
    }

    /// The shape of the output of one sample.
    pub fn output(&self) -> &[usize] {
        self.shapes.last().map(Vec::as_slice).unwrap_or(&self.input)
    }
}

/// One layer of a sequential model.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub enum Layer {
    Linear {
        out: usize,
    },
    Conv2d {
        out: usize,
        kernel: usize,
        stride: usize,
        padding: usize,
    },
    MaxPool {
        k: usize,
    },
    Flatten,
    /// The shape of one sample after the layer (the batch dimension is kept).
    Reshape {
        shape: Vec<usize>,
    },
    Dropout {
        p: f64,
    },
    Relu,
    Gelu,
    Tanh,
    Sigmoid,
}

// ---------------------------------------------------------------------------
// load

#[derive(Debug, Clone, Serialize)]
pub struct LoadSpec {
    /// A safetensors file, or the index of a sharded checkpoint.
    pub path: PathBuf,
    /// The shards an index lists, relative to the recipe's folder.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub shards: Vec<PathBuf>,
    /// The model block whose architecture the weights follow.
    pub model: Option<String>,
    pub arch: Option<Arch>,
    /// Tensor names, dtypes and shapes from the file header.
    pub tensors: Vec<TensorInfo>,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct TensorInfo {
    pub name: String,
    pub dtype: String,
    pub shape: Vec<usize>,
}

// ---------------------------------------------------------------------------
// train

#[derive(Debug, Clone, Serialize)]
pub struct TrainSpec {
    /// Where the starting point comes from: a model block (fresh weights)
    /// or a block that produces weights (fine-tuning).
    pub init: Init,
    pub data: DataRef,
    /// The architecture being trained.
    pub arch: Arch,
    pub settings: TrainSettings,
}

impl TrainSpec {
    pub fn inputs(&self) -> Vec<&str> {
        let first = match &self.init {
            Init::Model(name) | Init::Weights(name) => name.as_str(),
        };
        vec![first, self.data.block.as_str()]
    }
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub enum Init {
    /// Fresh weights for the architecture of this model block.
    Model(String),
    /// The weights produced by this block.
    Weights(String),
}

/// The settings of a training run that a `search` may vary and a
/// `finetune = train(...)` may override.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct TrainSettings {
    pub optimizer: Optimizer,
    pub loss: Loss,
    pub epochs: usize,
    pub batch: usize,
    pub schedule: Schedule,
    pub stop: Option<Stop>,
}

impl TrainSettings {
    /// These settings with the setting at `path` (as a search space names it, such as
    /// `optimizer.lr` or `schedule.every`) set to `value`. The checker only lets through
    /// paths and values that fit; anything else leaves the settings as they were.
    pub fn with(&self, path: &str, value: &Scalar) -> TrainSettings {
        let mut s = self.clone();
        let number = match value {
            Scalar::Float(x) => Some(*x),
            Scalar::Int(n) => Some(*n as f64),
            _ => None,
        };
        let count = match value {
            Scalar::Int(n) => usize::try_from(*n).ok(),
            _ => None,
        };
        let (head, arg) = path.split_once('.').unwrap_or((path, ""));
        match (head, arg) {
            ("epochs", "") => s.epochs = count.unwrap_or(s.epochs),
            ("batch", "") => s.batch = count.unwrap_or(s.batch),
            ("loss", "") => {
                if let Scalar::Word(w) = value {
                    s.loss = if w == "mse" { Loss::Mse } else { Loss::CrossEntropy };
                }
            }
            ("optimizer", arg) => s.optimizer.set(arg, value, number),
            ("schedule", "every") => {
                if let (Schedule::Step { every, .. }, Some(n)) = (&mut s.schedule, count) {
                    *every = n;
                }
            }
            ("schedule", "gamma") => {
                if let (Schedule::Step { gamma, .. }, Some(x)) = (&mut s.schedule, number) {
                    *gamma = x;
                }
            }
            ("stop", "epochs") => {
                if let (Some(Stop::Patience { epochs }), Some(n)) = (&mut s.stop, count) {
                    *epochs = n;
                }
            }
            _ => {}
        }
        s
    }
}

#[derive(Debug, Clone, PartialEq, Serialize)]
pub enum Optimizer {
    Sgd {
        lr: f64,
        momentum: f64,
        weight_decay: f64,
        nesterov: bool,
    },
    Adam {
        lr: f64,
        beta1: f64,
        beta2: f64,
        eps: f64,
        weight_decay: f64,
    },
    AdamW {
        lr: f64,
        beta1: f64,
        beta2: f64,
        eps: f64,
        weight_decay: f64,
    },
    /// Gradient-free: perturb every weight by Gaussian noise of scale
    /// `sigma`, keep the perturbation only when the training loss falls.
    RandomSearch {
        sigma: f64,
    },
}

impl Optimizer {
    /// Set the argument `arg` to `value` (`number` when it is one).
    fn set(&mut self, arg: &str, value: &Scalar, number: Option<f64>) {
        let flag = match value {
            Scalar::Bool(b) => Some(*b),
            Scalar::Word(w) => Some(w == "true"),
            _ => None,
        };
        match (self, arg) {
            (Optimizer::Sgd { nesterov, .. }, "nesterov") => *nesterov = flag.unwrap_or(*nesterov),
            (Optimizer::Sgd { lr, momentum, weight_decay, .. }, arg) => {
                let slot = match arg {
                    "lr" => lr,
                    "momentum" => momentum,
                    "weight_decay" => weight_decay,
                    _ => return,
                };
                *slot = number.unwrap_or(*slot);
            }
            (
                Optimizer::Adam { lr, beta1, beta2, eps, weight_decay }
                | Optimizer::AdamW { lr, beta1, beta2, eps, weight_decay },
                arg,
            ) => {
                let slot = match arg {
                    "lr" => lr,
                    "beta1" => beta1,
                    "beta2" => beta2,
                    "eps" => eps,
                    "weight_decay" => weight_decay,
                    _ => return,
                };
                *slot = number.unwrap_or(*slot);
            }
            (Optimizer::RandomSearch { sigma }, "sigma" | "lr") => {
                *sigma = number.unwrap_or(*sigma);
            }
            _ => {}
        }
    }

    /// The base learning rate, or the noise scale for `random_search`.
    pub fn lr(&self) -> f64 {
        match *self {
            Optimizer::Sgd { lr, .. } | Optimizer::Adam { lr, .. } => lr,
            Optimizer::AdamW { lr, .. } => lr,
            Optimizer::RandomSearch { sigma } => sigma,
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
pub enum Loss {
    CrossEntropy,
    /// Mean squared error against one-hot class targets.
    Mse,
}

#[derive(Debug, Clone, PartialEq, Serialize)]
pub enum Schedule {
    Constant,
    /// Cosine annealing from the base rate to zero over all epochs.
    Cosine,
    /// Multiply the rate by `gamma` every `every` epochs.
    Step {
        every: usize,
        gamma: f64,
    },
}

#[derive(Debug, Clone, PartialEq, Serialize)]
pub enum Stop {
    /// Stop once the validation loss has not improved for `epochs` epochs,
    /// and keep the weights of the best epoch.
    Patience { epochs: usize },
}

// ---------------------------------------------------------------------------
// search

#[derive(Debug, Clone, Serialize)]
pub struct SearchSpec {
    /// The `train` block whose settings are varied.
    pub train_block: String,
    /// A copy of that block's checked spec, the base of every trial.
    pub train: TrainSpec,
    pub strategy: Strategy,
    pub trials: usize,
    pub objective: Objective,
    pub space: Vec<Dimension>,
}

impl SearchSpec {
    /// The files a search writes its trial table to, relative to the recipe's folder: CSV,
    /// JSON and an SVG plot, named after the recipe and the search block.
    pub fn table_files(recipe: &str, block: &str) -> [PathBuf; 3] {
        ["csv", "json", "svg"]
            .map(|ext| PathBuf::from(format!("out/{recipe}-{block}-trials.{ext}")))
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Serialize)]
pub enum Strategy {
    Random,
    Grid,
    /// Successive halving; the best `1/eta` of the trials go on to the next
    /// rung with `eta` times the epochs.
    Halving {
        eta: usize,
    },
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Objective {
    pub maximize: bool,
    pub metric: Metric,
}

/// One varied setting of a search.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Dimension {
    /// A setting path of the train block, such as `optimizer.lr`.
    pub path: String,
    pub dist: Distribution,
}

#[derive(Debug, Clone, PartialEq, Serialize)]
pub enum Distribution {
    Uniform {
        low: f64,
        high: f64,
        points: Option<usize>,
    },
    LogUniform {
        low: f64,
        high: f64,
        points: Option<usize>,
    },
    /// Integers from `low` to `high`, both included.
    Range {
        low: i64,
        high: i64,
    },
    Choice(Vec<Scalar>),
}

/// A plain value that a search can put into a setting.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub enum Scalar {
    Int(i64),
    Float(f64),
    Bool(bool),
    Word(String),
}

// ---------------------------------------------------------------------------
// prune

#[derive(Debug, Clone, Serialize)]
pub struct PruneSpec {
    pub from: String,
    pub method: PruneMethod,
    pub amount: PruneAmount,
    pub scope: Scope,
    pub pattern: Pattern,
    pub targets: Vec<String>,
    pub ignore: Vec<String>,
    pub steps: usize,
    pub finetune: Option<Finetune>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
pub enum PruneMethod {
    Magnitude,
}

#[derive(Debug, Clone, Copy, PartialEq, Serialize)]
pub enum PruneAmount {
    /// The share of target weights that become zero.
    Sparsity(f64),
    /// Every target weight with `|w| < t` becomes zero.
    Threshold(f64),
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
pub enum Scope {
    Global,
    Layer,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
pub enum Pattern {
    Unstructured,
    NOfM { n: usize, m: usize },
    Channels,
}

/// Retraining inside a prune or quantize step.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Finetune {
    pub data: DataRef,
    pub settings: TrainSettings,
}

// ---------------------------------------------------------------------------
// quantize

#[derive(Debug, Clone, Serialize)]
pub struct QuantSpec {
    pub from: String,
    pub scheme: QuantScheme,
    pub granularity: Granularity,
    pub symmetric: bool,
    pub targets: Vec<String>,
    pub ignore: Vec<String>,
    pub finetune: Option<Finetune>,
    /// Keep the most sensitive layers in float until the accuracy is
    /// within this fraction of the input's.
    pub tolerance: Option<f64>,
    /// Where the tolerance is measured: the validation split of the
    /// retraining data, or of the data that trained the input.
    pub calibration: Option<DataRef>,
}

/// The tensors a `prune` or `quantize` block works on: those its `targets` globs match and its
/// `ignore` globs do not, of rank 2 or more (biases and other vectors are never touched).
#[derive(Debug, Clone)]
pub struct TensorSelection {
    targets: globset::GlobSet,
    ignore: globset::GlobSet,
}

impl TensorSelection {
    /// The selection of `targets` minus `ignore`. The checker has compiled every glob of a
    /// checked block already; one that does not compile matches nothing.
    pub fn new(targets: &[String], ignore: &[String]) -> TensorSelection {
        let set = |globs: &[String]| {
            let mut b = globset::GlobSetBuilder::new();
            for glob in globs.iter().filter_map(|g| globset::Glob::new(g).ok()) {
                b.add(glob);
            }
            b.build().unwrap_or_else(|_| globset::GlobSet::empty())
        };
        TensorSelection { targets: set(targets), ignore: set(ignore) }
    }

    /// Whether the tensor `name` of rank `rank` is selected.
    pub fn selects(&self, name: &str, rank: usize) -> bool {
        rank >= 2 && self.targets.is_match(name) && !self.ignore.is_match(name)
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub enum QuantScheme {
    Int8,
    Int4,
    Q8_0,
    Q4_0,
    Q4K,
    Q6K,
}

impl QuantScheme {
    /// The name as written in a recipe.
    pub fn name(self) -> &'static str {
        match self {
            QuantScheme::Int8 => "int8",
            QuantScheme::Int4 => "int4",
            QuantScheme::Q8_0 => "q8_0",
            QuantScheme::Q4_0 => "q4_0",
            QuantScheme::Q4K => "q4_k",
            QuantScheme::Q6K => "q6_k",
        }
    }

    /// The GGML block size along a row, for the GGML formats.
    pub fn ggml_block(self) -> Option<usize> {
        match self {
            QuantScheme::Int8 | QuantScheme::Int4 => None,
            QuantScheme::Q8_0 | QuantScheme::Q4_0 => Some(32),
            QuantScheme::Q4K | QuantScheme::Q6K => Some(256),
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub enum Granularity {
    PerTensor,
    PerChannel,
    Group(usize),
}

// ---------------------------------------------------------------------------
// eval and save

#[derive(Debug, Clone, Serialize)]
pub struct EvalSpec {
    /// Blocks whose weights are evaluated, in the order of the table.
    pub models: Vec<String>,
    /// For each model, the format its `size` is measured in: sparse when
    /// the recipe saves those weights in the sparse format.
    pub formats: Vec<SaveFormat>,
    /// The split that runs the models; weight-only metrics need none.
    pub data: Option<DataRef>,
    pub metrics: Vec<Metric>,
    pub path: Option<PathBuf>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
pub enum Metric {
    Accuracy,
    Loss,
    Size,
    Sparsity,
    Latency,
    /// The relative error `||w - dequant(quant(w))|| / ||w||` of quantized checkpoint tensors.
    Error,
}

impl Metric {
    pub fn name(self) -> &'static str {
        match self {
            Metric::Accuracy => "accuracy",
            Metric::Loss => "loss",
            Metric::Size => "size",
            Metric::Sparsity => "sparsity",
            Metric::Latency => "latency",
            Metric::Error => "error",
        }
    }
}

#[derive(Debug, Clone, Serialize)]
pub struct SaveSpec {
    pub from: String,
    pub path: PathBuf,
    pub format: SaveFormat,
    /// The most bytes of tensor data in one safetensors shard, when the file is sharded.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub shard_size: Option<u64>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
pub enum SaveFormat {
    Dense,
    Sparse,
}

//! Neural networks on candle tensors: takes a checked [`Arch`](crate::check::spec::Arch) and
//! weights keyed by PyTorch names, and returns fresh weights, forward passes, trained weights
//! and scores.
//!
//! - [`model`]: initialisation and the forward pass of a sequential model.
//! - [`optim`]: SGD, Adam and AdamW with PyTorch's update rules, over `Var`s.
//! - [`train`]: the training loop, with schedules, early stopping and
//!   gradient-free random search.
//! - [`dense`]: the fused CPU path the training loop takes for multilayer perceptrons.
//! - [`metrics`]: loss functions, accuracy and latency.
//!
//! Every random value (initial weights, shuffles, dropout masks, noise) comes from the
//! project's seeded [`Rng`](crate::rng::Rng), never from candle, so two runs with the same
//! seed give bit-identical weights on the CPU.

pub mod channels;
pub mod dense;
pub mod metrics;
pub mod model;
pub mod optim;
pub mod prune;
pub mod quant;
pub mod train;

pub use metrics::{latency, score, Scores};
pub use model::{forward, forward_with, init, QMatMuls};
pub use train::{fit, EpochStats, FitOutcome, Progress, TrainData, TrainError};

/// Weights keyed by their PyTorch names (`0.weight`, `0.bias`), as f32 tensors.
pub type Weights = std::collections::BTreeMap<String, candle_core::Tensor>;

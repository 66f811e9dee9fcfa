//! Steps: the work of each block kind, one file per kind.
//!
//! Every step takes the outputs of the blocks it reads and a
//! [`crate::exec::Context`] and returns its own output. Steps never
//! print; what a user sees comes from the command line from their outputs.

pub mod data;
pub mod eval;
pub mod load;
pub mod model;
pub mod prune;
pub mod quantize;
pub mod save;
pub mod search;
pub mod stream;
pub mod train;

use crate::check::{Spec, TensorSelection};
use crate::exec::{Artifact, Context, Inputs, StepError};
use crate::nn::Weights;

/// Run one step.
pub fn run(spec: &Spec, inputs: &Inputs, ctx: &Context) -> Result<Artifact, StepError> {
    match spec {
        Spec::Data(s) => data::run(s, ctx),
        Spec::Model(s) => Ok(model::run(s)),
        Spec::Load(s) => load::run(s, ctx),
        Spec::Train(s) => train::run(s, inputs, ctx),
        Spec::Eval(s) => eval::run(s, inputs, ctx),
        Spec::Save(s) => save::run(s, inputs, ctx),
        Spec::Prune(s) => prune::run(s, inputs, ctx),
        Spec::Quantize(s) => quantize::run(s, inputs, ctx),
        Spec::Search(s) => search::run(s, inputs, ctx),
    }
}

/// The names of the tensors of `weights` that a `prune` or `quantize` step works on.
pub(crate) fn selected(weights: &Weights, targets: &[String], ignore: &[String]) -> Vec<String> {
    let selection = TensorSelection::new(targets, ignore);
    weights
        .iter()
        .filter(|(name, t)| selection.selects(name, t.rank()))
        .map(|(n, _)| n.clone())
        .collect()
}

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
pub mod save;
pub mod train;

use crate::check::Spec;
use crate::exec::{Artifact, Context, Inputs, StepError};

/// What keeps this version from running a step, if anything.
pub fn unsupported(spec: &Spec) -> Option<String> {
    match spec {
        Spec::Search(_) | Spec::Quantize(_) => {
            Some(format!("`{}` steps cannot run yet", spec.kind()))
        }
        _ => None,
    }
}

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
        Spec::Search(_) | Spec::Quantize(_) => {
            unreachable!("the scheduler refuses steps that cannot run before starting")
        }
    }
}

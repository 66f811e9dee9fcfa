//! The `model` step: the architecture is already inferred by the checker,
//! so the step only hands it on.

use std::sync::Arc;

use crate::check::ModelSpec;
use crate::exec::Artifact;

pub fn run(spec: &ModelSpec) -> Artifact {
    Artifact::Arch(Arc::new(spec.arch.clone()))
}

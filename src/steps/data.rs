//! The `data` step: read, shuffle, split and scale a dataset.

use std::sync::Arc;

use crate::check::DataSpec;
use crate::exec::{Artifact, Context, StepError};

pub fn run(spec: &DataSpec, ctx: &Context) -> Result<Artifact, StepError> {
    let dataset = crate::data::load(spec, ctx.base_dir, ctx.seed).map_err(|e| {
        StepError::new(e.to_string(), "the file changed since it was checked, or is damaged")
    })?;
    tracing::debug!(
        train = dataset.train.n,
        val = dataset.val.n,
        test = dataset.test.n,
        "dataset split"
    );
    Ok(Artifact::Dataset(Arc::new(dataset)))
}

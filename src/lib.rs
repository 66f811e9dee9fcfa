//! `recipe`: declarative model-optimization pipelines.
pub mod check;
pub mod rng;
pub mod span;

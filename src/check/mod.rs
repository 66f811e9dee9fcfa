//! Checking: the AST becomes the checked form in [`spec`].
pub mod spec;
pub use spec::*;

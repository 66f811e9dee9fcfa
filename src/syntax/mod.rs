//! Syntax: recipe text to an [`ast::File`] that mirrors it.
//!
//! The grammar lives in `grammar/recipe.pest`; [`parse`] runs it and turns
//! the parse tree into AST nodes that keep their spans. Problems are
//! [`SyntaxError`]s: miette diagnostics that name what was expected in
//! words, never by grammar rule.

pub mod ast;
pub mod fmt;
mod parse;

use miette::Diagnostic;
use thiserror::Error;

pub use fmt::format;
pub use parse::{parse, parse_value, MAX_DEPTH};

use crate::span::Span;

/// A problem found while reading the text of a recipe.
#[derive(Debug, Clone, Error, Diagnostic, PartialEq)]
pub enum SyntaxError {
    #[error("unexpected input: expected {expected}")]
    #[diagnostic(
        code(recipe::syntax::unexpected),
        help(
            "a block reads `KIND NAME {{ key = value }}`, settings separated by newlines or commas"
        )
    )]
    Unexpected {
        #[label("expected {expected} here")]
        span: Span,
        expected: String,
    },

    #[error("integer too large")]
    #[diagnostic(
        code(recipe::syntax::integer_too_large),
        help("integers must lie between -9223372036854775808 and 9223372036854775807")
    )]
    IntegerTooLarge {
        #[label("does not fit in 64 bits")]
        span: Span,
    },

    #[error("number too large")]
    #[diagnostic(
        code(recipe::syntax::number_too_large),
        help("numbers must be finite 64-bit floats, below about 1.8e308")
    )]
    NumberTooLarge {
        #[label("not a finite number")]
        span: Span,
    },

    #[error("unknown escape `\\{escape}` in a string")]
    #[diagnostic(
        code(recipe::syntax::unknown_escape),
        help("strings know `\\\"`, `\\\\`, `\\n` and `\\t`")
    )]
    UnknownEscape {
        #[label("unknown escape")]
        span: Span,
        escape: char,
    },

    #[error("positional argument after a named one")]
    #[diagnostic(
        code(recipe::syntax::positional_after_named),
        help("put positional arguments first, then `name = value` ones")
    )]
    PositionalAfterNamed {
        #[label("positional argument")]
        span: Span,
        #[label("first named argument")]
        named: Span,
    },

    #[error("brackets nested too deeply")]
    #[diagnostic(
        code(recipe::syntax::too_deep),
        help("recipes nest brackets at most {} levels deep", MAX_DEPTH)
    )]
    TooDeep {
        #[label("this bracket is too deep")]
        span: Span,
    },

    #[error("the file is not valid UTF-8")]
    #[diagnostic(code(recipe::syntax::not_utf8), help("save the recipe as UTF-8 text"))]
    NotUtf8 {
        #[label("invalid byte here")]
        span: Span,
    },
}

/// Recipe text, decoded from the bytes of a file.
///
/// Invalid UTF-8 is a [`SyntaxError::NotUtf8`]; the text is still returned
/// (lossily decoded) so the error can be shown in context.
pub fn decode(bytes: &[u8]) -> Result<String, (String, SyntaxError)> {
    match std::str::from_utf8(bytes) {
        Ok(text) => Ok(text.to_string()),
        Err(e) => {
            let at = e.valid_up_to();
            let text = String::from_utf8_lossy(bytes).into_owned();
            // The lossy text replaces the bad bytes, but everything before
            // them is unchanged, so the offset still points at the fault.
            let end = text[at..].chars().next().map_or(at, |c| at + c.len_utf8());
            Err((text, SyntaxError::NotUtf8 { span: Span::new(at, end) }))
        }
    }
}

//! The abstract syntax tree: the text of a recipe as nested values, before
//! any name or type is checked.
//!
//! The tree mirrors the text; every node keeps the span it came from, so
//! the checker can point at the exact setting, value or argument at fault.

use serde::Serialize;

use crate::span::Span;

/// A parsed file: its blocks in the order they were written.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct File {
    pub blocks: Vec<Block>,
}

/// `KIND NAME { settings }`.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Block {
    pub kind: Ident,
    pub name: Ident,
    pub settings: Vec<Setting>,
    pub span: Span,
}

/// A name with its place in the source.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Ident {
    pub name: String,
    pub span: Span,
}

/// `key = value`, or `key { ... }` (then the value is a [`ValueKind::Block`]).
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Setting {
    /// The key as written; dotted keys (`optimizer.lr`) appear in `space`.
    pub key: Ident,
    pub value: Value,
    pub span: Span,
}

#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Value {
    pub kind: ValueKind,
    pub span: Span,
}

#[derive(Debug, Clone, PartialEq, Serialize)]
pub enum ValueKind {
    Int(i64),
    Float(f64),
    /// A percent as the fraction it stands for: `80%` is `0.8`.
    Percent(f64),
    Str(String),
    Bool(bool),
    /// An enumerated option or a block name.
    Word(String),
    /// A dotted reference, `digits.test`.
    Path(Vec<Ident>),
    Call(Call),
    List(Vec<Value>),
    /// A nested block of settings, `space { ... }`.
    Block(Vec<Setting>),
}

/// `name(positional, ..., key = value, ...)`.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Call {
    pub name: Ident,
    pub args: Vec<Value>,
    pub named: Vec<(Ident, Value)>,
}

impl ValueKind {
    /// How the checker names this kind of value in messages.
    pub fn describe(&self) -> &'static str {
        match self {
            ValueKind::Int(_) => "an integer",
            ValueKind::Float(_) => "a number",
            ValueKind::Percent(_) => "a percent",
            ValueKind::Str(_) => "a string",
            ValueKind::Bool(_) => "a boolean",
            ValueKind::Word(_) => "a word",
            ValueKind::Path(_) => "a dotted path",
            ValueKind::Call(_) => "a call",
            ValueKind::List(_) => "a list",
            ValueKind::Block(_) => "a block of settings",
        }
    }
}

//! The problems the checker reports, each a miette diagnostic with a code,
//! a label on the offending span and a help line.

use miette::Diagnostic;
use thiserror::Error;

use crate::span::Span;

/// `did you mean `x`?` when a close name exists, otherwise the list of
/// valid names.
pub(crate) fn suggest(suggestion: &Option<String>, known: &str) -> String {
    match suggestion {
        Some(s) => format!("did you mean `{s}`?"),
        None if known.is_empty() => "no name of that kind is defined".to_string(),
        None => format!("expected one of {known}"),
    }
}

#[derive(Debug, Clone, Error, Diagnostic, PartialEq)]
pub enum CheckError {
    #[error("unknown block kind `{kind}`")]
    #[diagnostic(code(recipe::check::unknown_kind), help("{}", suggest(suggestion, known)))]
    UnknownKind {
        #[label("not a block kind")]
        span: Span,
        kind: String,
        suggestion: Option<String>,
        known: String,
    },

    #[error("block `{name}` is defined twice")]
    #[diagnostic(code(recipe::check::duplicate_block), help("block names are unique in a file"))]
    DuplicateBlock {
        #[label("second definition")]
        span: Span,
        #[label("first defined here")]
        first: Span,
        name: String,
    },

    #[error("more than one `recipe` block")]
    #[diagnostic(
        code(recipe::check::duplicate_recipe),
        help("a file has at most one `recipe` block; merge their settings")
    )]
    DuplicateRecipe {
        #[label("second `recipe` block")]
        span: Span,
        #[label("first one")]
        first: Span,
    },

    #[error("`{key}` is set twice")]
    #[diagnostic(code(recipe::check::duplicate_key), help("a key may appear once in a block"))]
    DuplicateKey {
        #[label("set again here")]
        span: Span,
        #[label("first set here")]
        first: Span,
        key: String,
    },

    #[error("unknown setting `{key}` in a `{kind}` block")]
    #[diagnostic(code(recipe::check::unknown_key), help("{}", suggest(suggestion, known)))]
    UnknownKey {
        #[label("unknown setting")]
        span: Span,
        key: String,
        kind: String,
        suggestion: Option<String>,
        known: String,
    },

    #[error("`{kind}` block `{name}` is missing `{key}`")]
    #[diagnostic(code(recipe::check::missing_key), help("add `{key} = {example}`"))]
    MissingKey {
        #[label("needs `{key}`")]
        span: Span,
        kind: String,
        name: String,
        key: String,
        example: String,
    },

    #[error("`{key}` expects {expected}, found {found}")]
    #[diagnostic(code(recipe::check::wrong_type), help("write {expected}, e.g. `{example}`"))]
    WrongType {
        #[label("{found}")]
        span: Span,
        key: String,
        expected: String,
        found: String,
        example: String,
    },

    #[error("`{key}` is out of range")]
    #[diagnostic(code(recipe::check::out_of_range), help("{key} must be {expected}"))]
    OutOfRange {
        #[label("{value} is out of range")]
        span: Span,
        key: String,
        value: String,
        expected: String,
    },

    #[error("unknown {what} `{word}`")]
    #[diagnostic(code(recipe::check::unknown_option), help("{}", suggest(suggestion, known)))]
    UnknownOption {
        #[label("unknown {what}")]
        span: Span,
        what: String,
        word: String,
        suggestion: Option<String>,
        known: String,
    },

    #[error("unknown argument `{arg}` of `{call}`")]
    #[diagnostic(code(recipe::check::unknown_argument), help("{}", suggest(suggestion, known)))]
    UnknownArgument {
        #[label("unknown argument")]
        span: Span,
        arg: String,
        call: String,
        suggestion: Option<String>,
        known: String,
    },

    #[error("`{call}` takes at most {max} positional arguments")]
    #[diagnostic(code(recipe::check::too_many_arguments), help("`{call}` reads {signature}"))]
    TooManyArguments {
        #[label("extra argument")]
        span: Span,
        call: String,
        max: usize,
        signature: String,
    },

    #[error("`{call}` is missing its argument `{arg}`")]
    #[diagnostic(code(recipe::check::missing_argument), help("`{call}` reads {signature}"))]
    MissingArgument {
        #[label("needs `{arg}`")]
        span: Span,
        call: String,
        arg: String,
        signature: String,
    },

    #[error("`{arg}` of `{call}` is given twice")]
    #[diagnostic(
        code(recipe::check::duplicate_argument),
        help("give each argument once, by position or by name")
    )]
    DuplicateArgument {
        #[label("given again here")]
        span: Span,
        call: String,
        arg: String,
    },

    #[error("block `{name}` is not defined")]
    #[diagnostic(code(recipe::check::undefined_block), help("{}", suggest(suggestion, known)))]
    UndefinedBlock {
        #[label("not defined")]
        span: Span,
        name: String,
        suggestion: Option<String>,
        known: String,
    },

    #[error("`{key}` needs {expected}, but `{name}` is {found}")]
    #[diagnostic(code(recipe::check::wrong_reference), help("{help}"))]
    WrongReference {
        #[label("{found}")]
        span: Span,
        key: String,
        name: String,
        expected: String,
        found: String,
        help: String,
    },

    #[error("blocks refer to each other in a cycle: {path}")]
    #[diagnostic(
        code(recipe::check::cycle),
        help("a block cannot depend on its own output; break the cycle")
    )]
    Cycle {
        #[label("this reference closes the cycle")]
        span: Span,
        path: String,
    },

    #[error("layer {index} `{layer}` does not fit its input of shape {input}")]
    #[diagnostic(code(recipe::check::shape_mismatch), help("{help}"))]
    ShapeMismatch {
        #[label("{reason}")]
        span: Span,
        index: usize,
        layer: String,
        input: String,
        reason: String,
        help: String,
    },

    #[error("model `{name}` ends in shape {shape}, but `{data}` has {classes} classes")]
    #[diagnostic(
        code(recipe::check::output_mismatch),
        help("end the layers with `linear({classes})` to give one score per class")
    )]
    OutputMismatch {
        #[label("the last layer gives {shape}")]
        span: Span,
        name: String,
        shape: String,
        data: String,
        classes: usize,
    },

    #[error("cannot read data: {message}")]
    #[diagnostic(code(recipe::check::data), help("{help}"))]
    Data {
        #[label("this source")]
        span: Span,
        message: String,
        help: String,
    },

    #[error("malformed split")]
    #[diagnostic(code(recipe::check::split), help("{reason}"))]
    BadSplit {
        #[label("{label}")]
        span: Span,
        label: String,
        reason: String,
    },

    #[error("the {split} split of `{data}` is empty")]
    #[diagnostic(
        code(recipe::check::empty_split),
        help("give the {split} split a share in the `split` of `{data}`")
    )]
    EmptySplit {
        #[label("holds no samples")]
        span: Span,
        split: String,
        data: String,
    },

    #[error("cannot read weights: {message}")]
    #[diagnostic(code(recipe::check::weights), help("{help}"))]
    Weights {
        #[label("this file")]
        span: Span,
        message: String,
        help: String,
    },

    #[error("`{path}` would be written outside {root}: {reason}")]
    #[diagnostic(code(recipe::check::output_outside), help("{help}"))]
    OutputOutside {
        #[label("written outside")]
        span: Span,
        path: String,
        reason: String,
        root: String,
        help: String,
    },

    #[error("{what}, `{path}`, would be written outside {root}: {reason}")]
    #[diagnostic(code(recipe::check::state_outside), help("{help}"))]
    StateOutside { what: String, path: String, reason: String, root: String, help: String },

    #[error("`{kind}` block `{name}` would need about {need} of memory; {available} is available")]
    #[diagnostic(
        code(recipe::check::too_large),
        help(
            "{parts}; make it smaller, or run where there is more memory (the available \
             figure comes from {figure_from})"
        )
    )]
    TooLarge {
        #[label("needs {need}")]
        span: Span,
        kind: String,
        name: String,
        need: String,
        parts: String,
        available: String,
        figure_from: &'static str,
    },

    #[error("{message}")]
    #[diagnostic(
        code(recipe::check::memory_limit),
        help("give a number of bytes, or one with a unit: `512MiB`, `8GiB`, `16GB`")
    )]
    MemoryLimit { message: String },

    #[error("`shard_size` does not apply to a GGUF file")]
    #[diagnostic(
        code(recipe::check::gguf_shards),
        help(
            "a GGUF file is written whole: save as `.safetensors` to shard, or drop `shard_size`"
        )
    )]
    GgufShards {
        #[label("sharding asked for here")]
        span: Span,
    },

    #[error("the output folder `{dir}` cannot be resolved: {message}")]
    #[diagnostic(
        code(recipe::check::output_root),
        help("check that the folder, or the part of its path that exists, can be read")
    )]
    OutputRoot { dir: String, message: String },

    #[error("`{name}` has no architecture")]
    #[diagnostic(code(recipe::check::no_architecture), help("{help}"))]
    NoArchitecture {
        #[label("weights without a model")]
        span: Span,
        name: String,
        help: String,
    },

    #[error("`{pattern}` is not a valid glob")]
    #[diagnostic(
        code(recipe::check::bad_glob),
        help("globs use `*`, `?` and `[...]`, e.g. \"*.weight\"")
    )]
    BadGlob {
        #[label("{reason}")]
        span: Span,
        pattern: String,
        reason: String,
    },

    #[error("`{pattern}` matches no tensor of `{from}`")]
    #[diagnostic(code(recipe::check::glob_matches_nothing), help("tensors of `{from}`: {names}"))]
    GlobMatchesNothing {
        #[label("matches nothing")]
        span: Span,
        pattern: String,
        from: String,
        names: String,
    },

    #[error("tensor `{tensor}` does not fit `{scheme}`")]
    #[diagnostic(code(recipe::check::scheme_mismatch), help("{help}"))]
    SchemeMismatch {
        #[label("{reason}")]
        span: Span,
        tensor: String,
        scheme: String,
        reason: String,
        help: String,
    },

    #[error("`{a}` and `{b}` exclude each other")]
    #[diagnostic(code(recipe::check::conflict), help("{help}"))]
    Conflict {
        #[label("`{b}`")]
        span: Span,
        #[label("`{a}`")]
        first: Span,
        a: String,
        b: String,
        help: String,
    },

    #[error("`{key}` does not apply with `pattern = {pattern}`")]
    #[diagnostic(code(recipe::check::not_with_pattern), help("{help}"))]
    NotWithPattern {
        #[label("not with this pattern")]
        span: Span,
        key: String,
        pattern: String,
        help: String,
    },

    #[error("weights quantized to `{scheme}` are saved as `.gguf`, not `.safetensors`")]
    #[diagnostic(
        code(recipe::check::ggml_file),
        help("GGML blocks are stored in GGUF files: end the path with `.gguf`")
    )]
    GgmlFile {
        #[label("`{name}` is quantized to `{scheme}`")]
        span: Span,
        name: String,
        scheme: String,
    },

    #[error("`{key}` does not apply with `scheme = {scheme}`")]
    #[diagnostic(code(recipe::check::not_with_scheme), help("{help}"))]
    NotWithScheme {
        #[label("not with this scheme")]
        span: Span,
        key: String,
        scheme: String,
        help: String,
    },

    #[error("cannot prune the channels of `{tensor}`")]
    #[diagnostic(code(recipe::check::channels), help("{help}"))]
    Channels {
        #[label("{reason}")]
        span: Span,
        tensor: String,
        reason: String,
        help: String,
    },

    #[error("`{setting}` is not a setting of train block `{train}`")]
    #[diagnostic(code(recipe::check::bad_space_key), help("{help}"))]
    BadSpaceKey {
        #[label("cannot be varied")]
        span: Span,
        setting: String,
        train: String,
        help: String,
    },
}

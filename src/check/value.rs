//! Reading typed settings out of AST values.
//!
//! Each reader takes the key it reads (for messages) and a value, and either
//! returns the typed value or records a [`CheckError`] and returns `None`, so
//! one pass over a block reports every problem in it.

use super::error::CheckError;
use crate::span::Span;
use crate::syntax::ast::{Block, Call, Ident, Setting, Value, ValueKind};

/// Errors found so far; checking goes on after each one.
#[derive(Default)]
pub(crate) struct Errors(pub Vec<CheckError>);

impl Errors {
    pub fn push(&mut self, e: CheckError) {
        self.0.push(e);
    }
}

/// The closest of `candidates` to `name`, if it is close enough to be a typo.
pub(crate) fn closest<'a>(
    name: &str,
    candidates: impl IntoIterator<Item = &'a str>,
) -> Option<String> {
    candidates
        .into_iter()
        .map(|c| (strsim::damerau_levenshtein(name, c), c))
        .filter(|(d, c)| *d <= (name.len().max(c.len()) / 3).max(1))
        .min()
        .map(|(_, c)| c.to_string())
}

pub(crate) fn list_words<'a>(words: impl IntoIterator<Item = &'a str>) -> String {
    words.into_iter().map(|w| format!("`{w}`")).collect::<Vec<_>>().join(", ")
}

/// The settings of one block (or the named arguments of a call that takes
/// settings, such as `finetune = train(...)`), with duplicates and unknown
/// keys reported.
pub(crate) struct Settings<'a> {
    pub kind: &'a str,
    pub name: &'a Ident,
    settings: Vec<(&'a Ident, &'a Value)>,
}

impl<'a> Settings<'a> {
    /// The settings of `block`, reporting keys not in `allowed` and keys set
    /// twice; later duplicates are ignored.
    pub fn new(block: &'a Block, allowed: &[&str], errors: &mut Errors) -> Self {
        let pairs = block.settings.iter().map(|s: &'a Setting| (&s.key, &s.value));
        Self::from_pairs(&block.kind.name, &block.name, pairs, allowed, errors)
    }

    pub fn from_pairs(
        kind: &'a str,
        name: &'a Ident,
        pairs: impl IntoIterator<Item = (&'a Ident, &'a Value)>,
        allowed: &[&str],
        errors: &mut Errors,
    ) -> Self {
        let mut settings: Vec<(&Ident, &Value)> = Vec::new();
        for (key, value) in pairs {
            if let Some((first, _)) = settings.iter().find(|(f, _)| f.name == key.name) {
                errors.push(CheckError::DuplicateKey {
                    span: key.span,
                    first: first.span,
                    key: key.name.clone(),
                });
                continue;
            }
            if !allowed.contains(&key.name.as_str()) {
                errors.push(CheckError::UnknownKey {
                    span: key.span,
                    key: key.name.clone(),
                    kind: kind.to_string(),
                    suggestion: closest(&key.name, allowed.iter().copied()),
                    known: list_words(allowed.iter().copied()),
                });
                continue;
            }
            settings.push((key, value));
        }
        Settings { kind, name, settings }
    }

    pub fn get(&self, key: &str) -> Option<&'a Value> {
        self.settings.iter().find(|(k, _)| k.name == key).map(|(_, v)| *v)
    }

    /// The value of a required key, or a [`CheckError::MissingKey`] on the
    /// block name.
    pub fn require(&self, key: &str, example: &str, errors: &mut Errors) -> Option<&'a Value> {
        let value = self.get(key);
        if value.is_none() {
            errors.push(CheckError::MissingKey {
                span: self.name.span,
                kind: self.kind.to_string(),
                name: self.name.name.clone(),
                key: key.to_string(),
                example: example.to_string(),
            });
        }
        value
    }
}

pub(crate) fn wrong_type(key: &str, v: &Value, expected: &str, example: &str) -> CheckError {
    CheckError::WrongType {
        span: v.span,
        key: key.to_string(),
        expected: expected.to_string(),
        found: v.kind.describe().to_string(),
        example: example.to_string(),
    }
}

pub(crate) fn out_of_range(key: &str, v: &Value, expected: &str) -> CheckError {
    let value = match &v.kind {
        ValueKind::Int(i) => i.to_string(),
        ValueKind::Float(x) => x.to_string(),
        ValueKind::Percent(x) => format!("{}%", x * 100.0),
        _ => "this value".to_string(),
    };
    CheckError::OutOfRange {
        span: v.span,
        key: key.to_string(),
        value,
        expected: expected.to_string(),
    }
}

/// An integer setting of at least `min`.
pub(crate) fn count(key: &str, v: &Value, min: i64, errors: &mut Errors) -> Option<usize> {
    match v.kind {
        ValueKind::Int(i) if i >= min => match usize::try_from(i) {
            Ok(n) => Some(n),
            Err(_) => {
                errors.push(out_of_range(key, v, &format!("an integer of at least {min}")));
                None
            }
        },
        ValueKind::Int(_) => {
            errors.push(out_of_range(key, v, &format!("an integer of at least {min}")));
            None
        }
        _ => {
            errors.push(wrong_type(key, v, "an integer", &format!("{key} = {}", min.max(1))));
            None
        }
    }
}

/// Any number: integer, float or percent.
pub(crate) fn number(key: &str, v: &Value, errors: &mut Errors) -> Option<f64> {
    match v.kind {
        ValueKind::Int(i) => Some(i as f64),
        ValueKind::Float(x) | ValueKind::Percent(x) => Some(x),
        _ => {
            errors.push(wrong_type(key, v, "a number", &format!("{key} = 0.1")));
            None
        }
    }
}

/// A number that `ok` accepts; `expected` says which numbers those are.
pub(crate) fn number_where(
    key: &str,
    v: &Value,
    ok: impl Fn(f64) -> bool,
    expected: &str,
    errors: &mut Errors,
) -> Option<f64> {
    let x = number(key, v, errors)?;
    if ok(x) {
        Some(x)
    } else {
        errors.push(out_of_range(key, v, expected));
        None
    }
}

pub(crate) fn non_negative(key: &str, v: &Value, errors: &mut Errors) -> Option<f64> {
    number_where(key, v, |x| x >= 0.0, "zero or more", errors)
}

/// A fraction in `[0, 1]`, written as a number or a percent.
pub(crate) fn fraction(key: &str, v: &Value, errors: &mut Errors) -> Option<f64> {
    number_where(key, v, |x| (0.0..=1.0).contains(&x), "between 0 and 1 (0% to 100%)", errors)
}

pub(crate) fn string<'v>(key: &str, v: &'v Value, errors: &mut Errors) -> Option<&'v str> {
    match &v.kind {
        ValueKind::Str(s) => Some(s),
        _ => {
            errors.push(wrong_type(key, v, "a string", &format!("{key} = \"...\"")));
            None
        }
    }
}

pub(crate) fn boolean(key: &str, v: &Value, errors: &mut Errors) -> Option<bool> {
    match v.kind {
        ValueKind::Bool(b) => Some(b),
        _ => {
            errors.push(wrong_type(key, v, "`true` or `false`", &format!("{key} = true")));
            None
        }
    }
}

/// A call or a bare word (a call without arguments).
pub(crate) struct Callish<'a> {
    pub name: &'a str,
    pub name_span: Span,
    pub span: Span,
    pub args: &'a [Value],
    pub named: &'a [(Ident, Value)],
}

pub(crate) fn callish<'a>(
    key: &str,
    v: &'a Value,
    example: &str,
    errors: &mut Errors,
) -> Option<Callish<'a>> {
    match &v.kind {
        ValueKind::Word(w) => {
            Some(Callish { name: w, name_span: v.span, span: v.span, args: &[], named: &[] })
        }
        ValueKind::Call(Call { name, args, named }) => {
            Some(Callish { name: &name.name, name_span: name.span, span: v.span, args, named })
        }
        _ => {
            errors.push(wrong_type(key, v, "a name or a call", example));
            None
        }
    }
}

/// A word out of `options`; `what` names the kind of option in messages.
pub(crate) fn option<'o>(
    what: &str,
    word: &str,
    span: Span,
    options: &[&'o str],
    errors: &mut Errors,
) -> Option<&'o str> {
    match options.iter().find(|o| **o == word) {
        Some(o) => Some(o),
        None => {
            errors.push(CheckError::UnknownOption {
                span,
                what: what.to_string(),
                word: word.to_string(),
                suggestion: closest(word, options.iter().copied()),
                known: list_words(options.iter().copied()),
            });
            None
        }
    }
}

/// A plain word setting out of `options`.
pub(crate) fn word_option<'o>(
    key: &str,
    v: &Value,
    options: &[&'o str],
    errors: &mut Errors,
) -> Option<&'o str> {
    match &v.kind {
        ValueKind::Word(w) => option(key, w, v.span, options, errors),
        _ => {
            let example = format!("{key} = {}", options[0]);
            errors.push(wrong_type(
                key,
                v,
                &format!("one of {}", list_words(options.to_vec())),
                &example,
            ));
            None
        }
    }
}

/// The arguments of a call, bound to the parameter names of `params` by
/// position or by name. Problems are reported; missing arguments come back
/// as `None` for the caller to default or to require.
pub(crate) fn bind<'a>(
    call: &Callish<'a>,
    params: &[&str],
    errors: &mut Errors,
) -> Option<Vec<Option<&'a Value>>> {
    let signature = format!("{}({})", call.name, params.join(", "));
    let mut bound: Vec<Option<&Value>> = vec![None; params.len()];
    let mut ok = true;
    for (i, arg) in call.args.iter().enumerate() {
        if i >= params.len() {
            errors.push(CheckError::TooManyArguments {
                span: arg.span,
                call: call.name.to_string(),
                max: params.len(),
                signature: signature.clone(),
            });
            ok = false;
            break;
        }
        bound[i] = Some(arg);
    }
    for (key, v) in call.named {
        match params.iter().position(|p| *p == key.name) {
            Some(i) if bound[i].is_some() => {
                errors.push(CheckError::DuplicateArgument {
                    span: key.span,
                    call: call.name.to_string(),
                    arg: key.name.clone(),
                });
                ok = false;
            }
            Some(i) => bound[i] = Some(v),
            None => {
                errors.push(CheckError::UnknownArgument {
                    span: key.span,
                    arg: key.name.clone(),
                    call: call.name.to_string(),
                    suggestion: closest(&key.name, params.iter().copied()),
                    known: list_words(params.iter().copied()),
                });
                ok = false;
            }
        }
    }
    ok.then_some(bound)
}

/// Report a missing required argument of a call.
pub(crate) fn missing_arg(call: &Callish, params: &[&str], arg: &str) -> CheckError {
    CheckError::MissingArgument {
        span: call.span,
        call: call.name.to_string(),
        arg: arg.to_string(),
        signature: format!("{}({})", call.name, params.join(", ")),
    }
}

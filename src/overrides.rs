//! `--set block.key=value` overrides, applied to the AST before checking.
//!
//! An override's value is recipe syntax, checked like the file. So that its
//! problems can be shown in context, the overrides are appended to the
//! recipe text as `--set ...` lines, and the spans of overridden values point
//! into those lines.

use miette::Diagnostic;
use thiserror::Error;

use crate::check::KINDS;
use crate::span::Span;
use crate::syntax::ast::{Call, File, Ident, Setting, Value, ValueKind};
use crate::syntax::{self, SyntaxError};

/// A malformed or misdirected override.
#[derive(Debug, Error, Diagnostic)]
pub enum OverrideError {
    #[error("malformed override")]
    #[diagnostic(
        code(recipe::set::malformed),
        help("write `--set block.key=value`, e.g. `--set base.epochs=5`")
    )]
    Malformed {
        #[label("expected `block.key=value`")]
        span: Span,
    },

    #[error("`--set` names block `{name}`, which is not defined")]
    #[diagnostic(code(recipe::set::unknown_block), help("blocks are {known}"))]
    UnknownBlock {
        #[label("not a block")]
        span: Span,
        name: String,
        known: String,
    },

    #[error("`{key}` of `{block}` is not a call, so it has no argument `{arg}`")]
    #[diagnostic(
        code(recipe::set::not_a_call),
        help("set the whole value instead, e.g. `--set {block}.{key}=sgd(lr = 0.1)`")
    )]
    NotACall {
        #[label("no such argument")]
        span: Span,
        block: String,
        key: String,
        arg: String,
    },

    #[error(transparent)]
    #[diagnostic(transparent)]
    Syntax(#[from] SyntaxError),
}

const PREFIX: &str = "--set ";

/// The recipe text with the overrides shown after it.
pub fn shown_text(text: &str, overrides: &[String]) -> String {
    let mut shown = text.to_string();
    if !overrides.is_empty() && !shown.ends_with('\n') {
        shown.push('\n');
    }
    for o in overrides {
        shown.push_str(PREFIX);
        shown.push_str(o);
        shown.push('\n');
    }
    shown
}

/// Apply `overrides` to `file`. Returns the text diagnostics should show,
/// or that text and the problems.
pub fn apply(
    file: &mut File,
    text: &str,
    overrides: &[String],
) -> Result<String, (String, Vec<OverrideError>)> {
    let shown = shown_text(text, overrides);
    let mut errors = Vec::new();
    let mut offset = text.len() + usize::from(!overrides.is_empty() && !text.ends_with('\n'));
    for o in overrides {
        let start = offset + PREFIX.len();
        offset = start + o.len() + 1;
        if let Err(e) = apply_one(file, o, start) {
            errors.push(e);
        }
    }
    if errors.is_empty() {
        Ok(shown)
    } else {
        Err((shown, errors))
    }
}

fn apply_one(file: &mut File, text: &str, start: usize) -> Result<(), OverrideError> {
    let whole = Span::new(start, start + text.len());
    let Some(eq) = text.find('=') else { return Err(OverrideError::Malformed { span: whole }) };
    let path = text[..eq].trim_end();
    let parts: Vec<&str> = path.split('.').collect();
    if parts.len() < 2 || parts.len() > 3 || parts.iter().any(|p| !is_ident(p)) {
        return Err(OverrideError::Malformed { span: Span::new(start, start + eq) });
    }

    // Parse the value where it stands in the shown text, so its spans point
    // at the `--set` line.
    let value_text = &text[eq + 1..];
    let lead = value_text.len() - value_text.trim_start().len();
    let mut value = syntax::parse_value(value_text.trim()).map_err(|mut e| e.remove(0))?;
    shift(&mut value, start + eq + 1 + lead);

    let ident = |name: &str, at: usize| Ident {
        name: name.to_string(),
        span: Span::new(start + at, start + at + name.len()),
    };
    let names: Vec<&str> = file.blocks.iter().map(|b| b.name.name.as_str()).collect();
    let known = names.join(", ");
    let Some(block) = file.blocks.iter_mut().find(|b| b.name.name == parts[0]) else {
        let kind_hint = if KINDS.contains(&parts[0]) { " (a kind, not a name)" } else { "" };
        return Err(OverrideError::UnknownBlock {
            span: Span::new(start, start + parts[0].len()),
            name: format!("{}{kind_hint}", parts[0]),
            known,
        });
    };
    let key_at = parts[0].len() + 1;
    let key = ident(parts[1], key_at);
    let setting_span = Span::new(start, start + text.len());
    let existing = block.settings.iter_mut().find(|s| s.key.name == key.name);

    if parts.len() == 2 {
        match existing {
            Some(s) => s.value = value,
            None => block.settings.push(Setting { key, value, span: setting_span }),
        }
        return Ok(());
    }

    // `block.key.arg=value` sets one named argument of a call.
    let arg = ident(parts[2], key_at + parts[1].len() + 1);
    let not_a_call = || OverrideError::NotACall {
        span: arg.span,
        block: parts[0].to_string(),
        key: parts[1].to_string(),
        arg: parts[2].to_string(),
    };
    let Some(setting) = existing else { return Err(not_a_call()) };
    let call = match &mut setting.value.kind {
        ValueKind::Call(call) => call,
        ValueKind::Word(w) => {
            let name = Ident { name: w.clone(), span: setting.value.span };
            setting.value.kind = ValueKind::Call(Call { name, args: vec![], named: vec![] });
            let ValueKind::Call(call) = &mut setting.value.kind else { unreachable!() };
            call
        }
        _ => return Err(not_a_call()),
    };
    match call.named.iter_mut().find(|(k, _)| k.name == arg.name) {
        Some((_, v)) => *v = value,
        None => call.named.push((arg, value)),
    }
    Ok(())
}

fn is_ident(s: &str) -> bool {
    let mut chars = s.chars();
    matches!(chars.next(), Some(c) if c.is_ascii_lowercase() || c == '_')
        && chars.all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '_')
}

/// Move every span of a value by `by` bytes.
fn shift(v: &mut Value, by: usize) {
    let move_span = |s: &mut Span| *s = Span::new(s.start + by, s.end + by);
    move_span(&mut v.span);
    match &mut v.kind {
        ValueKind::Path(parts) => parts.iter_mut().for_each(|p| move_span(&mut p.span)),
        ValueKind::Call(call) => {
            move_span(&mut call.name.span);
            call.args.iter_mut().for_each(|a| shift(a, by));
            for (k, a) in &mut call.named {
                move_span(&mut k.span);
                shift(a, by);
            }
        }
        ValueKind::List(items) => items.iter_mut().for_each(|i| shift(i, by)),
        ValueKind::Block(settings) => {
            for s in settings {
                move_span(&mut s.key.span);
                move_span(&mut s.span);
                shift(&mut s.value, by);
            }
        }
        _ => {}
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sets_a_setting_and_a_call_argument() {
        let text = "train base {\n  epochs = 20\n  optimizer = sgd(lr = 0.1)\n}\n";
        let mut file = syntax::parse(text).unwrap();
        let overrides = ["base.epochs=5".to_string(), "base.optimizer.lr = 0.5".to_string()];
        let shown = apply(&mut file, text, &overrides).unwrap();
        let settings = &file.blocks[0].settings;
        assert_eq!(settings[0].value.kind, ValueKind::Int(5));
        assert_eq!(&shown[settings[0].value.span.start..settings[0].value.span.end], "5");
        let ValueKind::Call(call) = &settings[1].value.kind else { panic!("not a call") };
        assert_eq!(call.named[0].1.kind, ValueKind::Float(0.5));
        assert_eq!(&shown[call.named[0].1.span.start..call.named[0].1.span.end], "0.5");
    }

    #[test]
    fn unknown_block_and_malformed() {
        let text = "train base {}\n";
        let mut file = syntax::parse(text).unwrap();
        let (_, errors) =
            apply(&mut file, text, &["bse.epochs=5".into(), "epochs".into()]).unwrap_err();
        assert!(matches!(errors[0], OverrideError::UnknownBlock { .. }));
        assert!(matches!(errors[1], OverrideError::Malformed { .. }));
    }
}

//! Text to AST: runs the pest grammar and turns its parse tree into
//! [`ast`](super::ast) nodes, one function per grammar rule.
//!
//! Everything that can go wrong here becomes a [`SyntaxError`] with a span:
//! a pest failure is re-described with readable names for what was expected,
//! and the conversion reports literals that do not fit (integers too large,
//! unknown escapes) instead of panicking.

use pest::iterators::Pair;
use pest::Parser as _;
use pest_derive::Parser;

use super::ast::*;
use super::SyntaxError;
use crate::span::Span;

#[derive(Parser)]
#[grammar = "../grammar/recipe.pest"]
struct RecipeParser;

/// Brackets nested deeper than this are refused before pest sees them: the
/// parser and the AST conversion recurse once per level, and a hostile file
/// of a hundred thousand `[` would otherwise overflow the stack.
pub const MAX_DEPTH: usize = 64;

/// Parse a whole recipe file.
pub fn parse(src: &str) -> Result<File, Vec<SyntaxError>> {
    check_depth(src).map_err(|e| vec![e])?;
    let mut pairs = RecipeParser::parse(Rule::file, src).map_err(|e| vec![from_pest(e, src)])?;
    let file = pairs.next().expect("the file rule always yields one pair");
    let mut errors = Vec::new();
    let blocks = file
        .into_inner()
        .filter(|p| p.as_rule() == Rule::block)
        .filter_map(|p| collect(block(p), &mut errors))
        .collect();
    if errors.is_empty() {
        Ok(File { blocks })
    } else {
        Err(errors)
    }
}

/// Parse one value, as given on the command line by `--set`.
pub fn parse_value(src: &str) -> Result<Value, Vec<SyntaxError>> {
    check_depth(src).map_err(|e| vec![e])?;
    let mut pairs = RecipeParser::parse(Rule::value, src).map_err(|e| vec![from_pest(e, src)])?;
    let pair = pairs.next().expect("the value rule always yields one pair");
    if pair.as_span().end() != src.len() {
        let span = Span::new(pair.as_span().end(), src.len());
        return Err(vec![SyntaxError::Unexpected {
            span,
            expected: "the end of the value".into(),
        }]);
    }
    value(pair).map_err(|e| vec![e])
}

fn collect<T>(result: Result<T, SyntaxError>, errors: &mut Vec<SyntaxError>) -> Option<T> {
    result.map_err(|e| errors.push(e)).ok()
}

/// Refuse nesting deeper than [`MAX_DEPTH`], ignoring brackets in strings
/// and comments.
fn check_depth(src: &str) -> Result<(), SyntaxError> {
    let mut depth = 0usize;
    let mut in_string = false;
    let mut in_comment = false;
    let mut escaped = false;
    for (pos, c) in src.char_indices() {
        if in_comment {
            in_comment = c != '\n';
            continue;
        }
        if in_string {
            match c {
                _ if escaped => escaped = false,
                '\\' => escaped = true,
                '"' | '\n' => in_string = false,
                _ => {}
            }
            continue;
        }
        match c {
            '#' => in_comment = true,
            '"' => in_string = true,
            '(' | '[' | '{' => {
                depth += 1;
                if depth > MAX_DEPTH {
                    return Err(SyntaxError::TooDeep { span: Span::new(pos, pos + 1) });
                }
            }
            ')' | ']' | '}' => depth = depth.saturating_sub(1),
            _ => {}
        }
    }
    Ok(())
}

fn from_pest(err: pest::error::Error<Rule>, src: &str) -> SyntaxError {
    let pos = match err.location {
        pest::error::InputLocation::Pos(p) => p,
        pest::error::InputLocation::Span((start, _)) => start,
    };
    // Point at the offending character, or at the end of the file.
    let end = src[pos..].chars().next().map_or(pos, |c| pos + c.len_utf8());
    let span = Span::new(pos, end);
    let expected = match &err.variant {
        pest::error::ErrorVariant::ParsingError { positives, .. } => describe(positives),
        pest::error::ErrorVariant::CustomError { message } => message.clone(),
    };
    SyntaxError::Unexpected { span, expected }
}

/// Readable names for what the parser expected, in a stable order.
fn describe(rules: &[Rule]) -> String {
    let mut names: Vec<&str> = rules.iter().filter_map(|r| rule_name(*r)).collect();
    names.sort_unstable();
    names.dedup();
    match names.as_slice() {
        [] => "something else".into(),
        [one] => (*one).into(),
        [init @ .., last] => format!("{} or {}", init.join(", "), last),
    }
}

fn rule_name(rule: Rule) -> Option<&'static str> {
    Some(match rule {
        Rule::EOI => "the end of the file",
        Rule::block => "a block",
        Rule::setting | Rule::key => "a setting",
        Rule::value | Rule::argument => "a value",
        Rule::named => "a named argument",
        Rule::percent | Rule::float | Rule::integer | Rule::digits => "a number",
        Rule::exponent => "an exponent",
        Rule::string | Rule::string_inner | Rule::escape => "a string",
        Rule::boolean => "`true` or `false`",
        Rule::call | Rule::path | Rule::word | Rule::ident => "a name",
        Rule::list => "a list",
        Rule::body | Rule::open_brace => "`{`",
        Rule::close_brace => "`}`",
        Rule::open_paren => "`(`",
        Rule::close_paren => "`)`",
        Rule::open_bracket => "`[`",
        Rule::close_bracket => "`]`",
        Rule::equals => "`=`",
        Rule::comma => "`,`",
        _ => return None,
    })
}

fn block(pair: Pair<Rule>) -> Result<Block, SyntaxError> {
    let span = Span::from(pair.as_span());
    let mut inner = pair.into_inner();
    let kind = ident(inner.next().expect("a block has a kind"));
    let name = ident(inner.next().expect("a block has a name"));
    let settings = body(inner.next().expect("a block has a body"))?;
    Ok(Block { kind, name, settings, span })
}

fn body(pair: Pair<Rule>) -> Result<Vec<Setting>, SyntaxError> {
    pair.into_inner().filter(|p| p.as_rule() == Rule::setting).map(setting).collect()
}

fn setting(pair: Pair<Rule>) -> Result<Setting, SyntaxError> {
    let span = Span::from(pair.as_span());
    let mut inner = pair.into_inner().filter(|p| p.as_rule() != Rule::equals);
    let key = ident(inner.next().expect("a setting has a key"));
    let rhs = inner.next().expect("a setting has a value");
    let value = match rhs.as_rule() {
        Rule::body => Value { span: Span::from(rhs.as_span()), kind: ValueKind::Block(body(rhs)?) },
        _ => value(rhs)?,
    };
    Ok(Setting { key, value, span })
}

fn ident(pair: Pair<Rule>) -> Ident {
    Ident { name: pair.as_str().to_string(), span: Span::from(pair.as_span()) }
}

fn value(pair: Pair<Rule>) -> Result<Value, SyntaxError> {
    let pair = match pair.as_rule() {
        Rule::value => pair.into_inner().next().expect("a value has one alternative"),
        _ => pair,
    };
    let span = Span::from(pair.as_span());
    let kind = match pair.as_rule() {
        Rule::percent => {
            let number = pair.into_inner().next().expect("a percent holds a number");
            let value = match number.as_rule() {
                Rule::integer => integer(&number)? as f64,
                _ => float(&number)?,
            };
            ValueKind::Percent(value / 100.0)
        }
        Rule::float => ValueKind::Float(float(&pair)?),
        Rule::integer => ValueKind::Int(integer(&pair)?),
        Rule::string => ValueKind::Str(string(pair)?),
        Rule::boolean => ValueKind::Bool(pair.as_str() == "true"),
        Rule::call => ValueKind::Call(call(pair)?),
        Rule::path => ValueKind::Path(pair.into_inner().map(ident).collect()),
        Rule::word => ValueKind::Word(pair.as_str().to_string()),
        Rule::list => ValueKind::List(
            pair.into_inner()
                .filter(|p| p.as_rule() == Rule::value)
                .map(value)
                .collect::<Result<_, _>>()?,
        ),
        Rule::body => ValueKind::Block(body(pair)?),
        rule => unreachable!("the value rule has no alternative {rule:?}"),
    };
    Ok(Value { kind, span })
}

fn integer(pair: &Pair<Rule>) -> Result<i64, SyntaxError> {
    let text: String = pair.as_str().chars().filter(|c| *c != '_').collect();
    text.parse().map_err(|_| SyntaxError::IntegerTooLarge { span: Span::from(pair.as_span()) })
}

fn float(pair: &Pair<Rule>) -> Result<f64, SyntaxError> {
    let text: String = pair.as_str().chars().filter(|c| *c != '_').collect();
    match text.parse::<f64>() {
        Ok(x) if x.is_finite() => Ok(x),
        _ => Err(SyntaxError::NumberTooLarge { span: Span::from(pair.as_span()) }),
    }
}

fn string(pair: Pair<Rule>) -> Result<String, SyntaxError> {
    let inner = pair.into_inner().next().expect("a string has contents");
    let mut out = String::with_capacity(inner.as_str().len());
    let base = inner.as_span().start();
    let mut chars = inner.as_str().char_indices();
    while let Some((pos, c)) = chars.next() {
        if c != '\\' {
            out.push(c);
            continue;
        }
        match chars.next() {
            Some((_, '"')) => out.push('"'),
            Some((_, '\\')) => out.push('\\'),
            Some((_, 'n')) => out.push('\n'),
            Some((_, 't')) => out.push('\t'),
            Some((next, other)) => {
                let span = Span::new(base + pos, base + next + other.len_utf8());
                return Err(SyntaxError::UnknownEscape { span, escape: other });
            }
            None => unreachable!("the grammar ends an escape with a character"),
        }
    }
    Ok(out)
}

fn call(pair: Pair<Rule>) -> Result<Call, SyntaxError> {
    let mut inner = pair.into_inner();
    let name = ident(inner.next().expect("a call has a name"));
    let mut args = Vec::new();
    let mut named: Vec<(Ident, Value)> = Vec::new();
    for arg in inner.filter(|p| p.as_rule() == Rule::argument) {
        let arg = arg.into_inner().next().expect("an argument has one alternative");
        match arg.as_rule() {
            Rule::named => {
                let mut parts = arg.into_inner().filter(|p| p.as_rule() != Rule::equals);
                let key = ident(parts.next().expect("a named argument has a name"));
                let val = value(parts.next().expect("a named argument has a value"))?;
                named.push((key, val));
            }
            _ => {
                let val = value(arg)?;
                if let Some((first, _)) = named.first() {
                    return Err(SyntaxError::PositionalAfterNamed {
                        span: val.span,
                        named: first.span,
                    });
                }
                args.push(val);
            }
        }
    }
    Ok(Call { name, args, named })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn one_value(src: &str) -> ValueKind {
        parse_value(src).unwrap_or_else(|e| panic!("{src}: {e:?}")).kind
    }

    #[test]
    fn numbers() {
        assert_eq!(one_value("1_000"), ValueKind::Int(1000));
        assert_eq!(one_value("-3"), ValueKind::Int(-3));
        assert_eq!(one_value("1e-3"), ValueKind::Float(1e-3));
        assert_eq!(one_value("-2.5"), ValueKind::Float(-2.5));
        assert_eq!(one_value("80%"), ValueKind::Percent(0.8));
        assert_eq!(one_value("0.5%"), ValueKind::Percent(0.005));
    }

    #[test]
    fn strings_unescape() {
        assert_eq!(one_value(r#""a\"b\\c""#), ValueKind::Str("a\"b\\c".into()));
        assert!(matches!(
            parse_value(r#""a\qb""#).unwrap_err()[0],
            SyntaxError::UnknownEscape { escape: 'q', .. }
        ));
    }

    #[test]
    fn words_paths_and_booleans() {
        assert_eq!(one_value("true"), ValueKind::Bool(true));
        assert_eq!(one_value("trueish"), ValueKind::Word("trueish".into()));
        let ValueKind::Path(parts) = one_value("digits.test") else { panic!("not a path") };
        assert_eq!(parts.iter().map(|p| p.name.as_str()).collect::<Vec<_>>(), ["digits", "test"]);
    }

    #[test]
    fn calls_take_positional_then_named() {
        let ValueKind::Call(call) = one_value("sgd(0.1, momentum = 0.9,)") else { panic!() };
        assert_eq!(call.name.name, "sgd");
        assert_eq!(call.args.len(), 1);
        assert_eq!(call.named[0].0.name, "momentum");
        assert!(matches!(
            parse_value("f(a = 1, 2)").unwrap_err()[0],
            SyntaxError::PositionalAfterNamed { .. }
        ));
    }

    #[test]
    fn lists_allow_trailing_commas_and_newlines() {
        let ValueKind::List(items) = one_value("[\n  linear(128),\n  relu,\n]") else { panic!() };
        assert_eq!(items.len(), 2);
        assert_eq!(one_value("[]"), ValueKind::List(vec![]));
    }

    #[test]
    fn settings_split_on_commas_and_newlines() {
        let file = parse("data d { a = 1, b = 2\n  c = 3 # note\n}\nmodel m {}\n").unwrap();
        assert_eq!(file.blocks.len(), 2);
        let keys: Vec<_> = file.blocks[0].settings.iter().map(|s| s.key.name.as_str()).collect();
        assert_eq!(keys, ["a", "b", "c"]);
    }

    #[test]
    fn nested_space_block() {
        let file =
            parse("search s {\n  space { optimizer.lr = loguniform(1e-3, 1.0) }\n}").unwrap();
        let ValueKind::Block(inner) = &file.blocks[0].settings[0].value.kind else { panic!() };
        assert_eq!(inner[0].key.name, "optimizer.lr");
    }

    #[test]
    fn integer_too_large_is_an_error() {
        let errors = parse("train t { epochs = 99999999999999999999 }").unwrap_err();
        assert!(matches!(errors[0], SyntaxError::IntegerTooLarge { .. }));
    }

    #[test]
    fn deep_nesting_is_refused_without_overflow() {
        let src = format!("model m {{ layers = {} }}", "[".repeat(100_000));
        let errors = parse(&src).unwrap_err();
        assert!(matches!(errors[0], SyntaxError::TooDeep { .. }));
    }

    #[test]
    fn errors_name_what_was_expected() {
        let errors = parse("data d {\n  split = \n}").unwrap_err();
        let SyntaxError::Unexpected { expected, .. } = &errors[0] else { panic!() };
        assert_eq!(expected, "a value");
    }
}

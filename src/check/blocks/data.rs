//! `data` blocks: the source, the split, shuffling and scaling, with the
//! dataset's shape read from file headers.

use std::path::PathBuf;

use crate::check::error::CheckError;
use crate::check::refs::Env;
use crate::check::spec::{DataSpec, Scale, Source};
use crate::check::value::{self, Errors, Settings};
use crate::syntax::ast::{self, Value, ValueKind};

const KEYS: [&str; 4] = ["source", "split", "shuffle", "scale"];
const SOURCES: [&str; 4] = ["builtin", "csv", "idx", "safetensors"];

pub(super) fn data(block: &ast::Block, env: &Env, errors: &mut Errors) -> Option<DataSpec> {
    let s = Settings::new(block, &KEYS, errors);
    let source = s
        .require("source", "builtin(\"digits\")", errors)
        .and_then(|v| source(v, errors).map(|src| (src, v)));
    let split = match s.get("split") {
        Some(v) => split(v, errors),
        None => Some([0.7, 0.15, 0.15]),
    };
    let shuffle = s.get("shuffle").map_or(Some(true), |v| value::boolean("shuffle", v, errors));
    let scale = match s.get("scale") {
        Some(v) => match value::word_option("scale", v, &["none", "standard", "minmax"], errors) {
            Some("standard") => Scale::Standard,
            Some("minmax") => Scale::MinMax,
            _ => Scale::None,
        },
        None => Scale::None,
    };
    let (source, source_value) = source?;
    let split = split.unwrap_or([0.7, 0.15, 0.15]);

    // The header tells the shape; a file that cannot be read is reported on
    // the source setting.
    let shape = match crate::data::peek(&source, env.base_dir) {
        Ok(shape) => shape,
        Err(e) => {
            errors.push(CheckError::Data {
                span: source_value.span,
                message: e.to_string(),
                help: match e {
                    crate::data::DataError::Read { .. } => {
                        "relative paths start from the folder of the recipe".into()
                    }
                    _ => "fix the file, or point the source at another one".into(),
                },
            });
            return None;
        }
    };
    if shape.classes < 2 {
        errors.push(CheckError::Data {
            span: source_value.span,
            message: format!("the labels hold {} class, a classifier needs two", shape.classes),
            help: "check the label column: every sample has the same class".into(),
        });
        return None;
    }
    let counts = crate::data::split_counts(shape.samples, split);
    for ((count, fraction), name) in counts.iter().zip(split).zip(["train", "val", "test"]) {
        if *count == 0 && (fraction > 0.0 || name == "train") {
            let split_value = s.get("split").unwrap_or(source_value);
            errors.push(CheckError::BadSplit {
                span: split_value.span,
                label: format!("leaves the {name} split empty"),
                reason: format!(
                    "with {} samples the {name} split would be empty; give it a larger share",
                    shape.samples
                ),
            });
            return None;
        }
    }
    Some(DataSpec { source, split, shuffle: shuffle.unwrap_or(true), scale, shape })
}

fn source(v: &Value, errors: &mut Errors) -> Option<Source> {
    let call = value::callish("source", v, "source = builtin(\"digits\")", errors)?;
    let path = |v: Option<&Value>, key: &str, errors: &mut Errors| -> Option<PathBuf> {
        v.and_then(|v| value::string(key, v, errors)).map(PathBuf::from)
    };
    let kind = value::option("data source", call.name, call.name_span, &SOURCES, errors)?;
    match kind {
        "builtin" => {
            let args = value::bind(&call, &["name"], errors)?;
            let Some(name) = args[0] else {
                errors.push(value::missing_arg(&call, &["name"], "name"));
                return None;
            };
            Some(Source::Builtin(value::string("name", name, errors)?.to_string()))
        }
        "csv" => {
            let params = ["path", "label"];
            let args = value::bind(&call, &params, errors)?;
            let Some(file) = args[0] else {
                errors.push(value::missing_arg(&call, &params, "path"));
                return None;
            };
            let label = match args[1] {
                Some(v) => value::string("label", v, errors)?.to_string(),
                None => "label".to_string(),
            };
            Some(Source::Csv { path: path(Some(file), "path", errors)?, label })
        }
        "idx" => {
            let params = ["images", "labels"];
            let args = value::bind(&call, &params, errors)?;
            for (arg, name) in args.iter().zip(params) {
                if arg.is_none() {
                    errors.push(value::missing_arg(&call, &params, name));
                    return None;
                }
            }
            let images = path(args[0], "images", errors);
            let labels = path(args[1], "labels", errors);
            Some(Source::Idx { images: images?, labels: labels? })
        }
        _ => {
            let params = ["path", "x", "y"];
            let args = value::bind(&call, &params, errors)?;
            let Some(file) = args[0] else {
                errors.push(value::missing_arg(&call, &params, "path"));
                return None;
            };
            let name = |v: Option<&Value>, key: &str, errors: &mut Errors| match v {
                Some(v) => value::string(key, v, errors).map(str::to_string),
                None => Some(key.to_string()),
            };
            let x = name(args[1], "x", errors);
            let y = name(args[2], "y", errors);
            Some(Source::Safetensors { path: path(Some(file), "path", errors)?, x: x?, y: y? })
        }
    }
}

/// `[train, val, test]` summing to 1, or one number for train with the rest
/// as test.
fn split(v: &Value, errors: &mut Errors) -> Option<[f64; 3]> {
    let bad = |reason: &str, errors: &mut Errors| {
        errors.push(CheckError::BadSplit {
            span: v.span,
            label: "this split".into(),
            reason: reason.to_string(),
        });
        None
    };
    let fractions = match &v.kind {
        ValueKind::List(items) if items.len() == 3 => {
            let mut out = [0.0; 3];
            for (slot, item) in out.iter_mut().zip(items) {
                *slot = value::fraction("split", item, errors)?;
            }
            out
        }
        ValueKind::List(items) => {
            let reason = format!(
                "a split lists three shares, train, validation and test, not {}: \
                 e.g. `[0.7, 0.15, 0.15]`",
                items.len()
            );
            return bad(&reason, errors);
        }
        ValueKind::Int(_) | ValueKind::Float(_) | ValueKind::Percent(_) => {
            let train = value::fraction("split", v, errors)?;
            [train, 0.0, 1.0 - train]
        }
        _ => {
            errors.push(value::wrong_type(
                "split",
                v,
                "a list of three shares",
                "[0.7, 0.15, 0.15]",
            ));
            return None;
        }
    };
    let sum: f64 = fractions.iter().sum();
    if (sum - 1.0).abs() > 1e-9 {
        // Rounded, so that 0.7 + 0.2 + 0.2 reads as 1.1.
        let shown = (sum * 1e9).round() / 1e9;
        return bad(&format!("the shares add up to {shown}, not 1"), errors);
    }
    if fractions[0] == 0.0 {
        return bad("the train share must be above 0", errors);
    }
    Some(fractions)
}

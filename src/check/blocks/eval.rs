//! `eval` blocks: which weights, on which split, with which metrics.

use crate::check::error::CheckError;
use crate::check::refs::{Env, Type};
use crate::check::spec::{EvalSpec, Metric, SaveFormat, Split};
use crate::check::value::{self, Errors, Settings};
use crate::syntax::ast::{self, ValueKind};

const METRICS: [&str; 6] = ["accuracy", "loss", "size", "sparsity", "latency", "error"];

pub(super) fn eval(block: &ast::Block, env: &Env, errors: &mut Errors) -> Option<EvalSpec> {
    let s = Settings::new(block, &["models", "data", "metrics", "path"], errors);
    let models_value = s.require("models", "[base]", errors);
    let models: Option<Vec<(&str, &ast::Value)>> = models_value.and_then(|v| {
        let items = match &v.kind {
            ValueKind::List(items) if !items.is_empty() => items.iter().collect(),
            ValueKind::List(_) => {
                errors.push(value::out_of_range("models", v, "a list of at least one block"));
                return None;
            }
            _ => vec![v],
        };
        let before = errors.0.len();
        let names: Vec<(&str, &ast::Value)> = items
            .into_iter()
            .filter_map(|i| env.reference("models", i, &[Type::Weights], errors).map(|n| (n, i)))
            .collect();
        (errors.0.len() == before).then_some(names)
    });
    let data = s.get("data").map(|v| env.data_ref("data", v, Split::Test, errors));
    let metrics = match s.get("metrics") {
        Some(v) => {
            let ValueKind::List(items) = &v.kind else {
                errors.push(value::wrong_type("metrics", v, "a list of metrics", "[accuracy]"));
                return None;
            };
            let mut metrics = Vec::new();
            for item in items {
                let m = match value::word_option("metric", item, &METRICS, errors) {
                    Some("accuracy") => Metric::Accuracy,
                    Some("loss") => Metric::Loss,
                    Some("size") => Metric::Size,
                    Some("sparsity") => Metric::Sparsity,
                    Some("error") => Metric::Error,
                    Some(_) => Metric::Latency,
                    None => continue,
                };
                if !metrics.contains(&m) {
                    metrics.push(m);
                }
            }
            Some(metrics)
        }
        // Without data, what can be measured from the weights alone.
        None if data.is_none() => Some(vec![Metric::Size, Metric::Sparsity, Metric::Error]),
        None => Some(vec![Metric::Accuracy, Metric::Loss]),
    };
    let path = s.get("path").and_then(|v| {
        let p = value::string("path", v, errors)?;
        if !p.ends_with(".json") {
            errors.push(value::wrong_type("path", v, "a `.json` file", "\"out/report.json\""));
            return None;
        }
        env.out.check(std::path::Path::new(p), v.span, errors)?;
        Some(p.into())
    });
    // Accuracy, loss and latency run the model, so they need its layers and data.
    let runs = metrics.as_ref().is_some_and(|ms| {
        ms.iter().any(|m| matches!(m, Metric::Accuracy | Metric::Loss | Metric::Latency))
    });
    let data = match data {
        Some(d) => Some(d?),
        None if runs => {
            s.require("data", "digits.test", errors);
            return None;
        }
        None => None,
    };
    let (models, metrics) = (models?, metrics?);
    let before = errors.0.len();
    for (name, at) in &models {
        match env.arch(name) {
            Some(arch) if runs => {
                let block = &data.as_ref().expect("running needs data").block;
                super::train::check_fits(arch, block, s.get("data"), env, errors);
            }
            Some(_) => {}
            None if runs => errors.push(CheckError::NoArchitecture {
                span: at.span,
                name: name.to_string(),
                help: "accuracy, loss and latency run the model: give the `load` block a \
                       `model`, or measure only size and sparsity"
                    .into(),
            }),
            None => {}
        }
    }
    if let (true, Some(at), Some(data)) = (runs, s.get("data"), &data) {
        env.require_samples(data, at, errors);
    }
    if errors.0.len() != before {
        return None;
    }
    let formats = models.iter().map(|(n, _)| saved_format(env, n)).collect();
    let models = models.into_iter().map(|(n, _)| n.to_string()).collect();
    Some(EvalSpec { models, formats, data, metrics, path })
}

/// The format the recipe saves a block's weights in: sparse when any
/// `save` of them asks for it. Read from the text, since `save` blocks are
/// checked after the `eval` blocks that do not depend on them.
fn saved_format(env: &Env, name: &str) -> SaveFormat {
    let word = |b: &ast::Block, key: &str| {
        b.settings.iter().find(|s| s.key.name == key).and_then(|s| match &s.value.kind {
            ValueKind::Word(w) => Some(w.clone()),
            _ => None,
        })
    };
    let sparse = env.blocks().any(|b| {
        b.kind.name == "save"
            && word(b, "from").as_deref() == Some(name)
            && word(b, "format").as_deref() == Some("sparse")
    });
    if sparse {
        SaveFormat::Sparse
    } else {
        SaveFormat::Dense
    }
}

//! Blocks that read or transform weights: `load`, `prune`, `quantize` and
//! `save`.

use globset::{Glob, GlobSet, GlobSetBuilder};

use crate::check::error::CheckError;
use crate::check::refs::{Env, Type};
use std::path::Path;

use crate::check::spec::{
    Arch, DataRef, Granularity, LoadSpec, Pattern, PruneAmount, PruneMethod, PruneSpec,
    QuantScheme, QuantSpec, SaveFormat, SaveSpec, Scope, Spec, Split, TensorInfo,
};
use crate::check::value::{self, Errors, Settings};
use crate::formats::sparse;
use crate::syntax::ast::{self, Value, ValueKind};

use super::model::shape_text;

pub(super) fn load(block: &ast::Block, env: &Env, errors: &mut Errors) -> Option<LoadSpec> {
    let s = Settings::new(block, &["path", "model"], errors);
    let path_value = s.require("path", "\"weights/net.safetensors\"", errors);
    let path = path_value.and_then(|v| value::string("path", v, errors));
    let model = match s.get("model") {
        Some(v) => Some(env.reference("model", v, &[Type::Architecture], errors)?),
        None => None,
    };
    let (path, path_value) = (path?, path_value?);

    // Only the header is read: names, dtypes, shapes and metadata.
    let weights_error = |message: String, help: String| CheckError::Weights {
        span: path_value.span,
        message,
        help,
    };
    let full = env.base_dir.join(path);
    let mut shards = Vec::new();
    let header = if crate::formats::checkpoint::is_index(&full) {
        crate::formats::checkpoint::Checkpoint::open(&full).map(|c| {
            let folder = Path::new(path).parent().unwrap_or(Path::new(""));
            for file in &c.files {
                shards.push(folder.join(file.file_name().unwrap_or_default()));
            }
            c.header()
        })
    } else {
        crate::formats::safetensors::read_header(&full)
    };
    let header = match header {
        Ok(header) => header,
        Err(e) => {
            let help = "relative paths start from the folder of the recipe".to_string();
            errors.push(weights_error(e.with_path(Path::new(path)).to_string(), help));
            return None;
        }
    };
    let logical = sparse::logical_tensors(&header.tensors, &header.metadata)
        .map_err(|e| e.to_string())
        .and_then(|t| {
            crate::formats::quant::logical_tensors(&t, &header.metadata).map_err(|e| e.to_string())
        });
    let tensors = match logical {
        Ok(tensors) => tensors,
        Err(e) => {
            let help = "the file was damaged after it was written".to_string();
            errors.push(weights_error(format!("`{path}`: {e}"), help));
            return None;
        }
    };

    // A file written by `recipe` records its architecture, which may differ
    // from the model's in the widths of hidden layers when it was
    // channel-pruned; the file's own then wins.
    let recorded: Option<Arch> = header
        .metadata
        .get("architecture")
        .and_then(|a| serde_json::from_str::<Arch>(a).ok())
        .and_then(|a| Arch::new(a.input, a.layers).ok());
    let arch = match (model.and_then(|m| env.arch(m)), recorded) {
        (Some(model_arch), Some(file)) if model_arch.same_but_widths(&file) => Some(file),
        (Some(model_arch), _) => Some(model_arch.clone()),
        (None, recorded) => recorded,
    };
    if let Some(arch) = &arch {
        for (name, shape) in arch.params() {
            let problem = match tensors.iter().find(|t| t.name == name) {
                None => Some(format!("`{path}` has no tensor `{name}`")),
                Some(t) if t.shape != shape => Some(format!(
                    "tensor `{name}` of `{path}` has shape {}, the model needs {}",
                    shape_text(&t.shape),
                    shape_text(&shape)
                )),
                Some(_) => None,
            };
            if let Some(message) = problem {
                let help = match model {
                    Some(m) => format!(
                        "the file must hold the weights of `{m}`, named as PyTorch names an \
                         nn.Sequential"
                    ),
                    None => "the file's `architecture` metadata does not match its tensors".into(),
                };
                errors.push(weights_error(message, help));
                return None;
            }
        }
    }
    Some(LoadSpec { path: path.into(), shards, model: model.map(str::to_string), arch, tensors })
}

/// Tensor-name globs, each of which must match a tensor of `from` when the
/// tensors are known before running.
fn globs(
    key: &str,
    v: &Value,
    from: &str,
    tensors: &[TensorInfo],
    errors: &mut Errors,
) -> Option<(Vec<String>, GlobSet)> {
    let ValueKind::List(items) = &v.kind else {
        errors.push(value::wrong_type(key, v, "a list of globs", "[\"*.weight\"]"));
        return None;
    };
    let mut patterns = Vec::new();
    let mut set = GlobSetBuilder::new();
    let before = errors.0.len();
    for item in items {
        let Some(pattern) = value::string(key, item, errors) else { continue };
        let glob = match Glob::new(pattern) {
            Ok(g) => g,
            Err(e) => {
                errors.push(CheckError::BadGlob {
                    span: item.span,
                    pattern: pattern.to_string(),
                    reason: e.kind().to_string(),
                });
                continue;
            }
        };
        let matcher = glob.compile_matcher();
        if !tensors.is_empty() && !tensors.iter().any(|t| matcher.is_match(&t.name)) {
            let mut names: Vec<&str> = tensors.iter().map(|t| t.name.as_str()).collect();
            names.truncate(12);
            errors.push(CheckError::GlobMatchesNothing {
                span: item.span,
                pattern: pattern.to_string(),
                from: from.to_string(),
                names: value::list_words(names),
            });
            continue;
        }
        set.add(glob);
        patterns.push(pattern.to_string());
    }
    if errors.0.len() != before {
        return None;
    }
    Some((patterns, set.build().ok()?))
}

fn default_globs() -> (Vec<String>, GlobSet) {
    let mut set = GlobSetBuilder::new();
    set.add(Glob::new("*.weight").expect("a constant glob is valid"));
    (vec!["*.weight".into()], set.build().expect("a constant glob set builds"))
}

/// The targets and ignores of a prune or quantize block, and the tensors
/// they select.
fn selection<'t>(
    s: &Settings,
    from: &str,
    tensors: &'t [TensorInfo],
    errors: &mut Errors,
) -> Option<(Vec<String>, Vec<String>, Vec<&'t TensorInfo>)> {
    let targets = match s.get("targets") {
        Some(v) => globs("targets", v, from, tensors, errors),
        None => Some(default_globs()),
    };
    let ignore = match s.get("ignore") {
        Some(v) => globs("ignore", v, from, tensors, errors),
        None => Some((vec![], GlobSet::empty())),
    };
    let ((targets, target_set), (ignore, ignore_set)) = (targets?, ignore?);
    let selected = tensors
        .iter()
        .filter(|t| target_set.is_match(&t.name) && !ignore_set.is_match(&t.name))
        .collect();
    Some((targets, ignore, selected))
}

pub(super) fn prune(block: &ast::Block, env: &Env, errors: &mut Errors) -> Option<PruneSpec> {
    let keys = [
        "from",
        "method",
        "sparsity",
        "threshold",
        "scope",
        "pattern",
        "targets",
        "ignore",
        "steps",
        "finetune",
    ];
    let s = Settings::new(block, &keys, errors);
    let from = s
        .require("from", "tuned", errors)
        .and_then(|v| env.reference("from", v, &[Type::Weights], errors));
    let method = match s.get("method") {
        Some(v) => {
            value::word_option("method", v, &["magnitude"], errors).map(|_| PruneMethod::Magnitude)
        }
        None => Some(PruneMethod::Magnitude),
    };
    let pattern = s.get("pattern").map_or(Some(Pattern::Unstructured), |v| pattern(v, errors));
    let amount = amount(&s, pattern, errors);
    let scope = match s.get("scope") {
        Some(v) => value::word_option("scope", v, &["global", "layer"], errors).map(|w| {
            if w == "layer" {
                Scope::Layer
            } else {
                Scope::Global
            }
        }),
        None => Some(Scope::Global),
    };
    let steps = s.get("steps").map_or(Some(1), |v| value::count("steps", v, 1, errors));
    let from = from?;
    let finetune = match s.get("finetune") {
        Some(v) => Some(super::train::finetune(v, Some(from), env, errors)?),
        None => None,
    };
    if let (Some(_), None, Some(v)) = (&finetune, env.arch(from), s.get("finetune")) {
        errors.push(CheckError::NoArchitecture {
            span: v.span,
            name: from.to_string(),
            help: "retraining runs the model: give the `load` block a `model`".into(),
        });
        return None;
    }
    let tensors = env.tensors(from);
    let (targets, ignore, selected) = selection(&s, from, &tensors, errors)?;
    let pattern = pattern?;
    let at = s.get("pattern").or(s.get("targets")).map_or(block.name.span, |v| v.span);
    match pattern {
        Pattern::NOfM { m, .. } => {
            for t in selected.iter().filter(|t| t.shape.len() >= 2) {
                let row: usize = t.shape[1..].iter().product();
                if !row.is_multiple_of(m) {
                    errors.push(CheckError::SchemeMismatch {
                        span: at,
                        tensor: t.name.clone(),
                        scheme: format!("n_of_m(_, {m})"),
                        reason: format!(
                            "`{}` has rows of {row} values, not a multiple of {m}",
                            t.name
                        ),
                        help: format!("leave it out with `ignore = [\"{}\"]`", t.name),
                    });
                }
            }
        }
        Pattern::Channels => {
            let Some(arch) = env.arch(from) else {
                errors.push(CheckError::NoArchitecture {
                    span: at,
                    name: from.to_string(),
                    help: "channel pruning changes the layers: give the `load` block a `model`"
                        .into(),
                });
                return None;
            };
            check_channels(arch, &selected, at, errors)?;
        }
        Pattern::Unstructured => {}
    }
    Some(PruneSpec {
        from: from.to_string(),
        method: method.unwrap_or(PruneMethod::Magnitude),
        amount: amount.unwrap_or(PruneAmount::Sparsity(0.0)),
        scope: scope.unwrap_or(Scope::Global),
        pattern,
        targets,
        ignore,
        steps: steps.unwrap_or(1),
        finetune,
    })
}

/// How much to prune: a share or a threshold, or the share an `n_of_m`
/// pattern implies.
fn amount(s: &Settings, pattern: Option<Pattern>, errors: &mut Errors) -> Option<PruneAmount> {
    let (sparsity, threshold) = (s.get("sparsity"), s.get("threshold"));
    if let (Some(sp), Some(th)) = (sparsity, threshold) {
        errors.push(CheckError::Conflict {
            span: th.span,
            first: sp.span,
            a: "sparsity".into(),
            b: "threshold".into(),
            help: "prune to a share of zeros with `sparsity`, or below a magnitude with \
                   `threshold`, not both"
                .into(),
        });
        return None;
    }
    let not_with = |key: &str, v: &Value, pattern: &str, help: &str| CheckError::NotWithPattern {
        span: v.span,
        key: key.to_string(),
        pattern: pattern.to_string(),
        help: help.to_string(),
    };
    match (pattern?, sparsity, threshold) {
        (Pattern::NOfM { n, m }, given, other) => {
            if let Some(v) = given.or(other) {
                let key = if given.is_some() { "sparsity" } else { "threshold" };
                let help =
                    format!("`n_of_m({n}, {m})` zeros {} of {m} in every group itself", m - n);
                errors.push(not_with(key, v, &format!("n_of_m({n}, {m})"), &help));
                return None;
            }
            Some(PruneAmount::Sparsity(1.0 - n as f64 / m as f64))
        }
        (Pattern::Channels, None, Some(v)) => {
            let help = "channel pruning removes a share of channels: give it as `sparsity`";
            errors.push(not_with("threshold", v, "channels", help));
            None
        }
        (_, Some(v), None) => value::number_where(
            "sparsity",
            v,
            |x| (0.0..1.0).contains(&x),
            "at least 0 and below 1 (0% to under 100%)",
            errors,
        )
        .map(PruneAmount::Sparsity),
        (_, None, Some(v)) => {
            value::non_negative("threshold", v, errors).map(PruneAmount::Threshold)
        }
        // Both given was reported above.
        (_, Some(_), Some(_)) => None,
        (_, None, None) => {
            s.require("sparsity", "80%", errors);
            None
        }
    }
}

/// Channel pruning needs, for each pruned layer, a following layer whose
/// inputs shrink with it; layers without one (the last, whose outputs are
/// the classes) are left alone, and a selection of only such layers is an
/// error.
fn check_channels(
    arch: &Arch,
    selected: &[&TensorInfo],
    at: crate::span::Span,
    errors: &mut Errors,
) -> Option<()> {
    let mut prunable = 0;
    let mut last_problem = None;
    for t in selected.iter().filter(|t| t.name.ends_with(".weight")) {
        let layer = t.name.trim_end_matches(".weight").parse::<usize>().ok();
        match layer.map(|l| crate::nn::channels::successor(arch, l)) {
            Some(Ok(_)) => prunable += 1,
            Some(Err(reason)) => last_problem = Some((t.name.clone(), reason)),
            None => last_problem = Some((t.name.clone(), "not a layer's weight".to_string())),
        }
    }
    if prunable > 0 {
        return Some(());
    }
    let (tensor, reason) = last_problem
        .unwrap_or_else(|| ("(none)".to_string(), "no layer weight is selected".to_string()));
    errors.push(CheckError::Channels {
        span: at,
        tensor,
        reason,
        help: "select hidden layers, whose outputs feed another layer, with `targets`".into(),
    });
    None
}

fn pattern(v: &Value, errors: &mut Errors) -> Option<Pattern> {
    let call = value::callish("pattern", v, "pattern = n_of_m(2, 4)", errors)?;
    let kinds = ["unstructured", "n_of_m", "channels"];
    match value::option("pattern", call.name, call.name_span, &kinds, errors)? {
        "unstructured" => value::bind(&call, &[], errors).map(|_| Pattern::Unstructured),
        "channels" => value::bind(&call, &[], errors).map(|_| Pattern::Channels),
        _ => {
            let params = ["n", "m"];
            let args = value::bind(&call, &params, errors)?;
            let (Some(n), Some(m)) = (args[0], args[1]) else {
                let missing = if args[0].is_none() { "n" } else { "m" };
                errors.push(value::missing_arg(&call, &params, missing));
                return None;
            };
            let (n_val, m_val) =
                (value::count("n", n, 1, errors)?, value::count("m", m, 2, errors)?);
            if n_val >= m_val {
                errors.push(value::out_of_range("n", n, &format!("below m ({m_val})")));
                return None;
            }
            Some(Pattern::NOfM { n: n_val, m: m_val })
        }
    }
}

const SCHEMES: [&str; 6] = ["int8", "int4", "q8_0", "q4_0", "q4_k", "q6_k"];

pub(super) fn quantize(block: &ast::Block, env: &Env, errors: &mut Errors) -> Option<QuantSpec> {
    let keys = [
        "from",
        "scheme",
        "granularity",
        "symmetric",
        "targets",
        "ignore",
        "finetune",
        "tolerance",
    ];
    let s = Settings::new(block, &keys, errors);
    let from = s
        .require("from", "sparse", errors)
        .and_then(|v| env.reference("from", v, &[Type::Weights], errors));
    let scheme_value = s.require("scheme", "int8", errors);
    let scheme = scheme_value.and_then(|v| {
        Some(match value::word_option("scheme", v, &SCHEMES, errors)? {
            "int8" => QuantScheme::Int8,
            "int4" => QuantScheme::Int4,
            "q8_0" => QuantScheme::Q8_0,
            "q4_0" => QuantScheme::Q4_0,
            "q4_k" => QuantScheme::Q4K,
            _ => QuantScheme::Q6K,
        })
    });
    let granularity = match s.get("granularity") {
        Some(v) => granularity(v, errors),
        None => Some(Granularity::PerChannel),
    };
    let symmetric =
        s.get("symmetric").map_or(Some(true), |v| value::boolean("symmetric", v, errors));
    let tolerance = match s.get("tolerance") {
        Some(v) => Some(value::fraction("tolerance", v, errors)?),
        None => None,
    };
    let from = from?;
    let finetune = match s.get("finetune") {
        Some(v) => Some(super::train::finetune(v, Some(from), env, errors)?),
        None => None,
    };
    for key in ["finetune", "tolerance"] {
        if let (None, Some(v)) = (env.arch(from), s.get(key)) {
            errors.push(CheckError::NoArchitecture {
                span: v.span,
                name: from.to_string(),
                help: format!("`{key}` runs the model: give the `load` block a `model`"),
            });
            return None;
        }
    }

    // The tolerance is measured on the validation split of the data the
    // retraining uses, or else of the data that trained the input.
    let calibration = match (tolerance, s.get("tolerance")) {
        (Some(_), Some(v)) => {
            let data = finetune.as_ref().map(|f| &f.data).or_else(|| env.train_data(from));
            let Some(data) = data else {
                errors.push(value::wrong_type(
                    "tolerance",
                    v,
                    "a tolerance with data to measure it on",
                    "finetune = train(epochs = 1, data = digits)",
                ));
                return None;
            };
            let data = DataRef { block: data.block.clone(), split: Split::Val };
            env.require_samples(&data, v, errors)?;
            Some(data)
        }
        _ => None,
    };
    let tensors = env.tensors(from);
    let (targets, ignore, selected) = selection(&s, from, &tensors, errors)?;
    let scheme = scheme?;
    // Vectors (biases) are never quantized, whatever the globs say.
    let selected: Vec<&TensorInfo> = selected.into_iter().filter(|t| t.shape.len() >= 2).collect();

    // The GGML formats fix their own blocks, scales and offsets.
    if scheme.ggml_block().is_some() {
        for key in ["granularity", "symmetric"] {
            if let Some(v) = s.get(key) {
                errors.push(CheckError::NotWithScheme {
                    span: v.span,
                    key: key.into(),
                    scheme: scheme.name().into(),
                    help: format!(
                        "`{}` stores blocks of {} values, each with its own scale; leave \
                         `{key}` out",
                        scheme.name(),
                        scheme.ggml_block().unwrap_or(0)
                    ),
                });
            }
        }
    }

    // Groups split rows; a row that is not a whole number of groups cannot.
    if let (None, Some(Granularity::Group(g)), Some(at)) =
        (scheme.ggml_block(), granularity, s.get("granularity"))
    {
        for t in &selected {
            let row: usize = t.shape.iter().skip(1).product();
            if !row.is_multiple_of(g) {
                errors.push(CheckError::SchemeMismatch {
                    span: at.span,
                    tensor: t.name.clone(),
                    scheme: format!("group({g})"),
                    reason: format!("`{}` has rows of {row} values, not a multiple of {g}", t.name),
                    help: format!(
                        "choose a group size that divides {row}, or leave `{}` out with \
                         `ignore`",
                        t.name
                    ),
                });
            }
        }
    }

    // GGML formats quantize rows in fixed blocks; a row that is not a whole
    // number of blocks cannot be stored.
    if let (Some(block_len), Some(at)) = (scheme.ggml_block(), scheme_value) {
        for t in selected {
            let row: usize = t.shape.iter().skip(1).product();
            if !row.is_multiple_of(block_len) {
                errors.push(CheckError::SchemeMismatch {
                    span: at.span,
                    tensor: t.name.clone(),
                    scheme: scheme.name().to_string(),
                    reason: format!(
                        "`{}` has rows of {row} values, not a multiple of {block_len}",
                        t.name
                    ),
                    help: format!(
                        "leave it out with `ignore = [\"{}\"]`, or use a scheme with smaller \
                         blocks",
                        t.name
                    ),
                });
            }
        }
    }
    Some(QuantSpec {
        from: from.to_string(),
        scheme,
        granularity: granularity.unwrap_or(Granularity::PerChannel),
        symmetric: symmetric.unwrap_or(true),
        targets,
        ignore,
        finetune,
        tolerance,
        calibration,
    })
}

fn granularity(v: &Value, errors: &mut Errors) -> Option<Granularity> {
    let call = value::callish("granularity", v, "granularity = per_channel", errors)?;
    let kinds = ["per_tensor", "per_channel", "group"];
    match value::option("granularity", call.name, call.name_span, &kinds, errors)? {
        "per_tensor" => value::bind(&call, &[], errors).map(|_| Granularity::PerTensor),
        "per_channel" => value::bind(&call, &[], errors).map(|_| Granularity::PerChannel),
        _ => {
            let args = value::bind(&call, &["size"], errors)?;
            let Some(size) = args[0] else {
                errors.push(value::missing_arg(&call, &["size"], "size"));
                return None;
            };
            value::count("size", size, 1, errors).map(Granularity::Group)
        }
    }
}

pub(super) fn save(block: &ast::Block, env: &Env, errors: &mut Errors) -> Option<SaveSpec> {
    let s = Settings::new(block, &["from", "path", "format", "shard_size"], errors);
    let from = s
        .require("from", "small", errors)
        .and_then(|v| env.reference("from", v, &[Type::Weights], errors));
    let path_value = s.require("path", "\"out/model.safetensors\"", errors);
    let path = path_value.and_then(|v| value::string("path", v, errors));
    let format = match s.get("format") {
        Some(v) => value::word_option("format", v, &["dense", "sparse"], errors).map(|w| {
            if w == "sparse" {
                SaveFormat::Sparse
            } else {
                SaveFormat::Dense
            }
        }),
        None => Some(SaveFormat::Dense),
    };
    let shard_size = match s.get("shard_size") {
        None => Some(None),
        Some(v) => shard_size(v, errors).map(Some),
    };
    let (from, path, path_value, shard_size) = (from?, path?, path_value?, shard_size?);
    let gguf = path.ends_with(".gguf");
    if let (Some(_), true, Some(v)) = (shard_size, gguf, s.get("shard_size")) {
        errors.push(CheckError::GgufShards { span: v.span });
        return None;
    }
    if !gguf && !path.ends_with(".safetensors") {
        errors.push(value::wrong_type(
            "path",
            path_value,
            "a `.safetensors` or `.gguf` file",
            "\"out/model.safetensors\"",
        ));
        return None;
    }
    env.out.check(Path::new(path), path_value.span, errors)?;
    if let (false, Some(Spec::Quantize(q))) = (gguf, env.spec(from)) {
        if q.scheme.ggml_block().is_some() {
            errors.push(CheckError::GgmlFile {
                span: path_value.span,
                name: from.to_string(),
                scheme: q.scheme.name().to_string(),
            });
            return None;
        }
    }
    if gguf && !ggml_scheme(env, from) {
        errors.push(CheckError::WrongReference {
            span: path_value.span,
            key: "path".into(),
            name: from.to_string(),
            expected: "weights in a GGML format for a `.gguf` file".into(),
            found: "not quantized to a GGML format".into(),
            help: "quantize with `scheme = q8_0`, `q4_0`, `q4_k` or `q6_k` first, or save as \
                   `.safetensors`"
                .into(),
        });
        return None;
    }
    Some(SaveSpec {
        from: from.to_string(),
        path: path.into(),
        format: format.unwrap_or(SaveFormat::Dense),
        shard_size,
    })
}

/// A shard size: a number of bytes, or a string with a unit (`"2GB"`, `"500MiB"`).
fn shard_size(v: &Value, errors: &mut Errors) -> Option<u64> {
    let bytes = match &v.kind {
        ValueKind::Int(_) => value::count("shard_size", v, 1, errors).map(|n| n as u64),
        ValueKind::Str(text) => crate::check::memory::parse_size(text).filter(|&n| n > 0),
        _ => None,
    };
    if bytes.is_none() && !matches!(v.kind, ValueKind::Int(_)) {
        errors.push(value::wrong_type("shard_size", v, "a size in bytes", "shard_size = \"2GB\""));
    }
    bytes
}

/// Whether a block's weights come out of a GGML quantization.
fn ggml_scheme(env: &Env, name: &str) -> bool {
    match env.spec(name) {
        Some(Spec::Quantize(q)) => q.scheme.ggml_block().is_some(),
        _ => false,
    }
}

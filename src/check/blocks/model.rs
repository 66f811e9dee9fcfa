//! `model` blocks: the layer list, with the shape of a sample inferred
//! through every layer from the input dataset.

use crate::check::error::CheckError;
use crate::check::refs::{Env, Type};
use crate::check::spec::{Arch, Layer, ModelSpec, Spec};
use crate::check::value::{self, Errors, Settings};
use crate::span::Span;
use crate::syntax::ast::{self, Value, ValueKind};

const LAYERS: [&str; 10] = [
    "linear", "conv2d", "maxpool", "flatten", "reshape", "dropout", "relu", "gelu", "tanh",
    "sigmoid",
];

pub(super) fn model(block: &ast::Block, env: &Env, errors: &mut Errors) -> Option<ModelSpec> {
    let s = Settings::new(block, &["input", "layers"], errors);
    let input = s
        .require("input", "digits", errors)
        .and_then(|v| env.reference("input", v, &[Type::Dataset], errors));
    let layers_value = s.require("layers", "[linear(128), relu, linear(10)]", errors);
    let layers = layers_value.and_then(|v| layers(v, errors));
    let (input, layers, layers_value) = (input?, layers?, layers_value?);
    let Some(Spec::Data(data)) = env.spec(input) else { return None };

    let arch = infer(&data.shape.features, layers, errors)?;
    if arch.output() != [data.shape.classes] {
        let span = match &layers_value.kind {
            ValueKind::List(items) if !items.is_empty() => items[items.len() - 1].span,
            _ => layers_value.span,
        };
        errors.push(CheckError::OutputMismatch {
            span,
            name: block.name.name.clone(),
            shape: shape_text(arch.output()),
            data: input.to_string(),
            classes: data.shape.classes,
        });
        return None;
    }
    Some(ModelSpec { input: input.to_string(), layers: arch.layers.clone(), arch })
}

/// A layer with the span it was written at.
struct Written {
    layer: Layer,
    span: Span,
    text: String,
}

fn layers(v: &Value, errors: &mut Errors) -> Option<Vec<Written>> {
    let ValueKind::List(items) = &v.kind else {
        errors.push(value::wrong_type("layers", v, "a list of layers", "[linear(10)]"));
        return None;
    };
    if items.is_empty() {
        errors.push(value::out_of_range("layers", v, "a list of at least one layer"));
        return None;
    }
    let before = errors.0.len();
    let layers: Vec<Written> = items.iter().filter_map(|item| layer(item, errors)).collect();
    (errors.0.len() == before).then_some(layers)
}

fn layer(v: &Value, errors: &mut Errors) -> Option<Written> {
    let call = value::callish("layers", v, "linear(10)", errors)?;
    let kind = value::option("layer", call.name, call.name_span, &LAYERS, errors)?;
    let int =
        |arg: Option<&Value>, name: &str, default: Option<usize>, min, errors: &mut Errors| match (
            arg, default,
        ) {
            (Some(v), _) => value::count(name, v, min, errors),
            (None, Some(d)) => Some(d),
            (None, None) => None,
        };
    let layer = match kind {
        "linear" => {
            let args = value::bind(&call, &["out"], errors)?;
            let Some(out) = int(args[0], "out", None, 1, errors) else {
                if args[0].is_none() {
                    errors.push(value::missing_arg(&call, &["out"], "out"));
                }
                return None;
            };
            Layer::Linear { out }
        }
        "conv2d" => {
            let params = ["out", "kernel", "stride", "padding"];
            let args = value::bind(&call, &params, errors)?;
            for (i, name) in params[..2].iter().enumerate() {
                if args[i].is_none() {
                    errors.push(value::missing_arg(&call, &params, name));
                    return None;
                }
            }
            let out = int(args[0], "out", None, 1, errors);
            let kernel = int(args[1], "kernel", None, 1, errors);
            let stride = int(args[2], "stride", Some(1), 1, errors);
            let padding = int(args[3], "padding", Some(0), 0, errors);
            Layer::Conv2d { out: out?, kernel: kernel?, stride: stride?, padding: padding? }
        }
        "maxpool" => {
            let args = value::bind(&call, &["k"], errors)?;
            let Some(k) = int(args[0], "k", None, 1, errors) else {
                if args[0].is_none() {
                    errors.push(value::missing_arg(&call, &["k"], "k"));
                }
                return None;
            };
            Layer::MaxPool { k }
        }
        "reshape" => {
            if !call.named.is_empty() {
                value::bind(&call, &[], errors);
                return None;
            }
            if call.args.is_empty() {
                errors.push(value::missing_arg(&call, &["dims..."], "dims"));
                return None;
            }
            let dims: Option<Vec<usize>> =
                call.args.iter().map(|a| value::count("reshape", a, 1, errors)).collect();
            Layer::Reshape { shape: dims? }
        }
        "dropout" => {
            let args = value::bind(&call, &["p"], errors)?;
            let p = match args[0] {
                Some(v) => {
                    value::number_where("p", v, |p| (0.0..1.0).contains(&p), "in [0, 1)", errors)?
                }
                None => 0.5,
            };
            Layer::Dropout { p }
        }
        simple => {
            value::bind(&call, &[], errors)?;
            match simple {
                "flatten" => Layer::Flatten,
                "relu" => Layer::Relu,
                "gelu" => Layer::Gelu,
                "tanh" => Layer::Tanh,
                _ => Layer::Sigmoid,
            }
        }
    };
    Some(Written { layer, span: v.span, text: call.name.to_string() })
}

pub(crate) fn shape_text(shape: &[usize]) -> String {
    format!("[{}]", shape.iter().map(usize::to_string).collect::<Vec<_>>().join(", "))
}

/// Infer the shape after each layer; report the first layer that does not
/// fit its input.
fn infer(input: &[usize], layers: Vec<Written>, errors: &mut Errors) -> Option<Arch> {
    let plain: Vec<Layer> = layers.iter().map(|w| w.layer.clone()).collect();
    match Arch::new(input.to_vec(), plain) {
        Ok(arch) => Some(arch),
        Err(e) => {
            let w = &layers[e.index];
            errors.push(CheckError::ShapeMismatch {
                span: w.span,
                index: e.index,
                layer: w.text.clone(),
                input: shape_text(&e.input),
                reason: e.reason,
                help: e.help.to_string(),
            });
            None
        }
    }
}

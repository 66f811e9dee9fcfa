//! One checker per block kind: settings schema, defaults, ranges and the
//! typed references of each kind.

mod data;
mod eval;
mod model;
mod train;

#[cfg(test)]
pub(crate) use train::default_settings;
mod weights;

use super::refs::Env;
use super::spec::{Device, RecipeSettings, Spec};
use super::value::{self, Errors, Settings};
use crate::syntax::ast;

/// Check one block whose inputs are already checked.
pub(crate) fn block(block: &ast::Block, env: &Env, errors: &mut Errors) -> Option<Spec> {
    match block.kind.name.as_str() {
        "data" => data::data(block, env, errors).map(Spec::Data),
        "model" => model::model(block, env, errors).map(Spec::Model),
        "load" => weights::load(block, env, errors).map(Spec::Load),
        "train" => train::train(block, env, errors).map(Spec::Train),
        "search" => train::search(block, env, errors).map(Spec::Search),
        "prune" => weights::prune(block, env, errors).map(Spec::Prune),
        "quantize" => weights::quantize(block, env, errors).map(Spec::Quantize),
        "eval" => eval::eval(block, env, errors).map(Spec::Eval),
        "save" => weights::save(block, env, errors).map(Spec::Save),
        kind => unreachable!("unknown kinds are removed before blocks are checked: {kind}"),
    }
}

/// The settings of the `recipe` block, or the defaults without one.
pub(crate) fn recipe(
    block: Option<&ast::Block>,
    default_name: &str,
    errors: &mut Errors,
) -> Option<RecipeSettings> {
    let Some(block) = block else {
        return Some(RecipeSettings {
            name: default_name.to_string(),
            seed: 0,
            device: Device::Cpu,
        });
    };
    let s = Settings::new(block, &["seed", "device"], errors);
    let seed = match s.get("seed") {
        Some(v) => value::count("seed", v, 0, errors).map(|n| n as u64),
        None => Some(0),
    };
    let device = match s.get("device") {
        Some(v) => device(v, errors),
        None => Some(Device::Cpu),
    };
    Some(RecipeSettings { name: block.name.name.clone(), seed: seed?, device: device? })
}

/// `cpu`, `cuda` or `cuda(N)`.
pub(crate) fn device(v: &ast::Value, errors: &mut Errors) -> Option<Device> {
    let call = value::callish("device", v, "device = cpu", errors)?;
    match value::option("device", call.name, call.name_span, &["cpu", "cuda"], errors)? {
        "cpu" => {
            value::bind(&call, &[], errors)?;
            Some(Device::Cpu)
        }
        _ => {
            let args = value::bind(&call, &["index"], errors)?;
            match args[0] {
                Some(v) => value::count("index", v, 0, errors).map(Device::Cuda),
                None => Some(Device::Cuda(0)),
            }
        }
    }
}

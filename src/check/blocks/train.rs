//! `train` and `search` blocks, and the training settings they share with
//! `finetune = train(...)`.

use crate::check::error::CheckError;
use crate::check::refs::{Env, Type};
use crate::check::spec::{
    Dimension, Distribution, Finetune, Init, Loss, Metric, Objective, Optimizer, Scalar, Schedule,
    SearchSpec, Spec, Split, Stop, Strategy, TrainSettings, TrainSpec,
};
use crate::check::value::{self, Callish, Errors, Settings};
use crate::syntax::ast::{self, Ident, Value, ValueKind};

/// The settings every training run has, and what `finetune` may override.
const SETTINGS: [&str; 6] = ["optimizer", "loss", "epochs", "batch", "schedule", "stop"];
const OPTIMIZERS: [&str; 4] = ["sgd", "adam", "adamw", "random_search"];

/// The keys of a `train` block.
pub(crate) fn train_settings_schema() -> Vec<&'static str> {
    let mut keys = vec!["model", "data"];
    keys.extend(SETTINGS);
    keys
}

/// Training settings when a recipe gives none.
pub(crate) fn default_settings() -> TrainSettings {
    TrainSettings {
        optimizer: Optimizer::Adam {
            lr: 1e-3,
            beta1: 0.9,
            beta2: 0.999,
            eps: 1e-8,
            weight_decay: 0.0,
        },
        loss: Loss::CrossEntropy,
        epochs: 10,
        batch: 32,
        schedule: Schedule::Constant,
        stop: None,
    }
}

pub(super) fn train(block: &ast::Block, env: &Env, errors: &mut Errors) -> Option<TrainSpec> {
    let s = Settings::new(block, &train_settings_schema(), errors);
    let init = s.require("model", "net", errors).and_then(|v| {
        let name = env.reference("model", v, &[Type::Architecture, Type::Weights], errors)?;
        match env.spec(name) {
            Some(Spec::Model(_)) => Some(Init::Model(name.to_string())),
            _ => Some(Init::Weights(name.to_string())),
        }
    });
    let data = s
        .require("data", "digits", errors)
        .and_then(|v| env.data_ref("data", v, Split::Train, errors));
    let settings = settings(&s, &default_settings(), errors).unwrap_or_else(default_settings);
    let (init, data) = (init?, data?);

    let (Init::Model(source) | Init::Weights(source)) = &init;
    let Some(arch) = env.arch(source).cloned() else {
        errors.push(CheckError::NoArchitecture {
            span: s.get("model").map_or(block.name.span, |v| v.span),
            name: source.clone(),
            help: "training needs an architecture: give the `load` block a `model`".into(),
        });
        return None;
    };
    check_fits(&arch, &data.block, s.get("data"), env, errors)?;
    if let Some(at) = s.get("data") {
        env.require_samples(&data, at, errors)?;
    }
    Some(TrainSpec { init, data, arch, settings })
}

/// Report a dataset whose samples do not have the shape the architecture
/// takes, or more classes than it scores.
pub(crate) fn check_fits(
    arch: &crate::check::spec::Arch,
    data: &str,
    at: Option<&Value>,
    env: &Env,
    errors: &mut Errors,
) -> Option<()> {
    let Some(Spec::Data(d)) = env.spec(data) else { return None };
    if d.shape.features != arch.input || arch.output() != [d.shape.classes] {
        let span = at.map(|v| v.span).unwrap_or_default();
        errors.push(CheckError::WrongReference {
            span,
            key: "data".into(),
            name: data.to_string(),
            expected: format!(
                "samples of shape {} in {} classes",
                super::model::shape_text(&arch.input),
                arch.output().first().copied().unwrap_or(0)
            ),
            found: format!(
                "samples of shape {} in {} classes",
                super::model::shape_text(&d.shape.features),
                d.shape.classes
            ),
            help: "use the dataset the model was built for".into(),
        });
        return None;
    }
    Some(())
}

/// Training settings from `s`, each missing one taken from `base`.
pub(crate) fn settings(
    s: &Settings,
    base: &TrainSettings,
    errors: &mut Errors,
) -> Option<TrainSettings> {
    let optimizer =
        s.get("optimizer").map_or(Some(base.optimizer.clone()), |v| optimizer(v, errors));
    let loss = match s.get("loss") {
        Some(v) => value::word_option("loss", v, &["cross_entropy", "mse"], errors).map(|w| {
            if w == "mse" {
                Loss::Mse
            } else {
                Loss::CrossEntropy
            }
        }),
        None => Some(base.loss),
    };
    let epochs =
        s.get("epochs").map_or(Some(base.epochs), |v| value::count("epochs", v, 1, errors));
    let batch = s.get("batch").map_or(Some(base.batch), |v| value::count("batch", v, 1, errors));
    let schedule = s.get("schedule").map_or(Some(base.schedule.clone()), |v| schedule(v, errors));
    let stop = match s.get("stop") {
        Some(v) => stop(v, errors).map(Some),
        None => Some(base.stop.clone()),
    };
    Some(TrainSettings {
        optimizer: optimizer?,
        loss: loss?,
        epochs: epochs?,
        batch: batch?,
        schedule: schedule?,
        stop: stop?,
    })
}

/// The parameters of each optimizer, in positional order.
fn optimizer_params(name: &str) -> &'static [&'static str] {
    match name {
        "sgd" => &["lr", "momentum", "weight_decay", "nesterov"],
        "adam" | "adamw" => &["lr", "beta1", "beta2", "eps", "weight_decay"],
        _ => &["sigma"],
    }
}

fn optimizer(v: &Value, errors: &mut Errors) -> Option<Optimizer> {
    let call = value::callish("optimizer", v, "optimizer = sgd(lr = 0.1)", errors)?;
    let kind = value::option("optimizer", call.name, call.name_span, &OPTIMIZERS, errors)?;
    let params = optimizer_params(kind);
    let args = value::bind(&call, params, errors)?;
    let arg = |i: usize, default: f64, errors: &mut Errors| -> Option<f64> {
        match args[i] {
            Some(v) => param(params[i], v, errors),
            None => Some(default),
        }
    };
    match kind {
        "sgd" => {
            let lr = arg(0, 0.01, errors);
            let momentum = arg(1, 0.0, errors);
            let weight_decay = arg(2, 0.0, errors);
            let nesterov = args[3].map_or(Some(false), |v| value::boolean("nesterov", v, errors));
            Some(Optimizer::Sgd {
                lr: lr?,
                momentum: momentum?,
                weight_decay: weight_decay?,
                nesterov: nesterov?,
            })
        }
        "adam" | "adamw" => {
            let decoupled = kind == "adamw";
            let lr = arg(0, 1e-3, errors);
            let beta1 = arg(1, 0.9, errors);
            let beta2 = arg(2, 0.999, errors);
            let eps = arg(3, 1e-8, errors);
            let weight_decay = arg(4, if decoupled { 0.01 } else { 0.0 }, errors);
            let (lr, beta1, beta2, eps, weight_decay) = (lr?, beta1?, beta2?, eps?, weight_decay?);
            Some(if decoupled {
                Optimizer::AdamW { lr, beta1, beta2, eps, weight_decay }
            } else {
                Optimizer::Adam { lr, beta1, beta2, eps, weight_decay }
            })
        }
        _ => Some(Optimizer::RandomSearch { sigma: arg(0, 0.01, errors)? }),
    }
}

/// The range of a numeric training parameter, by name.
#[derive(Clone, Copy)]
enum Range {
    Positive,
    /// `[0, 1)`: momentum and betas.
    Unit,
    NonNegative,
    /// `(0, 1]`: the decay factor of a step schedule.
    Factor,
    /// An integer of at least this.
    Count(i64),
}

fn range_of(name: &str) -> Range {
    match name {
        "momentum" | "beta1" | "beta2" => Range::Unit,
        "weight_decay" => Range::NonNegative,
        "gamma" => Range::Factor,
        "every" | "epochs" | "batch" => Range::Count(1),
        _ => Range::Positive,
    }
}

impl Range {
    fn holds(self, x: f64) -> bool {
        match self {
            Range::Positive => x > 0.0,
            Range::Unit => (0.0..1.0).contains(&x),
            Range::NonNegative => x >= 0.0,
            Range::Factor => x > 0.0 && x <= 1.0,
            Range::Count(min) => x.fract() == 0.0 && x >= min as f64,
        }
    }

    fn describe(self) -> String {
        match self {
            Range::Positive => "positive".into(),
            Range::Unit => "at least 0 and below 1".into(),
            Range::NonNegative => "zero or more".into(),
            Range::Factor => "above 0 and at most 1".into(),
            Range::Count(min) => format!("an integer of at least {min}"),
        }
    }
}

fn param(name: &str, v: &Value, errors: &mut Errors) -> Option<f64> {
    let range = range_of(name);
    value::number_where(name, v, |x| range.holds(x), &range.describe(), errors)
}

fn schedule(v: &Value, errors: &mut Errors) -> Option<Schedule> {
    let call = value::callish("schedule", v, "schedule = cosine", errors)?;
    let kinds = ["constant", "cosine", "step"];
    match value::option("schedule", call.name, call.name_span, &kinds, errors)? {
        "constant" => value::bind(&call, &[], errors).map(|_| Schedule::Constant),
        "cosine" => value::bind(&call, &[], errors).map(|_| Schedule::Cosine),
        _ => {
            let args = value::bind(&call, &["every", "gamma"], errors)?;
            let every = args[0].map_or(Some(10), |v| value::count("every", v, 1, errors));
            let gamma = args[1].map_or(Some(0.1), |v| param("gamma", v, errors));
            Some(Schedule::Step { every: every?, gamma: gamma? })
        }
    }
}

fn stop(v: &Value, errors: &mut Errors) -> Option<Stop> {
    let call = value::callish("stop", v, "stop = patience(3)", errors)?;
    value::option("stop rule", call.name, call.name_span, &["patience"], errors)?;
    let args = value::bind(&call, &["epochs"], errors)?;
    let Some(n) = args[0] else {
        errors.push(value::missing_arg(&call, &["epochs"], "epochs"));
        return None;
    };
    Some(Stop::Patience { epochs: value::count("epochs", n, 1, errors)? })
}

/// `finetune = train(epochs = 2, data = digits)` inside prune and quantize:
/// settings default to those that trained the input weights.
pub(crate) fn finetune(
    v: &Value,
    from: Option<&str>,
    env: &Env,
    errors: &mut Errors,
) -> Option<Finetune> {
    let ValueKind::Call(call) = &v.kind else {
        errors.push(value::wrong_type(
            "finetune",
            v,
            "a call of `train`",
            "finetune = train(epochs = 2, data = digits)",
        ));
        return None;
    };
    value::option("finetune", &call.name.name, call.name.span, &["train"], errors)?;
    if let Some(first) = call.args.first() {
        errors.push(CheckError::TooManyArguments {
            span: first.span,
            call: "train".into(),
            max: 0,
            signature: "train(data = ..., epochs = ..., ...) with named settings only".into(),
        });
        return None;
    }
    let mut keys = vec!["data"];
    keys.extend(SETTINGS);
    let pairs = call.named.iter().map(|(k, v): &(Ident, Value)| (k, v));
    let s = Settings::from_pairs("train", &call.name, pairs, &keys, errors);
    let data = s.require("data", "digits", errors).and_then(|v| {
        let data = env.data_ref("data", v, Split::Train, errors)?;
        env.require_samples(&data, v, errors)?;
        Some(data)
    });
    let base = from.and_then(|f| env.train_settings(f)).cloned().unwrap_or_else(default_settings);
    let settings = settings(&s, &base, errors).unwrap_or(base);
    Some(Finetune { data: data?, settings })
}

// ---------------------------------------------------------------------------
// search

const STRATEGIES: [&str; 3] = ["random", "grid", "halving"];

pub(super) fn search(block: &ast::Block, env: &Env, errors: &mut Errors) -> Option<SearchSpec> {
    let keys = ["train", "strategy", "trials", "objective", "space"];
    let s = Settings::new(block, &keys, errors);
    let train_block = s.require("train", "base", errors).and_then(|v| {
        let name = env.reference("train", v, &[Type::Weights], errors)?;
        if !matches!(env.spec(name), Some(Spec::Train(_))) {
            let kind = env.declared(name).map_or("other", |b| b.kind.name.as_str());
            errors.push(CheckError::WrongReference {
                span: v.span,
                key: "train".into(),
                name: name.to_string(),
                expected: "a train block".into(),
                found: format!("a `{kind}` block"),
                help: "a search varies the settings of one `train` block".into(),
            });
            return None;
        }
        Some(name)
    });
    let strategy = s.get("strategy").map_or(Some(Strategy::Random), |v| strategy(v, errors));
    let trials = s.get("trials").map(|v| (value::count("trials", v, 1, errors), v));
    let default_objective = Objective { maximize: true, metric: Metric::Accuracy };
    let objective = match s.get("objective") {
        Some(v) => objective(v, errors).unwrap_or(default_objective),
        None => default_objective,
    };
    let space_value = s.require("space", "{ optimizer.lr = loguniform(1e-3, 1.0) }", errors);
    let (train_block, strategy, space_value) = (train_block?, strategy?, space_value?);
    let Some(Spec::Train(train)) = env.spec(train_block) else { return None };

    let space = space(space_value, train_block, train, strategy, errors)?;
    let trials = match (trials, strategy) {
        (Some((n, _)), _) => n.unwrap_or(1),
        (None, Strategy::Grid) => {
            space.iter().map(|d| grid_size(&d.dist)).fold(1, usize::saturating_mul)
        }
        (None, _) => 16,
    };
    Some(SearchSpec {
        train_block: train_block.to_string(),
        train: train.clone(),
        strategy,
        trials,
        objective,
        space,
    })
}

fn strategy(v: &Value, errors: &mut Errors) -> Option<Strategy> {
    let call = value::callish("strategy", v, "strategy = random", errors)?;
    match value::option("strategy", call.name, call.name_span, &STRATEGIES, errors)? {
        "random" => value::bind(&call, &[], errors).map(|_| Strategy::Random),
        "grid" => value::bind(&call, &[], errors).map(|_| Strategy::Grid),
        _ => {
            let args = value::bind(&call, &["eta"], errors)?;
            let eta = args[0].map_or(Some(3), |v| value::count("eta", v, 2, errors))?;
            Some(Strategy::Halving { eta })
        }
    }
}

fn objective(v: &Value, errors: &mut Errors) -> Option<Objective> {
    let call = value::callish("objective", v, "objective = maximize(accuracy)", errors)?;
    let dir =
        value::option("objective", call.name, call.name_span, &["maximize", "minimize"], errors)?;
    let args = value::bind(&call, &["metric"], errors)?;
    let Some(metric) = args[0] else {
        errors.push(value::missing_arg(&call, &["metric"], "metric"));
        return None;
    };
    let metric = match value::word_option("metric", metric, &["accuracy", "loss"], errors)? {
        "accuracy" => Metric::Accuracy,
        _ => Metric::Loss,
    };
    Some(Objective { maximize: dir == "maximize", metric })
}

/// What a setting path of a train block holds.
enum Slot {
    Number(Range),
    Count(i64),
    Words(&'static [&'static str]),
}

/// The settings of `train` that a search can vary, by path.
fn slot(path: &str, train: &TrainSpec) -> Result<Slot, String> {
    let optimizer = match train.settings.optimizer {
        Optimizer::Sgd { .. } => "sgd",
        Optimizer::Adam { .. } => "adam",
        Optimizer::AdamW { .. } => "adamw",
        Optimizer::RandomSearch { .. } => "random_search",
    };
    let (head, arg) = path.split_once('.').unwrap_or((path, ""));
    match (head, arg) {
        ("epochs" | "batch", "") => Ok(Slot::Count(1)),
        ("loss", "") => Ok(Slot::Words(&["cross_entropy", "mse"])),
        ("optimizer", "nesterov") if optimizer == "sgd" => Ok(Slot::Words(&["true", "false"])),
        ("optimizer", arg) if optimizer_params(optimizer).contains(&arg) => {
            Ok(Slot::Number(range_of(arg)))
        }
        ("optimizer", _) => Err(format!(
            "the optimizer `{optimizer}` has {}",
            value::list_words(optimizer_params(optimizer).iter().map(|p| &p[..]))
        )),
        ("schedule", "every") if matches!(train.settings.schedule, Schedule::Step { .. }) => {
            Ok(Slot::Count(1))
        }
        ("schedule", "gamma") if matches!(train.settings.schedule, Schedule::Step { .. }) => {
            Ok(Slot::Number(Range::Factor))
        }
        ("stop", "epochs") if train.settings.stop.is_some() => Ok(Slot::Count(1)),
        _ => Err("searchable settings are `epochs`, `batch`, `loss`, `optimizer.ARG` for the \
                  arguments of the block's optimizer, `schedule.every` and `schedule.gamma` \
                  with a step schedule, and `stop.epochs` with a stop rule"
            .into()),
    }
}

fn space(
    v: &Value,
    train_block: &str,
    train: &TrainSpec,
    strategy: Strategy,
    errors: &mut Errors,
) -> Option<Vec<Dimension>> {
    let ValueKind::Block(settings) = &v.kind else {
        errors.push(value::wrong_type(
            "space",
            v,
            "a block of settings",
            "space { batch = choice(16, 32) }",
        ));
        return None;
    };
    if settings.is_empty() {
        errors.push(value::out_of_range("space", v, "at least one varied setting"));
        return None;
    }
    let before = errors.0.len();
    let mut dims: Vec<Dimension> = Vec::new();
    for s in settings {
        if let Some(first) = dims.iter().position(|d| d.path == s.key.name) {
            errors.push(CheckError::DuplicateKey {
                span: s.key.span,
                first: settings[first].key.span,
                key: s.key.name.clone(),
            });
            continue;
        }
        let slot = match slot(&s.key.name, train) {
            Ok(slot) => slot,
            Err(help) => {
                errors.push(CheckError::BadSpaceKey {
                    span: s.key.span,
                    setting: s.key.name.clone(),
                    train: train_block.to_string(),
                    help,
                });
                continue;
            }
        };
        if let Some(dist) = distribution(&s.key.name, &s.value, &slot, strategy, errors) {
            dims.push(Dimension { path: s.key.name.clone(), dist });
        }
    }
    (errors.0.len() == before).then_some(dims)
}

fn distribution(
    key: &str,
    v: &Value,
    slot: &Slot,
    strategy: Strategy,
    errors: &mut Errors,
) -> Option<Distribution> {
    let call = value::callish(key, v, "loguniform(1e-3, 1.0)", errors)?;
    let kinds = ["uniform", "loguniform", "range", "choice"];
    let kind = value::option("distribution", call.name, call.name_span, &kinds, errors)?;
    if kind == "choice" {
        return choice(key, &call, slot, errors);
    }
    let params: &[&str] =
        if kind == "range" { &["low", "high"] } else { &["low", "high", "points"] };
    let args = value::bind(&call, params, errors)?;
    let (Some(low), Some(high)) = (args[0], args[1]) else {
        let missing = if args[0].is_none() { "low" } else { "high" };
        errors.push(value::missing_arg(&call, params, missing));
        return None;
    };
    if kind == "range" {
        let Slot::Count(min) = slot else {
            errors.push(value::wrong_type(
                key,
                v,
                "a distribution over numbers (`uniform` or `loguniform`)",
                "loguniform(1e-3, 1.0)",
            ));
            return None;
        };
        let lo = value::count("low", low, *min, errors);
        let hi = value::count("high", high, *min, errors);
        let (lo, hi) = (lo? as i64, hi? as i64);
        if hi < lo {
            errors.push(value::out_of_range("high", high, &format!("at least low ({lo})")));
            return None;
        }
        return Some(Distribution::Range { low: lo, high: hi });
    }
    let Slot::Number(range) = slot else {
        let example = format!("{key} = range(1, 10)");
        errors.push(value::wrong_type(key, v, "`range(low, high)` or `choice(...)`", &example));
        return None;
    };
    let lo = param_in(key, low, *range, errors);
    let hi = param_in(key, high, *range, errors);
    let (lo, hi) = (lo?, hi?);
    if kind == "loguniform" && lo <= 0.0 {
        errors.push(value::out_of_range("low", low, "above 0 for a log scale"));
        return None;
    }
    if hi <= lo {
        errors.push(value::out_of_range("high", high, &format!("above low ({lo})")));
        return None;
    }
    let points = match args[2] {
        Some(v) => Some(value::count("points", v, 2, errors)?),
        None if strategy == Strategy::Grid => {
            errors.push(value::missing_arg(&call, params, "points"));
            return None;
        }
        None => None,
    };
    Some(if kind == "uniform" {
        Distribution::Uniform { low: lo, high: hi, points }
    } else {
        Distribution::LogUniform { low: lo, high: hi, points }
    })
}

fn param_in(key: &str, v: &Value, range: Range, errors: &mut Errors) -> Option<f64> {
    let leaf = key.rsplit('.').next().unwrap_or(key);
    value::number_where(leaf, v, |x| range.holds(x), &range.describe(), errors)
}

fn choice(key: &str, call: &Callish, slot: &Slot, errors: &mut Errors) -> Option<Distribution> {
    if !call.named.is_empty() {
        value::bind(call, &[], errors);
        return None;
    }
    if call.args.is_empty() {
        errors.push(value::missing_arg(call, &["values..."], "values"));
        return None;
    }
    let mut values = Vec::new();
    for arg in call.args {
        let scalar = match slot {
            Slot::Count(min) => value::count(key, arg, *min, errors).map(|n| Scalar::Int(n as i64)),
            Slot::Number(range) => param_in(key, arg, *range, errors).map(Scalar::Float),
            Slot::Words(words) => match &arg.kind {
                ValueKind::Bool(b) if words.contains(&"true") => Some(Scalar::Bool(*b)),
                _ => value::word_option(key, arg, words, errors).map(|w| Scalar::Word(w.into())),
            },
        };
        values.push(scalar?);
    }
    Some(Distribution::Choice(values))
}

fn grid_size(dist: &Distribution) -> usize {
    match dist {
        Distribution::Uniform { points, .. } | Distribution::LogUniform { points, .. } => {
            points.unwrap_or(1)
        }
        Distribution::Range { low, high } => {
            usize::try_from(i128::from(*high) - i128::from(*low) + 1).unwrap_or(usize::MAX)
        }
        Distribution::Choice(values) => values.len(),
    }
}

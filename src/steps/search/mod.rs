//! The `search` step: trains one trial per point of a search space over the settings of a
//! `train` block, and hands on the weights of the best trial, with the trial table.
//!
//! - `random` draws trial `i`'s values from the step's seed and `i`; `grid` lays the space
//!   out as a cartesian product; `halving` draws like `random`, then runs successive
//!   halving: every trial trains on a small budget of epochs, and the best `1/eta` of each
//!   rung train again, from the start, on `eta` times the budget, up to the `train` block's
//!   `epochs` in the last rung.
//! - Trials run side by side on `--jobs` threads, or with `--executor slurm` as one Slurm
//!   array job per rung whose tasks (`recipe trial`) each train one trial into the store,
//!   from where the driver reads them. Each trial draws from its own generator (the step's
//!   seed and the trial's number) and results are gathered in trial order, so the table and
//!   the chosen weights depend neither on the number of jobs nor on where the trials ran.
//! - Every finished trial is stored under `.recipe/trials/STEP_HASH/` beside the recipe, keyed
//!   by the trial's number, values and epochs. A search that was
//!   interrupted takes its finished trials from there and trains only the rest.
//! - The objective is measured on the validation split of the trained data; ties go to the
//!   lower trial number.

pub mod report;
pub mod space;

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Instant;

use rayon::prelude::*;

use crate::check::spec::{Metric, SearchSpec, Strategy, TrainSpec};
use crate::exec::slurm::{self, Executor, SlurmOptions};
use crate::exec::{Artifact, Context, Inputs, StepError, WeightsArtifact};
use crate::formats::safetensors::{self, RawTensor};
use crate::nn::Weights;
use crate::rng::Rng;
use report::Trial;
use space::Values;

/// Where finished trials are kept, relative to the recipe's folder.
pub const TRIAL_STORE: &str = ".recipe/trials";

/// Remove what killed searches left half-written in the trial store of `base_dir`: the
/// temporary files (`.NAME.tmp-PID`) of trials that never got their final name. The caller
/// must hold the folder's cache lock, so that no live run is writing them.
pub fn remove_stale_temporaries(base_dir: &Path) {
    let Ok(steps) = std::fs::read_dir(base_dir.join(TRIAL_STORE)) else { return };
    for step in steps.flatten() {
        let Ok(files) = std::fs::read_dir(step.path()) else { continue };
        for file in files.flatten() {
            let name = file.file_name().to_string_lossy().into_owned();
            if name.starts_with('.') && crate::formats::is_leftover(&name) {
                let _ = std::fs::remove_file(file.path());
            }
        }
    }
}

/// The trials of a search and the epochs of each rung, as the driver and every task that
/// trains one of its trials compute them.
struct Layout {
    points: Vec<Values>,
    rungs: Vec<usize>,
    /// How many times more trials a rung has than the next.
    eta: usize,
}

fn layout(spec: &SearchSpec, seed: u64) -> Layout {
    let points: Vec<Values> = match spec.strategy {
        Strategy::Grid => space::grid(&spec.space).into_iter().take(spec.trials).collect(),
        _ => (0..spec.trials).map(|i| space::random(&spec.space, seed, i)).collect(),
    };
    let epochs = spec.train.settings.epochs;
    let (rungs, eta) = match spec.strategy {
        Strategy::Halving { eta } => (halving_budgets(points.len(), epochs, eta), eta.max(2)),
        _ => (vec![epochs], 1),
    };
    Layout { points, rungs, eta }
}

pub fn run(spec: &SearchSpec, inputs: &Inputs, ctx: &Context) -> Result<Artifact, StepError> {
    let Layout { points, rungs, eta } = layout(spec, ctx.seed);
    let epochs = spec.train.settings.epochs;
    let pool = rayon::ThreadPoolBuilder::new()
        .num_threads(ctx.jobs.max(1))
        .build()
        .map_err(|e| StepError::new(format!("cannot start trial threads: {e}"), "lower --jobs"))?;
    let store = trial_store(ctx);

    // Each rung trains its trials side by side and keeps the best 1/eta for the next.
    let mut alive: Vec<usize> = (0..points.len()).collect();
    let mut trials: BTreeMap<usize, Trial> = BTreeMap::new();
    let mut weights: BTreeMap<usize, Weights> = BTreeMap::new();
    let mut submitted: Vec<slurm::Submitted> = Vec::new();
    for (rung, &budget) in rungs.iter().enumerate() {
        let runs: Vec<Result<(Trial, Weights), StepError>> = match ctx.executor {
            Executor::Local => pool.install(|| {
                alive
                    .par_iter()
                    .map(|&i| {
                        run_trial(spec, inputs, ctx, &store, i, &points[i], rung, budget, None)
                    })
                    .collect()
            }),
            Executor::Slurm(options) => {
                let at = Rung { index: rung, epochs: budget, alive: &alive, points: &points };
                on_slurm(options, ctx, &store, &at, &mut submitted)?.into_iter().map(Ok).collect()
            }
        };
        for run in runs {
            let (mut trial, w) = run?;
            if let Some(before) = trials.get(&trial.index) {
                trial.epochs_total += before.epochs_total;
            }
            weights.insert(trial.index, w);
            trials.insert(trial.index, trial);
        }
        if rung + 1 < rungs.len() {
            let this_rung: Vec<Trial> = alive.iter().map(|i| trials[i].clone()).collect::<Vec<_>>();
            let keep = (alive.len() / eta).max(1);
            alive = report::ranked(&this_rung, &spec.objective)
                .into_iter()
                .take(keep)
                .map(|t| t.index)
                .collect();
            alive.sort_unstable();
        }
    }

    let trials: Vec<Trial> = trials.into_values().collect();
    let best = report::ranked(&trials, &spec.objective)
        .first()
        .map(|t| t.index)
        .ok_or_else(|| StepError::new("the search ran no trial", "give it `trials = 1` or more"))?;
    let best_weights = weights.remove(&best).expect("every trial that ran left weights");

    // The trial table, as files beside the recipe's outputs and as text for the run's report.
    let texts = [
        report::csv(&trials, &spec.space, &spec.objective),
        report::to_json(&trials, &spec.space, &spec.objective),
        report::svg(&trials, &spec.space, &spec.objective),
    ];
    let paths = SearchSpec::table_files(ctx.recipe_name, &ctx.node.name);
    for (path, text) in paths.iter().zip(texts) {
        ctx.write_output(path, text.as_bytes())?;
    }
    let written = paths.to_vec();

    let spent: usize = trials.iter().map(|t| t.epochs_total).sum();
    let stored = trials.iter().filter(|t| t.stored).count();
    let winner = trials.iter().find(|t| t.index == best).expect("the best trial is a trial");
    let mut notes = vec![format!(
        "{} trials, {spent} epochs in all ({} for every trial at {epochs}); {stored} from the \
         trial store; best trial {best}",
        trials.len(),
        trials.len() * epochs,
    )];
    if !submitted.is_empty() {
        let jobs: Vec<String> = submitted
            .iter()
            .map(|s| format!("{} (trials {})", s.job, slurm::array_spec(&s.indices)))
            .collect();
        notes.push(format!("trained on Slurm: array job {}", jobs.join(", ")));
    }
    notes.extend(report::text(&trials, &spec.space, &spec.objective).lines().map(str::to_string));
    let mut metrics = BTreeMap::new();
    metrics.insert(report::objective_name(&spec.objective), winner.objective);
    metrics.insert("best_trial".to_string(), best as f64);
    metrics.insert("trials".to_string(), trials.len() as f64);
    metrics.insert("epochs_spent".to_string(), spent as f64);

    let arch = Some(spec.train.arch.clone());
    let mut out = WeightsArtifact::plain(arch, best_weights, ctx.node, metrics);
    out.notes = notes;
    out.written = written;
    Ok(Artifact::Weights(Arc::new(out)))
}

/// The epochs of each rung of successive halving of `n` trials towards `epochs`: `k + 1`
/// rungs where `eta^k` is the largest power of `eta` not above `n`, the last at `epochs`
/// and each earlier one `eta` times shorter (at least one epoch).
pub fn halving_budgets(n: usize, epochs: usize, eta: usize) -> Vec<usize> {
    let eta = eta.max(2);
    let mut k = 0;
    while eta.checked_pow(k + 1).is_some_and(|p| p <= n) {
        k += 1;
    }
    (0..=k)
        .map(|j| {
            let shrink = eta.saturating_pow(k - j);
            (epochs / shrink).max(1).min(epochs.max(1))
        })
        .collect()
}

/// One rung of a search: its number, the epochs every trial in it trains, and the trials
/// in it.
struct Rung<'a> {
    index: usize,
    epochs: usize,
    alive: &'a [usize],
    points: &'a [Values],
}

/// Train the trials of `rung` that the store does not hold as one Slurm array job (the
/// array's task ids are the trial numbers), then read every trial of the rung from the store.
fn on_slurm(
    options: &SlurmOptions,
    ctx: &Context,
    store: &Path,
    rung: &Rung,
    submitted: &mut Vec<slurm::Submitted>,
) -> Result<Vec<(Trial, Weights)>, StepError> {
    // Asked for every tenth of a second while the job runs: computed once.
    let paths: BTreeMap<usize, PathBuf> = rung
        .alive
        .iter()
        .map(|&i| (i, trial_path(store, ctx, i, &rung.points[i], rung.epochs)))
        .collect();
    let trial = |i: usize, stored: Stored, from_store: bool| {
        let seconds = stored.meta.get("seconds").and_then(|s| s.parse().ok()).unwrap_or(0.0);
        let trial = Trial {
            index: i,
            values: rung.points[i].clone(),
            objective: stored.objective,
            epochs: rung.epochs,
            epochs_total: rung.epochs,
            rung: rung.index,
            seconds,
            stored: from_store,
        };
        (trial, stored.weights)
    };
    let mut runs: BTreeMap<usize, (Trial, Weights)> = BTreeMap::new();
    let mut missing = Vec::new();
    for &i in rung.alive {
        match read_stored(&paths[&i], ctx) {
            Some(stored) => {
                runs.insert(i, trial(i, stored, true));
            }
            None => missing.push(i),
        }
    }
    if !missing.is_empty() {
        let dir = Path::new(slurm::SLURM_DIR).join(ctx.recipe_name).join(&ctx.node.name);
        let dir = ctx.output_path(&dir)?;
        let dir = std::path::absolute(&dir)
            .map_err(|e| StepError::new(format!("cannot resolve `{}`: {e}", dir.display()), ""))?;
        let job = slurm::ArrayJob {
            name: format!("{}.{}", ctx.recipe_name, ctx.node.name),
            what: &format!("search `{}`", ctx.node.name),
            piece: "trial",
            dir,
            script: format!("rung{}.sh", rung.index),
            args: task_args(options, ctx, rung.index),
            indices: missing.clone(),
        };
        let done = |i: usize| paths[&i].exists();
        let jobs = slurm::run_array(options, &job, &done, ctx.progress).map_err(|e| {
            let (message, help) = e.explain(job.what, job.piece);
            StepError::new(message, help)
        })?;
        submitted.extend(jobs);
        for i in missing {
            let stored = read_stored(&paths[&i], ctx).ok_or_else(|| {
                StepError::new(
                    format!(
                        "trial {i} ended on Slurm, but its result in the trial store is \
                             missing or damaged"
                    ),
                    "the folder of the recipe must be on a filesystem every node shares",
                )
            })?;
            runs.insert(i, trial(i, stored, false));
        }
    }
    Ok(runs.into_values().collect())
}

/// The arguments of `recipe` in each task: the same recipe, overrides, output folder and
/// device as the driver, one trial of one rung of this step.
fn task_args(options: &SlurmOptions, ctx: &Context, rung: usize) -> Vec<String> {
    let recipe = &options.recipe;
    let mut args = vec![
        "-v".to_string(),
        "trial".to_string(),
        recipe.file.display().to_string(),
        "--step".to_string(),
        ctx.node.name.clone(),
        "--hash".to_string(),
        ctx.node.hash.clone(),
        "--rung".to_string(),
        rung.to_string(),
    ];
    for set in &recipe.overrides {
        args.extend(["--set".to_string(), set.clone()]);
    }
    if let Some(dir) = &recipe.out_dir {
        args.extend(["--out-dir".to_string(), dir.display().to_string()]);
    }
    if let Some(device) = recipe.device {
        args.extend(["--device".to_string(), device.to_string()]);
    }
    args
}

/// Train trial `index` of rung `rung` into the trial store, as one task of a cluster job
/// does; a trial the store holds already is not trained again. `ran_under` (such as the
/// Slurm job and task ids) is recorded in the stored file.
pub fn run_task(
    spec: &SearchSpec,
    inputs: &Inputs,
    ctx: &Context,
    index: usize,
    rung: usize,
    ran_under: &BTreeMap<String, String>,
) -> Result<Trial, StepError> {
    let Layout { points, rungs, .. } = layout(spec, ctx.seed);
    let Some(values) = points.get(index) else {
        return Err(StepError::new(
            format!("the search has {} trials; there is no trial {index}", points.len()),
            "the task id of the array job is the trial's number",
        ));
    };
    let Some(&epochs) = rungs.get(rung) else {
        return Err(StepError::new(
            format!("the search has {} rungs; there is no rung {rung}", rungs.len()),
            "rungs count from 0",
        ));
    };
    let store = trial_store(ctx);
    let (trial, _) =
        run_trial(spec, inputs, ctx, &store, index, values, rung, epochs, Some(ran_under))?;
    Ok(trial)
}

/// Train trial `index` with `values` for `epochs`, or take it from the store. With
/// `ran_under`, the stored file also records the trial's number, its wall time and those
/// entries.
#[allow(clippy::too_many_arguments)]
fn run_trial(
    spec: &SearchSpec,
    inputs: &Inputs,
    ctx: &Context,
    store: &Path,
    index: usize,
    values: &Values,
    rung: usize,
    epochs: usize,
    ran_under: Option<&BTreeMap<String, String>>,
) -> Result<(Trial, Weights), StepError> {
    let path = trial_path(store, ctx, index, values, epochs);
    let trial = |objective, seconds, stored| Trial {
        index,
        values: values.clone(),
        objective,
        epochs,
        epochs_total: epochs,
        rung,
        seconds,
        stored,
    };
    if let Some(stored) = read_stored(&path, ctx) {
        tracing::debug!(index, rung, "trial from the store");
        return Ok((trial(stored.objective, 0.0, true), stored.weights));
    }

    let mut settings = spec.train.settings.clone();
    for (dim, value) in spec.space.iter().zip(values) {
        settings = settings.with(&dim.path, value);
    }
    settings.epochs = epochs;
    let train = TrainSpec { settings, ..spec.train.clone() };
    let started = Instant::now();
    let rng = Rng::new(ctx.seed, &format!("trial {index}"));
    let (weights, metrics) = super::train::train(&train, inputs, ctx, rng, &())
        .map_err(|e| StepError::new(format!("trial {index}: {}", e.message), e.help))?;
    let name = match spec.objective.metric {
        Metric::Loss => "val_loss",
        _ => "val_accuracy",
    };
    let objective = *metrics.get(name).ok_or_else(|| {
        StepError::new(
            format!("trial {index} has no {name}: the validation split is empty"),
            "give the data block's `split` a validation share",
        )
    })?;
    let seconds = started.elapsed().as_secs_f64();
    let mut meta = BTreeMap::new();
    if let Some(ran_under) = ran_under {
        meta.clone_from(ran_under);
        meta.insert("trial".to_string(), index.to_string());
        meta.insert("seconds".to_string(), format!("{seconds:.3}"));
    }
    // `{}` of an f64 is the shortest text that reads back as the same number.
    meta.insert("objective".to_string(), format!("{objective}"));
    write_stored(&path, &weights, &meta)?;
    tracing::info!(index, rung, epochs, objective, "trial done");
    Ok((trial(objective, seconds, false), weights))
}

/// The trial store of the search `ctx` runs: one folder per search step, so that
/// `recipe clean` can drop those no recipe refers to.
fn trial_store(ctx: &Context) -> PathBuf {
    ctx.out.dir.join(TRIAL_STORE).join(&ctx.node.hash)
}

/// Where trial `index` with `values`, trained for `epochs`, is stored in `store`.
fn trial_path(
    store: &Path,
    ctx: &Context,
    index: usize,
    values: &Values,
    epochs: usize,
) -> PathBuf {
    store.join(format!("{}.safetensors", trial_key(&ctx.node.hash, index, values, epochs)))
}

/// The name a trial is stored under: what makes its result, and nothing else.
fn trial_key(step_hash: &str, index: usize, values: &Values, epochs: usize) -> String {
    let text = format!("{step_hash}\n{index}\n{}\n{epochs}", serde_json::json!(values));
    blake3::hash(text.as_bytes()).to_hex()[..32].to_string()
}

/// A trial read back from the store.
struct Stored {
    weights: Weights,
    objective: f64,
    /// The file's metadata: the objective, and where and how long a cluster task trained it.
    meta: BTreeMap<String, String>,
}

/// A stored trial, if there is a whole one at `path`.
fn read_stored(path: &Path, ctx: &Context) -> Option<Stored> {
    if !path.exists() {
        return None;
    }
    let read = || -> Option<Stored> {
        let (tensors, meta) = safetensors::read(path).ok()?;
        let objective: f64 = meta.get("objective")?.parse().ok()?;
        let mut weights = Weights::new();
        for (name, raw) in tensors {
            weights.insert(name, raw.to_tensor(ctx.dev).ok()?);
        }
        Some(Stored { weights, objective, meta })
    };
    let stored = read();
    if stored.is_none() {
        tracing::warn!(path = %path.display(), "a stored trial is damaged; training it again");
    }
    stored
}

fn write_stored(
    path: &Path,
    weights: &Weights,
    meta: &BTreeMap<String, String>,
) -> Result<(), StepError> {
    let mut raw = BTreeMap::new();
    for (name, t) in weights {
        raw.insert(name.clone(), RawTensor::from_tensor(t)?);
    }
    safetensors::write(path, &raw, meta)
        .map_err(|e| StepError::new(e.to_string(), "check that the recipe's folder can be written"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn halving_budgets_grow_by_eta_up_to_the_epochs() {
        assert_eq!(halving_budgets(27, 27, 3), vec![1, 3, 9, 27]);
        assert_eq!(halving_budgets(27, 20, 3), vec![1, 2, 6, 20]);
        assert_eq!(halving_budgets(8, 10, 3), vec![3, 10]);
        assert_eq!(halving_budgets(2, 10, 3), vec![10]);
        assert_eq!(halving_budgets(16, 16, 2), vec![1, 2, 4, 8, 16]);
    }
}

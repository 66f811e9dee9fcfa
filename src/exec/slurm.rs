//! Work on a Slurm cluster: submits an array job whose tasks each run the `recipe` binary on
//! one piece of work, follows the tasks to their end, and reports those that failed.
//!
//! Only Slurm's own commands are used (`sbatch`, `scontrol`, `squeue`, `scancel`, and `sacct`
//! where the cluster keeps accounting), so that whatever a cluster allows its users to run is
//! enough. The tasks hand their results back through files on the filesystem the cluster
//! shares; Slurm's records only say how each task ended.
//!
//! Following a job asks the controller for its tasks' states with a growing pause (a quarter
//! of a second at first, five seconds at most, as clusters ask of polling tools), and checks
//! between asks, every tenth of a second, whether all the results are on disk, so that a
//! short job is not kept waiting for the next ask. Ctrl-C (or SIGTERM) while a job is
//! followed cancels the job, waits until `squeue` no longer lists it, and ends the step with
//! an error; a second one ends the process at once.

use std::collections::BTreeMap;
use std::fmt::Write as _;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Mutex, Once};
use std::time::{Duration, Instant};

use indicatif::{ProgressBar, ProgressStyle};
use tracing::{info, warn};

use super::ProgressMode;
use crate::check::Device;

/// Where the job scripts and task logs go, relative to the output folder.
pub const SLURM_DIR: &str = ".recipe/slurm";

/// The commands a run on Slurm cannot do without. `sacct` is optional: many small clusters
/// keep no accounting.
const COMMANDS: [&str; 4] = ["sbatch", "scontrol", "squeue", "scancel"];

/// Where the pieces of work that can leave this process run.
#[derive(Debug, Clone, Default)]
pub enum Executor {
    /// On this machine, on `--jobs` threads.
    #[default]
    Local,
    /// As Slurm array jobs.
    Slurm(Box<SlurmOptions>),
}

/// How to submit to Slurm.
#[derive(Debug, Clone)]
pub struct SlurmOptions {
    /// The `recipe` binary the tasks run; it must be reachable at this path on every node.
    pub program: PathBuf,
    /// `sbatch --partition`.
    pub partition: Option<String>,
    /// `sbatch --time`, the time limit of each task.
    pub time: Option<String>,
    /// At most this many tasks of a job run at once (`--array=...%K`).
    pub max_parallel: Option<usize>,
    /// More arguments for `sbatch`, passed as given, before the script.
    pub sbatch_args: Vec<String>,
    /// How many times the failed tasks of a job are submitted again.
    pub retries: usize,
    /// How a task finds the recipe that the driver runs; [`crate::Recipe::run`] fills it in.
    pub recipe: TaskRecipe,
}

impl SlurmOptions {
    /// Options that submit tasks running `program`, with Slurm's defaults for the rest.
    pub fn new(program: impl Into<PathBuf>) -> SlurmOptions {
        SlurmOptions {
            program: program.into(),
            partition: None,
            time: None,
            max_parallel: None,
            sbatch_args: Vec::new(),
            retries: 0,
            recipe: TaskRecipe::default(),
        }
    }
}

/// What a task needs to compile the same recipe as the driver: the file, the `--set`
/// overrides, the output folder and the device.
#[derive(Debug, Clone, Default)]
pub struct TaskRecipe {
    pub file: PathBuf,
    pub overrides: Vec<String>,
    pub out_dir: Option<PathBuf>,
    pub device: Option<Device>,
}

/// Whether each of Slurm's commands that a run needs is on the `PATH`; the error names the
/// first one missing.
pub fn find_commands() -> Result<(), String> {
    let path = std::env::var_os("PATH").unwrap_or_default();
    for command in COMMANDS {
        if !std::env::split_paths(&path).any(|dir| is_executable(&dir.join(command))) {
            return Err(format!(
                "`--executor slurm` needs Slurm's `{command}`, which is not on \
                 the PATH"
            ));
        }
    }
    Ok(())
}

fn is_executable(path: &Path) -> bool {
    use std::os::unix::fs::PermissionsExt;
    path.metadata().is_ok_and(|m| m.is_file() && m.permissions().mode() & 0o111 != 0)
}

/// One array job: `indices` are the array's task ids, each a piece of work the task finds in
/// `SLURM_ARRAY_TASK_ID`.
pub struct ArrayJob<'a> {
    /// Slurm's job name.
    pub name: String,
    /// What the work is, for messages: "search `tuned`".
    pub what: &'a str,
    /// What one piece is called, for messages: "trial".
    pub piece: &'a str,
    /// Where the job script and the task logs go.
    pub dir: PathBuf,
    /// The job script's file name in `dir`.
    pub script: String,
    /// The arguments of `program` in every task.
    pub args: Vec<String>,
    pub indices: Vec<usize>,
}

/// How one task ended.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TaskEnd {
    pub index: usize,
    /// The array job it ran under.
    pub job: String,
    /// Slurm's state: `COMPLETED`, `FAILED`, `TIMEOUT`, `OUT_OF_MEMORY`, `CANCELLED`,
    /// `NODE_FAIL`, ...; `UNKNOWN` when Slurm had forgotten the task before it was seen to end.
    pub state: String,
    /// Slurm's `EXIT:SIGNAL`, when known.
    pub exit: Option<String>,
    /// Slurm's reason, or how the state was judged when Slurm no longer listed the task.
    pub reason: Option<String>,
    pub log: PathBuf,
}

impl TaskEnd {
    /// "FAILED, exit code 1", "CANCELLED, signal 9", "TIMEOUT".
    pub fn describe(&self) -> String {
        let mut text = self.state.clone();
        if let Some((code, signal)) = self.exit.as_deref().and_then(|e| e.split_once(':')) {
            if signal != "0" {
                let _ = write!(text, ", signal {signal}");
            } else if code != "0" {
                let _ = write!(text, ", exit code {code}");
            }
        }
        // The exit code already says so.
        if let Some(reason) = self.reason.as_deref().filter(|r| *r != "NonZeroExitCode") {
            let _ = write!(text, " ({reason})");
        }
        text
    }
}

/// A job that was submitted, and the tasks it had.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Submitted {
    pub job: String,
    pub indices: Vec<usize>,
}

/// Why an array job did not give every result.
#[derive(Debug)]
pub enum SlurmError {
    /// A Slurm command could not run or refused.
    Command { message: String, help: String },
    /// Tasks ended without their result after every retry.
    Failed { failed: Vec<TaskEnd>, of: usize },
    /// The driver was interrupted; the jobs were cancelled.
    Interrupted { jobs: Vec<String> },
}

impl SlurmError {
    /// The error as a message and a help line.
    pub fn explain(&self, what: &str, piece: &str) -> (String, String) {
        match self {
            SlurmError::Command { message, help } => (message.clone(), help.clone()),
            SlurmError::Failed { failed, of } => {
                let mut message =
                    format!("{} of {of} {piece}s submitted to Slurm failed:", failed.len());
                for end in failed {
                    let _ = write!(
                        message,
                        "\n  {piece} {} ({}_{}): {}",
                        end.index,
                        end.job,
                        end.index,
                        end.describe()
                    );
                    if end.log.exists() {
                        let _ = write!(message, ", log {}", end.log.display());
                    } else {
                        message.push_str(", no log");
                    }
                    if let Some(line) = last_line(&end.log) {
                        let _ = write!(message, "\n    last line: {line}");
                    }
                }
                let help = format!(
                    "the logs say why; the finished {piece}s are kept, so running again submits \
                     only the failed ones (`--retries N` resubmits them within one run)"
                );
                (message, help)
            }
            SlurmError::Interrupted { jobs } => (
                format!("interrupted: cancelled Slurm job {} of {what}", jobs.join(", ")),
                format!("the finished {piece}s are kept; running again submits only the rest"),
            ),
        }
    }
}

/// The last line of a log that says something: what `recipe trial` or Slurm said last.
fn last_line(path: &Path) -> Option<String> {
    let bytes = std::fs::read(path).ok()?;
    let text = String::from_utf8_lossy(&bytes);
    text.lines().map(str::trim).rfind(|l| !l.is_empty()).map(str::to_string)
}

/// Run `job` to its end: submit it, follow it, and submit the tasks that ended without their
/// result again, up to `options.retries` times. `done(i)` tells whether task `i`'s result is
/// on disk; a task that Slurm says completed without one counts as failed.
pub fn run_array(
    options: &SlurmOptions,
    job: &ArrayJob,
    done: &(dyn Fn(usize) -> bool + Sync),
    progress: ProgressMode,
) -> Result<Vec<Submitted>, SlurmError> {
    let mut submitted = Vec::new();
    let mut indices = job.indices.clone();
    for attempt in 0..=options.retries {
        if indices.is_empty() {
            break;
        }
        let id = submit(options, job, &indices)?;
        info!("{}: submitted {} {}s as Slurm array job {id}", job.what, indices.len(), job.piece);
        submitted.push(Submitted { job: id.clone(), indices: indices.clone() });
        let ends = follow(job, &id, &indices, done, progress)?;
        let failed: Vec<TaskEnd> = ends
            .into_values()
            .filter(|end| end.state != "COMPLETED" || !done(end.index))
            .map(|mut end| {
                if end.state == "COMPLETED" {
                    end.state = "COMPLETED without a result".into();
                }
                end
            })
            .collect();
        if failed.is_empty() {
            return Ok(submitted);
        }
        if attempt == options.retries {
            return Err(SlurmError::Failed { failed, of: job.indices.len() });
        }
        for end in &failed {
            warn!(
                "{}: {} {} ({}_{}) ended {}, log {}; submitting it again (retry {} of {})",
                job.what,
                job.piece,
                end.index,
                end.job,
                end.index,
                end.describe(),
                end.log.display(),
                attempt + 1,
                options.retries
            );
        }
        indices = failed.iter().map(|end| end.index).collect();
    }
    Ok(submitted)
}

/// Write the job script and submit it; returns the job id.
fn submit(options: &SlurmOptions, job: &ArrayJob, indices: &[usize]) -> Result<String, SlurmError> {
    let io = |e: std::io::Error| SlurmError::Command {
        message: format!("cannot write the job script in `{}`: {e}", job.dir.display()),
        help: "check that the folder can be written".into(),
    };
    std::fs::create_dir_all(&job.dir).map_err(io)?;
    let script = job.dir.join(&job.script);
    let mut text = String::from("#!/bin/sh\n");
    let _ = writeln!(
        text,
        "# One {} of {} per task of the array: the task id is the {}'s number.",
        job.piece, job.what, job.piece
    );
    let mut command = vec![shell_quote(&options.program.to_string_lossy())];
    command.extend(job.args.iter().map(|a| shell_quote(a)));
    let _ = writeln!(text, "exec {}", command.join(" "));
    crate::formats::write_atomic(&script, text.as_bytes()).map_err(io)?;

    let mut array = array_spec(indices);
    if let Some(k) = options.max_parallel {
        let _ = write!(array, "%{k}");
    }
    let mut args = vec![
        "--parsable".to_string(),
        format!("--array={array}"),
        format!("--job-name={}", job.name),
        // `%` starts a pattern in Slurm's file names; `%%` is a `%` of the folder's name.
        format!("--output={}/%A_%a.log", job.dir.display().to_string().replace('%', "%%")),
        format!("--chdir={}", job.dir.display()),
    ];
    args.extend(options.partition.iter().map(|p| format!("--partition={p}")));
    args.extend(options.time.iter().map(|t| format!("--time={t}")));
    args.extend(options.sbatch_args.iter().cloned());
    args.push(script.display().to_string());
    let out = slurm_command("sbatch", &args)?;
    // `--parsable` prints `ID` or `ID;CLUSTER`.
    let id = out.trim().split(';').next().unwrap_or_default().trim().to_string();
    if id.is_empty() || !id.bytes().all(|b| b.is_ascii_digit()) {
        return Err(SlurmError::Command {
            message: format!("`sbatch` printed `{}` where a job id was expected", out.trim()),
            help: "check the `--sbatch-arg` arguments".into(),
        });
    }
    Ok(id)
}

/// The error for one of Slurm's commands that could not be started.
fn cannot_run(name: &str, e: std::io::Error) -> SlurmError {
    SlurmError::Command {
        message: format!("cannot run `{name}`: {e}"),
        help: "install Slurm's client commands, or run with `--executor local`".into(),
    }
}

/// Run one of Slurm's commands; its standard output, or an error with what it printed.
fn slurm_command(name: &str, args: &[String]) -> Result<String, SlurmError> {
    let out = Command::new(name).args(args).output().map_err(|e| cannot_run(name, e))?;
    if !out.status.success() {
        let stderr = String::from_utf8_lossy(&out.stderr);
        return Err(SlurmError::Command {
            message: format!("`{name}` failed: {}", stderr.trim()),
            help: match name {
                "sbatch" => "check `--partition`, `--time` and the `--sbatch-arg` arguments",
                _ => "check that the Slurm controller is reachable (`sinfo`)",
            }
            .into(),
        });
    }
    Ok(String::from_utf8_lossy(&out.stdout).into_owned())
}

/// A word as the shell reads it back unchanged.
fn shell_quote(word: &str) -> String {
    let plain = |b: u8| b.is_ascii_alphanumeric() || b"/._-=:,+@%".contains(&b);
    if !word.is_empty() && word.bytes().all(plain) {
        word.to_string()
    } else {
        format!("'{}'", word.replace('\'', r"'\''"))
    }
}

/// Task ids in Slurm's `--array` form, runs of consecutive ids as ranges: `0-3,5,7-9`.
pub fn array_spec(indices: &[usize]) -> String {
    let mut sorted = indices.to_vec();
    sorted.sort_unstable();
    sorted.dedup();
    let mut parts: Vec<String> = Vec::new();
    let mut i = 0;
    while i < sorted.len() {
        let mut j = i;
        while j + 1 < sorted.len() && sorted[j + 1] == sorted[j] + 1 {
            j += 1;
        }
        parts.push(if i == j {
            sorted[i].to_string()
        } else {
            format!("{}-{}", sorted[i], sorted[j])
        });
        i = j + 1;
    }
    parts.join(",")
}

/// Task ids from Slurm's form of them (`4-7%2`, `1,3,5-9:2`, `3`).
pub fn parse_array_spec(spec: &str) -> Vec<usize> {
    let spec = spec.split('%').next().unwrap_or_default();
    let mut out = Vec::new();
    for part in spec.split(',').filter(|p| !p.is_empty()) {
        let (range, step) = match part.split_once(':') {
            Some((r, s)) => (r, s.parse().unwrap_or(1).max(1)),
            None => (part, 1),
        };
        let bounds: Option<(usize, usize)> = match range.split_once('-') {
            Some((a, b)) => a.parse().ok().zip(b.parse().ok()),
            None => range.parse().ok().map(|a| (a, a)),
        };
        if let Some((a, b)) = bounds {
            out.extend((a..=b).step_by(step));
        }
    }
    out
}

/// The states a task does not leave; all but `COMPLETED` are failures.
fn is_final(state: &str) -> bool {
    matches!(
        state,
        "COMPLETED"
            | "FAILED"
            | "TIMEOUT"
            | "OUT_OF_MEMORY"
            | "CANCELLED"
            | "NODE_FAIL"
            | "BOOT_FAIL"
            | "DEADLINE"
            | "PREEMPTED"
            | "SPECIAL_EXIT"
            | "REVOKED"
            | "UNKNOWN"
    )
}

/// What Slurm says about one task now.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TaskState {
    pub state: String,
    pub exit: Option<String>,
    pub reason: Option<String>,
    pub log: Option<PathBuf>,
    pub node: Option<String>,
}

impl TaskState {
    /// A state Slurm did not give but that was judged from what else is known.
    fn judged(state: &str, reason: Option<&str>) -> TaskState {
        TaskState {
            state: state.into(),
            exit: None,
            reason: reason.map(String::from),
            log: None,
            node: None,
        }
    }
}

/// The tasks of a job from `scontrol -o show job`: one record a line, `KEY=VALUE` words; the
/// tasks not yet started share one record whose `ArrayTaskId` is a range.
pub fn parse_scontrol(text: &str) -> BTreeMap<usize, TaskState> {
    let mut tasks = BTreeMap::new();
    for line in text.lines() {
        let mut fields: BTreeMap<&str, String> = BTreeMap::new();
        let mut last: Option<&str> = None;
        for word in line.split_whitespace() {
            match word.split_once('=') {
                Some((key, value)) if !key.is_empty() && key.bytes().all(is_key_byte) => {
                    fields.insert(key, value.to_string());
                    last = Some(key);
                }
                // A value with spaces in it, such as a path.
                _ => {
                    if let Some(value) = last.and_then(|k| fields.get_mut(k)) {
                        value.push(' ');
                        value.push_str(word);
                    }
                }
            }
        }
        let Some(ids) = fields.get("ArrayTaskId") else { continue };
        let known = |key: &str| {
            fields.get(key).filter(|v| !v.is_empty() && !matches!(v.as_str(), "(null)" | "None"))
        };
        let state = TaskState {
            state: fields.get("JobState").cloned().unwrap_or_else(|| "UNKNOWN".into()),
            exit: known("ExitCode").cloned(),
            reason: known("Reason").cloned(),
            log: known("StdOut").map(PathBuf::from),
            node: known("NodeList").cloned(),
        };
        for index in parse_array_spec(ids) {
            tasks.insert(index, state.clone());
        }
    }
    tasks
}

fn is_key_byte(b: u8) -> bool {
    b.is_ascii_alphanumeric() || b"/:_".contains(&b)
}

/// The tasks of a job from `sacct -n -P -X -o JobID,State,ExitCode`: `ID_TASK|STATE|EXIT`
/// lines, `ID_[4-7]` for tasks not yet started, `CANCELLED by 0` for a cancelled one.
pub fn parse_sacct(text: &str) -> BTreeMap<usize, TaskState> {
    let mut tasks = BTreeMap::new();
    for line in text.lines() {
        let cells: Vec<&str> = line.trim().split('|').collect();
        let [id, state, exit, ..] = cells[..] else { continue };
        let Some((_, ids)) = id.split_once('_') else { continue };
        let state = TaskState {
            state: state.split_whitespace().next().unwrap_or("UNKNOWN").to_string(),
            exit: Some(exit.to_string()).filter(|e| !e.is_empty()),
            reason: None,
            log: None,
            node: None,
        };
        for index in parse_array_spec(ids.trim_matches(['[', ']'])) {
            tasks.insert(index, state.clone());
        }
    }
    tasks
}

/// What Slurm says about the tasks of a job.
enum Answer {
    /// The controller's record. Every task of a job the controller remembers is listed, in
    /// the pending range or in a record of its own, so a task missing from it was taken out
    /// of the queue before it started, or was forgotten some minutes after it ended.
    Controller(BTreeMap<usize, TaskState>),
    /// The controller forgot the job; accounting's record, or none.
    Past(BTreeMap<usize, TaskState>),
    /// The controller did not answer, or listed no task; it may be restarting, and the next
    /// ask may get through.
    Silent,
}

impl Answer {
    /// Task `index`'s state by this answer, `on_disk` telling whether its result was written
    /// and `last` what was seen of it before; `None` when this answer does not tell. `recorded`
    /// holds accounting's record of job `id` once asked for.
    fn state_of(
        &self,
        index: usize,
        on_disk: bool,
        last: Option<&TaskState>,
        recorded: &mut Option<Option<BTreeMap<usize, TaskState>>>,
        id: &str,
    ) -> Option<TaskState> {
        match self {
            Answer::Controller(states) => Some(match states.get(&index) {
                Some(state) => state.clone(),
                None => judge_missing(index, on_disk, last, recorded, id),
            }),
            Answer::Past(states) => Some(match states.get(&index) {
                Some(state) => state.clone(),
                None if on_disk => TaskState::judged("COMPLETED", None),
                None => TaskState::judged("UNKNOWN", Some("Slurm no longer knows the job")),
            }),
            // A result is written whole just before its task ends.
            Answer::Silent => on_disk.then(|| TaskState::judged("COMPLETED", None)),
        }
    }
}

/// What Slurm says about the tasks of job `id`: from the controller while it remembers the
/// job, then from accounting where there is some.
fn query(id: &str) -> Result<Answer, SlurmError> {
    let out = Command::new("scontrol")
        .args(["-o", "show", "job", id])
        .output()
        .map_err(|e| cannot_run("scontrol", e))?;
    if out.status.success() {
        let tasks = parse_scontrol(&String::from_utf8_lossy(&out.stdout));
        return Ok(if tasks.is_empty() { Answer::Silent } else { Answer::Controller(tasks) });
    }
    let stderr = String::from_utf8_lossy(&out.stderr);
    if !stderr.contains("Invalid job id") {
        warn!("`scontrol show job {id}` failed: {}", stderr.trim());
        return Ok(Answer::Silent);
    }
    Ok(Answer::Past(accounting(id).unwrap_or_default()))
}

/// Accounting's record of job `id`'s tasks; `None` where the cluster keeps none.
fn accounting(id: &str) -> Option<BTreeMap<usize, TaskState>> {
    let out = Command::new("sacct")
        .args(["-n", "-P", "-X", "-j", id, "-o", "JobID,State,ExitCode"])
        .output()
        .ok()?;
    out.status.success().then(|| parse_sacct(&String::from_utf8_lossy(&out.stdout)))
}

/// How a task ended that the controller does not list, judged from the result on disk, what
/// was last seen of it, and accounting where there is some. `recorded` holds accounting's
/// record once asked for.
fn judge_missing(
    index: usize,
    on_disk: bool,
    last: Option<&TaskState>,
    recorded: &mut Option<Option<BTreeMap<usize, TaskState>>>,
    id: &str,
) -> TaskState {
    if on_disk {
        return TaskState::judged("COMPLETED", None);
    }
    let recorded = recorded.get_or_insert_with(|| accounting(id));
    if let Some(found) = recorded.as_ref().and_then(|r| r.get(&index)) {
        if is_final(&found.state) {
            return found.clone();
        }
    }
    match last.map(|l| l.state.as_str()) {
        // Slurm drops a waiting task from the array's pending range when it is cancelled,
        // leaving no record of its own.
        None | Some("PENDING") => {
            TaskState::judged("CANCELLED", Some("left the queue before it started"))
        }
        _ => TaskState::judged("UNKNOWN", Some("Slurm no longer knows the task")),
    }
}

/// Follow job `id` until every task in `indices` has ended; how each ended.
fn follow(
    job: &ArrayJob,
    id: &str,
    indices: &[usize],
    done: &(dyn Fn(usize) -> bool + Sync),
    progress: ProgressMode,
) -> Result<BTreeMap<usize, TaskEnd>, SlurmError> {
    let _watch = Interrupts::watch();
    let shown = Shown::new(job, indices.len(), progress);
    let log = |index: usize| job.dir.join(format!("{id}_{index}.log"));
    let mut seen: BTreeMap<usize, TaskState> = BTreeMap::new();
    let mut ends: BTreeMap<usize, TaskEnd> = BTreeMap::new();
    let mut pause = Duration::from_millis(250);
    let mut next_ask = Instant::now();
    loop {
        if Interrupts::requested() {
            shown.finish();
            cancel(id);
            return Err(SlurmError::Interrupted { jobs: vec![id.to_string()] });
        }
        let all_on_disk = indices.iter().all(|&i| ends.contains_key(&i) || done(i));
        if Instant::now() >= next_ask || all_on_disk {
            let answer = match query(id) {
                Ok(answer) => answer,
                Err(e) => {
                    // A job that cannot be followed is not left behind.
                    shown.finish();
                    cancel(id);
                    return Err(e);
                }
            };
            // Accounting is asked at most once a round, and only about missing tasks.
            let mut recorded = None;
            for &index in indices {
                if ends.contains_key(&index) {
                    continue;
                }
                let last = seen.get(&index);
                let Some(now) = answer.state_of(index, done(index), last, &mut recorded, id) else {
                    continue;
                };
                if seen.get(&index) != Some(&now) {
                    shown.change(index, &now);
                    seen.insert(index, now.clone());
                }
                if is_final(&now.state) {
                    ends.insert(
                        index,
                        TaskEnd {
                            index,
                            job: id.to_string(),
                            state: now.state.clone(),
                            exit: now.exit.clone(),
                            reason: now.reason.clone(),
                            log: now.log.clone().unwrap_or_else(|| log(index)),
                        },
                    );
                }
            }
            shown.counts(&seen, ends.len());
            if ends.len() == indices.len() {
                shown.finish();
                return Ok(ends);
            }
            // Results on disk, tasks still exiting: ask again soon.
            let wait = if all_on_disk { Duration::from_millis(100) } else { pause };
            next_ask = Instant::now() + wait;
            pause = (pause * 3 / 2).min(Duration::from_secs(5));
        }
        std::thread::sleep(Duration::from_millis(100));
    }
}

/// Cancel job `id` and wait (a minute at most) until `squeue` no longer lists it.
fn cancel(id: &str) {
    warn!("interrupted: cancelling Slurm job {id}");
    if let Err(e) = Command::new("scancel").arg(id).status() {
        warn!("cannot run `scancel {id}`: {e}");
        return;
    }
    let started = Instant::now();
    while started.elapsed() < Duration::from_secs(60) {
        let listed = Command::new("squeue").args(["-h", "-j", id, "-o", "%i"]).output();
        match listed {
            Ok(out)
                if out.status.success() && !out.stdout.iter().any(|b| !b.is_ascii_whitespace()) =>
            {
                return
            }
            // `squeue` refuses a job id the controller has forgotten.
            Ok(out) if !out.status.success() => return,
            Err(_) => return,
            Ok(_) => std::thread::sleep(Duration::from_millis(100)),
        }
    }
    warn!("Slurm job {id} is still listed a minute after `scancel`");
}

/// Progress of a job: a bar counting ended tasks on a terminal, a log line per change of a
/// task's state otherwise.
struct Shown<'a> {
    job: &'a ArrayJob<'a>,
    bar: Option<ProgressBar>,
    mode: ProgressMode,
}

impl<'a> Shown<'a> {
    fn new(job: &'a ArrayJob<'a>, total: usize, mode: ProgressMode) -> Self {
        let bar = (mode == ProgressMode::Bar).then(|| {
            let bar = super::progress::bars().add(ProgressBar::new(total as u64));
            let style = ProgressStyle::with_template(
                "{prefix:>12} [{bar:30}] {pos}/{len} {msg} ({elapsed})",
            )
            .expect("a constant template parses")
            .progress_chars("=> ");
            bar.set_style(style);
            bar.set_prefix(job.what.to_string());
            bar
        });
        Shown { job, bar, mode }
    }

    fn change(&self, index: usize, now: &TaskState) {
        if self.mode != ProgressMode::Lines {
            return;
        }
        let mut line = format!("{}: {} {index} {}", self.job.what, self.job.piece, now.state);
        if let Some(node) = now.node.as_ref().filter(|_| now.state == "RUNNING") {
            let _ = write!(line, " on {node}");
        }
        if let Some(reason) = now.reason.as_ref().filter(|_| now.state == "PENDING") {
            let _ = write!(line, " ({reason})");
        }
        info!("{line}");
    }

    fn counts(&self, seen: &BTreeMap<usize, TaskState>, ended: usize) {
        let Some(bar) = &self.bar else { return };
        let count = |s: &str| seen.values().filter(|t| t.state == s).count();
        bar.set_position(ended as u64);
        bar.set_message(format!(
            "{}s ended, {} running, {} pending",
            self.job.piece,
            count("RUNNING"),
            count("PENDING")
        ));
    }

    fn finish(&self) {
        if let Some(bar) = &self.bar {
            bar.finish_and_clear();
        }
    }
}

/// Turns SIGINT and SIGTERM into a request to cancel while a job is followed, and leaves
/// them their usual effect otherwise. The handlers are installed once per process, since a
/// removed handler would leave the signal ignored rather than restore its default.
struct Interrupts;

/// Whether the signals keep their usual effect: no job is followed, or one signal came
/// already.
static PASS: AtomicBool = AtomicBool::new(true);
/// Whether a signal came while a job was followed.
static REQUESTED: AtomicBool = AtomicBool::new(false);
/// How many jobs are followed now, by steps running side by side.
static FOLLOWING: Mutex<usize> = Mutex::new(0);

impl Interrupts {
    fn watch() -> Interrupts {
        static INSTALL: Once = Once::new();
        INSTALL.call_once(|| {
            use signal_hook::consts::{SIGINT, SIGTERM};
            for signal in [SIGINT, SIGTERM] {
                // The default action must be registered first: it reads PASS before the
                // second action sets REQUESTED and the follower clears the way for it.
                let installed = signal_hook::flag::register_conditional_default(signal, &PASS)
                    .and_then(|_| signal_hook::flag::register(signal, &REQUESTED));
                if let Err(e) = installed {
                    warn!("cannot watch for Ctrl-C: {e}; it will leave the Slurm jobs running");
                }
            }
        });
        let mut following = FOLLOWING.lock().unwrap_or_else(|e| e.into_inner());
        if *following == 0 {
            REQUESTED.store(false, Ordering::SeqCst);
        }
        *following += 1;
        PASS.store(false, Ordering::SeqCst);
        Interrupts
    }

    fn requested() -> bool {
        let requested = REQUESTED.load(Ordering::SeqCst);
        if requested {
            // A second signal ends the process at once.
            PASS.store(true, Ordering::SeqCst);
        }
        requested
    }
}

impl Drop for Interrupts {
    fn drop(&mut self) {
        let mut following = FOLLOWING.lock().unwrap_or_else(|e| e.into_inner());
        *following -= 1;
        if *following == 0 {
            PASS.store(true, Ordering::SeqCst);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn array_specs_round_trip() {
        assert_eq!(array_spec(&[0, 1, 2, 3, 5, 7, 8, 9]), "0-3,5,7-9");
        assert_eq!(array_spec(&[4]), "4");
        assert_eq!(parse_array_spec("0-3,5,7-9%2"), vec![0, 1, 2, 3, 5, 7, 8, 9]);
        assert_eq!(parse_array_spec("1-9:4"), vec![1, 5, 9]);
        assert_eq!(parse_array_spec("12"), vec![12]);
    }

    #[test]
    fn scontrol_records_give_each_task_its_state() {
        let text = "JobId=9 ArrayJobId=9 ArrayTaskId=4-7%4 JobState=PENDING \
                    Reason=JobArrayTaskLimit ExitCode=0:0 StdOut=/tmp/9_4294967294.log\n\
                    JobId=12 ArrayJobId=9 ArrayTaskId=3 JobState=FAILED Reason=NonZeroExitCode \
                    ExitCode=1:0 NodeList=node1 StdOut=/tmp/my logs/9_3.log\n";
        let tasks = parse_scontrol(text);
        assert_eq!(tasks.keys().copied().collect::<Vec<_>>(), vec![3, 4, 5, 6, 7]);
        assert_eq!(tasks[&5].state, "PENDING");
        assert_eq!(tasks[&5].reason.as_deref(), Some("JobArrayTaskLimit"));
        assert_eq!(tasks[&3].state, "FAILED");
        assert_eq!(tasks[&3].exit.as_deref(), Some("1:0"));
        assert_eq!(tasks[&3].log.as_deref(), Some(Path::new("/tmp/my logs/9_3.log")));
    }

    #[test]
    fn sacct_lines_give_each_task_its_state() {
        let tasks =
            parse_sacct("7_0|COMPLETED|0:0\n7_1|CANCELLED by 0|0:15\n7_[2-3]|PENDING|0:0\n");
        assert_eq!(tasks[&0].state, "COMPLETED");
        assert_eq!(tasks[&1].state, "CANCELLED");
        assert_eq!(tasks[&3].state, "PENDING");
    }

    #[test]
    fn ends_describe_exit_codes_and_signals() {
        let end = |state: &str, exit: &str| TaskEnd {
            index: 0,
            job: "1".into(),
            state: state.into(),
            exit: Some(exit.into()),
            reason: None,
            log: PathBuf::new(),
        };
        assert_eq!(end("FAILED", "1:0").describe(), "FAILED, exit code 1");
        assert_eq!(end("CANCELLED", "0:9").describe(), "CANCELLED, signal 9");
        assert_eq!(end("TIMEOUT", "0:0").describe(), "TIMEOUT");
        let killed =
            TaskEnd { reason: Some("RaisedSignal:9(Killed)".into()), ..end("FAILED", "0:9") };
        assert_eq!(killed.describe(), "FAILED, signal 9 (RaisedSignal:9(Killed))");
        let plain = TaskEnd { reason: Some("NonZeroExitCode".into()), ..end("FAILED", "2:0") };
        assert_eq!(plain.describe(), "FAILED, exit code 2");
    }

    #[test]
    fn a_task_missing_from_the_controller_is_judged_by_what_was_seen() {
        let seen = |state: &str| TaskState {
            state: state.into(),
            exit: None,
            reason: None,
            log: None,
            node: None,
        };
        // No accounting: what was last seen decides.
        let judge = |on_disk, last: Option<TaskState>| {
            judge_missing(0, on_disk, last.as_ref(), &mut Some(None), "1").state
        };
        assert_eq!(judge(true, Some(seen("RUNNING"))), "COMPLETED");
        assert_eq!(judge(false, Some(seen("PENDING"))), "CANCELLED");
        assert_eq!(judge(false, None), "CANCELLED");
        assert_eq!(judge(false, Some(seen("RUNNING"))), "UNKNOWN");
        // Accounting's final word wins over a guess.
        let mut recorded = Some(Some(parse_sacct("1_0|OUT_OF_MEMORY|0:125\n")));
        let judged = judge_missing(0, false, Some(&seen("RUNNING")), &mut recorded, "1");
        assert_eq!(judged.state, "OUT_OF_MEMORY");
    }

    #[test]
    fn words_are_quoted_for_the_shell() {
        assert_eq!(shell_quote("/usr/bin/recipe"), "/usr/bin/recipe");
        assert_eq!(shell_quote("a b"), "'a b'");
        assert_eq!(shell_quote("it's"), r"'it'\''s'");
        assert_eq!(shell_quote(""), "''");
    }
}

//! Search trials on a Slurm cluster, as users rely on them: the same trial table and weights
//! as a local run, byte for byte, with each trial's Slurm job and task recorded; failed trials
//! reported with their state and log; `--retries` resubmitting only those; Ctrl-C cancelling
//! the job and keeping the finished trials; a clear error where Slurm is missing.
//!
//! The tests that submit jobs need a cluster that shares this machine's filesystem:
//! `.ci/slurm up` starts a single-node one. Without `sinfo` answering they skip, unless
//! `RECIPE_REQUIRE_SLURM` is set, as in CI.

mod common;

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};
use std::time::{Duration, Instant};

use common::text;
use recipe::exec::{Executor, RunOptions, SlurmOptions};
use recipe::Recipe;

/// Successive halving of 9 trials: three rungs, so three array jobs.
const HALVING: &str = r#"
recipe cluster { seed = 11 }
data digits { source = builtin("digits"), split = [0.7, 0.15, 0.15], scale = standard }
model net { input = digits, layers = [linear(32), relu, linear(10)] }
train base {
  model = net, data = digits, optimizer = sgd(lr = 0.01, momentum = 0.9)
  epochs = 6, batch = 32
}
search tuned {
  train = base, strategy = halving(eta = 3), trials = 9, objective = maximize(accuracy)
  space { optimizer.lr = loguniform(1e-3, 1.0), batch = choice(16, 32) }
}
save out { from = tuned, path = "out/tuned.safetensors" }
"#;

/// Four trials of a random search; `EPOCHS` sets how long each trains.
const RANDOM: &str = r#"
recipe quick { seed = 5 }
data digits { source = builtin("digits"), split = [0.7, 0.15, 0.15], scale = standard }
model net { input = digits, layers = [linear(32), relu, linear(10)] }
train base {
  model = net, data = digits, optimizer = sgd(lr = 0.01, momentum = 0.9)
  epochs = EPOCHS, batch = 32
}
search tuned {
  train = base, strategy = random, trials = TRIALS, objective = maximize(accuracy)
  space { optimizer.lr = loguniform(1e-3, 0.1) }
}
save out { from = tuned, path = "out/tuned.safetensors" }
"#;

fn random(trials: usize, epochs: usize) -> String {
    RANDOM.replace("TRIALS", &trials.to_string()).replace("EPOCHS", &epochs.to_string())
}

/// Whether a Slurm cluster answers here; asked once, since `sinfo` takes seconds to give up.
fn cluster() -> bool {
    static UP: std::sync::OnceLock<bool> = std::sync::OnceLock::new();
    let up = *UP
        .get_or_init(|| Command::new("sinfo").arg("-h").output().is_ok_and(|o| o.status.success()));
    if !up {
        assert!(
            std::env::var_os("RECIPE_REQUIRE_SLURM").is_none(),
            "RECIPE_REQUIRE_SLURM is set, but no Slurm cluster answers `sinfo`"
        );
        eprintln!("skipped: no Slurm cluster answers `sinfo` (`.ci/slurm up` starts one)");
    }
    up
}

/// A fresh folder holding `text` as `NAME.opt`.
fn folder(name: &str, text: &str) -> tempfile::TempDir {
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(dir.path().join(format!("{name}.opt")), text).unwrap();
    dir
}

fn run(dir: &Path, args: &[&str]) -> Output {
    let out = common::cli(args, dir);
    assert!(
        out.status.success(),
        "recipe {args:?} failed:\n{}\n{}",
        text(&out.stdout),
        text(&out.stderr)
    );
    out
}

/// Every file under `out/`, by name.
fn outputs(dir: &Path) -> BTreeMap<String, Vec<u8>> {
    let mut files = BTreeMap::new();
    for entry in std::fs::read_dir(dir.join("out")).unwrap() {
        let entry = entry.unwrap();
        let name = entry.file_name().to_string_lossy().into_owned();
        files.insert(name, std::fs::read(entry.path()).unwrap());
    }
    files
}

/// The metadata of every trial in the store of `dir`.
fn stored(dir: &Path) -> Vec<BTreeMap<String, String>> {
    let mut trials = Vec::new();
    let steps = std::fs::read_dir(dir.join(".recipe/trials")).into_iter().flatten().flatten();
    for step in steps {
        for file in std::fs::read_dir(step.path()).unwrap().flatten() {
            let name = file.file_name().to_string_lossy().into_owned();
            if !name.starts_with('.') && name.ends_with(".safetensors") {
                trials.push(common::metadata(&std::fs::read(file.path()).unwrap()));
            }
        }
    }
    trials
}

/// The array jobs a run's notes name, with their trials: from
/// `trained on Slurm: array job 12 (trials 0-8), 13 (trials 1,4,7)`.
fn jobs(stdout: &str) -> Vec<(String, Vec<usize>)> {
    let line = stdout
        .lines()
        .find_map(|l| l.trim().strip_prefix("trained on Slurm: array job "))
        .unwrap_or_else(|| panic!("no Slurm jobs in the notes:\n{stdout}"));
    line.split("), ")
        .map(|part| {
            let (id, trials) = part.split_once(" (trials ").expect("`ID (trials LIST)`");
            let list = recipe::exec::slurm::parse_array_spec(trials.trim_end_matches(')'));
            (id.to_string(), list)
        })
        .collect()
}

fn squeue_lists(job: &str) -> String {
    let out = Command::new("squeue").args(["-h", "-j", job]).output().unwrap();
    text(&out.stdout)
}

#[test]
fn slurm_gives_the_local_results_byte_for_byte() {
    if !cluster() {
        return;
    }
    let local = folder("cluster", HALVING);
    run(local.path(), &["run", "cluster.opt"]);
    let remote = folder("cluster", HALVING);
    let out = run(remote.path(), &["run", "cluster.opt", "--executor", "slurm"]);
    let stdout = text(&out.stdout);

    let (a, b) = (outputs(local.path()), outputs(remote.path()));
    assert_eq!(a.keys().collect::<Vec<_>>(), b.keys().collect::<Vec<_>>());
    assert_eq!(a.len(), 4, "the trial table in three forms and the weights: {:?}", a.keys());
    for (name, bytes) in &a {
        assert!(bytes == &b[name], "`{name}` differs between --executor local and slurm");
    }

    // One array job per rung of 9, 3 and 1 trials; each stored trial names the job and the
    // task it ran as.
    let jobs = jobs(&stdout);
    assert_eq!(jobs.iter().map(|(_, t)| t.len()).collect::<Vec<_>>(), vec![9, 3, 1], "{stdout}");
    let trials = stored(remote.path());
    assert_eq!(trials.len(), 13);
    let mut seen = BTreeSet::new();
    for meta in &trials {
        let (job, task) = (&meta["slurm_array_job_id"], &meta["slurm_array_task_id"]);
        assert_eq!(task, &meta["trial"], "the task id is the trial's number");
        let index: usize = task.parse().unwrap();
        let listed = jobs.iter().any(|(id, list)| id == job && list.contains(&index));
        assert!(listed, "trial {index} ran as {job}_{task}, a task the run submitted: {jobs:?}");
        seen.insert((job.clone(), index));
        assert!(meta.contains_key("slurm_job_id") && meta.contains_key("seconds"));
    }
    assert_eq!(seen.len(), 13, "every task stored its own trial");
    let log = remote.path().join(format!(".recipe/slurm/cluster/tuned/{}_0.log", jobs[0].0));
    assert!(text(&std::fs::read(&log).unwrap()).contains("trial 0 of `tuned`"), "{log:?}");

    // Nothing is submitted again for a search the cache holds.
    let again = run(remote.path(), &["run", "cluster.opt", "--executor", "slurm"]);
    assert!(text(&again.stdout).contains("all from the cache"), "{}", text(&again.stdout));
}

/// The tasks compile the recipe as the driver did: with its `--set` overrides, and writing
/// under its `--out-dir`, whatever characters that folder's name holds.
#[test]
fn overrides_and_the_output_folder_reach_the_tasks() {
    if !cluster() {
        return;
    }
    let results = |executor: &str| {
        let dir = folder("quick", &random(4, 3));
        let out = dir.path().join("runs/a 100% run");
        let out_arg = out.display().to_string();
        let args = ["run", "quick.opt", "--set", "base.epochs=2", "--out-dir", &out_arg];
        let stdout =
            text(&run(dir.path(), &[&args[..], &["--executor", executor]].concat()).stdout);
        assert!(!dir.path().join("out").exists() && !dir.path().join(".recipe/trials").exists());
        let trials = stored(&out);
        assert_eq!(trials.len(), 4);
        let by_tasks = trials.iter().filter(|m| m.contains_key("slurm_array_job_id")).count();
        assert_eq!(by_tasks, if executor == "slurm" { 4 } else { 0 });
        (outputs(&out), stdout)
    };
    let (local, _) = results("local");
    let (remote, stdout) = results("slurm");
    assert_eq!(jobs(&stdout)[0].1, vec![0, 1, 2, 3]);
    assert!(local == remote, "the results of a local run");
    let csv = text(&remote["quick-tuned-trials.csv"]);
    assert!(csv.lines().skip(1).all(|l| l.ends_with(",2,0")), "2 epochs a trial:\n{csv}");
}

#[test]
fn a_failing_trial_is_reported_with_its_state_and_log() {
    if !cluster() {
        return;
    }
    // The second learning rate sends the loss to infinity, which stops the trial.
    let recipe = random(2, 3).replace(
        "space { optimizer.lr = loguniform(1e-3, 0.1) }",
        "space { optimizer.lr = choice(0.01, 1e12) }",
    );
    let recipe = recipe
        .replace("strategy = random", "strategy = grid")
        .replace("epochs = 3, batch = 32", "epochs = 3, batch = 32, loss = mse");
    let dir = folder("quick", &recipe);
    let out = common::cli(&["run", "quick.opt", "--executor", "slurm"], dir.path());
    assert_eq!(out.status.code(), Some(1), "{}", text(&out.stdout));
    let err = text(&out.stderr);
    assert!(err.contains("1 of 2 trials submitted to Slurm failed"), "{err}");
    assert!(err.contains("trial 1 ("), "the failed trial is named: {err}");
    assert!(err.contains("FAILED, exit code 1"), "with its state and exit code: {err}");
    assert!(err.contains("last line: error: step"), "and what its log says last: {err}");
    let job = err
        .split("trial 1 (")
        .nth(1)
        .and_then(|rest| rest.split_once("_1)"))
        .map(|(job, _)| job)
        .unwrap_or_else(|| panic!("the task is named: {err}"));
    let log = format!(".recipe/slurm/quick/tuned/{job}_1.log");
    // The report wraps long paths; the path is whole once the wrapping is taken out.
    let unwrapped: String = err.chars().filter(|c| !c.is_whitespace() && *c != '│').collect();
    assert!(unwrapped.contains(&log), "the log is named: {err}");
    let logged = text(&std::fs::read(dir.path().join(&log)).unwrap());
    assert!(logged.contains("training diverged"), "{log}: {logged}");
    assert!(!dir.path().join("out").exists(), "no trial table and no weights");
    // The trial that finished is kept.
    let trials = stored(dir.path());
    assert_eq!(trials.len(), 1);
    assert_eq!(trials[0]["trial"], "0");
}

/// A task cancelled from outside (by an administrator, a preemption) is reported as such.
#[test]
fn a_task_cancelled_by_someone_else_is_reported() {
    if !cluster() {
        return;
    }
    // A recipe name of its own, so that the job's name (`RECIPE.STEP`) finds this job only.
    let dir = folder("gone", &random(8, 150).replace("recipe quick", "recipe gone"));
    let driver = Command::new(env!("CARGO_BIN_EXE_recipe"))
        .args(["run", "gone.opt", "--executor", "slurm", "--max-parallel", "2"])
        .current_dir(dir.path())
        .env("NO_COLOR", "1")
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let started = Instant::now();
    let job = loop {
        let out = Command::new("squeue").args(["-h", "-n", "gone.tuned", "-o", "%F"]).output();
        let listed = text(&out.unwrap().stdout);
        if let Some(id) = listed.split_whitespace().next() {
            break id.to_string();
        }
        assert!(started.elapsed() < Duration::from_secs(120), "the job never showed");
        std::thread::sleep(Duration::from_millis(20));
    };
    let status = Command::new("scancel").arg(format!("{job}_7")).status().unwrap();
    assert!(status.success());
    let out = driver.wait_with_output().unwrap();
    assert_eq!(out.status.code(), Some(1));
    let err = text(&out.stderr);
    assert!(err.contains("1 of 8 trials submitted to Slurm failed"), "{err}");
    // Cancelled while waiting its turn (two run at a time): it never started, so no log.
    let line = format!("trial 7 ({job}_7): CANCELLED (left the queue before it started), no log");
    assert!(err.contains(&line), "{err}");
    assert_eq!(stored(dir.path()).len(), 7, "the other trials finished and are kept");
}

/// A `recipe` that fails the first time it runs trial 2, as a node may fail.
fn flaky_program(dir: &Path) -> PathBuf {
    let path = dir.join("flaky-recipe");
    let mark = dir.join("failed-once");
    let script = format!(
        "#!/bin/sh\n\
         if [ \"$SLURM_ARRAY_TASK_ID\" = 2 ] && [ ! -e '{mark}' ]; then\n\
           touch '{mark}'; echo 'node lost its disk' >&2; exit 3\n\
         fi\n\
         exec '{program}' \"$@\"\n",
        mark = mark.display(),
        program = env!("CARGO_BIN_EXE_recipe"),
    );
    executable(&path, &script);
    path
}

/// Write a shell script at `path` that may be run.
fn executable(path: &Path, script: &str) {
    std::fs::write(path, script).unwrap();
    use std::os::unix::fs::PermissionsExt;
    std::fs::set_permissions(path, std::fs::Permissions::from_mode(0o755)).unwrap();
}

#[test]
fn retries_resubmit_only_the_failed_trials() {
    if !cluster() {
        return;
    }
    let local = folder("quick", &random(4, 3));
    run(local.path(), &["run", "quick.opt"]);

    let tools = tempfile::tempdir().unwrap();
    let dir = folder("quick", &random(4, 3));
    let path = dir.path().join("quick.opt");
    let recipe = Recipe::read(&path).unwrap();
    let mut slurm = SlurmOptions::new(flaky_program(tools.path()));
    slurm.retries = 1;
    let options = RunOptions {
        executor: Executor::Slurm(Box::new(slurm.clone())),
        ..RunOptions::new(recipe.base_dir())
    };
    let (_, report) =
        recipe.run(&[], None, &options).unwrap_or_else(|e| panic!("{}", e.render(100)));
    let notes = report.notes.iter().flat_map(|(_, n)| n.iter().cloned()).collect::<Vec<_>>();
    let jobs = jobs(&notes.join("\n"));
    assert_eq!(jobs.len(), 2, "{notes:?}");
    assert_eq!(jobs[0].1, vec![0, 1, 2, 3]);
    assert_eq!(jobs[1].1, vec![2], "only the failed trial is submitted again");
    for meta in stored(dir.path()) {
        let expected = if meta["trial"] == "2" { &jobs[1].0 } else { &jobs[0].0 };
        assert_eq!(&meta["slurm_array_job_id"], expected, "{meta:?}");
    }
    let first_log = dir.path().join(format!(".recipe/slurm/quick/tuned/{}_2.log", jobs[0].0));
    assert!(text(&std::fs::read(first_log).unwrap()).contains("node lost its disk"));
    assert!(outputs(local.path()) == outputs(dir.path()), "the results of a local run");

    // Without a retry, the same failure fails the run.
    std::fs::remove_file(tools.path().join("failed-once")).unwrap();
    let dir = folder("quick", &random(4, 3));
    let recipe = Recipe::read(&dir.path().join("quick.opt")).unwrap();
    slurm.retries = 0;
    let options = RunOptions {
        executor: Executor::Slurm(Box::new(slurm)),
        ..RunOptions::new(recipe.base_dir())
    };
    let err = recipe.run(&[], None, &options).map(|_| ()).unwrap_err().render(100);
    assert!(err.contains("1 of 4 trials submitted to Slurm failed"), "{err}");
    assert!(err.contains("FAILED, exit code 3"), "{err}");
    assert!(err.contains("node lost its disk"), "{err}");
}

#[test]
fn ctrl_c_cancels_the_job_and_keeps_the_finished_trials() {
    if !cluster() {
        return;
    }
    let recipe = random(8, 150);
    let dir = folder("quick", &recipe);
    let mut driver = Command::new(env!("CARGO_BIN_EXE_recipe"))
        .args(["run", "quick.opt", "--executor", "slurm", "--max-parallel", "2"])
        .current_dir(dir.path())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let started = Instant::now();
    while stored(dir.path()).len() < 2 {
        assert!(started.elapsed() < Duration::from_secs(300), "no trial finished");
        assert!(driver.try_wait().unwrap().is_none(), "the driver ended before the Ctrl-C");
        std::thread::sleep(Duration::from_millis(20));
    }
    let pid = driver.id().to_string();
    assert!(Command::new("kill").args(["-INT", &pid]).status().unwrap().success());
    let out = driver.wait_with_output().unwrap();
    assert_eq!(out.status.code(), Some(1));
    let err = text(&out.stderr);
    let job = err
        .split("cancelled Slurm job ")
        .nth(1)
        .and_then(|rest| rest.split_whitespace().next())
        .unwrap_or_else(|| panic!("the error names the cancelled job: {err}"));
    assert_eq!(squeue_lists(job), "", "no task of job {job} is left");
    let kept = stored(dir.path()).len();
    assert!((2..8).contains(&kept), "{kept} trials kept");

    // Going on submits only the rest, and ends as a local run does.
    let out = run(dir.path(), &["run", "quick.opt", "--executor", "slurm"]);
    let stdout = text(&out.stdout);
    assert!(stdout.contains(&format!("{kept} from the trial store")), "{stdout}");
    assert_eq!(jobs(&stdout)[0].1.len(), 8 - kept, "{stdout}");
    let local = folder("quick", &recipe);
    run(local.path(), &["run", "quick.opt"]);
    assert!(outputs(local.path()) == outputs(dir.path()), "the results of a local run");
}

/// A search interrupted on the cluster goes on locally from its finished trials. The tasks
/// run here by hand, as a cluster would run them; no cluster is needed.
#[test]
fn a_search_started_on_slurm_finishes_locally() {
    let recipe = random(4, 3);
    let dir = folder("quick", &recipe);
    run(dir.path(), &["run", "quick.opt", "--only", "base"]);
    let hash = step_hash(dir.path(), "tuned");
    for index in ["0", "3"] {
        let args = ["trial", "quick.opt", "--step", "tuned", "--hash", &hash, "--index", index];
        run(dir.path(), &args);
    }
    let out = run(dir.path(), &["run", "quick.opt"]);
    assert!(text(&out.stdout).contains("2 from the trial store"), "{}", text(&out.stdout));
    let local = folder("quick", &recipe);
    run(local.path(), &["run", "quick.opt"]);
    assert!(outputs(local.path()) == outputs(dir.path()), "the results of a local run");
}

fn step_hash(dir: &Path, step: &str) -> String {
    let compiled = recipe::compile(&dir.join("quick.opt"), &[]).unwrap();
    compiled.graph.node(step).unwrap().hash.clone()
}

/// Stand-ins for Slurm's commands in a folder of their own: `sbatch` runs every task of the
/// array at once, in order, as job 77, then prints the job id; `scontrol` has forgotten every
/// job, as the controller does some minutes after a job ends; `sacct` prints `accounting`, or
/// fails as where the cluster keeps none.
fn forgetful_slurm(accounting: Option<&str>) -> tempfile::TempDir {
    let dir = tempfile::tempdir().unwrap();
    let sbatch = r#"#!/bin/sh
for arg in "$@"; do
  case "$arg" in
    --array=*) spec="${arg#--array=}" ;;
    --output=*) out="${arg#--output=}" ;;
  esac
  script="$arg"
done
for part in $(echo "${spec%%\%*}" | tr ',' ' '); do
  case "$part" in
    *-*) seq "${part%-*}" "${part#*-}" ;;
    *) echo "$part" ;;
  esac
done | while read -r i; do
  log=$(echo "$out" | sed "s/%A/77/; s/%a/$i/")
  SLURM_ARRAY_JOB_ID=77 SLURM_ARRAY_TASK_ID=$i SLURM_JOB_ID=$((100 + i)) \
    sh "$script" >"$log" 2>&1
done
echo 77
"#;
    let sacct = match accounting {
        Some(lines) => format!("#!/bin/sh\nprintf '{lines}'\n"),
        None => "#!/bin/sh\necho 'Slurm accounting storage is disabled' >&2\nexit 1\n".into(),
    };
    let commands = [
        ("sbatch", sbatch.to_string()),
        ("scontrol", "#!/bin/sh\necho 'Invalid job id specified' >&2\nexit 1\n".into()),
        ("sacct", sacct),
        ("squeue", "#!/bin/sh\nexit 0\n".into()),
        ("scancel", "#!/bin/sh\nexit 0\n".into()),
    ];
    for (name, script) in commands {
        executable(&dir.path().join(name), &script);
    }
    dir
}

/// `recipe run` with Slurm's commands taken from `fake` before the rest of the PATH.
fn run_with(fake: &Path, dir: &Path, args: &[&str]) -> Output {
    let path = format!("{}:{}", fake.display(), std::env::var("PATH").unwrap_or_default());
    Command::new(env!("CARGO_BIN_EXE_recipe"))
        .args(args)
        .current_dir(dir)
        .env("PATH", path)
        .env("NO_COLOR", "1")
        .env("COLUMNS", "100")
        .output()
        .unwrap()
}

/// A job the controller forgot before the driver saw it end, on a cluster without
/// accounting: the trials on disk tell that it completed. Needs no cluster.
#[test]
fn a_forgotten_job_is_judged_by_its_results() {
    let fake = forgetful_slurm(None);
    let dir = folder("quick", &random(4, 2));
    let out = run_with(fake.path(), dir.path(), &["run", "quick.opt", "--executor", "slurm"]);
    assert!(out.status.success(), "{}", text(&out.stderr));
    assert!(text(&out.stdout).contains("array job 77 (trials 0-3)"), "{}", text(&out.stdout));
    let trials = stored(dir.path());
    assert_eq!(trials.len(), 4);
    assert!(trials.iter().all(|m| m["slurm_array_job_id"] == "77"));
    let local = folder("quick", &random(4, 2));
    run(local.path(), &["run", "quick.opt"]);
    assert!(outputs(local.path()) == outputs(dir.path()), "the results of a local run");
}

/// Accounting's word on a task that never wrote its trial. Needs no cluster.
#[test]
fn accounting_names_how_a_forgotten_task_ended() {
    let fake = forgetful_slurm(Some("77_0|COMPLETED|0:0\\n77_1|OUT_OF_MEMORY|0:125\\n"));
    // Only trial 0 runs: the stand-in `sbatch` takes the array from the first task id.
    let sbatch = fake.path().join("sbatch");
    let text_of = std::fs::read_to_string(&sbatch).unwrap();
    std::fs::write(&sbatch, text_of.replace("seq \"${part%-*}\" \"${part#*-}\"", "echo 0"))
        .unwrap();
    let dir = folder("quick", &random(2, 2));
    let out = run_with(fake.path(), dir.path(), &["run", "quick.opt", "--executor", "slurm"]);
    assert_eq!(out.status.code(), Some(1));
    let err = text(&out.stderr);
    assert!(err.contains("1 of 2 trials submitted to Slurm failed"), "{err}");
    assert!(err.contains("trial 1 (77_1): OUT_OF_MEMORY"), "{err}");
    assert_eq!(stored(dir.path()).len(), 1);
}

#[test]
fn without_slurm_the_error_names_the_missing_command() {
    let dir = folder("quick", &random(2, 1));
    let empty = tempfile::tempdir().unwrap();
    let out = Command::new(env!("CARGO_BIN_EXE_recipe"))
        .args(["run", "quick.opt", "--executor", "slurm"])
        .current_dir(dir.path())
        .env("PATH", empty.path())
        .env("NO_COLOR", "1")
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(1));
    let err = text(&out.stderr);
    assert!(err.contains("`--executor slurm` needs Slurm's `sbatch`, which is not on the PATH"));
    assert!(err.contains("slurm-client"), "the help says where to get it: {err}");
    assert!(!dir.path().join("out").exists() && !dir.path().join(".recipe/cache").exists());
}

/// What `sbatch` refuses is reported in its own words, and nothing is left submitted.
#[test]
fn a_refused_submission_is_reported() {
    if !cluster() {
        return;
    }
    let dir = folder("quick", &random(2, 1));
    let out = common::cli(
        &["run", "quick.opt", "--executor", "slurm", "--partition", "nosuch"],
        dir.path(),
    );
    assert_eq!(out.status.code(), Some(1));
    let err = text(&out.stderr);
    assert!(err.contains("`sbatch` failed"), "{err}");
    assert!(err.to_lowercase().contains("invalid partition"), "{err}");
    assert!(err.contains("check `--partition`"), "{err}");
    assert!(!dir.path().join("out").exists());
}

#[test]
fn slurm_options_need_the_slurm_executor() {
    let dir = folder("quick", &random(2, 1));
    let out = common::cli(&["run", "quick.opt", "--partition", "gpu"], dir.path());
    assert_eq!(out.status.code(), Some(1));
    let err = text(&out.stderr);
    assert!(err.contains("`--partition` is an option of `--executor slurm`"), "{err}");
}

/// `recipe clean` drops the Slurm logs of searches that no recipe in the folder has.
#[test]
fn clean_drops_the_logs_of_searches_gone() {
    let dir = folder("quick", &random(2, 1));
    for step in ["tuned", "renamed"] {
        let logs = dir.path().join(".recipe/slurm/quick").join(step);
        std::fs::create_dir_all(&logs).unwrap();
        std::fs::write(logs.join("7_0.log"), "trial 0\n").unwrap();
    }
    let out = run(dir.path(), &["clean"]);
    assert!(text(&out.stdout).contains("1 folders of Slurm logs"), "{}", text(&out.stdout));
    assert!(dir.path().join(".recipe/slurm/quick/tuned/7_0.log").is_file());
    assert!(!dir.path().join(".recipe/slurm/quick/renamed").exists());
}

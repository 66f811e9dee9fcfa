//! The `recipe` command line: parse the arguments, call the library, print
//! its results and diagnostics, and exit 0 (success), 1 (the recipe, its
//! inputs or a step failed) or 2 (a malformed command line).

use std::io::IsTerminal;
use std::path::{Path, PathBuf};
use std::process::ExitCode;

use clap::{Args, Parser, Subcommand};
use miette::{GraphicalReportHandler, GraphicalTheme};

use recipe::check::Device;
use recipe::exec::{Executor, ProgressMode, RunOptions, SlurmOptions, TrialTask};
use recipe::{Error, Recipe};

#[derive(Parser)]
#[command(
    name = "recipe",
    version,
    about = "Train, search, prune, quantize and evaluate models from declarative recipes"
)]
struct Cli {
    /// Show more: `-v` for progress and decisions, `-vv` for every batch.
    #[arg(short, long, action = clap::ArgAction::Count, global = true)]
    verbose: u8,

    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Check, compile and run a recipe.
    Run {
        #[command(flatten)]
        recipe: RecipeArgs,
        /// Run on this device instead of the recipe's: `cpu`, `cuda` or `cuda(N)`.
        #[arg(long, value_parser = parse_device)]
        device: Option<Device>,
        /// Run only this step and the steps it needs.
        #[arg(long, value_name = "NAME")]
        only: Option<String>,
        /// Run this many independent steps, and trials of a search, side by side; the
        /// results do not depend on it. Defaults to the number of CPUs.
        #[arg(long, value_name = "N", value_parser = clap::value_parser!(u16).range(1..))]
        jobs: Option<u16>,
        /// Run every step, even those whose results the cache holds (and store them again).
        #[arg(long)]
        no_cache: bool,
        /// Where the trials of a search train: `local`, on this machine, or `slurm`, as one
        /// Slurm array job per rung; the results are the same.
        #[arg(long, value_enum, default_value_t = ExecutorKind::Local)]
        executor: ExecutorKind,
        #[command(flatten)]
        slurm: SlurmArgs,
    },
    /// Train one trial of a search into the trial store: what each task of a Slurm array job
    /// runs. The trial's number defaults to `SLURM_ARRAY_TASK_ID`.
    #[command(hide = true)]
    Trial {
        #[command(flatten)]
        recipe: RecipeArgs,
        /// The search step.
        #[arg(long, value_name = "NAME")]
        step: String,
        /// The step's hash when the trial was submitted.
        #[arg(long)]
        hash: String,
        /// The rung of successive halving, 0 for other strategies.
        #[arg(long, default_value_t = 0)]
        rung: usize,
        /// The trial's number.
        #[arg(long)]
        index: Option<usize>,
        #[arg(long, value_parser = parse_device)]
        device: Option<Device>,
    },
    /// Remove the cache entries, stored search trials and Slurm logs that no recipe in a folder
    /// refers to.
    Clean {
        /// The folder of the recipes and their `.recipe/` cache.
        #[arg(default_value = ".")]
        dir: PathBuf,
    },
    /// Compare the metrics recorded in lock files.
    Metrics {
        #[command(subcommand)]
        command: MetricsCommand,
    },
    /// Parse and check a recipe; reads data and weight headers, no tensors.
    Check {
        #[command(flatten)]
        recipe: RecipeArgs,
    },
    /// Show the steps in run order, with what each reads and writes.
    Plan {
        #[command(flatten)]
        recipe: RecipeArgs,
    },
    /// Print the execution graph as Graphviz DOT.
    Graph {
        #[command(flatten)]
        recipe: RecipeArgs,
    },
    /// Rewrite recipes in the one canonical layout, keeping every comment.
    Fmt {
        /// The recipe files, `NAME.opt`.
        #[arg(required = true)]
        files: Vec<PathBuf>,
        /// Write nothing: print a diff of what would change, and exit 1 if anything would.
        #[arg(long)]
        check: bool,
    },
    /// Show the tensors of a weights file (dtype, shape, zeros, stored bytes)
    /// and the metadata a run wrote into it.
    Inspect {
        /// A `.safetensors` or `.gguf` file.
        file: PathBuf,
        /// Print JSON, for scripts.
        #[arg(long)]
        json: bool,
    },
}

#[derive(Subcommand)]
enum MetricsCommand {
    /// What changed in each step's metrics between the lock files at a git revision and in
    /// the working tree.
    Diff {
        /// The git revision to compare with.
        #[arg(default_value = "HEAD")]
        rev: String,
        /// Recipes (`NAME.opt`) or lock files (`NAME.lock`); by default every lock file in
        /// the current folder and below that sits beside a recipe.
        files: Vec<PathBuf>,
    },
}

#[derive(Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
enum ExecutorKind {
    Local,
    Slurm,
}

/// How `--executor slurm` submits; each option is refused with `--executor local`.
#[derive(Args)]
#[command(next_help_heading = "Slurm (with --executor slurm)")]
struct SlurmArgs {
    /// The partition to submit to (`sbatch --partition`).
    #[arg(long)]
    partition: Option<String>,
    /// The time limit of each trial (`sbatch --time`), such as `30:00` or `1-00:00:00`.
    #[arg(long)]
    time: Option<String>,
    /// At most this many trials of a rung run at once (`--array=...%K`).
    #[arg(long, value_name = "K", value_parser = clap::value_parser!(u32).range(1..))]
    max_parallel: Option<u32>,
    /// One more argument for `sbatch`, such as `--gres=gpu:1`; repeatable.
    #[arg(long = "sbatch-arg", value_name = "ARG", allow_hyphen_values = true)]
    sbatch_args: Vec<String>,
    /// Submit the trials that failed again, up to N times.
    #[arg(long, value_name = "N", default_value_t = 0)]
    retries: usize,
}

impl SlurmArgs {
    /// The first Slurm flag given, by name.
    fn first_given(&self) -> Option<&'static str> {
        [
            ("--partition", self.partition.is_some()),
            ("--time", self.time.is_some()),
            ("--max-parallel", self.max_parallel.is_some()),
            ("--sbatch-arg", !self.sbatch_args.is_empty()),
            ("--retries", self.retries > 0),
        ]
        .into_iter()
        .find_map(|(flag, given)| given.then_some(flag))
    }

    fn executor(self, kind: ExecutorKind) -> Result<Executor, Error> {
        if kind == ExecutorKind::Local {
            return match self.first_given() {
                None => Ok(Executor::Local),
                Some(flag) => Err(Error::Command {
                    message: format!("`{flag}` is an option of `--executor slurm`"),
                    help: Some("add `--executor slurm`, or leave the option out".into()),
                }),
            };
        }
        // The tasks run this very binary.
        let program = std::env::current_exe().map_err(|e| Error::Command {
            message: format!("cannot tell where the `recipe` binary is: {e}"),
            help: None,
        })?;
        let mut options = SlurmOptions::new(program);
        options.partition = self.partition;
        options.time = self.time;
        options.max_parallel = self.max_parallel.map(|k| k as usize);
        options.sbatch_args = self.sbatch_args;
        options.retries = self.retries;
        Ok(Executor::Slurm(Box::new(options)))
    }
}

#[derive(Args)]
struct RecipeArgs {
    /// The recipe file, `NAME.opt`.
    file: PathBuf,
    /// Override a setting, `block.key=value` in recipe syntax; repeatable.
    #[arg(long = "set", value_name = "BLOCK.KEY=VALUE")]
    set: Vec<String>,
    /// Write outputs, the cache and the lock file under DIR instead of the recipe's folder;
    /// the recipe's paths may then be absolute, as long as they lie inside DIR.
    #[arg(long, value_name = "DIR")]
    out_dir: Option<PathBuf>,
}

impl RecipeArgs {
    fn read(&self) -> Result<Recipe, Error> {
        let mut recipe = Recipe::read(&self.file)?;
        recipe.out_dir = self.out_dir.clone();
        Ok(recipe)
    }
}

fn parse_device(s: &str) -> Result<Device, String> {
    let s = s.trim();
    if s == "cpu" {
        return Ok(Device::Cpu);
    }
    if s == "cuda" {
        return Ok(Device::Cuda(0));
    }
    s.strip_prefix("cuda(")
        .and_then(|rest| rest.strip_suffix(')'))
        .and_then(|n| n.trim().parse().ok())
        .map(Device::Cuda)
        .ok_or_else(|| format!("`{s}` is not a device: use `cpu`, `cuda` or `cuda(N)`"))
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    init_logging(cli.verbose);
    let trial = matches!(cli.command, Command::Trial { .. });
    match run(cli.command) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            report(&e);
            if trial {
                // The driver quotes the last line of a failed task's log: one line that says
                // it all.
                println!("error: {}", e.to_string().replace('\n', " "));
            }
            ExitCode::from(1)
        }
    }
}

fn init_logging(verbose: u8) {
    let level = match verbose {
        0 => "warn",
        1 => "info",
        2 => "debug",
        _ => "trace",
    };
    let filter = tracing_subscriber::EnvFilter::try_from_env("RECIPE_LOG")
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new(format!("recipe={level}")));
    tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr)
        // Logs that go to a file, such as a Slurm task's, stay free of escape codes.
        .with_ansi(std::io::stderr().is_terminal())
        .with_target(false)
        .without_time()
        .init();
}

fn report(e: &Error) {
    let theme = if std::io::stderr().is_terminal() {
        GraphicalTheme::unicode()
    } else {
        GraphicalTheme::unicode_nocolor()
    };
    let width = terminal_width();
    let handler = GraphicalReportHandler::new_themed(theme).with_width(width);
    let mut out = String::new();
    for r in e.reports() {
        let _ = handler.render_report(&mut out, r.as_ref());
        out.push('\n');
    }
    if let Error::Problems { summary, .. } = e {
        out.push_str(summary);
        out.push('\n');
    }
    eprint!("{out}");
}

fn terminal_width() -> usize {
    std::env::var("COLUMNS").ok().and_then(|c| c.parse().ok()).unwrap_or(100)
}

fn run(command: Command) -> Result<(), Error> {
    match command {
        Command::Check { recipe: args } => {
            let recipe = args.read()?;
            let (_, checked) = recipe.check(&args.set)?;
            println!("{}: {} blocks, no problems", args.file.display(), checked.blocks.len());
            print!("{}", recipe::graph::render_touched(&checked));
        }
        Command::Plan { recipe: args } => {
            let recipe = args.read()?;
            let compiled = recipe.compile(&args.set)?;
            let cached =
                recipe::exec::cached_steps(&compiled.graph, &compiled.checked.out_root.dir);
            print!("{}", recipe::graph::render_plan(&compiled.checked, &compiled.graph, &cached));
        }
        Command::Graph { recipe: args } => {
            let recipe = args.read()?;
            let compiled = recipe.compile(&args.set)?;
            print!("{}", recipe::graph::to_dot(&compiled.graph, &compiled.checked.settings.name));
        }
        Command::Fmt { files, check } => {
            // Every file is tried, so one that does not parse does not keep
            // the others unformatted; the exit status sums them up.
            let (mut unformatted, mut failed) = (Vec::new(), Vec::new());
            for file in files {
                let recipe = match Recipe::read(&file).and_then(|r| r.parse().map(|_| r)) {
                    Ok(recipe) => recipe,
                    Err(e) => {
                        report(&e);
                        failed.push(file);
                        continue;
                    }
                };
                let formatted = recipe::syntax::format(&recipe.text).expect("the recipe parsed");
                if formatted == recipe.text {
                    continue;
                }
                if check {
                    let name = file.display().to_string();
                    print!("{}", recipe::syntax::fmt::diff(&name, &recipe.text, &formatted));
                    unformatted.push(file);
                } else if let Err(source) =
                    recipe::formats::write_atomic(&file, formatted.as_bytes())
                {
                    report(&Error::Write { path: file.clone(), source });
                    failed.push(file);
                }
            }
            if !unformatted.is_empty() || !failed.is_empty() {
                return Err(Error::NotFormatted { unformatted, failed });
            }
        }
        Command::Inspect { file, json } => {
            if json {
                println!("{}", recipe::formats::inspect::inspect_json(&file, &file)?);
            } else {
                print!("{}", recipe::formats::inspect::inspect(&file, &file)?);
            }
        }
        Command::Clean { dir } => {
            let cleaned = recipe::clean(&dir)?;
            println!(
                "removed {} cache entries, {} stored searches and {} folders of Slurm logs ({}); \
                 kept {}",
                cleaned.entries,
                cleaned.searches,
                cleaned.slurm_logs,
                recipe::steps::eval::human_bytes(cleaned.bytes),
                cleaned.kept
            );
        }
        Command::Metrics { command: MetricsCommand::Diff { rev, files } } => {
            print!("{}", recipe::metrics_diff(&rev, &files)?);
        }
        Command::Trial { recipe: args, step, hash, rung, index, device } => {
            let recipe = args.read()?;
            let slurm = |name: &str| std::env::var(name).ok().filter(|v| !v.is_empty());
            let Some(index) = index.or_else(|| slurm("SLURM_ARRAY_TASK_ID")?.parse().ok()) else {
                return Err(Error::Command {
                    message: "which trial? give `--index N` or run as a task of an array job \
                              (`SLURM_ARRAY_TASK_ID`)"
                        .into(),
                    help: None,
                });
            };
            let mut ran_under = std::collections::BTreeMap::new();
            for (var, key) in [
                ("SLURM_ARRAY_JOB_ID", "slurm_array_job_id"),
                ("SLURM_ARRAY_TASK_ID", "slurm_array_task_id"),
                ("SLURM_JOB_ID", "slurm_job_id"),
                ("SLURMD_NODENAME", "slurm_node"),
            ] {
                if let Some(value) = slurm(var) {
                    ran_under.insert(key.to_string(), value);
                }
            }
            let task = TrialTask { step, hash, index, rung, ran_under };
            let trial = recipe.trial(&args.set, device, &task)?;
            let how = if trial.stored {
                "was in the trial store".to_string()
            } else {
                format!("trained in {:.2} s", trial.seconds)
            };
            println!(
                "trial {index} of `{}`, rung {rung} ({} epochs): objective {} ({how})",
                task.step, trial.epochs, trial.objective
            );
        }
        Command::Run { recipe: args, device, only, jobs, no_cache, executor, slurm } => {
            let executor = slurm.executor(executor)?;
            let recipe = args.read()?;
            let progress = if std::io::stderr().is_terminal() {
                ProgressMode::Bar
            } else {
                ProgressMode::Lines
            };
            let jobs = jobs.map(usize::from).unwrap_or_else(|| {
                std::thread::available_parallelism().map(|n| n.get()).unwrap_or(1)
            });
            let options = RunOptions {
                device,
                base_dir: recipe.base_dir(),
                progress,
                jobs,
                use_cache: !no_cache,
                executor,
            };
            let (_, report) = recipe.run(&args.set, only.as_deref(), &options)?;
            for (step, notes) in &report.notes {
                println!("{step}:");
                for note in notes {
                    println!("  {note}");
                }
                println!();
            }
            for table in &report.tables {
                println!("{}", table.render());
            }
            let out_dir = recipe.out_dir.clone().unwrap_or_else(|| recipe.base_dir());
            for path in &report.written {
                println!("wrote {}", shown(&out_dir, path));
            }
            for (step, why) in &report.damaged {
                println!("recomputed `{step}`: its cache entry was damaged ({why})");
            }
            let ran = report.ran();
            let cached = report.steps.len() - ran.len();
            if ran.is_empty() {
                println!("{} steps, all from the cache", report.steps.len());
            } else {
                println!("ran {}; {cached} from the cache", ran.join(", "));
            }
        }
    }
    Ok(())
}

fn shown(base: &Path, path: &Path) -> String {
    if base == Path::new(".") {
        path.display().to_string()
    } else {
        base.join(path).display().to_string()
    }
}

//! The command line as clap reads it: the commands, their arguments and the fixed sets of
//! values some flags take. What each command does is in its module of `commands/`.

use std::path::PathBuf;

use clap::{Args, Parser, Subcommand, ValueEnum};

use crate::commands::swe;
use crate::exit::input;

#[derive(Parser)]
#[command(
    name = "trawl",
    version,
    about = "Generate training data for LLM agents: roll out, score, select, export."
)]
pub(crate) struct Cli {
    /// More log output (-v info, -vv debug, -vvv trace); RUST_LOG overrides.
    #[arg(short, long, global = true, action = clap::ArgAction::Count)]
    pub(crate) verbose: u8,
    /// Load a plugin library (a `.so` built from a trawl plugin crate); repeatable. The folders
    /// in TRAWL_PLUGIN_PATH and a config's `plugins` list are loaded too.
    #[arg(long = "plugin", value_name = "PATH", global = true)]
    pub(crate) plugins: Vec<PathBuf>,
    /// Also write log lines and progress lines to this file (appended; never coloured).
    #[arg(long, value_name = "PATH", global = true)]
    pub(crate) log_file: Option<PathBuf>,
    #[command(subcommand)]
    pub(crate) command: Command,
}

#[derive(Subcommand)]
// Parsed once per process: the size of the largest variant does not matter.
#[allow(clippy::large_enum_variant)]
pub(crate) enum Command {
    /// The built-in example end to end: generated math problems on the embedded model, then
    /// stats and an SFT export. Needs no server and no API key.
    Quickstart {
        /// Run directory.
        #[arg(long, default_value = "runs/quickstart")]
        out: PathBuf,
    },
    /// Run an experiment config; running again into the same directory resumes it.
    Run(RunArgs),
    /// Check a config without running it: builds every component as `run` would (plugins,
    /// tasks, tool domains, SWE images, pair compatibility, evaluator scopes, scoring) and fails
    /// exactly when `run` would refuse it.
    Check {
        /// The experiment config (TOML).
        config: PathBuf,
        /// Also ask each model server for its model list (`GET /models`).
        #[arg(long)]
        ping: bool,
        /// Change one field of the config for this command: KEY is a dotted path, numbers
        /// picking list entries (`models.0.sampling.temperature`, `environments.0.files`,
        /// `name`); VALUE is a TOML value (`0.7`, `true`, `["a.jsonl"]`), or else a bare string
        /// (`data/a.jsonl`). Repeatable; applied in order.
        #[arg(long = "set", value_name = "KEY=VALUE")]
        set: Vec<String>,
        /// Also write every task the run would start to FILE, one JSON line each
        /// (`{"environment", "id", ...the task's data}`): to read them, or to split a generated set
        /// into training and held-out files. FILE must not exist yet.
        #[arg(long, value_name = "FILE")]
        tasks_out: Option<PathBuf>,
    },
    /// Success rate, mean reward, pass@k and spreads, by environment × scaffold × model or any
    /// key, with every evaluator's own verdicts.
    Stats {
        /// The run directory (or a trajectories .jsonl file, such as a `--format trajectory`
        /// export).
        run: PathBuf,
        /// Group by these keys, comma-separated: environment, scaffold, model, task, sample,
        /// exit_status, or a task data field (`level`, `task.meta.difficulty`).
        #[arg(
            long,
            value_name = "KEYS",
            default_value = "environment,scaffold,model"
        )]
        by: String,
        /// Output: text, markdown (md), csv or json.
        #[arg(long, value_name = "FORMAT", value_enum, default_value_t = StatsFormat::Text)]
        format: StatsFormat,
        /// Print JSON for scripts (same as --format json).
        #[arg(long)]
        json: bool,
        /// Leave out damaged lines of trajectories.jsonl (each is listed) instead of refusing.
        #[arg(long)]
        skip_bad_lines: bool,
    },
    /// Compare two runs, or two groups of one run, task by task: change in success rate and mean
    /// reward with paired bootstrap intervals, an exact sign test, the tasks that flipped.
    Diff(DiffArgs),
    /// Show trajectories as a conversation: messages, tool calls and results (long ones
    /// folded), the ending, each evaluator's verdict. Colour on a terminal only.
    Show(ShowArgs),
    /// One self-contained HTML file (no network requests) with a run's numbers and charts:
    /// success and reward with intervals, pass@k curves, distributions, exit statuses, a
    /// per-task table, examples; with two runs, the task-by-task comparison.
    Report(ReportArgs),
    /// A local web application to browse runs: filter, read a rollout as a conversation, put
    /// two rollouts of a task side by side, accept or reject with a note (kept in the run's
    /// labels.jsonl, used by `trawl export --labels`).
    View(ViewArgs),
    /// Select trajectories and write a training file.
    Export(ExportArgs),
    /// List every registered kind, per role, and the plugin libraries loaded.
    Plugins {
        /// Also load the plugins this config lists.
        #[arg(long)]
        config: Option<PathBuf>,
    },
    /// Import trajectories of mini-swe-agent (`*.traj.json`) and SWE-agent (`*.traj`) into a run
    /// directory, to score, select and export them with trawl.
    Import(swe::ImportArgs),
    /// SWE environment tools: build its images offline, write harness reports.
    #[command(subcommand)]
    Swe(swe::SweCommand),
}

#[derive(Args)]
pub(crate) struct RunArgs {
    /// The experiment config (TOML).
    pub(crate) config: PathBuf,
    /// Run directory; default runs/<config name>.
    #[arg(long)]
    pub(crate) out: Option<PathBuf>,
    /// Resume even if the run directory was started with a different config.
    #[arg(long)]
    pub(crate) force: bool,
    /// Change one field of the config for this command: KEY is a dotted path, numbers
    /// picking list entries (`models.0.sampling.temperature`, `environments.0.files`,
    /// `name`); VALUE is a TOML value (`0.7`, `true`, `["a.jsonl"]`), or else a bare string
    /// (`data/a.jsonl`). Repeatable; applied in order.
    #[arg(long = "set", value_name = "KEY=VALUE")]
    pub(crate) set: Vec<String>,
    /// After Ctrl-C, seconds in-flight episodes get to finish before they are cut short.
    #[arg(long, default_value_t = 30.0, allow_negative_numbers = true)]
    pub(crate) grace_secs: f64,
    /// No progress bar and no progress lines.
    #[arg(long, short)]
    pub(crate) quiet: bool,
    /// Without a terminal (or with --log-file), seconds between plain progress lines.
    #[arg(long, default_value_t = 30.0, value_name = "SECS")]
    pub(crate) progress_secs: f64,
}

#[derive(Args)]
pub(crate) struct ReportArgs {
    /// One or two runs (run directories or trajectories .jsonl files).
    #[arg(required = true, num_args = 1..=2)]
    pub(crate) runs: Vec<PathBuf>,
    /// The HTML file to write.
    #[arg(long, short, default_value = "report.html")]
    pub(crate) output: PathBuf,
    /// Replace the output if it exists.
    #[arg(long)]
    pub(crate) force: bool,
    /// Leave out damaged lines of trajectories.jsonl (each is listed) instead of refusing.
    #[arg(long)]
    pub(crate) skip_bad_lines: bool,
}

/// The bounds of a `--where` filter on each record (`export`, `show`).
#[derive(Args)]
pub(crate) struct WhereLimitArgs {
    /// Seconds a --where filter may run on one record before the command fails.
    #[arg(long, value_name = "SECS", default_value_t = 5.0)]
    pub(crate) where_timeout: f64,
    /// MiB by which a --where filter may grow trawl's memory on one record (deep recursion
    /// included) before the command fails.
    #[arg(long, value_name = "MIB", default_value_t = 512)]
    pub(crate) where_memory: u64,
}

impl WhereLimitArgs {
    /// `filter` compiled under these bounds; a bad filter or bound is bad input (exit 2).
    pub(crate) fn compile(&self, filter: &str) -> anyhow::Result<trawl_core::filter::RecordFilter> {
        let limits = trawl_core::filter::FilterLimits::new(self.where_timeout, self.where_memory)
            .map_err(|e| input(format!("--where-timeout/--where-memory: {e}")))?;
        Ok(trawl_core::filter::RecordFilter::compile(filter)
            .map_err(|e| input(format!("--where: {e}")))?
            .with_limits(limits))
    }
}

#[derive(Args)]
pub(crate) struct ViewArgs {
    /// Runs (run directories or trajectories .jsonl files).
    #[arg(required = true)]
    pub(crate) runs: Vec<PathBuf>,
    /// The port on 127.0.0.1 to serve on (0: any free port).
    #[arg(long, default_value_t = 8711)]
    pub(crate) port: u16,
}

#[derive(Args)]
pub(crate) struct ShowArgs {
    /// A run directory or a trajectories .jsonl file.
    pub(crate) run: PathBuf,
    /// Only this task (its id), every sample.
    #[arg(long)]
    pub(crate) task: Option<String>,
    /// Only rollouts this jq filter selects (as for `trawl export --where`).
    #[arg(long = "where", value_name = "FILTER")]
    pub(crate) where_filter: Option<String>,
    #[command(flatten)]
    pub(crate) where_limits: WhereLimitArgs,
    /// Only successful rollouts.
    #[arg(long, conflicts_with = "failed")]
    pub(crate) success: bool,
    /// Only rollouts that failed (finished, scored, not successful).
    #[arg(long)]
    pub(crate) failed: bool,
    /// At most this many rollouts.
    #[arg(long, short = 'n', default_value_t = 3)]
    pub(crate) limit: usize,
    /// Lines of a long tool result or system prompt shown before folding (0: fold nothing).
    #[arg(long, default_value_t = 12)]
    pub(crate) fold: usize,
    /// Fold nothing.
    #[arg(long)]
    pub(crate) full: bool,
    /// Leave out damaged lines of trajectories.jsonl (each is listed) instead of refusing.
    #[arg(long)]
    pub(crate) skip_bad_lines: bool,
}

/// `trawl stats --format`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub(crate) enum StatsFormat {
    Text,
    #[value(alias = "md")]
    Markdown,
    Csv,
    Json,
}

/// `trawl diff --format`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub(crate) enum DiffFormat {
    Text,
    #[value(alias = "md")]
    Markdown,
    Json,
}

#[derive(Args)]
pub(crate) struct DiffArgs {
    /// Run A (a run directory or trajectories .jsonl file).
    pub(crate) a: PathBuf,
    /// Run B; leave out to compare two groups of run A (then give --a and --b).
    pub(crate) b: Option<PathBuf>,
    /// Which of A's rollouts: KEY=VALUE[,KEY=VALUE] (scaffold=chat, model=big, level=3).
    #[arg(long = "a", value_name = "SELECTOR")]
    pub(crate) select_a: Option<String>,
    /// Which of B's rollouts, as for --a.
    #[arg(long = "b", value_name = "SELECTOR")]
    pub(crate) select_b: Option<String>,
    /// Output: text, markdown (md) or json.
    #[arg(long, value_enum, default_value_t = DiffFormat::Text)]
    pub(crate) format: DiffFormat,
    /// Leave out damaged lines of trajectories.jsonl (each is listed) instead of refusing.
    #[arg(long)]
    pub(crate) skip_bad_lines: bool,
}

#[derive(Args)]
pub(crate) struct ExportArgs {
    /// The run directory.
    pub(crate) run: PathBuf,
    /// Output format: a registered exporter (`trawl plugins` lists them).
    #[arg(long, short, default_value = "openai")]
    pub(crate) format: String,
    /// Output file; default RUN/export-<format>.jsonl. Counts go to <output>_stats.json.
    #[arg(long, short)]
    pub(crate) output: Option<PathBuf>,
    /// Keep only successful rollouts.
    #[arg(long)]
    pub(crate) success_only: bool,
    /// Keep only rollouts with at least this reward.
    #[arg(long)]
    pub(crate) min_reward: Option<f64>,
    /// Keep only the best rollout of each task.
    #[arg(long)]
    pub(crate) best_of_n: bool,
    /// Keep at most K rollouts per task, best first.
    #[arg(long, value_name = "K")]
    pub(crate) max_per_task: Option<usize>,
    /// A file of task ids (one per line, `#` comments) never to export.
    #[arg(long, value_name = "FILE")]
    pub(crate) exclude_tasks: Option<PathBuf>,
    /// In multi-agent rollouts (coder and tester), export only this agent's conversation.
    #[arg(long, value_name = "NAME")]
    pub(crate) agent: Option<String>,
    /// For `--format swe_smith`: xml, ticks or tool.
    #[arg(long, value_enum)]
    pub(crate) style: Option<SweStyleArg>,
    /// A setting of the format, KEY=VALUE (repeatable): `--set tools=json`,
    /// `--set min_margin=0.5`, `--set split=test`. VALUE is read as TOML (a number, a boolean,
    /// a string in quotes) and else taken as a string.
    #[arg(long = "set", value_name = "KEY=VALUE")]
    pub(crate) set: Vec<String>,
    /// With --success-only, keep rollouts whose reply was cut off by max_tokens too.
    #[arg(long)]
    pub(crate) include_truncated: bool,
    /// Keep only rollouts this jq filter selects (jq syntax, over each trawl.trajectory record):
    /// `.success and (.messages | length) <= 9`.
    #[arg(long = "where", value_name = "FILTER")]
    pub(crate) where_filter: Option<String>,
    #[command(flatten)]
    pub(crate) where_limits: WhereLimitArgs,
    /// Keep only rollouts the named evaluator scored a success (repeatable).
    #[arg(long, value_name = "EVALUATOR")]
    pub(crate) evaluator_success: Vec<String>,
    /// Keep only rollouts the named evaluator gave at least this reward: NAME=REWARD
    /// (repeatable).
    #[arg(long, value_name = "EVALUATOR=REWARD")]
    pub(crate) evaluator_min_reward: Vec<String>,
    /// Keep only rollouts with at most this many assistant turns.
    #[arg(long, value_name = "N")]
    pub(crate) max_turns: Option<usize>,
    /// Keep only rollouts that used at most this many tokens (prompt and completion).
    #[arg(long, value_name = "N")]
    pub(crate) max_tokens: Option<u64>,
    /// Keep only rollouts with this exit status (repeatable or comma-separated: Submitted,
    /// LimitsExceeded, ...).
    #[arg(long, value_name = "STATUS", value_delimiter = ',', value_parser = exit_status_parser())]
    pub(crate) exit_status: Vec<trawl_core::ExitStatus>,
    /// Leave out rollouts that repeat an earlier kept one of the same task: `exact` (the same
    /// words) or `near` (word 5-gram Jaccard similarity at or above --near-dup-threshold).
    #[arg(long, value_enum)]
    pub(crate) dedup: Option<DedupArg>,
    /// The similarity at which `--dedup near` calls two rollouts duplicates.
    #[arg(long, value_name = "J", default_value_t = 0.9)]
    pub(crate) near_dup_threshold: f64,
    /// Leave out rollouts sharing a word n-gram with this held-out file (JSONL: every string of
    /// each line; or text). Repeatable.
    #[arg(long, value_name = "FILE")]
    pub(crate) decontaminate: Vec<PathBuf>,
    /// The n-gram size of --decontaminate.
    #[arg(long, value_name = "N", default_value_t = 13)]
    pub(crate) decontaminate_ngram: usize,
    /// Keep only tasks the model solves at least this often (the share of a task's scored
    /// rollouts, per scaffold and model, that succeeded): 0.1 with --max-pass-rate 0.9 keeps
    /// what it solves sometimes, not always or never.
    #[arg(long, value_name = "RATE")]
    pub(crate) min_pass_rate: Option<f64>,
    /// Keep only tasks the model solves at most this often.
    #[arg(long, value_name = "RATE")]
    pub(crate) max_pass_rate: Option<f64>,
    /// Use reviewers' labels (made in `trawl view`, kept in RUN/labels.jsonl): `not-rejected`
    /// (the default) leaves out what a reviewer rejected, `accepted` keeps only what a
    /// reviewer accepted.
    #[arg(long, value_name = "accepted|not-rejected", num_args = 0..=1, default_missing_value = "not-rejected")]
    pub(crate) labels: Option<String>,
    /// Leave out damaged lines of trajectories.jsonl (each is listed) instead of refusing.
    #[arg(long)]
    pub(crate) skip_bad_lines: bool,
    /// Replace the output (and its stats file) if they exist. A run's own files are never
    /// replaced.
    #[arg(long)]
    pub(crate) force: bool,
}

/// `--dedup`: which repeats of a task's rollouts are left out.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub(crate) enum DedupArg {
    /// The same words.
    Exact,
    /// Word 5-gram Jaccard similarity at or above --near-dup-threshold.
    Near,
}

/// `--style` of the `swe_smith` format: how the agent's actions are written.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub(crate) enum SweStyleArg {
    Xml,
    Ticks,
    Tool,
}

impl SweStyleArg {
    /// The exporter's own name for it.
    pub(crate) fn as_str(self) -> &'static str {
        match self {
            SweStyleArg::Xml => "xml",
            SweStyleArg::Ticks => "ticks",
            SweStyleArg::Tool => "tool",
        }
    }
}

/// `--exit-status`: one of the record's exit statuses, by its name; clap lists them on a typo.
fn exit_status_parser() -> impl clap::builder::TypedValueParser<Value = trawl_core::ExitStatus> {
    use clap::builder::TypedValueParser;
    clap::builder::PossibleValuesParser::new(trawl_core::ExitStatus::ALL.map(|x| x.as_str()))
        .try_map(|s: String| trawl_core::ExitStatus::parse(&s).ok_or("not an exit status"))
}

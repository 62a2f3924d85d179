//! The `trawl` command line: thin commands over trawl-core and the registered kinds.

#![forbid(unsafe_code)]

use std::collections::HashSet;
use std::io::{BufWriter, IsTerminal, Write};
use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;

use anyhow::{bail, Context};
use clap::{Args, Parser, Subcommand};
use indicatif::{ProgressBar, ProgressStyle};
use trawl_core::engine::{self, RunObserver, RunOptions, RunStatus, StopSignal};
use trawl_core::export::{export_records, Selection};
use trawl_core::registry::{BuildContext, Factory, Registry, Role};
use trawl_core::{store, ExitStatus, ExperimentConfig, TrajectoryRecord};

// Linking these crates is what registers their kinds.
use trawl_bash as _;
use trawl_chat as _;
use trawl_code as _;
use trawl_coder_tester as _;
use trawl_exporters as _;
use trawl_llama as _;
use trawl_math as _;
use trawl_openai as _;
use trawl_swe as _;
use trawl_swe_tools as _;
use trawl_tool_calling as _;
use trawl_tools_env as _;
use trawl_usersim as _;

mod swe;

/// Exit codes scripts can rely on.
mod code {
    /// Bad input: a config, task file or run directory that cannot be used.
    pub const INPUT: u8 = 2;
    /// The run stopped itself: too many infrastructure errors.
    pub const INFRA: u8 = 3;
    /// Stopped by Ctrl-C or SIGTERM; run again to resume.
    pub const INTERRUPTED: u8 = 130;
}

#[derive(Parser)]
#[command(
    name = "trawl",
    version,
    about = "Generate training data for LLM agents: roll out, score, select, export."
)]
struct Cli {
    /// More log output (-v info, -vv debug, -vvv trace); RUST_LOG overrides.
    #[arg(short, long, global = true, action = clap::ArgAction::Count)]
    verbose: u8,
    /// Load a plugin library (a `.so` built from a trawl plugin crate); repeatable. The folders
    /// in TRAWL_PLUGIN_PATH and a config's `plugins` list are loaded too.
    #[arg(long = "plugin", value_name = "PATH", global = true)]
    plugins: Vec<PathBuf>,
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// The built-in example end to end: generated math problems on the embedded model, then
    /// stats and an SFT export. Needs no server and no API key.
    Quickstart {
        /// Run directory.
        #[arg(long, default_value = "runs/quickstart")]
        out: PathBuf,
    },
    /// Run an experiment config; running again into the same directory resumes it.
    Run(RunArgs),
    /// Check a config without running it: every error at once names file, line and field.
    Check {
        /// The experiment config (TOML).
        config: PathBuf,
    },
    /// Success rate, mean reward, pass@k by environment × scaffold × model.
    Stats {
        /// The run directory.
        run: PathBuf,
        /// Print JSON for scripts.
        #[arg(long)]
        json: bool,
        /// Leave out damaged lines of trajectories.jsonl (each is listed) instead of refusing.
        #[arg(long)]
        skip_bad_lines: bool,
    },
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
struct RunArgs {
    /// The experiment config (TOML).
    config: PathBuf,
    /// Run directory; default runs/<config name>.
    #[arg(long)]
    out: Option<PathBuf>,
    /// Resume even if the run directory was started with a different config.
    #[arg(long)]
    force: bool,
    /// After Ctrl-C, seconds in-flight episodes get to finish before they are cut short.
    #[arg(long, default_value_t = 30.0, allow_negative_numbers = true)]
    grace_secs: f64,
    /// No progress bar.
    #[arg(long, short)]
    quiet: bool,
}

#[derive(Args)]
struct ExportArgs {
    /// The run directory.
    run: PathBuf,
    /// Output format: a registered exporter (`trawl plugins` lists them).
    #[arg(long, short, default_value = "openai")]
    format: String,
    /// Output file; default RUN/export-<format>.jsonl. Counts go to <output>_stats.json.
    #[arg(long, short)]
    output: Option<PathBuf>,
    /// Keep only successful rollouts.
    #[arg(long)]
    success_only: bool,
    /// Keep only rollouts with at least this reward.
    #[arg(long)]
    min_reward: Option<f64>,
    /// Keep only the best rollout of each task.
    #[arg(long)]
    best_of_n: bool,
    /// Keep at most K rollouts per task, best first.
    #[arg(long, value_name = "K")]
    max_per_task: Option<usize>,
    /// A file of task ids (one per line, `#` comments) never to export.
    #[arg(long, value_name = "FILE")]
    exclude_tasks: Option<PathBuf>,
    /// In multi-agent rollouts (coder and tester), export only this agent's conversation.
    #[arg(long, value_name = "NAME")]
    agent: Option<String>,
    /// For `--format swe_smith`: xml, ticks or tool.
    #[arg(long, value_name = "STYLE")]
    style: Option<String>,
    /// With --success-only, keep rollouts whose reply was cut off by max_tokens too.
    #[arg(long)]
    include_truncated: bool,
    /// Leave out damaged lines of trajectories.jsonl (each is listed) instead of refusing.
    #[arg(long)]
    skip_bad_lines: bool,
    /// Replace the output (and its stats file) if they exist. A run's own files are never
    /// replaced.
    #[arg(long)]
    force: bool,
}

/// An error that is the user's input, not trawl's fault: exit code 2.
#[derive(Debug)]
struct InputError(String);

impl std::fmt::Display for InputError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.0)
    }
}
impl std::error::Error for InputError {}

fn input(e: impl std::fmt::Display) -> anyhow::Error {
    anyhow::Error::new(InputError(e.to_string()))
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    let default_level = match cli.verbose {
        0 => "warn",
        1 => "info",
        2 => "debug",
        _ => "trace",
    };
    let filter = tracing_subscriber::EnvFilter::try_from_default_env()
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new(default_level));
    tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr)
        .init();
    // Thousands of concurrent episodes need thousands of sockets.
    let _ = rlimit::increase_nofile_limit(u64::MAX);

    let runtime = match tokio::runtime::Runtime::new() {
        Ok(r) => r,
        Err(e) => {
            eprintln!("error: cannot start the async runtime: {e}");
            return ExitCode::FAILURE;
        }
    };
    match runtime.block_on(dispatch(cli.command, &cli.plugins)) {
        Ok(code) => code,
        Err(e) => {
            eprintln!("error: {e:#}");
            if e.downcast_ref::<InputError>().is_some() {
                ExitCode::from(code::INPUT)
            } else {
                ExitCode::FAILURE
            }
        }
    }
}

/// The built-in kinds plus every plugin: the folders of TRAWL_PLUGIN_PATH, then `--plugin`
/// libraries, then the `plugins` list of `config`. A library that cannot be loaded stops here,
/// before anything runs.
fn load_registry(plugins: &[PathBuf], config: Option<&Path>) -> anyhow::Result<Registry> {
    let mut registry = Registry::builtin().map_err(input)?;
    let mut paths = trawl_plugin_loader::from_plugin_path();
    paths.extend(plugins.iter().cloned());
    trawl_plugin_loader::load_into(&mut registry, &paths).map_err(input)?;
    if let Some(config) = config {
        for r in trawl_core::config::plugin_refs(config).map_err(input)? {
            let loaded = trawl_plugin_loader::load(&r.path).and_then(|p| {
                trawl_plugin_loader::register(&mut registry, &p)?;
                Ok(())
            });
            loaded.map_err(|e| input(r.error(e.to_string())))?;
        }
    }
    Ok(registry)
}

async fn dispatch(command: Command, plugins: &[PathBuf]) -> anyhow::Result<ExitCode> {
    let registry = |config: Option<&Path>| load_registry(plugins, config);
    match command {
        Command::Run(args) => {
            let registry = registry(Some(&args.config))?;
            let (config, map) = ExperimentConfig::load(&args.config, &registry).map_err(input)?;
            let out = args
                .out
                .clone()
                .unwrap_or_else(|| engine::default_run_dir(&config));
            let (code, _) = run(&config, &map, &registry, out, &args).await?;
            if code == ExitCode::from(code::INTERRUPTED) {
                eprintln!("run `trawl run {}` again to resume", args.config.display());
            }
            Ok(code)
        }
        Command::Quickstart { out } => quickstart(registry(None)?, out).await,
        Command::Check { config } => {
            let registry = registry(Some(&config))?;
            let (cfg, _) = ExperimentConfig::load(&config, &registry).map_err(input)?;
            println!(
                "{}: ok — {} environment(s), {} scaffold(s), {} model(s), {} sample(s) per task",
                config.display(),
                cfg.environments.len(),
                cfg.scaffolds.len(),
                cfg.models.len(),
                cfg.samples
            );
            Ok(ExitCode::SUCCESS)
        }
        Command::Stats {
            run,
            json,
            skip_bad_lines,
        } => {
            let records = load_run_with(&run, skip_bad_lines)?;
            let stats = trawl_core::stats::compute(&records);
            if json {
                println!("{}", serde_json::to_string_pretty(&stats)?);
            } else {
                print!("{}", stats.render());
            }
            Ok(ExitCode::SUCCESS)
        }
        Command::Export(args) => export(&registry(None)?, args),
        Command::Swe(command) => swe::dispatch(command).await,
        Command::Import(args) => swe::import(args).await,
        Command::Plugins { config } => {
            print!("{}", plugins_listing(&registry(config.as_deref())?));
            Ok(ExitCode::SUCCESS)
        }
    }
}

/// `trawl plugins`: every kind by role, where it came from, and the libraries loaded.
fn plugins_listing(registry: &Registry) -> String {
    use std::fmt::Write as _;
    let mut out = String::new();
    for role in Role::ALL {
        let _ = writeln!(out, "{role}s:");
        for e in registry.kinds(role) {
            let from = match &e.origin {
                trawl_core::registry::Origin::BuiltIn => String::new(),
                trawl_core::registry::Origin::Plugin(p) => format!("  [plugin {}]", p.display()),
            };
            let _ = writeln!(
                out,
                "  {:<16} {}  ({}){from}",
                e.kind, e.description, e.version
            );
        }
    }
    let libraries = registry.libraries();
    if libraries.is_empty() {
        let _ = writeln!(
            out,
            "plugin libraries: none loaded (use --plugin PATH, {} or a config's `plugins` list)",
            trawl_plugin_loader::PLUGIN_PATH_VAR
        );
    } else {
        let _ = writeln!(out, "plugin libraries:");
        for l in libraries {
            let _ = writeln!(
                out,
                "  {} {}  {}\n    ABI {}, built against trawl-core {}; offers {}",
                l.name,
                l.version,
                l.path.display(),
                l.abi_version,
                l.core_version,
                l.kinds.join(", ")
            );
        }
    }
    out
}

/// Reads a run's records, warning about a torn last line (a crash mid-write).
fn load_run(run: &Path) -> anyhow::Result<Vec<TrajectoryRecord>> {
    load_run_with(run, false)
}

/// Reads a run's records strictly: a damaged line is an error naming file and line, unless
/// `skip_bad` (the user's explicit `--skip-bad-lines`), when each is listed and left out.
fn load_run_with(run: &Path, skip_bad: bool) -> anyhow::Result<Vec<TrajectoryRecord>> {
    let path = run.join(store::TRAJECTORIES);
    if !path.exists() {
        return Err(input(format!(
            "{} has no {}: is it a trawl run directory?",
            run.display(),
            store::TRAJECTORIES
        )));
    }
    let (records, report) = if skip_bad {
        store::read_records_skipping(&path)
    } else {
        store::read_records(&path)
    }
    .map_err(|e| {
        input(format!(
            "{e}\n  hint: `--skip-bad-lines` leaves damaged lines out and lists them"
        ))
    })?;
    if !report.skipped.is_empty() {
        eprintln!(
            "warning: left out {} damaged line(s) of {}:",
            report.skipped.len(),
            path.display()
        );
        for e in &report.skipped {
            eprintln!("  {}", e.to_string().lines().next().unwrap_or_default());
        }
    }
    if report.torn_tail.is_some() {
        eprintln!("warning: {}: the last line was cut off mid-write and is ignored; `trawl run` resumes it", path.display());
    }
    Ok(records)
}

/// Progress bar with live success rate.
struct Progress {
    bar: ProgressBar,
    done: AtomicU64,
    successes: AtomicU64,
    infra: AtomicU64,
}

impl Progress {
    fn update_message(&self) {
        let done = self.done.load(Ordering::Relaxed);
        let ok = self.successes.load(Ordering::Relaxed);
        let infra = self.infra.load(Ordering::Relaxed);
        let scored = done.saturating_sub(infra);
        let rate = if scored == 0 {
            0.0
        } else {
            100.0 * ok as f64 / scored as f64
        };
        self.bar.set_message(format!(
            "success {rate:.1}% ({ok}/{scored})  infra errors {infra}"
        ));
    }
}

impl RunObserver for Progress {
    fn started(&self, pending: u64, skipped: u64) {
        self.bar.set_length(pending);
        if skipped > 0 {
            self.bar.println(format!(
                "resuming: {skipped} rollouts already done, {pending} to run"
            ));
        }
        self.update_message();
    }

    fn finished(&self, record: &TrajectoryRecord) {
        self.done.fetch_add(1, Ordering::Relaxed);
        match record.outcome.exit_status {
            ExitStatus::InfraError | ExitStatus::Interrupted => {
                self.infra.fetch_add(1, Ordering::Relaxed);
            }
            _ => {
                self.successes
                    .fetch_add(u64::from(record.success), Ordering::Relaxed);
            }
        }
        self.update_message();
        self.bar.inc(1);
    }
}

/// The quickstart config, built into the binary.
const QUICKSTART: &str = include_str!("../../examples/quickstart.toml");

async fn quickstart(registry: Registry, out: PathBuf) -> anyhow::Result<ExitCode> {
    let (mut config, map) = ExperimentConfig::parse(
        Path::new("examples/quickstart.toml"),
        QUICKSTART,
        &registry,
        "quickstart",
    )
    .map_err(input)?;
    config.base_dir = std::env::current_dir()?;
    let args = RunArgs {
        config: PathBuf::from("examples/quickstart.toml"),
        out: None,
        force: false,
        grace_secs: 30.0,
        quiet: false,
    };
    let (code, summary) = run(&config, &map, &registry, out.clone(), &args).await?;
    if code != ExitCode::SUCCESS {
        return Ok(code);
    }
    let records = load_run(&summary.dir)?;
    println!("{}", trawl_core::stats::compute(&records).render());
    let selection = Selection {
        success_only: true,
        ..Selection::default()
    };
    export_run(
        &registry,
        &records,
        "openai",
        &serde_json::json!({}),
        &selection,
        Destination {
            output: Some(&out.join("sft.jsonl")),
            run: &out,
            // The quickstart's own export, re-made from the whole run each time it is run.
            force: true,
        },
    )?;
    Ok(ExitCode::SUCCESS)
}

/// Runs a loaded config into `out` with a progress bar and Ctrl-C handling.
async fn run(
    config: &ExperimentConfig,
    map: &trawl_core::config::SourceMap,
    registry: &Registry,
    out: PathBuf,
    args: &RunArgs,
) -> anyhow::Result<(ExitCode, engine::RunSummary)> {
    trawl_core::config::check_secs(args.grace_secs, true)
        .map_err(|m| input(format!("--grace-secs {m}")))?;
    let bar = if args.quiet || !std::io::stderr().is_terminal() {
        ProgressBar::hidden()
    } else {
        ProgressBar::new(0)
    };
    bar.set_style(
        ProgressStyle::with_template(
            "{spinner} [{elapsed_precise}] {bar:30} {pos}/{len} {msg} (eta {eta})",
        )
        .unwrap_or_else(|_| ProgressStyle::default_bar()),
    );
    bar.enable_steady_tick(Duration::from_millis(200));
    let progress = Arc::new(Progress {
        bar: bar.clone(),
        done: AtomicU64::new(0),
        successes: AtomicU64::new(0),
        infra: AtomicU64::new(0),
    });
    let stop = StopSignal::default();
    spawn_signal_handler(stop.clone(), trawl_core::config::secs(args.grace_secs));

    eprintln!("trawl: running `{}` into {}", config.name, out.display());
    let summary = engine::run(
        config,
        map,
        registry,
        RunOptions {
            out,
            force: args.force,
            stop,
            observer: progress.clone(),
        },
    )
    .await
    .map_err(|e| match e {
        engine::RunError::Store(store::StoreError::Io { .. }) => anyhow::Error::new(e),
        other => input(other),
    })?;
    bar.finish_and_clear();
    if summary.resume.moved_aside > 0 || summary.resume.dropped_torn_tail {
        eprintln!(
            "resume: re-ran {} interrupted or failed rollout(s){}; earlier attempts kept in {}",
            summary.resume.moved_aside,
            if summary.resume.dropped_torn_tail {
                " and dropped a torn last line"
            } else {
                ""
            },
            summary.dir.join(store::ATTEMPTS).display()
        );
    }
    let scored = summary.written - summary.infra_errors - summary.interrupted;
    eprintln!(
        "{}: {} rollouts written ({} skipped as already done): {} succeeded of {} scored, {} infrastructure errors, {} interrupted",
        match summary.status {
            RunStatus::Finished => "finished",
            RunStatus::Interrupted => "interrupted",
            RunStatus::Failed => "FAILED",
            RunStatus::Running => "running",
        },
        summary.written,
        summary.skipped,
        summary.successes,
        scored,
        summary.infra_errors,
        summary.interrupted,
    );
    for (env, facts) in &summary.environments {
        if let Some(sandbox) = facts.get("sandbox") {
            eprintln!("sandbox of `{env}`: {}", describe_isolation(sandbox));
        }
    }
    eprintln!(
        "next: trawl stats {0}   |   trawl export {0} --format openai --success-only",
        summary.dir.display()
    );
    let code = match summary.status {
        RunStatus::Finished | RunStatus::Running => ExitCode::SUCCESS,
        RunStatus::Interrupted => ExitCode::from(code::INTERRUPTED),
        RunStatus::Failed => {
            eprintln!(
                "the run failed: every rollout, or more than {:.0}% of the recent ones, ended in an infrastructure error (see `trawl stats {}`)",
                100.0 * config.max_infra_error_rate,
                summary.dir.display()
            );
            ExitCode::from(code::INFRA)
        }
    };
    Ok((code, summary))
}

/// One line on a sandbox's isolation, from the facts its environment reported.
fn describe_isolation(sandbox: &serde_json::Value) -> String {
    let mode = sandbox["mode"].as_str().unwrap_or("unknown");
    let yes = |k: &str| sandbox[k].as_bool() == Some(true);
    let mut parts = vec![mode.to_string()];
    for (key, what) in [
        ("network_isolated", "network"),
        ("filesystem_isolated", "filesystem"),
        ("pid_namespace", "processes"),
    ] {
        parts.push(format!(
            "{what} {}",
            if yes(key) { "isolated" } else { "SHARED" }
        ));
    }
    if yes("uid_per_sandbox") {
        parts.push("a user per sandbox".into());
    }
    if let Some(mb) = sandbox["tmp_mb"].as_u64() {
        parts.push(format!("/tmp capped at {mb} MiB"));
    }
    parts.join(", ")
}

/// First Ctrl-C or SIGTERM: stop launching, give in-flight episodes `grace`. Second: stop now.
fn spawn_signal_handler(stop: StopSignal, grace: Duration) {
    tokio::spawn(async move {
        let mut term =
            tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()).ok();
        wait_for_signal(&mut term).await;
        eprintln!("\nstopping: no new episodes; in-flight ones get {grace:?} to finish (press Ctrl-C again to stop now)");
        stop.stop_after(grace);
        wait_for_signal(&mut term).await;
        eprintln!("stopping now: in-flight episodes are recorded as interrupted");
        stop.hard.cancel();
    });
}

async fn wait_for_signal(term: &mut Option<tokio::signal::unix::Signal>) {
    match term {
        Some(t) => {
            tokio::select! {
                _ = tokio::signal::ctrl_c() => {}
                _ = t.recv() => {}
            }
        }
        None => {
            let _ = tokio::signal::ctrl_c().await;
        }
    }
}

fn export(registry: &Registry, args: ExportArgs) -> anyhow::Result<ExitCode> {
    let records = load_run_with(&args.run, args.skip_bad_lines)?;
    let mut exclude = HashSet::new();
    if let Some(file) = &args.exclude_tasks {
        let text = std::fs::read_to_string(file).map_err(|e| {
            input(format!(
                "cannot read --exclude-tasks file {}: {e}",
                file.display()
            ))
        })?;
        exclude.extend(
            text.lines()
                .map(str::trim)
                .filter(|l| !l.is_empty() && !l.starts_with('#'))
                .map(str::to_string),
        );
    }
    if args.min_reward.is_some_and(|r| !r.is_finite()) {
        bail!(input("--min-reward must be a number"));
    }
    let selection = Selection {
        success_only: args.success_only,
        min_reward: args.min_reward,
        best_of_n: args.best_of_n,
        max_per_task: args.max_per_task,
        exclude_tasks: exclude,
        include_truncated: args.include_truncated,
    };
    let mut settings = serde_json::Map::new();
    if let Some(a) = &args.agent {
        settings.insert("agent".into(), serde_json::json!(a));
    }
    if let Some(s) = &args.style {
        settings.insert("style".into(), serde_json::json!(s));
    }
    let settings = serde_json::Value::Object(settings);
    export_run(
        registry,
        &records,
        &args.format,
        &settings,
        &selection,
        Destination {
            output: args.output.as_deref(),
            run: &args.run,
            force: args.force,
        },
    )?;
    Ok(ExitCode::SUCCESS)
}

/// Where an export goes.
struct Destination<'a> {
    /// The file; default: the format's own file name, else `export-<format>.<ext>`, in `run`.
    output: Option<&'a Path>,
    run: &'a Path,
    /// Replace an existing output (never a run's own file).
    force: bool,
}

/// Selects and writes `records` in `format` to its destination through a temporary file, with
/// the counts beside it in `<output>_stats.json`.
fn export_run(
    registry: &Registry,
    records: &[TrajectoryRecord],
    format: &str,
    settings: &serde_json::Value,
    selection: &Selection,
    Destination { output, run, force }: Destination<'_>,
) -> anyhow::Result<()> {
    let Some(entry) = registry.get(Role::Exporter, format) else {
        bail!(input(format!(
            "unknown format `{format}`; formats: {}",
            registry.kind_list(Role::Exporter)
        )));
    };
    let Factory::Exporter(factory) = entry.factory.clone() else {
        bail!("registry entry for `{format}` is not an exporter")
    };
    let exporter = factory(settings, &BuildContext::default())
        .map_err(|e| input(format!("format `{format}`: {e}")))?;
    let output = match output {
        Some(o) => o.to_path_buf(),
        None => run.join(
            exporter
                .file_name()
                .map(str::to_string)
                .unwrap_or_else(|| format!("export-{format}.{}", exporter.extension())),
        ),
    };
    let output = output.as_path();
    let stem = output
        .file_stem()
        .map(|s| s.to_string_lossy().into_owned())
        .unwrap_or_else(|| "export".into());
    let stats_path = output.with_file_name(format!("{stem}_stats.json"));
    // Both files are checked before anything is written: a refusal leaves everything as it was.
    for path in [output, stats_path.as_path()] {
        store::check_output(path, force).map_err(input)?;
    }
    // Written beside the output under a unique name and renamed into place: a failed export
    // leaves no half file, and the temporary file is removed when it fails.
    let dir = match output.parent() {
        Some(d) if !d.as_os_str().is_empty() => d,
        _ => Path::new("."),
    };
    let tmp = tempfile::Builder::new()
        .prefix(&format!(".{stem}."))
        .suffix(".partial")
        .tempfile_in(dir)
        .with_context(|| format!("cannot create a temporary file in {}", dir.display()))?;
    let mut writer = BufWriter::new(tmp);
    let stats = export_records(records, selection, exporter.as_ref(), format, &mut writer)?;
    writer.flush()?;
    let tmp = writer
        .into_inner()
        .map_err(|e| anyhow::anyhow!("cannot finish the export: {}", e.error()))?;
    tmp.as_file().sync_all()?;
    tmp.persist(output)
        .with_context(|| format!("cannot move the export into place at {}", output.display()))?;
    store::write_atomic(&stats_path, &serde_json::to_vec_pretty(&stats)?)?;
    let dropped: Vec<String> = stats
        .dropped
        .iter()
        .map(|(why, n)| {
            format!(
                "{n} {}",
                serde_json::to_value(why)
                    .ok()
                    .and_then(|v| v.as_str().map(str::to_string))
                    .unwrap_or_default()
            )
        })
        .collect();
    eprintln!(
        "exported {} examples from {} of {} rollouts to {} ({format}); dropped: {}; counts in {}",
        stats.total_sft_examples,
        stats.total_collected,
        stats.records_read,
        output.display(),
        if dropped.is_empty() {
            "none".to_string()
        } else {
            dropped.join(", ")
        },
        stats_path.display()
    );
    Ok(())
}

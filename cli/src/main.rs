//! The `trawl` command line: thin commands over trawl-core and the registered kinds.

#![forbid(unsafe_code)]

use std::collections::HashSet;
use std::io::{BufWriter, IsTerminal, Write};
use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::sync::Arc;
use std::time::Duration;

use anyhow::{bail, Context};
use clap::Parser;
use indicatif::{ProgressBar, ProgressStyle};
use trawl_core::engine::{self, RunOptions, RunStatus, StopSignal};
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
use trawl_openenv as _;
use trawl_sandbox_docker as _;
use trawl_sandbox_local as _;
use trawl_swe as _;
use trawl_swe_tools as _;
use trawl_tool_calling as _;
use trawl_tools_env as _;
use trawl_usersim as _;

mod args;
mod progress;
use args::*;
use progress::{log_line, LogFileWriter, Progress, LOG_FILE};
mod show;
mod swe;
mod swe_images;

/// Exit codes scripts can rely on.
mod code {
    /// Bad input: a config, task file or run directory that cannot be used.
    pub const INPUT: u8 = 2;
    /// The run stopped itself: too many infrastructure errors.
    pub const INFRA: u8 = 3;
    /// Stopped by Ctrl-C or SIGTERM; run again to resume.
    pub const INTERRUPTED: u8 = 130;
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
    if let Some(path) = &cli.log_file {
        match std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(path)
        {
            Ok(f) => {
                let _ = LOG_FILE.set(std::sync::Mutex::new(f));
            }
            Err(e) => {
                eprintln!("error: --log-file {}: {e}", path.display());
                return ExitCode::from(code::INPUT);
            }
        }
    }
    {
        use tracing_subscriber::fmt::writer::MakeWriterExt;
        // Colour only on a terminal, and never in the log file.
        let ansi = std::io::stderr().is_terminal() && LOG_FILE.get().is_none();
        let builder = tracing_subscriber::fmt()
            .with_env_filter(filter)
            .with_ansi(ansi);
        match LOG_FILE.get() {
            Some(_) => builder
                .with_writer(std::io::stderr.and(|| LogFileWriter))
                .init(),
            None => builder.with_writer(std::io::stderr).init(),
        }
    }
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
fn load_registry(
    plugins: &[PathBuf],
    config: Option<(&Path, &[String])>,
) -> anyhow::Result<Registry> {
    let mut registry = Registry::builtin().map_err(input)?;
    let mut paths = trawl_plugin_loader::from_plugin_path();
    paths.extend(plugins.iter().cloned());
    trawl_plugin_loader::load_into(&mut registry, &paths).map_err(input)?;
    if let Some((config, overrides)) = config {
        for r in trawl_core::config::plugin_refs_with(config, overrides).map_err(input)? {
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
    let registry = |config: Option<(&Path, &[String])>| load_registry(plugins, config);
    match command {
        Command::Run(args) => {
            let registry = registry(Some((&args.config, &args.set)))?;
            let (config, map) =
                ExperimentConfig::load_with(&args.config, &registry, &args.set).map_err(input)?;
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
        Command::Check {
            config,
            ping,
            set,
            tasks_out,
        } => {
            check(
                &registry(Some((&config, &set)))?,
                &config,
                &set,
                ping,
                tasks_out.as_deref(),
            )
            .await
        }
        Command::Show(args) => show(&args),
        Command::Report(args) => report(&args),
        Command::View(args) => view(&args).await,
        Command::Stats {
            run,
            by,
            format,
            json,
            skip_bad_lines,
        } => {
            let by = trawl_core::stats::GroupKey::parse_list(&by)
                .map_err(|e| input(format!("--by: {e}")))?;
            let format = if json { StatsFormat::Json } else { format };
            let records = load_run_with(&run, skip_bad_lines)?;
            let stats = trawl_core::stats::compute_by(&records, &by);
            match format {
                StatsFormat::Json => println!("{}", serde_json::to_string_pretty(&stats)?),
                StatsFormat::Text => print!("{}", stats.render()),
                StatsFormat::Markdown => print!("{}", stats.render_markdown()),
                StatsFormat::Csv => {
                    let (header, rows) = stats.rows();
                    let mut w = csv::Writer::from_writer(std::io::stdout().lock());
                    w.write_record(&header)?;
                    for row in rows {
                        w.write_record(&row)?;
                    }
                    w.flush()?;
                }
            }
            Ok(ExitCode::SUCCESS)
        }
        Command::Diff(args) => diff(args),
        Command::Export(args) => export(&registry(None)?, args),
        Command::Swe(command) => swe::dispatch(command).await,
        Command::Import(args) => swe::import(args).await,
        Command::Plugins { config } => {
            print!(
                "{}",
                plugins_listing(&registry(config.as_deref().map(|c| (c, &[][..])))?)
            );
            Ok(ExitCode::SUCCESS)
        }
    }
}

/// `trawl plugins`: every kind by role, where it came from, and the libraries loaded.
fn plugins_listing(registry: &Registry) -> String {
    use std::fmt::Write as _;
    let mut out = String::new();
    for role in Role::ALL {
        let _ = writeln!(out, "{}:", role.plural());
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
    // A run directory, or a trajectories file of its own (a `--format trajectory` export).
    let path = if run.is_file() {
        run.to_path_buf()
    } else {
        run.join(store::TRAJECTORIES)
    };
    if !path.exists() {
        return Err(input(format!(
            "{} has no {}: is it a trawl run directory (or a trajectories .jsonl file)?",
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
    for note in &report.repaired {
        eprintln!("warning: {note}");
    }
    Ok(records)
}

/// `trawl report`.
fn report(args: &ReportArgs) -> anyhow::Result<ExitCode> {
    store::check_output(&args.output, args.force).map_err(input)?;
    let mut runs = Vec::new();
    for run in &args.runs {
        let records = load_run_with(run, args.skip_bad_lines)?;
        let stats = trawl_core::stats::compute(&records);
        runs.push((run.display().to_string(), records, stats));
    }
    let html = trawl_view::report::render(&runs);
    store::write_atomic(&args.output, html.as_bytes())?;
    eprintln!(
        "wrote {} ({} bytes, self-contained: open it in any browser, offline)",
        args.output.display(),
        html.len()
    );
    Ok(ExitCode::SUCCESS)
}

/// `--labels MODE`: the reviewers' labels of `run` (its directory, or the folder of the
/// trajectories file given).
fn review_labels(run: &Path, mode: &str) -> anyhow::Result<trawl_core::labels::LabelFilter> {
    use trawl_core::labels::{LabelFilter, LabelMode, Labels, LABELS};
    let Some(mode) = LabelMode::parse(mode) else {
        bail!(input(format!(
            "--labels `{mode}`: give `accepted` (only what a reviewer accepted) or `not-rejected` (all but what a reviewer rejected)"
        )));
    };
    let dir = if run.is_file() {
        run.parent().unwrap_or(Path::new("."))
    } else {
        run
    };
    if !dir.join(LABELS).exists() {
        bail!(input(format!(
            "--labels: {} has no {LABELS}: nobody has labelled this run yet; label rollouts in `trawl view {}` first",
            dir.display(),
            run.display()
        )));
    }
    let labels = Labels::read(dir).map_err(input)?;
    Ok(LabelFilter { mode, labels })
}

/// `trawl view`: serves until Ctrl-C.
async fn view(args: &ViewArgs) -> anyhow::Result<ExitCode> {
    let started = std::time::Instant::now();
    let viewer = trawl_view::Viewer::open(&args.runs).map_err(input)?;
    let damaged = viewer.damaged();
    if !damaged.is_empty() {
        eprintln!("warning: left out {} damaged line(s):", damaged.len());
        for d in damaged.iter().take(10) {
            eprintln!("  {d}");
        }
    }
    let listener = tokio::net::TcpListener::bind(("127.0.0.1", args.port))
        .await
        .map_err(|e| {
            input(format!(
                "cannot listen on 127.0.0.1:{}: {e}\n  hint: pass another --port (0 picks a free one)",
                args.port
            ))
        })?;
    let addr = listener.local_addr()?;
    eprintln!(
        "trawl view: http://{addr}/ ({} rollouts from {} run(s), indexed in {:.1} s); Ctrl-C stops",
        viewer.rollouts(),
        args.runs.len(),
        started.elapsed().as_secs_f64()
    );
    viewer
        .serve(listener, async {
            let mut term =
                tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()).ok();
            wait_for_signal(&mut term).await;
        })
        .await?;
    Ok(ExitCode::SUCCESS)
}

/// `trawl show`.
fn show(args: &ShowArgs) -> anyhow::Result<ExitCode> {
    let records = load_run_with(&args.run, args.skip_bad_lines)?;
    let filter = match &args.where_filter {
        Some(f) => Some(args.where_limits.compile(f)?),
        None => None,
    };
    let fold = show::Fold {
        lines: if args.full { 0 } else { args.fold },
    };
    let mut out = anstream::stdout().lock();
    let mut shown = 0usize;
    let mut matched = 0usize;
    for r in &records {
        if args.task.as_deref().is_some_and(|t| r.key.task != t)
            || (args.success && !r.success)
            || (args.failed && !(r.is_final() && r.is_scored() && !r.success))
        {
            continue;
        }
        if let Some(f) = &filter {
            match f.keeps(r) {
                Ok(true) => {}
                Ok(false) => continue,
                Err(message) => bail!(input(format!(
                    "--where `{}` on record {}: {message}",
                    f.source(),
                    r.key
                ))),
            }
        }
        matched += 1;
        if shown < args.limit {
            show::render(&mut out, r, fold)?;
            shown += 1;
        }
    }
    out.flush()?;
    drop(out);
    if matched == 0 {
        bail!(input(format!(
            "no rollout of {} matches ({} records read)",
            args.run.display(),
            records.len()
        )));
    }
    eprintln!(
        "showed {shown} of {matched} matching rollouts ({} records){}",
        records.len(),
        if matched > shown {
            "; -n N shows more"
        } else {
            ""
        }
    );
    Ok(ExitCode::SUCCESS)
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
        set: Vec::new(),
        grace_secs: 30.0,
        quiet: false,
        progress_secs: 30.0,
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
    trawl_core::values::check_secs(args.grace_secs, true)
        .map_err(|m| input(format!("--grace-secs {m}")))?;
    trawl_core::values::check_secs(args.progress_secs, false)
        .map_err(|m| input(format!("--progress-secs {m}")))?;
    let on_terminal = std::io::stderr().is_terminal();
    let bar = if args.quiet || !on_terminal {
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
    let progress = Arc::new(Progress::new(bar.clone()));
    // No terminal to draw on (a log file, a cluster job): a plain line at an interval.
    let ticker = (!args.quiet && (!on_terminal || LOG_FILE.get().is_some())).then(|| {
        let progress = progress.clone();
        let every = trawl_core::values::secs(args.progress_secs);
        tokio::spawn(async move {
            let mut tick = tokio::time::interval(every);
            tick.tick().await;
            loop {
                tick.tick().await;
                log_line(&progress.plain_line());
            }
        })
    });
    let stop = StopSignal::default();
    spawn_signal_handler(stop.clone(), trawl_core::values::secs(args.grace_secs));

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
    if let Some(t) = ticker {
        t.abort();
        log_line(&progress.plain_line());
    }
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
    for note in &summary.resume.repaired {
        eprintln!("resume: {note}");
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
    eprintln!("scoring: {}", summary.scoring);
    if let Some(sm) = &summary.sampling {
        eprintln!(
            "sampling until {} succeed (at most {}): {} samples over {} task×scaffold×model cells ({:.2} per cell); {} reached {} successes, {} used all {}, {} unfinished",
            sm.until_successes,
            sm.max,
            sm.samples,
            sm.cells,
            sm.samples as f64 / sm.cells.max(1) as f64,
            sm.reached_successes,
            sm.until_successes,
            sm.reached_max,
            sm.max,
            sm.unfinished
        );
    }
    if let Some(b) = config.max_total_tokens {
        eprintln!(
            "token budget: {} of {b} tokens used{}",
            summary.tokens_used,
            if summary.budget_spent {
                "; spent: no more rollouts start (raise max_total_tokens and run again to go on)"
            } else {
                ""
            }
        );
    }
    for s in &summary.skipped_combinations {
        eprintln!(
            "skipped {} × {}: {} ([matrix] skip_incompatible)",
            s.environment, s.scaffold, s.reason
        );
    }
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

/// `trawl check`: builds the whole config as `run` would, and says what the run would be.
/// Writes each environment's tasks as JSON lines to a new file: `{"environment", "id", ...data}`
/// (the data's own fields at the top level, so a math task's line is a task file line again).
fn write_tasks(
    out: &Path,
    tasks: &std::collections::BTreeMap<String, Vec<trawl_core::Task>>,
) -> anyhow::Result<usize> {
    let file = std::fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .open(out)
        .map_err(|e| {
            if e.kind() == std::io::ErrorKind::AlreadyExists {
                input(format!(
                    "--tasks-out {}: the file exists; give a new path (nothing is overwritten)",
                    out.display()
                ))
            } else {
                anyhow::anyhow!("--tasks-out {}: {e}", out.display())
            }
        })?;
    let mut w = std::io::BufWriter::new(file);
    let mut n = 0;
    for (env, list) in tasks {
        for t in list {
            let mut line = serde_json::Map::new();
            line.insert("environment".into(), env.clone().into());
            line.insert("id".into(), t.id.clone().into());
            match &t.data {
                serde_json::Value::Object(fields) => {
                    for (k, v) in fields {
                        line.entry(k.clone()).or_insert_with(|| v.clone());
                    }
                }
                other => {
                    line.insert("data".into(), other.clone());
                }
            }
            serde_json::to_writer(&mut w, &line)?;
            w.write_all(b"\n")?;
            n += 1;
        }
    }
    w.flush()?;
    Ok(n)
}

async fn check(
    registry: &Registry,
    path: &Path,
    overrides: &[String],
    ping: bool,
    tasks_out: Option<&Path>,
) -> anyhow::Result<ExitCode> {
    let (cfg, map) = ExperimentConfig::load_with(path, registry, overrides).map_err(input)?;
    let report = engine::check(&cfg, &map, registry, ping)
        .await
        .map_err(|e| match e {
            engine::RunError::Store(store::StoreError::Io { .. }) => anyhow::Error::new(e),
            other => input(other),
        })?;
    println!(
        "{}: ok — {} rollouts{}: {} combination(s) × their tasks × {}",
        path.display(),
        report.rollouts,
        if matches!(cfg.samples, trawl_core::config::Samples::Until { .. }) {
            " at most"
        } else {
            ""
        },
        report.combinations.len(),
        cfg.samples
    );
    for (env, tasks) in &report.tasks {
        let evaluators = report.evaluators.get(env).cloned().unwrap_or_default();
        println!(
            "  environment {env}: {} task(s), scored by {}",
            tasks.len(),
            evaluators.join(", ")
        );
    }
    if let Some(out) = tasks_out {
        let n = write_tasks(out, &report.tasks)?;
        println!("  wrote {n} task(s) to {}", out.display());
    }
    for (e, s, m) in &report.combinations {
        println!("  runs {e} × {s} × {m}");
    }
    for s in &report.skipped_combinations {
        println!(
            "  skips {} × {}: {} ([matrix] skip_incompatible)",
            s.environment, s.scaffold, s.reason
        );
    }
    println!("  scoring: {}", report.scoring);
    let mut unreachable = 0;
    for p in &report.ping {
        match &p.served {
            Ok(None) => println!("  model {}: embedded, no server to ask", p.model),
            Ok(Some(ids)) => {
                let has = ids.iter().any(|id| id == &p.model_id);
                println!(
                    "  model {}: the server answers and serves {} model(s){}",
                    p.model,
                    ids.len(),
                    if has {
                        format!(", `{}` among them", p.model_id)
                    } else {
                        format!(
                            "; `{}` is NOT among them ({})",
                            p.model_id,
                            ids.iter().take(10).cloned().collect::<Vec<_>>().join(", ")
                        )
                    }
                );
            }
            Err(e) => {
                unreachable += 1;
                println!("  model {}: UNREACHABLE: {e}", p.model);
            }
        }
    }
    if unreachable > 0 {
        eprintln!("error: {unreachable} model server(s) did not answer; a run now would end in infrastructure errors");
        return Ok(ExitCode::from(code::INFRA));
    }
    Ok(ExitCode::SUCCESS)
}

/// `trawl diff`: two runs, or two groups of one run, task by task.
fn diff(args: DiffArgs) -> anyhow::Result<ExitCode> {
    use trawl_core::compare::{self, Selector};
    let selector = |s: &Option<String>, flag: &str| -> anyhow::Result<Selector> {
        match s {
            Some(s) => Selector::parse(s).map_err(|e| input(format!("{flag}: {e}"))),
            None => Ok(Selector(Vec::new())),
        }
    };
    let (sa, sb) = (
        selector(&args.select_a, "--a")?,
        selector(&args.select_b, "--b")?,
    );
    let markdown = args.format == DiffFormat::Markdown;
    let run_a = load_run_with(&args.a, args.skip_bad_lines)?;
    let run_b = match &args.b {
        Some(b) => Some(load_run_with(b, args.skip_bad_lines)?),
        None => {
            if sa.0.is_empty() || sb.0.is_empty() {
                bail!(input(
                    "with one run, say which two groups to compare: --a scaffold=chat --b scaffold=tool_calling"
                ));
            }
            None
        }
    };
    let a: Vec<&TrajectoryRecord> = run_a.iter().filter(|r| sa.matches(r)).collect();
    let b: Vec<&TrajectoryRecord> = run_b
        .as_ref()
        .unwrap_or(&run_a)
        .iter()
        .filter(|r| sb.matches(r))
        .collect();
    for (side, records, sel) in [("A", &a, &sa), ("B", &b, &sb)] {
        if records.is_empty() {
            bail!(input(format!(
                "side {side} has no rollouts{}",
                if sel.0.is_empty() {
                    String::new()
                } else {
                    format!(" matching `{}`", sel.describe())
                }
            )));
        }
    }
    let label = |run: &Path, sel: &Selector| {
        if sel.0.is_empty() {
            run.display().to_string()
        } else {
            format!("{} [{}]", run.display(), sel.describe())
        }
    };
    let by = compare::pairing_keys(&a, &b, &[&sa, &sb]);
    let report = compare::diff(
        (&label(&args.a, &sa), &a),
        (&label(args.b.as_deref().unwrap_or(&args.a), &sb), &b),
        &by,
    );
    if report.shared_units == 0 {
        eprintln!(
            "warning: the two sides share no task (paired by {}); nothing to compare",
            report.paired_by.join(" × ")
        );
    }
    if args.format == DiffFormat::Json {
        println!("{}", serde_json::to_string_pretty(&report)?);
    } else {
        print!("{}", report.render(markdown));
    }
    Ok(ExitCode::SUCCESS)
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
    if let Some(version) = sandbox["cgroups"].as_str() {
        parts.push(format!("cgroups {version}"));
    }
    if let Some(seen) = sandbox["caught_limits_seen"].as_array() {
        let seen: Vec<&str> = seen.iter().filter_map(|l| l.as_str()).collect();
        parts.push(format!(
            "caught limits seen: {}",
            if seen.is_empty() {
                "none".to_string()
            } else {
                seen.join(", ")
            }
        ));
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
    let mut evaluator_min_reward = Vec::new();
    for item in &args.evaluator_min_reward {
        let parsed = item
            .split_once('=')
            .and_then(|(n, r)| Some((n.trim().to_string(), r.trim().parse::<f64>().ok()?)))
            .filter(|(n, r)| !n.is_empty() && r.is_finite());
        match parsed {
            Some(p) => evaluator_min_reward.push(p),
            None => bail!(input(format!(
                "--evaluator-min-reward `{item}`: write EVALUATOR=REWARD, for example rubric=0.5"
            ))),
        }
    }
    let mut exit_statuses = Vec::new();
    for s in args
        .exit_status
        .iter()
        .map(|s| s.trim())
        .filter(|s| !s.is_empty())
    {
        match ExitStatus::parse(s) {
            Some(x) => exit_statuses.push(x),
            None => bail!(input(format!(
                "--exit-status `{s}` is not an exit status; statuses: {}",
                ExitStatus::ALL.map(|x| x.as_str()).join(", ")
            ))),
        }
    }
    for (flag, v) in [
        ("--min-pass-rate", args.min_pass_rate),
        ("--max-pass-rate", args.max_pass_rate),
    ] {
        if v.is_some_and(|v| !(0.0..=1.0).contains(&v)) {
            bail!(input(format!("{flag} must be a rate from 0 to 1")));
        }
    }
    let dedup = match args.dedup.as_deref() {
        None => None,
        Some("exact") => Some(trawl_core::hygiene::Dedup::Exact),
        Some("near") => {
            let t = args.near_dup_threshold;
            if !(t > 0.0 && t <= 1.0) {
                bail!(input(format!(
                    "--near-dup-threshold {t}: give a similarity above 0 and at most 1 (0.9 is usual)"
                )));
            }
            Some(trawl_core::hygiene::Dedup::Near { threshold: t })
        }
        Some(other) => bail!(input(format!("--dedup `{other}`: give `exact` or `near`"))),
    };
    let decontaminate = if args.decontaminate.is_empty() {
        None
    } else {
        let files: Vec<&Path> = args.decontaminate.iter().map(PathBuf::as_path).collect();
        Some(
            trawl_core::hygiene::HeldOut::load(&files, args.decontaminate_ngram)
                .map_err(|e| input(format!("--decontaminate: {e}")))?,
        )
    };
    let where_filter = match &args.where_filter {
        Some(f) => Some(args.where_limits.compile(f)?),
        None => None,
    };
    let labels = match args.labels.as_deref() {
        None => None,
        Some(mode) => Some(review_labels(&args.run, mode)?),
    };
    let named: Vec<&String> = args
        .evaluator_success
        .iter()
        .chain(evaluator_min_reward.iter().map(|(n, _)| n))
        .collect();
    // Which evaluators the run has: read only when an evaluator is named.
    let known: HashSet<&str> = if named.is_empty() {
        HashSet::new()
    } else {
        records
            .iter()
            .flat_map(|r| r.evaluations.iter().map(|e| e.evaluator.as_str()))
            .collect()
    };
    for name in named {
        if !known.contains(name.as_str()) {
            let mut names: Vec<&str> = known.iter().copied().collect();
            names.sort_unstable();
            bail!(input(format!(
                "no rollout of {} was scored by an evaluator named `{name}`; evaluators in this run: {}",
                args.run.display(),
                if names.is_empty() { "none".to_string() } else { names.join(", ") }
            )));
        }
    }
    let selection = Selection {
        success_only: args.success_only,
        min_reward: args.min_reward,
        best_of_n: args.best_of_n,
        max_per_task: args.max_per_task,
        exclude_tasks: exclude,
        include_truncated: args.include_truncated,
        evaluator_success: args.evaluator_success.clone(),
        evaluator_min_reward,
        max_turns: args.max_turns,
        max_tokens: args.max_tokens,
        exit_statuses,
        where_filter,
        decontaminate,
        dedup,
        min_pass_rate: args.min_pass_rate,
        max_pass_rate: args.max_pass_rate,
        labels,
    };
    let mut settings = serde_json::Map::new();
    if let Some(a) = &args.agent {
        settings.insert("agent".into(), serde_json::json!(a));
    }
    if let Some(s) = &args.style {
        settings.insert("style".into(), serde_json::json!(s));
    }
    for item in &args.set {
        let (key, value) = format_setting(item).map_err(input)?;
        settings.insert(key, value);
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

/// One `--set KEY=VALUE`: the value as TOML reads it (`0.5`, `true`, `"x"`, `[1, 2]`), else the
/// text itself.
fn format_setting(item: &str) -> Result<(String, serde_json::Value), String> {
    let Some((key, value)) = item.split_once('=').filter(|(k, _)| !k.trim().is_empty()) else {
        return Err(format!(
            "--set `{item}`: expected KEY=VALUE, for example --set tools=json"
        ));
    };
    let parsed = toml::from_str::<toml::Table>(&format!("v = {value}"))
        .ok()
        .and_then(|mut t| t.remove("v"));
    // JSON has no NaN or infinity: they would arrive as `null`, the setting's default.
    if parsed.as_ref().is_some_and(has_non_finite) {
        return Err(format!(
            "--set `{item}`: `{}` must be a finite number",
            key.trim()
        ));
    }
    let parsed = parsed
        .and_then(|v| serde_json::to_value(v).ok())
        .unwrap_or_else(|| serde_json::json!(value));
    Ok((key.trim().to_string(), parsed))
}

/// Whether a TOML value holds `nan` or `inf` anywhere.
fn has_non_finite(v: &toml::Value) -> bool {
    match v {
        toml::Value::Float(f) => !f.is_finite(),
        toml::Value::Array(items) => items.iter().any(has_non_finite),
        toml::Value::Table(t) => t.values().any(has_non_finite),
        _ => false,
    }
}

/// Where an export goes.
struct Destination<'a> {
    /// The file; default: the format's own file name, else `export-<format>.<ext>`, in `run`.
    output: Option<&'a Path>,
    run: &'a Path,
    /// Replace an existing output (never a run's own file).
    force: bool,
}

/// The dataset card written beside an export (`<output>_card.md`): Hugging Face's card shape
/// (YAML front matter naming the data file, then prose) saying where the data came from (the
/// run, its id and config hash), how it was selected, and what was kept and dropped and why.
fn dataset_card(
    run: &Path,
    output: &Path,
    format: &str,
    settings: &serde_json::Value,
    stats: &trawl_core::export::ExportStats,
) -> String {
    let source = if run.is_file() {
        run.to_path_buf()
    } else {
        run.join(store::TRAJECTORIES)
    };
    let run_dir = if run.is_file() {
        run.parent().unwrap_or(Path::new("."))
    } else {
        run
    };
    let manifest: serde_json::Value = std::fs::read(run_dir.join(store::MANIFEST))
        .ok()
        .and_then(|b| serde_json::from_slice(&b).ok())
        .unwrap_or_default();
    let hash =
        |p: &Path| trawl_core::fetch::sha256_file(p).unwrap_or_else(|_| "(not found)".to_string());
    let file_name = output
        .file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_default();
    let dropped: String = stats
        .dropped
        .iter()
        .map(|(why, n)| {
            let why = serde_json::to_value(why)
                .ok()
                .and_then(|v| v.as_str().map(str::to_string))
                .unwrap_or_default();
            format!("| dropped: {why} | {n} |\n")
        })
        .collect();
    let counted: String = stats
        .counts
        .iter()
        .map(|(what, n)| format!("| {format}: {what} | {n} |\n"))
        .collect();
    let text = |v: &serde_json::Value| v.as_str().unwrap_or("(unknown)").to_string();
    format!(
        "---\ntags:\n- trawl\n- {format}\nconfigs:\n- config_name: default\n  data_files: {file_name}\n---\n\n\
# {file_name}\n\n\
Training data exported by trawl {version} in the `{format}` format (card schema `trawl.dataset-card/1`).\n\n\
## Source\n\n\
| | |\n|---|---|\n\
| records | `{source}` (schema `{schema}`), sha256 `{records_hash}` |\n\
| run | `{name}`, run id `{run_id}`, seed {seed}, status {status} |\n\
| config | `{config}`, sha256 `{config_hash}` |\n\
| trawl | {run_version} |\n\n\
## Selection\n\n\
```json\n{selection}\n```\n\n\
Format settings: `{settings}`\n\n\
## Counts\n\n\
| | |\n|---|---|\n\
| records read | {read} |\n\
| finished rollouts (infrastructure errors excluded) | {episodes} ({successes} successful) |\n\
| rollouts kept | {kept} ({kept_ok} successful) |\n\
| examples written | {examples} |\n\
| kept rollouts without an example | {without} |\n\
{dropped}{counted}",
        version = trawl_core::engine::TRAWL_VERSION,
        source = source.display(),
        schema = trawl_core::trajectory::TRAJECTORY_SCHEMA,
        records_hash = hash(&source),
        name = text(&manifest["name"]),
        run_id = text(&manifest["run_id"]),
        seed = manifest["seed"],
        status = text(&manifest["status"]),
        config = run_dir.join(store::CONFIG).display(),
        config_hash = hash(&run_dir.join(store::CONFIG)),
        run_version = text(&manifest["trawl_version"]),
        selection = serde_json::to_string_pretty(&stats.selection).unwrap_or_default(),
        read = stats.records_read,
        episodes = stats.total_episodes,
        successes = stats.successful_episodes,
        kept = stats.total_collected,
        kept_ok = stats.total_successful,
        examples = stats.total_sft_examples,
        without = stats.records_without_examples,
    )
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
    let exporter = factory(settings, &BuildContext::default()).map_err(|e| {
        let at = if e.path.is_empty() {
            String::new()
        } else {
            format!(" setting `{}`", e.path.join("."))
        };
        input(format!(
            "format `{format}`{at}: {}\n  hint: `trawl plugins` lists the formats; settings are given as --set KEY=VALUE",
            e.message
        ))
    })?;
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
    let card_path = output.with_file_name(format!("{stem}_card.md"));
    // Every file is checked before anything is written: a refusal leaves everything as it was.
    for path in [output, stats_path.as_path(), card_path.as_path()] {
        store::check_output(path, force).map_err(input)?;
    }
    // Written beside the output under a unique name and renamed into place: a failed export
    // leaves no half file, and the temporary file is removed when it fails.
    let dir = match output.parent() {
        Some(d) if !d.as_os_str().is_empty() => d,
        _ => Path::new("."),
    };
    // `-o some/new/folder/x.jsonl` makes the folder, as `--out` does for a run.
    std::fs::create_dir_all(dir)
        .with_context(|| format!("cannot create the folder {}", dir.display()))?;
    let tmp = tempfile::Builder::new()
        .prefix(&format!(".{stem}."))
        .suffix(".partial")
        .tempfile_in(dir)
        .with_context(|| format!("cannot create a temporary file in {}", dir.display()))?;
    let mut writer = BufWriter::new(tmp);
    let stats = export_records(records, selection, exporter.as_ref(), format, &mut writer)
        .map_err(|e| match e {
            trawl_core::ExportError::Filter { .. } => input(e),
            other => anyhow::Error::new(other),
        })?;
    writer.flush()?;
    let tmp = writer
        .into_inner()
        .map_err(|e| anyhow::anyhow!("cannot finish the export: {}", e.error()))?;
    tmp.as_file().sync_all()?;
    tmp.persist(output)
        .with_context(|| format!("cannot move the export into place at {}", output.display()))?;
    store::write_atomic(&stats_path, &serde_json::to_vec_pretty(&stats)?)?;
    let card = dataset_card(run, output, format, settings, &stats);
    store::write_atomic(&card_path, card.as_bytes())?;
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
    let counted: String = stats
        .counts
        .iter()
        .map(|(what, n)| format!("; {what}: {n}"))
        .collect();
    eprintln!(
        "exported {} examples from {} of {} rollouts to {} ({format}); dropped: {}{counted}; counts in {}",
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

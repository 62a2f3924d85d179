//! `trawl run`: a config run into its run directory with a progress bar and Ctrl-C handling,
//! and the summary printed after.

use std::io::IsTerminal;
use std::path::PathBuf;
use std::process::ExitCode;
use std::sync::Arc;
use std::time::Duration;

use indicatif::{ProgressBar, ProgressStyle};
use trawl_core::engine::{self, RunOptions, RunStatus, StopSignal};
use trawl_core::registry::Registry;
use trawl_core::{store, ExperimentConfig};

use crate::args::RunArgs;
use crate::exit::{code, input};
use crate::progress::{log_line, Progress, LOG_FILE};
use crate::signals::spawn_signal_handler;

/// `trawl run`: the config loaded with its `--set` overrides and run into `--out` (default: the
/// config's own run directory).
pub async fn command(registry: &Registry, args: &RunArgs) -> anyhow::Result<ExitCode> {
    let (config, map) =
        ExperimentConfig::load_with(&args.config, registry, &args.set).map_err(input)?;
    let out = args
        .out
        .clone()
        .unwrap_or_else(|| engine::default_run_dir(&config));
    let (code, _) = run(&config, &map, registry, out, args).await?;
    if code == ExitCode::from(code::INTERRUPTED) {
        eprintln!("run `trawl run {}` again to resume", args.config.display());
    }
    Ok(code)
}

/// Runs a loaded config into `out` with a progress bar and Ctrl-C handling.
pub async fn run(
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

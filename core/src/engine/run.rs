//! Running a run: the plan launched concurrently on tokio, each record streamed to the run
//! directory, resumable, stopped by a signal or the error budget.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime};

use tokio::sync::{mpsc, Semaphore};
use tokio_util::sync::CancellationToken;

use crate::config::{ExperimentConfig, Samples, SourceMap};
use crate::registry::Registry;
use crate::store::{self, RunDir, StoreError};
use crate::trajectory::{ExitStatus, TrajectoryRecord};

use super::budget::ErrorBudget;
use super::build::build;
use super::plan::{cell_key, Adaptive, Cell, Plan, PlanSource};
use super::rollout::guarded_rollout;
use super::summary::{
    hostname, now_rfc3339, Manifest, ResumeSummary, RunError, RunOptions, RunStatus, RunSummary,
    Session, TRAWL_VERSION,
};

/// Runs the experiment into `options.out`, resuming whatever is there.
pub async fn run(
    config: &ExperimentConfig,
    map: &SourceMap,
    registry: &Registry,
    options: RunOptions,
) -> Result<RunSummary, RunError> {
    let (mut shared, versions) = build(config, map, registry).await?;
    let dir = RunDir::open(&options.out)?;

    // The stored config must match, or resuming would mix experiments.
    let resolved = config.to_toml();
    let config_path = dir.file(store::CONFIG);
    if let Ok(previous) = std::fs::read_to_string(&config_path) {
        if without_budget(&previous) != without_budget(&resolved) && !options.force {
            return Err(RunError::ConfigChanged {
                dir: options.out.clone(),
            });
        }
    }
    dir.write_atomic(store::CONFIG, resolved.as_bytes())?;

    let resume = dir.prepare_resume()?;
    let manifest_path = dir.file(store::MANIFEST);
    let mut manifest = std::fs::read(&manifest_path)
        .ok()
        .and_then(|b| serde_json::from_slice::<Manifest>(&b).ok())
        .unwrap_or_else(|| Manifest {
            schema: "trawl.manifest/1".into(),
            run_id: format!(
                "{}-{}",
                config.name,
                SystemTime::now()
                    .duration_since(SystemTime::UNIX_EPOCH)
                    .map(|d| d.as_secs())
                    .unwrap_or(0)
            ),
            name: config.name.clone(),
            trawl_version: TRAWL_VERSION.into(),
            host: hostname(),
            seed: config.seed,
            components: BTreeMap::new(),
            environments: BTreeMap::new(),
            plugins: Vec::new(),
            scoring: serde_json::Value::Null,
            skipped_combinations: Vec::new(),
            started_at: now_rfc3339(),
            ended_at: None,
            status: RunStatus::Running,
            sessions: Vec::new(),
        });
    manifest.components = versions;
    manifest.plugins = registry.libraries().to_vec();
    manifest.environments = shared
        .environments
        .iter()
        .map(|e| (e.env.name.clone(), e.env.live.facts()))
        .filter(|(_, facts)| !facts.is_null())
        .collect();
    manifest.scoring = serde_json::to_value(&shared.scoring).unwrap_or_default();
    manifest.skipped_combinations = shared.skipped.clone();
    manifest.trawl_version = TRAWL_VERSION.into();
    manifest.status = RunStatus::Running;
    manifest.ended_at = None;
    manifest.sessions.push(Session {
        started_at: now_rfc3339(),
        ended_at: None,
        status: RunStatus::Running,
        skipped: 0,
        launched: 0,
        written: 0,
        infra_errors: 0,
    });
    shared.run_id = manifest.run_id.clone();
    write_manifest(&dir, &manifest)?;

    // The matrix is walked lazily, so memory does not grow with the number of rollouts.
    let shared = Arc::new(shared);
    // Tokens spent, every session's, counted as each rollout ends (before the writer sees it),
    // so that the launcher never starts one after the budget is gone: at most the rollouts in
    // flight go over.
    let spent = Arc::new(std::sync::atomic::AtomicU64::new(resume.tokens_used));
    let tokens_used = {
        let spent = spent.clone();
        move || spent.load(std::sync::atomic::Ordering::SeqCst)
    };
    let limit = config.max_total_tokens;
    let over_budget = move |used: u64| limit.is_some_and(|b| used >= b);
    let budget_spent_at_start = over_budget(tokens_used());
    let completed = Arc::new(resume.completed);
    let (mut adaptive, source, total, skipped) = match config.samples {
        Samples::Fixed(n) => {
            let total = u64::from(n).saturating_mul(shared.matrix_size());
            // Counted from what is done, never by walking the plan: `samples = 4000000000`
            // must start at once, not spin through every rollout it will ever run.
            let cells: std::collections::HashSet<_> = shared
                .cells()
                .map(|c| cell_key(&shared.plan(c, 0).key))
                .collect();
            let skipped = completed
                .iter()
                .filter(|k| k.sample < n && cells.contains(&cell_key(k)))
                .count() as u64;
            let plans: Box<dyn Iterator<Item = Plan> + Send> = if budget_spent_at_start {
                Box::new(std::iter::empty())
            } else {
                let shared = shared.clone();
                let completed = completed.clone();
                Box::new(
                    (0..n)
                        .flat_map(move |sample| {
                            let cells: Vec<Cell> = shared.cells().collect();
                            let shared = shared.clone();
                            cells.into_iter().map(move |c| shared.plan(c, sample))
                        })
                        .filter(move |p| !completed.contains(&p.key)),
                )
            };
            (None, PlanSource::Fixed(plans), total, skipped)
        }
        Samples::Until {
            max,
            until_successes,
        } => {
            let (a, rx) = Adaptive::start(
                &shared,
                max,
                until_successes,
                &completed,
                &resume.successes,
                budget_spent_at_start,
            );
            let total = u64::from(max).saturating_mul(shared.matrix_size());
            (
                Some(a),
                PlanSource::Adaptive(rx),
                total,
                completed.len() as u64,
            )
        }
    };
    let pending_count = total.saturating_sub(skipped);
    options.observer.started(pending_count, skipped);
    tracing::info!(dir = %options.out.display(), pending = pending_count, skipped, "run starting");

    let stop = options.stop.clone();
    // Spending the token budget stops new rollouts; those in flight finish.
    let budget = CancellationToken::new();
    let mut budget_spent = budget_spent_at_start;
    let slots = Arc::new(Semaphore::new(config.concurrency));
    let (tx, mut rx) = mpsc::channel::<TrajectoryRecord>(1024);
    let launcher = {
        let shared = shared.clone();
        let stop = stop.clone();
        let budget = budget.clone();
        let spent = spent.clone();
        let tokens_used = tokens_used.clone();
        let mut source = source;
        tokio::spawn(async move {
            let mut launched = 0u64;
            loop {
                let plan = tokio::select! {
                    biased;
                    _ = stop.soft.cancelled() => break,
                    _ = budget.cancelled() => break,
                    p = source.next() => match p { Some(p) => p, None => break },
                };
                let permit = tokio::select! {
                    biased;
                    _ = stop.soft.cancelled() => break,
                    _ = budget.cancelled() => break,
                    p = slots.clone().acquire_owned() => match p { Ok(p) => p, Err(_) => break },
                };
                if stop.soft.is_cancelled() || budget.is_cancelled() || over_budget(tokens_used()) {
                    break;
                }
                let tx = tx.clone();
                let shared = shared.clone();
                let hard = stop.hard.clone();
                let spent = spent.clone();
                tokio::spawn(async move {
                    let record = guarded_rollout(shared, plan, hard).await;
                    spent.fetch_add(
                        record.usage.total_tokens(),
                        std::sync::atomic::Ordering::SeqCst,
                    );
                    let _ = tx.send(record).await;
                    drop(permit);
                });
                launched += 1;
            }
            launched
        })
    };

    let mut writer = dir.appender()?;
    let (mut written, mut successes, mut infra, mut interrupted) = (0u64, 0u64, 0u64, 0u64);
    let mut failed = false;
    let mut errors = ErrorBudget::new(config.max_infra_error_rate);
    let mut last_sync = Instant::now();
    while let Some(record) = rx.recv().await {
        writer.append(&record)?;
        written += 1;
        match record.outcome.exit_status {
            ExitStatus::InfraError => infra += 1,
            ExitStatus::Interrupted => interrupted += 1,
            _ => successes += u64::from(record.success),
        }
        if !budget_spent && over_budget(tokens_used()) {
            budget_spent = true;
            tracing::info!(
                tokens_used = tokens_used(),
                "the token budget is spent; no more rollouts start"
            );
            budget.cancel();
        }
        if let Some(a) = &mut adaptive {
            a.finished(&shared, &record, budget_spent || stop.soft.is_cancelled());
            if budget_spent || stop.soft.is_cancelled() {
                a.close();
            }
        }
        options.observer.finished(&record);
        if !failed && errors.record(record.outcome.exit_status) {
            failed = true;
            tracing::error!(
                infra,
                written,
                "too many infrastructure errors among the recent rollouts; stopping the run"
            );
            stop.soft.cancel();
            stop.hard.cancel();
        }
        if last_sync.elapsed() > Duration::from_secs(1) {
            writer.sync()?;
            last_sync = Instant::now();
        }
    }
    writer.sync()?;
    let launched = launcher.await.unwrap_or(0);
    // However the run ended (finished, stopped, cut short), environments release what they
    // still hold: containers of interrupted or crashed rollouts included, and so do their
    // evaluators (each once, however many environments it scores).
    for slot in &shared.environments {
        slot.env.live.shutdown().await;
    }
    let mut done: Vec<*const ()> = Vec::new();
    for e in shared.environments.iter().flat_map(|s| &s.evaluators) {
        let at = Arc::as_ptr(&e.live) as *const ();
        if !done.contains(&at) {
            done.push(at);
            e.live.shutdown().await;
        }
    }

    // A run whose every attempt failed on infrastructure produced nothing, whatever its size:
    // it fails too.
    let all_infra = infra > 0 && written == infra + interrupted;
    let status = if failed || all_infra {
        RunStatus::Failed
    } else if stop.soft.is_cancelled() || interrupted > 0 {
        RunStatus::Interrupted
    } else {
        RunStatus::Finished
    };
    let ended = now_rfc3339();
    manifest.status = status;
    manifest.ended_at = Some(ended.clone());
    if let Some(s) = manifest.sessions.last_mut() {
        *s = Session {
            ended_at: Some(ended),
            status,
            skipped,
            launched,
            written,
            infra_errors: infra,
            ..s.clone()
        };
    }
    write_manifest(&dir, &manifest)?;
    Ok(RunSummary {
        dir: options.out,
        status,
        skipped,
        launched,
        written,
        successes,
        infra_errors: infra,
        interrupted,
        resume: ResumeSummary {
            moved_aside: resume.moved_aside,
            dropped_torn_tail: resume.dropped_torn_tail,
            duplicates_removed: resume.duplicates_removed,
            repaired: resume.repaired,
        },
        environments: manifest.environments,
        skipped_combinations: manifest.skipped_combinations,
        scoring: shared.scoring.describe(),
        sampling: adaptive.as_ref().map(Adaptive::summary),
        tokens_used: tokens_used(),
        budget_spent,
    })
}

/// A resolved config without its top-level `max_total_tokens`: raising the budget to go on is
/// the same experiment.
pub(super) fn without_budget(toml_text: &str) -> String {
    let mut top = true;
    // `--set` arguments are recorded as comments; the values they set are compared, not how.
    ExperimentConfig::without_override_comments(toml_text)
        .lines()
        .filter(|l| {
            top &= !l.trim_start().starts_with('[');
            !(top && l.trim_start().starts_with("max_total_tokens"))
        })
        .collect::<Vec<_>>()
        .join("\n")
}

pub(super) fn write_manifest(dir: &RunDir, manifest: &Manifest) -> Result<(), StoreError> {
    let bytes = serde_json::to_vec_pretty(manifest).unwrap_or_default();
    dir.write_atomic(store::MANIFEST, &bytes)
}

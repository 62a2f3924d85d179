//! Selection (rejection sampling) and the `Exporter` role. Every rollout is kept in the run with
//! its scores; selection happens here, at export time, and can be re-run with other settings.

use std::collections::{BTreeMap, HashMap, HashSet};
use std::io::Write;

use serde::{Deserialize, Serialize};

use crate::trajectory::TrajectoryRecord;

#[derive(Debug, thiserror::Error)]
pub enum ExportError {
    #[error("cannot write export: {0}")]
    Io(#[from] std::io::Error),
    #[error("cannot export record {key}: {message}")]
    Record { key: String, message: String },
    #[error("--where `{filter}` on record {key}: {message}\n  hint: records are trawl.trajectory JSON; `trawl export RUN --format trajectory` shows them whole")]
    Filter {
        filter: String,
        key: String,
        message: String,
    },
}

/// Turns one selected trajectory into training examples, written as lines to `out`.
pub trait Exporter: Send + Sync {
    /// The file extension of the output (`jsonl`).
    fn extension(&self) -> &str {
        "jsonl"
    }

    /// The file name a format is known by (`preds.json`), used when no output is given.
    fn file_name(&self) -> Option<&str> {
        None
    }

    /// Writes the examples of one trajectory and returns how many it wrote.
    fn write(&self, record: &TrajectoryRecord, out: &mut dyn Write) -> Result<usize, ExportError>;

    /// Called once after the last record: a format that is one document rather than lines
    /// (`preds.json`, Parquet) or that is made of groups of records (preference pairs) writes it
    /// here, and returns how many examples that added.
    fn finish(&self, _out: &mut dyn Write) -> Result<usize, ExportError> {
        Ok(0)
    }

    /// What the format counted beyond examples, read after `finish`: what it could not carry
    /// (`tool_call_text_dropped`), groups it left out and why (`groups_zero_variance`), pairs it
    /// made. Written into the export's stats under `counts`.
    fn counts(&self) -> BTreeMap<String, usize> {
        BTreeMap::new()
    }
}

/// Which rollouts become training data.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct Selection {
    /// Keep only successful rollouts.
    pub success_only: bool,
    /// Keep only rollouts with at least this reward.
    pub min_reward: Option<f64>,
    /// Keep only the best rollout of each task (highest reward, then fewest tokens).
    pub best_of_n: bool,
    /// Keep at most this many rollouts of each task, best first.
    pub max_per_task: Option<usize>,
    /// Task ids (`task` or `environment/task`) never exported (held out for evaluation).
    pub exclude_tasks: HashSet<String>,
    /// With `success_only`, keep rollouts whose reply was cut off by `max_tokens` too.
    #[serde(default)]
    pub include_truncated: bool,
    /// Keep only rollouts that each of these evaluators (by recorded name) scored a success.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub evaluator_success: Vec<String>,
    /// Keep only rollouts where the named evaluator scored at least this reward.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub evaluator_min_reward: Vec<(String, f64)>,
    /// Keep only rollouts with at most this many assistant turns.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub max_turns: Option<usize>,
    /// Keep only rollouts that used at most this many tokens (prompt and completion).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub max_tokens: Option<u64>,
    /// Keep only rollouts that ended with one of these exit statuses.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub exit_statuses: Vec<crate::trajectory::ExitStatus>,
    /// Keep only rollouts this jq filter selects.
    #[serde(default, rename = "where", skip_serializing_if = "Option::is_none")]
    pub where_filter: Option<crate::filter::RecordFilter>,
    /// Leave out rollouts whose text overlaps held-out files (n-grams).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub decontaminate: Option<crate::hygiene::HeldOut>,
    /// Leave out rollouts that duplicate an earlier kept one of the same task.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub dedup: Option<crate::hygiene::Dedup>,
    /// Keep only tasks whose pass rate (the share of a task's scored rollouts, per scaffold and
    /// model, that succeeded, over the whole run) is at least this.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub min_pass_rate: Option<f64>,
    /// Keep only tasks whose pass rate is at most this.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub max_pass_rate: Option<f64>,
    /// What reviewers decided (`labels.jsonl`, written by `trawl view`): leave out what they
    /// rejected, or keep only what they accepted.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub labels: Option<crate::labels::LabelFilter>,
}

/// Why a rollout was left out.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum DropReason {
    /// Interrupted or infrastructure error: never training data.
    NotFinal,
    ExcludedTask,
    /// A reviewer rejected it (`trawl view`, `--labels`).
    RejectedByReviewer,
    /// `--labels accepted`, and no reviewer accepted it.
    NotAccepted,
    NotSuccessful,
    /// A reply was cut off by `max_tokens` (left out of success-only exports by default).
    Truncated,
    BelowMinReward,
    /// A named evaluator did not score it a success (or did not score it).
    EvaluatorNotSuccessful,
    /// A named evaluator scored it below the reward asked for (or did not score it).
    EvaluatorBelowMinReward,
    OverMaxTurns,
    OverMaxTokens,
    OtherExitStatus,
    /// The `--where` filter left it out.
    FilteredOut,
    /// Its task's pass rate is outside `min_pass_rate`..`max_pass_rate` (or no rollout of it
    /// was scored).
    OutsidePassRate,
    /// Its text shares an n-gram with a held-out file.
    Contaminated,
    /// It repeats (or nearly repeats) an earlier kept rollout of its task.
    Duplicate,
    NotBestOfN,
    OverMaxPerTask,
}

/// The outcome of a selection.
#[derive(Debug, Default)]
pub struct Selected<'a> {
    pub kept: Vec<&'a TrajectoryRecord>,
    pub dropped: BTreeMap<DropReason, usize>,
}

/// A task's identity across the run: the same task id in two environments is two tasks.
fn task_of(r: &TrajectoryRecord) -> (&str, &str) {
    (&r.key.environment, &r.key.task)
}

/// The first of the per-record criteria of `sel` that `r` fails, if any.
fn failed_criterion(
    r: &TrajectoryRecord,
    sel: &Selection,
) -> Result<Option<DropReason>, ExportError> {
    let evaluation = |name: &str| r.evaluations.iter().find(|e| e.evaluator == name);
    Ok(Some(if !r.is_final() {
        DropReason::NotFinal
    } else if sel.exclude_tasks.contains(&r.key.task)
        || sel
            .exclude_tasks
            .contains(&format!("{}/{}", r.key.environment, r.key.task))
    {
        DropReason::ExcludedTask
    } else if let Some(drop) = sel.labels.as_ref().and_then(|l| l.check(&r.key)) {
        match drop {
            crate::labels::LabelDrop::Rejected => DropReason::RejectedByReviewer,
            crate::labels::LabelDrop::NotAccepted => DropReason::NotAccepted,
        }
    } else if sel.success_only && !r.success {
        DropReason::NotSuccessful
    } else if sel.success_only && !sel.include_truncated && r.truncated() {
        DropReason::Truncated
    } else if sel.min_reward.is_some_and(|m| r.reward < m) {
        DropReason::BelowMinReward
    } else if sel
        .evaluator_success
        .iter()
        .any(|name| !evaluation(name).is_some_and(|e| e.success))
    {
        DropReason::EvaluatorNotSuccessful
    } else if sel
        .evaluator_min_reward
        .iter()
        .any(|(name, min)| !evaluation(name).is_some_and(|e| e.reward >= *min))
    {
        DropReason::EvaluatorBelowMinReward
    } else if sel.max_turns.is_some_and(|m| r.assistant_turns() > m) {
        DropReason::OverMaxTurns
    } else if sel.max_tokens.is_some_and(|m| r.usage.total_tokens() > m) {
        DropReason::OverMaxTokens
    } else if !sel.exit_statuses.is_empty() && !sel.exit_statuses.contains(&r.outcome.exit_status) {
        DropReason::OtherExitStatus
    } else {
        match &sel.where_filter {
            Some(f) => match f.keeps(r) {
                Ok(true) => return Ok(None),
                Ok(false) => DropReason::FilteredOut,
                Err(message) => {
                    return Err(ExportError::Filter {
                        filter: f.source().to_string(),
                        key: r.key.to_string(),
                        message,
                    })
                }
            },
            None => return Ok(None),
        }
    }))
}

/// A task as the pass rate sees it: (environment, task, scaffold, model).
fn cell_of(r: &TrajectoryRecord) -> (&str, &str, &str, &str) {
    (
        &r.key.environment,
        &r.key.task,
        &r.key.scaffold,
        &r.key.model,
    )
}

/// Per task (and scaffold and model): scored finished rollouts and how many succeeded.
fn pass_rates(records: &[TrajectoryRecord]) -> HashMap<(&str, &str, &str, &str), (u64, u64)> {
    let mut out: HashMap<_, (u64, u64)> = HashMap::new();
    for r in records.iter().filter(|r| r.is_final() && r.is_scored()) {
        let e = out.entry(cell_of(r)).or_default();
        e.0 += 1;
        e.1 += u64::from(r.success);
    }
    out
}

/// Applies `sel` to `records`, keeping the run's order among what is kept. Fails only when the
/// `--where` filter fails on a record.
pub fn select<'a>(
    records: &'a [TrajectoryRecord],
    sel: &Selection,
) -> Result<Selected<'a>, ExportError> {
    let mut out = Selected::default();
    let count = |out: &mut Selected<'a>, why| *out.dropped.entry(why).or_insert(0) += 1;
    let mut candidates: Vec<(usize, &TrajectoryRecord)> = Vec::new();
    let mut seen: HashMap<(&str, &str), Vec<crate::hygiene::Fingerprint>> = HashMap::new();
    let rates =
        (sel.min_pass_rate.is_some() || sel.max_pass_rate.is_some()).then(|| pass_rates(records));
    let in_band = |r: &TrajectoryRecord| match &rates {
        None => true,
        Some(rates) => rates.get(&cell_of(r)).is_some_and(|&(n, ok)| {
            let rate = ok as f64 / n as f64;
            n > 0
                && sel.min_pass_rate.is_none_or(|m| rate >= m)
                && sel.max_pass_rate.is_none_or(|m| rate <= m)
        }),
    };
    for (i, r) in records.iter().enumerate() {
        match failed_criterion(r, sel)? {
            Some(why) => count(&mut out, why),
            None if !in_band(r) => count(&mut out, DropReason::OutsidePassRate),
            None if sel
                .decontaminate
                .as_ref()
                .is_some_and(|h| h.contaminates(r)) =>
            {
                count(&mut out, DropReason::Contaminated)
            }
            None => match &sel.dedup {
                Some(d) => {
                    let f = d.fingerprint(r);
                    let kept = seen.entry(task_of(r)).or_default();
                    if d.duplicates(&f, kept) {
                        count(&mut out, DropReason::Duplicate);
                    } else {
                        kept.push(f);
                        candidates.push((i, r));
                    }
                }
                None => candidates.push((i, r)),
            },
        }
    }
    let per_task_cap = match (sel.best_of_n, sel.max_per_task) {
        (true, _) => Some((1, DropReason::NotBestOfN)),
        (false, Some(k)) => Some((k, DropReason::OverMaxPerTask)),
        (false, None) => None,
    };
    if let Some((cap, reason)) = per_task_cap {
        let mut by_task: HashMap<(&str, &str), Vec<(usize, &TrajectoryRecord)>> = HashMap::new();
        for c in candidates.drain(..) {
            by_task.entry(task_of(c.1)).or_default().push(c);
        }
        for (_, mut group) in by_task {
            // Best first: higher reward, then success, then fewer tokens, then lower sample.
            group.sort_by(|a, b| {
                b.1.reward
                    .total_cmp(&a.1.reward)
                    .then(b.1.success.cmp(&a.1.success))
                    .then(a.1.usage.total_tokens().cmp(&b.1.usage.total_tokens()))
                    .then(a.0.cmp(&b.0))
            });
            for (n, c) in group.into_iter().enumerate() {
                if n < cap {
                    candidates.push(c);
                } else {
                    count(&mut out, reason);
                }
            }
        }
        candidates.sort_by_key(|c| c.0);
    }
    out.kept = candidates.into_iter().map(|c| c.1).collect();
    Ok(out)
}

/// Counts written beside an export as `<output>_stats.json`. The first five keys are the ones
/// PettingLLMs' collector writes, so existing dashboards read ours too.
#[derive(Debug, Clone, Default, Serialize)]
pub struct ExportStats {
    /// Rollouts that became training data.
    pub total_collected: usize,
    /// Of those, successful ones.
    pub total_successful: usize,
    /// Finished rollouts considered (infrastructure errors excluded).
    pub total_episodes: usize,
    /// Of those, successful ones.
    pub successful_episodes: usize,
    /// Training examples written (a per-turn format writes several per rollout).
    pub total_sft_examples: usize,
    pub format: String,
    pub records_read: usize,
    /// Selected rollouts the format could not represent (for example a ShareGPT conversation
    /// that does not alternate); they produced no example.
    pub records_without_examples: usize,
    pub dropped: BTreeMap<DropReason, usize>,
    /// The format's own counts (see [`Exporter::counts`]).
    #[serde(skip_serializing_if = "BTreeMap::is_empty")]
    pub counts: BTreeMap<String, usize>,
    pub selection: Selection,
}

/// Writes the selected records with `exporter`; returns the stats.
pub fn export_records(
    records: &[TrajectoryRecord],
    selection: &Selection,
    exporter: &dyn Exporter,
    format: &str,
    out: &mut dyn Write,
) -> Result<ExportStats, ExportError> {
    let selected = select(records, selection)?;
    let mut stats = ExportStats {
        format: format.to_string(),
        records_read: records.len(),
        selection: selection.clone(),
        ..ExportStats::default()
    };
    for r in records.iter().filter(|r| r.is_final()) {
        stats.total_episodes += 1;
        stats.successful_episodes += usize::from(r.success);
    }
    for r in &selected.kept {
        let n = exporter.write(r, out)?;
        stats.total_sft_examples += n;
        stats.records_without_examples += usize::from(n == 0);
        stats.total_collected += 1;
        stats.total_successful += usize::from(r.success);
    }
    stats.total_sft_examples += exporter.finish(out)?;
    stats.counts = exporter.counts();
    stats.dropped = selected.dropped;
    Ok(stats)
}

//! Selection (rejection sampling): which rollouts of a run become training data, and why each
//! of the others was left out.

use std::collections::{BTreeMap, HashMap, HashSet};

use serde::{Deserialize, Serialize};

use super::role::ExportError;
use crate::trajectory::TrajectoryRecord;

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

impl Selection {
    /// The first evaluator the selection names (`evaluator_success`, then
    /// `evaluator_min_reward`) that scored no rollout of `records`, with the names of the
    /// evaluators that did, sorted. `None` when every named evaluator scored some rollout.
    pub fn unknown_evaluator<'a>(
        &'a self,
        records: &'a [TrajectoryRecord],
    ) -> Option<(&'a str, Vec<&'a str>)> {
        let named: Vec<&str> = self
            .evaluator_success
            .iter()
            .map(String::as_str)
            .chain(self.evaluator_min_reward.iter().map(|(n, _)| n.as_str()))
            .collect();
        // Which evaluators the run has: read only when an evaluator is named.
        if named.is_empty() {
            return None;
        }
        let known: HashSet<&str> = records
            .iter()
            .flat_map(|r| r.evaluations.iter().map(|e| e.evaluator.as_str()))
            .collect();
        let missing = named.into_iter().find(|name| !known.contains(name))?;
        let mut names: Vec<&str> = known.into_iter().collect();
        names.sort_unstable();
        Some((missing, names))
    }
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

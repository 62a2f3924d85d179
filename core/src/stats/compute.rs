//! The metrics computed: rollouts grouped by environment × scaffold × model (or other keys) into
//! [`RunStats`] of rates, means, spreads, pass@k curves and each evaluator's verdicts.

use std::collections::{BTreeMap, HashMap, HashSet};

use serde::Serialize;

use super::estimate::{mean_interval, pass_at_k, pass_hat_k, unsigned_zero, wilson_interval};
use crate::trajectory::{RolloutKey, TrajectoryRecord};

/// What rollouts are grouped by: a key field, or a field of the task's data.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum GroupKey {
    Environment,
    Scaffold,
    Model,
    Task,
    Sample,
    ExitStatus,
    /// A field of the task's data, by dotted path (`level`, `meta.difficulty`).
    TaskField(Vec<String>),
}

impl GroupKey {
    /// The default grouping: environment × scaffold × model.
    pub const DEFAULT: [GroupKey; 3] = [GroupKey::Environment, GroupKey::Scaffold, GroupKey::Model];

    /// Reads `environment`, `scaffold`, `model`, `task`, `sample`, `exit_status`, or a task
    /// data field (`task.level`, or a bare `level` naming no key field).
    pub fn parse(s: &str) -> Result<Self, String> {
        let s = s.trim();
        Ok(match s {
            "environment" | "env" => GroupKey::Environment,
            "scaffold" => GroupKey::Scaffold,
            "model" => GroupKey::Model,
            "task" => GroupKey::Task,
            "sample" => GroupKey::Sample,
            "exit_status" | "status" => GroupKey::ExitStatus,
            "" => return Err("an empty grouping key; keys: environment, scaffold, model, task, sample, exit_status, or a task field such as level or task.meta.level".into()),
            other => {
                let path = other.strip_prefix("task.").unwrap_or(other);
                if path.split('.').any(str::is_empty) {
                    return Err(format!("`{other}` is not a field path (use dots between names: task.meta.level)"));
                }
                GroupKey::TaskField(path.split('.').map(str::to_string).collect())
            }
        })
    }

    /// Parses a comma-separated list.
    pub fn parse_list(s: &str) -> Result<Vec<Self>, String> {
        s.split(',').map(GroupKey::parse).collect()
    }

    pub fn name(&self) -> String {
        match self {
            GroupKey::Environment => "environment".into(),
            GroupKey::Scaffold => "scaffold".into(),
            GroupKey::Model => "model".into(),
            GroupKey::Task => "task".into(),
            GroupKey::Sample => "sample".into(),
            GroupKey::ExitStatus => "exit_status".into(),
            GroupKey::TaskField(p) => p.join("."),
        }
    }

    /// This key's value for a record; a task field the task lacks is `(none)`.
    pub fn value(&self, r: &TrajectoryRecord) -> String {
        match self {
            GroupKey::Environment => r.key.environment.clone(),
            GroupKey::Scaffold => r.key.scaffold.clone(),
            GroupKey::Model => r.key.model.clone(),
            GroupKey::Task => r.key.task.clone(),
            GroupKey::Sample => r.key.sample.to_string(),
            GroupKey::ExitStatus => r.outcome.exit_status.to_string(),
            GroupKey::TaskField(path) => {
                let mut v = &r.task.data;
                for seg in path {
                    v = match v {
                        serde_json::Value::Object(m) => {
                            m.get(seg).unwrap_or(&serde_json::Value::Null)
                        }
                        serde_json::Value::Array(a) => seg
                            .parse::<usize>()
                            .ok()
                            .and_then(|i| a.get(i))
                            .unwrap_or(&serde_json::Value::Null),
                        _ => &serde_json::Value::Null,
                    };
                }
                match v {
                    serde_json::Value::Null => "(none)".into(),
                    serde_json::Value::String(s) => s.clone(),
                    other => other.to_string(),
                }
            }
        }
    }
}

/// The spread of one quantity over a group's finished rollouts: mean, sample standard
/// deviation and quantiles (statrs' median-unbiased definition, R's type 8).
#[derive(Debug, Clone, Serialize)]
pub struct Spread {
    pub mean: f64,
    pub std: f64,
    pub min: f64,
    pub p25: f64,
    pub median: f64,
    pub p75: f64,
    pub p90: f64,
    pub max: f64,
}

impl Spread {
    /// `None` for no values.
    pub fn of(values: &[f64]) -> Option<Self> {
        use statrs::statistics::{Data, OrderStatistics, Statistics};
        if values.is_empty() {
            return None;
        }
        let std = if values.len() > 1 {
            values.iter().std_dev()
        } else {
            0.0
        };
        let mut data = Data::new(values.to_vec());
        Some(Spread {
            mean: unsigned_zero(values.iter().sum::<f64>() / values.len() as f64),
            std: unsigned_zero(std),
            min: unsigned_zero(data.order_statistic(1)),
            p25: unsigned_zero(data.quantile(0.25)),
            median: unsigned_zero(data.median()),
            p75: unsigned_zero(data.quantile(0.75)),
            p90: unsigned_zero(data.quantile(0.9)),
            max: unsigned_zero(data.order_statistic(values.len())),
        })
    }
}

/// A rate with its 95% Wilson interval; absent for no trials.
#[derive(Debug, Clone, Serialize)]
pub struct Rate {
    pub successes: u64,
    pub trials: u64,
    pub rate: f64,
    pub ci95: (f64, f64),
}

impl Rate {
    pub fn of(successes: u64, trials: u64) -> Option<Self> {
        (trials > 0).then(|| Rate {
            successes,
            trials,
            rate: successes as f64 / trials as f64,
            ci95: wilson_interval(successes, trials),
        })
    }
}

/// A mean with its 95% t interval (kept within the values' range).
#[derive(Debug, Clone, Serialize)]
pub struct Mean {
    pub mean: f64,
    pub ci95: (f64, f64),
}

impl Mean {
    pub fn of(values: &[f64]) -> Option<Self> {
        (!values.is_empty()).then(|| {
            let (mean, (lo, hi)) = mean_interval(values);
            Mean {
                mean: unsigned_zero(mean),
                ci95: (unsigned_zero(lo), unsigned_zero(hi)),
            }
        })
    }
}

/// One evaluator's verdicts within a group.
#[derive(Debug, Clone, Serialize)]
pub struct EvaluatorStats {
    /// The name its evaluations are recorded under.
    pub evaluator: String,
    /// Finished rollouts it scored.
    pub scored: u64,
    /// Finished rollouts of the group it did not score (out of its scope, or not applicable).
    pub not_scored: u64,
    pub success: Option<Rate>,
    pub reward: Option<Mean>,
    /// The mean of each of its sub-rewards over the rollouts that report it.
    pub components: BTreeMap<String, f64>,
}

/// Metrics of one group (by default one environment × scaffold × model cell).
#[derive(Debug, Clone, Serialize)]
pub struct GroupStats {
    /// The group's value of each grouping key, in the order asked for.
    pub group: serde_json::Map<String, serde_json::Value>,
    /// Finished rollouts (infrastructure errors and interruptions excluded).
    pub rollouts: u64,
    pub tasks: u64,
    pub successes: u64,
    /// The record's label (`[scoring]`): absent when no rollout finished.
    pub success: Option<Rate>,
    pub reward: Option<Mean>,
    pub reward_spread: Option<Spread>,
    pub turns: Option<Spread>,
    /// Finished rollouts per task (per scaffold and model): the samples each task took, which
    /// differ from task to task under `samples = { max, until_successes }`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub samples_per_task: Option<Spread>,
    /// Samples whose only records are infrastructure errors or interruptions (a later `trawl
    /// run` retries them): they leave tasks with fewer finished samples under a fixed `samples`.
    #[serde(default, skip_serializing_if = "is_zero")]
    pub samples_not_finished: u64,
    /// Whether tasks took different numbers of samples even counting those: sampling stopped
    /// at enough successes (`samples = { max, until_successes }`), or a run stopped part way.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub samples_stopped_early: bool,
    pub completion_tokens: Option<Spread>,
    /// `pass@k` for k = 1..=max samples per task, averaged over tasks with at least k samples.
    pub pass_at_k: BTreeMap<u64, f64>,
    pub pass_hat_k: BTreeMap<u64, f64>,
    pub exit_statuses: BTreeMap<String, u64>,
    pub infra_errors: u64,
    pub interrupted: u64,
    /// Finished rollouts no evaluator scored (imported without a report): counted in
    /// `rollouts`' turns and tokens, left out of success, reward and pass@k.
    #[serde(default, skip_serializing_if = "is_zero")]
    pub unscored: u64,
    /// Every evaluator's own verdicts, in the order they first appear.
    pub evaluators: Vec<EvaluatorStats>,
}

/// The mean of each `evaluator.component` over the records that report it.
pub fn component_means(records: &[&TrajectoryRecord]) -> BTreeMap<String, f64> {
    evaluator_stats(records)
        .into_iter()
        .flat_map(|e| {
            e.components
                .into_iter()
                .map(move |(k, v)| (format!("{}.{k}", e.evaluator), v))
        })
        .collect()
}

/// Metrics of a whole run.
#[derive(Debug, Clone, Serialize)]
pub struct RunStats {
    /// The grouping keys.
    pub by: Vec<String>,
    pub records: u64,
    pub finished: u64,
    pub infra_errors: u64,
    pub interrupted: u64,
    /// The errors behind infrastructure failures, by kind, with one example message.
    pub infra_error_kinds: BTreeMap<String, (u64, String)>,
    pub groups: Vec<GroupStats>,
}

fn is_zero(n: &u64) -> bool {
    *n == 0
}

/// Computes the run's metrics by environment × scaffold × model.
pub fn compute(records: &[TrajectoryRecord]) -> RunStats {
    compute_by(records, &GroupKey::DEFAULT)
}

/// pass@k and pass^k for k = 1..=max samples, averaged over tasks with at least k samples.
fn pass_curves(per_task: &BTreeMap<(&str, &str), (u64, u64)>) -> [BTreeMap<u64, f64>; 2] {
    let max_k = per_task.values().map(|(n, _)| *n).max().unwrap_or(0);
    let mut pass_at = BTreeMap::new();
    let mut pass_hat = BTreeMap::new();
    for k in 1..=max_k {
        let eligible: Vec<(u64, u64)> = per_task
            .values()
            .copied()
            .filter(|(n, _)| *n >= k)
            .collect();
        if eligible.is_empty() {
            continue;
        }
        let m = eligible.len() as f64;
        let mean = |f: fn(u64, u64, u64) -> f64| {
            unsigned_zero(eligible.iter().map(|&(n, c)| f(n, c, k)).sum::<f64>() / m)
        };
        pass_at.insert(k, mean(pass_at_k));
        pass_hat.insert(k, mean(pass_hat_k));
    }
    [pass_at, pass_hat]
}

fn evaluator_stats(finished: &[&TrajectoryRecord]) -> Vec<EvaluatorStats> {
    let mut order: Vec<String> = Vec::new();
    let mut by_name: BTreeMap<String, Vec<&crate::evaluator::Evaluation>> = BTreeMap::new();
    for r in finished {
        for e in &r.evaluations {
            if !by_name.contains_key(&e.evaluator) {
                order.push(e.evaluator.clone());
            }
            by_name.entry(e.evaluator.clone()).or_default().push(e);
        }
    }
    order
        .into_iter()
        .map(|name| {
            let evals = &by_name[&name];
            let scored = evals.len() as u64;
            let rewards: Vec<f64> = evals.iter().map(|e| e.reward).collect();
            let mut sums: BTreeMap<String, (f64, u64)> = BTreeMap::new();
            for e in evals {
                for (k, v) in &e.components {
                    let s = sums.entry(k.clone()).or_default();
                    s.0 += v;
                    s.1 += 1;
                }
            }
            EvaluatorStats {
                evaluator: name.clone(),
                scored,
                // Records imported from elsewhere may carry one evaluator twice.
                not_scored: (finished.len() as u64).saturating_sub(scored),
                success: Rate::of(evals.iter().filter(|e| e.success).count() as u64, scored),
                reward: Mean::of(&rewards),
                components: sums
                    .into_iter()
                    .map(|(k, (sum, n))| (k, unsigned_zero(sum / n as f64)))
                    .collect(),
            }
        })
        .collect()
}

/// Computes the run's metrics grouped by `by` (at least one key).
pub fn compute_by(records: &[TrajectoryRecord], by: &[GroupKey]) -> RunStats {
    let mut cells: BTreeMap<Vec<String>, Vec<&TrajectoryRecord>> = BTreeMap::new();
    let mut infra_error_kinds: BTreeMap<String, (u64, String)> = BTreeMap::new();
    for r in records {
        cells
            .entry(by.iter().map(|k| k.value(r)).collect())
            .or_default()
            .push(r);
        if let Some(e) = &r.outcome.error {
            if !r.is_final() {
                let entry = infra_error_kinds
                    .entry(e.kind.clone())
                    .or_insert_with(|| (0, e.message.clone()));
                entry.0 += 1;
            }
        }
    }
    let mut groups = Vec::new();
    for (values, cell) in cells {
        let finished: Vec<&TrajectoryRecord> =
            cell.iter().copied().filter(|r| r.is_final()).collect();
        let count = |s: crate::trajectory::ExitStatus| {
            cell.iter().filter(|r| r.outcome.exit_status == s).count() as u64
        };
        // Rates are over scored rollouts: an unscored one (an imported trajectory without a
        // harness report) is no failure. Turns, tokens and exit statuses cover every one.
        let scored: Vec<&TrajectoryRecord> =
            finished.iter().copied().filter(|r| r.is_scored()).collect();
        let n = scored.len() as u64;
        let successes = scored.iter().filter(|r| r.success).count() as u64;
        let rewards: Vec<f64> = scored.iter().map(|r| r.reward).collect();
        let mut per_task: BTreeMap<(&str, &str), (u64, u64)> = BTreeMap::new();
        let mut exit_statuses = BTreeMap::new();
        for r in &finished {
            if r.is_scored() {
                let e = per_task
                    .entry((&r.key.environment, &r.key.task))
                    .or_insert((0, 0));
                e.0 += 1;
                e.1 += u64::from(r.success);
            }
            *exit_statuses
                .entry(r.outcome.exit_status.to_string())
                .or_insert(0) += 1;
        }
        let [pass_at_k, pass_hat_k] = pass_curves(&per_task);
        // Samples whose only records are infrastructure errors or interruptions (not retried
        // yet): with a fixed `samples`, these are why tasks took different numbers of finished
        // samples. Per (environment, task, scaffold, model): (finished, not finished).
        let final_keys: HashSet<&RolloutKey> = finished.iter().map(|r| &r.key).collect();
        let not_finished: HashSet<&RolloutKey> = cell
            .iter()
            .filter(|r| !r.is_final() && !final_keys.contains(&r.key))
            .map(|r| &r.key)
            .collect();
        let mut per_cell: HashMap<(&str, &str, &str, &str), (f64, f64)> = HashMap::new();
        fn cell_of(k: &RolloutKey) -> (&str, &str, &str, &str) {
            (&k.environment, &k.task, &k.scaffold, &k.model)
        }
        for r in &finished {
            per_cell.entry(cell_of(&r.key)).or_default().0 += 1.0;
        }
        for k in &not_finished {
            per_cell.entry(cell_of(k)).or_default().1 += 1.0;
        }
        let turns: Vec<f64> = finished
            .iter()
            .map(|r| r.assistant_turns() as f64)
            .collect();
        let tokens: Vec<f64> = finished
            .iter()
            .map(|r| r.usage.completion_tokens as f64)
            .collect();
        groups.push(GroupStats {
            group: by
                .iter()
                .zip(values)
                .map(|(k, v)| (k.name(), serde_json::Value::String(v)))
                .collect(),
            rollouts: finished.len() as u64,
            tasks: finished
                .iter()
                .map(|r| (&r.key.environment, &r.key.task))
                .collect::<std::collections::HashSet<_>>()
                .len() as u64,
            successes,
            success: Rate::of(successes, n),
            reward: Mean::of(&rewards),
            reward_spread: Spread::of(&rewards),
            turns: Spread::of(&turns),
            samples_per_task: Spread::of(&per_cell.values().map(|c| c.0).collect::<Vec<_>>())
                // Worth a line only when tasks took different numbers of samples.
                .filter(|s| s.min != s.max),
            samples_not_finished: not_finished.len() as u64,
            samples_stopped_early: {
                let all: Vec<f64> = per_cell.values().map(|c| c.0 + c.1).collect();
                Spread::of(&all).is_some_and(|s| s.min != s.max)
            },
            completion_tokens: Spread::of(&tokens),
            pass_at_k,
            pass_hat_k,
            exit_statuses,
            infra_errors: count(crate::trajectory::ExitStatus::InfraError),
            interrupted: count(crate::trajectory::ExitStatus::Interrupted),
            unscored: finished.len() as u64 - n,
            evaluators: evaluator_stats(&finished),
        });
    }
    RunStats {
        by: by.iter().map(GroupKey::name).collect(),
        records: records.len() as u64,
        finished: groups.iter().map(|g| g.rollouts).sum(),
        infra_errors: groups.iter().map(|g| g.infra_errors).sum(),
        interrupted: groups.iter().map(|g| g.interrupted).sum(),
        infra_error_kinds,
        groups,
    }
}

//! Metrics over a run: success rate and mean reward with 95% confidence intervals, pass@k and
//! pass^k, by environment × scaffold × model. Interrupted and infrastructure-error rollouts are
//! counted apart and left out of every rate.

use std::collections::{BTreeMap, HashMap, HashSet};

use serde::Serialize;

use crate::trajectory::{RolloutKey, TrajectoryRecord};

/// `n choose k` as a float, exact enough for the ratios below.
fn ratio_of_binomials(top_n: u64, n: u64, k: u64) -> f64 {
    // C(top_n, k) / C(n, k) = prod_{i=0}^{k-1} (top_n - i) / (n - i)
    if k > top_n {
        return 0.0;
    }
    (0..k)
        .map(|i| (top_n - i) as f64 / (n - i) as f64)
        .product()
}

/// The unbiased pass@k estimator of the Codex paper: `1 - C(n-c, k) / C(n, k)`.
pub fn pass_at_k(n: u64, c: u64, k: u64) -> f64 {
    assert!(
        k >= 1 && k <= n && c <= n,
        "pass@k needs 1 <= k <= n and c <= n"
    );
    1.0 - ratio_of_binomials(n - c, n, k)
}

/// tau-bench's pass^k: the chance that k samples drawn without replacement all succeed,
/// `C(c, k) / C(n, k)`.
pub fn pass_hat_k(n: u64, c: u64, k: u64) -> f64 {
    assert!(
        k >= 1 && k <= n && c <= n,
        "pass^k needs 1 <= k <= n and c <= n"
    );
    ratio_of_binomials(c, n, k)
}

/// Wilson score interval for a proportion at 95%.
pub fn wilson_interval(successes: u64, n: u64) -> (f64, f64) {
    if n == 0 {
        return (0.0, 0.0);
    }
    let z = 1.959_964;
    let n_f = n as f64;
    let p = successes as f64 / n_f;
    let denom = 1.0 + z * z / n_f;
    let centre = (p + z * z / (2.0 * n_f)) / denom;
    let half = z * ((p * (1.0 - p) / n_f) + z * z / (4.0 * n_f * n_f)).sqrt() / denom;
    ((centre - half).max(0.0), (centre + half).min(1.0))
}

/// Two-sided 95% Student t critical value for `df` degrees of freedom.
fn t_critical(df: u64) -> f64 {
    use statrs::distribution::{ContinuousCDF, StudentsT};
    match StudentsT::new(0.0, 1.0, df as f64) {
        Ok(t) => t.inverse_cdf(0.975),
        Err(_) => f64::NAN,
    }
}

/// Mean with a 95% t interval, kept inside the range the values span: a mean of values within
/// `[lo, hi]` lies within it, so an interval reaching past it (as the t interval does for a
/// few values near a bound) is cut there.
pub fn mean_interval(values: &[f64]) -> (f64, (f64, f64)) {
    let n = values.len();
    if n == 0 {
        return (0.0, (0.0, 0.0));
    }
    let mean = values.iter().sum::<f64>() / n as f64;
    if n == 1 {
        return (mean, (mean, mean));
    }
    let (lo, hi) = values
        .iter()
        .fold((f64::INFINITY, f64::NEG_INFINITY), |(lo, hi), v| {
            (lo.min(*v), hi.max(*v))
        });
    let var = values.iter().map(|v| (v - mean).powi(2)).sum::<f64>() / (n - 1) as f64;
    let half = t_critical(n as u64 - 1) * (var / n as f64).sqrt();
    (mean, ((mean - half).max(lo), (mean + half).min(hi)))
}

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

/// A number without a sign on zero: `-0.0` reads as a negative result that is not there.
pub fn unsigned_zero(x: f64) -> f64 {
    if x == 0.0 {
        0.0
    } else {
        x
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

/// Computes the run's metrics by environment × scaffold × model.
fn is_zero(n: &u64) -> bool {
    *n == 0
}

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

/// `0.500`, with no `-0.000`.
fn f3(x: f64) -> String {
    format!("{:.3}", unsigned_zero(x))
}

fn pct(x: f64) -> String {
    format!("{:.1}%", unsigned_zero(100.0 * x))
}

fn rate_text(r: &Option<Rate>) -> String {
    match r {
        Some(r) => format!(
            "{}  (95% CI {}–{})  {}/{}",
            pct(r.rate),
            pct(r.ci95.0).trim_end_matches('%'),
            pct(r.ci95.1),
            r.successes,
            r.trials
        ),
        None => "–".into(),
    }
}

fn mean_text(m: &Option<Mean>) -> String {
    match m {
        Some(m) => format!("{}  (95% CI {}–{})", f3(m.mean), f3(m.ci95.0), f3(m.ci95.1)),
        None => "–".into(),
    }
}

fn spread_text(s: &Spread, decimals: usize) -> String {
    let f = |x: f64| format!("{:.*}", decimals, unsigned_zero(x));
    format!(
        "mean {}  sd {}  min {}  p25 {}  median {}  p75 {}  p90 {}  max {}",
        f(s.mean),
        f(s.std),
        f(s.min),
        f(s.p25),
        f(s.median),
        f(s.p75),
        f(s.p90),
        f(s.max)
    )
}

impl GroupStats {
    /// `environment=math scaffold=chat model=mock`.
    pub fn label(&self) -> String {
        self.group
            .iter()
            .map(|(k, v)| format!("{k}={}", v.as_str().unwrap_or_default()))
            .collect::<Vec<_>>()
            .join(" ")
    }
}

/// The columns of the table formats: one row per group and evaluator (`label` is the record's
/// own reward and success, as `[scoring]` decided them).
const COLUMNS: [&str; 20] = [
    "evaluator",
    "rollouts",
    "scored",
    "successes",
    "success_rate",
    "success_ci_low",
    "success_ci_high",
    "mean_reward",
    "reward_ci_low",
    "reward_ci_high",
    "reward_std",
    "reward_median",
    "turns_mean",
    "turns_std",
    "turns_median",
    "tokens_mean",
    "tokens_std",
    "tokens_median",
    "infra_errors",
    "interrupted",
];

impl RunStats {
    /// Rows of the table formats: the group's key values, then [`COLUMNS`]; empty cells where a
    /// value does not exist (no finished rollout, an evaluator's row).
    pub fn rows(&self) -> (Vec<String>, Vec<Vec<String>>) {
        let mut header = self.by.clone();
        header.extend(COLUMNS.iter().map(|c| c.to_string()));
        let opt = |v: Option<f64>| v.map(f3).unwrap_or_default();
        let mut rows = Vec::new();
        for g in &self.groups {
            let keys: Vec<String> = g
                .group
                .values()
                .map(|v| v.as_str().unwrap_or_default().to_string())
                .collect();
            let spread = |s: &Option<Spread>| {
                [
                    opt(s.as_ref().map(|s| s.mean)),
                    opt(s.as_ref().map(|s| s.std)),
                    opt(s.as_ref().map(|s| s.median)),
                ]
            };
            let mut row = keys.clone();
            row.extend([
                "label".to_string(),
                g.rollouts.to_string(),
                g.rollouts.to_string(),
                g.successes.to_string(),
                opt(g.success.as_ref().map(|r| r.rate)),
                opt(g.success.as_ref().map(|r| r.ci95.0)),
                opt(g.success.as_ref().map(|r| r.ci95.1)),
                opt(g.reward.as_ref().map(|m| m.mean)),
                opt(g.reward.as_ref().map(|m| m.ci95.0)),
                opt(g.reward.as_ref().map(|m| m.ci95.1)),
                opt(g.reward_spread.as_ref().map(|s| s.std)),
                opt(g.reward_spread.as_ref().map(|s| s.median)),
            ]);
            row.extend(spread(&g.turns));
            row.extend(spread(&g.completion_tokens));
            row.extend([g.infra_errors.to_string(), g.interrupted.to_string()]);
            rows.push(row);
            for e in &g.evaluators {
                let mut row = keys.clone();
                row.extend([
                    e.evaluator.clone(),
                    g.rollouts.to_string(),
                    e.scored.to_string(),
                    e.success.as_ref().map_or(0, |r| r.successes).to_string(),
                    opt(e.success.as_ref().map(|r| r.rate)),
                    opt(e.success.as_ref().map(|r| r.ci95.0)),
                    opt(e.success.as_ref().map(|r| r.ci95.1)),
                    opt(e.reward.as_ref().map(|m| m.mean)),
                    opt(e.reward.as_ref().map(|m| m.ci95.0)),
                    opt(e.reward.as_ref().map(|m| m.ci95.1)),
                ]);
                row.extend(std::iter::repeat_n(String::new(), COLUMNS.len() - 10));
                rows.push(row);
            }
        }
        (header, rows)
    }

    /// A Markdown table: one row per group and evaluator.
    pub fn render_markdown(&self) -> String {
        let (header, rows) = self.rows();
        // Fewer columns than the CSV: what a reader compares at a glance.
        let keep: Vec<usize> = header
            .iter()
            .enumerate()
            .filter(|(i, h)| {
                *i < self.by.len()
                    || [
                        "evaluator",
                        "rollouts",
                        "scored",
                        "success_rate",
                        "mean_reward",
                        "reward_std",
                        "turns_mean",
                        "tokens_mean",
                        "infra_errors",
                    ]
                    .contains(&h.as_str())
            })
            .map(|(i, _)| i)
            .collect();
        // Cells are the CSV's; rates read better as percentages, counts with fewer decimals.
        let number = |cell: &str, style: &str| -> String {
            match cell.parse::<f64>() {
                Ok(x) => match style {
                    "percent" => format!("{:.1}%", unsigned_zero(100.0 * x)),
                    "one" => format!("{:.1}", unsigned_zero(x)),
                    "two" => format!("{:.2}", unsigned_zero(x)),
                    _ => cell.to_string(),
                },
                Err(_) => cell.to_string(),
            }
        };
        let ci = |row: &[String], i: usize, lo: usize, hi: usize, style: &str| -> String {
            let n = |c: &str| number(c, style);
            if row[i].is_empty() {
                "–".into()
            } else if row[lo].is_empty() {
                n(&row[i])
            } else {
                format!("{} ({}–{})", n(&row[i]), n(&row[lo]), n(&row[hi]))
            }
        };
        let col = |name: &str| header.iter().position(|h| h == name).unwrap_or(0);
        let mut out = String::new();
        let head: Vec<String> = keep
            .iter()
            .map(|&i| match header[i].as_str() {
                "success_rate" => "success (95% CI)".to_string(),
                "mean_reward" => "mean reward (95% CI)".to_string(),
                other => other.replace('_', " "),
            })
            .collect();
        out.push_str(&format!("| {} |\n", head.join(" | ")));
        out.push_str(&format!(
            "|{}\n",
            keep.iter()
                .map(|&i| if i < self.by.len() || i == col("evaluator") {
                    " --- |"
                } else {
                    " ---: |"
                })
                .collect::<String>()
        ));
        for row in &rows {
            let cells: Vec<String> = keep
                .iter()
                .map(|&i| {
                    let cell = match header[i].as_str() {
                        "success_rate" => ci(
                            row,
                            i,
                            col("success_ci_low"),
                            col("success_ci_high"),
                            "percent",
                        ),
                        "mean_reward" => {
                            ci(row, i, col("reward_ci_low"), col("reward_ci_high"), "")
                        }
                        _ if row[i].is_empty() => "–".into(),
                        "turns_mean" => number(&row[i], "two"),
                        "tokens_mean" => number(&row[i], "one"),
                        _ => row[i].clone(),
                    };
                    cell.replace('|', "\\|")
                })
                .collect();
            out.push_str(&format!("| {} |\n", cells.join(" | ")));
        }
        out
    }

    /// A plain-text report for people.
    pub fn render(&self) -> String {
        let mut out = String::new();
        out.push_str(&format!(
            "{} rollouts: {} finished, {} infrastructure errors, {} interrupted (errors and interruptions are excluded below)\n",
            self.records, self.finished, self.infra_errors, self.interrupted
        ));
        for (kind, (count, example)) in &self.infra_error_kinds {
            out.push_str(&format!("  infra error `{kind}` x{count}: {example}\n"));
        }
        for g in &self.groups {
            out.push_str(&format!("\n{}\n", g.label()));
            if g.rollouts == 0 {
                out.push_str(&format!(
                    "  no finished rollouts ({} infra errors, {} interrupted)\n",
                    g.infra_errors, g.interrupted
                ));
                continue;
            }
            out.push_str(&format!(
                "  rollouts        {} over {} tasks\n",
                g.rollouts, g.tasks
            ));
            out.push_str(&format!("  success rate    {}\n", rate_text(&g.success)));
            out.push_str(&format!("  mean reward     {}\n", mean_text(&g.reward)));
            if let Some(s) = &g.reward_spread {
                out.push_str(&format!("  reward          {}\n", spread_text(s, 3)));
            }
            let fmt_k = |m: &BTreeMap<u64, f64>, sign: char| {
                m.iter()
                    .map(|(k, v)| format!("{sign}{k} {}", f3(*v)))
                    .collect::<Vec<_>>()
                    .join("  ")
            };
            out.push_str(&format!("  pass@k          {}\n", fmt_k(&g.pass_at_k, '@')));
            out.push_str(&format!(
                "  pass^k          {}\n",
                fmt_k(&g.pass_hat_k, '^')
            ));
            let statuses = g
                .exit_statuses
                .iter()
                .map(|(s, n)| format!("{s} {n}"))
                .collect::<Vec<_>>()
                .join(", ");
            out.push_str(&format!("  exit statuses   {statuses}\n"));
            if let Some(s) = &g.turns {
                out.push_str(&format!("  turns           {}\n", spread_text(s, 2)));
            }
            if let Some(s) = &g.samples_per_task {
                out.push_str(&format!("  samples/task    {}\n", spread_text(s, 2)));
                // Say what happened: samples lost to errors are not sampling that stopped.
                if g.samples_not_finished > 0 {
                    out.push_str(&format!(
                        "  note            tasks took different numbers of finished samples because {} sample(s) ended only in an infrastructure error or an interruption: they are left out of the rates and pass@k above (the model was not scored on them); `trawl run` again retries them\n",
                        g.samples_not_finished
                    ));
                }
                if g.samples_stopped_early {
                    out.push_str("  note            tasks took different numbers of samples: when sampling stopped at enough successes, the rates and pass@k above describe the samples drawn, not the model's pass rate (when to stop depended on outcomes); compare models on fixed samples. A run stopped part way also leaves tasks with fewer samples: run it again to finish\n");
                }
            }
            if let Some(s) = &g.completion_tokens {
                out.push_str(&format!("  tokens          {}\n", spread_text(s, 1)));
            }
            if !g.evaluators.is_empty() {
                out.push_str("  evaluators\n");
            }
            for e in &g.evaluators {
                out.push_str(&format!(
                    "    {:<14} success {}  mean reward {}",
                    e.evaluator,
                    rate_text(&e.success),
                    mean_text(&e.reward)
                ));
                if e.not_scored > 0 {
                    out.push_str(&format!("  (not scored: {})", e.not_scored));
                }
                out.push('\n');
                if !e.components.is_empty() {
                    let parts = e
                        .components
                        .iter()
                        .map(|(k, v)| format!("{k} {}", f3(*v)))
                        .collect::<Vec<_>>()
                        .join(", ");
                    out.push_str(&format!("      sub-rewards  {parts}\n"));
                }
            }
            if g.infra_errors + g.interrupted > 0 {
                out.push_str(&format!(
                    "  excluded        {} infra errors, {} interrupted\n",
                    g.infra_errors, g.interrupted
                ));
            }
            if g.unscored > 0 {
                out.push_str(&format!(
                    "  unscored        {} (no evaluator scored them: left out of the rates)\n",
                    g.unscored
                ));
            }
        }
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn binom(n: u64, k: u64) -> f64 {
        if k > n {
            return 0.0;
        }
        (0..k).map(|i| (n - i) as f64 / (i + 1) as f64).product()
    }

    #[test]
    fn sub_rewards_are_averaged_per_component_over_finished_rollouts() {
        use crate::evaluator::Evaluation;
        use crate::trajectory::ExitStatus;
        let base = crate::strategies::example_record();
        let with = |task: &str, status: ExitStatus, db: f64, info: Option<f64>| {
            let mut r = base.clone();
            r.key.task = task.into();
            r.outcome.exit_status = status;
            let mut components = BTreeMap::from([("db".to_string(), db)]);
            if let Some(i) = info {
                components.insert("communicate".into(), i);
            }
            r.evaluations = vec![Evaluation {
                evaluator: "tools".into(),
                reward: db,
                success: db == 1.0,
                components,
                details: serde_json::Value::Null,
            }];
            r
        };
        let records = vec![
            with("a", ExitStatus::Submitted, 1.0, Some(1.0)),
            with("b", ExitStatus::Submitted, 0.0, Some(0.5)),
            with("c", ExitStatus::Submitted, 1.0, None),
            // Excluded: an infrastructure error says nothing about the model.
            with("d", ExitStatus::InfraError, 0.0, Some(0.0)),
        ];
        let stats = compute(&records);
        let g = &stats.groups[0];
        let refs: Vec<&TrajectoryRecord> = records.iter().filter(|r| r.is_final()).collect();
        let means = component_means(&refs);
        assert!((means["tools.db"] - 2.0 / 3.0).abs() < 1e-12);
        assert_eq!(means["tools.communicate"], 0.75);
        assert_eq!(g.evaluators[0].components["communicate"], 0.75);
        assert!(
            stats
                .render()
                .contains("sub-rewards  communicate 0.750, db 0.667"),
            "{}",
            stats.render()
        );
    }

    /// Under a fixed `samples`, tasks with fewer finished samples lost them to infrastructure
    /// errors: the note says so, and says nothing of sampling that stopped at enough successes;
    /// that note is kept for samples that were never drawn.
    #[test]
    fn the_samples_note_says_what_happened() {
        use crate::trajectory::ExitStatus;
        let base = crate::strategies::example_record();
        let with = |task: &str, sample: u32, status: ExitStatus| {
            let mut r = base.clone();
            r.key.task = task.into();
            r.key.sample = sample;
            r.outcome.exit_status = status;
            r
        };
        // `samples = 4`: task b's last two samples timed out on the model server.
        let mut records: Vec<TrajectoryRecord> = (0..4)
            .map(|s| with("a", s, ExitStatus::Submitted))
            .collect();
        records.extend((0..2).map(|s| with("b", s, ExitStatus::Submitted)));
        records.push(with("b", 2, ExitStatus::InfraError));
        records.push(with("b", 3, ExitStatus::InfraError));
        let stats = compute(&records);
        let g = &stats.groups[0];
        assert_eq!(
            (g.samples_not_finished, g.samples_stopped_early),
            (2, false)
        );
        let text = stats.render();
        assert!(
            text.contains(
                "because 2 sample(s) ended only in an infrastructure error or an interruption"
            ),
            "{text}"
        );
        assert!(!text.contains("enough successes"), "{text}");

        // Sample 2 retried on resume and finished: nothing is missing any more.
        records.push(with("b", 2, ExitStatus::Submitted));
        let stats = compute(&records);
        assert_eq!(stats.groups[0].samples_not_finished, 1);

        // Sampling until enough succeed: b stopped after two samples, with no error.
        let early: Vec<TrajectoryRecord> = (0..4)
            .map(|s| with("a", s, ExitStatus::Submitted))
            .chain((0..2).map(|s| with("b", s, ExitStatus::Submitted)))
            .collect();
        let stats = compute(&early);
        let g = &stats.groups[0];
        assert_eq!((g.samples_not_finished, g.samples_stopped_early), (0, true));
        let text = stats.render();
        assert!(
            text.contains("sampling stopped at enough successes"),
            "{text}"
        );
        assert!(
            !text.contains("infrastructure error or an interruption"),
            "{text}"
        );
    }

    #[test]
    fn groups_without_finished_rollouts_and_zero_rewards_print_cleanly() {
        use crate::trajectory::ExitStatus;
        let base = crate::strategies::example_record();
        let with = |model: &str, status: ExitStatus, reward: f64| {
            let mut r = base.clone();
            r.key.model = model.into();
            r.outcome.exit_status = status;
            r.reward = reward;
            r.success = false;
            r.evaluations.clear();
            r
        };
        let records = vec![
            with("down", ExitStatus::InfraError, 0.0),
            with("zero", ExitStatus::Submitted, -0.0),
            with("zero", ExitStatus::Submitted, 0.0),
        ];
        let stats = compute(&records);
        let down = stats
            .groups
            .iter()
            .find(|g| g.group["model"] == "down")
            .unwrap();
        assert!(down.success.is_none() && down.reward.is_none());
        let text = stats.render();
        assert!(
            text.contains("no finished rollouts (1 infra errors, 0 interrupted)"),
            "{text}"
        );
        for bad in ["0/0", "-0.0", "NaN"] {
            assert!(!text.contains(bad), "{bad} in {text}");
            assert!(!stats.render_markdown().contains(bad), "{bad}");
        }
        let json = serde_json::to_value(&stats).unwrap();
        assert!(json["groups"][0]["success"].is_null(), "{json}");
        // By a task field the tasks lack: one `(none)` group.
        let by = compute_by(&records, &[GroupKey::parse("task.meta.level").unwrap()]);
        assert_eq!(by.groups.len(), 1);
        assert_eq!(by.groups[0].group["meta.level"], "(none)");
    }

    #[test]
    fn spreads_use_sample_deviation_and_quantiles() {
        let s = Spread::of(&[1.0, 2.0, 3.0, 4.0]).unwrap();
        assert_eq!((s.mean, s.min, s.max), (2.5, 1.0, 4.0));
        assert!((s.std - 1.290_994_4).abs() < 1e-6, "{s:?}");
        assert_eq!(s.median, 2.5);
        assert!(Spread::of(&[]).is_none());
        assert_eq!(Spread::of(&[3.0]).unwrap().std, 0.0);
        assert!(GroupKey::parse("").is_err() && GroupKey::parse("task..x").is_err());
    }

    #[test]
    fn pass_at_k_matches_known_values() {
        assert_eq!(pass_at_k(10, 0, 1), 0.0);
        assert_eq!(pass_at_k(10, 10, 5), 1.0);
        assert!((pass_at_k(10, 3, 1) - 0.3).abs() < 1e-12);
        // 1 - C(7,2)/C(10,2) = 1 - 21/45
        assert!((pass_at_k(10, 3, 2) - (1.0 - 21.0 / 45.0)).abs() < 1e-12);
        assert_eq!(pass_at_k(4, 1, 4), 1.0);
    }

    #[test]
    fn pass_hat_k_matches_known_values() {
        // C(3,2)/C(10,2) = 3/45
        assert!((pass_hat_k(10, 3, 2) - 3.0 / 45.0).abs() < 1e-12);
        assert_eq!(pass_hat_k(5, 5, 5), 1.0);
        assert_eq!(pass_hat_k(5, 2, 3), 0.0);
    }

    #[test]
    fn wilson_interval_contains_the_estimate() {
        let (lo, hi) = wilson_interval(5, 10);
        assert!(lo < 0.5 && hi > 0.5);
        assert!(
            (lo - 0.2366).abs() < 1e-3 && (hi - 0.7634).abs() < 1e-3,
            "{lo} {hi}"
        );
        assert_eq!(wilson_interval(0, 0), (0.0, 0.0));
    }

    #[test]
    fn mean_interval_uses_t_and_stays_inside_the_values_range() {
        // s = 0.5164, se = 0.1633, t(14) = 2.1448
        let v: Vec<f64> = (0..15).map(|i| f64::from(u8::from(i % 3 == 0))).collect();
        let (m, (lo, hi)) = mean_interval(&v);
        let half =
            2.144_786_7 * (v.iter().map(|x| (x - m).powi(2)).sum::<f64>() / 14.0 / 15.0).sqrt();
        assert!(
            (lo - (m - half)).abs() < 1e-6 && (hi - (m + half)).abs() < 1e-6,
            "{lo} {hi}"
        );
        // Two values 0 and 1: t(1) = 12.706 would reach -5.85..6.85; the interval is cut to [0, 1].
        assert_eq!(mean_interval(&[0.0, 1.0]), (0.5, (0.0, 1.0)));
        assert!((t_critical(1) - 12.706_204).abs() < 1e-5);
        assert!((t_critical(1000) - 1.962_339).abs() < 1e-5);
    }

    proptest! {
        #[test]
        fn pass_at_k_agrees_with_binomials(n in 1u64..40, c_frac in 0.0f64..=1.0, k_frac in 0.0f64..=1.0) {
            let c = (c_frac * n as f64).floor() as u64;
            let k = 1 + (k_frac * (n - 1) as f64).floor() as u64;
            let direct = 1.0 - binom(n - c, k) / binom(n, k);
            prop_assert!((pass_at_k(n, c, k) - direct).abs() < 1e-9);
            prop_assert!((pass_hat_k(n, c, k) - binom(c, k) / binom(n, k)).abs() < 1e-9);
            // More samples can only help pass@k and only hurt pass^k.
            if k < n {
                prop_assert!(pass_at_k(n, c, k + 1) >= pass_at_k(n, c, k) - 1e-12);
                prop_assert!(pass_hat_k(n, c, k + 1) <= pass_hat_k(n, c, k) + 1e-12);
            }
        }
    }
}

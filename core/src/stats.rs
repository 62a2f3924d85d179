//! Metrics over a run: success rate and mean reward with 95% confidence intervals, pass@k and
//! pass^k, by environment × scaffold × model. Interrupted and infrastructure-error rollouts are
//! counted apart and left out of every rate.

use std::collections::BTreeMap;

use serde::Serialize;

use crate::trajectory::TrajectoryRecord;

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

/// Metrics of one (environment, scaffold, model) cell.
#[derive(Debug, Clone, Serialize)]
pub struct GroupStats {
    pub environment: String,
    pub scaffold: String,
    pub model: String,
    /// Finished rollouts (infrastructure errors and interruptions excluded).
    pub rollouts: u64,
    pub tasks: u64,
    pub successes: u64,
    pub success_rate: f64,
    pub success_rate_ci95: (f64, f64),
    pub mean_reward: f64,
    pub mean_reward_ci95: (f64, f64),
    /// `pass@k` for k = 1..=max samples per task, averaged over tasks with at least k samples.
    pub pass_at_k: BTreeMap<u64, f64>,
    pub pass_hat_k: BTreeMap<u64, f64>,
    pub exit_statuses: BTreeMap<String, u64>,
    pub infra_errors: u64,
    pub interrupted: u64,
    pub mean_completion_tokens: f64,
    pub mean_turns: f64,
    /// Sub-rewards: the mean of every evaluation component (`evaluator.component`) over the
    /// finished rollouts that report it.
    #[serde(default)]
    pub components: BTreeMap<String, f64>,
}

/// The mean of each `evaluator.component` over the records that report it.
pub fn component_means(records: &[&TrajectoryRecord]) -> BTreeMap<String, f64> {
    let mut sums: BTreeMap<String, (f64, u64)> = BTreeMap::new();
    for r in records {
        for e in &r.evaluations {
            for (name, v) in &e.components {
                let s = sums.entry(format!("{}.{name}", e.evaluator)).or_default();
                s.0 += v;
                s.1 += 1;
            }
        }
    }
    sums.into_iter()
        .map(|(k, (sum, n))| (k, sum / n as f64))
        .collect()
}

/// Metrics of a whole run.
#[derive(Debug, Clone, Serialize)]
pub struct RunStats {
    pub records: u64,
    pub finished: u64,
    pub infra_errors: u64,
    pub interrupted: u64,
    /// The errors behind infrastructure failures, by kind, with one example message.
    pub infra_error_kinds: BTreeMap<String, (u64, String)>,
    pub groups: Vec<GroupStats>,
}

/// Computes the run's metrics.
pub fn compute(records: &[TrajectoryRecord]) -> RunStats {
    type Cell<'a> = Vec<&'a TrajectoryRecord>;
    let mut cells: BTreeMap<(&str, &str, &str), Cell> = BTreeMap::new();
    let mut infra_error_kinds: BTreeMap<String, (u64, String)> = BTreeMap::new();
    for r in records {
        cells
            .entry((&r.key.environment, &r.key.scaffold, &r.key.model))
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
    for ((env, scaffold, model), cell) in cells {
        let finished: Vec<&TrajectoryRecord> =
            cell.iter().copied().filter(|r| r.is_final()).collect();
        let infra_errors = cell
            .iter()
            .filter(|r| r.outcome.exit_status == crate::trajectory::ExitStatus::InfraError)
            .count() as u64;
        let interrupted = cell
            .iter()
            .filter(|r| r.outcome.exit_status == crate::trajectory::ExitStatus::Interrupted)
            .count() as u64;
        let n = finished.len() as u64;
        let successes = finished.iter().filter(|r| r.success).count() as u64;
        let rewards: Vec<f64> = finished.iter().map(|r| r.reward).collect();
        let (mean_reward, mean_reward_ci95) = mean_interval(&rewards);
        let mut per_task: BTreeMap<&str, (u64, u64)> = BTreeMap::new();
        let mut exit_statuses = BTreeMap::new();
        for r in &finished {
            let e = per_task.entry(&r.key.task).or_insert((0, 0));
            e.0 += 1;
            e.1 += u64::from(r.success);
            *exit_statuses
                .entry(r.outcome.exit_status.to_string())
                .or_insert(0) += 1;
        }
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
            pass_at.insert(
                k,
                eligible
                    .iter()
                    .map(|&(n, c)| pass_at_k(n, c, k))
                    .sum::<f64>()
                    / m,
            );
            pass_hat.insert(
                k,
                eligible
                    .iter()
                    .map(|&(n, c)| pass_hat_k(n, c, k))
                    .sum::<f64>()
                    / m,
            );
        }
        let nf = n.max(1) as f64;
        groups.push(GroupStats {
            environment: env.to_string(),
            scaffold: scaffold.to_string(),
            model: model.to_string(),
            rollouts: n,
            tasks: per_task.len() as u64,
            successes,
            success_rate: if n == 0 {
                0.0
            } else {
                successes as f64 / n as f64
            },
            success_rate_ci95: wilson_interval(successes, n),
            mean_reward,
            mean_reward_ci95,
            pass_at_k: pass_at,
            pass_hat_k: pass_hat,
            exit_statuses,
            infra_errors,
            interrupted,
            mean_completion_tokens: finished
                .iter()
                .map(|r| r.usage.completion_tokens as f64)
                .sum::<f64>()
                / nf,
            mean_turns: finished
                .iter()
                .map(|r| r.assistant_turns() as f64)
                .sum::<f64>()
                / nf,
            components: component_means(&finished),
        });
    }
    let infra_errors = groups.iter().map(|g| g.infra_errors).sum();
    let interrupted = groups.iter().map(|g| g.interrupted).sum();
    RunStats {
        records: records.len() as u64,
        finished: groups.iter().map(|g| g.rollouts).sum(),
        infra_errors,
        interrupted,
        infra_error_kinds,
        groups,
    }
}

impl RunStats {
    /// A plain-text table for people.
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
            out.push_str(&format!(
                "\n{} × {} × {}\n",
                g.environment, g.scaffold, g.model
            ));
            out.push_str(&format!(
                "  rollouts        {} over {} tasks\n",
                g.rollouts, g.tasks
            ));
            out.push_str(&format!(
                "  success rate    {:.1}%  (95% CI {:.1}–{:.1}%)  {}/{}\n",
                100.0 * g.success_rate,
                100.0 * g.success_rate_ci95.0,
                100.0 * g.success_rate_ci95.1,
                g.successes,
                g.rollouts
            ));
            out.push_str(&format!(
                "  mean reward     {:.3}  (95% CI {:.3}–{:.3})\n",
                g.mean_reward, g.mean_reward_ci95.0, g.mean_reward_ci95.1
            ));
            let fmt_k = |m: &BTreeMap<u64, f64>| {
                m.iter()
                    .map(|(k, v)| format!("@{k} {:.3}", v))
                    .collect::<Vec<_>>()
                    .join("  ")
            };
            out.push_str(&format!("  pass@k          {}\n", fmt_k(&g.pass_at_k)));
            out.push_str(&format!(
                "  pass^k          {}\n",
                fmt_k(&g.pass_hat_k).replace('@', "^")
            ));
            let statuses = g
                .exit_statuses
                .iter()
                .map(|(s, n)| format!("{s} {n}"))
                .collect::<Vec<_>>()
                .join(", ");
            out.push_str(&format!("  exit statuses   {statuses}\n"));
            out.push_str(&format!(
                "  mean per rollout  {:.1} completion tokens, {:.2} assistant turns\n",
                g.mean_completion_tokens, g.mean_turns
            ));
            if !g.components.is_empty() {
                let parts = g
                    .components
                    .iter()
                    .map(|(k, v)| format!("{k} {v:.3}"))
                    .collect::<Vec<_>>()
                    .join(", ");
                out.push_str(&format!("  sub-rewards     {parts}\n"));
            }
            if g.infra_errors + g.interrupted > 0 {
                out.push_str(&format!(
                    "  excluded        {} infra errors, {} interrupted\n",
                    g.infra_errors, g.interrupted
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
        use proptest::strategy::ValueTree;
        let base = crate::strategies::record()
            .new_tree(&mut proptest::test_runner::TestRunner::deterministic())
            .unwrap()
            .current();
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
        assert!((g.components["tools.db"] - 2.0 / 3.0).abs() < 1e-12);
        assert_eq!(g.components["tools.communicate"], 0.75);
        assert!(stats
            .render()
            .contains("sub-rewards     tools.communicate 0.750, tools.db 0.667"));
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

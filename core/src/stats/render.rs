//! The metrics rendered: the plain-text report, the Markdown table, and the rows of the table
//! formats (CSV); JSON is `RunStats`' own serialisation.

use std::collections::BTreeMap;

use super::compute::{GroupStats, Mean, Rate, RunStats, Spread};
use super::estimate::unsigned_zero;

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

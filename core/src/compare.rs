//! `trawl diff`: two sets of rollouts (two runs, or two groups of one run) compared task by task
//! on the tasks they share.
//!
//! Rollouts are paired by a unit key (the task, plus the environment, scaffold and model where
//! the two sides share them). Per unit, each side has a success rate and a mean reward over its
//! finished rollouts (several when `samples > 1`). The change is the mean over shared units of
//! `B − A`, with a 95% paired bootstrap interval (units resampled with replacement). The p-value
//! is the exact two-sided sign test over units that differ, which is McNemar's exact test when
//! each side has one rollout per task. Infrastructure errors and interruptions are left out, as
//! everywhere in trawl: they say nothing about the model.

use std::collections::BTreeMap;

use rand::{Rng, SeedableRng};
use serde::Serialize;

use crate::stats::{unsigned_zero, GroupKey};
use crate::trajectory::TrajectoryRecord;

/// Resamples of the paired bootstrap.
pub const BOOTSTRAP_RESAMPLES: usize = 10_000;

/// A filter on grouping keys: `scaffold=chat,model=big`.
#[derive(Debug, Clone, PartialEq)]
pub struct Selector(pub Vec<(GroupKey, String)>);

impl Selector {
    pub fn parse(s: &str) -> Result<Self, String> {
        let mut out = Vec::new();
        for part in s.split(',').filter(|p| !p.trim().is_empty()) {
            let Some((k, v)) = part.split_once('=') else {
                return Err(format!(
                    "`{part}` is not KEY=VALUE (for example scaffold=chat or level=3)"
                ));
            };
            out.push((GroupKey::parse(k)?, v.trim().to_string()));
        }
        Ok(Selector(out))
    }

    pub fn matches(&self, r: &TrajectoryRecord) -> bool {
        self.0.iter().all(|(k, v)| &k.value(r) == v)
    }

    /// The keys it filters on.
    pub fn keys(&self) -> impl Iterator<Item = &GroupKey> {
        self.0.iter().map(|(k, _)| k)
    }

    pub fn describe(&self) -> String {
        self.0
            .iter()
            .map(|(k, v)| format!("{}={v}", k.name()))
            .collect::<Vec<_>>()
            .join(",")
    }
}

/// One side's results on one unit.
#[derive(Debug, Clone, Default, Serialize)]
pub struct UnitSide {
    pub rollouts: u64,
    pub successes: u64,
    pub success_rate: f64,
    pub mean_reward: f64,
}

/// A unit whose result changed between the sides.
#[derive(Debug, Clone, Serialize)]
pub struct Flip {
    pub unit: String,
    pub a: UnitSide,
    pub b: UnitSide,
}

/// A change with its paired bootstrap interval.
#[derive(Debug, Clone, Serialize)]
pub struct Change {
    pub a: f64,
    pub b: f64,
    /// `b − a`, averaged over shared units.
    pub delta: f64,
    pub ci95: (f64, f64),
}

/// The comparison.
#[derive(Debug, Clone, Serialize)]
pub struct DiffReport {
    pub a: String,
    pub b: String,
    /// What a unit is: the task plus these keys.
    pub paired_by: Vec<String>,
    pub shared_units: usize,
    pub success_rate: Option<Change>,
    pub mean_reward: Option<Change>,
    /// Units where B's success rate is higher / lower than A's.
    pub improved: Vec<Flip>,
    pub regressed: Vec<Flip>,
    /// Exact two-sided sign test over the units that differ (McNemar's exact test with one
    /// rollout per task per side).
    pub p_value: f64,
    pub test: String,
    pub only_a: Vec<String>,
    pub only_b: Vec<String>,
    pub bootstrap_resamples: usize,
}

/// The keys units are paired by, besides the task: environment, scaffold and model, less those
/// a selector names (they are what differs) and those on which the sides share no value (two
/// runs of differently named models compare the models).
pub fn pairing_keys(
    a: &[&TrajectoryRecord],
    b: &[&TrajectoryRecord],
    selectors: &[&Selector],
) -> Vec<GroupKey> {
    GroupKey::DEFAULT
        .iter()
        .filter(|k| !selectors.iter().any(|s| s.keys().any(|sk| sk == *k)))
        .filter(|k| {
            let values: std::collections::HashSet<String> = a.iter().map(|r| k.value(r)).collect();
            b.iter().any(|r| values.contains(&k.value(r)))
        })
        .cloned()
        .collect()
}

fn unit_of(r: &TrajectoryRecord, by: &[GroupKey]) -> String {
    let mut parts: Vec<String> = by.iter().map(|k| k.value(r)).collect();
    parts.push(r.key.task.clone());
    parts.join("/")
}

fn units(records: &[&TrajectoryRecord], by: &[GroupKey]) -> BTreeMap<String, UnitSide> {
    let mut out: BTreeMap<String, UnitSide> = BTreeMap::new();
    // An unscored rollout (imported without a report) is no evidence either way.
    for r in records.iter().filter(|r| r.is_final() && r.is_scored()) {
        let side = out.entry(unit_of(r, by)).or_default();
        side.rollouts += 1;
        side.successes += u64::from(r.success);
        // The sum until every rollout is in; the mean below.
        side.mean_reward += r.reward;
    }
    for side in out.values_mut() {
        side.success_rate = side.successes as f64 / side.rollouts as f64;
        side.mean_reward = unsigned_zero(side.mean_reward / side.rollouts as f64);
    }
    out
}

/// Exact two-sided sign test: `k` of `n` differing pairs went one way.
pub fn sign_test(k: u64, n: u64) -> f64 {
    use statrs::distribution::{Binomial, DiscreteCDF};
    if n == 0 {
        return 1.0;
    }
    let low = k.min(n - k);
    match Binomial::new(0.5, n) {
        Ok(b) => (2.0 * b.cdf(low)).min(1.0),
        Err(_) => f64::NAN,
    }
}

fn change(pairs: &[(f64, f64)], seed: u64) -> Option<Change> {
    if pairs.is_empty() {
        return None;
    }
    let n = pairs.len() as f64;
    let a = pairs.iter().map(|p| p.0).sum::<f64>() / n;
    let b = pairs.iter().map(|p| p.1).sum::<f64>() / n;
    let diffs: Vec<f64> = pairs.iter().map(|(a, b)| b - a).collect();
    let mut rng = rand::rngs::StdRng::seed_from_u64(seed);
    let mut means: Vec<f64> = (0..BOOTSTRAP_RESAMPLES)
        .map(|_| {
            (0..diffs.len())
                .map(|_| diffs[rng.random_range(0..diffs.len())])
                .sum::<f64>()
                / n
        })
        .collect();
    means.sort_by(f64::total_cmp);
    let at = |q: f64| means[((q * (means.len() - 1) as f64).round() as usize).min(means.len() - 1)];
    Some(Change {
        a: unsigned_zero(a),
        b: unsigned_zero(b),
        delta: unsigned_zero(b - a),
        ci95: (unsigned_zero(at(0.025)), unsigned_zero(at(0.975))),
    })
}

/// Compares `b` against `a`, units paired by the task plus `by`.
pub fn diff(
    (a_label, a): (&str, &[&TrajectoryRecord]),
    (b_label, b): (&str, &[&TrajectoryRecord]),
    by: &[GroupKey],
) -> DiffReport {
    let ua = units(a, by);
    let ub = units(b, by);
    let mut success_pairs = Vec::new();
    let mut reward_pairs = Vec::new();
    let (mut improved, mut regressed) = (Vec::new(), Vec::new());
    for (unit, sa) in &ua {
        let Some(sb) = ub.get(unit) else {
            continue;
        };
        success_pairs.push((sa.success_rate, sb.success_rate));
        reward_pairs.push((sa.mean_reward, sb.mean_reward));
        let flip = || Flip {
            unit: unit.clone(),
            a: sa.clone(),
            b: sb.clone(),
        };
        if sb.success_rate > sa.success_rate {
            improved.push(flip());
        } else if sb.success_rate < sa.success_rate {
            regressed.push(flip());
        }
    }
    let differing = (improved.len() + regressed.len()) as u64;
    DiffReport {
        a: a_label.to_string(),
        b: b_label.to_string(),
        paired_by: by
            .iter()
            .map(GroupKey::name)
            .chain(["task".to_string()])
            .collect(),
        shared_units: success_pairs.len(),
        success_rate: change(&success_pairs, 1),
        mean_reward: change(&reward_pairs, 2),
        p_value: sign_test(improved.len() as u64, differing),
        test: "exact two-sided sign test over units whose success rate differs (McNemar's exact test with one rollout per unit per side)".into(),
        improved,
        regressed,
        only_a: ua.keys().filter(|u| !ub.contains_key(*u)).cloned().collect(),
        only_b: ub.keys().filter(|u| !ua.contains_key(*u)).cloned().collect(),
        bootstrap_resamples: BOOTSTRAP_RESAMPLES,
    }
}

fn signed(x: f64, percent: bool) -> String {
    let x = unsigned_zero(x);
    if percent {
        format!("{:+.1} pt", 100.0 * x)
    } else {
        format!("{x:+.3}")
    }
}

fn list_units(out: &mut String, title: &str, units: &[String], limit: usize, markdown: bool) {
    if units.is_empty() {
        return;
    }
    out.push_str(&format!("{title} ({}):", units.len()));
    if markdown {
        out.push('\n');
    }
    for u in units.iter().take(limit) {
        if markdown {
            out.push_str(&format!("- `{u}`\n"));
        } else {
            out.push_str(&format!(" {u}"));
        }
    }
    if units.len() > limit {
        out.push_str(&format!(
            "{}… and {} more (all in --format json)",
            if markdown { "- " } else { " " },
            units.len() - limit
        ));
    }
    out.push('\n');
}

impl DiffReport {
    /// Plain text (`markdown = false`) or Markdown.
    pub fn render(&self, markdown: bool) -> String {
        const SHOWN: usize = 20;
        let mut out = String::new();
        let line = |out: &mut String, name: &str, c: &Option<Change>, percent: bool| {
            let v = |x: f64| {
                if percent {
                    format!("{:.1}%", unsigned_zero(100.0 * x))
                } else {
                    format!("{:.3}", unsigned_zero(x))
                }
            };
            match c {
                Some(c) => {
                    let (a, b) = (v(c.a), v(c.b));
                    let (delta, lo, hi) = (
                        signed(c.delta, percent),
                        signed(c.ci95.0, percent),
                        signed(c.ci95.1, percent),
                    );
                    out.push_str(&if markdown {
                        format!("| {name} | {a} | {b} | {delta} | {lo} to {hi} |\n")
                    } else {
                        format!(
                            "  {name:<13} A {a:>7}   B {b:>7}   change {delta} (95% CI {lo} to {hi})\n"
                        )
                    });
                }
                None => out.push_str(&format!("  {name}: no shared units\n")),
            }
        };
        if markdown {
            out.push_str(&format!(
                "A: `{}`  \nB: `{}`  \npaired by {} on {} shared units\n\n",
                self.a,
                self.b,
                self.paired_by.join(" × "),
                self.shared_units
            ));
            out.push_str("| | A | B | change | 95% CI (paired bootstrap) |\n| --- | ---: | ---: | ---: | ---: |\n");
        } else {
            out.push_str(&format!(
                "A: {}\nB: {}\npaired by {} on {} shared units\n",
                self.a,
                self.b,
                self.paired_by.join(" × "),
                self.shared_units
            ));
        }
        line(&mut out, "success rate", &self.success_rate, true);
        line(&mut out, "mean reward", &self.mean_reward, false);
        out.push_str(&format!(
            "{}{} improved, {} regressed; sign test p = {:.4}{}\n",
            if markdown { "\n" } else { "  " },
            self.improved.len(),
            self.regressed.len(),
            self.p_value,
            if self.improved.len() + self.regressed.len() == 0 {
                " (no unit changed)"
            } else {
                ""
            }
        ));
        let names = |flips: &[Flip]| -> Vec<String> {
            flips
                .iter()
                .map(|f| {
                    format!(
                        "{} ({}/{}→{}/{})",
                        f.unit, f.a.successes, f.a.rollouts, f.b.successes, f.b.rollouts
                    )
                })
                .collect()
        };
        list_units(
            &mut out,
            "improved in B",
            &names(&self.improved),
            SHOWN,
            markdown,
        );
        list_units(
            &mut out,
            "regressed in B",
            &names(&self.regressed),
            SHOWN,
            markdown,
        );
        list_units(&mut out, "only in A", &self.only_a, SHOWN, markdown);
        list_units(&mut out, "only in B", &self.only_b, SHOWN, markdown);
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn unscored_rollouts_are_no_evidence() {
        let mut r = crate::strategies::example_record();
        r.outcome.exit_status = crate::trajectory::ExitStatus::Submitted;
        r.evaluations = vec![crate::evaluator::Evaluation {
            evaluator: "e".into(),
            reward: 1.0,
            success: true,
            components: Default::default(),
            details: serde_json::Value::Null,
        }];
        r.success = true;
        let mut unscored = r.clone();
        unscored.key.sample += 1;
        unscored.evaluations.clear();
        unscored.success = false;
        let u = units(&[&r, &unscored], &[]);
        let side = u.values().next().unwrap();
        assert_eq!((side.rollouts, side.successes), (1, 1));
    }

    #[test]
    fn sign_test_matches_the_binomial() {
        // 8 of 8 one way: 2 * 0.5^8.
        assert!((sign_test(8, 8) - 2.0 / 256.0).abs() < 1e-12);
        assert!((sign_test(0, 8) - 2.0 / 256.0).abs() < 1e-12);
        // 1 of 5: 2 * (1 + 5) / 32.
        assert!((sign_test(1, 5) - 12.0 / 32.0).abs() < 1e-12);
        assert_eq!(sign_test(3, 6), 1.0);
        assert_eq!(sign_test(0, 0), 1.0);
    }

    #[test]
    fn bootstrap_interval_holds_the_change_and_is_seeded() {
        let pairs: Vec<(f64, f64)> = (0..40)
            .map(|i| (0.0, f64::from(u8::from(i % 4 != 0))))
            .collect();
        let c = change(&pairs, 7).unwrap();
        assert_eq!(c.delta, 0.75);
        assert!(
            c.ci95.0 < 0.75 && 0.75 < c.ci95.1 && c.ci95.0 > 0.5,
            "{c:?}"
        );
        let again = change(&pairs, 7).unwrap();
        assert_eq!(c.ci95, again.ci95);
        // No change at all: a point interval at zero, printed without a sign on zero.
        let same = change(&[(1.0, 1.0), (0.0, 0.0)], 1).unwrap();
        assert_eq!(same.ci95, (0.0, 0.0));
        assert_eq!(signed(-0.0, true), "+0.0 pt");
    }
}

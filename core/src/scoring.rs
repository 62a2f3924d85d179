//! Which evaluations make a record's `reward` and `success`: the config's `[scoring]` table.
//!
//! Every evaluator that applies to a rollout scores it, and each verdict is kept in the record's
//! `evaluations`. The record's own `reward` and `success` (what rates, selection and export use)
//! come from one of them, or from a combination, as the config says:
//!
//! ```toml
//! [scoring]
//! primary = ["rubric", "environment"]   # the first that scores the rollout decides
//! # or
//! combine = "weighted_sum"               # product | weighted_sum | min | all
//! evaluators = ["environment", "rubric"]
//! weights = { environment = 0.8, rubric = 0.2 }
//! ```
//!
//! `environment` names the environment's own evaluator: the ground truth its tasks carry (the
//! expected answer, the tests, the final database). That is why it is the default primary: a
//! label means "the task was solved" unless the config asks for something else.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

use crate::evaluation::Evaluation;

/// The name that stands for an environment's own evaluator(s) in `[scoring]`.
pub const ENVIRONMENT: &str = "environment";

/// How several evaluations become one reward and one success.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Combine {
    /// Reward: the product of the rewards. Success: all succeed.
    Product,
    /// Reward: the weighted sum of the rewards. Success: the reward reaches
    /// `success_threshold`, or, without one, all succeed.
    WeightedSum,
    /// Reward: the smallest reward. Success: all succeed.
    Min,
    /// Success: all succeed. Reward: 1 when they do, else 0.
    All,
}

/// The resolved `[scoring]` table.
#[derive(Debug, Clone, PartialEq, Serialize)]
#[serde(tag = "method", rename_all = "snake_case")]
pub enum Scoring {
    /// The first evaluator of the list that scores the rollout decides.
    Primary { evaluators: Vec<String> },
    /// The listed evaluators that score the rollout, combined.
    Combine {
        combine: Combine,
        evaluators: Vec<String>,
        #[serde(skip_serializing_if = "BTreeMap::is_empty")]
        weights: BTreeMap<String, f64>,
        #[serde(skip_serializing_if = "Option::is_none")]
        success_threshold: Option<f64>,
    },
}

/// The `[scoring]` table as written.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct ScoringTable {
    #[serde(default)]
    pub primary: Option<OneOrMany>,
    #[serde(default)]
    pub combine: Option<Combine>,
    #[serde(default)]
    pub evaluators: Option<Vec<String>>,
    #[serde(default)]
    pub weights: BTreeMap<String, f64>,
    #[serde(default)]
    pub success_threshold: Option<f64>,
}

#[derive(Debug, Deserialize)]
#[serde(untagged)]
pub(crate) enum OneOrMany {
    One(String),
    Many(Vec<String>),
}

impl OneOrMany {
    pub fn into_vec(self) -> Vec<String> {
        match self {
            OneOrMany::One(s) => vec![s],
            OneOrMany::Many(v) => v,
        }
    }
}

/// One evaluator's verdict on a rollout, by the name `[scoring]` knows it by.
pub struct Verdict<'a> {
    /// `environment` for the environment's own evaluators, else the config's evaluator name.
    pub source: &'a str,
    pub evaluation: &'a Evaluation,
}

/// What [`Scoring::decide`] found.
#[derive(Debug, Clone, PartialEq)]
pub struct Decision {
    pub reward: f64,
    pub success: bool,
}

impl Scoring {
    /// The default: the environment's own evaluator, then the config's evaluators in order.
    pub fn default_for(config_evaluators: &[String]) -> Self {
        Scoring::Primary {
            evaluators: all_names(config_evaluators),
        }
    }

    /// The evaluator names it reads.
    pub fn evaluators(&self) -> &[String] {
        match self {
            Scoring::Primary { evaluators } | Scoring::Combine { evaluators, .. } => evaluators,
        }
    }

    /// One line for people: what decides a record's label.
    pub fn describe(&self) -> String {
        match self {
            Scoring::Primary { evaluators } => {
                format!(
                    "primary: first of [{}] that scores the rollout",
                    evaluators.join(", ")
                )
            }
            Scoring::Combine {
                combine,
                evaluators,
                ..
            } => format!(
                "{} of [{}]",
                serde_json::to_value(combine)
                    .ok()
                    .and_then(|v| v.as_str().map(str::to_string))
                    .unwrap_or_default(),
                evaluators.join(", ")
            ),
        }
    }

    /// The reward and success of a rollout from the verdicts of the evaluators that scored it,
    /// or `None` when none of the evaluators scoring reads did.
    pub fn decide(&self, verdicts: &[Verdict<'_>]) -> Option<Decision> {
        fn of<'v, 'a>(
            verdicts: &'v [Verdict<'a>],
            name: &'v str,
        ) -> impl Iterator<Item = &'v Verdict<'a>> {
            verdicts.iter().filter(move |v| v.source == name)
        }
        match self {
            Scoring::Primary { evaluators } => evaluators
                .iter()
                .find_map(|name| of(verdicts, name).next())
                .map(|v| Decision {
                    reward: v.evaluation.reward,
                    success: v.evaluation.success,
                }),
            Scoring::Combine {
                combine,
                evaluators,
                weights,
                success_threshold,
            } => {
                let used: Vec<&Verdict<'_>> = evaluators
                    .iter()
                    .flat_map(|name| of(verdicts, name))
                    .collect();
                if used.is_empty() {
                    return None;
                }
                let all = used.iter().all(|v| v.evaluation.success);
                let rewards = used.iter().map(|v| v.evaluation.reward);
                Some(match combine {
                    Combine::Product => Decision {
                        reward: rewards.product(),
                        success: all,
                    },
                    Combine::Min => Decision {
                        reward: rewards.fold(f64::INFINITY, f64::min),
                        success: all,
                    },
                    Combine::All => Decision {
                        reward: if all { 1.0 } else { 0.0 },
                        success: all,
                    },
                    Combine::WeightedSum => {
                        let reward: f64 = used
                            .iter()
                            .map(|v| {
                                weights.get(v.source).copied().unwrap_or(0.0) * v.evaluation.reward
                            })
                            .sum();
                        Decision {
                            reward,
                            success: success_threshold.map_or(all, |t| reward >= t),
                        }
                    }
                })
            }
        }
    }
}

/// Every name `[scoring]` may use: `environment`, then the config's evaluators in order.
fn all_names(config_evaluators: &[String]) -> Vec<String> {
    std::iter::once(ENVIRONMENT.to_string())
        .chain(config_evaluators.iter().cloned())
        .collect()
}

/// Checks a `[scoring]` table against the config's evaluator names. Errors are (field, message).
pub(crate) fn resolve(
    table: ScoringTable,
    config_evaluators: &[String],
) -> Result<Scoring, (Vec<String>, String)> {
    let at = |f: &[&str]| f.iter().map(|s| s.to_string()).collect::<Vec<_>>();
    let known = |name: &str| name == ENVIRONMENT || config_evaluators.iter().any(|e| e == name);
    let valid = || all_names(config_evaluators).join(", ");
    let check_names = |names: &[String], field: &str| -> Result<(), (Vec<String>, String)> {
        if names.is_empty() {
            return Err((
                at(&["scoring", field]),
                "must name at least one evaluator".into(),
            ));
        }
        for (i, n) in names.iter().enumerate() {
            if !known(n) {
                return Err((
                    at(&["scoring", field, &i.to_string()]),
                    format!(
                        "no evaluator is named `{n}`; the names are: {} (`environment` is each environment's own evaluator)",
                        valid()
                    ),
                ));
            }
        }
        Ok(())
    };
    match (table.primary, table.combine) {
        (Some(_), Some(_)) => Err((
            at(&["scoring", "combine"]),
            "give either `primary` (one evaluator decides) or `combine` (several together), not both"
                .into(),
        )),
        (primary, None) => {
            for (field, given) in [
                ("evaluators", table.evaluators.is_some()),
                ("weights", !table.weights.is_empty()),
                ("success_threshold", table.success_threshold.is_some()),
            ] {
                if given {
                    return Err((
                        at(&["scoring", field]),
                        format!("`{field}` goes with `combine`; with `primary` the first evaluator that scores a rollout decides"),
                    ));
                }
            }
            let evaluators = match primary {
                Some(p) => p.into_vec(),
                None => return Ok(Scoring::default_for(config_evaluators)),
            };
            check_names(&evaluators, "primary")?;
            Ok(Scoring::Primary { evaluators })
        }
        (None, Some(combine)) => {
            let evaluators = table
                .evaluators
                .unwrap_or_else(|| all_names(config_evaluators));
            check_names(&evaluators, "evaluators")?;
            if combine == Combine::WeightedSum {
                for name in &evaluators {
                    if !table.weights.contains_key(name) {
                        return Err((
                            at(&["scoring", "weights"]),
                            format!("`weighted_sum` needs a weight for every evaluator it combines; `{name}` has none"),
                        ));
                    }
                }
            } else if !table.weights.is_empty() {
                return Err((
                    at(&["scoring", "weights"]),
                    "`weights` go with `combine = \"weighted_sum\"`".into(),
                ));
            }
            for (name, w) in &table.weights {
                if !evaluators.contains(name) {
                    return Err((
                        at(&["scoring", "weights", name]),
                        format!("`{name}` is not among the evaluators combined: {}", evaluators.join(", ")),
                    ));
                }
                if !w.is_finite() || *w < 0.0 {
                    return Err((
                        at(&["scoring", "weights", name]),
                        format!("a weight must be a number of at least 0; got {w}"),
                    ));
                }
            }
            if let Some(t) = table.success_threshold {
                if combine != Combine::WeightedSum {
                    return Err((
                        at(&["scoring", "success_threshold"]),
                        "`success_threshold` goes with `combine = \"weighted_sum\"`".into(),
                    ));
                }
                if !t.is_finite() {
                    return Err((
                        at(&["scoring", "success_threshold"]),
                        format!("must be a number; got {t}"),
                    ));
                }
            }
            Ok(Scoring::Combine {
                combine,
                evaluators,
                weights: table.weights,
                success_threshold: table.success_threshold,
            })
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn eval(name: &str, reward: f64, success: bool) -> Evaluation {
        Evaluation {
            evaluator: name.into(),
            reward,
            success,
            components: BTreeMap::new(),
            details: serde_json::Value::Null,
        }
    }

    #[test]
    fn each_combination_follows_its_rule() {
        let env = eval("math_answer", 1.0, true);
        let rubric = eval("rubric", 0.5, false);
        let verdicts = [
            Verdict {
                source: ENVIRONMENT,
                evaluation: &env,
            },
            Verdict {
                source: "rubric",
                evaluation: &rubric,
            },
        ];
        let both = vec![ENVIRONMENT.to_string(), "rubric".to_string()];
        let combine = |c: Combine, weights: &[(&str, f64)], t: Option<f64>| Scoring::Combine {
            combine: c,
            evaluators: both.clone(),
            weights: weights.iter().map(|(k, v)| (k.to_string(), *v)).collect(),
            success_threshold: t,
        };
        let d = |s: Scoring| s.decide(&verdicts).unwrap();
        assert_eq!(
            d(combine(Combine::Product, &[], None)),
            Decision {
                reward: 0.5,
                success: false
            }
        );
        assert_eq!(d(combine(Combine::Min, &[], None)).reward, 0.5);
        assert_eq!(
            d(combine(Combine::All, &[], None)),
            Decision {
                reward: 0.0,
                success: false
            }
        );
        let ws = d(combine(
            Combine::WeightedSum,
            &[("environment", 0.8), ("rubric", 0.2)],
            Some(0.85),
        ));
        assert!((ws.reward - 0.9).abs() < 1e-12 && ws.success, "{ws:?}");
        // Primary: the first that scored decides; one that did not is passed over.
        let primary = Scoring::Primary {
            evaluators: vec!["absent".into(), "rubric".into(), ENVIRONMENT.into()],
        };
        assert_eq!(d(primary).reward, 0.5);
        let nothing = Scoring::Primary {
            evaluators: vec!["absent".into()],
        };
        assert_eq!(nothing.decide(&verdicts), None);
    }

    #[test]
    fn tables_are_checked_against_the_evaluator_names() {
        let names = vec!["rubric".to_string()];
        let table = |t: &str| -> ScoringTable { toml::from_str(t).unwrap() };
        assert_eq!(
            resolve(table(""), &names).unwrap(),
            Scoring::default_for(&names)
        );
        let err = resolve(table("primary = \"rubrc\""), &names).unwrap_err();
        assert_eq!(err.0, vec!["scoring", "primary", "0"]);
        assert!(err.1.contains("rubric"), "{}", err.1);
        let err = resolve(
            table("combine = \"weighted_sum\"\nweights = { rubric = 1.0 }"),
            &names,
        )
        .unwrap_err();
        assert!(err.1.contains("`environment` has none"), "{}", err.1);
        let err = resolve(table("primary = \"rubric\"\ncombine = \"min\""), &names).unwrap_err();
        assert!(err.1.contains("not both"), "{}", err.1);
        let ok = resolve(
            table("combine = \"product\"\nevaluators = [\"rubric\"]"),
            &names,
        )
        .unwrap();
        assert_eq!(ok.evaluators(), ["rubric".to_string()]);
    }
}

//! Scoring a finished rollout: its evaluators, in the config's scoring rules, every verdict
//! checked before it is recorded.

use std::time::Duration;

use crate::evaluator::EvaluatorError;
use crate::trajectory::{Outcome, TrajectoryRecord};

use super::build::ScoringEvaluator;
use super::record::infra;

/// Runs every evaluator that applies on a finished rollout and sets its reward and success as
/// `[scoring]` says. An evaluator that finds the task outside what it can score (`Unscorable`)
/// is not applicable and records nothing; one that fails or hangs, one whose verdict breaks
/// [`crate::reward`]'s rule (NaN, infinite, beyond ±1e9: see [`crate::evaluator::Evaluation::check`]), a combined
/// reward that breaks it, or a rollout that no evaluator `[scoring]` reads could score, is an
/// infrastructure error: no label is better than a wrong one, and every verdict passes through
/// here (built-in, plugin and judge evaluators alike) before it is recorded.
pub(super) async fn score(
    scoring: &crate::scoring::Scoring,
    evaluators: &[ScoringEvaluator],
    record: &mut TrajectoryRecord,
    grace: Duration,
) {
    let mut sources = Vec::new();
    let mut not_applicable = Vec::new();
    for evaluator in evaluators {
        let name = evaluator
            .recorded_as
            .clone()
            .unwrap_or_else(|| evaluator.live.name().to_string());
        let timed_out = format!("evaluator `{name}` timed out");
        let result = match tokio::time::timeout(grace, evaluator.live.evaluate(record)).await {
            Ok(r) => r.and_then(|eval| eval.check(&name).map(|()| eval)),
            Err(_) => Err(EvaluatorError::Failed {
                evaluator: name.clone(),
                message: timed_out,
            }),
        };
        match result {
            Ok(mut eval) => {
                eval.evaluator = name;
                record.evaluations.push(eval);
                sources.push(evaluator.source.as_str());
            }
            Err(e @ EvaluatorError::Unscorable { .. }) => {
                tracing::debug!(key = %record.key, "{e}");
                not_applicable.push(format!("{name}: {e}"));
            }
            Err(e) => {
                record.outcome = Outcome {
                    artifacts: record.outcome.artifacts.clone(),
                    ..infra("evaluator", e.to_string())
                };
                return;
            }
        }
    }
    let verdicts: Vec<crate::scoring::Verdict<'_>> = sources
        .iter()
        .zip(&record.evaluations)
        .map(|(source, evaluation)| crate::scoring::Verdict { source, evaluation })
        .collect();
    match scoring.decide(&verdicts) {
        Some(d) => match crate::reward::unsound(d.reward) {
            None => {
                record.reward = d.reward;
                record.success = d.success;
            }
            Some(why) => {
                record.outcome = Outcome {
                    artifacts: record.outcome.artifacts.clone(),
                    ..infra(
                        "evaluator",
                        format!(
                            "the reward scoring combines ({}) is {why}",
                            scoring.describe()
                        ),
                    )
                };
            }
        },
        None => {
            let why = if not_applicable.is_empty() {
                String::new()
            } else {
                format!(" ({})", not_applicable.join("; "))
            };
            record.outcome = Outcome {
                artifacts: record.outcome.artifacts.clone(),
                ..infra(
                    "unscored",
                    format!(
                        "no evaluator that [scoring] reads could score this rollout{why}; scoring is {}",
                        scoring.describe()
                    ),
                )
            };
        }
    }
}

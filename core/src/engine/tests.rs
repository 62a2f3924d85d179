use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Duration;

use super::build::ScoringEvaluator;
use super::score::score;
use crate::evaluator::Evaluation;
use crate::evaluator::{Evaluator, EvaluatorError};
use crate::scoring::{Combine, Scoring, ENVIRONMENT};
use crate::store;
use crate::trajectory::{ExitStatus, TrajectoryRecord};
use proptest::prelude::*;
use serde_json::{json, Value};
use std::path::Path;

/// An evaluator that says whatever it is told: any verdict a built-in evaluator, a plugin
/// across the ABI or a judge could give.
struct Says(Evaluation);

#[async_trait::async_trait]
impl Evaluator for Says {
    fn name(&self) -> &str {
        "says"
    }

    async fn evaluate(&self, _: &TrajectoryRecord) -> Result<Evaluation, EvaluatorError> {
        Ok(self.0.clone())
    }
}

/// Any f64: NaN, infinities, subnormals, huge, and ordinary rewards.
fn any_reward() -> impl Strategy<Value = f64> {
    prop_oneof![
        any::<f64>(),
        -10.0f64..10.0,
        proptest::sample::select(vec![
            f64::NAN,
            f64::INFINITY,
            f64::NEG_INFINITY,
            1e308,
            f64::MAX,
            -crate::reward::MAX_REWARD,
            crate::reward::MAX_REWARD,
            crate::reward::MAX_REWARD * (1.0 + f64::EPSILON),
            f64::MIN_POSITIVE / 4.0,
            -0.0,
        ]),
    ]
}

/// Any details, some nested far deeper than a record can hold.
fn any_details() -> impl Strategy<Value = Value> {
    prop_oneof![
        crate::strategies::json_value(),
        (crate::strategies::json_value(), 0usize..200)
            .prop_map(|(v, n)| (0..n).fold(v, |v, _| json!([v]))),
    ]
}

fn evaluation() -> impl Strategy<Value = Evaluation> {
    (
        any_reward(),
        any::<bool>(),
        proptest::collection::btree_map("[a-z_]{1,8}", any_reward(), 0..3),
        any_details(),
    )
        .prop_map(|(reward, success, components, details)| Evaluation {
            evaluator: "says".into(),
            reward,
            success,
            components,
            details,
        })
}

fn weight() -> impl Strategy<Value = f64> {
    prop_oneof![0.0f64..10.0, Just(1e300), Just(f64::MAX)]
}

fn scoring() -> impl Strategy<Value = Scoring> {
    let both = || vec![ENVIRONMENT.to_string(), "judge".to_string()];
    prop_oneof![
        Just(Scoring::default_for(&["judge".to_string()])),
        proptest::sample::select(vec![Combine::Product, Combine::Min, Combine::All]).prop_map(
            move |combine| Scoring::Combine {
                combine,
                evaluators: both(),
                weights: BTreeMap::new(),
                success_threshold: None,
            }
        ),
        // Any weight the config accepts (finite, at least 0).
        (weight(), weight()).prop_map(move |(a, b)| Scoring::Combine {
            combine: Combine::WeightedSum,
            evaluators: both(),
            weights: BTreeMap::from([(ENVIRONMENT.to_string(), a), ("judge".to_string(), b)]),
            success_threshold: Some(0.5),
        }),
    ]
}

proptest! {
    /// Whatever evaluators say, the record `score` leaves reads back with the store's reader
    /// as it is (nothing to repair); a verdict that breaks the reward rule makes it an
    /// infrastructure error that names the evaluator, never a label.
    #[test]
    fn no_evaluator_output_makes_a_record_that_fails_to_load(
        own in evaluation(),
        judge in evaluation(),
        scoring in scoring(),
    ) {
        let evaluators = [(ENVIRONMENT, &own), ("judge", &judge)]
            .map(|(source, e)| ScoringEvaluator {
                source: source.into(),
                recorded_as: Some(source.into()),
                live: Arc::new(Says(e.clone())),
            });
        let mut record = crate::strategies::example_record();
        record.evaluations.clear();
        record.outcome.exit_status = ExitStatus::Submitted;
        record.outcome.error = None;
        record.reward = 0.0;
        record.success = false;
        let rt = tokio::runtime::Builder::new_current_thread()
            .enable_time()
            .build()
            .unwrap();
        rt.block_on(score(&scoring, &evaluators, &mut record, Duration::from_secs(5)));

        let line = serde_json::to_string(&record).unwrap();
        let (back, note) =
            store::parse_record_noting(Path::new("t.jsonl"), 1, &line).unwrap();
        prop_assert_eq!(note, None);
        prop_assert_eq!(&back, &record);
        let first_bad = [(ENVIRONMENT, &own), ("judge", &judge)]
            .into_iter()
            .find_map(|(name, e)| e.check(name).err());
        if let Some(e) = first_bad {
            prop_assert_eq!(record.outcome.exit_status, ExitStatus::InfraError);
            let error = record.outcome.error.clone().unwrap();
            prop_assert_eq!(error.kind.as_str(), "evaluator");
            prop_assert_eq!(error.message, e.to_string());
        } else if record.is_final() {
            prop_assert!(crate::reward::unsound(record.reward).is_none());
        } else {
            // Sound verdicts that scoring combines past the bound (a product or a heavy
            // weight): refused too, as the evaluator's infrastructure error.
            let error = record.outcome.error.clone().unwrap();
            prop_assert!(error.message.starts_with("the reward scoring combines"), "{}", error.message);
        }
    }
}

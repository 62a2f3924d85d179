//! What a reward may be: a finite number within ±[`MAX_REWARD`]. One rule, used where rewards
//! are recorded (the engine refuses anything else as an infrastructure error) and where they are
//! read back (a record on disk that breaks it, such as the `"reward": null` an older trawl wrote
//! for an overflowed sum, is read as an infrastructure error, re-run on resume).
//!
//! Why a bound and not only "finite": a reward of 1e308 is finite, but the mean of two of them is
//! not, nor is their sum, their variance or a product of two. Rewards in practice are 0/1, a
//! fraction, or a score in the thousands; 1e9 leaves room for any of those scaled a millionfold
//! while keeping every statistic trawl computes (sums over billions of rollouts, squares for
//! the spread, a product of two rewards, a weighted sum) finite in an f64.

use serde::{Deserialize, Deserializer};

use crate::trajectory::TrajectoryRecord;

/// The largest reward magnitude trawl records.
pub const MAX_REWARD: f64 = 1e9;

/// How deeply an evaluation's `details` may nest: the record wraps them three levels deeper,
/// and a JSON reader (serde_json's included) refuses nesting past 128.
pub const MAX_DETAILS_DEPTH: usize = 64;

/// Why `value` cannot be recorded as a reward, or `None` when it can.
pub fn unsound(value: f64) -> Option<String> {
    if value.is_nan() {
        Some("not a finite number (NaN, or `null` on disk)".into())
    } else if value.is_infinite() {
        Some(format!("{value}: not a finite number"))
    } else if value.abs() > MAX_REWARD {
        Some(format!(
            "{value:e}: beyond ±{MAX_REWARD:e}, the largest reward trawl records"
        ))
    } else {
        None
    }
}

/// The sum of `values`, or `None` when it (or any value) is unsound: a sum of step rewards that
/// would overflow is an error, never an infinity.
pub fn checked_sum(values: &[f64]) -> Option<f64> {
    let mut total = 0.0f64;
    for v in values {
        total += v;
        if unsound(*v).is_some() || unsound(total).is_some() {
            return None;
        }
    }
    Some(total)
}

/// How deeply `value` nests (a scalar is 0, `[]` is 1).
pub fn depth(value: &serde_json::Value) -> usize {
    match value {
        serde_json::Value::Array(a) => 1 + a.iter().map(depth).max().unwrap_or(0),
        serde_json::Value::Object(m) => 1 + m.values().map(depth).max().unwrap_or(0),
        _ => 0,
    }
}

/// Reads a reward that may be `null` on disk (what JSON writers make of NaN and infinities) as
/// NaN, so that the record still loads and [`unsound_fields`] can say what was wrong with it.
pub(crate) fn null_as_nan<'de, D: Deserializer<'de>>(d: D) -> Result<f64, D::Error> {
    Ok(Option::<f64>::deserialize(d)?.unwrap_or(f64::NAN))
}

/// [`null_as_nan`] for each value of a map of sub-rewards.
pub(crate) fn nulls_as_nan<'de, D: Deserializer<'de>>(
    d: D,
) -> Result<std::collections::BTreeMap<String, f64>, D::Error> {
    let m = std::collections::BTreeMap::<String, Option<f64>>::deserialize(d)?;
    Ok(m.into_iter()
        .map(|(k, v)| (k, v.unwrap_or(f64::NAN)))
        .collect())
}

/// Each reward of `record` that breaks the rule, as `field: why` (the record's `reward`, each
/// evaluation's `reward` and sub-rewards, each step's reward).
pub fn unsound_fields(record: &TrajectoryRecord) -> Vec<String> {
    let mut out = Vec::new();
    let mut check = |field: String, v: f64| {
        if let Some(why) = unsound(v) {
            out.push(format!("`{field}` is {why}"));
        }
    };
    check("reward".into(), record.reward);
    for (i, e) in record.evaluations.iter().enumerate() {
        check(format!("evaluations[{i}].reward"), e.reward);
        for (name, v) in &e.components {
            check(format!("evaluations[{i}].components.{name}"), *v);
        }
    }
    for (i, s) in record.steps.iter().enumerate() {
        if let Some(r) = s.reward {
            check(format!("steps[{i}].reward"), r);
        }
    }
    out
}

/// Turns a record read from disk whose rewards break the rule into an infrastructure error (it
/// was never a sound label: stats and exports leave it out, resume re-runs it): its reward 0,
/// no success, the evaluations and step rewards that broke the rule dropped, and the reason in
/// its error. Returns that reason, naming `path` and `line`, or `None` for a sound record.
pub(crate) fn repair(
    record: &mut TrajectoryRecord,
    path: &std::path::Path,
    line: usize,
) -> Option<String> {
    let fields = unsound_fields(record);
    if fields.is_empty() {
        return None;
    }
    let note = format!(
        "{}:{line}: rollout {}: {}; read as an infrastructure error (left out of stats and exports, re-run by `trawl run` on resume)",
        path.display(),
        record.key,
        fields.join(", ")
    );
    record.reward = 0.0;
    record.success = false;
    record.evaluations.retain(|e| {
        unsound(e.reward).is_none() && e.components.values().all(|v| unsound(*v).is_none())
    });
    for s in &mut record.steps {
        if s.reward.is_some_and(|r| unsound(r).is_some()) {
            s.reward = None;
        }
    }
    record.outcome.exit_status = crate::trajectory::ExitStatus::InfraError;
    record.outcome.error = Some(crate::trajectory::RecordedError {
        kind: "evaluator".into(),
        message: format!(
            "the record as written had rewards trawl cannot use: {}",
            fields.join(", ")
        ),
    });
    Some(note)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_rule_refuses_what_statistics_cannot_carry() {
        for bad in [f64::NAN, f64::INFINITY, f64::NEG_INFINITY, 1e308, -1.5e9] {
            assert!(unsound(bad).is_some(), "{bad}");
        }
        for good in [0.0, -0.0, 1.0, -1e9, 1e9, f64::MIN_POSITIVE / 2.0] {
            assert_eq!(unsound(good), None, "{good}");
        }
        assert_eq!(checked_sum(&[1.0, 2.5]), Some(3.5));
        assert_eq!(checked_sum(&[]), Some(0.0));
        assert_eq!(checked_sum(&[6e8, 6e8]), None);
        assert_eq!(checked_sum(&[1e308, 1e308]), None);
        assert_eq!(checked_sum(&[f64::NAN]), None);
        assert_eq!(depth(&serde_json::json!({"a": [1, {"b": []}]})), 4);
    }

    /// The shape an older trawl wrote when a sum overflowed: `null` rewards. The line loads, as
    /// an infrastructure error whose note names file, line and fields; a sound line is untouched.
    #[test]
    fn a_null_reward_on_disk_reads_as_an_infrastructure_error() {
        let mut r = crate::strategies::example_record();
        r.outcome.exit_status = crate::trajectory::ExitStatus::Submitted;
        r.success = true;
        r.evaluations = vec![crate::evaluator::Evaluation {
            evaluator: "openenv_reward".into(),
            reward: 1.0,
            success: true,
            components: [("reward".to_string(), 1.0)].into(),
            details: serde_json::Value::Null,
        }];
        let path = std::path::Path::new("runs/x/trajectories.jsonl");
        let line = serde_json::to_string(&r).unwrap();
        assert_eq!(
            crate::store::parse_record_noting(path, 4, &line).unwrap(),
            (r.clone(), None)
        );
        let mut v = serde_json::to_value(&r).unwrap();
        v["reward"] = serde_json::Value::Null;
        v["evaluations"][0]["reward"] = serde_json::Value::Null;
        v["evaluations"][0]["components"]["reward"] = serde_json::Value::Null;
        let line = serde_json::to_string(&v).unwrap();
        assert!(line.contains("\"reward\":null"));
        let (back, note) = crate::store::parse_record_noting(path, 4, &line).unwrap();
        let note = note.expect("a note");
        assert!(
            note.starts_with("runs/x/trajectories.jsonl:4: rollout ")
                && note.contains("`reward` is not a finite number")
                && note.contains("`evaluations[0].components.reward`"),
            "{note}"
        );
        assert!(!back.is_final() && !back.success && back.reward == 0.0);
        assert!(back.evaluations.is_empty());
        assert!(unsound_fields(&back).is_empty());
        assert_eq!(back.outcome.error.unwrap().kind, "evaluator");
    }
}

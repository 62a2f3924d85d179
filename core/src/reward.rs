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
/// NaN, so that the record still loads and [`TrajectoryRecord::unsound_rewards`](crate::trajectory::TrajectoryRecord::unsound_rewards)
/// can say what was wrong with it.
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
}

//! The metrics' tests: estimators against known values and binomials, groups, rendering.

use std::collections::BTreeMap;

use super::estimate::t_critical;
use super::*;
use crate::trajectory::TrajectoryRecord;
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
    let half = 2.144_786_7 * (v.iter().map(|x| (x - m).powi(2)).sum::<f64>() / 14.0 / 15.0).sqrt();
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

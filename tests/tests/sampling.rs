//! Online sampling against a real HTTP server on 127.0.0.1: `samples = { max, until_successes }`
//! draws each task's samples one after another until enough succeed, the same with the same
//! seeds, and a stopped run resumes to exactly the rollouts of an uninterrupted one; a token
//! budget stops new rollouts and holds across sessions; export keeps tasks by pass rate.
#![allow(clippy::unwrap_used)] // tests: a failed unwrap is a failed test

use std::collections::{BTreeMap, BTreeSet};
use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use serde_json::Value;
use trawl_core::engine::{RunStatus, StopSignal};
use trawl_core::TrajectoryRecord;
use trawl_tests::{run_records, Reply, ScriptedServer};

use trawl_chat as _;
use trawl_math as _;
use trawl_openai as _;

const TASKS: usize = 12;

/// A model whose chance of answering task i depends on the task: some tasks it never solves,
/// some always, most sometimes (by the request's seed, so a sample's outcome is fixed).
fn policy(body: &Value) -> Reply {
    static ANSWERS: std::sync::OnceLock<Vec<(String, i64)>> = std::sync::OnceLock::new();
    let answers = ANSWERS.get_or_init(|| trawl_tests::generated_answers(9, &[1, 2], TASKS));
    // Task i is solved when the seed's last digit is below its threshold: 0/10 .. 10/10.
    let tenths = |i: usize| [0, 0, 1, 2, 3, 5, 5, 7, 8, 9, 10, 10][i % TASKS];
    Reply::Delayed(
        Duration::from_millis(25),
        Box::new(trawl_tests::rated_math_reply(answers, tenths, body)),
    )
}

fn config(base_url: &str, samples: &str, extra: &str) -> String {
    format!(
        r#"name = "sampling"
seed = 9
samples = {samples}
concurrency = 8
{extra}

[[environments]]
type = "math"
generator = {{ count = {TASKS}, levels = [1, 2] }}

[[scaffolds]]
type = "chat"

[[models]]
type = "openai"
name = "mock"
base_url = "{base_url}"
model = "mock"
"#
    )
}

/// Per task: the outcomes of its samples in sample order.
fn by_task(records: &[TrajectoryRecord]) -> BTreeMap<String, Vec<bool>> {
    let mut out: BTreeMap<String, BTreeMap<u32, bool>> = BTreeMap::new();
    for r in records.iter().filter(|r| r.is_final()) {
        let prev = out
            .entry(r.key.task.clone())
            .or_default()
            .insert(r.key.sample, r.success);
        assert!(prev.is_none(), "one record per key");
    }
    out.into_iter()
        .map(|(t, s)| {
            let samples: Vec<u32> = s.keys().copied().collect();
            assert_eq!(
                samples,
                (0..samples.len() as u32).collect::<Vec<_>>(),
                "{t}: samples in order, none skipped"
            );
            (t, s.into_values().collect())
        })
        .collect()
}

async fn run(dir: &Path, text: &str, stop: StopSignal) -> trawl_core::engine::RunSummary {
    trawl_tests::run_experiment(text, dir, stop).await.unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sampling_stops_at_enough_successes_and_resumes_exactly() {
    let server = ScriptedServer::start(Arc::new(policy)).await.unwrap();
    let adaptive = config(&server.base_url(), "{ max = 8, until_successes = 2 }", "");

    let whole = tempfile::tempdir().unwrap();
    let summary = run(whole.path(), &adaptive, StopSignal::default()).await;
    assert_eq!(summary.status, RunStatus::Finished);
    let records = run_records(whole.path());
    let tasks = by_task(&records);
    assert_eq!(tasks.len(), TASKS);
    for (task, outcomes) in &tasks {
        let successes = outcomes.iter().filter(|s| **s).count();
        let before_last = outcomes[..outcomes.len() - 1]
            .iter()
            .filter(|s| **s)
            .count();
        // It stopped at the second success or at the maximum, never earlier, never later.
        assert!(before_last < 2, "{task}: {outcomes:?}");
        assert!(
            successes == 2 || outcomes.len() == 8,
            "{task}: {outcomes:?}"
        );
    }
    let sm = summary.sampling.clone().unwrap();
    assert_eq!(sm.samples, records.len() as u64);
    assert_eq!(sm.cells, TASKS as u64);
    assert_eq!(
        sm.reached_successes + sm.reached_max,
        TASKS as u64,
        "{sm:?}"
    );
    assert!(
        sm.reached_max >= 2,
        "the never-solved tasks use all 8: {sm:?}"
    );
    assert!(
        records.len() < 8 * TASKS,
        "fewer rollouts than sampling every task 8 times"
    );

    // Stopped part way, then resumed: exactly the rollouts of the uninterrupted run.
    let parts = tempfile::tempdir().unwrap();
    let stop = StopSignal::default();
    let s = stop.clone();
    tokio::spawn(async move {
        tokio::time::sleep(Duration::from_millis(90)).await;
        s.stop_after(Duration::from_secs(5));
    });
    let first = run(parts.path(), &adaptive, stop).await;
    let first_records = run_records(parts.path());
    assert!(
        first.status == RunStatus::Interrupted && first_records.len() < records.len(),
        "the first session stopped early ({} of {})",
        first_records.len(),
        records.len()
    );
    let second = run(parts.path(), &adaptive, StopSignal::default()).await;
    assert_eq!(second.status, RunStatus::Finished);
    let resumed = run_records(parts.path());
    let keys = |rs: &[TrajectoryRecord]| -> BTreeSet<String> {
        rs.iter()
            .filter(|r| r.is_final())
            .map(|r| r.key.to_string())
            .collect()
    };
    assert_eq!(keys(&resumed), keys(&records));
    assert_eq!(by_task(&resumed), tasks);
    // A third session has nothing left to do.
    let third = run(parts.path(), &adaptive, StopSignal::default()).await;
    assert_eq!(third.launched, 0);

    // Pass-rate band at export: the tasks solved always or never are left out.
    let band = trawl_core::Selection {
        min_pass_rate: Some(0.01),
        max_pass_rate: Some(0.99),
        ..trawl_core::Selection::default()
    };
    let selected = trawl_core::export::select(&records, &band).unwrap();
    let kept_tasks: BTreeSet<&str> = selected.kept.iter().map(|r| r.key.task.as_str()).collect();
    for (task, outcomes) in &tasks {
        let sometimes = outcomes.contains(&true) && outcomes.contains(&false);
        assert_eq!(
            kept_tasks.contains(task.as_str()),
            sometimes,
            "{task}: {outcomes:?}"
        );
    }
    assert_eq!(
        selected
            .dropped
            .get(&trawl_core::export::DropReason::OutsidePassRate)
            .copied()
            .unwrap_or(0)
            + selected.kept.len(),
        records.len()
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_token_budget_stops_new_rollouts_across_sessions() {
    let server = ScriptedServer::start(Arc::new(policy)).await.unwrap();
    // Each rollout reports 17 tokens (the server's usage): 100 tokens allow six, then the
    // rollouts in flight finish and nothing more starts.
    let text = config(&server.base_url(), "4", "max_total_tokens = 100");
    let dir = tempfile::tempdir().unwrap();
    let first = run(dir.path(), &text, StopSignal::default()).await;
    assert!(first.budget_spent, "{first:?}");
    assert!(first.tokens_used >= 100);
    let n = run_records(dir.path()).len();
    assert!(n < 4 * TASKS, "stopped early: {n}");
    assert!(
        // Under 100 before the last one to start, and the eight in flight then.
        first.tokens_used < 100 + 8 * 17,
        "at most the rollouts in flight go over: {} tokens in {n} rollouts",
        first.tokens_used
    );
    // The budget is the run's: a new session starts nothing.
    let second = run(dir.path(), &text, StopSignal::default()).await;
    assert!(second.budget_spent);
    assert_eq!(second.launched, 0);
    assert_eq!(run_records(dir.path()).len(), n);
    // Raising the budget is the same experiment: the run goes on where it stopped.
    let more = config(&server.base_url(), "4", "max_total_tokens = 100000");
    let third = run(dir.path(), &more, StopSignal::default()).await;
    assert!(!third.budget_spent);
    assert_eq!(third.status, RunStatus::Finished);
    assert_eq!(run_records(dir.path()).len(), 4 * TASKS);
    assert_eq!(third.skipped as usize, n);
}

#[test]
fn bad_sampling_settings_name_the_field() {
    let registry = trawl_core::Registry::builtin().unwrap();
    for (samples, field, needle) in [
        ("0", "samples", "at least 1"),
        (
            "{ max = 0, until_successes = 1 }",
            "samples.max",
            "at least 1",
        ),
        (
            "{ max = 4, until_successes = 5 }",
            "samples.until_successes",
            "from 1 to max",
        ),
        ("{ max = 4 }", "samples", "until_successes"),
        ("\"many\"", "samples", "number or a table"),
    ] {
        let text = config("http://127.0.0.1:9/v1", samples, "");
        let Err(err) =
            trawl_core::ExperimentConfig::parse(Path::new("x.toml"), &text, &registry, "x")
        else {
            panic!("{samples} was accepted")
        };
        let shown = err.to_string();
        assert!(
            shown.contains(field) && shown.contains(needle),
            "{samples}: {shown}"
        );
        assert!(shown.contains("x.toml:3"), "{shown}");
    }
}

//! What sampling until enough succeed saves: the same tasks run with `samples = 16` and with
//! `samples = { max = 16, until_successes = 2 }` against a local OpenAI-compatible server whose
//! model solves each task at its own rate (a realistic mix: some never, some always, most
//! sometimes), counting model calls and the rollouts accepted for rejection-sampling fine-tuning
//! (at most two successes per task). The same seeds give the same outcome to a sample in both
//! runs, so both accept exactly the same rollouts. `cargo bench -p trawl-tests --bench sampling`;
//! figures go in BENCHMARKS.md.

#![allow(clippy::unwrap_used)]

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Instant;

use serde_json::Value;
use trawl_core::TrajectoryRecord;
use trawl_tests::{Reply, ScriptedServer};

use trawl_chat as _;
use trawl_math as _;
use trawl_openai as _;

const TASKS: usize = 300;
const MAX: u32 = 16;
const ACCEPT: usize = 2;

/// The pass-rate mix, in tenths, by task: a quarter never solved, a tenth always, the rest
/// spread between (a small model on grade-school math looks like this).
fn rate_of(task: usize) -> u64 {
    [0, 0, 0, 0, 0, 1, 1, 1, 2, 2, 3, 3, 4, 5, 5, 6, 7, 8, 10, 10][task % 20]
}

fn policy(body: &Value) -> Reply {
    static ANSWERS: std::sync::OnceLock<Vec<(String, i64)>> = std::sync::OnceLock::new();
    let answers = ANSWERS.get_or_init(|| trawl_tests::generated_answers(1, &[1, 2, 3], TASKS));
    trawl_tests::rated_math_reply(answers, rate_of, body)
}

fn config(base_url: &str, samples: &str) -> String {
    format!(
        r#"name = "bench"
seed = 1
samples = {samples}
concurrency = 64

[[environments]]
type = "math"
generator = {{ count = {TASKS}, levels = [1, 2, 3] }}

[[scaffolds]]
type = "chat"

[[models]]
type = "openai"
name = "mock"
base_url = "{base_url}"
model = "mock"
max_concurrency = 64
"#
    )
}

/// Rollouts accepted for training: each task's first `ACCEPT` successes.
fn accepted(records: &[TrajectoryRecord]) -> BTreeMap<(String, u32), ()> {
    let mut per_task: BTreeMap<String, Vec<u32>> = BTreeMap::new();
    for r in records.iter().filter(|r| r.success) {
        per_task
            .entry(r.key.task.clone())
            .or_default()
            .push(r.key.sample);
    }
    per_task
        .into_iter()
        .flat_map(|(t, mut s)| {
            s.sort_unstable();
            s.into_iter()
                .take(ACCEPT)
                .map(move |x| ((t.clone(), x), ()))
        })
        .collect()
}

fn main() {
    let rt = tokio::runtime::Runtime::new().unwrap();
    rt.block_on(async {
        let mut results = Vec::new();
        for samples in [
            format!("{MAX}"),
            format!("{{ max = {MAX}, until_successes = {ACCEPT} }}"),
        ] {
            let server = ScriptedServer::start(Arc::new(policy)).await.unwrap();
            let dir = tempfile::tempdir().unwrap();
            let t = Instant::now();
            let summary = trawl_tests::run_experiment(
                &config(&server.base_url(), &samples),
                dir.path(),
                Default::default(),
            )
            .await
            .unwrap();
            let secs = t.elapsed().as_secs_f64();
            let records = trawl_tests::run_records(dir.path());
            let calls = server.requests().len();
            let kept = accepted(&records);
            println!(
                "samples = {samples:<36} {calls:>6} model calls  {:>6} rollouts  {:>5} accepted  {:>4} tasks with any  {secs:>6.2} s",
                records.len(),
                kept.len(),
                kept.keys().map(|(t, _)| t).collect::<std::collections::BTreeSet<_>>().len(),
            );
            if let Some(sm) = &summary.sampling {
                println!(
                    "{:<46} {} cells reached {ACCEPT} successes, {} used all {MAX}",
                    "", sm.reached_successes, sm.reached_max
                );
            }
            results.push((calls, kept));
        }
        let (fixed_calls, fixed_kept) = &results[0];
        let (adaptive_calls, adaptive_kept) = &results[1];
        assert_eq!(fixed_kept, adaptive_kept, "the same rollouts accepted");
        println!(
            "model calls saved for the same {} accepted rollouts: {} of {} ({:.1}%)",
            adaptive_kept.len(),
            fixed_calls - adaptive_calls,
            fixed_calls,
            100.0 * (fixed_calls - adaptive_calls) as f64 / *fixed_calls as f64
        );
    });
}

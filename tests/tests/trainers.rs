//! Every export format, from the same trajectories, read by the trainers' own libraries:
//! `datasets.load_dataset`, TRL's data utilities (conversational detection, chat templates with
//! SmolLM2's own template) and `pyarrow` on verl's Parquet (tests/python/check_exports.py).
#![allow(clippy::unwrap_used)] // tests: a failed unwrap is a failed test

use std::path::{Path, PathBuf};
use std::sync::Arc;

use serde_json::{json, Value};
use trawl_core::export::{export_records, ExportStats, Selection};
use trawl_core::TrajectoryRecord;
use trawl_tests::{run_records, Reply, ScriptedServer};
// Linked for their registrations.
use trawl_chat as _;
use trawl_exporters as _;
use trawl_openai as _;
use trawl_tool_calling as _;

/// The problems of the config below (seed 5), answered right or wrong by the request's seed.
fn policy(body: &Value) -> Reply {
    static ANSWERS: std::sync::OnceLock<Vec<(String, i64)>> = std::sync::OnceLock::new();
    trawl_tests::seeded_math_policy(
        ANSWERS.get_or_init(|| trawl_tests::generated_answers(5, &[1, 2], 6)),
        body,
    )
}

fn config(base_url: &str) -> String {
    format!(
        r#"name = "trainers"
seed = 5
samples = 4

[[environments]]
type = "math"
calculator = true
generator = {{ count = 6, levels = [1, 2] }}

[[scaffolds]]
type = "chat"

[[scaffolds]]
type = "tool_calling"
max_steps = 4

[[models]]
type = "openai"
name = "mock"
base_url = "{base_url}"
model = "mock"
return_token_ids = true

[models.sampling]
logprobs = true
"#
    )
}

/// Writes `records` in `format` (with `settings`) to `dir/<file>`; returns the path and stats.
fn export(
    records: &[TrajectoryRecord],
    format: &str,
    settings: Value,
    dir: &Path,
    file: &str,
) -> (PathBuf, ExportStats) {
    let exporter = trawl_tests::exporter(format, &settings);
    let mut out = Vec::new();
    let stats = export_records(
        records,
        &Selection::default(),
        exporter.as_ref(),
        format,
        &mut out,
    )
    .unwrap();
    let path = dir.join(file);
    std::fs::write(&path, out).unwrap();
    (path, stats)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_format_of_one_run_loads_in_the_trainers_libraries() {
    let server = ScriptedServer::start(Arc::new(policy)).await.unwrap();
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    trawl_tests::run_experiment(&config(&server.base_url()), d, Default::default())
        .await
        .unwrap();
    let records = run_records(d);
    assert_eq!(records.len(), 6 * 2 * 4);
    let rewards: Vec<f64> = records.iter().map(|r| r.reward).collect();
    assert!(
        rewards.contains(&1.0) && rewards.contains(&0.0),
        "{rewards:?}"
    );

    let mut files = Vec::new();
    let mut stats = std::collections::BTreeMap::new();
    for (name, format, settings, file) in [
        ("openai", "openai", json!({}), "openai.jsonl"),
        (
            "openai_tools_json",
            "openai",
            json!({"tools": "json"}),
            "openai-json.jsonl",
        ),
        ("sharegpt", "sharegpt", json!({}), "sharegpt.jsonl"),
        ("turns", "turns", json!({}), "turns.jsonl"),
        ("dpo", "dpo", json!({}), "dpo.jsonl"),
        ("grpo", "grpo", json!({}), "grpo.jsonl"),
        ("tokens", "tokens", json!({}), "tokens.jsonl"),
        ("verl", "verl", json!({}), "verl.parquet"),
        ("trajectory", "trajectory", json!({}), "trajectory.jsonl"),
    ] {
        let (path, s) = export(&records, format, settings, d, file);
        files.push((name, path));
        stats.insert(name, s);
    }

    // What each format counted, from what the run holds.
    let count = |name: &str, what: &str| stats[name].counts.get(what).copied().unwrap_or(0);
    // Every tool_calling rollout wrote a sentence beside its call: ShareGPT cannot carry it.
    assert_eq!(count("sharegpt", "tool_call_text_dropped"), 24);
    // Samples 0..4 of a task: the seed decides, so some tasks have both outcomes.
    let groups = stats["grpo"].total_sft_examples;
    assert!(groups > 0, "{:?}", stats["grpo"].counts);
    assert_eq!(
        groups + count("grpo", "groups_zero_variance"),
        12,
        "each (task, scaffold) prompt is one group, written or counted: {:?}",
        stats["grpo"].counts
    );
    assert_eq!(
        count("dpo", "tasks_paired") + count("dpo", "tasks_all_same_reward"),
        12
    );
    assert_eq!(count("dpo", "tasks_paired"), groups);
    assert_eq!(stats["verl"].total_sft_examples, 12);
    // Every model turn carried ids: one tokens row per assistant message.
    let turns: usize = records.iter().map(TrajectoryRecord::assistant_turns).sum();
    assert_eq!(stats["tokens"].total_sft_examples, turns);

    let gguf = trawl_llama::fetch::default_model().unwrap();
    let report = trawl_tests::check_with_trainers(&gguf, &files);
    for (name, _) in &files {
        assert!(
            report.contains(&format!("{name}: ")),
            "{name} unchecked:\n{report}"
        );
    }
    eprintln!("{report}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_embedded_models_token_ids_decode_to_its_replies() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    let config = r#"name = "tokens"
seed = 3
samples = 2

[[environments]]
type = "math"
generator = { count = 2, levels = [1] }

[[scaffolds]]
type = "chat"

[[models]]
type = "llama"
name = "smollm2"
parallel = 4
context_size = 1024

[models.sampling]
temperature = 0.7
max_tokens = 48
logprobs = true
"#;
    trawl_tests::run_experiment(config, d, Default::default())
        .await
        .unwrap();
    let records = run_records(d);
    assert_eq!(records.len(), 4);
    let (path, stats) = export(&records, "tokens", json!({}), d, "tokens.jsonl");
    assert_eq!(stats.total_sft_examples, 4, "{:?}", stats.counts);
    let gguf = trawl_llama::fetch::default_model().unwrap();
    let report = trawl_tests::check_with_trainers(&gguf, &[("tokens_decoded", path)]);
    assert!(report.contains("4 decoded back"), "{report}");
}

/// SWE formats from real trajectory files of SWE-agent and mini-swe-agent (../shared/fixtures):
/// each `swe_smith` style loads in `datasets` and TRL reads its conversations; `preds.json` is
/// what the SWE-bench harness reads.
#[test]
fn swe_formats_of_imported_trajectories_load_in_the_trainers_libraries() {
    let fixtures = Path::new(env!("CARGO_MANIFEST_DIR")).join("../../shared/fixtures");
    let files = trawl_swe::import::find_trajectories(&fixtures).unwrap();
    let records: Vec<TrajectoryRecord> = files
        .iter()
        .map(|f| trawl_swe::import::import_file(f, &trawl_swe::import::Extra::default()).unwrap())
        .collect();
    assert_eq!(records.len(), 4);
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    let mut files = Vec::new();
    for style in ["xml", "ticks", "tool"] {
        let (path, stats) = export(
            &records,
            "swe_smith",
            json!({"style": style}),
            d,
            &format!("swe-{style}.jsonl"),
        );
        assert_eq!(stats.total_sft_examples, 4);
        files.push(("swe_smith", path));
    }
    // One prediction per instance (the two mini-swe-agent files are one instance).
    let mut seen = std::collections::HashSet::new();
    let one_each: Vec<TrajectoryRecord> = records
        .iter()
        .filter(|r| seen.insert(r.key.task.clone()))
        .cloned()
        .collect();
    let (preds, _) = export(&one_each, "preds", json!({}), d, "preds.json");
    files.push(("preds", preds));
    let gguf = trawl_llama::fetch::default_model().unwrap();
    let report = trawl_tests::check_with_trainers(&gguf, &files);
    assert_eq!(report.matches("swe_smith: 4 rows").count(), 3, "{report}");
    assert!(report.contains("preds: 3 instances"), "{report}");
}

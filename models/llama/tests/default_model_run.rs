//! A config that names no model runs on the embedded default model: real trajectories, scored.

#![allow(clippy::unwrap_used)] // tests: a failed unwrap is a failed test

use std::path::Path;
use std::sync::Arc;

use trawl_core::engine::{self, RunOptions, RunStatus, RunSummary, Silent, StopSignal};
use trawl_core::store::{self, read_records};
use trawl_core::{ExitStatus, ExperimentConfig, Registry, TrajectoryRecord};

use trawl_chat as _;
use trawl_llama as _;
use trawl_math as _;

/// Parses `text`, checks it with `check`, runs it into a temporary directory, and returns the
/// summary and the records.
async fn run_toml(text: &str, check: fn(&ExperimentConfig)) -> (RunSummary, Vec<TrajectoryRecord>) {
    let registry = Registry::builtin().unwrap();
    let (config, map) =
        ExperimentConfig::parse(Path::new("test.toml"), text, &registry, "x").unwrap();
    check(&config);
    let dir = tempfile::tempdir().unwrap();
    let summary = engine::run(
        &config,
        &map,
        &registry,
        RunOptions {
            out: dir.path().to_path_buf(),
            force: false,
            stop: StopSignal::default(),
            observer: Arc::new(Silent),
        },
    )
    .await
    .unwrap();
    let (records, _) = read_records(&dir.path().join(store::TRAJECTORIES)).unwrap();
    (summary, records)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_config_without_models_runs_on_the_embedded_model() {
    let text = r#"
name = "no-model"
samples = 2
concurrency = 8

[[environments]]
type = "math"
generator = { count = 4, levels = [1] }

[[scaffolds]]
type = "chat"
system_prompt = "You are a helpful assistant. Answer concisely."
"#;
    let (summary, records) = run_toml(text, |config| {
        assert_eq!(config.models[0].component.kind, "llama")
    })
    .await;
    assert_eq!(summary.status, RunStatus::Finished);
    assert_eq!(records.len(), 8);
    for r in &records {
        assert_eq!(
            r.outcome.exit_status,
            ExitStatus::Submitted,
            "{:?}",
            r.outcome
        );
        assert_eq!(r.provenance.model_kind, "llama");
        assert_eq!(r.provenance.model_id, "SmolLM2-135M-Instruct.Q4_1.gguf");
        assert!(r.usage.completion_tokens > 0 && r.usage.prompt_tokens > 0);
        assert!(
            !r.messages.last().unwrap().text().is_empty(),
            "the model wrote nothing"
        );
        assert_eq!(r.evaluations[0].evaluator, "math_answer");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn token_ids_and_logprobs_reach_the_record_when_asked_for() {
    let text = r#"
name = "logprobs"
[[environments]]
type = "math"
generator = { count = 2, levels = [1] }

[[scaffolds]]
type = "chat"
max_turns = 1

[[models]]
type = "llama"
parallel = 2
context_size = 1024

[models.sampling]
temperature = 0.0
max_tokens = 32
logprobs = true
"#;
    let (_, records) = run_toml(text, |_| {}).await;
    assert_eq!(records.len(), 2);
    for r in &records {
        assert_eq!(r.tokens.len(), r.assistant_turns());
        let t = &r.tokens[0];
        assert_eq!(t.completion_ids.len() as u64, r.usage.completion_tokens);
        assert_eq!(t.prompt_ids.len() as u64, r.usage.prompt_tokens);
        assert_eq!(t.logprobs.len(), t.completion_ids.len());
        assert!(t.logprobs.iter().all(|lp| *lp <= 0.0));
    }
}

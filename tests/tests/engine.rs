//! Whole runs through the engine against a real scripted server on 127.0.0.1: records, resume,
//! infrastructure errors, time limits, stopping, locking, and config errors.

#![allow(clippy::unwrap_used)] // tests: a failed unwrap is a failed test

use std::collections::HashSet;
use std::path::Path;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::Duration;

use serde::Deserialize;
use trawl_core::engine::{RunError, RunStatus, RunSummary, StopSignal};
use trawl_core::registry::{BuildContext, ComponentError, EnvironmentConfig, ScaffoldConfig};
use trawl_core::store::{self, read_records, RunDir, StoreError};
use trawl_core::{
    async_trait, Action, ActionSpace, AgentScaffold, Artifacts, Environment, EnvironmentError,
    Episode, ExitStatus, ExperimentConfig, Message, Observation, Registry, RolloutContext,
    ScaffoldError, ScaffoldOutcome, Task, TrajectoryRecord,
};
use trawl_tests::{adder_policy, Reply, ScriptedServer};

use trawl_chat as _;
use trawl_exporters as _;
use trawl_math as _;
use trawl_openai as _;
use trawl_tool_calling as _;

fn config_text(base_url: &str, extra_top: &str, env: &str, scaffold: &str) -> String {
    format!(
        r#"
name = "t"
seed = 3
{extra_top}

[[environments]]
type = "math"
{env}

[[scaffolds]]
{scaffold}

[[models]]
type = "openai"
name = "scripted"
base_url = "{base_url}"
model = "scripted"
request_timeout_secs = 10
retry = {{ max_attempts = 2, initial_backoff_secs = 0.01, max_backoff_secs = 0.02 }}

[models.sampling]
temperature = 0.5
"#
    )
}

async fn run_text(text: &str, dir: &Path, stop: StopSignal) -> Result<RunSummary, RunError> {
    trawl_tests::run_experiment(text, dir, stop).await
}

fn records(dir: &Path) -> Vec<TrajectoryRecord> {
    trawl_tests::run_records(dir)
}

/// A server that answers with the adder policy after `delay`.
async fn slow_adder(delay: Duration) -> ScriptedServer {
    ScriptedServer::start(Arc::new(move |b| {
        Reply::Delayed(delay, Box::new(adder_policy(b)))
    }))
    .await
    .unwrap()
}

/// A server that answers with the adder policy while `healthy` is set, and with `sick` (given
/// the request body) otherwise.
async fn switchable(
    healthy: &Arc<AtomicBool>,
    sick: fn(&serde_json::Value) -> Reply,
) -> ScriptedServer {
    let h = healthy.clone();
    ScriptedServer::start(Arc::new(move |body| {
        if h.load(Ordering::SeqCst) {
            adder_policy(body)
        } else {
            sick(body)
        }
    }))
    .await
    .unwrap()
}

/// Calls `how` on the stop signal after `after`, from another task.
fn stop_in(stop: &StopSignal, after: Duration, how: fn(&StopSignal)) {
    let s = stop.clone();
    tokio::spawn(async move {
        tokio::time::sleep(after).await;
        how(&s);
    });
}

fn assert_unique_keys(records: &[TrajectoryRecord]) {
    let keys: HashSet<_> = records.iter().map(|r| r.key.clone()).collect();
    assert_eq!(
        keys.len(),
        records.len(),
        "duplicate keys in trajectories.jsonl"
    );
}

#[tokio::test]
async fn chat_run_writes_one_scored_record_per_key() {
    let server = ScriptedServer::start(Arc::new(adder_policy)).await.unwrap();
    let dir = tempfile::tempdir().unwrap();
    let text = config_text(
        &server.base_url(),
        "samples = 3",
        "generator = { count = 8, levels = [1] }",
        "type = \"chat\"\nsystem_prompt = \"Be brief.\"",
    );
    let summary = run_text(&text, dir.path(), StopSignal::default())
        .await
        .unwrap();
    assert_eq!(summary.status, RunStatus::Finished);
    assert_eq!(summary.written, 24);
    let recs = records(dir.path());
    assert_eq!(recs.len(), 24);
    assert_unique_keys(&recs);
    for r in &recs {
        assert_eq!(r.schema, "trawl.trajectory/1");
        assert_eq!(r.messages[0], Message::system("Be brief."));
        assert_eq!(r.outcome.exit_status, ExitStatus::Submitted);
        assert_eq!(r.evaluations[0].evaluator, "math_answer");
        // The adder is right exactly when the problem is an addition.
        let addition = r.task.data["question"].as_str().unwrap().contains("more");
        assert_eq!(r.success, addition, "{:?}", r.task);
        assert_eq!(r.usage.model_calls, 1);
        assert_eq!(r.provenance.model_id, "scripted");
        assert!(r.provenance.seed < 1 << 31);
    }
    assert!(
        recs.iter().any(|r| r.success) && recs.iter().any(|r| !r.success),
        "want both outcomes"
    );
    // Every rollout got its own seed, and the server saw it.
    let seeds: HashSet<u64> = server
        .requests()
        .iter()
        .map(|b| b["seed"].as_u64().unwrap())
        .collect();
    assert_eq!(seeds.len(), 24);
    let manifest: serde_json::Value =
        serde_json::from_slice(&std::fs::read(dir.path().join("run/manifest.json")).unwrap())
            .unwrap();
    assert_eq!(manifest["status"], "finished");
    assert_eq!(manifest["components"]["environment/math"], "math 0.1.0");
    assert!(std::fs::read_to_string(dir.path().join("run/config.toml"))
        .unwrap()
        .contains("temperature = 0.5"));

    // Running again does nothing: every key is done.
    let again = run_text(&text, dir.path(), StopSignal::default())
        .await
        .unwrap();
    assert_eq!((again.skipped, again.launched), (24, 0));
    assert_eq!(records(dir.path()), recs);
}

#[tokio::test]
async fn tool_calling_run_uses_the_calculator() {
    let server = ScriptedServer::start(Arc::new(adder_policy)).await.unwrap();
    let dir = tempfile::tempdir().unwrap();
    let text = config_text(
        &server.base_url(),
        "",
        "calculator = true\ngenerator = { count = 4, levels = [1] }",
        "type = \"tool_calling\"",
    );
    run_text(&text, dir.path(), StopSignal::default())
        .await
        .unwrap();
    let recs = records(dir.path());
    assert_eq!(recs.len(), 4);
    for r in &recs {
        assert_eq!(r.tools[0].function.name, "calculator");
        let roles: Vec<_> = r.messages.iter().map(|m| format!("{:?}", m.role)).collect();
        assert_eq!(roles, ["User", "Assistant", "Tool", "Assistant"]);
        assert!(matches!(r.steps[0].action, Action::ToolCall { .. }));
        assert_eq!(r.messages[2].tool_call_id.as_deref(), Some("call_1"));
        assert_eq!(r.usage.model_calls, 2);
        // The calculator computed the sum, and the final answer quotes it.
        let numbers = trawl_tests::numbers_in(r.task.data["question"].as_str().unwrap());
        assert_eq!(
            r.messages[2].content.as_deref(),
            Some((numbers[0] + numbers[1]).to_string().as_str())
        );
    }
    let bodies = server.requests();
    assert!(bodies
        .iter()
        .all(|b| b["tools"][0]["function"]["name"] == "calculator"));
}

#[tokio::test]
async fn infra_errors_are_kept_apart_and_rerun_on_resume() {
    let healthy = Arc::new(AtomicBool::new(false));
    let server = switchable(&healthy, |_| Reply::status(503, "maintenance")).await;
    let dir = tempfile::tempdir().unwrap();
    let text = config_text(
        &server.base_url(),
        "max_infra_error_rate = 1.0",
        "generator = { count = 5, levels = [1] }",
        "type = \"chat\"",
    );
    let first = run_text(&text, dir.path(), StopSignal::default())
        .await
        .unwrap();
    assert_eq!(first.infra_errors, 5);
    let recs = records(dir.path());
    assert!(recs
        .iter()
        .all(|r| r.outcome.exit_status == ExitStatus::InfraError));
    assert_eq!(
        recs[0].outcome.error.as_ref().unwrap().kind,
        "model_unavailable"
    );
    assert!(recs[0].evaluations.is_empty() && !recs[0].success);
    let stats = trawl_core::stats::compute(&recs);
    assert_eq!((stats.finished, stats.infra_errors), (0, 5));

    healthy.store(true, Ordering::SeqCst);
    let second = run_text(&text, dir.path(), StopSignal::default())
        .await
        .unwrap();
    assert_eq!(
        (second.skipped, second.launched, second.resume.moved_aside),
        (0, 5, 5)
    );
    let recs = records(dir.path());
    assert_eq!(recs.len(), 5);
    assert_unique_keys(&recs);
    assert!(recs
        .iter()
        .all(|r| r.outcome.exit_status == ExitStatus::Submitted));
    let attempts = std::fs::read_to_string(dir.path().join("run").join(store::ATTEMPTS)).unwrap();
    assert_eq!(
        attempts.lines().count(),
        5,
        "earlier attempts are kept for diagnosis"
    );
}

/// Runs `count` chat rollouts (with `top` settings) against a server that always answers 500.
async fn run_against_a_dead_server(top: &str, count: u32) -> RunSummary {
    let server = ScriptedServer::scripted(vec![Reply::status(500, "down")])
        .await
        .unwrap();
    let dir = tempfile::tempdir().unwrap();
    let text = config_text(
        &server.base_url(),
        top,
        &format!("generator = {{ count = {count}, levels = [1] }}"),
        "type = \"chat\"",
    );
    run_text(&text, dir.path(), StopSignal::default())
        .await
        .unwrap()
}

#[tokio::test]
async fn too_many_infra_errors_fail_the_run() {
    let summary = run_against_a_dead_server("concurrency = 4", 200).await;
    assert_eq!(summary.status, RunStatus::Failed);
    assert!(
        summary.launched < 200,
        "the run kept launching after failing"
    );
}

#[tokio::test]
async fn a_server_that_stalls_past_the_episode_time_is_an_infra_error_not_the_models_failure() {
    // The server answers after 5 s; the episode has 0.3 s. The model never got to act, so the
    // rollout is an infrastructure error, re-run on resume, and never scored or exported.
    let fast = Arc::new(AtomicBool::new(false));
    let server = switchable(&fast, |body| {
        Reply::Delayed(Duration::from_secs(5), Box::new(adder_policy(body)))
    })
    .await;
    let dir = tempfile::tempdir().unwrap();
    let text = config_text(
        &server.base_url(),
        "episode_timeout_secs = 0.3",
        "generator = { count = 2, levels = [1] }",
        "type = \"chat\"",
    );
    let summary = run_text(&text, dir.path(), StopSignal::default())
        .await
        .unwrap();
    // Every rollout failed on infrastructure: the run failed, whatever its size.
    assert_eq!(summary.status, RunStatus::Failed);
    let recs = records(dir.path());
    assert_eq!(recs.len(), 2);
    for r in &recs {
        assert_eq!(r.outcome.exit_status, ExitStatus::InfraError);
        assert_eq!(r.outcome.error.as_ref().unwrap().kind, "model_timeout");
        assert!(!r.is_final() && !r.success && r.evaluations.is_empty());
    }
    let stats = trawl_core::stats::compute(&recs);
    assert_eq!((stats.finished, stats.infra_errors), (0, 2));
    assert!(trawl_tests::export_lines(&recs, "openai", serde_json::json!({}), false).is_empty());

    // Once the server answers, resume re-runs both and scores them.
    fast.store(true, Ordering::SeqCst);
    let second = run_text(&text, dir.path(), StopSignal::default())
        .await
        .unwrap();
    assert_eq!((second.status, second.launched), (RunStatus::Finished, 2));
    let recs = records(dir.path());
    assert!(recs
        .iter()
        .all(|r| r.outcome.exit_status == ExitStatus::Submitted));
}

#[tokio::test]
async fn a_run_whose_every_rollout_failed_on_infrastructure_fails_whatever_its_size() {
    let summary = run_against_a_dead_server("", 3).await;
    assert_eq!(
        (summary.status, summary.infra_errors),
        (RunStatus::Failed, 3)
    );
}

#[tokio::test]
async fn a_server_that_dies_late_stops_the_run_quickly() {
    // 300 rollouts succeed, then the server answers 500 for good. The budget judges the recent
    // rollouts, so the run stops after a handful of errors, not after a fifth of the whole run.
    let served = Arc::new(std::sync::atomic::AtomicUsize::new(0));
    let n = served.clone();
    let server = ScriptedServer::start(Arc::new(move |body| {
        if n.fetch_add(1, Ordering::SeqCst) < 300 {
            adder_policy(body)
        } else {
            Reply::status(500, "down")
        }
    }))
    .await
    .unwrap();
    let dir = tempfile::tempdir().unwrap();
    let text = config_text(
        &server.base_url(),
        "concurrency = 4",
        "generator = { count = 600, levels = [1] }",
        "type = \"chat\"",
    );
    let summary = run_text(&text, dir.path(), StopSignal::default())
        .await
        .unwrap();
    assert_eq!(summary.status, RunStatus::Failed);
    assert!(
        summary.infra_errors <= 20,
        "{} infrastructure errors before the run stopped",
        summary.infra_errors
    );
    assert!(summary.launched < 340, "{} launched", summary.launched);
}

#[tokio::test]
async fn context_overflow_ends_as_a_truncation() {
    let server = ScriptedServer::scripted(vec![Reply::status(
        400,
        r#"{"error":{"code":"context_length_exceeded"}}"#,
    )])
    .await
    .unwrap();
    let dir = tempfile::tempdir().unwrap();
    let text = config_text(
        &server.base_url(),
        "",
        "generator = { count = 1, levels = [1] }",
        "type = \"chat\"",
    );
    run_text(&text, dir.path(), StopSignal::default())
        .await
        .unwrap();
    let r = &records(dir.path())[0];
    assert_eq!(r.outcome.exit_status, ExitStatus::ContextWindowExceeded);
    assert!(r.is_final() && !r.success);
}

#[tokio::test]
async fn a_soft_stop_lets_in_flight_episodes_finish() {
    let server = slow_adder(Duration::from_millis(300)).await;
    let dir = tempfile::tempdir().unwrap();
    let text = config_text(
        &server.base_url(),
        "concurrency = 3",
        "generator = { count = 30, levels = [1] }",
        "type = \"chat\"",
    );
    let stop = StopSignal::default();
    stop_in(&stop, Duration::from_millis(450), |s| s.soft.cancel());
    let summary = run_text(&text, dir.path(), stop).await.unwrap();
    assert_eq!(summary.status, RunStatus::Interrupted);
    assert!(summary.launched < 30);
    assert_eq!(summary.written, summary.launched);
    let recs = records(dir.path());
    assert!(
        recs.iter().all(|r| r.is_final()),
        "in-flight episodes were cut instead of finishing"
    );

    let resumed = run_text(&text, dir.path(), StopSignal::default())
        .await
        .unwrap();
    assert_eq!(resumed.skipped, summary.written);
    assert_eq!(records(dir.path()).len(), 30);
}

#[tokio::test]
async fn a_hard_stop_records_interrupted_episodes_and_resume_reruns_them() {
    let server = slow_adder(Duration::from_secs(2)).await;
    let dir = tempfile::tempdir().unwrap();
    let text = config_text(
        &server.base_url(),
        "concurrency = 4",
        "generator = { count = 4, levels = [1] }",
        "type = \"chat\"",
    );
    let stop = StopSignal::default();
    stop_in(&stop, Duration::from_millis(200), |s| {
        s.stop_after(Duration::ZERO)
    });
    let summary = run_text(&text, dir.path(), stop).await.unwrap();
    assert_eq!(summary.interrupted, 4);
    let recs = records(dir.path());
    assert!(recs
        .iter()
        .all(|r| r.outcome.exit_status == ExitStatus::Interrupted));
    // The partial transcript is kept: the opening messages were there.
    assert_eq!(recs[0].messages[0].role, trawl_core::MessageRole::User);

    let resumed = run_text(&text, dir.path(), StopSignal::default())
        .await
        .unwrap();
    assert_eq!((resumed.launched, resumed.resume.moved_aside), (4, 4));
    let recs = records(dir.path());
    assert_unique_keys(&recs);
    assert!(recs
        .iter()
        .all(|r| r.outcome.exit_status == ExitStatus::Submitted));
}

#[tokio::test]
async fn a_torn_last_line_is_dropped_and_rerun() {
    let server = ScriptedServer::start(Arc::new(adder_policy)).await.unwrap();
    let dir = tempfile::tempdir().unwrap();
    let text = config_text(
        &server.base_url(),
        "",
        "generator = { count = 3, levels = [1] }",
        "type = \"chat\"",
    );
    run_text(&text, dir.path(), StopSignal::default())
        .await
        .unwrap();
    let path = dir.path().join("run").join(store::TRAJECTORIES);
    let full = std::fs::read_to_string(&path).unwrap();
    // Cut the last record in half, as a kill in mid-write would.
    let keep = full.len() - full.lines().last().unwrap().len() / 2 - 1;
    std::fs::write(&path, &full[..keep]).unwrap();
    let (recs, report) = read_records(&path).unwrap();
    assert_eq!(recs.len(), 2);
    assert!(report.torn_tail.is_some());
    let resumed = run_text(&text, dir.path(), StopSignal::default())
        .await
        .unwrap();
    assert!(resumed.resume.dropped_torn_tail);
    assert_eq!(resumed.launched, 1);
    let recs = records(dir.path());
    assert_eq!(recs.len(), 3);
    assert_unique_keys(&recs);
}

#[tokio::test]
async fn a_bad_line_in_the_middle_is_an_error_naming_line_and_field() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("trajectories.jsonl");
    std::fs::write(
        &path,
        "{\"schema\": \"trawl.trajectory/1\", \"key\": {\"environment\": 5}}\n{}\n",
    )
    .unwrap();
    let err = read_records(&path).unwrap_err().to_string();
    assert!(err.contains("trajectories.jsonl:1:"), "{err}");
    assert!(err.contains("field `key.environment`"), "{err}");
}

#[tokio::test]
async fn a_second_writer_is_refused() {
    let dir = tempfile::tempdir().unwrap();
    let _first = RunDir::open(dir.path()).unwrap();
    match RunDir::open(dir.path()) {
        Err(StoreError::Locked(p)) => assert_eq!(p, dir.path()),
        other => panic!("second writer was let in: {:?}", other.map(|_| ())),
    }
}

#[tokio::test]
async fn resuming_with_another_config_is_refused() {
    let server = ScriptedServer::start(Arc::new(adder_policy)).await.unwrap();
    let dir = tempfile::tempdir().unwrap();
    let text = config_text(
        &server.base_url(),
        "",
        "generator = { count = 1, levels = [1] }",
        "type = \"chat\"",
    );
    run_text(&text, dir.path(), StopSignal::default())
        .await
        .unwrap();
    let changed = text.replace("temperature = 0.5", "temperature = 0.9");
    let err = run_text(&changed, dir.path(), StopSignal::default())
        .await
        .unwrap_err();
    assert!(matches!(err, RunError::ConfigChanged { .. }), "{err}");
    assert!(err.to_string().contains("--force"));
}

/// The error of a run whose environment table holds `env`, and the config line holding `needle`.
async fn build_error(env: &str, needle: &str) -> (String, usize) {
    let dir = tempfile::tempdir().unwrap();
    let text = config_text("http://127.0.0.1:9/v1", "", env, "type = \"chat\"");
    let err = run_text(&text, dir.path(), StopSignal::default())
        .await
        .unwrap_err()
        .to_string();
    let line = text.lines().position(|l| l.contains(needle)).unwrap() + 1;
    (err, line)
}

fn config_error(text: &str) -> String {
    let registry = Registry::builtin().unwrap();
    match ExperimentConfig::parse(Path::new("exp.toml"), text, &registry, "x") {
        Err(e) => e.to_string(),
        Ok(_) => panic!("config was accepted:\n{text}"),
    }
}

#[tokio::test]
async fn config_errors_name_file_line_and_field() {
    let good = config_text("http://127.0.0.1:9/v1", "", "", "type = \"chat\"");
    let line_of =
        |text: &str, needle: &str| text.lines().position(|l| l.contains(needle)).unwrap() + 1;

    let typo = good.replace("temperature = 0.5", "temprature = 0.5");
    let err = config_error(&typo);
    assert!(
        err.starts_with(&format!("exp.toml:{}:", line_of(&typo, "temprature"))),
        "{err}"
    );
    assert!(
        err.contains("field `models[0].sampling.temprature`") && err.contains("temperature"),
        "{err}"
    );

    let kind = good.replace("type = \"chat\"", "type = \"chatt\"");
    let err = config_error(&kind);
    assert!(
        err.starts_with(&format!("exp.toml:{}:", line_of(&kind, "chatt"))),
        "{err}"
    );
    assert!(
        err.contains("unknown scaffold kind `chatt`")
            && err.contains("valid scaffold kinds: chat, ")
            && err.contains("tool_calling"),
        "{err}"
    );

    let top = format!("sample = 3\n{good}");
    let err = config_error(&top);
    assert!(
        err.starts_with("exp.toml:1:") && err.contains("field `sample`"),
        "{err}"
    );

    let syntax = good.replace("seed = 3", "seed = = 3");
    let err = config_error(&syntax);
    assert!(
        err.starts_with(&format!("exp.toml:{}:", line_of(&syntax, "seed = ="))),
        "{err}"
    );

    let missing = good.replace("type = \"math\"", "");
    assert!(config_error(&missing).contains("missing `type`"));

    // An error inside a component's own settings, found when it is built.
    let (err, line) = build_error("generator = { count = 2, levels = [9] }", "levels = [9]").await;
    assert!(err.contains(&format!(":{line}:")), "{err}");
    assert!(
        err.contains("environments[0].generator.levels") && err.contains("levels are 1 to 5"),
        "{err}"
    );

    let (err, line) = build_error("generatr = { count = 2 }", "generatr").await;
    assert!(err.contains(&format!(":{line}:")), "{err}");
    assert!(
        err.contains("unknown field `generatr`") && err.contains("`generator`"),
        "{err}"
    );

    // Numbers out of range, `inf` included, are refused with the field named, never a panic.
    for (edit, field) in [
        ("episode_timeout_secs = inf", "field `episode_timeout_secs`"),
        ("episode_timeout_secs = nan", "field `episode_timeout_secs`"),
        (
            "max_infra_error_rate = -0.1",
            "field `max_infra_error_rate`",
        ),
        ("max_infra_error_rate = 1.5", "field `max_infra_error_rate`"),
        ("concurrency = 9223372036854775807", "field `concurrency`"),
    ] {
        let err = config_error(&format!("{edit}\n{good}"));
        assert!(
            err.starts_with("exp.toml:1:") && err.contains(field),
            "{edit}: {err}"
        );
    }
    let inf_temp = good.replace("temperature = 0.5", "temperature = inf");
    assert!(config_error(&inf_temp).contains("field `models[0].sampling.temperature`"));

    // NaN and infinities are no setting's value, wherever they are written: the model's
    // sampling, its retry table, an environment's own settings, an inline sub-model (a
    // simulated user's), an array item, a float too large to hold. Each is refused at its line.
    for (edit, needle, field) in [
        (
            ("temperature = 0.5", "temperature = nan"),
            "temperature = nan",
            "models[0].sampling.temperature",
        ),
        (
            ("temperature = 0.5", "temperature = 0.5\ntop_p = -inf"),
            "top_p",
            "models[0].sampling.top_p",
        ),
        (
            ("temperature = 0.5", "min_p = +nan"),
            "min_p",
            "models[0].sampling.min_p",
        ),
        (
            ("initial_backoff_secs = 0.01", "initial_backoff_secs = nan"),
            "retry =",
            "models[0].retry.initial_backoff_secs",
        ),
        (
            (
                "type = \"math\"",
                "type = \"math\"\nuser = { sampling = { top_p = nan } }",
            ),
            "user =",
            "environments[0].user.sampling.top_p",
        ),
        (
            ("type = \"math\"", "type = \"math\"\nweights = [0.5, 1e400]"),
            "weights",
            "environments[0].weights[1]",
        ),
    ] {
        let text = good.replace(edit.0, edit.1);
        assert_ne!(text, good, "{edit:?} changed nothing");
        let err = config_error(&text);
        assert!(
            err.starts_with(&format!("exp.toml:{}:", line_of(&text, needle))),
            "{edit:?}: {err}"
        );
        assert!(
            err.contains(&format!("field `{field}`")) && err.contains("must be a finite number"),
            "{edit:?}: {err}"
        );
    }
    let dir = tempfile::tempdir().unwrap();
    let inf_deadline = good.replace(
        "max_backoff_secs = 0.02 }",
        "max_backoff_secs = 0.02, total_deadline_secs = inf }",
    );
    let err = run_text(&inf_deadline, dir.path(), StopSignal::default())
        .await
        .unwrap_err()
        .to_string();
    assert!(err.contains("models[0].retry.total_deadline_secs"), "{err}");
}

#[tokio::test]
async fn an_empty_task_file_is_refused_not_run() {
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(dir.path().join("empty.jsonl"), "\n").unwrap();
    let text = config_text(
        "http://127.0.0.1:9/v1",
        "",
        &format!("files = [\"{}\"]", dir.path().join("empty.jsonl").display()),
        "type = \"chat\"",
    );
    let err = run_text(&text, dir.path(), StopSignal::default())
        .await
        .unwrap_err()
        .to_string();
    assert!(
        err.contains("environments[0]") && err.contains("has no tasks"),
        "{err}"
    );
    assert!(!dir.path().join("run/trajectories.jsonl").exists());
}

#[tokio::test]
async fn a_bad_task_file_names_file_line_and_field() {
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(
        dir.path().join("tasks.jsonl"),
        "{\"question\": \"1+1?\", \"answer\": \"#### 2\"}\n{\"question\": \"2+2?\"}\n",
    )
    .unwrap();
    let text = config_text(
        "http://127.0.0.1:9/v1",
        "",
        "files = [\"tasks.jsonl\"]",
        "type = \"chat\"",
    );
    let err = run_text(&text, dir.path(), StopSignal::default())
        .await
        .unwrap_err()
        .to_string();
    assert!(
        err.contains("tasks.jsonl:2: field `answer`: missing"),
        "{err}"
    );
    assert!(err.contains("environments[0].files[0]"), "{err}");
}

// A shell-only environment and a panicking scaffold, registered from this test binary the same
// way a plugin crate would.

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct ShellOnlyConfig {}

struct ShellOnly;

#[async_trait]
impl Environment for ShellOnly {
    fn action_space(&self) -> ActionSpace {
        ActionSpace {
            shell: true,
            ..ActionSpace::default()
        }
    }
    async fn tasks(&self) -> Result<Vec<Task>, EnvironmentError> {
        Ok(vec![Task::new("t1", serde_json::json!({}))])
    }
    async fn start(&self, _: &Task) -> Result<Box<dyn Episode>, EnvironmentError> {
        Err(EnvironmentError::Runtime(
            "never started in this test".into(),
        ))
    }
}

impl EnvironmentConfig for ShellOnlyConfig {
    fn build(self, _: &BuildContext) -> Result<Arc<dyn Environment>, ComponentError> {
        Ok(Arc::new(ShellOnly))
    }
}
trawl_core::register!(
    environment,
    "test_shell_only",
    "test: takes shell commands only",
    ShellOnlyConfig
);

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct PanickyConfig {}
struct Panicky;

#[async_trait]
impl AgentScaffold for Panicky {
    fn required_actions(&self) -> ActionSpace {
        ActionSpace {
            answer: true,
            ..ActionSpace::default()
        }
    }
    async fn run(&self, cx: RolloutContext<'_>) -> Result<ScaffoldOutcome, ScaffoldError> {
        if cx.transcript.messages[0].text().contains("gets") {
            panic!("scaffold bug");
        }
        let _ = cx.episode.act(&Action::Answer { text: "0".into() }).await;
        Ok(ScaffoldOutcome {
            exit_status: ExitStatus::Submitted,
            submission: Some("0".into()),
        })
    }
}
impl ScaffoldConfig for PanickyConfig {
    fn build(self, _: &BuildContext) -> Result<Arc<dyn AgentScaffold>, ComponentError> {
        Ok(Arc::new(Panicky))
    }
}
trawl_core::register!(
    scaffold,
    "test_panicky",
    "test: panics on some tasks",
    PanickyConfig
);

#[tokio::test]
async fn a_mismatched_scaffold_and_environment_are_refused_before_running() {
    let dir = tempfile::tempdir().unwrap();
    let text = config_text("http://127.0.0.1:9/v1", "", "", "type = \"chat\"")
        .replace("type = \"math\"", "type = \"test_shell_only\"");
    let err = run_text(&text, dir.path(), StopSignal::default())
        .await
        .unwrap_err();
    assert!(matches!(err, RunError::Mismatch { .. }), "{err}");
    assert!(err.to_string().contains("needs answer actions"), "{err}");
    assert!(
        !dir.path().join("run").exists(),
        "nothing is written for a refused run"
    );
}

#[tokio::test]
async fn a_panicking_component_becomes_an_infra_record_and_the_run_goes_on() {
    let server = ScriptedServer::start(Arc::new(adder_policy)).await.unwrap();
    let dir = tempfile::tempdir().unwrap();
    let text = config_text(
        &server.base_url(),
        "max_infra_error_rate = 1.0",
        "generator = { count = 6, levels = [1] }",
        "type = \"test_panicky\"",
    );
    let summary = run_text(&text, dir.path(), StopSignal::default())
        .await
        .unwrap();
    assert_eq!(summary.written, 6);
    let recs = records(dir.path());
    let panicked: Vec<_> = recs
        .iter()
        .filter(|r| r.outcome.error.as_ref().is_some_and(|e| e.kind == "panic"))
        .collect();
    assert!(!panicked.is_empty() && panicked.len() < 6);
    assert!(panicked
        .iter()
        .all(|r| r.outcome.exit_status == ExitStatus::InfraError));
    // Whatever did not panic was scored.
    assert!(recs
        .iter()
        .filter(|r| r.is_final())
        .all(|r| !r.evaluations.is_empty()));
}

#[test]
fn unused_observation_helpers_compile() {
    // Observation constructors are part of the public surface environments rely on.
    assert!(Observation::finished("x").done && !Observation::text("x").done);
    let _ = Artifacts::default();
}

// An environment (as a plugin might write one) whose task ids are whatever its config says.

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct IdsFromConfig {
    ids: Vec<String>,
}

struct GivenIds(Vec<String>);

#[async_trait]
impl Environment for GivenIds {
    fn action_space(&self) -> ActionSpace {
        ActionSpace {
            answer: true,
            ..ActionSpace::default()
        }
    }
    async fn tasks(&self) -> Result<Vec<Task>, EnvironmentError> {
        Ok(self
            .0
            .iter()
            .map(|id| Task::new(id.clone(), serde_json::json!({"answer": "1"})))
            .collect())
    }
    async fn start(&self, _: &Task) -> Result<Box<dyn Episode>, EnvironmentError> {
        Err(EnvironmentError::Runtime(
            "never started in this test".into(),
        ))
    }
}

impl EnvironmentConfig for IdsFromConfig {
    fn build(self, _: &BuildContext) -> Result<Arc<dyn Environment>, ComponentError> {
        Ok(Arc::new(GivenIds(self.ids)))
    }
}
trawl_core::register!(
    environment,
    "test_given_ids",
    "test: tasks with the ids its config gives",
    IdsFromConfig
);

/// Task ids become parts of file paths (`trawl swe reports`, exports by task): an id that would
/// reach outside a folder is refused before the run starts, whichever environment made it; ids
/// like `HumanEval/0` are fine.
#[tokio::test]
async fn task_ids_that_would_escape_a_folder_are_refused_before_running() {
    for (ids, refused) in [
        (
            r#"["../../escape"]"#,
            Some("task id `../../escape` has a `..` part"),
        ),
        (
            r#"["ok", "/etc/passwd"]"#,
            Some("task id `/etc/passwd` is an absolute path"),
        ),
        (r#"["a/./b"]"#, Some("task id `a/./b` has a `.` part")),
        (r#"["nul\u0000x"]"#, Some("contains a NUL character")),
        (r#"[""]"#, Some("task id `` is empty")),
        (r#"["HumanEval/0", "x..y"]"#, None),
    ] {
        let dir = tempfile::tempdir().unwrap();
        let text =
            format!(
            "{}\n[[evaluators]]\ntype = \"math_answer\"\n\n[scoring]\nprimary = \"math_answer\"\n",
            config_text("http://127.0.0.1:9/v1", "", "", "type = \"chat\"")
                .replace("type = \"math\"", &format!("type = \"test_given_ids\"\nids = {ids}"))
        );
        let registry = Registry::builtin().unwrap();
        let (config, map) =
            ExperimentConfig::parse(Path::new("exp.toml"), &text, &registry, "x").unwrap();
        let checked = trawl_core::engine::check(&config, &map, &registry, false).await;
        match refused {
            Some(needle) => {
                let err = checked.err().map(|e| e.to_string()).unwrap_or_default();
                assert!(
                    err.contains("environment `test_given_ids`") && err.contains(needle),
                    "{ids}: {err}"
                );
                let err = run_text(&text, dir.path(), StopSignal::default())
                    .await
                    .unwrap_err();
                assert!(err.to_string().contains(needle), "{ids}: {err}");
                assert!(
                    !dir.path().join("run").exists(),
                    "nothing is written for a refused run"
                );
            }
            None => assert!(
                checked.is_ok(),
                "{ids}: {:?}",
                checked.err().map(|e| e.to_string())
            ),
        }
    }
}

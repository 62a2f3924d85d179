//! Whole runs of the `code` environment against a real HTTP server on 127.0.0.1, with every
//! program run in a real sandbox: chat, chat with test feedback, tool calling with `run_python`,
//! and the two-agent coder/tester scaffold with per-agent export.

#![allow(clippy::unwrap_used)]

use std::collections::HashMap;
use std::path::Path;

use serde_json::Value;
use trawl_core::engine::{RunError, RunSummary, StopSignal};

use trawl_core::{ExitStatus, TrajectoryRecord};
use trawl_tests::{coder_policy, ScriptedServer};

use trawl_chat as _;
use trawl_code as _;
use trawl_coder_tester as _;
use trawl_exporters as _;
use trawl_openai as _;
use trawl_tool_calling as _;

fn solutions() -> HashMap<String, String> {
    trawl_code::tasks::reference_solutions(&trawl_code::tasks::builtin().unwrap())
}

fn config(base_url: &str, env: &str, scaffold: &str) -> String {
    format!(
        r#"
name = "code-test"
seed = 5
samples = 1
concurrency = 8

[[environments]]
type = "code"
{env}

[[scaffolds]]
{scaffold}

[[models]]
type = "openai"
name = "scripted"
base_url = "{base_url}"
model = "scripted"
request_timeout_secs = 20
"#
    )
}

async fn run(text: &str, dir: &Path) -> Result<RunSummary, RunError> {
    trawl_tests::run_experiment(text, dir, StopSignal::default()).await
}

/// Runs the code environment (`env` settings) with `scaffold` against the coding policy.
async fn run_code(env: &str, scaffold: &str) -> (tempfile::TempDir, Vec<TrajectoryRecord>) {
    let server = ScriptedServer::start(coder_policy(solutions()))
        .await
        .unwrap();
    let dir = tempfile::tempdir().unwrap();
    run(&config(&server.base_url(), env, scaffold), dir.path())
        .await
        .unwrap();
    let records = trawl_tests::run_records(dir.path());
    (dir, records)
}

#[tokio::test]
async fn chat_on_the_builtin_set_scores_by_tests_and_exports_only_passing_solutions() {
    let (dir, records) = run_code("", "type = \"chat\"").await;
    assert_eq!(records.len(), 35);
    for r in &records {
        let name = r.task.data["entry_point"].as_str().unwrap();
        let eval = &r.evaluations[0];
        assert_eq!(eval.evaluator, "code_tests");
        // The policy is right exactly for names of even length.
        assert_eq!(r.success, name.len() % 2 == 0, "{name}: {:?}", eval.details);
        let total = eval.components["total"];
        assert_eq!(
            total as usize,
            r.task.data["tests"].as_array().unwrap().len()
        );
        if !r.success {
            assert_eq!(r.reward, eval.components["passed"] / total);
            let tests = eval.details["tests"].as_array().unwrap();
            assert!(tests
                .iter()
                .any(|t| t["passed"] == false && t["error"].is_string()));
        }
    }
    let passing = records.iter().filter(|r| r.success).count();
    assert!(passing > 5 && passing < 30, "{passing}");

    // The SFT export holds the passing solutions and nothing else.
    let lines = trawl_tests::export_lines(&records, "openai", serde_json::json!({}), true);
    assert_eq!(lines.len(), passing);
    for l in &lines {
        assert_eq!(l["success"], true);
        assert_eq!(l["reward"], 1.0);
    }

    // The manifest says how the code ran.
    let manifest: Value =
        serde_json::from_slice(&std::fs::read(dir.path().join("run/manifest.json")).unwrap())
            .unwrap();
    let sandbox = &manifest["environments"]["code"]["sandbox"];
    assert!(
        sandbox["mode"] == "namespaces" || sandbox["mode"] == "process",
        "{manifest}"
    );
    if std::env::var_os("TRAWL_REQUIRE_BWRAP").is_some() {
        assert_eq!(sandbox["mode"], "namespaces");
        assert_eq!(sandbox["network_isolated"], true);
    }
}

#[tokio::test]
async fn with_feedback_a_second_turn_fixes_a_failing_answer() {
    let (_dir, records) = run_code(
        "feedback = true\nlimit = 6",
        "type = \"chat\"\nmax_turns = 2",
    )
    .await;
    assert_eq!(records.len(), 6);
    for r in &records {
        let name = r.task.data["entry_point"].as_str().unwrap();
        assert!(r.success, "{name}");
        let users: Vec<&str> = r
            .messages
            .iter()
            .filter(|m| m.role == trawl_core::MessageRole::User)
            .map(|m| m.text())
            .collect();
        if name.len() % 2 == 1 {
            // Wrong first, shown the failing tests, right second.
            assert_eq!(users.len(), 2, "{name}");
            assert!(users[1].contains("FAILED: assert"), "{}", users[1]);
            assert_eq!(r.steps.len(), 2);
        } else {
            assert_eq!(users.len(), 1, "{name}");
            assert_eq!(r.steps[0].observation, "All tests passed.");
        }
    }
}

#[tokio::test]
async fn tool_calling_runs_python_in_the_episode_sandbox() {
    let (_dir, records) = run_code("limit = 4", "type = \"tool_calling\"").await;
    assert_eq!(records.len(), 4);
    for r in &records {
        let name = r.task.data["entry_point"].as_str().unwrap();
        assert_eq!(r.outcome.exit_status, ExitStatus::Submitted);
        assert_eq!(r.tools[0].name(), "run_python");
        let step = &r.steps[0];
        assert_eq!(step.exit_code, Some(0), "{}", step.observation);
        assert!(
            step.observation.contains(&format!("defined {name}")),
            "{}",
            step.observation
        );
        assert_eq!(r.success, name.len() % 2 == 0);
    }
}

#[tokio::test]
async fn coder_and_tester_take_turns_and_export_separately() {
    let (_dir, records) = run_code("limit = 6", "type = \"coder_tester\"\nmax_turns = 2").await;
    assert_eq!(records.len(), 6);
    for r in &records {
        let name = r.task.data["entry_point"].as_str().unwrap();
        assert_eq!(trawl_core::agents(&r.messages), vec!["coder", "tester"]);
        let generated = r.outcome.artifacts["generated_tests"].as_array().unwrap();
        assert!(!generated.is_empty(), "{name}");
        let eval = &r.evaluations[0];
        // The tester copied the problem's asserts: the reference solution passes all of them.
        assert_eq!(eval.components["reward.tester"], 1.0, "{:?}", eval.details);
        // A wrong first program fails the tester's tests, is fixed on the second turn.
        assert!(r.success, "{name}: {:?}", eval.details);
        let coder_turns = r
            .messages
            .iter()
            .filter(|m| {
                m.agent.as_deref() == Some("coder") && m.role == trawl_core::MessageRole::Assistant
            })
            .count();
        assert_eq!(
            coder_turns,
            if name.len() % 2 == 1 { 2 } else { 1 },
            "{name}"
        );
    }

    let all = trawl_tests::export_lines(&records, "turns", serde_json::json!({}), false);
    let coder = trawl_tests::export_lines(
        &records,
        "turns",
        serde_json::json!({"agent": "coder"}),
        false,
    );
    let tester = trawl_tests::export_lines(
        &records,
        "turns",
        serde_json::json!({"agent": "tester"}),
        false,
    );
    assert_eq!(all.len(), coder.len() + tester.len());
    for l in &coder {
        assert_eq!(l["metadata"]["agent_name"], "coder");
        assert_eq!(l["metadata"]["agent_idx"], 0);
        let prompt = l["messages"][0]["content"].as_str().unwrap();
        assert!(!prompt.contains("Write tests for this problem"), "{prompt}");
    }
    for l in &tester {
        assert_eq!(l["metadata"]["agent_name"], "tester");
        assert_eq!(l["metadata"]["agent_idx"], 1);
        assert_eq!(l["metadata"]["reward"], 1.0);
        assert!(l["messages"][1]["content"]
            .as_str()
            .unwrap()
            .contains("assert "));
    }
    // The chat export of one agent is that agent's conversation alone.
    let chats = trawl_tests::export_lines(
        &records,
        "openai",
        serde_json::json!({"agent": "tester"}),
        false,
    );
    assert_eq!(chats.len(), records.len());
    for c in &chats {
        assert!(c["messages"][0]["content"]
            .as_str()
            .unwrap()
            .contains("software tester"));
        assert!(c["messages"]
            .as_array()
            .unwrap()
            .iter()
            .all(|m| m.get("agent").is_none()));
    }
}

#[tokio::test]
async fn a_config_that_requires_namespaces_is_refused_where_they_do_not_work() {
    let dir = tempfile::tempdir().unwrap();
    let err = run(
        &config(
            "http://127.0.0.1:9/v1",
            "sandbox = { isolation = \"namespaces\", bwrap = \"/nonexistent/bwrap\" }",
            "type = \"chat\"",
        ),
        dir.path(),
    )
    .await
    .unwrap_err()
    .to_string();
    assert!(err.contains("experiment.toml:"), "{err}");
    assert!(err.contains("sandbox"), "{err}");
    assert!(err.contains("apt-get install -y bubblewrap"), "{err}");
    // Nothing was run, nothing written.
    assert!(!dir.path().join("run/trajectories.jsonl").exists());
}

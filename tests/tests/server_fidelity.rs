//! What trawl sends a real server and keeps of its answers: a local server that behaves as
//! llama.cpp's OpenAI-compatible server does (HTTP 500 on a `null` content, no tool calls
//! without `tool_choice`), finish reasons, replies cut off by `max_tokens`.

#![allow(clippy::unwrap_used)]

use std::sync::Arc;

use serde_json::{json, Value};
use trawl_core::engine::StopSignal;
use trawl_core::export::{select, DropReason, Selection};
use trawl_core::{ExitStatus, FinishReason};
use trawl_tests::{adder_policy, completion_body, Reply, ScriptedServer};

use trawl_chat as _;
use trawl_exporters as _;
use trawl_math as _;
use trawl_openai as _;
use trawl_tool_calling as _;

fn config(base_url: &str, env: &str, scaffold: &str, model: &str) -> String {
    format!(
        r#"
name = "fidelity"
seed = 1
samples = 1
max_infra_error_rate = 1.0

[[environments]]
type = "math"
{env}

[[scaffolds]]
type = "{scaffold}"

[[models]]
type = "openai"
name = "m"
base_url = "{base_url}"
model = "m"
retry = {{ max_attempts = 2, initial_backoff_secs = 0.01, max_backoff_secs = 0.02 }}
{model}
"#
    )
}

/// llama.cpp's server: a `null` content is a 500, and without `tool_choice` it never calls a
/// tool; otherwise the adder policy.
fn llama_server_like(body: &Value) -> Reply {
    let messages = body["messages"].as_array().cloned().unwrap_or_default();
    if messages.iter().any(|m| m["content"].is_null()) {
        return Reply::status(
            500,
            r#"{"error":{"message":"Failed to parse messages: null content"}}"#,
        );
    }
    let offered = body["tools"].as_array().is_some_and(|t| !t.is_empty());
    if offered && body.get("tool_choice").is_none() {
        return Reply::text("I cannot use tools.");
    }
    adder_policy(body)
}

#[tokio::test]
async fn tool_turns_are_sent_as_llama_cpp_server_accepts_them() {
    let server = ScriptedServer::start(Arc::new(llama_server_like))
        .await
        .unwrap();
    let dir = tempfile::tempdir().unwrap();
    let text = config(
        &server.base_url(),
        "calculator = true\ngenerator = { count = 3, levels = [1] }",
        "tool_calling",
        "",
    );
    let summary = trawl_tests::run_experiment(&text, dir.path(), StopSignal::default())
        .await
        .unwrap();
    assert_eq!(summary.infra_errors, 0);
    let records = trawl_tests::run_records(dir.path());
    for r in &records {
        assert_eq!(r.outcome.exit_status, ExitStatus::Submitted);
        assert!(
            matches!(r.steps[0].action, trawl_core::Action::ToolCall { .. }),
            "the calculator was called"
        );
        assert_eq!(
            r.finish_reasons,
            [FinishReason::ToolCalls, FinishReason::Stop]
        );
    }
    let bodies = server.requests();
    assert!(bodies.iter().all(|b| b["tool_choice"] == "auto"));
    let second = bodies
        .iter()
        .find(|b| b["messages"].as_array().unwrap().len() == 3)
        .unwrap();
    assert_eq!(second["messages"][1]["content"], "");
    assert!(second["messages"][1]["tool_calls"].is_array());

    // The export writes such turns the same way.
    let lines = trawl_tests::export_lines(&records, "openai", json!({}), false);
    for l in &lines {
        let call = &l["messages"][1];
        assert_eq!(call["role"], "assistant");
        assert_eq!(call["content"], "");
        assert!(l["messages"]
            .as_array()
            .unwrap()
            .iter()
            .all(|m| m["content"].is_string()));
    }
}

#[tokio::test]
async fn tool_choice_is_configurable() {
    let server = ScriptedServer::start(Arc::new(adder_policy)).await.unwrap();
    let dir = tempfile::tempdir().unwrap();
    let text = config(
        &server.base_url(),
        "calculator = true\ngenerator = { count = 1, levels = [1] }",
        "tool_calling",
        "tool_choice = \"omit\"",
    );
    trawl_tests::run_experiment(&text, dir.path(), StopSignal::default())
        .await
        .unwrap();
    assert!(server
        .requests()
        .iter()
        .all(|b| b.get("tool_choice").is_none()));
    let bad = config(
        "http://127.0.0.1:1/v1",
        "",
        "chat",
        "tool_choice = \"sometimes\"",
    );
    let err = trawl_tests::run_experiment(&bad, dir.path(), StopSignal::default())
        .await
        .unwrap_err()
        .to_string();
    assert!(
        err.contains("tool_choice") && err.contains("`auto`, `required`, `none`, `omit`"),
        "{err}"
    );
}

#[tokio::test]
async fn a_reply_cut_off_by_max_tokens_is_marked_and_left_out_of_success_only_exports() {
    // Every reply is right ("the answer is" the sum) but stops with finish_reason "length".
    let server = ScriptedServer::start(Arc::new(|body: &Value| {
        let Reply::Text(text) = adder_policy(body) else {
            unreachable!("no tools are offered")
        };
        Reply::Raw {
            status: 200,
            body: completion_body(json!({"role": "assistant", "content": text}), "length"),
            headers: Vec::new(),
        }
    }))
    .await
    .unwrap();
    let dir = tempfile::tempdir().unwrap();
    let text = config(
        &server.base_url(),
        "generator = { count = 6, levels = [1] }",
        "chat",
        "",
    );
    trawl_tests::run_experiment(&text, dir.path(), StopSignal::default())
        .await
        .unwrap();
    let records = trawl_tests::run_records(dir.path());
    let successes = records.iter().filter(|r| r.success).count();
    assert!(successes > 0);
    for r in &records {
        assert_eq!(r.finish_reasons, [FinishReason::Length]);
        assert!(r.truncated());
    }
    let chosen = select(
        &records,
        &Selection {
            success_only: true,
            ..Selection::default()
        },
    )
    .unwrap();
    assert!(chosen.kept.is_empty());
    assert_eq!(chosen.dropped.get(&DropReason::Truncated), Some(&successes));
    let chosen = select(
        &records,
        &Selection {
            success_only: true,
            include_truncated: true,
            ..Selection::default()
        },
    )
    .unwrap();
    assert_eq!(chosen.kept.len(), successes);
}

//! The `openai` backend against a real HTTP server on 127.0.0.1 that misbehaves on purpose
//! (the README's reliability promises 9–11).

#![allow(clippy::unwrap_used)] // tests: a failed unwrap is a failed test

use std::sync::Arc;
use std::time::{Duration, Instant};

use serde_json::json;
use trawl_core::registry::{build, BuildContext, ModelBuilder, Registry};
use trawl_core::{CompletionRequest, LanguageModel, Message, ModelError, Sampling};
use trawl_openai::OpenAiConfig;
use trawl_tests::{Reply, ScriptedServer};

fn model(server_url: &str, extra: serde_json::Value) -> Arc<dyn LanguageModel> {
    let mut settings = json!({
        "base_url": server_url,
        "model": "scripted",
        "request_timeout_secs": 1.0,
        "connect_timeout_secs": 1.0,
        "retry": {"max_attempts": 4, "initial_backoff_secs": 0.01, "max_backoff_secs": 0.05, "max_retry_after_secs": 0.3, "total_deadline_secs": 20.0}
    });
    for (k, v) in extra.as_object().unwrap() {
        settings[k] = v.clone();
    }
    // Through the model stack every model runs in (its `retry` table), as a config builds it.
    settings["type"] = json!("openai");
    ModelBuilder::from_registry(&Registry::builtin().unwrap(), 4).0(&settings).unwrap()
}

fn request() -> CompletionRequest {
    CompletionRequest {
        messages: vec![Message::user("2+2?")],
        tools: vec![],
        sampling: Sampling {
            seed: Some(5),
            ..Default::default()
        },
    }
}

async fn recovers_after(fault: Reply) -> (String, usize) {
    let server = ScriptedServer::scripted(vec![fault, Reply::text("4")])
        .await
        .unwrap();
    let m = model(&server.base_url(), json!({}));
    let c = m
        .complete(&request())
        .await
        .unwrap_or_else(|e| panic!("did not recover: {e}"));
    (c.message.text().to_string(), server.requests().len())
}

#[tokio::test]
async fn retries_429_honouring_a_short_retry_after() {
    let server = ScriptedServer::scripted(vec![Reply::too_many("0.2"), Reply::text("4")])
        .await
        .unwrap();
    let m = model(&server.base_url(), json!({}));
    let t = Instant::now();
    assert_eq!(m.complete(&request()).await.unwrap().message.text(), "4");
    assert!(
        t.elapsed() >= Duration::from_millis(200),
        "Retry-After was not honoured"
    );
    assert_eq!(server.requests().len(), 2);
}

#[tokio::test]
async fn caps_a_huge_retry_after() {
    let server = ScriptedServer::scripted(vec![Reply::too_many("86400"), Reply::text("4")])
        .await
        .unwrap();
    let m = model(&server.base_url(), json!({}));
    let t = Instant::now();
    assert_eq!(m.complete(&request()).await.unwrap().message.text(), "4");
    assert!(
        t.elapsed() < Duration::from_secs(5),
        "waited {:?} for a day-long Retry-After",
        t.elapsed()
    );
}

#[tokio::test]
async fn retries_server_errors_garbage_drops_cut_bodies_and_hangs() {
    for fault in [
        Reply::status(500, "oops"),
        Reply::status(503, "busy"),
        Reply::status(200, "<html>bad gateway</html>"),
        Reply::Drop,
        Reply::CutBody,
        Reply::Hang,
    ] {
        let label = format!("{fault:?}");
        let (text, requests) = recovers_after(fault).await;
        assert_eq!(text, "4", "{label}");
        assert_eq!(requests, 2, "{label}");
    }
}

#[tokio::test]
async fn does_not_retry_client_errors() {
    for status in [400, 401, 403, 404, 422] {
        let server = ScriptedServer::scripted(vec![
            Reply::status(status, r#"{"error":{"message":"nope"}}"#),
            Reply::text("4"),
        ])
        .await
        .unwrap();
        let m = model(&server.base_url(), json!({}));
        match m.complete(&request()).await {
            Err(ModelError::Rejected { status: s, .. }) => assert_eq!(s, status),
            other => panic!("HTTP {status}: expected a rejection, got {other:?}"),
        }
        assert_eq!(server.requests().len(), 1, "HTTP {status} was retried");
    }
}

#[tokio::test]
async fn context_overflow_is_a_truncation_not_a_retry() {
    let body = r#"{"error":{"message":"This model's maximum context length is 2048 tokens","code":"context_length_exceeded"}}"#;
    let server = ScriptedServer::scripted(vec![Reply::status(400, body)])
        .await
        .unwrap();
    let m = model(&server.base_url(), json!({}));
    assert!(matches!(
        m.complete(&request()).await,
        Err(ModelError::ContextLength(_))
    ));
    assert_eq!(server.requests().len(), 1);
}

#[tokio::test]
async fn gives_up_after_the_attempt_limit() {
    let server = ScriptedServer::scripted(vec![Reply::status(500, "down")])
        .await
        .unwrap();
    let m = model(&server.base_url(), json!({}));
    match m.complete(&request()).await {
        Err(ModelError::Unavailable { attempts, .. }) => assert_eq!(attempts, 4),
        other => panic!("expected Unavailable, got {other:?}"),
    }
    assert_eq!(server.requests().len(), 4);
}

#[tokio::test]
async fn an_unreachable_server_is_unavailable_not_a_hang() {
    // Bind and drop a listener to get a port nobody listens on.
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let m = model(&format!("http://127.0.0.1:{port}/v1"), json!({}));
    let t = Instant::now();
    assert!(matches!(
        m.complete(&request()).await,
        Err(ModelError::Unavailable { .. })
    ));
    assert!(t.elapsed() < Duration::from_secs(10));
}

#[tokio::test]
async fn sends_sampling_tools_and_the_api_key() {
    std::env::set_var("TRAWL_TEST_KEY", "sk-test-123");
    let server = ScriptedServer::scripted(vec![Reply::text("ok")])
        .await
        .unwrap();
    let m = model(&server.base_url(), json!({"api_key_env": "TRAWL_TEST_KEY"}));
    let mut req = request();
    req.sampling.temperature = Some(0.3);
    req.sampling.max_tokens = Some(64);
    req.tools = vec![trawl_core::ToolSchema::function(
        "calculator",
        "calc",
        json!({"type": "object"}),
    )];
    let c = m.complete(&req).await.unwrap();
    assert_eq!((c.usage.prompt_tokens, c.usage.completion_tokens), (12, 5));
    let sent = &server.requests()[0];
    assert_eq!(sent["model"], "scripted");
    assert_eq!(sent["temperature"], 0.3);
    assert_eq!(sent["max_tokens"], 64);
    assert_eq!(sent["seed"], 5);
    assert_eq!(sent["tools"][0]["function"]["name"], "calculator");
    assert_eq!(sent["messages"][0]["content"], "2+2?");
}

#[tokio::test]
async fn a_missing_api_key_variable_is_a_config_error() {
    let err = match build::<dyn LanguageModel, OpenAiConfig>(
        &json!({"base_url": "http://127.0.0.1:1/v1", "model": "m", "api_key_env": "TRAWL_SURELY_UNSET_VAR"}),
        &BuildContext::default(),
    ) {
        Err(e) => e,
        Ok(_) => panic!("built without the key"),
    };
    assert_eq!(err.path, vec!["api_key_env"]);
    assert!(err.message.contains("TRAWL_SURELY_UNSET_VAR"));
}

//! An OpenEnv server's `GET /health` against hostile answers, from a real HTTP server on
//! 127.0.0.1: a body past the cap (streamed, or declared up front) is refused at the cap and
//! said so, never read whole; a body that never ends, or headers that never come, time out and
//! are reported as a timeout, not as "no JSON".
#![allow(clippy::unwrap_used)] // tests: a failed unwrap is a failed test

use std::sync::Arc;
use std::time::Duration;

use serde_json::json;
use trawl_core::registry::{parse_settings, BuildContext, EnvironmentConfig};
use trawl_openenv::OpenEnvConfig;
use trawl_tests::{Reply, ScriptedServer};

/// What checking `server` before a run says: `Ok` when healthy, else the error's text.
async fn health_of(server: &ScriptedServer, timeout_secs: f64) -> Result<(), String> {
    let config: OpenEnvConfig = parse_settings(&json!({
        "servers": [format!("http://{}", server.addr)],
        "seeds": 1,
        "timeout_secs": timeout_secs,
    }))
    .unwrap();
    let env = config.build(&BuildContext::default()).unwrap();
    env.tasks().await.map(|_| ()).map_err(|e| e.to_string())
}

async fn serving(reply: Reply) -> ScriptedServer {
    ScriptedServer::start(Arc::new(move |_| reply.clone()))
        .await
        .unwrap()
}

#[tokio::test]
async fn a_healthy_answer_passes() {
    let server = serving(Reply::status(200, r#"{"status": "healthy"}"#)).await;
    health_of(&server, 5.0).await.unwrap();
}

#[tokio::test]
async fn a_body_past_the_cap_is_refused_at_the_cap() {
    // A bit over the 1 MiB cap, chunked (its size known only by reading) and then declared.
    for declare_length in [false, true] {
        let server = serving(Reply::Flood {
            bytes: (1 << 20) + (64 << 10),
            declare_length,
        })
        .await;
        let e = health_of(&server, 30.0).await.unwrap_err();
        assert!(
            e.contains("GET /health answered more than 1048576 bytes"),
            "declared: {declare_length}: {e}"
        );
        assert!(!e.contains("no JSON"), "{e}");
    }
}

#[tokio::test]
async fn an_endless_body_or_no_answer_times_out_and_says_so() {
    let endless = serving(Reply::Trickle {
        every: Duration::from_millis(20),
    })
    .await;
    let e = health_of(&endless, 1.0).await.unwrap_err();
    assert!(e.contains("GET /health timed out after 1 s"), "{e}");
    assert!(!e.contains("no JSON"), "{e}");

    let silent = serving(Reply::Hang).await;
    let e = health_of(&silent, 1.0).await.unwrap_err();
    assert!(e.contains("GET /health timed out after 1 s"), "{e}");
}

#[tokio::test]
async fn an_answer_that_is_not_json_is_named_with_its_start() {
    let server = serving(Reply::status(200, "<html>up</html>")).await;
    let e = health_of(&server, 5.0).await.unwrap_err();
    assert!(
        e.contains("is not healthy") && e.contains("no JSON") && e.contains("<html>up"),
        "{e}"
    );
}

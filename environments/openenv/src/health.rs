//! The `GET /health` check every server passes before a run (and a started container before
//! its episode).

use std::time::Duration;

use serde_json::Value;
use trawl_core::http::{error_chain, read_capped, BodyError};

/// The largest `/health` answer read (openenv-core's is `{"status": "healthy"}`): a longer one
/// is refused as soon as it passes this, never read whole.
const MAX_HEALTH_BYTES: u64 = 1 << 20;

/// Checks that `server` answers `GET /health` with `{"status": "healthy"}` within `timeout`
/// (its body included, read up to [`MAX_HEALTH_BYTES`]). A server that takes longer, even one
/// that never stops sending, has timed out and is told so.
pub(crate) async fn health(
    client: &reqwest::Client,
    server: &str,
    timeout: Duration,
) -> Result<(), String> {
    let url = format!("{}/health", server.trim_end_matches('/'));
    let timed_out = || {
        format!(
            "OpenEnv server {server}: GET /health timed out after {} s\n  hint: is the server overloaded or stuck? raise timeout_secs if it is only slow",
            timeout.as_secs_f64()
        )
    };
    let body = match client.get(&url).timeout(timeout).send().await {
        Ok(r) if r.status().is_success() => match read_capped(r, MAX_HEALTH_BYTES).await {
            Ok(body) => body,
            Err(BodyError::TimedOut) => return Err(timed_out()),
            Err(e) => return Err(format!("OpenEnv server {server}: GET /health {e}")),
        },
        Ok(r) => {
            return Err(format!(
                "OpenEnv server {server}: GET /health answered HTTP {}\n  hint: is it an OpenEnv server (openenv-core's create_app)?",
                r.status()
            ))
        }
        Err(e) if e.is_timeout() => return Err(timed_out()),
        Err(e) => {
            return Err(format!(
                "OpenEnv server {server} does not answer GET /health: {}\n  hint: start the server, or remove it from `servers`",
                error_chain(&e)
            ))
        }
    };
    let answer = serde_json::from_slice::<Value>(&body).ok();
    let status = answer
        .as_ref()
        .and_then(|v| v["status"].as_str())
        .unwrap_or_default();
    if status != "healthy" {
        let shown = match &answer {
            Some(v) => v.to_string().chars().take(200).collect(),
            None => format!(
                "no JSON ({} bytes: {:?})",
                body.len(),
                String::from_utf8_lossy(&body[..body.len().min(120)])
            ),
        };
        return Err(format!(
            "OpenEnv server {server} is not healthy: /health answered {shown}"
        ));
    }
    Ok(())
}

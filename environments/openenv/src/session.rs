//! One episode's WebSocket session with a server: send a message, wait for its answer within
//! the timeout, and close politely (removing the container that served it).

use std::time::Duration;

use futures_util::{SinkExt, StreamExt};
use serde_json::{json, Value};
use tokio::net::TcpStream;
use tokio_tungstenite::tungstenite::Message as Ws;
use tokio_tungstenite::{MaybeTlsStream, WebSocketStream};
use trawl_core::sandbox::Sandbox;

use crate::pool::Slot;
use crate::protocol::{parse_reply, parse_step, Answer, Reply};

/// The largest WebSocket message read from a server (an observation): a longer one breaks the
/// session as an infrastructure error. The `openai` model's default cap on a reply.
pub(crate) const MAX_MESSAGE_BYTES: usize = 16 << 20;

/// One episode's WebSocket session.
pub(crate) struct Session {
    pub(crate) stream: WebSocketStream<MaybeTlsStream<TcpStream>>,
    pub(crate) server: String,
    pub(crate) timeout: Duration,
    /// Its place on a listed server.
    pub(crate) _slot: Option<Slot>,
    /// The container serving it, in image mode.
    pub(crate) sandbox: Option<Box<dyn Sandbox>>,
}

impl Session {
    /// Sends `message` and waits for its observation. An error is an infrastructure failure,
    /// as a sentence naming the server.
    pub(crate) async fn exchange(&mut self, message: Value) -> Result<Answer, String> {
        let data = self.send(message).await?;
        match data {
            Reply::Observation(d) => parse_step(&d)
                .map(Answer::Observation)
                .map_err(|m| format!("OpenEnv server {}: {m}", self.server)),
            Reply::Refused(m) => Ok(Answer::Refused(m)),
            Reply::State(_) => Err(format!(
                "OpenEnv server {}: answered with its state where an observation was due",
                self.server
            )),
        }
    }

    pub(crate) async fn send(&mut self, message: Value) -> Result<Reply, String> {
        let server = self.server.clone();
        let op = message["type"].as_str().unwrap_or("message").to_string();
        let timeout = self.timeout;
        let io = async {
            self.stream
                .send(Ws::text(message.to_string()))
                .await
                .map_err(|e| format!("the session broke while sending `{op}`: {e}"))?;
            loop {
                match self.stream.next().await {
                    Some(Ok(Ws::Text(t))) => return parse_reply(t.as_str()),
                    Some(Ok(Ws::Ping(_) | Ws::Pong(_) | Ws::Frame(_))) => continue,
                    Some(Ok(Ws::Binary(b))) => {
                        return Err(format!(
                            "answered `{op}` with {} bytes of binary data, not the protocol's JSON",
                            b.len()
                        ))
                    }
                    Some(Ok(Ws::Close(_))) | None => {
                        return Err(format!(
                            "closed the session before answering `{op}` (did the server die?)"
                        ))
                    }
                    Some(Err(e)) => {
                        return Err(format!(
                            "the session broke while waiting for the answer to `{op}`: {e}"
                        ))
                    }
                }
            }
        };
        match tokio::time::timeout(timeout, io).await {
            Ok(Ok(r)) => Ok(r),
            Ok(Err(m)) => Err(format!("OpenEnv server {server}: {m}")),
            Err(_) => Err(format!(
                "OpenEnv server {server}: no answer to `{op}` within {timeout:?}"
            )),
        }
    }

    /// Ends the session politely (the server drops the environment either way), and removes
    /// the container that served it.
    pub(crate) async fn close(mut self) {
        let _ = tokio::time::timeout(Duration::from_secs(2), async {
            let _ = self
                .stream
                .send(Ws::text(json!({ "type": "close" }).to_string()))
                .await;
            let _ = self.stream.close(None).await;
        })
        .await;
        if let Some(s) = self.sandbox.take() {
            if let Err(e) = s.close().await {
                tracing::warn!("removing an OpenEnv container: {e}");
            }
        }
    }
}

//! One exec session per container: the runner (`trawl-sandbox-runner`, the same static binary
//! the `local` sandbox starts) is copied into the container once and started with one attached
//! `docker exec`; every command of the episode is then a framed request on that exec's stdin,
//! answered on its stdout, instead of an exec of its own.

use std::pin::Pin;
use std::time::Duration;

use bollard::container::LogOutput;
use futures_util::{Stream, StreamExt};
use tokio::io::AsyncWrite;
use trawl_core::sandbox::SandboxError;
use trawl_sandbox_runner_host::{CallError, Connection, Reply, Request, StderrTail};

/// Where the runner is put in the container.
pub const RUNNER_PATH: &str = "/.trawl-sandbox-runner";

type Replies = tokio_util::io::StreamReader<
    Pin<Box<dyn Stream<Item = std::io::Result<bytes::Bytes>> + Send>>,
    bytes::Bytes,
>;

/// A started runner in a container: the exec's stdin and stdout, and the tail of its stderr.
pub struct Session {
    conn: Connection<Pin<Box<dyn AsyncWrite + Send>>, Replies>,
    stderr: StderrTail,
}

impl Session {
    /// Opens a session on a started runner's exec: its `output` (stdout carries the replies,
    /// stderr the runner's own complaints) and `input`; waits (up to `api`) for its hello.
    pub async fn open(
        output: Pin<Box<dyn Stream<Item = Result<LogOutput, bollard::errors::Error>> + Send>>,
        input: Pin<Box<dyn AsyncWrite + Send>>,
        api: Duration,
    ) -> Result<Self, SandboxError> {
        // The exec's stdout carries the replies; its stderr, the runner's own complaints.
        let stderr = StderrTail::default();
        let tail = stderr.clone();
        let replies = output.filter_map(move |item| {
            let bytes = match item {
                Ok(LogOutput::StdErr { message }) => {
                    tail.push(&message);
                    None
                }
                Ok(other) => Some(Ok(other.into_bytes())),
                Err(e) => Some(Err(std::io::Error::other(e.to_string()))),
            };
            std::future::ready(bytes)
        });
        let replies: Pin<Box<dyn Stream<Item = std::io::Result<bytes::Bytes>> + Send>> =
            Box::pin(replies);
        match Connection::open(input, tokio_util::io::StreamReader::new(replies), api).await {
            Ok(conn) => Ok(Session { conn, stderr }),
            Err(e) => Err(failure(&stderr, e)),
        }
    }

    /// Runs one command. An error means the session is gone or no longer to be trusted; the
    /// caller drops it (which ends the exec: the runner, told by its closed stdin, kills what
    /// it runs).
    pub async fn call(&mut self, req: &Request) -> Result<Reply, SandboxError> {
        self.conn
            .call(req)
            .await
            .map_err(|e| failure(&self.stderr, e))
    }
}

fn failure(stderr: &StderrTail, e: CallError) -> SandboxError {
    let how = matches!(e, CallError::Io(_))
        .then(|| "a command may have killed it, or the container stopped".to_string());
    stderr.failure(&e, how)
}

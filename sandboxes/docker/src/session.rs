//! One exec session per container: the runner (`trawl-sandbox-runner`, the same static binary
//! the `local` sandbox starts) is copied into the container once and started with one attached
//! `docker exec`; every command of the episode is then a framed request on that exec's stdin,
//! answered on its stdout, instead of an exec of its own.

use std::pin::Pin;
use std::time::Duration;

use bollard::container::LogOutput;
use bollard::models::ExecConfig;
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
    /// Copies the runner in and starts it in the sandbox's folder with `env`; waits (up to
    /// `api`) for its hello.
    pub async fn start(
        sandbox: &crate::sandbox::DockerSandbox,
        env: Vec<String>,
        api: Duration,
    ) -> Result<Self, SandboxError> {
        if !sandbox
            .runner_inside
            .load(std::sync::atomic::Ordering::Relaxed)
        {
            let tar = crate::transfer::tar_file(
                RUNNER_PATH.trim_start_matches('/'),
                trawl_sandbox_runner_host::RUNNER,
                0o755,
            )
            .map_err(|e| crate::engine::infra("packing the sandbox runner", e))?;
            sandbox.upload_tar("/", tar).await?;
        }
        let (_, started) = sandbox
            .start_exec(ExecConfig {
                attach_stdin: Some(true),
                attach_stdout: Some(true),
                attach_stderr: Some(true),
                cmd: Some(vec![
                    RUNNER_PATH.to_string(),
                    "--workdir".into(),
                    sandbox.workdir().to_string(),
                ]),
                working_dir: Some(sandbox.workdir().to_string()),
                env: Some(env),
                ..Default::default()
            })
            .await?;
        let bollard::exec::StartExecResults::Attached { output, input } = started else {
            return Err(crate::engine::infra(
                "starting the sandbox runner",
                "the exec did not attach",
            ));
        };
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

//! trawl's side of the runner: the binary it carries, put on disk once, and one started runner
//! per episode (per network setting), spoken to in frames.

use std::path::{Path, PathBuf};
use std::time::Duration;

use tokio::io::AsyncReadExt;
use tokio::process::{Child, ChildStdin, ChildStdout};
use trawl_core::sandbox::SandboxError;
use trawl_sandbox_runner_host::{CallError, Connection, Reply, Request, StderrTail};

use trawl_sandbox_runner_host::RUNNER as RUNNER_BIN;

/// How long a runner may take to start and say hello (a sandbox being set up on a busy
/// machine); past it the sandbox has failed.
const START_TIMEOUT: Duration = Duration::from_secs(60);

/// Puts the runner at `<root>/trawl-runner-<uid>-<hash>/trawl-sandbox-runner` unless the same
/// binary is already there: a folder only this user may change, readable by the sandbox users.
pub fn install(root: &Path) -> Result<PathBuf, String> {
    use std::os::unix::fs::{MetadataExt, PermissionsExt};
    let euid = nix::unistd::geteuid().as_raw();
    let dir = root.join(format!(
        "trawl-runner-{euid}-{}",
        trawl_sandbox_runner_host::fingerprint()
    ));
    let path = dir.join("trawl-sandbox-runner");
    let usable = |dir: &Path| -> Result<bool, String> {
        let Ok(meta) = std::fs::symlink_metadata(dir) else {
            return Ok(false);
        };
        let file = std::fs::symlink_metadata(dir.join("trawl-sandbox-runner"));
        let ours = |m: &std::fs::Metadata| m.uid() == euid && m.mode() & 0o022 == 0;
        if !meta.is_dir() || !ours(&meta) || !file.as_ref().is_ok_and(|f| f.is_file() && ours(f)) {
            return Err(format!(
                "{} is in the way of trawl's sandbox runner (not a folder only this user may change); remove it",
                dir.display()
            ));
        }
        Ok(std::fs::read(dir.join("trawl-sandbox-runner")).is_ok_and(|b| b == RUNNER_BIN))
    };
    if usable(&dir)? {
        return Ok(path);
    }
    let io = |what: &str, e: std::io::Error| format!("cannot {what} the sandbox runner: {e}");
    let fresh = tempfile::Builder::new()
        .prefix(".trawl-runner-")
        .tempdir_in(root)
        .map_err(|e| io("make a folder for", e))?;
    let file = fresh.path().join("trawl-sandbox-runner");
    std::fs::write(&file, RUNNER_BIN).map_err(|e| io("write", e))?;
    std::fs::set_permissions(&file, std::fs::Permissions::from_mode(0o755))
        .map_err(|e| io("set the mode of", e))?;
    std::fs::set_permissions(fresh.path(), std::fs::Permissions::from_mode(0o755))
        .map_err(|e| io("set the mode of", e))?;
    match std::fs::rename(fresh.path(), &dir) {
        Ok(()) => {
            // Renamed away: nothing left for the guard to remove.
            let _ = fresh.keep();
            Ok(path)
        }
        // Another process put it there first (or an old, different one is there).
        Err(_) if usable(&dir)? => Ok(path),
        Err(_) => {
            std::fs::remove_dir_all(&dir).map_err(|e| io("replace", e))?;
            std::fs::rename(fresh.path(), &dir).map_err(|e| io("install", e))?;
            let _ = fresh.keep();
            Ok(path)
        }
    }
}

/// A started runner: its process (bubblewrap or the runner itself), its pipes, and the tail
/// of its own error output.
pub struct Runner {
    child: Child,
    conn: Connection<ChildStdin, ChildStdout>,
    stderr: StderrTail,
}

impl Runner {
    /// Starts `cmd` (which must run the runner with its pipes) and waits for its hello.
    pub async fn start(mut cmd: tokio::process::Command) -> Result<Self, SandboxError> {
        use std::process::Stdio;
        cmd.stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped());
        let mut child = cmd
            .spawn()
            .map_err(|e| SandboxError::Infra(format!("cannot start the sandbox: {e}")))?;
        let lost = || SandboxError::Infra("the sandbox runner's pipes are missing".into());
        let requests = child.stdin.take().ok_or_else(lost)?;
        let replies = child.stdout.take().ok_or_else(lost)?;
        let mut err_pipe = child.stderr.take().ok_or_else(lost)?;
        let stderr = StderrTail::default();
        let tail = stderr.clone();
        tokio::spawn(async move {
            let mut buf = [0u8; 1024];
            while let Ok(n) = err_pipe.read(&mut buf).await {
                if n == 0 {
                    break;
                }
                tail.push(&buf[..n]);
            }
        });
        match Connection::open(requests, replies, START_TIMEOUT).await {
            Ok(conn) => Ok(Runner {
                child,
                conn,
                stderr,
            }),
            Err(e) => {
                let _ = child.start_kill();
                Err(failure(&mut child, &stderr, e).await)
            }
        }
    }

    /// Runs one command. An error means the runner is gone or no longer to be trusted; the
    /// caller drops it.
    pub async fn call(&mut self, req: &Request) -> Result<Reply, SandboxError> {
        match self.conn.call(req).await {
            Ok(r) => Ok(r),
            Err(e) => Err(failure(&mut self.child, &self.stderr, e).await),
        }
    }

    /// Closes the request pipe: the runner kills what it still runs and exits.
    pub fn hang_up(&mut self) {
        self.conn.hang_up();
    }

    /// Kills the process trawl started (bubblewrap takes its namespaces down with it).
    pub fn kill(&mut self) {
        let _ = self.child.start_kill();
    }

    /// Waits (a bounded time) for it to be gone.
    pub async fn wait(&mut self, within: Duration) {
        let _ = tokio::time::timeout(within, self.child.wait()).await;
    }
}

/// What went wrong with a runner: the error, how its process ended and what it said.
async fn failure(child: &mut Child, stderr: &StderrTail, e: CallError) -> SandboxError {
    let status = match e {
        CallError::Io(_) => tokio::time::timeout(Duration::from_secs(2), child.wait())
            .await
            .ok()
            .and_then(Result::ok),
        _ => None,
    };
    stderr.failure(
        &e,
        status.map(|s| format!("it ended ({s}); a command may have killed it")),
    )
}

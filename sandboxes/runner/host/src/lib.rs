//! trawl's side of `trawl-sandbox-runner` (the crate one folder up), shared by the sandboxes
//! that start it once per episode (`local`, `docker`):
//! - [`RUNNER`]: the static executable, built for the target by this crate's build script, so
//!   every program linking a sandbox carries the runner built from the same source as itself;
//! - [`Connection`]: a started runner's request and reply pipes, whatever carries them (a
//!   child's pipes, a container exec's attached stream);
//! - [`request`] and [`result`]: a command and its limits as a request, a reply as trawl's
//!   `ExecResult`.

#![forbid(unsafe_code)]

use std::time::{Duration, Instant};

use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};
use trawl_core::sandbox::{
    classify_exit, ExecLimits, ExecOutcome, ExecResult, Limit, SandboxError, FLOOD_FACTOR,
};
pub use trawl_sandbox_runner::{
    Ending, LimitCounts, Reply, Request, Rlimits, SharedTmp, Tripped, HELLO,
};

/// The runner executable (statically linked, stripped).
pub const RUNNER: &[u8] = include_bytes!(env!("TRAWL_SANDBOX_RUNNER_BIN"));

/// A short name for this build of the runner, from its bytes: the same on every run of one
/// trawl, different when the runner changes.
pub fn fingerprint() -> String {
    use std::hash::{Hash, Hasher};
    let mut h = std::hash::DefaultHasher::new();
    RUNNER.hash(&mut h);
    format!("{:016x}", h.finish())
}

/// How long past a command's own limits its reply may be late before the runner is taken for
/// stuck.
pub const REPLY_SLACK: Duration = Duration::from_secs(60);

/// What went wrong talking to a runner. Any of them means the runner is gone or no longer to
/// be trusted: its sandbox drops it.
#[derive(Debug)]
pub enum CallError {
    /// A pipe broke or closed: the runner is gone (a command may have killed it).
    Io(std::io::Error),
    /// No reply this long past the command's own limits.
    Late(Duration),
    /// The reply could not be read.
    Damaged(String),
    /// The runner speaks another protocol.
    Version(String),
}

impl std::fmt::Display for CallError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            CallError::Io(e) => write!(f, "the sandbox runner stopped answering ({e})"),
            CallError::Late(d) => write!(
                f,
                "the sandbox runner gave no answer {} s past the command's limits",
                d.as_secs()
            ),
            CallError::Damaged(e) => write!(f, "the sandbox runner's reply is damaged: {e}"),
            CallError::Version(v) => write!(
                f,
                "the sandbox runner speaks `{v}`, trawl `{}`",
                String::from_utf8_lossy(HELLO)
            ),
        }
    }
}

/// The last few KiB a runner wrote to its own error output (it writes there only when it
/// fails), shared between the task that reads it and the code that reports the failure.
#[derive(Debug, Clone, Default)]
pub struct StderrTail(std::sync::Arc<std::sync::Mutex<Vec<u8>>>);

impl StderrTail {
    /// How much is kept.
    const KEEP: usize = 4096;

    pub fn push(&self, bytes: &[u8]) {
        let mut t = self.0.lock().unwrap_or_else(|p| p.into_inner());
        t.extend_from_slice(bytes);
        let over = t.len().saturating_sub(Self::KEEP);
        t.drain(..over);
    }

    /// `e` as a sandbox error: what went wrong, `how` the runner ended (when known), and what
    /// it said.
    pub fn failure(&self, e: &CallError, how: Option<String>) -> SandboxError {
        let said = {
            let t = self.0.lock().unwrap_or_else(|p| p.into_inner());
            String::from_utf8_lossy(&t).trim().to_string()
        };
        let mut m = e.to_string();
        if let Some(how) = how {
            m.push_str(&format!("; {how}"));
        }
        if !said.is_empty() {
            m.push_str(&format!("; it said: {said}"));
        }
        SandboxError::Infra(m)
    }
}

/// A started runner's pipes: requests go to `W`, replies come from `R`.
pub struct Connection<W, R> {
    requests: Option<W>,
    replies: R,
}

impl<W: AsyncWrite + Unpin, R: AsyncRead + Unpin> Connection<W, R> {
    /// Waits (up to `within`) for the runner's hello.
    pub async fn open(requests: W, replies: R, within: Duration) -> Result<Self, CallError> {
        let mut c = Connection {
            requests: Some(requests),
            replies,
        };
        match tokio::time::timeout(within, c.read_frame()).await {
            Ok(Ok(hello)) if hello == HELLO => Ok(c),
            Ok(Ok(other)) => Err(CallError::Version(
                String::from_utf8_lossy(&other).into_owned(),
            )),
            Ok(Err(e)) => Err(CallError::Io(e)),
            Err(_) => Err(CallError::Late(within)),
        }
    }

    async fn read_frame(&mut self) -> std::io::Result<Vec<u8>> {
        let mut len = [0u8; 4];
        self.replies.read_exact(&mut len).await?;
        let mut body = vec![0u8; trawl_sandbox_runner::frame_len(len)?];
        self.replies.read_exact(&mut body).await?;
        Ok(body)
    }

    /// Runs one command.
    pub async fn call(&mut self, req: &Request) -> Result<Reply, CallError> {
        let body = req.encode();
        let mut frame = Vec::with_capacity(4 + body.len());
        frame.extend_from_slice(&(body.len() as u32).to_le_bytes());
        frame.extend_from_slice(&body);
        let requests = self
            .requests
            .as_mut()
            .ok_or_else(|| CallError::Io(std::io::Error::other("the request pipe is closed")))?;
        requests.write_all(&frame).await.map_err(CallError::Io)?;
        requests.flush().await.map_err(CallError::Io)?;
        let limit = Duration::from_millis(
            req.wall_ms
                .saturating_add(req.grace_ms)
                .saturating_add(req.drain_ms),
        ) + REPLY_SLACK;
        let body = match tokio::time::timeout(limit, self.read_frame()).await {
            Ok(Ok(body)) => body,
            Ok(Err(e)) => return Err(CallError::Io(e)),
            Err(_) => return Err(CallError::Late(REPLY_SLACK)),
        };
        Reply::decode(&body).map_err(CallError::Damaged)
    }

    /// Closes the request pipe: the runner kills what it still runs and exits.
    pub fn hang_up(&mut self) {
        self.requests = None;
    }
}

/// How a sandbox runs its commands, beyond each command's own limits.
#[derive(Debug, Clone)]
pub struct Policy {
    /// Between SIGTERM and SIGKILL when a command runs out of time.
    pub grace: Duration,
    /// How long a command's pipes may stay open once its group is gone (see [`Request`]).
    pub drain: Duration,
    /// The most the working folder may hold, in bytes.
    pub disk_cap: Option<u64>,
    /// Whether the runner may kill everything it can signal after each command.
    pub kill_all: bool,
    /// Whether the process rlimit is set (where the kernel counts per sandbox and no pids
    /// cgroup bounds the sandbox); one more than the command's, for the runner itself.
    pub processes: bool,
    /// Whether the address-space rlimit is set (elsewhere a memory cgroup, the container's or
    /// the sandbox's own, bounds memory).
    pub memory: bool,
    /// Capped filesystems whose filling counts as the disk limit (see [`Request::watch_full`]).
    pub watch_full: Vec<std::path::PathBuf>,
    /// The fallback's cap on what the sandbox's user keeps in the shared temporary folders.
    pub shared_tmp: Option<SharedTmp>,
    /// Cgroup folders, as the runner sees them, whose counters it reads around each command.
    pub cgroups: Vec<std::path::PathBuf>,
}

/// The request for `command` under `limits`.
pub fn request(command: &str, limits: &ExecLimits, policy: &Policy) -> Request {
    let ms = |d: Duration| d.as_millis().min(u128::from(u64::MAX)) as u64;
    Request {
        command: command.as_bytes().to_vec(),
        stdin: Vec::new(),
        rlimits: Rlimits {
            cpu_secs: limits.cpu_secs,
            memory_bytes: policy
                .memory
                .then(|| limits.memory_mb.saturating_mul(1 << 20)),
            file_size_bytes: limits.file_size_mb.saturating_mul(1 << 20),
            open_files: limits.open_files,
            processes: policy.processes.then(|| limits.processes.saturating_add(1)),
        },
        wall_ms: ms(limits.wall_time()),
        grace_ms: ms(policy.grace),
        drain_ms: ms(policy.drain),
        output_cap: limits.output_bytes as u64,
        flood: limits
            .output_bytes
            .saturating_mul(FLOOD_FACTOR)
            .max(16 << 20) as u64,
        disk_cap: policy.disk_cap,
        kill_all: policy.kill_all,
        watch_full: bytes_of(&policy.watch_full),
        shared_tmp: policy.shared_tmp,
        cgroups: bytes_of(&policy.cgroups),
    }
}

fn bytes_of(paths: &[std::path::PathBuf]) -> Vec<Vec<u8>> {
    use std::os::unix::ffi::OsStrExt;
    paths
        .iter()
        .map(|p| p.as_os_str().as_bytes().to_vec())
        .collect()
}

/// The result trawl reports for a runner's reply; a runner that could not run the command is a
/// sandbox error.
pub fn result(reply: Reply, started: Instant) -> Result<ExecResult, SandboxError> {
    let stdout_truncated = reply.stdout.truncated();
    let stderr_truncated = reply.stderr.truncated();
    let text = |b: Vec<u8>| match String::from_utf8(b) {
        Ok(s) => s,
        Err(e) => String::from_utf8_lossy(e.as_bytes()).into_owned(),
    };
    let stdout = text(reply.stdout.kept);
    let stderr = text(reply.stderr.kept);
    let outcome = match reply.ending {
        Ending::Exited(code) => classify_exit(None, Some(code), &stderr),
        Ending::Signaled(sig) => classify_exit(Some(sig), None, &stderr),
        Ending::TimedOut => ExecOutcome::TimedOut,
        Ending::Flooded => ExecOutcome::LimitExceeded {
            limit: Limit::Output,
        },
        Ending::DiskFull => ExecOutcome::LimitExceeded { limit: Limit::Disk },
        Ending::Failed(why) => return Err(SandboxError::Infra(why)),
    };
    let outcome = with_tripped(outcome, reply.tripped);
    Ok(ExecResult {
        outcome,
        stdout,
        stderr,
        stdout_truncated,
        stderr_truncated,
        duration_ms: started.elapsed().as_millis() as u64,
    })
}

/// `outcome`, unless the command ran into a limit the kernel or the runner recorded: then that
/// limit, even when the command caught the failure and exited 0, or died of the OOM killer's
/// signal. The one that explains the most comes first: memory (an OOM kill looks like any
/// SIGKILL), then processes, then disk. An outcome that already names a limit, or a timeout,
/// is kept.
pub fn with_tripped(outcome: ExecOutcome, tripped: Tripped) -> ExecOutcome {
    let limit = if tripped.memory {
        Limit::Memory
    } else if tripped.processes {
        Limit::Processes
    } else if tripped.disk {
        Limit::Disk
    } else {
        return outcome;
    };
    match outcome {
        ExecOutcome::Exited { .. } | ExecOutcome::Signaled { .. } => {
            ExecOutcome::LimitExceeded { limit }
        }
        other => other,
    }
}

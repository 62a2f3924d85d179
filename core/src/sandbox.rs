//! The `Sandbox` role: where model-written commands run, behind an OS boundary. Backends (a
//! local process group with rlimits and namespaces, Docker containers) live in their own crates.

use std::time::Duration;

use async_trait::async_trait;
use serde::{Deserialize, Serialize};

/// Bounds on one execution. Hitting one ends the whole process tree, never only its leader.
/// Spelled for config files: `[environments.limits] wall_time_secs = 10`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct ExecLimits {
    /// Wall-clock time, after which the process tree is killed (`TimedOut`).
    pub wall_time_secs: f64,
    /// CPU seconds (`RLIMIT_CPU`).
    pub cpu_secs: u64,
    /// Address space in MiB (`RLIMIT_AS`); allocations past it fail.
    pub memory_mb: u64,
    /// Processes (`RLIMIT_NPROC`), where the kernel counts them per sandbox.
    pub processes: u64,
    /// Largest file the command may write, in MiB (`RLIMIT_FSIZE`).
    pub file_size_mb: u64,
    /// Open files (`RLIMIT_NOFILE`).
    pub open_files: u64,
    /// Bytes kept per output stream; the rest is dropped and the stream marked truncated.
    pub output_bytes: usize,
    /// Network access; off unless a config opts in.
    pub network: bool,
}

impl Default for ExecLimits {
    fn default() -> Self {
        ExecLimits {
            wall_time_secs: 30.0,
            cpu_secs: 30,
            memory_mb: 1024,
            processes: 64,
            file_size_mb: 64,
            open_files: 256,
            output_bytes: 1 << 20,
            network: false,
        }
    }
}

impl ExecLimits {
    pub fn wall_time(&self) -> Duration {
        crate::values::secs(self.wall_time_secs.max(0.001))
    }

    /// Checks the values make sense; names the first field that does not.
    pub fn validate(&self) -> Result<(), (&'static str, String)> {
        crate::values::check_secs(self.wall_time_secs, false).map_err(|m| ("wall_time_secs", m))?;
        for (field, v) in [
            ("cpu_secs", self.cpu_secs),
            ("memory_mb", self.memory_mb),
            ("processes", self.processes),
            ("file_size_mb", self.file_size_mb),
            ("open_files", self.open_files),
        ] {
            if v == 0 {
                return Err((field, "must be at least 1".into()));
            }
        }
        if self.memory_mb < 32 {
            return Err((
                "memory_mb",
                "below 32 MiB not even an interpreter starts; give at least 32".into(),
            ));
        }
        if self.output_bytes == 0 {
            return Err(("output_bytes", "must be at least 1".into()));
        }
        Ok(())
    }
}

/// The bound a command ran into.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Limit {
    Cpu,
    Memory,
    Processes,
    FileSize,
    /// It flooded its output far past what is kept; killed so that it stops.
    Output,
    /// It filled its working folder past the sandbox's disk cap; killed so that it stops.
    Disk,
}

impl Limit {
    pub fn as_str(self) -> &'static str {
        match self {
            Limit::Cpu => "cpu",
            Limit::Memory => "memory",
            Limit::Processes => "processes",
            Limit::FileSize => "file_size",
            Limit::Output => "output",
            Limit::Disk => "disk",
        }
    }
}

/// How one execution ended. Outcomes are told apart, never folded into an exit code.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "kind", rename_all = "snake_case")]
pub enum ExecOutcome {
    /// It exited by itself with this code.
    Exited { code: i32 },
    /// A signal that no limit explains ended it.
    Signaled { signal: i32 },
    /// It ran past the wall-clock limit and its process tree was killed.
    TimedOut,
    /// It ran into a resource limit.
    LimitExceeded { limit: Limit },
}

/// What one execution did.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ExecResult {
    pub outcome: ExecOutcome,
    pub stdout: String,
    pub stderr: String,
    #[serde(default)]
    pub stdout_truncated: bool,
    #[serde(default)]
    pub stderr_truncated: bool,
    pub duration_ms: u64,
}

impl ExecResult {
    /// The exit code, when it exited by itself.
    pub fn exit_code(&self) -> Option<i32> {
        match self.outcome {
            ExecOutcome::Exited { code } => Some(code),
            _ => None,
        }
    }

    /// Exited with code 0.
    pub fn success(&self) -> bool {
        self.exit_code() == Some(0)
    }

    pub fn truncated(&self) -> bool {
        self.stdout_truncated || self.stderr_truncated
    }

    /// One line for a human or a model: "exit 1", "timed out after 10 s", "memory limit".
    pub fn describe(&self) -> String {
        let mut s = match self.outcome {
            ExecOutcome::Exited { code } => format!("exit code {code}"),
            ExecOutcome::Signaled { signal } => format!("killed by signal {signal}"),
            ExecOutcome::TimedOut => "timed out".to_string(),
            ExecOutcome::LimitExceeded { limit } => format!("{} limit exceeded", limit.as_str()),
        };
        if self.truncated() {
            s.push_str(", output truncated");
        }
        s
    }
}

/// Past this many times the kept output, a command that is still writing is killed: its output
/// is being thrown away anyway, and it would otherwise burn its whole time limit.
pub const FLOOD_FACTOR: usize = 64;

/// One output stream as it is read: at most `cap` bytes are kept, the rest only counted, so
/// that a command printing gigabytes costs no memory.
#[derive(Debug)]
pub struct CappedOutput {
    kept: Vec<u8>,
    cap: usize,
    seen: usize,
}

impl CappedOutput {
    pub fn new(cap: usize) -> Self {
        CappedOutput {
            kept: Vec::with_capacity(cap.min(64 << 10)),
            cap,
            seen: 0,
        }
    }

    pub fn push(&mut self, bytes: &[u8]) {
        self.seen = self.seen.saturating_add(bytes.len());
        let room = self.cap.saturating_sub(self.kept.len());
        self.kept.extend_from_slice(&bytes[..bytes.len().min(room)]);
    }

    /// Bytes that went by, kept or not.
    pub fn seen(&self) -> usize {
        self.seen
    }

    pub fn truncated(&self) -> bool {
        self.seen > self.kept.len()
    }

    /// The kept bytes as text (invalid UTF-8 replaced).
    pub fn into_string(self) -> String {
        match String::from_utf8(self.kept) {
            Ok(s) => s,
            Err(e) => String::from_utf8_lossy(e.as_bytes()).into_owned(),
        }
    }
}

/// What a failed command's own error output says about the limit it ran into. Address-space,
/// process-count and (for programs that ignore SIGXFSZ, like Python) file-size limits make a call
/// fail rather than kill the process, so the process reports them itself.
pub fn limit_from_stderr(stderr: &str) -> Option<Limit> {
    let mut from = stderr.len().saturating_sub(4096);
    while !stderr.is_char_boundary(from) {
        from += 1;
    }
    let tail = stderr[from..].to_ascii_lowercase();
    if tail.contains("memoryerror")
        || tail.contains("cannot allocate memory")
        || tail.contains("std::bad_alloc")
        || tail.contains("out of memory")
    {
        Some(Limit::Memory)
    } else if tail.contains("cannot fork")
        || tail.contains("can't fork")
        || (tail.contains("resource temporarily unavailable")
            && (tail.contains("fork")
                || tail.contains("blockingioerror")
                || tail.contains("thread")))
    {
        Some(Limit::Processes)
    } else if tail.contains("file too large") {
        Some(Limit::FileSize)
    } else {
        None
    }
}

const SIGXCPU: i32 = 24;
const SIGXFSZ: i32 = 25;

/// The outcome of a command that ended by itself (not by the wall-clock limit or an output
/// flood): killed by `signal`, or exited with `code`. A shell (or bubblewrap, or `timeout`)
/// reports a child killed by signal N as exit code 128 + N.
pub fn classify_exit(signal: Option<i32>, code: Option<i32>, stderr: &str) -> ExecOutcome {
    let reported = signal.or_else(|| code.filter(|c| *c > 128 && *c < 160).map(|c| c - 128));
    match reported {
        Some(SIGXCPU) => return ExecOutcome::LimitExceeded { limit: Limit::Cpu },
        Some(SIGXFSZ) => {
            return ExecOutcome::LimitExceeded {
                limit: Limit::FileSize,
            }
        }
        _ => {}
    }
    if let Some(sig) = signal {
        return ExecOutcome::Signaled { signal: sig };
    }
    // A limit the command reported running into counts even when it went on to exit 0 (a shell
    // whose forks failed still ends its pipeline normally).
    if let Some(limit) = limit_from_stderr(stderr) {
        return ExecOutcome::LimitExceeded { limit };
    }
    ExecOutcome::Exited {
        code: code.unwrap_or(-1),
    }
}

#[derive(Debug, Clone, PartialEq, thiserror::Error, Serialize, Deserialize)]
#[serde(tag = "kind", content = "detail", rename_all = "snake_case")]
pub enum SandboxError {
    /// The sandbox itself failed (spawn failed, container gone): an infrastructure error, never
    /// the model's fault.
    #[error("sandbox failure: {0}")]
    Infra(String),
    /// The sandbox cannot give the isolation the config asks for.
    #[error("{0}")]
    Unavailable(String),
    #[error("path `{0}` is outside the sandbox")]
    OutsidePath(String),
}

/// An isolated place to run commands and keep files, owned by one episode.
#[async_trait]
pub trait Sandbox: Send + Sync {
    /// Runs `command` with `/bin/sh -c` in the sandbox's working directory.
    async fn exec(&self, command: &str, limits: &ExecLimits) -> Result<ExecResult, SandboxError>;
    /// Reads a file; relative paths are inside the working directory.
    async fn read_file(&self, path: &str) -> Result<Vec<u8>, SandboxError>;
    /// Writes a file; relative paths are inside the working directory.
    async fn write_file(&self, path: &str, contents: &[u8]) -> Result<(), SandboxError>;
    /// Tears the sandbox down; bounded in time, never blocks the run.
    async fn close(&self) -> Result<(), SandboxError>;
    /// The working directory as the sandbox's commands see it.
    fn working_dir(&self) -> String;
    /// Where trawl reaches `port` of a sandbox made with [`SandboxSpec::serve`], as
    /// `host:port`; `None` where the backend offers no way in.
    fn endpoint(&self, port: u16) -> Option<String> {
        let _ = port;
        None
    }
    /// Freezes what the sandbox holds (its working folder; a container backend, its whole
    /// filesystem) as a [`Snapshot`] and closes the sandbox. New sandboxes then start from it
    /// with [`SandboxBackend::view`], cheaply, each with changes of its own. A backend without
    /// snapshots answers `Unavailable` and leaves the sandbox as it was.
    async fn snapshot(&self) -> Result<Snapshot, SandboxError> {
        Err(SandboxError::Unavailable(
            "this sandbox cannot be frozen as a snapshot".into(),
        ))
    }
}

/// A sandbox's state frozen by [`Sandbox::snapshot`]: a name only the backend that made it
/// understands. It lives until [`SandboxBackend::drop_snapshot`] or the run's end.
#[derive(Debug, Clone, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub struct Snapshot(pub String);

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn stderr_reports_are_classified() {
        assert_eq!(
            limit_from_stderr("Traceback...\nMemoryError\n"),
            Some(Limit::Memory)
        );
        assert_eq!(
            limit_from_stderr("BlockingIOError: [Errno 11] Resource temporarily unavailable"),
            Some(Limit::Processes)
        );
        assert_eq!(
            limit_from_stderr("OSError: [Errno 27] File too large"),
            Some(Limit::FileSize)
        );
        assert_eq!(limit_from_stderr("AssertionError"), None);
        // A multi-byte character across the 4 KiB mark does not panic.
        let long = format!("é{}", "x".repeat(4095));
        assert_eq!(limit_from_stderr(&long), None);
    }

    #[test]
    fn exits_are_classified() {
        assert_eq!(
            classify_exit(None, Some(152), ""),
            ExecOutcome::LimitExceeded { limit: Limit::Cpu }
        );
        assert_eq!(
            classify_exit(Some(9), None, ""),
            ExecOutcome::Signaled { signal: 9 }
        );
        assert_eq!(
            classify_exit(None, Some(3), ""),
            ExecOutcome::Exited { code: 3 }
        );
    }

    #[test]
    fn output_is_capped_and_counted() {
        let mut c = CappedOutput::new(4);
        c.push(b"abc");
        assert!(!c.truncated());
        c.push(b"defg");
        assert_eq!(c.seen(), 7);
        assert!(c.truncated());
        assert_eq!(c.into_string(), "abcd");
    }
}

/// What an environment asks of a backend for one sandbox.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct SandboxSpec {
    /// The image a container backend starts (`None`: the one its config names).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub image: Option<String>,
    /// The folder commands run in and relative paths resolve against (`None`: the backend's
    /// own).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub workdir: Option<String>,
    /// Labels for what the backend creates (the run's name), so that leftovers can be found.
    #[serde(default, skip_serializing_if = "std::collections::BTreeMap::is_empty")]
    pub labels: std::collections::BTreeMap<String, String>,
    /// Run the image's own command (a server) instead of an idle one, and make this port of the
    /// sandbox reachable from trawl at [`Sandbox::endpoint`]. Only backends that run images
    /// serve; the server gets no way out to other networks unless the backend's config opts in.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub serve: Option<u16>,
}

/// A sandbox backend, the `sandbox` role: it makes a fresh [`Sandbox`] for each episode.
/// Environments see only this trait and [`Sandbox`] (commands, files, close), never a backend's
/// crate, so a backend that runs sandboxes on another machine fits without changing them.
/// Config: `sandbox = { type = "local", ... }` in an environment that runs commands.
#[async_trait]
pub trait SandboxBackend: Send + Sync {
    /// How its sandboxes are isolated, for the run's manifest and `trawl check`.
    fn describe(&self) -> serde_json::Value;
    /// A fresh sandbox, its own working folder empty.
    async fn create(&self, spec: &SandboxSpec) -> Result<Box<dyn Sandbox>, SandboxError>;
    /// Whether it starts sandboxes from images (`SandboxSpec::image`), so that what a task
    /// needs comes inside the image rather than being copied in.
    fn runs_images(&self) -> bool {
        false
    }
    /// Of `images`, those it lacks (it never fetches one; empty where images mean nothing).
    async fn missing_images(&self, images: &[String]) -> Result<Vec<String>, SandboxError> {
        let _ = images;
        Ok(Vec::new())
    }
    /// Removes whatever this run's sandboxes left behind (at the end of a run), its snapshots
    /// included.
    async fn shutdown(&self) {}
    /// A fresh sandbox that starts as a copy-on-write view of `snapshot` (made by one of this
    /// backend's sandboxes): what it changes is its own; the snapshot and every other view
    /// never see it. `spec` says the rest as for [`SandboxBackend::create`] (its image is
    /// the snapshot's). A backend without snapshots answers `Unavailable`.
    async fn view(
        &self,
        snapshot: &Snapshot,
        spec: &SandboxSpec,
    ) -> Result<Box<dyn Sandbox>, SandboxError> {
        let _ = (snapshot, spec);
        Err(SandboxError::Unavailable(
            "this sandbox backend has no snapshots".into(),
        ))
    }
    /// Frees a snapshot; views already started from it keep what they need.
    async fn drop_snapshot(&self, snapshot: &Snapshot) {
        let _ = snapshot;
    }
}

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
        Duration::from_secs_f64(self.wall_time_secs.max(0.001))
    }

    /// Checks the values make sense; names the first field that does not.
    pub fn validate(&self) -> Result<(), (&'static str, String)> {
        if !(self.wall_time_secs.is_finite() && self.wall_time_secs > 0.0) {
            return Err((
                "wall_time_secs",
                "must be a positive number of seconds".into(),
            ));
        }
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
}

impl Limit {
    pub fn as_str(self) -> &'static str {
        match self {
            Limit::Cpu => "cpu",
            Limit::Memory => "memory",
            Limit::Processes => "processes",
            Limit::FileSize => "file_size",
            Limit::Output => "output",
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

#[derive(Debug, thiserror::Error)]
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
}

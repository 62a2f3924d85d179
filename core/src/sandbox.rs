//! The `Sandbox` role: where model-written commands run, behind an OS boundary. Backends (a
//! local process group with rlimits and namespaces, Docker containers) live in their own crates.

use std::time::Duration;

use async_trait::async_trait;
use serde::{Deserialize, Serialize};

/// Bounds on one execution. Hitting one kills the whole process tree.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct ExecLimits {
    pub wall_time: Duration,
    pub cpu_seconds: u64,
    pub memory_bytes: u64,
    pub processes: u64,
    pub file_size_bytes: u64,
    /// Bytes kept per output stream; the rest is dropped and `truncated` set.
    pub output_bytes: usize,
    /// Network access; off unless a config opts in.
    pub network: bool,
}

impl Default for ExecLimits {
    fn default() -> Self {
        ExecLimits {
            wall_time: Duration::from_secs(60),
            cpu_seconds: 60,
            memory_bytes: 2 << 30,
            processes: 256,
            file_size_bytes: 256 << 20,
            output_bytes: 1 << 20,
            network: false,
        }
    }
}

/// What one execution did. Outcomes are told apart, never folded into the exit code.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ExecResult {
    pub exit_code: Option<i32>,
    pub stdout: String,
    pub stderr: String,
    pub truncated: bool,
    pub timed_out: bool,
    pub oom_killed: bool,
    pub duration: Duration,
}

#[derive(Debug, thiserror::Error)]
pub enum SandboxError {
    /// The sandbox itself failed (container gone, spawn failed): an infrastructure error.
    #[error("sandbox failure: {0}")]
    Infra(String),
    #[error("path `{0}` is outside the sandbox")]
    OutsidePath(String),
}

/// An isolated place to run commands and keep files, owned by one episode.
#[async_trait]
pub trait Sandbox: Send + Sync {
    async fn exec(&self, command: &str, limits: &ExecLimits) -> Result<ExecResult, SandboxError>;
    async fn read_file(&self, path: &str) -> Result<Vec<u8>, SandboxError>;
    async fn write_file(&self, path: &str, contents: &[u8]) -> Result<(), SandboxError>;
    /// Tears the sandbox down; bounded in time, never blocks the run.
    async fn close(&self) -> Result<(), SandboxError>;
}

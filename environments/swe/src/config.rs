//! The `swe` environment's settings (the `[[environments]] type = "swe"` table, which its
//! `swe_tests` evaluator takes too) and their defaults.

use std::path::PathBuf;

use serde::{Deserialize, Serialize};
use serde_json::{json, Value};
use trawl_core::sandbox::ExecLimits;

use crate::instance::InstanceFormat;

/// Where bundled repositories sit in their images, as in SWE-bench's images (the default
/// `workdir`). `trawl swe build-images` builds them.
pub const TESTBED: &str = "/testbed";

/// The pytest invocation the evaluator runs (the test ids follow).
pub const DEFAULT_TEST_CMD: &str = "python3 -m pytest -rA --tb=no -p no:cacheprovider";

fn docker_default() -> Value {
    json!({ "type": "docker" })
}
fn agent_limits() -> ExecLimits {
    ExecLimits {
        wall_time_secs: 60.0,
        cpu_secs: 120,
        memory_mb: 2048,
        processes: 256,
        ..ExecLimits::default()
    }
}
fn testbed() -> String {
    TESTBED.into()
}

/// `[[environments]] type = "swe"`; its evaluator `swe_tests` takes the same table (and
/// ignores the task selection).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SweConfig {
    /// `builtin` (the six bundled instances) or `none` (only `files`).
    #[serde(default = "builtin")]
    pub dataset: String,
    /// Instance files (JSONL, a JSON array or Parquet) in the SWE-smith / SWE-bench shape.
    #[serde(default)]
    pub files: Vec<String>,
    /// Another project's field names, for files in its shape: trawl's field → the file's
    /// (a dotted path, numbers for list entries), e.g. `{ question = "problem", answer =
    /// "reward_model.ground_truth" }`.
    #[serde(default)]
    #[serde(skip_serializing_if = "std::collections::BTreeMap::is_empty")]
    pub fields: trawl_core::task::FieldMap,
    /// Only these instance ids.
    #[serde(default)]
    pub instance_ids: Vec<String>,
    #[serde(default)]
    pub limit: Option<usize>,
    /// `{ type = "docker", ... }` (default) or `{ type = "local", ... }`.
    #[serde(default = "docker_default")]
    pub sandbox: Value,
    /// Limits on each agent command.
    #[serde(default = "agent_limits")]
    pub limits: ExecLimits,
    /// The repository's folder in the container (ignored by `local`).
    #[serde(default = "testbed")]
    pub workdir: String,
    /// Where the repositories of instances that trawl does not bundle live for the `local`
    /// sandbox: `<repos_dir>/<owner>__<name>` must be a git repository.
    #[serde(default)]
    pub repos_dir: Option<PathBuf>,
    #[serde(default)]
    pub format: InstanceFormat,
    /// Give the agent a one-commit history (the default), so the bug cannot be read from git.
    #[serde(default = "yes")]
    pub hide_history: bool,
    /// Include files the agent created in the submission (`false`: only changes to files the
    /// repository already had).
    #[serde(default = "yes")]
    pub new_files: bool,
    /// Paths left out of the submission, as git pathspecs (`reproduce*.py`, `scratch/`).
    #[serde(default)]
    pub exclude: Vec<String>,
    /// The test command of the evaluator; the test ids are appended.
    #[serde(default = "test_cmd")]
    pub test_cmd: String,
    /// Seconds the evaluator's test run may take.
    #[serde(default = "eval_timeout")]
    pub eval_timeout_secs: f64,
}

impl Default for SweConfig {
    fn default() -> Self {
        serde_json::from_value(json!({})).unwrap_or_else(|_| unreachable!())
    }
}

fn builtin() -> String {
    "builtin".into()
}
fn yes() -> bool {
    true
}
fn test_cmd() -> String {
    DEFAULT_TEST_CMD.into()
}
fn eval_timeout() -> f64 {
    600.0
}

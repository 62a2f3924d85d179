//! The `openenv` environment's settings: the `[[environments]] type = "openenv"` table, its
//! tasks as resets (inline, or read from a JSON-lines file), and the action and reward modes.

use std::path::Path;

use serde::Deserialize;
use serde_json::{json, Map, Value};
use trawl_core::Task;

/// `[[environments]] type = "openenv"`.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct OpenEnvConfig {
    /// The servers' base URLs (`http://host:8000`, `https://…`); episodes spread over them.
    #[serde(default)]
    pub servers: Vec<String>,
    /// An image whose own command serves the environment: one container per episode, through
    /// the sandbox role (instead of `servers`).
    #[serde(default)]
    pub image: Option<String>,
    /// The port the image's server listens on.
    #[serde(default = "default_port")]
    pub port: u16,
    /// The sandbox backend that starts the image: `{ type = "docker", memory_mb = 2048, … }`.
    #[serde(default = "default_sandbox")]
    pub sandbox: Value,
    /// Longest wait for a started container's server to answer `/health`.
    #[serde(default = "default_startup")]
    pub startup_timeout_secs: f64,
    /// Episodes one server runs at once: its `max_concurrent_envs`.
    #[serde(default = "one")]
    pub sessions_per_server: usize,
    /// Tasks as resets: `[{ id = "easy-1", reset = { seed = 1, level = "easy" } }]`.
    #[serde(default)]
    pub tasks: Vec<TaskSpec>,
    /// A JSON-lines file of tasks shaped like `tasks`, relative to the config file.
    #[serde(default)]
    pub tasks_file: Option<String>,
    /// N tasks `seed-0` … `seed-{N-1}`, each a reset with that seed.
    #[serde(default)]
    pub seeds: Option<u64>,
    /// How an answer becomes an action: `text` puts it in `action_field`; `json` reads the
    /// action object from it (the model writes the whole action).
    #[serde(default)]
    pub action_format: ActionFormat,
    /// The action's field the answer goes in, with `action_format = "text"`.
    #[serde(default = "default_action_field")]
    pub action_field: String,
    /// The observation's field shown to the model; the whole observation as JSON when unset.
    #[serde(default)]
    pub observation_field: Option<String>,
    /// Text put before the first observation.
    #[serde(default)]
    pub instruction: Option<String>,
    /// How the evaluation's reward comes from the step rewards: the `last` one, or their `sum`.
    #[serde(default)]
    pub reward: RewardMode,
    /// The reward from which a rollout counts as a success.
    #[serde(default = "one_f")]
    pub success_threshold: f64,
    /// Longest wait for the server's answer to one message (connect, reset, step, state).
    #[serde(default = "default_timeout")]
    pub timeout_secs: f64,
}

fn one() -> usize {
    1
}
pub(crate) fn one_f() -> f64 {
    1.0
}
fn default_action_field() -> String {
    "message".into()
}
fn default_timeout() -> f64 {
    60.0
}
fn default_port() -> u16 {
    8000
}
fn default_sandbox() -> Value {
    json!({ "type": "docker" })
}
fn default_startup() -> f64 {
    120.0
}

/// One task: an id and the reset's keyword arguments.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TaskSpec {
    pub id: String,
    #[serde(default)]
    pub reset: Map<String, Value>,
}

#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum ActionFormat {
    #[default]
    Text,
    Json,
}

#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Deserialize, serde::Serialize)]
#[serde(rename_all = "snake_case")]
pub enum RewardMode {
    #[default]
    Last,
    Sum,
}

/// Reads a JSON-lines task file; the error names the line.
pub(crate) fn load_tasks(path: &Path) -> Result<Vec<Task>, String> {
    let text = std::fs::read_to_string(path)
        .map_err(|e| format!("cannot read {}: {e}", path.display()))?;
    let mut out = Vec::new();
    for (i, line) in text.lines().enumerate() {
        if line.trim().is_empty() {
            continue;
        }
        let t: TaskSpec = serde_json::from_str(line).map_err(|e| {
            format!(
                "{}:{}: {e}\n  hint: each line is {{\"id\": \"…\", \"reset\": {{…}}}}",
                path.display(),
                i + 1
            )
        })?;
        out.push(Task::new(&t.id, json!({ "reset": t.reset })));
    }
    Ok(out)
}

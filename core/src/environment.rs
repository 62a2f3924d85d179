//! The `Environment` role: a family of tasks, and the episodes that play one task out.

use async_trait::async_trait;
use serde::{Deserialize, Serialize};
use serde_json::Value;

use crate::message::{Message, ToolCall, ToolSchema};
use crate::task::Task;

/// The kinds of action an environment accepts. A scaffold states which kinds it needs, and the
/// engine refuses a pair that cannot work before any episode starts.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct ActionSpace {
    /// A final answer in plain text.
    pub answer: bool,
    /// Native tool calls over the episode's tools.
    pub tool_calls: bool,
    /// Shell commands.
    pub shell: bool,
    /// Messages to a simulated user.
    pub user_messages: bool,
}

impl ActionSpace {
    /// The kinds in `need` that `self` lacks, by name.
    pub fn missing(&self, need: &ActionSpace) -> Vec<&'static str> {
        let mut out = Vec::new();
        if need.answer && !self.answer {
            out.push("answer");
        }
        if need.tool_calls && !self.tool_calls {
            out.push("tool_calls");
        }
        if need.shell && !self.shell {
            out.push("shell");
        }
        if need.user_messages && !self.user_messages {
            out.push("user_messages");
        }
        out
    }
}

/// What the agent does in one step.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "type", rename_all = "snake_case")]
pub enum Action {
    /// A final (or candidate) answer.
    Answer { text: String },
    /// A call of one of the episode's tools.
    ToolCall { call: ToolCall },
    /// A shell command.
    Shell { command: String },
    /// A message to the simulated user.
    Message { text: String },
}

/// What the environment answers.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct Observation {
    pub content: String,
    /// The episode is over: no further action is taken.
    pub done: bool,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub exit_code: Option<i32>,
}

impl Observation {
    pub fn text(content: impl Into<String>) -> Self {
        Observation {
            content: content.into(),
            done: false,
            exit_code: None,
        }
    }

    pub fn finished(content: impl Into<String>) -> Self {
        Observation {
            content: content.into(),
            done: true,
            exit_code: None,
        }
    }
}

/// What an episode leaves behind for the evaluators.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct Artifacts {
    /// The final answer or patch.
    pub submission: Option<String>,
    /// Anything else (final database state, diff statistics, ...).
    #[serde(default)]
    pub extra: Value,
    /// The reward of each step (action) of the episode, in order, when the environment gives
    /// rewards step by step (a question that uncovered a detail, a terminal reward on the last
    /// step): one per step or none. Recorded on the record's steps; the `turns` export sums them
    /// per reply.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub step_rewards: Vec<f64>,
}

/// Errors of environments and episodes. All of them are infrastructure failures: they are never
/// counted against the model.
#[derive(Debug, Clone, PartialEq, thiserror::Error, serde::Serialize, serde::Deserialize)]
#[serde(tag = "kind", content = "detail", rename_all = "snake_case")]
pub enum EnvironmentError {
    #[error("{0}")]
    Tasks(String),
    #[error("could not start episode for task `{task}`: {message}")]
    Start { task: String, message: String },
    #[error("environment failure: {0}")]
    Runtime(String),
}

impl From<crate::task::TaskError> for EnvironmentError {
    fn from(e: crate::task::TaskError) -> Self {
        match e {
            crate::task::TaskError::Encode(message) => EnvironmentError::Tasks(message),
            crate::task::TaskError::Decode { task, message } => {
                EnvironmentError::Start { task, message }
            }
        }
    }
}

/// A family of tasks. Built once per run from its config, shared by every episode.
#[async_trait]
pub trait Environment: Send + Sync {
    /// The actions its episodes accept.
    fn action_space(&self) -> ActionSpace;

    /// Every task, in a stable order. Ids are unique.
    async fn tasks(&self) -> Result<Vec<Task>, EnvironmentError>;

    /// Starts a fresh episode of `task`. Each call gets its own state: a retried rollout never
    /// sees what an earlier one did.
    async fn start(&self, task: &Task) -> Result<Box<dyn Episode>, EnvironmentError>;

    /// The evaluators that score this environment's trajectories when the config names none:
    /// registry kind names with their settings (so an environment can hand its evaluator the
    /// same sandbox settings it runs with).
    fn default_evaluators(&self) -> Vec<(String, Value)> {
        Vec::new()
    }

    /// Facts about how this environment runs that a run should record in its manifest (for
    /// example the sandbox isolation in force). `Null` when there is nothing to say.
    fn facts(&self) -> Value {
        Value::Null
    }

    /// Called once when a run ends, however it ends, after every rollout has been written:
    /// release whatever episodes left behind (containers of interrupted or crashed rollouts).
    /// Bounded in time.
    async fn shutdown(&self) {}
}

/// One task being played out. Owned by one rollout; dropped (and so torn down) when it ends.
#[async_trait]
pub trait Episode: Send {
    /// The opening messages (the task as the user states it). The scaffold adds its own system
    /// prompt in front.
    fn opening(&self) -> Vec<Message>;

    /// The tools this episode offers, as OpenAI tool schemas.
    fn tools(&self) -> Vec<ToolSchema> {
        Vec::new()
    }

    /// Takes one action. An error here is an infrastructure failure; a bad action from the model
    /// is an `Ok` observation that says what was wrong.
    async fn act(&mut self, action: &Action) -> Result<Observation, EnvironmentError>;

    /// Ends the episode and hands over its artifacts.
    async fn finish(&mut self) -> Result<Artifacts, EnvironmentError>;
}

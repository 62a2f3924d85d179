//! A plugin that panics on purpose, one kind per role that can: its `panicky` evaluator panics
//! on the tasks it is told to (and scores every other rollout 1), its `panicky` scaffold when the
//! model's reply says PANIC, its `panicky` model on its n-th call, and its `panicky` sandbox on a
//! command that says panic. Tests load it to check that a panic fails one call only.

use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};

use serde::Deserialize;
use trawl_core::model::{
    Completion, CompletionRequest, FinishReason, LanguageModel, ModelDescription, ModelError, Usage,
};
use trawl_core::registry::{
    BuildContext, ComponentError, EvaluatorConfig, ModelConfig, SandboxConfig, ScaffoldConfig,
};
use trawl_core::sandbox::{
    ExecLimits, ExecOutcome, ExecResult, Sandbox, SandboxBackend, SandboxError, SandboxSpec,
};
use trawl_core::scaffold::context_overflow_or;
use trawl_core::{
    async_trait, Action, ActionSpace, AgentScaffold, Evaluation, Evaluator, EvaluatorError,
    ExitStatus, Message, RolloutContext, ScaffoldError, ScaffoldOutcome, TrajectoryRecord,
};

trawl_plugin_abi::declare_plugin!(name = "panicky", version = "0.0.1");

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct PanickyConfig {
    /// Task ids whose rollouts make the evaluator panic.
    #[serde(default)]
    pub panic_on_tasks: Vec<String>,
    /// Panic while being built.
    #[serde(default)]
    pub panic_in_build: bool,
}

impl EvaluatorConfig for PanickyConfig {
    fn build(self, _: &BuildContext) -> Result<Arc<dyn Evaluator>, ComponentError> {
        if self.panic_in_build {
            panic!("told to panic while being built");
        }
        Ok(Arc::new(Panicky { config: self }))
    }
}

trawl_core::register!(
    evaluator,
    "panicky",
    "Panics on chosen tasks (test fixture)",
    PanickyConfig
);

struct Panicky {
    config: PanickyConfig,
}

#[async_trait]
impl Evaluator for Panicky {
    fn name(&self) -> &str {
        "panicky"
    }

    async fn evaluate(&self, record: &TrajectoryRecord) -> Result<Evaluation, EvaluatorError> {
        if self.config.panic_on_tasks.contains(&record.task.id) {
            panic!("told to panic on task {}", record.task.id);
        }
        Ok(Evaluation {
            evaluator: "panicky".into(),
            reward: 1.0,
            success: true,
            components: Default::default(),
            details: serde_json::Value::Null,
        })
    }
}

/// `[[scaffolds]] type = "panicky"`: one model call, then the reply as the answer; panics when
/// the reply contains PANIC, and never returns when it contains HANG.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct PanickyScaffoldConfig {}

impl ScaffoldConfig for PanickyScaffoldConfig {
    fn build(self, _: &BuildContext) -> Result<Arc<dyn AgentScaffold>, ComponentError> {
        Ok(Arc::new(PanickyScaffold))
    }
}

trawl_core::register!(
    scaffold,
    "panicky",
    "Answers with the model's reply; panics when it says PANIC (test fixture)",
    PanickyScaffoldConfig
);

struct PanickyScaffold;

#[async_trait]
impl AgentScaffold for PanickyScaffold {
    fn required_actions(&self) -> ActionSpace {
        ActionSpace {
            answer: true,
            ..ActionSpace::default()
        }
    }

    async fn run(&self, cx: RolloutContext<'_>) -> Result<ScaffoldOutcome, ScaffoldError> {
        let reply = match cx.transcript.call_model(cx.model, cx.sampling, false).await {
            Ok(c) => c.message.text().to_string(),
            Err(e) => return context_overflow_or(e),
        };
        if reply.contains("PANIC") {
            panic!("told to panic by the model's reply");
        }
        if reply.contains("HANG") {
            // Until the host lets go of the rollout.
            std::future::pending::<()>().await;
        }
        cx.transcript
            .act(
                cx.episode,
                Action::Answer {
                    text: reply.clone(),
                },
            )
            .await?;
        Ok(ScaffoldOutcome {
            exit_status: ExitStatus::Submitted,
            submission: Some(reply),
        })
    }
}

/// `[[models]] type = "panicky"`: answers `The answer is 42`, and panics on its n-th call.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct PanickyModelConfig {
    /// The call (from 1) that panics; none when unset.
    #[serde(default)]
    pub panic_on_call: Option<u64>,
}

impl ModelConfig for PanickyModelConfig {
    fn build(self, _: &BuildContext) -> Result<Arc<dyn LanguageModel>, ComponentError> {
        Ok(Arc::new(PanickyModel {
            panic_on_call: self.panic_on_call,
            calls: AtomicU64::new(0),
        }))
    }
}

trawl_core::register!(
    model,
    "panicky",
    "Answers 42; panics on a chosen call (test fixture)",
    PanickyModelConfig
);

struct PanickyModel {
    panic_on_call: Option<u64>,
    calls: AtomicU64,
}

#[async_trait]
impl LanguageModel for PanickyModel {
    fn describe(&self) -> ModelDescription {
        ModelDescription {
            kind: "panicky".into(),
            model_id: "panicky-42".into(),
        }
    }

    async fn complete(&self, _: &CompletionRequest) -> Result<Completion, ModelError> {
        let n = self.calls.fetch_add(1, Ordering::SeqCst) + 1;
        if self.panic_on_call == Some(n) {
            panic!("told to panic on call {n}");
        }
        Ok(Completion {
            message: Message::assistant("The answer is 42"),
            finish_reason: FinishReason::Stop,
            usage: Usage {
                prompt_tokens: 10,
                completion_tokens: 5,
                model_calls: 1,
            },
            tokens: None,
        })
    }
}

/// `sandbox = { type = "panicky" }`: keeps files in memory, answers every command with its own
/// text on stdout, and panics on a command that contains `panic`.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct PanickySandboxConfig {}

impl SandboxConfig for PanickySandboxConfig {
    fn build(self, _: &BuildContext) -> Result<Arc<dyn SandboxBackend>, ComponentError> {
        Ok(Arc::new(PanickyBackend))
    }
}

trawl_core::register!(
    sandbox,
    "panicky",
    "Echoes commands, keeps files in memory; panics on `panic` (test fixture)",
    PanickySandboxConfig
);

struct PanickyBackend;

#[async_trait]
impl SandboxBackend for PanickyBackend {
    fn describe(&self) -> serde_json::Value {
        serde_json::json!({ "backend": "panicky" })
    }

    async fn create(&self, spec: &SandboxSpec) -> Result<Box<dyn Sandbox>, SandboxError> {
        if spec.image.as_deref() == Some("missing") {
            return Err(SandboxError::Unavailable("no image `missing`".into()));
        }
        Ok(Box::new(PanickySandbox {
            files: Mutex::new(HashMap::new()),
        }))
    }
}

struct PanickySandbox {
    files: Mutex<HashMap<String, Vec<u8>>>,
}

#[async_trait]
impl Sandbox for PanickySandbox {
    async fn exec(&self, command: &str, _: &ExecLimits) -> Result<ExecResult, SandboxError> {
        if command.contains("panic") {
            panic!("told to panic on `{command}`");
        }
        Ok(ExecResult {
            outcome: ExecOutcome::Exited { code: 0 },
            stdout: command.to_string(),
            stderr: String::new(),
            stdout_truncated: false,
            stderr_truncated: false,
            duration_ms: 0,
        })
    }

    async fn read_file(&self, path: &str) -> Result<Vec<u8>, SandboxError> {
        let files = self
            .files
            .lock()
            .map_err(|_| SandboxError::Infra("poisoned".into()))?;
        files
            .get(path)
            .cloned()
            .ok_or_else(|| SandboxError::OutsidePath(path.into()))
    }

    async fn write_file(&self, path: &str, contents: &[u8]) -> Result<(), SandboxError> {
        let mut files = self
            .files
            .lock()
            .map_err(|_| SandboxError::Infra("poisoned".into()))?;
        files.insert(path.to_string(), contents.to_vec());
        Ok(())
    }

    async fn close(&self) -> Result<(), SandboxError> {
        Ok(())
    }

    fn working_dir(&self) -> String {
        "/memory".into()
    }
}

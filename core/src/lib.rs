//! trawl-core: the data model, the plugin roles (environments, scaffolds, evaluators, exporters,
//! model backends, sandboxes), the registry, the experiment config, the rollout engine, the run
//! store, selection, export and metrics. It knows nothing of HTTP, Docker or llama.cpp: those
//! live in plugin crates that register themselves here. (The one exception, behind the `http`
//! feature, is [`http::read_capped`]: the capped body reader every HTTP client shares.)

pub mod actions;
pub mod compare;
pub mod component;
pub mod config;
pub mod engine;
pub mod environment;
pub mod evaluation;
pub mod evaluator;
pub mod export;
pub mod fetch;
pub mod filter;
#[cfg(feature = "http")]
pub mod http;
pub mod hygiene;
pub mod labels;
pub mod matrix;
pub mod message;
pub mod model;
pub mod model_stack;
pub mod registry;
pub mod reward;
pub mod sandbox;
pub mod scaffold;
pub mod scoring;
pub mod stats;
pub mod store;
#[cfg(any(test, feature = "proptest"))]
pub mod strategies;
pub mod task;
pub mod testing;
pub mod trajectory;
pub mod usersim;
pub mod values;

// Re-exported so that `register!` works in crates that do not depend on inventory themselves.
pub use async_trait::async_trait;
pub use inventory;

pub use config::{ConfigError, ExperimentConfig};
pub use environment::{
    Action, ActionSpace, Artifacts, Environment, EnvironmentError, Episode, Observation,
};
pub use evaluator::{Evaluation, Evaluator, EvaluatorError};
pub use export::{ExportError, Exporter, Selection};
pub use message::{
    agent_view, agents, wire_messages, FunctionCall, Message, Role as MessageRole, ToolCall,
    ToolSchema,
};
pub use model::{
    Completion, CompletionRequest, FinishReason, LanguageModel, ModelDescription, ModelError,
    Sampling, Usage,
};
pub use registry::{BuildContext, ComponentError, Registry, Role};
pub use scaffold::{
    AgentScaffold, RolloutContext, ScaffoldError, ScaffoldOutcome, Transcript, TranscriptState,
};
pub use task::Task;
pub use trajectory::{ExitStatus, RolloutKey, TrajectoryRecord};

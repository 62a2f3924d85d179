//! A plugin that panics on purpose: its `panicky` evaluator panics on the tasks it is told to,
//! and scores every other rollout 1. Tests load it to check that a panic fails one call only.

use std::sync::Arc;

use serde::Deserialize;
use trawl_core::registry::{BuildContext, ComponentError, EvaluatorConfig};
use trawl_core::{async_trait, Evaluation, Evaluator, EvaluatorError, TrajectoryRecord};

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

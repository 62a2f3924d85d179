//! The `Evaluator` role: scores a finished trajectory.

use std::collections::BTreeMap;

use async_trait::async_trait;
use serde::{Deserialize, Serialize};
use serde_json::Value;

use crate::trajectory::TrajectoryRecord;

/// One evaluator's verdict.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Evaluation {
    /// The evaluator's registered kind name.
    pub evaluator: String,
    pub reward: f64,
    pub success: bool,
    #[serde(default)]
    pub components: BTreeMap<String, f64>,
    #[serde(default, skip_serializing_if = "Value::is_null")]
    pub details: Value,
}

#[derive(Debug, thiserror::Error)]
pub enum EvaluatorError {
    /// The task lacks what this evaluator needs (a ground truth, tests): a configuration
    /// mistake, not the model's.
    #[error("task `{task}` cannot be scored by `{evaluator}`: {message}")]
    Unscorable {
        evaluator: String,
        task: String,
        message: String,
    },
    #[error("evaluator `{evaluator}` failed: {message}")]
    Failed { evaluator: String, message: String },
}

/// Scores trajectories. Shared by every rollout of a run; the record it sees is complete except
/// for its evaluations.
#[async_trait]
pub trait Evaluator: Send + Sync {
    /// The name recorded in each `Evaluation`.
    fn name(&self) -> &str;

    async fn evaluate(&self, record: &TrajectoryRecord) -> Result<Evaluation, EvaluatorError>;

    /// Releases what it still holds (sandboxes, snapshots of prepared states) once the run
    /// is over, however it ended.
    async fn shutdown(&self) {}
}

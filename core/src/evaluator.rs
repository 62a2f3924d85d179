//! The `Evaluator` role: scores a finished trajectory.

use async_trait::async_trait;

pub use crate::evaluation::{Evaluation, EvaluatorError};
use crate::trajectory::TrajectoryRecord;

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

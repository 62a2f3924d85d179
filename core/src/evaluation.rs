//! An evaluator's verdict on one trajectory and its errors: data, recorded in every trajectory.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};
use serde_json::Value;

/// One evaluator's verdict.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Evaluation {
    /// The evaluator's registered kind name.
    pub evaluator: String,
    /// Finite and within ±[`crate::reward::MAX_REWARD`] once recorded (see [`Evaluation::check`]);
    /// `null` on disk reads as NaN, for the store to report.
    #[serde(deserialize_with = "crate::reward::null_as_nan")]
    pub reward: f64,
    pub success: bool,
    #[serde(default, deserialize_with = "crate::reward::nulls_as_nan")]
    pub components: BTreeMap<String, f64>,
    #[serde(default, skip_serializing_if = "Value::is_null")]
    pub details: Value,
}

impl Evaluation {
    /// Checks that this verdict can be recorded and read back: its reward and every sub-reward
    /// finite and within ±[`crate::reward::MAX_REWARD`], its details nested at most
    /// [`crate::reward::MAX_DETAILS_DEPTH`] deep. The error names the evaluator (as `name`),
    /// the field and the value: the engine records it as an infrastructure error, never as the
    /// model's failure.
    pub fn check(&self, name: &str) -> Result<(), EvaluatorError> {
        let failed = |message: String| EvaluatorError::Failed {
            evaluator: name.to_string(),
            message,
        };
        if let Some(why) = crate::reward::unsound(self.reward) {
            return Err(failed(format!("its reward is {why}")));
        }
        for (component, v) in &self.components {
            if let Some(why) = crate::reward::unsound(*v) {
                return Err(failed(format!("its sub-reward `{component}` is {why}")));
            }
        }
        let depth = crate::reward::depth(&self.details);
        if depth > crate::reward::MAX_DETAILS_DEPTH {
            return Err(failed(format!(
                "its details nest {depth} levels deep, more than the {} a record can hold",
                crate::reward::MAX_DETAILS_DEPTH
            )));
        }
        Ok(())
    }
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

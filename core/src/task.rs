//! Tasks: what an environment hands an episode.

use serde::de::DeserializeOwned;
use serde::{Deserialize, Serialize};
use serde_json::Value;

use crate::environment::EnvironmentError;

/// One task of an environment. `id` is unique within its environment and stable across runs (it
/// is part of every rollout's key); `data` is the environment's own payload (a question and its
/// answer, a repository and its tests, ...), stored whole in each trajectory record.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Task {
    pub id: String,
    pub data: Value,
}

impl Task {
    pub fn new(id: impl Into<String>, data: Value) -> Self {
        Task {
            id: id.into(),
            data,
        }
    }

    /// A task whose `data` is an environment's own task type, serialized whole.
    pub fn from_payload<T: Serialize>(
        id: impl Into<String>,
        payload: &T,
    ) -> Result<Self, EnvironmentError> {
        let data =
            serde_json::to_value(payload).map_err(|e| EnvironmentError::Tasks(e.to_string()))?;
        Ok(Task::new(id, data))
    }

    /// `data` read back as the environment's task type (`kind` names it in the error), when an
    /// episode starts.
    pub fn payload<T: DeserializeOwned>(&self, kind: &str) -> Result<T, EnvironmentError> {
        serde_json::from_value(self.data.clone()).map_err(|e| EnvironmentError::Start {
            task: self.id.clone(),
            message: format!("not a {kind} task: {e}"),
        })
    }

    /// A string field of `data`, if present.
    pub fn str_field(&self, field: &str) -> Option<&str> {
        self.data.get(field).and_then(Value::as_str)
    }
}

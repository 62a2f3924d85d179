//! Tasks: what an environment hands an episode.

use serde::{Deserialize, Serialize};
use serde_json::Value;

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

    /// A string field of `data`, if present.
    pub fn str_field(&self, field: &str) -> Option<&str> {
        self.data.get(field).and_then(Value::as_str)
    }
}

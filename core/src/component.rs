//! What a component's settings may go wrong with, and how a component reads them: the one error
//! every factory returns (with the path of the offending field inside its table) and the
//! deserializer that keeps that path.

use serde::de::DeserializeOwned;
use serde_json::Value;

/// A component config that could not be used. `path` is the field inside the component's table
/// (`generator.count`), so the config loader can point at the exact line.
#[derive(Debug, Clone, thiserror::Error)]
#[error("{message}")]
pub struct ComponentError {
    pub path: Vec<String>,
    pub message: String,
}

impl ComponentError {
    pub fn new(message: impl Into<String>) -> Self {
        ComponentError {
            path: Vec::new(),
            message: message.into(),
        }
    }

    /// An error about one field of the component's config.
    pub fn at(field: &str, message: impl Into<String>) -> Self {
        ComponentError {
            path: field.split('.').map(str::to_string).collect(),
            message: message.into(),
        }
    }
}

/// Deserializes a component's settings, keeping the path of the offending field on error.
pub fn parse_settings<C: DeserializeOwned>(settings: &Value) -> Result<C, ComponentError> {
    serde_path_to_error::deserialize(settings).map_err(|e| {
        let mut path: Vec<String> = e
            .path()
            .iter()
            .filter_map(|seg| match seg {
                serde_path_to_error::Segment::Seq { index } => Some(index.to_string()),
                serde_path_to_error::Segment::Map { key } => Some(key.clone()),
                serde_path_to_error::Segment::Enum { variant } => Some(variant.clone()),
                serde_path_to_error::Segment::Unknown => None,
            })
            .collect();
        let message = e.inner().to_string();
        // serde reports an unknown field at its parent; point at the field itself.
        if let Some(field) = message
            .strip_prefix("unknown field `")
            .and_then(|m| m.split('`').next())
        {
            if path.last().map(String::as_str) != Some(field) {
                path.push(field.to_string());
            }
        }
        ComponentError { path, message }
    })
}

//! Tasks: what an environment hands an episode.

use std::io::{BufRead, BufReader, Read};
use std::path::Path;

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

/// The longest line a task file may hold. A task is a question, a problem with its tests or an
/// instance with its patch: far below this. A longer line is refused before it is read whole.
pub const MAX_TASK_LINE_BYTES: usize = 16 << 20;

/// Reads a line-based task file (JSONL) as text, line by line, refusing a line longer than
/// [`MAX_TASK_LINE_BYTES`] or one that is not UTF-8 with `origin:line` in the error.
pub fn read_task_text(reader: impl Read, origin: &str) -> Result<String, String> {
    let mut reader = BufReader::new(reader);
    let mut text = String::new();
    let mut line = Vec::new();
    for line_no in 1.. {
        line.clear();
        let n = reader
            .by_ref()
            .take(MAX_TASK_LINE_BYTES as u64 + 1)
            .read_until(b'\n', &mut line)
            .map_err(|e| format!("cannot read {origin}: {e}"))?;
        if n == 0 {
            break;
        }
        let body = line.strip_suffix(b"\n").unwrap_or(&line);
        if body.len() > MAX_TASK_LINE_BYTES {
            return Err(format!(
                "{origin}:{line_no}: the line is longer than {} MiB; a task file holds one task per line\n  hint: check that the file is JSONL (one JSON object per line), or split the task",
                MAX_TASK_LINE_BYTES >> 20
            ));
        }
        let piece = std::str::from_utf8(&line).map_err(|e| {
            format!("{origin}:{line_no}: not UTF-8 text ({e}); task files are UTF-8")
        })?;
        text.push_str(piece);
    }
    Ok(text)
}

/// [`read_task_text`] on the file at `path`.
pub fn read_task_file(path: &Path) -> Result<String, String> {
    let file = std::fs::File::open(path)
        .map_err(|e| format!("cannot read task file {}: {e}", path.display()))?;
    read_task_text(file, &path.display().to_string())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn long_lines_and_bad_bytes_are_refused_with_file_and_line() {
        let ok = "{\"a\": 1}\n\n{\"b\": 2}";
        assert_eq!(read_task_text(ok.as_bytes(), "t.jsonl").unwrap(), ok);
        let mut long = b"{}\n".to_vec();
        long.extend(std::iter::repeat_n(b'x', MAX_TASK_LINE_BYTES + 10));
        let err = read_task_text(&long[..], "t.jsonl").unwrap_err();
        assert!(
            err.starts_with("t.jsonl:2: the line is longer than 16 MiB"),
            "{err}"
        );
        let err = read_task_text(&b"{}\n\xff\xfe\n"[..], "t.jsonl").unwrap_err();
        assert!(err.starts_with("t.jsonl:2: not UTF-8"), "{err}");
    }
}

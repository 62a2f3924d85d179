//! Tasks: what an environment hands an episode, and the task files environments read them from.
//!
//! A task file is JSONL (one object per line), a JSON array of objects, or Parquet (the files of
//! Hugging Face datasets, UserRL's `train.parquet`, verl's prompt files); the format is told by
//! the content (Parquet's `PAR1` magic, a leading `[`). A field mapping (`fields = { question =
//! "problem" }` in an environment's config) renames another project's fields to the ones the
//! environment reads, so such files load unchanged.

use std::collections::BTreeMap;
use std::io::{BufRead, BufReader, Read};
use std::path::Path;

use serde::de::DeserializeOwned;
use serde::{Deserialize, Serialize};
use serde_json::Value;

/// A task's payload that cannot be written or read back as an environment's task type. An
/// environment reports it as its own error (`EnvironmentError` converts from it).
#[derive(Debug, thiserror::Error)]
pub enum TaskError {
    /// The payload could not be serialized into a task.
    #[error("{0}")]
    Encode(String),
    /// The task's data is not the environment's task type: the episode cannot start.
    #[error("could not start episode for task `{task}`: {message}")]
    Decode { task: String, message: String },
}

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
    ) -> Result<Self, TaskError> {
        let data = serde_json::to_value(payload).map_err(|e| TaskError::Encode(e.to_string()))?;
        Ok(Task::new(id, data))
    }

    /// `data` read back as the environment's task type (`kind` names it in the error), when an
    /// episode starts.
    pub fn payload<T: DeserializeOwned>(&self, kind: &str) -> Result<T, TaskError> {
        serde_json::from_value(self.data.clone()).map_err(|e| TaskError::Decode {
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

/// The largest JSON-array or Parquet task file: these are read whole (a JSONL file is read a
/// line at a time and has no total cap). A task set far past this wants splitting or JSONL.
pub const MAX_TASK_FILE_BYTES: u64 = 1 << 30;

/// An environment's `fields` setting: trawl's field name → the file's field, a dotted path whose
/// numeric parts index lists (`problem`, `reward_model.ground_truth`, `prompt.0.content`).
pub type FieldMap = BTreeMap<String, String>;

/// The layouts a task file can have.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum TaskFileFormat {
    Jsonl,
    JsonArray,
    Parquet,
}

impl TaskFileFormat {
    /// What the file at `path` holds, by its first bytes: `PAR1` is Parquet, a `[` (after
    /// white space and a byte-order mark) a JSON array, anything else JSONL.
    pub fn sniff(path: &Path) -> Result<TaskFileFormat, String> {
        let file = std::fs::File::open(path)
            .map_err(|e| format!("cannot read task file {}: {e}", path.display()))?;
        let mut head = Vec::new();
        file.take(4096)
            .read_to_end(&mut head)
            .map_err(|e| format!("cannot read task file {}: {e}", path.display()))?;
        if head.starts_with(b"PAR1") {
            return Ok(TaskFileFormat::Parquet);
        }
        let body = head.strip_prefix(b"\xef\xbb\xbf").unwrap_or(&head);
        Ok(match body.iter().find(|b| !b.is_ascii_whitespace()) {
            Some(b'[') => TaskFileFormat::JsonArray,
            _ => TaskFileFormat::Jsonl,
        })
    }
}

/// Reads a task file in any of its formats as JSONL text for an environment's line parser: line
/// n is the file's line n (JSONL) or row n (a JSON array or Parquet, counted from 1), with
/// `fields` applied to each. Errors name the file, the line or row and the field, and say what
/// to do.
pub fn read_task_rows(path: &Path, fields: &FieldMap) -> Result<String, String> {
    let origin = path.display().to_string();
    match TaskFileFormat::sniff(path)? {
        TaskFileFormat::Jsonl => map_jsonl(&read_task_file(path)?, &origin, fields),
        TaskFileFormat::JsonArray => {
            let bytes = read_whole(path, "a JSON array")?;
            let rows: Vec<Value> = serde_json::from_slice(&bytes).map_err(|e| {
                format!(
                    "{origin}:{}:{}: not a valid JSON array of tasks: {e}\n  hint: a task file is JSONL (one object per line), a JSON array of objects, or Parquet",
                    e.line(),
                    e.column()
                )
            })?;
            rows_to_jsonl(rows, &origin, fields)
        }
        TaskFileFormat::Parquet => {
            let size = std::fs::metadata(path)
                .map_err(|e| format!("cannot read task file {origin}: {e}"))?
                .len();
            check_size(size, &origin, "a Parquet file")?;
            rows_to_jsonl(parquet_rows(path)?, &origin, fields)
        }
    }
}

fn check_size(size: u64, origin: &str, what: &str) -> Result<(), String> {
    if size > MAX_TASK_FILE_BYTES {
        return Err(format!(
            "{origin}: {what} of {} MiB; task files read whole are limited to {} MiB\n  hint: split it, or convert it to JSONL (read a line at a time)",
            size >> 20,
            MAX_TASK_FILE_BYTES >> 20
        ));
    }
    Ok(())
}

fn read_whole(path: &Path, what: &str) -> Result<Vec<u8>, String> {
    let origin = path.display().to_string();
    let file =
        std::fs::File::open(path).map_err(|e| format!("cannot read task file {origin}: {e}"))?;
    let mut bytes = Vec::new();
    file.take(MAX_TASK_FILE_BYTES + 1)
        .read_to_end(&mut bytes)
        .map_err(|e| format!("cannot read task file {origin}: {e}"))?;
    check_size(bytes.len() as u64, &origin, what)?;
    Ok(bytes)
}

/// Every row of a Parquet file as a JSON object (nested groups as objects, lists as arrays).
fn parquet_rows(path: &Path) -> Result<Vec<Value>, String> {
    use parquet::file::reader::{FileReader, SerializedFileReader};
    let origin = path.display().to_string();
    let not_parquet = |e: parquet::errors::ParquetError| {
        format!("{origin}: not a readable Parquet file: {e}\n  hint: check that the file is whole (a download cut short has no footer)")
    };
    let file =
        std::fs::File::open(path).map_err(|e| format!("cannot read task file {origin}: {e}"))?;
    let reader = SerializedFileReader::new(file).map_err(not_parquet)?;
    let mut rows = Vec::new();
    for (i, row) in reader.get_row_iter(None).map_err(not_parquet)?.enumerate() {
        let row = row.map_err(|e| format!("{origin}: row {}: cannot be read: {e}", i + 1))?;
        rows.push(row.to_json_value());
    }
    Ok(rows)
}

fn rows_to_jsonl(rows: Vec<Value>, origin: &str, fields: &FieldMap) -> Result<String, String> {
    let mut text = String::new();
    for (i, row) in rows.into_iter().enumerate() {
        let row = map_row(row, fields).map_err(|e| format!("{origin}:{}: {e}", i + 1))?;
        let line = serde_json::to_string(&row)
            .map_err(|e| format!("{origin}:{}: cannot be read as JSON: {e}", i + 1))?;
        text.push_str(&line);
        text.push('\n');
    }
    Ok(text)
}

/// JSONL text with `fields` applied to each line; line numbers are kept (blank lines too).
pub fn map_jsonl(text: &str, origin: &str, fields: &FieldMap) -> Result<String, String> {
    if fields.is_empty() {
        return Ok(text.to_string());
    }
    let mut out = String::with_capacity(text.len());
    for (i, line) in text.lines().enumerate() {
        if !line.trim().is_empty() {
            let row: Value = serde_json::from_str(line).map_err(|e| {
                format!(
                    "{origin}:{}:{}: not valid JSON: {e}\n  hint: each line must be one JSON object",
                    i + 1,
                    e.column()
                )
            })?;
            let row = map_row(row, fields).map_err(|e| format!("{origin}:{}: {e}", i + 1))?;
            let line = serde_json::to_string(&row)
                .map_err(|e| format!("{origin}:{}: cannot be read as JSON: {e}", i + 1))?;
            out.push_str(&line);
        }
        out.push('\n');
    }
    Ok(out)
}

/// One row with `fields` applied: each of trawl's fields takes the value at the file's path,
/// and a renamed top-level field is dropped (so `problem` read as `question` is not seen twice).
fn map_row(row: Value, fields: &FieldMap) -> Result<Value, String> {
    if fields.is_empty() {
        return Ok(row);
    }
    let Value::Object(mut obj) = row else {
        return Err(format!(
            "expected an object (a task), found {}",
            kind_of(&row)
        ));
    };
    let mut values = Vec::new();
    for (ours, theirs) in fields {
        let mut parts = theirs.split('.');
        let first = parts.next().and_then(|p| obj.get(p));
        let value = parts.try_fold(first, |here, part| {
            Some(match here? {
                Value::Object(o) => o.get(part),
                Value::Array(a) => part.parse::<usize>().ok().and_then(|i| a.get(i)),
                _ => None,
            })
        });
        let Some(Some(v)) = value else {
            let keys: Vec<&str> = obj.keys().map(String::as_str).collect();
            return Err(format!(
                "field `{theirs}` (read as `{ours}` by `fields`) is missing; the row's fields are {keys:?}\n  hint: fix `fields.{ours}` in the environment's config (a dotted path, numbers for list entries)"
            ));
        };
        values.push((ours.clone(), v.clone()));
    }
    for theirs in fields.values() {
        if !theirs.contains('.') && !fields.contains_key(theirs) {
            obj.remove(theirs);
        }
    }
    for (ours, v) in values {
        obj.insert(ours, v);
    }
    Ok(Value::Object(obj))
}

fn kind_of(v: &Value) -> &'static str {
    match v {
        Value::Null => "null",
        Value::Bool(_) => "a boolean",
        Value::Number(_) => "a number",
        Value::String(_) => "a string",
        Value::Array(_) => "an array",
        Value::Object(_) => "an object",
    }
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

    fn fields(pairs: &[(&str, &str)]) -> FieldMap {
        pairs
            .iter()
            .map(|(a, b)| (a.to_string(), b.to_string()))
            .collect()
    }

    fn lines(text: &str) -> Vec<Value> {
        text.lines()
            .map(|l| serde_json::from_str(l).expect("a JSON line"))
            .collect()
    }

    #[test]
    fn json_arrays_in_another_shape_load_through_a_mapping() {
        let dir = tempfile::tempdir().expect("tempdir");
        let path = dir.path().join("other.json");
        std::fs::write(
            &path,
            r#"
            [{"uid": 1, "problem": "1+1?", "meta": {"solution": "2"}},
             {"uid": 2, "problem": "2+2?", "meta": {"solution": "4"}}]"#,
        )
        .expect("write");
        assert_eq!(
            TaskFileFormat::sniff(&path).expect("sniff"),
            TaskFileFormat::JsonArray
        );
        let map = fields(&[("question", "problem"), ("answer", "meta.solution")]);
        let rows = lines(&read_task_rows(&path, &map).expect("reads"));
        assert_eq!(
            rows,
            vec![
                serde_json::json!({"uid": 1, "meta": {"solution": "2"}, "question": "1+1?", "answer": "2"}),
                serde_json::json!({"uid": 2, "meta": {"solution": "4"}, "question": "2+2?", "answer": "4"}),
            ]
        );
        // A mapping to a field the file does not have: file, row and both names.
        let bad = fields(&[("question", "prompt")]);
        let err = read_task_rows(&path, &bad).unwrap_err();
        assert!(
            err.starts_with(&format!(
                "{}:1: field `prompt` (read as `question` by `fields`) is missing",
                path.display()
            )),
            "{err}"
        );
        // Broken JSON: file, line and column.
        std::fs::write(&path, "[{\"a\": 1},\n {\"a\": }]").expect("write");
        let err = read_task_rows(&path, &FieldMap::new()).unwrap_err();
        assert!(err.starts_with(&format!("{}:2:", path.display())), "{err}");
    }

    #[test]
    fn jsonl_keeps_its_line_numbers_under_a_mapping() {
        let text = "{\"p\": \"a\"}\n\n{\"p\": \"b\"}\n";
        let out = map_jsonl(text, "t.jsonl", &fields(&[("question", "p")])).expect("maps");
        assert_eq!(out, "{\"question\":\"a\"}\n\n{\"question\":\"b\"}\n");
        let err = map_jsonl("{}\n[1]\n", "t.jsonl", &fields(&[("question", "p")])).unwrap_err();
        assert!(err.starts_with("t.jsonl:1: field `p`"), "{err}");
        assert_eq!(
            map_jsonl(text, "t.jsonl", &FieldMap::new()).expect("as is"),
            text
        );
    }

    #[test]
    fn parquet_files_are_read_row_by_row() {
        use parquet::data_type::ByteArray;
        use parquet::file::writer::SerializedFileWriter;
        use std::sync::Arc;
        // verl's shape: a list of messages and a nested ground truth.
        let schema = "message schema {
            required group prompt (LIST) { repeated group list { required group element {
                required binary role (STRING); required binary content (STRING); } } }
            required group reward_model { required binary ground_truth (STRING); }
            required int64 index;
        }";
        let schema = Arc::new(parquet::schema::parser::parse_message_type(schema).expect("schema"));
        let dir = tempfile::tempdir().expect("tempdir");
        let path = dir.path().join("train.parquet");
        let file = std::fs::File::create(&path).expect("create");
        let mut writer =
            SerializedFileWriter::new(file, schema, Default::default()).expect("writer");
        let mut group = writer.next_row_group().expect("row group");
        let text = |v: &[&str]| v.iter().map(|s| ByteArray::from(*s)).collect::<Vec<_>>();
        let columns: [Vec<ByteArray>; 3] = [
            text(&["user", "user"]),
            text(&["What is 6*7?", "What is 5+5?"]),
            text(&["42", "10"]),
        ];
        for (i, values) in columns.into_iter().enumerate() {
            let mut col = group.next_column().expect("column").expect("a column");
            let levels = col.typed::<parquet::data_type::ByteArrayType>();
            if i == 2 {
                levels.write_batch(&values, None, None).expect("write");
            } else {
                // One list entry per row: repetition 0 (a new row), full definition.
                levels
                    .write_batch(&values, Some(&[1, 1]), Some(&[0, 0]))
                    .expect("write");
            }
            col.close().expect("close");
        }
        let mut col = group.next_column().expect("column").expect("a column");
        col.typed::<parquet::data_type::Int64Type>()
            .write_batch(&[0, 1], None, None)
            .expect("write");
        col.close().expect("close");
        group.close().expect("close");
        writer.close().expect("close");

        assert_eq!(
            TaskFileFormat::sniff(&path).expect("sniff"),
            TaskFileFormat::Parquet
        );
        let map = fields(&[
            ("question", "prompt.0.content"),
            ("answer", "reward_model.ground_truth"),
        ]);
        let rows = lines(&read_task_rows(&path, &map).expect("reads"));
        assert_eq!(rows.len(), 2);
        assert_eq!(rows[0]["question"], "What is 6*7?");
        assert_eq!(rows[0]["answer"], "42");
        assert_eq!(rows[1]["question"], "What is 5+5?");
        assert_eq!(rows[1]["index"], 1);
        let err = read_task_rows(&path, &fields(&[("answer", "reward_model.truth")])).unwrap_err();
        assert!(
            err.starts_with(&format!(
                "{}:1: field `reward_model.truth` (read as `answer` by `fields`) is missing",
                path.display()
            )),
            "{err}"
        );
        // A file cut short is refused, not read as JSONL.
        let bytes = std::fs::read(&path).expect("read");
        std::fs::write(&path, &bytes[..bytes.len() / 2]).expect("write");
        let err = read_task_rows(&path, &FieldMap::new()).unwrap_err();
        assert!(err.contains("not a readable Parquet file"), "{err}");
    }
}

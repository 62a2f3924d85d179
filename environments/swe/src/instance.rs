//! SWE task instances in the SWE-smith / SWE-bench shape, read from JSON (an array) or JSONL
//! files. Errors name the file, line and field.

use std::path::Path;

use serde::{Deserialize, Serialize};
use serde_json::{Map, Value};
use trawl_core::Task;

/// What an instance's `patch` is.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum InstanceFormat {
    /// SWE-smith: `patch` introduces the bug into a clean `base_commit`; the agent starts from
    /// the buggy tree.
    #[default]
    SweSmith,
    /// SWE-bench: `base_commit` is already buggy; `patch` is the gold fix, never shown or applied.
    SweBench,
}

/// One task instance. Unknown keys are kept in `extra` (and so in every record's task data).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct SweInstance {
    pub instance_id: String,
    pub repo: String,
    pub base_commit: String,
    #[serde(default)]
    pub patch: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub test_patch: Option<String>,
    pub problem_statement: String,
    #[serde(rename = "FAIL_TO_PASS")]
    pub fail_to_pass: Vec<String>,
    #[serde(rename = "PASS_TO_PASS", default)]
    pub pass_to_pass: Vec<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub image_name: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub created_at: Option<String>,
    #[serde(flatten)]
    pub extra: Map<String, Value>,
}

impl SweInstance {
    /// The instance from a task's data (as stored in records).
    pub fn from_task(task: &Task) -> Result<Self, String> {
        serde_json::from_value(task.data.clone())
            .map_err(|e| format!("task `{}` is not a SWE instance: {e}", task.id))
    }

    pub fn to_task(&self) -> Task {
        Task::new(
            self.instance_id.clone(),
            serde_json::to_value(self).unwrap_or(Value::Null),
        )
    }

    /// `owner__name`, the folder name SWE-smith uses for a repository.
    pub fn repo_slug(&self) -> String {
        self.repo.replace('/', "__")
    }
}

/// Test ids come as a list or (in some SWE-bench dumps) as a JSON string holding a list.
fn test_list(obj: &mut Map<String, Value>, field: &'static str) -> Result<(), String> {
    let fixed = match obj.get(field) {
        Some(Value::String(s)) => serde_json::from_str::<Vec<String>>(s)
            .map(Value::from)
            .map_err(|_| "expected a list of pytest node ids".to_string())?,
        Some(Value::Array(a)) => {
            if a.iter().any(|v| !v.is_string()) {
                return Err("expected a list of pytest node ids (strings)".into());
            }
            return Ok(());
        }
        None | Some(Value::Null) if field == "PASS_TO_PASS" => Value::Array(Vec::new()),
        None | Some(Value::Null) => {
            return Err("missing; list the tests the fix must make pass".into())
        }
        Some(_) => return Err("expected a list of pytest node ids".into()),
    };
    obj.insert(field.to_string(), fixed);
    Ok(())
}

const REQUIRED: [(&str, &str); 4] = [
    ("instance_id", "a unique id"),
    ("repo", "the repository, `owner/name`"),
    ("base_commit", "the commit the task starts from"),
    ("problem_statement", "the issue text the agent is given"),
];

/// One instance from a JSON object; errors are `(field, message)`.
pub fn parse_instance(value: Value) -> Result<SweInstance, (String, String)> {
    let Value::Object(mut obj) = value else {
        return Err((String::new(), "expected a JSON object".into()));
    };
    for (field, what) in REQUIRED {
        match obj.get(field) {
            Some(Value::String(s)) if !s.trim().is_empty() => {}
            Some(Value::String(_)) => return Err((field.into(), format!("is empty; give {what}"))),
            None | Some(Value::Null) => {
                return Err((field.into(), format!("missing; give {what}")))
            }
            Some(_) => return Err((field.into(), "expected a string".into())),
        }
    }
    // The harness files an instance's logs and report under a folder named by its id.
    if let Some(Value::String(id)) = obj.get("instance_id") {
        trawl_core::values::check_path_part(id).map_err(|why| {
            (
                "instance_id".to_string(),
                format!(
                    "`{}` {why} (reports go to <model>/<instance_id>/report.json); give the instance another id",
                    id.escape_debug()
                ),
            )
        })?;
    }
    for field in ["FAIL_TO_PASS", "PASS_TO_PASS"] {
        test_list(&mut obj, field).map_err(|m| (field.to_string(), m))?;
    }
    for field in ["patch", "test_patch", "image_name", "created_at"] {
        match obj.get(field) {
            None | Some(Value::Null) | Some(Value::String(_)) => {}
            Some(_) => return Err((field.into(), "expected a string".into())),
        }
    }
    if obj.get("patch").is_some_and(Value::is_null) {
        obj.remove("patch");
    }
    serde_json::from_value(Value::Object(obj)).map_err(|e| (String::new(), e.to_string()))
}

/// Parses a file's text: a JSON array of instances, or one instance per line.
pub fn parse(text: &str, origin: &str) -> Result<Vec<SweInstance>, String> {
    let trimmed = text.trim_start();
    let located = |line: usize, (field, msg): (String, String)| {
        if field.is_empty() {
            format!("{origin}:{line}: {msg}")
        } else {
            format!("{origin}:{line}: field `{field}`: {msg}")
        }
    };
    let mut out = Vec::new();
    if trimmed.starts_with('[') {
        let values: Vec<Value> = serde_json::from_str(text)
            .map_err(|e| format!("{origin}:{}:{}: not valid JSON: {e}", e.line(), e.column()))?;
        // Line numbers of array items are not kept by serde; name the item's index instead.
        for (i, v) in values.into_iter().enumerate() {
            out.push(parse_instance(v).map_err(|(field, msg)| {
                format!(
                    "{origin}: item {i}{}: {msg}",
                    if field.is_empty() {
                        String::new()
                    } else {
                        format!(", field `{field}`")
                    }
                )
            })?);
        }
    } else {
        for (i, line) in text.lines().enumerate() {
            if line.trim().is_empty() {
                continue;
            }
            let value: Value = serde_json::from_str(line).map_err(|e| {
                format!(
                    "{origin}:{}:{}: not valid JSON: {e}\n  hint: a JSONL file holds one JSON object per line",
                    i + 1,
                    e.column()
                )
            })?;
            out.push(parse_instance(value).map_err(|e| located(i + 1, e))?);
        }
    }
    let mut seen = std::collections::HashSet::new();
    for inst in &out {
        if !seen.insert(inst.instance_id.as_str()) {
            return Err(format!(
                "{origin}: instance_id `{}` appears twice; ids must be unique",
                inst.instance_id
            ));
        }
    }
    Ok(out)
}

/// Reads an instance file (JSONL, a JSON array or Parquet). Errors name the file, line (or row)
/// and field.
pub fn load_file(path: &Path) -> Result<Vec<SweInstance>, String> {
    load_file_with(path, &Default::default())
}

/// [`load_file`] once `fields` has renamed another shape's fields.
pub fn load_file_with(
    path: &Path,
    fields: &trawl_core::task::FieldMap,
) -> Result<Vec<SweInstance>, String> {
    let text = trawl_core::task::read_task_rows(path, fields)?;
    parse(&text, &path.display().to_string())
}

/// The instances bundled with trawl (six small Python repositories with real bugs).
pub fn builtin() -> Vec<SweInstance> {
    parse(include_str!("../data/instances.jsonl"), "builtin").unwrap_or_default()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_bundled_instances_parse() {
        let all = builtin();
        assert_eq!(all.len(), 6);
        assert!(all.iter().all(|i| !i.fail_to_pass.is_empty()));
    }

    #[test]
    fn errors_name_line_and_field() {
        let text = "{\"instance_id\":\"a\",\"repo\":\"o/r\",\"base_commit\":\"c\",\"problem_statement\":\"p\",\"FAIL_TO_PASS\":[\"t\"]}\n{\"instance_id\":\"b\",\"repo\":\"o/r\",\"base_commit\":\"c\",\"FAIL_TO_PASS\":[]}\n";
        let err = parse(text, "x.jsonl").expect_err("missing field");
        assert!(
            err.starts_with("x.jsonl:2: field `problem_statement`"),
            "{err}"
        );
        let err = parse("{not json", "y.jsonl").expect_err("bad json");
        assert!(err.starts_with("y.jsonl:1:"), "{err}");
        let dup = format!(
            "{}\n{}",
            text.lines().next().unwrap_or(""),
            text.lines().next().unwrap_or("")
        );
        assert!(parse(&dup, "d").expect_err("dup").contains("appears twice"));
    }

    /// The harness files each instance under a folder named by its id: an id that is not one
    /// folder name is refused at its line.
    #[test]
    fn ids_that_are_not_one_folder_name_are_refused_at_their_line() {
        let line = |id: &str| {
            format!("{{\"instance_id\":{},\"repo\":\"o/r\",\"base_commit\":\"c\",\"problem_statement\":\"p\",\"FAIL_TO_PASS\":[\"t\"]}}", serde_json::json!(id))
        };
        for bad in ["../../escape", "..", "/abs", "a/b", "nul\0"] {
            let text = format!("{}\n{}\n", line("ok"), line(bad));
            let err = parse(&text, "x.jsonl").expect_err(bad);
            assert!(
                err.starts_with("x.jsonl:2: field `instance_id`: `"),
                "{bad:?}: {err}"
            );
        }
        assert!(parse(&line("django__django-11099"), "x.jsonl").is_ok());
    }

    #[test]
    fn swe_bench_string_test_lists_are_read() {
        let v = serde_json::json!({
            "instance_id": "a", "repo": "o/r", "base_commit": "c", "problem_statement": "p",
            "FAIL_TO_PASS": "[\"t1\", \"t2\"]", "PASS_TO_PASS": "[]", "version": "1.0"
        });
        let inst = parse_instance(v).expect("parses");
        assert_eq!(inst.fail_to_pass, vec!["t1", "t2"]);
        assert_eq!(inst.extra["version"], "1.0");
        // Kept whole through a task and back.
        assert_eq!(SweInstance::from_task(&inst.to_task()).expect("back"), inst);
    }
}

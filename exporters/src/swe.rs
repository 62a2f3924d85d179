//! SWE exporters:
//! - `swe_smith`: SWE-smith's training records `{"messages", "instance_id", "resolved", "model",
//!   "traj_id", "patch"}` in its three styles: `xml` (each action as
//!   `<function=NAME><parameter=KEY>VALUE</parameter></function>` in the assistant's text, results
//!   as user turns), `ticks` (the thought and a fenced action block) and `tool` (native
//!   `tool_calls`, with the tool schemas).
//! - `preds`: `preds.json` for the SWE-bench harness, keyed by instance id.
//!
//! Records of any SWE scaffold convert to any style: actions are read from native tool calls,
//! from XML calls in the text, or from a fenced bash block.

use std::collections::BTreeMap;
use std::io::Write;
use std::sync::{Arc, Mutex};

use serde::Deserialize;
use serde_json::{json, Map, Value};
use trawl_core::actions::{
    fenced_blocks, parse_xml_calls, render_fenced, render_xml_call, xml_tool_docs,
};
use trawl_core::registry::{BuildContext, ComponentError, ExporterConfig};
use trawl_core::{ExportError, Exporter, Message, MessageRole, ToolSchema, TrajectoryRecord};

use crate::write_line;

/// Fence languages read as a shell action (a bare fence is SWE-agent's way of writing one).
const SHELL_FENCES: [&str; 5] = ["bash", "sh", "shell", "mswea_bash_command", ""];

/// One of SWE-smith's trajectory styles.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Style {
    #[default]
    Xml,
    Ticks,
    Tool,
}

/// `trawl export --format swe_smith --style xml|ticks|tool`.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SweSmithExporterConfig {
    #[serde(default)]
    pub style: Style,
}

impl ExporterConfig for SweSmithExporterConfig {
    fn build(self, _: &BuildContext) -> Result<Arc<dyn Exporter>, ComponentError> {
        Ok(Arc::new(SweSmithExporter { style: self.style }))
    }
}

trawl_core::register!(
    exporter,
    "swe_smith",
    "SWE-smith training records in its xml, ticks or tool style (--style)",
    SweSmithExporterConfig
);

pub struct SweSmithExporter {
    pub style: Style,
}

/// An action the agent took: a tool name and its arguments.
#[derive(Debug, Clone, PartialEq)]
struct Act {
    id: String,
    name: String,
    args: Map<String, Value>,
}

/// An assistant message read as a thought and its actions.
fn read_assistant(m: &Message, n: usize) -> (String, Vec<Act>) {
    if !m.tool_calls.is_empty() {
        let acts = m
            .tool_calls
            .iter()
            .map(|c| Act {
                id: c.id.clone(),
                name: c.function.name.clone(),
                args: serde_json::from_str::<Value>(&c.function.arguments)
                    .ok()
                    .and_then(|v| v.as_object().cloned())
                    .unwrap_or_default(),
            })
            .collect();
        return (m.text().trim().to_string(), acts);
    }
    let text = m.text();
    let (thought, calls) = parse_xml_calls(text);
    if !calls.is_empty() {
        let acts = calls
            .iter()
            .enumerate()
            .map(|(i, c)| Act {
                id: format!("call_{n}_{i}"),
                name: c.name.clone(),
                args: c.arguments(),
            })
            .collect();
        return (thought, acts);
    }
    let blocks = fenced_blocks(text, &SHELL_FENCES);
    if let [command] = blocks.as_slice() {
        let thought = text[..text.find("```").unwrap_or(text.len())].trim();
        return (
            thought.to_string(),
            vec![Act {
                id: format!("call_{n}_0"),
                name: "bash".into(),
                args: Map::from_iter([("command".to_string(), json!(command))]),
            }],
        );
    }
    (text.trim().to_string(), Vec::new())
}

/// An action as a command line, for the ticks style: a shell command as it is, another tool as
/// `name <positional values> --key value` (SWE-agent's spelling of its tools).
fn command_line(act: &Act) -> String {
    if act.name == "bash" {
        if let Some(c) = act.args.get("command").and_then(Value::as_str) {
            return c.to_string();
        }
    }
    let mut parts = vec![act.name.clone()];
    let word = |v: &Value| match v {
        Value::String(s)
            if !s.is_empty() && !s.contains(char::is_whitespace) && !s.contains('\'') =>
        {
            s.clone()
        }
        Value::String(s) => format!("'{}'", s.replace('\'', "'\\''")),
        other => other.to_string(),
    };
    for key in ["command", "path"] {
        if let Some(v) = act.args.get(key) {
            parts.push(word(v));
        }
    }
    for (k, v) in &act.args {
        if k != "command" && k != "path" {
            parts.push(format!("--{k} {}", word(v)));
        }
    }
    parts.join(" ")
}

fn join(thought: &str, action: &str) -> String {
    if thought.is_empty() {
        action.to_string()
    } else {
        format!("{thought}\n\n{action}")
    }
}

/// The command lines a record's steps hold as they were run (an imported SWE-agent trajectory
/// keeps each action exactly as SWE-agent wrote it: `find_file fields.py src`), one per action,
/// when there is one for every action of the conversation; else none.
fn recorded_commands(r: &TrajectoryRecord) -> Vec<String> {
    let actions = r
        .messages
        .iter()
        .enumerate()
        .filter(|(_, m)| m.role == MessageRole::Assistant)
        .map(|(n, m)| read_assistant(m, n).1.len())
        .sum::<usize>();
    let commands: Vec<String> = r
        .steps
        .iter()
        .filter_map(|s| match &s.action {
            trawl_core::environment::Action::Shell { command } if !command.trim().is_empty() => {
                Some(command.clone())
            }
            _ => None,
        })
        .collect();
    if commands.len() == actions && commands.len() == r.steps.len() {
        commands
    } else {
        Vec::new()
    }
}

/// The conversation in `style`. `recorded` holds each action's command line as it was run, when
/// known (see [`recorded_commands`]); the `ticks` style writes those rather than spelling the
/// call anew.
fn render(
    messages: &[Message],
    tools: &[ToolSchema],
    style: Style,
    recorded: &[String],
) -> Vec<Value> {
    let mut out = Vec::new();
    let mut action_no = 0usize;
    let mut pending_ids: Vec<String> = Vec::new();
    for (n, m) in messages.iter().enumerate() {
        match m.role {
            MessageRole::System => {
                let mut text = m.text().to_string();
                // The xml style's replies call tools as `<function=...>` whatever format the
                // trajectory used: its system prompt says so, naming every tool the replies call
                // (a text-based trajectory's shell commands become `bash` calls).
                if style == Style::Xml && !text.contains("<function=") {
                    let called: Vec<String> = messages
                        .iter()
                        .enumerate()
                        .filter(|(_, m)| m.role == MessageRole::Assistant)
                        .flat_map(|(n, m)| read_assistant(m, n).1)
                        .map(|a| a.name)
                        .collect();
                    let described = with_called(tools, called.iter().map(String::as_str));
                    if !described.is_empty() {
                        text = format!(
                            "{text}\n\nWrite every action as a function call in the format below; it replaces any other action format described above.\n\n{}",
                            xml_tool_docs(&described)
                        );
                    }
                }
                out.push(json!({"role": "system", "content": text}));
            }
            MessageRole::Assistant => {
                let (thought, acts) = read_assistant(m, n);
                pending_ids = acts.iter().map(|a| a.id.clone()).collect();
                let first_action = action_no;
                action_no += acts.len();
                let action_no = first_action;
                match style {
                    Style::Tool => {
                        let mut msg = json!({"role": "assistant", "content": thought});
                        if !acts.is_empty() {
                            msg["tool_calls"] = acts
                                .iter()
                                .map(|a| {
                                    json!({"id": a.id, "type": "function", "function": {
                                        "name": a.name, "arguments": Value::Object(a.args.clone()).to_string()}})
                                })
                                .collect();
                        }
                        out.push(msg);
                    }
                    Style::Xml => {
                        let calls: Vec<String> = acts
                            .iter()
                            .map(|a| render_xml_call(&a.name, &a.args))
                            .collect();
                        out.push(json!({"role": "assistant", "content": join(&thought, &calls.join("\n"))}));
                    }
                    Style::Ticks => {
                        let blocks: Vec<String> = acts
                            .iter()
                            .enumerate()
                            .map(|(k, a)| {
                                let line = recorded
                                    .get(action_no + k)
                                    .cloned()
                                    .unwrap_or_else(|| command_line(a));
                                render_fenced("", &line)
                            })
                            .collect();
                        out.push(json!({"role": "assistant", "content": join(&thought, &blocks.join("\n"))}));
                    }
                }
            }
            MessageRole::Tool | MessageRole::User => {
                let text = m.text().to_string();
                let is_result = m.role == MessageRole::Tool || (!pending_ids.is_empty() && n > 0);
                match (style, is_result) {
                    (Style::Tool, true) => {
                        let id = m
                            .tool_call_id
                            .clone()
                            .or_else(|| pending_ids.first().cloned())
                            .unwrap_or_default();
                        pending_ids.retain(|p| *p != id);
                        out.push(json!({"role": "tool", "tool_call_id": id, "content": text}));
                    }
                    _ => {
                        pending_ids.clear();
                        // Several results of one reply become one user turn.
                        match out.last_mut() {
                            Some(prev) if prev["role"] == "user" && m.role == MessageRole::Tool => {
                                let joined =
                                    format!("{}\n\n{text}", prev["content"].as_str().unwrap_or(""));
                                prev["content"] = json!(joined);
                            }
                            _ => out.push(json!({"role": "user", "content": text})),
                        }
                    }
                }
            }
        }
    }
    out
}

/// The record's tool schemas, plus one for each tool the rendered calls use that it lacks (a
/// text-mode trajectory's shell actions become `bash` calls).
fn tools_for(messages: &[Value], tools: &[ToolSchema]) -> Vec<ToolSchema> {
    with_called(
        tools,
        messages
            .iter()
            .flat_map(|m| m["tool_calls"].as_array().into_iter().flatten())
            .filter_map(|c| c["function"]["name"].as_str()),
    )
}

/// `tools` and a schema for each tool in `called` it lacks (`bash` with its `command`).
fn with_called<'a>(tools: &[ToolSchema], called: impl Iterator<Item = &'a str>) -> Vec<ToolSchema> {
    let mut out = tools.to_vec();
    for name in called {
        if !name.is_empty() && !out.iter().any(|t| t.name() == name) {
            let params = if name == "bash" {
                json!({"type": "object", "properties": {"command": {"type": "string", "description": "the shell command"}}, "required": ["command"]})
            } else {
                json!({"type": "object"})
            };
            out.push(ToolSchema::function(
                name,
                "a tool the trajectory called",
                params,
            ));
        }
    }
    out
}

/// The SWE-bench instance a record is a rollout of: its task's own `instance_id` (the SWE
/// environment's tasks and imported trajectories carry one). A record without one is refused:
/// SWE formats must not carry a math answer as a patch.
fn instance_id<'r>(r: &'r TrajectoryRecord, format: &str) -> Result<&'r str, ExportError> {
    r.task
        .data
        .get("instance_id")
        .and_then(Value::as_str)
        .ok_or_else(|| ExportError::Record {
            key: r.key.to_string(),
            message: format!(
                "it is not a SWE rollout (its task has no `instance_id`), and `{format}` holds SWE-bench instances only; select SWE rollouts (--where '.task.data.instance_id != null') or choose another format"
            ),
        })
}

impl Exporter for SweSmithExporter {
    fn write(&self, r: &TrajectoryRecord, out: &mut dyn Write) -> Result<usize, ExportError> {
        let id = instance_id(r, "swe_smith")?;
        let messages = render(&r.messages, &r.tools, self.style, &recorded_commands(r));
        let mut line = Map::new();
        if self.style == Style::Tool {
            line.insert("tools".into(), json!(tools_for(&messages, &r.tools)));
        }
        line.insert("messages".into(), Value::Array(messages));
        line.insert("instance_id".into(), json!(id));
        line.insert("resolved".into(), json!(r.success));
        line.insert("model".into(), json!(r.key.model));
        line.insert("traj_id".into(), json!(r.key.to_string()));
        line.insert(
            "patch".into(),
            json!(r.outcome.submission.clone().unwrap_or_default()),
        );
        line.insert("exit_status".into(), json!(r.outcome.exit_status));
        line.insert("reward".into(), json!(r.reward));
        write_line(out, &Value::Object(line))?;
        Ok(1)
    }
}

/// `trawl export --format preds`: `preds.json`.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct PredsExporterConfig {}

impl ExporterConfig for PredsExporterConfig {
    fn build(self, _: &BuildContext) -> Result<Arc<dyn Exporter>, ComponentError> {
        Ok(Arc::new(PredsExporter::default()))
    }
}

trawl_core::register!(
    exporter,
    "preds",
    "preds.json for the SWE-bench harness: {instance_id: {model_name_or_path, instance_id, model_patch}}",
    PredsExporterConfig
);

#[derive(Default)]
pub struct PredsExporter {
    preds: Mutex<BTreeMap<String, Value>>,
}

impl Exporter for PredsExporter {
    fn extension(&self) -> &str {
        "json"
    }

    fn file_name(&self) -> Option<&str> {
        Some("preds.json")
    }

    fn write(&self, r: &TrajectoryRecord, _: &mut dyn Write) -> Result<usize, ExportError> {
        let id = instance_id(r, "preds")?.to_string();
        let mut preds = self.preds.lock().unwrap_or_else(|p| p.into_inner());
        if preds.contains_key(&id) {
            return Err(ExportError::Record {
                key: r.key.to_string(),
                message: format!(
                    "instance `{id}` is selected twice, and preds.json holds one prediction per instance; add --best-of-n (or --max-per-task 1)"
                ),
            });
        }
        preds.insert(
            id.clone(),
            json!({
                "model_name_or_path": r.key.model,
                "instance_id": id,
                "model_patch": r.outcome.submission.clone().unwrap_or_default(),
            }),
        );
        Ok(1)
    }

    fn finish(&self, out: &mut dyn Write) -> Result<usize, ExportError> {
        let preds = self.preds.lock().unwrap_or_else(|p| p.into_inner());
        serde_json::to_writer_pretty(&mut *out, &*preds).map_err(std::io::Error::other)?;
        out.write_all(b"\n")?;
        Ok(0)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn text_record_messages() -> Vec<Message> {
        vec![
            Message::system("You are an engineer."),
            Message::user("Fix the bug."),
            Message::assistant("THOUGHT: look.\n\n```bash\nls -la\n```"),
            Message::user("<returncode>0</returncode>\n<output>\na.py\n</output>"),
            Message::assistant(
                "THOUGHT: done.\n\n```bash\necho COMPLETE_TASK_AND_SUBMIT_FINAL_OUTPUT\n```",
            ),
            Message::user("Submitted."),
        ]
    }

    #[test]
    fn a_bash_text_trajectory_renders_in_every_style() {
        let msgs = text_record_messages();
        let tools = vec![ToolSchema::function(
            "bash",
            "run",
            json!({"type": "object"}),
        )];
        let xml = render(&msgs, &tools, Style::Xml, &[]);
        assert_eq!(
            xml[2]["content"],
            "THOUGHT: look.\n\n<function=bash>\n<parameter=command>ls -la</parameter>\n</function>"
        );
        assert!(xml[0]["content"]
            .as_str()
            .unwrap_or("")
            .contains("<function=TOOL_NAME>"));
        assert_eq!(xml[3]["role"], "user");
        let ticks = render(&msgs, &tools, Style::Ticks, &[]);
        assert_eq!(ticks[2]["content"], "THOUGHT: look.\n\n```\nls -la\n```");
        let tool = render(&msgs, &tools, Style::Tool, &[]);
        assert_eq!(tool[2]["tool_calls"][0]["function"]["name"], "bash");
        assert_eq!(tool[3]["role"], "tool");
        assert_eq!(tool[3]["tool_call_id"], tool[2]["tool_calls"][0]["id"]);
    }

    #[test]
    fn only_swe_rollouts_are_exported_under_their_own_instance_id() {
        let mut r = trawl_core::strategies::example_record();
        r.key.task = "a-file-name".into();
        r.task.data = json!({"question": "1 + 1?", "answer": "2"});
        r.outcome.submission = Some("2".into());
        for format in ["preds", "swe_smith"] {
            let exporter: Box<dyn Exporter> = if format == "preds" {
                Box::new(PredsExporter::default())
            } else {
                Box::new(SweSmithExporter { style: Style::Tool })
            };
            let err = exporter.write(&r, &mut Vec::new()).unwrap_err();
            assert!(err.to_string().contains("not a SWE rollout"), "{err}");
        }
        r.task.data = json!({"instance_id": "owner__repo-1"});
        let preds = PredsExporter::default();
        preds.write(&r, &mut Vec::new()).unwrap();
        let mut out = Vec::new();
        preds.finish(&mut out).unwrap();
        let v: Value = serde_json::from_slice(&out).unwrap();
        assert_eq!(v["owner__repo-1"]["instance_id"], "owner__repo-1");
        let mut line = Vec::new();
        SweSmithExporter { style: Style::Tool }
            .write(&r, &mut line)
            .unwrap();
        let v: Value = serde_json::from_slice(&line).unwrap();
        assert_eq!(v["instance_id"], "owner__repo-1");
    }

    #[test]
    fn editor_calls_read_as_command_lines() {
        let act = Act {
            id: "x".into(),
            name: "str_replace_editor".into(),
            args: serde_json::from_value(json!({"command": "str_replace", "path": "/t/a.py", "old_str": "a = 1", "new_str": "a = 2"})).unwrap_or_default(),
        };
        assert_eq!(
            command_line(&act),
            "str_replace_editor str_replace /t/a.py --old_str 'a = 1' --new_str 'a = 2'"
        );
    }
}

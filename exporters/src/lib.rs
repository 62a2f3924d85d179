//! Built-in exporters. Each writes JSON lines in a shape trainers already read:
//! - `openai`: `{"messages", "tools", ...metadata}` (TRL SFTTrainer conversational, torchtune
//!   `openai`, SWE-smith `tool` style). Tool schemas are always included.
//! - `sharegpt`: `{"conversations": [{"from", "value"}], "system", "tools"}` (LLaMA-Factory).
//! - `turns`: one `{"messages": [user, assistant], "metadata": {...}}` per assistant turn
//!   (PettingLLMs' SFT data collector).
//! - `swe_smith` and `preds`: SWE-smith's training records and SWE-bench's predictions (see
//!   [`swe`]).
//! - `trajectory`: the selected records themselves, a filtered run.

#![forbid(unsafe_code)]

pub mod rl;
pub mod swe;
pub mod verl;

use std::borrow::Cow;
use std::collections::BTreeMap;
use std::io::Write;
use std::sync::{Arc, Mutex};

use serde::Deserialize;
use serde_json::{json, Value};
use trawl_core::registry::{BuildContext, ComponentError, ExporterConfig};
use trawl_core::{ExportError, Exporter, Message, MessageRole, TrajectoryRecord};

/// How a format writes the tool schemas of a record.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum ToolsStyle {
    /// A list of OpenAI tool objects, as chat templates take them (TRL, transformers).
    #[default]
    Objects,
    /// The same list as one JSON string. `datasets` infers one schema for a column, so a list of
    /// objects gets every tool's parameters from every row, filled with nulls (datasets 4.x, the
    /// version LLaMA-Factory pins); a string column is read as written.
    Json,
}

impl ToolsStyle {
    fn value(self, r: &TrajectoryRecord) -> Value {
        match self {
            ToolsStyle::Objects => json!(r.tools),
            ToolsStyle::Json => json!(serde_json::to_string(&r.tools).unwrap_or_default()),
        }
    }
}

/// What a format counts beside its examples (see `Exporter::counts`).
#[derive(Default)]
pub(crate) struct Counts(Mutex<BTreeMap<String, usize>>);

impl Counts {
    pub(crate) fn add(&self, name: &str, n: usize) {
        if n == 0 {
            return;
        }
        let mut m = self.0.lock().unwrap_or_else(|p| p.into_inner());
        *m.entry(name.to_string()).or_insert(0) += n;
    }

    pub(crate) fn snapshot(&self) -> BTreeMap<String, usize> {
        self.0.lock().unwrap_or_else(|p| p.into_inner()).clone()
    }
}

fn write_line(out: &mut dyn Write, value: &Value) -> Result<(), ExportError> {
    serde_json::to_writer(&mut *out, value).map_err(std::io::Error::other)?;
    out.write_all(b"\n")?;
    Ok(())
}

/// The conversations a record holds for export: the one conversation of a single-agent rollout,
/// else one per agent (each agent's own messages), or only `only`'s when it is given.
fn conversations<'r>(
    r: &'r TrajectoryRecord,
    only: Option<&str>,
) -> Vec<(Option<String>, Cow<'r, [Message]>)> {
    let agents = trawl_core::agents(&r.messages);
    match only {
        Some(a) if agents.iter().any(|x| x == a) => {
            vec![(
                Some(a.to_string()),
                Cow::Owned(trawl_core::agent_view(&r.messages, a)),
            )]
        }
        Some(_) => Vec::new(),
        // The common single-agent case exports the record's own messages, uncopied.
        None if agents.is_empty() => vec![(None, Cow::Borrowed(r.messages.as_slice()))],
        None => agents
            .into_iter()
            .map(|a| {
                let view = trawl_core::agent_view(&r.messages, &a);
                (Some(a), Cow::Owned(view))
            })
            .collect(),
    }
}

/// An agent's own reward when an evaluator gave one (`reward.<agent>` component), else the
/// record's.
fn agent_reward(r: &TrajectoryRecord, agent: Option<&str>) -> f64 {
    agent
        .and_then(|a| {
            let key = format!("reward.{a}");
            r.evaluations
                .iter()
                .find_map(|e| e.components.get(&key).copied())
        })
        .unwrap_or(r.reward)
}

/// The metadata every format carries beside its training fields, for one agent's conversation.
fn agent_metadata(r: &TrajectoryRecord, agent: Option<&str>) -> serde_json::Map<String, Value> {
    let mut m = metadata(r);
    if let Some(a) = agent {
        m.insert("agent".into(), json!(a));
        m.insert("reward".into(), json!(agent_reward(r, Some(a))));
    }
    m
}

/// The metadata every format carries beside its training fields.
fn metadata(r: &TrajectoryRecord) -> serde_json::Map<String, Value> {
    let mut m = serde_json::Map::new();
    m.insert("id".into(), json!(r.key.to_string()));
    m.insert("task_id".into(), json!(r.key.task));
    m.insert("environment".into(), json!(r.key.environment));
    m.insert("scaffold".into(), json!(r.key.scaffold));
    m.insert("model".into(), json!(r.key.model));
    m.insert("sample".into(), json!(r.key.sample));
    m.insert("reward".into(), json!(r.reward));
    m.insert("success".into(), json!(r.success));
    m.insert("exit_status".into(), json!(r.outcome.exit_status));
    m
}

/// `trawl export --format openai`.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct OpenAiExporterConfig {
    /// In multi-agent rollouts, export only this agent's conversation (default: each agent's).
    #[serde(default)]
    pub agent: Option<String>,
    /// `objects` (default) or `json`: the tool schemas as one JSON string.
    #[serde(default)]
    pub tools: ToolsStyle,
    /// Keep the messages after the model's last turn (the environment's closing observation,
    /// such as a bash scaffold's "Submitted."). Off by default: an SFT row ends where the model
    /// stopped, as ShareGPT's does.
    #[serde(default)]
    pub keep_trailing: bool,
}

impl ExporterConfig for OpenAiExporterConfig {
    fn build(self, _: &BuildContext) -> Result<Arc<dyn Exporter>, ComponentError> {
        Ok(Arc::new(OpenAiExporter {
            agent: self.agent,
            tools: self.tools,
            keep_trailing: self.keep_trailing,
            counts: Counts::default(),
        }))
    }
}

trawl_core::register!(
    exporter,
    "openai",
    "OpenAI messages JSONL with tool schemas (TRL SFTTrainer, torchtune, SWE-smith tool style)",
    OpenAiExporterConfig
);

#[derive(Default)]
pub struct OpenAiExporter {
    pub agent: Option<String>,
    pub tools: ToolsStyle,
    /// Keep messages after the last assistant turn (see [`OpenAiExporterConfig::keep_trailing`]).
    pub keep_trailing: bool,
    counts: Counts,
}

/// The conversation up to and including its last assistant message: what follows it (a tool
/// result or observation the model never answered) is no training target and teaches nothing.
/// A conversation with no assistant message is returned whole.
pub fn through_last_assistant(messages: &[Message]) -> &[Message] {
    match messages
        .iter()
        .rposition(|m| m.role == MessageRole::Assistant)
    {
        Some(last) => &messages[..=last],
        None => messages,
    }
}

impl Exporter for OpenAiExporter {
    fn write(&self, r: &TrajectoryRecord, out: &mut dyn Write) -> Result<usize, ExportError> {
        let mut written = 0;
        for (agent, messages) in conversations(r, self.agent.as_deref()) {
            let messages: &[Message] = if self.keep_trailing {
                &messages
            } else {
                let kept = through_last_assistant(&messages);
                self.counts
                    .add("trailing_messages_dropped", messages.len() - kept.len());
                kept
            };
            let mut line = serde_json::Map::new();
            line.insert("messages".into(), trawl_core::wire_messages(messages));
            line.insert("tools".into(), self.tools.value(r));
            line.extend(agent_metadata(r, agent.as_deref()));
            write_line(out, &Value::Object(line))?;
            written += 1;
        }
        Ok(written)
    }

    fn counts(&self) -> BTreeMap<String, usize> {
        self.counts.snapshot()
    }
}

/// `trawl export --format sharegpt`.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ShareGptExporterConfig {
    /// In multi-agent rollouts, export only this agent's conversation (default: each agent's).
    #[serde(default)]
    pub agent: Option<String>,
}

impl ExporterConfig for ShareGptExporterConfig {
    fn build(self, _: &BuildContext) -> Result<Arc<dyn Exporter>, ComponentError> {
        Ok(Arc::new(ShareGptExporter {
            agent: self.agent,
            counts: Counts::default(),
        }))
    }
}

trawl_core::register!(
    exporter,
    "sharegpt",
    "ShareGPT conversations with system and tools (LLaMA-Factory)",
    ShareGptExporterConfig
);

#[derive(Default)]
pub struct ShareGptExporter {
    pub agent: Option<String>,
    counts: Counts,
}

/// A tool call as LLaMA-Factory's `function_call` turns spell it: `{"name", "arguments"}`, the
/// arguments as an object when they parse.
fn call_value(m: &Message) -> Value {
    let calls: Vec<Value> = m
        .tool_calls
        .iter()
        .map(|c| {
            let args = serde_json::from_str::<Value>(&c.function.arguments)
                .unwrap_or_else(|_| json!(c.function.arguments));
            json!({"name": c.function.name, "arguments": args})
        })
        .collect();
    if calls.len() == 1 {
        calls.into_iter().next().unwrap_or(Value::Null)
    } else {
        Value::Array(calls)
    }
}

/// The conversation in ShareGPT turns, or `None` when ShareGPT cannot represent it.
///
/// LLaMA-Factory wants input turns (human, observation) and model turns (gpt, function_call) to
/// alternate, starting with input and ending with the model. Consecutive input messages are
/// joined (tool results of one reply become one observation, a JSON list when there are
/// several), consecutive plain model replies are joined, and trailing input is dropped. A
/// conversation that opens with the model, or has a tool call next to another model turn, has
/// no faithful ShareGPT form.
pub fn sharegpt_turns(messages: &[Message]) -> Option<Vec<(String, String)>> {
    let is_model = |from: &str| from == "gpt" || from == "function_call";
    let mut turns: Vec<(String, String)> = Vec::new();
    let mut tool_results: Vec<String> = Vec::new();
    let flush_tools = |turns: &mut Vec<(String, String)>, tool_results: &mut Vec<String>| {
        if tool_results.is_empty() {
            return;
        }
        let value = if tool_results.len() == 1 {
            tool_results.remove(0)
        } else {
            json!(tool_results).to_string()
        };
        tool_results.clear();
        push_input(turns, "observation", value);
    };
    for m in messages {
        if m.role != MessageRole::Tool {
            flush_tools(&mut turns, &mut tool_results);
        }
        let (from, value) = match m.role {
            MessageRole::System => continue,
            MessageRole::Tool => {
                tool_results.push(m.text().to_string());
                continue;
            }
            MessageRole::User => {
                push_input(&mut turns, "human", m.text().to_string());
                continue;
            }
            MessageRole::Assistant if !m.tool_calls.is_empty() => {
                ("function_call", call_value(m).to_string())
            }
            MessageRole::Assistant => ("gpt", m.text().to_string()),
        };
        match turns.last_mut() {
            None => return None,
            Some((prev, text)) if is_model(prev) => {
                if prev != "gpt" || from != "gpt" {
                    return None;
                }
                text.push_str("\n\n");
                text.push_str(&value);
            }
            Some(_) => turns.push((from.to_string(), value)),
        }
    }
    flush_tools(&mut turns, &mut tool_results);
    while turns.last().is_some_and(|(from, _)| !is_model(from)) {
        turns.pop();
    }
    Some(turns)
}

/// Appends an input turn, joining it to a preceding input turn.
fn push_input(turns: &mut Vec<(String, String)>, from: &str, value: String) {
    match turns.last_mut() {
        Some((prev, text)) if prev == "human" || prev == "observation" => {
            text.push_str("\n\n");
            text.push_str(&value);
        }
        _ => turns.push((from.to_string(), value)),
    }
}

impl Exporter for ShareGptExporter {
    fn write(&self, r: &TrajectoryRecord, out: &mut dyn Write) -> Result<usize, ExportError> {
        let mut written = 0;
        for (agent, messages) in conversations(r, self.agent.as_deref()) {
            let Some(turns) = sharegpt_turns(&messages).filter(|t| !t.is_empty()) else {
                self.counts.add("conversations_unrepresentable", 1);
                continue;
            };
            // The row ends at the model's last turn (`sharegpt_turns` drops trailing input).
            self.counts.add(
                "trailing_messages_dropped",
                messages.len() - through_last_assistant(&messages).len(),
            );
            // A `function_call` turn holds the calls only: the text a reply wrote beside its
            // calls, and reasoning, have no place in the format. Counted, never silently lost.
            let replies = || messages.iter().filter(|m| m.role == MessageRole::Assistant);
            self.counts.add(
                "tool_call_text_dropped",
                replies()
                    .filter(|m| !m.tool_calls.is_empty() && !m.text().trim().is_empty())
                    .count(),
            );
            self.counts.add(
                "reasoning_dropped",
                replies()
                    .filter(|m| {
                        m.reasoning_content
                            .as_deref()
                            .is_some_and(|t| !t.trim().is_empty())
                    })
                    .count(),
            );
            let system = messages
                .iter()
                .filter(|m| m.role == MessageRole::System)
                .map(Message::text)
                .collect::<Vec<_>>()
                .join("\n\n");
            let tools: Vec<Value> = r
                .tools
                .iter()
                .map(|t| json!({"name": t.function.name, "description": t.function.description, "parameters": t.function.parameters}))
                .collect();
            let mut line = serde_json::Map::new();
            line.insert(
                "conversations".into(),
                Value::Array(
                    turns
                        .into_iter()
                        .map(|(from, value)| json!({"from": from, "value": value}))
                        .collect(),
                ),
            );
            line.insert("system".into(), json!(system));
            line.insert(
                "tools".into(),
                json!(serde_json::to_string(&tools).unwrap_or_default()),
            );
            line.extend(agent_metadata(r, agent.as_deref()));
            write_line(out, &Value::Object(line))?;
            written += 1;
        }
        Ok(written)
    }

    fn counts(&self) -> BTreeMap<String, usize> {
        self.counts.snapshot()
    }
}

/// `trawl export --format turns`.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TurnsExporterConfig {
    /// In multi-agent rollouts, export only this agent's turns (default: every agent's).
    #[serde(default)]
    pub agent: Option<String>,
}

impl ExporterConfig for TurnsExporterConfig {
    fn build(self, _: &BuildContext) -> Result<Arc<dyn Exporter>, ComponentError> {
        Ok(Arc::new(TurnsExporter { agent: self.agent }))
    }
}

trawl_core::register!(
    exporter,
    "turns",
    "One prompt/response pair per assistant turn with PettingLLMs metadata",
    TurnsExporterConfig
);

#[derive(Default)]
pub struct TurnsExporter {
    pub agent: Option<String>,
}

/// The prompt an assistant turn answered: the one message before it when there is only one,
/// else every earlier non-system message with its role.
fn turn_prompt(history: &[Message]) -> String {
    let visible: Vec<&Message> = history
        .iter()
        .filter(|m| m.role != MessageRole::System)
        .collect();
    if let [only] = visible.as_slice() {
        return only.text().to_string();
    }
    visible
        .iter()
        .map(|m| {
            let role = match m.role {
                MessageRole::User => "User",
                MessageRole::Assistant => "Assistant",
                MessageRole::Tool => "Tool",
                MessageRole::System => "System",
            };
            let mut text = m.text().to_string();
            for c in &m.tool_calls {
                text.push_str(&format!(
                    "\n[call {}({})]",
                    c.function.name, c.function.arguments
                ));
            }
            format!("{role}: {text}")
        })
        .collect::<Vec<_>>()
        .join("\n\n")
}

impl Exporter for TurnsExporter {
    fn write(&self, r: &TrajectoryRecord, out: &mut dyn Write) -> Result<usize, ExportError> {
        let mut written = 0;
        let all_agents = trawl_core::agents(&r.messages);
        for (agent, messages) in conversations(r, self.agent.as_deref()) {
            let agent_idx = agent
                .as_ref()
                .and_then(|a| all_agents.iter().position(|x| x == a))
                .unwrap_or(0);
            let agent_name = agent.clone().unwrap_or_else(|| r.key.scaffold.clone());
            let episode_reward = agent_reward(r, agent.as_deref());
            // Where each message of this conversation sits in the record.
            let positions: Vec<usize> = match &agent {
                None => (0..r.messages.len()).collect(),
                Some(a) => r
                    .messages
                    .iter()
                    .enumerate()
                    .filter(|(_, m)| m.agent.as_deref() == Some(a.as_str()))
                    .map(|(i, _)| i)
                    .collect(),
            };
            let stepwise = r
                .steps
                .iter()
                .any(|s| s.reward.is_some() && s.reply.is_some());
            for (turn_idx, (i, m)) in messages
                .iter()
                .enumerate()
                .filter(|(_, m)| m.role == MessageRole::Assistant)
                .enumerate()
            {
                // The environment's rewards for the steps this reply took, when it gives
                // rewards step by step; else the episode's reward, and the row says which.
                let (reward, scope) = if stepwise {
                    let at = positions.get(i).and_then(|p| u32::try_from(*p).ok());
                    let earned: f64 = r
                        .steps
                        .iter()
                        .filter(|s| s.reply.is_some() && s.reply == at)
                        .filter_map(|s| s.reward)
                        .sum();
                    (earned, "turn")
                } else {
                    (episode_reward, "episode")
                };
                let line = json!({
                    "messages": [
                        {"role": "user", "content": turn_prompt(&messages[..i])},
                        m,
                    ],
                    "metadata": {
                        "agent_name": agent_name,
                        "policy_name": r.key.model,
                        "reward": reward,
                        "reward_scope": scope,
                        "episode_reward": episode_reward,
                        "env_success": r.success,
                        "timestamp": r.timing.started_at,
                        "env_name": r.key.environment,
                        "env_idx": r.key.task,
                        "rollout_idx": r.key.sample,
                        "turn_idx": turn_idx,
                        "agent_idx": agent_idx,
                    },
                });
                write_line(out, &line)?;
                written += 1;
            }
        }
        Ok(written)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use trawl_core::ToolCall;

    fn tool_conversation() -> Vec<Message> {
        let mut call = Message::assistant("");
        call.content = None;
        call.tool_calls = vec![
            ToolCall::function("a", "calculator", r#"{"expression":"2+2"}"#),
            ToolCall::function("b", "calculator", "oops"),
        ];
        vec![
            Message::system("be brief"),
            Message::user("2+2?"),
            call,
            Message::tool("a", "4"),
            Message::tool("b", "error"),
            Message::assistant("4"),
            Message::user("thanks"),
        ]
    }

    /// A bash scaffold's rollout: its last command submits, and the environment's "Submitted."
    /// comes back as a user message after the model's last turn.
    fn bash_rollout() -> TrajectoryRecord {
        let task = trawl_core::Task::new("t1", json!({"question": "count the files"}));
        trawl_core::testing::record(
            "code",
            &task,
            vec![
                Message::system("You run one bash command per reply."),
                Message::user("Count the files."),
                Message::assistant("```bash\nls | wc -l\n```"),
                Message::user("<returncode>0</returncode>\n<output>3</output>"),
                Message::assistant("```bash\necho COMPLETE_TASK_AND_SUBMIT_FINAL_OUTPUT\n```"),
                Message::user("Submitted."),
            ],
            Some("3"),
        )
    }

    fn export_openai(
        settings: Value,
        r: &TrajectoryRecord,
    ) -> (Vec<Value>, BTreeMap<String, usize>) {
        let config: OpenAiExporterConfig = serde_json::from_value(settings).expect("settings");
        let exporter = config.build(&BuildContext::default()).expect("builds");
        let mut out = Vec::new();
        exporter.write(r, &mut out).expect("writes");
        let rows = String::from_utf8(out)
            .expect("utf-8")
            .lines()
            .map(|l| serde_json::from_str(l).expect("a JSON line"))
            .collect();
        (rows, exporter.counts())
    }

    #[test]
    fn openai_rows_end_at_the_model_s_last_turn_unless_asked() {
        let r = bash_rollout();
        let (rows, counts) = export_openai(json!({}), &r);
        let roles: Vec<&str> = rows[0]["messages"]
            .as_array()
            .expect("messages")
            .iter()
            .map(|m| m["role"].as_str().unwrap_or(""))
            .collect();
        assert_eq!(roles, ["system", "user", "assistant", "user", "assistant"]);
        assert_eq!(counts.get("trailing_messages_dropped"), Some(&1));

        let (rows, counts) = export_openai(json!({"keep_trailing": true}), &r);
        let messages = rows[0]["messages"].as_array().expect("messages");
        assert_eq!(messages.len(), 6);
        assert_eq!(messages[5]["content"], "Submitted.");
        assert!(counts.is_empty(), "{counts:?}");

        // ShareGPT ends on the model too, and counts the same.
        let exporter = ShareGptExporterConfig::default()
            .build(&BuildContext::default())
            .expect("builds");
        let mut out = Vec::new();
        exporter.write(&r, &mut out).expect("writes");
        let row: Value = serde_json::from_slice(&out).expect("one JSON line");
        let turns = row["conversations"].as_array().expect("turns");
        assert_eq!(turns.last().map(|t| &t["from"]), Some(&json!("gpt")));
        assert_eq!(exporter.counts().get("trailing_messages_dropped"), Some(&1));

        // A rollout that already ends on the model loses nothing and counts nothing.
        let mut done = r.clone();
        done.messages.pop();
        let (rows, counts) = export_openai(json!({}), &done);
        assert_eq!(rows[0]["messages"].as_array().map(Vec::len), Some(5));
        assert!(counts.is_empty(), "{counts:?}");
    }

    #[test]
    fn sharegpt_alternates_and_ends_on_the_model() {
        let turns = sharegpt_turns(&tool_conversation()).unwrap();
        let froms: Vec<&str> = turns.iter().map(|(f, _)| f.as_str()).collect();
        assert_eq!(froms, ["human", "function_call", "observation", "gpt"]);
        let calls: Value = serde_json::from_str(&turns[1].1).unwrap();
        assert_eq!(calls[0]["arguments"]["expression"], "2+2");
        assert_eq!(calls[1]["arguments"], "oops");
        assert_eq!(
            serde_json::from_str::<Vec<String>>(&turns[2].1).unwrap(),
            ["4", "error"]
        );
    }

    #[test]
    fn turn_prompts_are_the_question_or_the_history() {
        let msgs = tool_conversation();
        assert_eq!(turn_prompt(&msgs[..2]), "2+2?");
        let p = turn_prompt(&msgs[..5]);
        assert!(
            p.starts_with("User: 2+2?")
                && p.contains("[call calculator(")
                && p.ends_with("Tool: error"),
            "{p}"
        );
    }
}

#[cfg(test)]
mod properties {
    use super::*;
    use proptest::prelude::*;
    use trawl_core::ToolCall;

    fn message() -> impl Strategy<Value = Message> {
        (0u8..4, "\\PC{0,20}", 0usize..3).prop_map(|(role, text, calls)| match role {
            0 => Message::system(text),
            1 => Message::user(text),
            2 => {
                let mut m = Message::assistant(text);
                m.tool_calls = (0..calls)
                    .map(|i| ToolCall::function(format!("c{i}"), "f", "{}"))
                    .collect();
                m
            }
            _ => Message::tool("c0", text),
        })
    }

    proptest! {
        #[test]
        fn sharegpt_turns_always_alternate_and_end_on_the_model(messages in proptest::collection::vec(message(), 0..12)) {
            let is_model = |from: &str| from == "gpt" || from == "function_call";
            if let Some(turns) = sharegpt_turns(&messages) {
                for (i, (from, _)) in turns.iter().enumerate() {
                    prop_assert_eq!(is_model(from), i % 2 == 1, "{:?}", turns);
                }
                prop_assert!(turns.len() % 2 == 0, "{:?}", turns);
            } else {
                // Only conversations with model turns that cannot be placed are refused.
                prop_assert!(messages.iter().any(|m| m.role == MessageRole::Assistant));
            }
        }
    }
}

/// `trawl export --format trajectory`: the selected records themselves, one
/// `trawl.trajectory` JSON line each: a filtered run that `trawl stats`, `diff` and `export`
/// read like a run's own `trajectories.jsonl`.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TrajectoryExporterConfig {}

impl ExporterConfig for TrajectoryExporterConfig {
    fn build(self, _: &BuildContext) -> Result<Arc<dyn Exporter>, ComponentError> {
        Ok(Arc::new(TrajectoryExporter))
    }
}

trawl_core::register!(
    exporter,
    "trajectory",
    "The selected records themselves (trawl.trajectory JSON lines): a filtered run",
    TrajectoryExporterConfig
);

pub struct TrajectoryExporter;

impl Exporter for TrajectoryExporter {
    fn write(&self, r: &TrajectoryRecord, out: &mut dyn Write) -> Result<usize, ExportError> {
        serde_json::to_writer(&mut *out, r).map_err(std::io::Error::other)?;
        out.write_all(b"\n")?;
        Ok(1)
    }
}

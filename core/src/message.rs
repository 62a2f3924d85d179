//! OpenAI chat-completions messages, tool calls and tool schemas: the lingua franca every
//! backend, scaffold and exporter speaks.

use serde::{Deserialize, Serialize};
use serde_json::Value;

/// Who wrote a message.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Role {
    System,
    User,
    Assistant,
    Tool,
}

/// One chat message, exactly as the OpenAI chat-completions API spells it.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Message {
    pub role: Role,
    /// `null` on an assistant message that only calls tools.
    pub content: Option<String>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub tool_calls: Vec<ToolCall>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub tool_call_id: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub name: Option<String>,
    /// Reasoning text some servers return beside the content; kept when present.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub reasoning_content: Option<String>,
    /// Which agent's conversation this message belongs to, in a rollout where several agents
    /// take turns (a coder and a tester). trawl's own field: never sent to a model server, and
    /// absent from single-agent records.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub agent: Option<String>,
}

impl Message {
    fn new(role: Role, content: impl Into<String>) -> Self {
        Message {
            role,
            content: Some(content.into()),
            tool_calls: Vec::new(),
            tool_call_id: None,
            name: None,
            reasoning_content: None,
            agent: None,
        }
    }

    pub fn system(content: impl Into<String>) -> Self {
        Self::new(Role::System, content)
    }

    pub fn user(content: impl Into<String>) -> Self {
        Self::new(Role::User, content)
    }

    pub fn assistant(content: impl Into<String>) -> Self {
        Self::new(Role::Assistant, content)
    }

    /// The result of the tool call `call_id`.
    pub fn tool(call_id: impl Into<String>, content: impl Into<String>) -> Self {
        let mut m = Self::new(Role::Tool, content);
        m.tool_call_id = Some(call_id.into());
        m
    }

    /// The same message, marked as part of `agent`'s conversation.
    pub fn for_agent(mut self, agent: &str) -> Self {
        self.agent = Some(agent.to_string());
        self
    }

    /// The content, or the empty string when there is none.
    pub fn text(&self) -> &str {
        self.content.as_deref().unwrap_or("")
    }
}

/// `messages` as chat-completions servers and trainers read them. An assistant turn that only
/// calls tools carries `content: ""`, never `null`: llama.cpp's server answers 500 to a null
/// content and many chat templates (SmolLM2's among them) fail on it. trawl's own `agent` mark
/// is left out.
pub fn wire_messages(messages: &[Message]) -> Value {
    Value::Array(
        messages
            .iter()
            .map(|m| {
                let mut v = serde_json::to_value(m).unwrap_or(Value::Null);
                if let Value::Object(o) = &mut v {
                    if o.get("content").is_none_or(Value::is_null) {
                        o.insert("content".into(), Value::String(String::new()));
                    }
                    o.remove("agent");
                }
                v
            })
            .collect(),
    )
}

/// The agents that speak in `messages`, in order of first appearance; empty when the rollout
/// had a single agent (no message carries an `agent`).
pub fn agents(messages: &[Message]) -> Vec<String> {
    let mut out: Vec<String> = Vec::new();
    for a in messages.iter().filter_map(|m| m.agent.as_deref()) {
        if !out.iter().any(|x| x == a) {
            out.push(a.to_string());
        }
    }
    out
}

/// `agent`'s own conversation: the messages marked with it, the mark removed.
pub fn agent_view(messages: &[Message], agent: &str) -> Vec<Message> {
    messages
        .iter()
        .filter(|m| m.agent.as_deref() == Some(agent))
        .map(|m| Message {
            agent: None,
            ..m.clone()
        })
        .collect()
}

/// A call the model asked for: `{"id", "type": "function", "function": {"name", "arguments"}}`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ToolCall {
    pub id: String,
    #[serde(rename = "type", default = "function_type")]
    pub kind: String,
    pub function: FunctionCall,
}

/// The function half of a tool call. `arguments` is a JSON *string*, as the API sends it; it may
/// be malformed, since a model wrote it.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct FunctionCall {
    pub name: String,
    #[serde(default)]
    pub arguments: String,
}

fn function_type() -> String {
    "function".to_string()
}

impl ToolCall {
    pub fn function(
        id: impl Into<String>,
        name: impl Into<String>,
        arguments: impl Into<String>,
    ) -> Self {
        ToolCall {
            id: id.into(),
            kind: function_type(),
            function: FunctionCall {
                name: name.into(),
                arguments: arguments.into(),
            },
        }
    }
}

/// A tool offered to the model: `{"type": "function", "function": {"name", "description", "parameters"}}`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ToolSchema {
    #[serde(rename = "type", default = "function_type")]
    pub kind: String,
    pub function: FunctionSchema,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct FunctionSchema {
    pub name: String,
    #[serde(default)]
    pub description: String,
    /// A JSON schema for the arguments object.
    #[serde(default)]
    pub parameters: Value,
}

impl ToolSchema {
    pub fn function(
        name: impl Into<String>,
        description: impl Into<String>,
        parameters: Value,
    ) -> Self {
        ToolSchema {
            kind: function_type(),
            function: FunctionSchema {
                name: name.into(),
                description: description.into(),
                parameters,
            },
        }
    }

    pub fn name(&self) -> &str {
        &self.function.name
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    #[test]
    fn assistant_tool_call_round_trips_in_openai_shape() {
        let raw = r#"{"role":"assistant","content":null,"tool_calls":[{"id":"c1","type":"function","function":{"name":"calculator","arguments":"{\"expression\":\"2+2\"}"}}]}"#;
        let m: Message = serde_json::from_str(raw).unwrap();
        assert_eq!(m.tool_calls[0].function.name, "calculator");
        assert_eq!(serde_json::to_string(&m).unwrap(), raw);
    }

    #[test]
    fn reasoning_content_is_kept() {
        let raw = r#"{"role":"assistant","content":"4","reasoning_content":"2+2=4"}"#;
        let m: Message = serde_json::from_str(raw).unwrap();
        assert_eq!(m.reasoning_content.as_deref(), Some("2+2=4"));
        assert_eq!(serde_json::to_string(&m).unwrap(), raw);
    }

    proptest! {
        #[test]
        fn any_message_round_trips(content in proptest::option::of(".*"), args in ".*", name in "[a-z_]{1,12}") {
            let mut m = Message::assistant("");
            m.content = content;
            m.tool_calls.push(ToolCall::function("id-1", name, args));
            let back: Message = serde_json::from_str(&serde_json::to_string(&m).unwrap()).unwrap();
            prop_assert_eq!(back, m);
        }
    }
}

//! Chat templates rendered the way Hugging Face's `apply_chat_template` does: the model's own
//! Jinja template from the GGUF metadata (`tokenizer.chat_template`), with `trim_blocks` and
//! `lstrip_blocks`, Python string methods, `raise_exception`, `messages`, `tools`,
//! `add_generation_prompt`, `bos_token` and `eos_token`. llama.cpp's built-in template guessing
//! is not used: it drops SmolLM2's default system prompt, among other things.
//!
//! Templates that do not handle tools still get them: the tool schemas go into the system
//! message with an instruction to answer `<tool_call>{"name", "arguments"}</tool_call>` (the
//! Hermes/Qwen convention), and such blocks in the output are parsed back into tool calls.

use minijinja::{context, Environment, Error, ErrorKind, Value as JinjaValue};
use serde_json::{json, Value};
use trawl_core::{Message, MessageRole, ToolCall, ToolSchema};

/// A compiled chat template.
pub struct ChatTemplate {
    env: Environment<'static>,
    bos: String,
    eos: String,
    handles_tools: bool,
    handles_tool_calls: bool,
}

#[derive(Debug, thiserror::Error)]
pub enum TemplateError {
    #[error("the model's chat template does not compile: {0}")]
    Compile(String),
    #[error("the model's chat template failed to render: {0}")]
    Render(String),
}

fn raise_exception(message: String) -> Result<String, Error> {
    Err(Error::new(ErrorKind::InvalidOperation, message))
}

impl ChatTemplate {
    /// Compiles `source` (Jinja) with the model's BOS and EOS token texts.
    pub fn new(source: &str, bos: &str, eos: &str) -> Result<Self, TemplateError> {
        let mut env = Environment::new();
        env.set_trim_blocks(true);
        env.set_lstrip_blocks(true);
        env.set_unknown_method_callback(minijinja_contrib::pycompat::unknown_method_callback);
        env.add_function("raise_exception", raise_exception);
        env.add_function("strftime_now", |fmt: String| -> String {
            // Templates use this for a date in the system prompt; a fixed date keeps prompts
            // (and so rollouts) reproducible.
            let _ = fmt;
            "26 Jul 2024".to_string()
        });
        env.add_template_owned("chat", source.to_string())
            .map_err(|e| TemplateError::Compile(e.to_string()))?;
        Ok(ChatTemplate {
            env,
            bos: bos.to_string(),
            eos: eos.to_string(),
            handles_tools: source.contains("tools"),
            handles_tool_calls: source.contains("tool_calls"),
        })
    }

    /// The prompt for `messages`, ending with the assistant's turn opening.
    pub fn render(
        &self,
        messages: &[Message],
        tools: &[ToolSchema],
    ) -> Result<String, TemplateError> {
        let mut msgs: Vec<Value> = messages.iter().map(|m| self.message_value(m)).collect();
        if !tools.is_empty() && !self.handles_tools {
            inject_tool_instructions(&mut msgs, tools);
        }
        let tmpl = self
            .env
            .get_template("chat")
            .map_err(|e| TemplateError::Compile(e.to_string()))?;
        let tools_value = if tools.is_empty() || !self.handles_tools {
            JinjaValue::UNDEFINED
        } else {
            JinjaValue::from_serialize(tools)
        };
        tmpl.render(context! {
            messages => JinjaValue::from_serialize(&msgs),
            tools => tools_value,
            add_generation_prompt => true,
            bos_token => self.bos.clone(),
            eos_token => self.eos.clone(),
        })
        .map_err(|e| TemplateError::Render(format!("{e:#}")))
    }

    /// A message as templates expect it: content always a string, tool calls either as the
    /// template's own field or written into the content.
    fn message_value(&self, m: &Message) -> Value {
        let role = match m.role {
            MessageRole::System => "system",
            MessageRole::User => "user",
            MessageRole::Assistant => "assistant",
            MessageRole::Tool => "tool",
        };
        let mut content = m.text().to_string();
        let mut v = json!({"role": role});
        if !m.tool_calls.is_empty() {
            if self.handles_tool_calls {
                let calls: Vec<Value> = m
                    .tool_calls
                    .iter()
                    .map(|c| {
                        let args = serde_json::from_str::<Value>(&c.function.arguments).unwrap_or_else(|_| json!(c.function.arguments));
                        json!({"id": c.id, "type": "function", "function": {"name": c.function.name, "arguments": args}})
                    })
                    .collect();
                v["tool_calls"] = Value::Array(calls);
            } else {
                for c in &m.tool_calls {
                    if !content.is_empty() {
                        content.push('\n');
                    }
                    content.push_str(&render_call(c));
                }
            }
        }
        if let Some(id) = &m.tool_call_id {
            v["tool_call_id"] = json!(id);
        }
        v["content"] = json!(content);
        v
    }
}

/// `<tool_call>{"name": ..., "arguments": {...}}</tool_call>`
fn render_call(c: &ToolCall) -> String {
    let args = serde_json::from_str::<Value>(&c.function.arguments)
        .unwrap_or_else(|_| json!(c.function.arguments));
    format!(
        "<tool_call>\n{}\n</tool_call>",
        json!({"name": c.function.name, "arguments": args})
    )
}

/// Puts tool schemas and the calling convention into the system message (creating one if the
/// conversation has none, so a template's own default system prompt is replaced as HF does).
fn inject_tool_instructions(msgs: &mut Vec<Value>, tools: &[ToolSchema]) {
    let listing: Vec<String> = tools
        .iter()
        .map(|t| json!(t.function).to_string())
        .collect();
    let block = format!(
        "You may call functions. Available functions:\n<tools>\n{}\n</tools>\nTo call one, reply with \
         <tool_call>\n{{\"name\": <function-name>, \"arguments\": <arguments-object>}}\n</tool_call>",
        listing.join("\n")
    );
    match msgs.first_mut() {
        Some(first) if first["role"] == "system" => {
            let existing = first["content"].as_str().unwrap_or_default().to_string();
            first["content"] = json!(format!("{existing}\n\n{block}"));
        }
        _ => msgs.insert(0, json!({"role": "system", "content": block})),
    }
}

/// Splits generated text into content and tool calls written as `<tool_call>` blocks. Blocks
/// that are not valid JSON with a `name` stay in the content, so the scaffold sees what the
/// model really wrote.
pub fn parse_tool_calls(text: &str, call_prefix: &str) -> (String, Vec<ToolCall>) {
    let mut content = String::new();
    let mut calls = Vec::new();
    let mut rest = text;
    while let Some(start) = rest.find("<tool_call>") {
        let after = &rest[start + "<tool_call>".len()..];
        let (inner, next) = match after.find("</tool_call>") {
            Some(end) => (&after[..end], &after[end + "</tool_call>".len()..]),
            None => (after, ""),
        };
        match serde_json::from_str::<Value>(inner.trim()) {
            Ok(v) if v.get("name").and_then(Value::as_str).is_some() => {
                content.push_str(&rest[..start]);
                let name = v["name"].as_str().unwrap_or_default();
                let args = match v.get("arguments") {
                    Some(Value::String(s)) => s.clone(),
                    Some(other) => other.to_string(),
                    None => "{}".into(),
                };
                calls.push(ToolCall::function(
                    format!("{call_prefix}{}", calls.len()),
                    name,
                    args,
                ));
            }
            _ => content.push_str(&rest[..start + "<tool_call>".len() + inner.len()]),
        }
        rest = next;
    }
    content.push_str(rest);
    (content.trim().to_string(), calls)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// SmolLM2-135M-Instruct's template, as its tokenizer_config.json and GGUF carry it.
    pub const SMOLLM2: &str = "{% for message in messages %}{% if loop.first and messages[0]['role'] != 'system' %}{{ '<|im_start|>system\nYou are a helpful AI assistant named SmolLM, trained by Hugging Face<|im_end|>\n' }}{% endif %}{{'<|im_start|>' + message['role'] + '\n' + message['content'] + '<|im_end|>' + '\n'}}{% endfor %}{% if add_generation_prompt %}{{ '<|im_start|>assistant\n' }}{% endif %}";

    #[test]
    fn smollm2_default_system_prompt_is_kept() {
        let t = ChatTemplate::new(SMOLLM2, "<|im_start|>", "<|im_end|>").unwrap();
        let out = t.render(&[Message::user("What is 2+2?")], &[]).unwrap();
        assert_eq!(
            out,
            "<|im_start|>system\nYou are a helpful AI assistant named SmolLM, trained by Hugging Face<|im_end|>\n\
             <|im_start|>user\nWhat is 2+2?<|im_end|>\n<|im_start|>assistant\n"
        );
    }

    #[test]
    fn an_explicit_system_prompt_replaces_the_default() {
        let t = ChatTemplate::new(SMOLLM2, "", "").unwrap();
        let out = t
            .render(
                &[
                    Message::system("Answer concisely."),
                    Message::user("Hi"),
                    Message::assistant("Hello"),
                    Message::user("2+2?"),
                ],
                &[],
            )
            .unwrap();
        assert_eq!(
            out,
            "<|im_start|>system\nAnswer concisely.<|im_end|>\n<|im_start|>user\nHi<|im_end|>\n\
             <|im_start|>assistant\nHello<|im_end|>\n<|im_start|>user\n2+2?<|im_end|>\n<|im_start|>assistant\n"
        );
    }

    #[test]
    fn tools_go_into_the_system_message_of_a_template_without_tools() {
        let t = ChatTemplate::new(SMOLLM2, "", "").unwrap();
        let tool = ToolSchema::function("calculator", "Evaluate", json!({"type": "object"}));
        let mut call = Message::assistant("");
        call.content = None;
        call.tool_calls = vec![ToolCall::function(
            "c0",
            "calculator",
            r#"{"expression":"1+1"}"#,
        )];
        let out = t
            .render(
                &[Message::user("1+1?"), call, Message::tool("c0", "2")],
                &[tool],
            )
            .unwrap();
        assert!(
            out.starts_with("<|im_start|>system\nYou may call functions."),
            "{out}"
        );
        assert!(out.contains("\"name\":\"calculator\""), "{out}");
        assert!(out.contains("<|im_start|>assistant\n<tool_call>\n{\"arguments\":{\"expression\":\"1+1\"},\"name\":\"calculator\"}\n</tool_call><|im_end|>") || out.contains("<tool_call>\n{\"name\":\"calculator\""), "{out}");
        assert!(out.contains("<|im_start|>tool\n2<|im_end|>"), "{out}");
    }

    #[test]
    fn templates_with_python_methods_and_exceptions_work() {
        let src = "{% if messages[0]['role'] == 'system' %}{{ messages[0]['content'].strip() }}{% endif %}{% for m in messages %}{% if m['role'] == 'bad' %}{{ raise_exception('bad role') }}{% endif %}{% endfor %}";
        let t = ChatTemplate::new(src, "", "").unwrap();
        assert_eq!(t.render(&[Message::system("  hi  ")], &[]).unwrap(), "hi");
    }

    #[test]
    fn tool_call_blocks_are_parsed_and_bad_ones_kept_as_text() {
        let (content, calls) = parse_tool_calls(
            "Let me compute.\n<tool_call>\n{\"name\": \"calculator\", \"arguments\": {\"expression\": \"6*7\"}}\n</tool_call>",
            "call_",
        );
        assert_eq!(content, "Let me compute.");
        assert_eq!(calls.len(), 1);
        assert_eq!(calls[0].function.name, "calculator");
        assert_eq!(
            serde_json::from_str::<Value>(&calls[0].function.arguments).unwrap()["expression"],
            "6*7"
        );
        let (content, calls) = parse_tool_calls("<tool_call>not json</tool_call> ok", "c");
        assert!(calls.is_empty());
        assert!(content.contains("not json"));
    }
}

//! Actions written as text, for models without native tool calling and for exporters that
//! render tool calls into text (SWE-agent's and SWE-smith's formats):
//!
//! - XML function calls: `<function=NAME>\n<parameter=KEY>VALUE</parameter>\n</function>`;
//! - fenced action blocks: ```` ```bash\nCOMMAND\n``` ````;
//!
//! plus the helpers scaffolds share: long observations cut to head and tail, and the cost of
//! an episode's tokens.

use serde::{Deserialize, Serialize};
use serde_json::{Map, Value};

use crate::model::Usage;

/// One call written in the XML text format.
#[derive(Debug, Clone, PartialEq)]
pub struct XmlCall {
    pub name: String,
    /// Parameters in the order written.
    pub params: Vec<(String, String)>,
}

impl XmlCall {
    /// The parameters as a JSON object (tool-call arguments): values that read as integers or
    /// JSON arrays become those, everything else a string.
    pub fn arguments(&self) -> Map<String, Value> {
        self.params
            .iter()
            .map(|(k, v)| {
                let parsed = match v.trim() {
                    t if t.starts_with('[') => serde_json::from_str::<Value>(t).ok(),
                    t if !t.is_empty() && t.parse::<i64>().is_ok() => {
                        serde_json::from_str::<Value>(t).ok()
                    }
                    _ => None,
                };
                (
                    k.clone(),
                    parsed.unwrap_or_else(|| Value::String(v.clone())),
                )
            })
            .collect()
    }
}

/// Renders a call in the XML text format. String values are written as they are; other JSON
/// values in their JSON spelling.
pub fn render_xml_call(name: &str, arguments: &Map<String, Value>) -> String {
    let mut out = format!("<function={name}>\n");
    for (k, v) in arguments {
        let text = match v {
            Value::String(s) => s.clone(),
            other => other.to_string(),
        };
        out.push_str(&format!("<parameter={k}>{text}</parameter>\n"));
    }
    out.push_str("</function>");
    out
}

/// Every call in `text`, in order. Returns the text before the first call (the thought) too.
pub fn parse_xml_calls(text: &str) -> (String, Vec<XmlCall>) {
    let mut calls = Vec::new();
    let mut rest = text;
    let mut thought = None;
    while let Some(start) = rest.find("<function=") {
        if thought.is_none() {
            thought = Some(rest[..start].trim().to_string());
        }
        let after = &rest[start + "<function=".len()..];
        let Some(gt) = after.find('>') else { break };
        let name = after[..gt].trim().to_string();
        let body_start = &after[gt + 1..];
        let (body, next) = match body_start.find("</function>") {
            Some(end) => (&body_start[..end], &body_start[end + "</function>".len()..]),
            None => (body_start, ""),
        };
        calls.push(XmlCall {
            name,
            params: parse_params(body),
        });
        rest = next;
    }
    (thought.unwrap_or_else(|| text.trim().to_string()), calls)
}

fn parse_params(body: &str) -> Vec<(String, String)> {
    let mut params = Vec::new();
    let mut rest = body;
    while let Some(start) = rest.find("<parameter=") {
        let after = &rest[start + "<parameter=".len()..];
        let Some(gt) = after.find('>') else { break };
        let key = after[..gt].trim().to_string();
        let value_start = &after[gt + 1..];
        // A value ends at its closing tag, or (written without one) at the next parameter.
        let (value, next) = match value_start.find("</parameter>") {
            Some(end) => (
                &value_start[..end],
                &value_start[end + "</parameter>".len()..],
            ),
            None => match value_start.find("<parameter=") {
                Some(n) => (&value_start[..n], &value_start[n..]),
                None => (value_start, ""),
            },
        };
        // A value written on its own lines loses the newline right after the tag and the one
        // right before the closing tag, as SWE-agent writes them.
        let value = value.strip_prefix('\n').unwrap_or(value);
        let value = value.strip_suffix('\n').unwrap_or(value);
        params.push((key, value.to_string()));
        rest = next;
    }
    params
}

/// The tools described for a model that writes calls as XML text.
pub fn xml_tool_docs(tools: &[crate::message::ToolSchema]) -> String {
    let mut out = String::from(
        "You have these tools. Call exactly one per reply, after your reasoning, written like this:\n\n<function=TOOL_NAME>\n<parameter=PARAMETER_NAME>value</parameter>\n</function>\n\nTools:\n",
    );
    for t in tools {
        out.push_str(&format!("\n- {}: {}\n", t.name(), t.function.description));
        let params = &t.function.parameters;
        let required: Vec<&str> = params["required"]
            .as_array()
            .map(|a| a.iter().filter_map(Value::as_str).collect())
            .unwrap_or_default();
        if let Some(props) = params["properties"].as_object() {
            for (name, p) in props {
                out.push_str(&format!(
                    "    <parameter={name}> ({}{}){}\n",
                    p["type"].as_str().unwrap_or("string"),
                    if required.contains(&name.as_str()) {
                        ", required"
                    } else {
                        ""
                    },
                    p["description"]
                        .as_str()
                        .map(|d| format!(": {d}"))
                        .unwrap_or_default()
                ));
            }
        }
    }
    out
}

/// Fenced code blocks in `text`, in order. An unclosed last fence runs to the end of the text
/// (small models often stop before closing it).
pub fn code_blocks(text: &str) -> Vec<String> {
    let mut blocks = Vec::new();
    let mut rest = text;
    while let Some(start) = rest.find("```") {
        let after = &rest[start + 3..];
        // The info string (python, py, ...) runs to the end of the line.
        let body_start = after.find('\n').map(|i| i + 1).unwrap_or(after.len());
        let body = &after[body_start..];
        match body.find("```") {
            Some(end) => {
                blocks.push(body[..end].to_string());
                rest = &body[end + 3..];
            }
            None => {
                blocks.push(body.to_string());
                break;
            }
        }
    }
    blocks
}

/// The contents of every fenced block whose language is one of `languages`.
pub fn fenced_blocks<'a>(text: &'a str, languages: &[&str]) -> Vec<&'a str> {
    let mut out = Vec::new();
    let mut rest = text;
    while let Some(start) = rest.find("```") {
        let after = &rest[start + 3..];
        let Some(nl) = after.find('\n') else { break };
        let lang = after[..nl].trim();
        let body = &after[nl + 1..];
        let Some(end) = body.find("```") else { break };
        if languages.contains(&lang) {
            out.push(body[..end].trim_end_matches('\n'));
        }
        rest = &body[end + 3..];
    }
    out
}

/// A fenced block around `body`.
pub fn render_fenced(language: &str, body: &str) -> String {
    format!("```{language}\n{}\n```", body.trim_end_matches('\n'))
}

/// `text` whole if it has at most `max` characters, else its first `head` and last `tail`
/// characters around a marker saying how many were left out.
pub fn elide_middle(text: &str, max: usize, head: usize, tail: usize) -> (String, bool) {
    let count = text.chars().count();
    if count <= max {
        return (text.to_string(), false);
    }
    let head_end = text
        .char_indices()
        .nth(head)
        .map(|(i, _)| i)
        .unwrap_or(text.len());
    let tail_start = text
        .char_indices()
        .nth(count.saturating_sub(tail))
        .map(|(i, _)| i)
        .unwrap_or(text.len());
    let elided = count - head - tail;
    (
        format!(
            "{}\n<elided_chars>\n{elided} characters elided\n</elided_chars>\n{}",
            &text[..head_end],
            &text[tail_start..]
        ),
        true,
    )
}

/// Prices of a model's tokens, for cost limits and cost statistics.
#[derive(Debug, Clone, Copy, Default, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Pricing {
    /// US dollars per million prompt tokens.
    #[serde(default)]
    pub input_per_million: f64,
    /// US dollars per million completion tokens.
    #[serde(default)]
    pub output_per_million: f64,
}

impl Pricing {
    pub fn cost(&self, usage: &Usage) -> f64 {
        (usage.prompt_tokens as f64 * self.input_per_million
            + usage.completion_tokens as f64 * self.output_per_million)
            / 1e6
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    #[test]
    fn xml_calls_are_read_with_their_thought() {
        let text = "I will look at the file.\n\n<function=str_replace_editor>\n<parameter=command>view</parameter>\n<parameter=path>/testbed/a.py</parameter>\n<parameter=view_range>[1, 20]</parameter>\n</function>";
        let (thought, calls) = parse_xml_calls(text);
        assert_eq!(thought, "I will look at the file.");
        assert_eq!(calls.len(), 1);
        assert_eq!(calls[0].name, "str_replace_editor");
        let args = calls[0].arguments();
        assert_eq!(args["command"], "view");
        assert_eq!(args["view_range"], serde_json::json!([1, 20]));
    }

    #[test]
    fn multi_line_values_keep_their_inner_newlines() {
        let text = "<function=bash>\n<parameter=command>\ncd /x\nls\n</parameter>\n</function>";
        let (_, calls) = parse_xml_calls(text);
        assert_eq!(calls[0].params[0].1, "cd /x\nls");
    }

    #[test]
    fn the_xml_docs_name_every_parameter() {
        let tools = vec![crate::message::ToolSchema::function(
            "bash",
            "run",
            serde_json::json!({"type": "object", "properties": {"command": {"type": "string", "description": "cmd"}}, "required": ["command"]}),
        )];
        let docs = xml_tool_docs(&tools);
        assert!(docs.contains("- bash: run"));
        assert!(docs.contains("<parameter=command> (string, required): cmd"));
    }

    #[test]
    fn fenced_blocks_by_language() {
        let text = "thought\n```bash\nls -la\n```\nand\n```python\nx\n```\n```mswea_bash_command\npwd\n```";
        assert_eq!(
            fenced_blocks(text, &["bash", "mswea_bash_command"]),
            vec!["ls -la", "pwd"]
        );
    }

    #[test]
    fn long_text_keeps_head_and_tail() {
        let text: String = "a".repeat(50) + &"b".repeat(50);
        let (out, cut) = elide_middle(&text, 60, 10, 10);
        assert!(cut);
        assert!(out.starts_with(&"a".repeat(10)));
        assert!(out.ends_with(&"b".repeat(10)));
        assert!(out.contains("80 characters elided"));
        assert_eq!(elide_middle("short", 60, 10, 10), ("short".into(), false));
    }

    proptest! {
        #[test]
        fn rendered_calls_parse_back(
            name in "[a-z_]{1,12}",
            params in proptest::collection::vec(("[a-z_]{1,8}", "[ -;=?-~\n]{0,40}"), 0..4),
        ) {
            // Keys are unique in a JSON object; keep the first of each.
            let mut args = Map::new();
            for (k, v) in &params {
                args.entry(k.clone()).or_insert_with(|| Value::String(v.clone()));
            }
            let text = render_xml_call(&name, &args);
            let (_, calls) = parse_xml_calls(&text);
            prop_assert_eq!(calls.len(), 1);
            prop_assert_eq!(&calls[0].name, &name);
            let back: Vec<(String, String)> = calls[0].params.clone();
            let expected: Vec<(String, String)> = args
                .iter()
                .map(|(k, v)| {
                    let s = v.as_str().unwrap_or_default();
                    // The one newline next to each tag is the format's, not the value's.
                    let s = s.strip_prefix('\n').unwrap_or(s);
                    let s = s.strip_suffix('\n').unwrap_or(s);
                    (k.clone(), s.to_string())
                })
                .collect();
            prop_assert_eq!(back, expected);
        }
    }
}

//! The `tool_calling` scaffold: native OpenAI tool calls over the episode's tools. Tool results
//! go back as `tool` messages; a reply without tool calls is the final answer. Malformed calls
//! (unknown tool, arguments that are not a JSON object) get feedback instead of running, and too
//! many in a row end the episode.

#![forbid(unsafe_code)]

use std::sync::Arc;

use serde::Deserialize;
use serde_json::Value;
use trawl_core::registry::{BuildContext, ComponentError, ScaffoldConfig};
use trawl_core::scaffold::context_overflow_or;
use trawl_core::{
    async_trait, Action, ActionSpace, AgentScaffold, ExitStatus, Message, RolloutContext,
    ScaffoldError, ScaffoldOutcome, ToolCall, ToolSchema,
};

/// `[[scaffolds]] type = "tool_calling"`.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ToolCallingConfig {
    #[serde(default)]
    pub system_prompt: Option<String>,
    /// Model replies per episode.
    #[serde(default = "default_steps")]
    pub max_steps: u32,
    /// Consecutive replies with malformed tool calls before the episode ends.
    #[serde(default = "default_format_errors")]
    pub max_format_errors: u32,
    /// End the episode once it has used this many tokens (prompt + completion, all steps).
    #[serde(default)]
    pub max_total_tokens: Option<u64>,
}

fn default_steps() -> u32 {
    20
}
fn default_format_errors() -> u32 {
    3
}

impl ScaffoldConfig for ToolCallingConfig {
    fn build(self, _: &BuildContext) -> Result<Arc<dyn AgentScaffold>, ComponentError> {
        if self.max_steps == 0 {
            return Err(ComponentError::at("max_steps", "must be at least 1"));
        }
        if self.max_format_errors == 0 {
            return Err(ComponentError::at(
                "max_format_errors",
                "must be at least 1",
            ));
        }
        Ok(Arc::new(ToolCallingScaffold { config: self }))
    }
}

trawl_core::register!(
    scaffold,
    "tool_calling",
    "Native OpenAI tool calls over the episode's tools; a reply without calls is the answer",
    ToolCallingConfig
);

pub struct ToolCallingScaffold {
    config: ToolCallingConfig,
}

/// Why a tool call cannot run, as feedback for the model.
fn check_call(call: &ToolCall, tools: &[ToolSchema]) -> Result<(), String> {
    if !tools.iter().any(|t| t.name() == call.function.name) {
        let names: Vec<&str> = tools.iter().map(ToolSchema::name).collect();
        return Err(format!(
            "error: there is no tool named `{}`; available tools: {}",
            call.function.name,
            names.join(", ")
        ));
    }
    match serde_json::from_str::<Value>(&call.function.arguments) {
        Ok(Value::Object(_)) => Ok(()),
        Ok(_) => Err("error: tool arguments must be a JSON object".into()),
        Err(e) => Err(format!(
            "error: tool arguments are not valid JSON ({e}); send a JSON object"
        )),
    }
}

#[async_trait]
impl AgentScaffold for ToolCallingScaffold {
    fn required_actions(&self) -> ActionSpace {
        ActionSpace {
            answer: true,
            tool_calls: true,
            ..ActionSpace::default()
        }
    }

    async fn run(&self, cx: RolloutContext<'_>) -> Result<ScaffoldOutcome, ScaffoldError> {
        let RolloutContext {
            episode,
            model,
            sampling,
            transcript,
        } = cx;
        transcript.set_system_prompt(self.config.system_prompt.as_deref());
        let tools = transcript.tools.clone();
        let mut format_errors = 0;
        for step in 0..self.config.max_steps {
            if transcript.over_budget(self.config.max_total_tokens) {
                return Ok(ScaffoldOutcome {
                    exit_status: ExitStatus::TokenLimitExceeded,
                    submission: None,
                });
            }
            let completion = match transcript
                .call_model(model, sampling, !tools.is_empty())
                .await
            {
                Ok(c) => c,
                Err(e) => return context_overflow_or(e),
            };
            let calls = completion.message.tool_calls.clone();
            if calls.is_empty() {
                let text = completion.message.text().to_string();
                let observation = transcript
                    .act(episode, Action::Answer { text: text.clone() })
                    .await?;
                if observation.done {
                    return Ok(ScaffoldOutcome {
                        exit_status: ExitStatus::Submitted,
                        submission: Some(text),
                    });
                }
                transcript.messages.push(Message::user(observation.content));
                format_errors = 0;
                continue;
            }
            let mut malformed = false;
            for (i, mut call) in calls.into_iter().enumerate() {
                if call.id.is_empty() {
                    // Some servers omit ids; the tool message must still name the call it answers.
                    call.id = format!("call_{step}_{i}");
                    if let Some(last) = transcript.messages.last_mut() {
                        last.tool_calls[i].id = call.id.clone();
                    }
                }
                let id = call.id.clone();
                let reply = match check_call(&call, &tools) {
                    Err(feedback) => {
                        malformed = true;
                        feedback
                    }
                    Ok(()) => {
                        let observation =
                            transcript.act(episode, Action::ToolCall { call }).await?;
                        if observation.done {
                            transcript
                                .messages
                                .push(Message::tool(id, observation.content));
                            return Ok(ScaffoldOutcome {
                                exit_status: ExitStatus::Submitted,
                                submission: None,
                            });
                        }
                        observation.content
                    }
                };
                transcript.messages.push(Message::tool(id, reply));
            }
            format_errors = if malformed { format_errors + 1 } else { 0 };
            if format_errors >= self.config.max_format_errors {
                return Ok(ScaffoldOutcome {
                    exit_status: ExitStatus::RepeatedFormatError,
                    submission: None,
                });
            }
        }
        Ok(ScaffoldOutcome {
            exit_status: ExitStatus::LimitsExceeded,
            submission: None,
        })
    }
}

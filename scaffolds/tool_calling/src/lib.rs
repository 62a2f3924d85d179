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

#[cfg(test)]
mod tests {
    use super::*;
    use trawl_core::message::Role;
    use trawl_core::testing::{drive, GuessNumber, ScriptedModel};
    use trawl_core::Environment;

    fn scaffold(max_steps: u32, max_format_errors: u32) -> Arc<dyn AgentScaffold> {
        ToolCallingConfig {
            system_prompt: None,
            max_steps,
            max_format_errors,
            max_total_tokens: None,
        }
        .build(&BuildContext::default())
        .unwrap()
    }

    /// An assistant message calling `name` with `arguments` (an id only when given).
    fn calling(id: &str, name: &str, arguments: &str) -> Message {
        let mut m = Message::assistant("");
        m.tool_calls = vec![ToolCall::function(id, name, arguments)];
        m
    }

    async fn run(
        replies: Vec<Message>,
        max_steps: u32,
        max_format_errors: u32,
    ) -> (trawl_core::testing::Driven, ScriptedModel) {
        let env = GuessNumber;
        let task = env.tasks().await.unwrap().remove(0);
        let model = ScriptedModel::replying(replies);
        let driven = drive(
            scaffold(max_steps, max_format_errors).as_ref(),
            &env,
            &task,
            &model,
        )
        .await
        .unwrap();
        (driven, model)
    }

    #[tokio::test]
    async fn tool_results_go_back_as_tool_messages_until_the_episode_is_done() {
        let (driven, model) = run(
            vec![
                calling("a", "guess", r#"{"n": 3}"#),
                calling("", "guess", r#"{"n": 7}"#),
            ],
            5,
            3,
        )
        .await;
        let outcome = driven.outcome.unwrap();
        assert_eq!(outcome.exit_status, ExitStatus::Submitted);
        let m = &driven.transcript.messages;
        let tool_replies: Vec<(Option<&str>, &str)> = m
            .iter()
            .filter(|m| m.role == Role::Tool)
            .map(|m| (m.tool_call_id.as_deref(), m.text()))
            .collect();
        // A call without an id gets one, and its result answers that id.
        assert_eq!(
            tool_replies,
            [(Some("a"), "higher"), (Some("call_1_0"), "right")]
        );
        let second_call = m
            .iter()
            .filter(|m| m.role == Role::Assistant)
            .nth(1)
            .unwrap();
        assert_eq!(second_call.tool_calls[0].id, "call_1_0");
        // The model was offered the episode's tools on every call.
        assert!(model
            .requests()
            .iter()
            .all(|r| r.tools.iter().any(|t| t.name() == "guess")));
    }

    #[tokio::test]
    async fn a_reply_without_calls_is_an_answer_and_a_wrong_one_gets_feedback() {
        let (driven, _) = run(vec![Message::assistant("9"), Message::assistant("7")], 5, 3).await;
        let outcome = driven.outcome.unwrap();
        assert_eq!(outcome.exit_status, ExitStatus::Submitted);
        assert_eq!(outcome.submission.as_deref(), Some("7"));
        let feedback: Vec<&str> = driven
            .transcript
            .messages
            .iter()
            .filter(|m| m.role == Role::User)
            .map(|m| m.text())
            .collect();
        assert_eq!(feedback, ["Guess my number.", "lower"]);
    }

    #[tokio::test]
    async fn malformed_calls_get_feedback_and_too_many_in_a_row_end_the_episode() {
        let (driven, model) = run(
            vec![
                calling("a", "shout", r#"{"n": 1}"#),
                calling("b", "guess", "[1]"),
                calling("c", "guess", "{not json"),
            ],
            10,
            3,
        )
        .await;
        assert_eq!(
            driven.outcome.unwrap().exit_status,
            ExitStatus::RepeatedFormatError
        );
        assert_eq!(model.requests().len(), 3);
        let replies: Vec<&str> = driven
            .transcript
            .messages
            .iter()
            .filter(|m| m.role == Role::Tool)
            .map(|m| m.text())
            .collect();
        assert!(replies[0].contains("no tool named `shout`") && replies[0].contains("guess"));
        assert!(
            replies[1].contains("must be a JSON object"),
            "{}",
            replies[1]
        );
        assert!(replies[2].contains("not valid JSON"), "{}", replies[2]);
        // Malformed calls never reach the environment.
        assert!(driven.transcript.steps.is_empty());
    }

    #[tokio::test]
    async fn a_good_call_resets_the_count_and_the_step_limit_ends_the_episode() {
        let (driven, model) = run(
            vec![
                calling("a", "shout", "{}"),
                calling("b", "guess", r#"{"n": 1}"#),
                calling("c", "shout", "{}"),
                calling("d", "guess", r#"{"n": 2}"#),
            ],
            4,
            2,
        )
        .await;
        assert_eq!(
            driven.outcome.unwrap().exit_status,
            ExitStatus::LimitsExceeded
        );
        assert_eq!(model.requests().len(), 4);
        assert_eq!(driven.transcript.steps.len(), 2);
    }

    #[test]
    fn zero_steps_or_format_errors_are_refused_naming_the_field() {
        for (steps, errors, field) in [(0, 3, "max_steps"), (5, 0, "max_format_errors")] {
            let e = ToolCallingConfig {
                system_prompt: None,
                max_steps: steps,
                max_format_errors: errors,
                max_total_tokens: None,
            }
            .build(&BuildContext::default())
            .err()
            .unwrap();
            assert_eq!(e.path, [field]);
        }
    }
}

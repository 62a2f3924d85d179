//! The `chat` scaffold: a system prompt and the task, one answer per turn. With `max_turns > 1`
//! and an environment that gives feedback, a wrong answer is followed by the environment's
//! feedback and another attempt (PettingLLMs' single-agent loop).

#![forbid(unsafe_code)]

use std::sync::Arc;

use serde::Deserialize;
use trawl_core::registry::{BuildContext, ComponentError, ScaffoldConfig};
use trawl_core::scaffold::context_overflow_or;
use trawl_core::{
    async_trait, Action, ActionSpace, AgentScaffold, ExitStatus, Message, RolloutContext,
    ScaffoldError, ScaffoldOutcome,
};

/// `[[scaffolds]] type = "chat"`.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ChatScaffoldConfig {
    /// Put in front of the conversation; none when unset.
    #[serde(default)]
    pub system_prompt: Option<String>,
    /// Attempts per episode; later attempts follow the environment's feedback.
    #[serde(default = "one")]
    pub max_turns: u32,
    /// End the episode once it has used this many tokens (prompt + completion, all turns).
    #[serde(default)]
    pub max_total_tokens: Option<u64>,
}

fn one() -> u32 {
    1
}

impl ScaffoldConfig for ChatScaffoldConfig {
    fn build(self, _: &BuildContext) -> Result<Arc<dyn AgentScaffold>, ComponentError> {
        if self.max_turns == 0 {
            return Err(ComponentError::at("max_turns", "must be at least 1"));
        }
        Ok(Arc::new(ChatScaffold { config: self }))
    }
}

trawl_core::register!(
    scaffold,
    "chat",
    "System prompt + task; answer, optionally retry with the environment's feedback",
    ChatScaffoldConfig
);

pub struct ChatScaffold {
    config: ChatScaffoldConfig,
}

#[async_trait]
impl AgentScaffold for ChatScaffold {
    fn required_actions(&self) -> ActionSpace {
        ActionSpace {
            answer: true,
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
        let mut answer = None;
        for turn in 1..=self.config.max_turns {
            let completion = match transcript.call_model(model, sampling, false).await {
                Ok(c) => c,
                Err(e) => return context_overflow_or(e),
            };
            let text = completion.message.text().to_string();
            answer = Some(text.clone());
            let observation = transcript.act(episode, Action::Answer { text }).await?;
            if observation.done || turn == self.config.max_turns {
                break;
            }
            if transcript.over_budget(self.config.max_total_tokens) {
                return Ok(ScaffoldOutcome {
                    exit_status: ExitStatus::TokenLimitExceeded,
                    submission: answer,
                });
            }
            transcript.messages.push(Message::user(observation.content));
        }
        Ok(ScaffoldOutcome {
            exit_status: ExitStatus::Submitted,
            submission: answer,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use trawl_core::message::Role;
    use trawl_core::testing::{drive, GuessNumber, ScriptedModel};
    use trawl_core::Environment;

    fn chat(max_turns: u32, system_prompt: Option<&str>) -> Arc<dyn AgentScaffold> {
        ChatScaffoldConfig {
            system_prompt: system_prompt.map(str::to_string),
            max_turns,
            max_total_tokens: None,
        }
        .build(&BuildContext::default())
        .unwrap()
    }

    #[tokio::test]
    async fn a_wrong_answer_is_followed_by_the_feedback_and_another_attempt() {
        let env = GuessNumber;
        let task = env.tasks().await.unwrap().remove(0);
        let model = ScriptedModel::new(["3", "9", "7", "8"]);
        let driven = drive(chat(5, Some("Be brief.")).as_ref(), &env, &task, &model)
            .await
            .unwrap();
        let outcome = driven.outcome.unwrap();
        assert_eq!(outcome.exit_status, ExitStatus::Submitted);
        assert_eq!(outcome.submission.as_deref(), Some("7"));
        // Three calls: the right answer ends the episode before the fourth.
        assert_eq!(model.requests().len(), 3);
        let said: Vec<(Role, &str)> = driven
            .transcript
            .messages
            .iter()
            .map(|m| (m.role, m.text()))
            .collect();
        assert_eq!(
            said,
            [
                (Role::System, "Be brief."),
                (Role::User, "Guess my number."),
                (Role::Assistant, "3"),
                (Role::User, "higher"),
                (Role::Assistant, "9"),
                (Role::User, "lower"),
                (Role::Assistant, "7"),
            ]
        );
        // The model sees the feedback: its third request ends with "lower".
        let third = &model.requests()[2];
        assert_eq!(third.messages.last().map(|m| m.text()), Some("lower"));
        assert!(third.tools.is_empty(), "chat offers no tools");
        assert_eq!(driven.transcript.steps.len(), 3);
    }

    #[tokio::test]
    async fn one_turn_is_one_answer_however_wrong() {
        let env = GuessNumber;
        let task = env.tasks().await.unwrap().remove(0);
        let model = ScriptedModel::new(["3", "7"]);
        let driven = drive(chat(1, None).as_ref(), &env, &task, &model)
            .await
            .unwrap();
        let outcome = driven.outcome.unwrap();
        assert_eq!(outcome.exit_status, ExitStatus::Submitted);
        assert_eq!(outcome.submission.as_deref(), Some("3"));
        assert_eq!(model.requests().len(), 1);
        assert_eq!(
            driven.transcript.messages[0].role,
            Role::User,
            "no system prompt"
        );
    }

    #[tokio::test]
    async fn a_model_that_fails_is_the_scaffolds_error_not_an_answer() {
        let env = GuessNumber;
        let task = env.tasks().await.unwrap().remove(0);
        let model = ScriptedModel::new(Vec::<String>::new());
        let driven = drive(chat(2, None).as_ref(), &env, &task, &model)
            .await
            .unwrap();
        assert!(driven.outcome.is_err(), "{:?}", driven.outcome);
    }

    #[test]
    fn zero_turns_is_refused_naming_the_field() {
        let e = ChatScaffoldConfig {
            system_prompt: None,
            max_turns: 0,
            max_total_tokens: None,
        }
        .build(&BuildContext::default())
        .err()
        .unwrap();
        assert_eq!(e.path, ["max_turns"]);
    }
}

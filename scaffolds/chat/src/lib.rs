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

//! An example scaffold plugin: `plan_then_act`. The model first writes a plan (no action), then
//! answers; when the environment gives feedback instead of ending the episode, the model is
//! asked to reflect on what went wrong and to try again, up to `max_attempts` answers.
//!
//! It is written exactly like a built-in scaffold (the `AgentScaffold` trait, registered with
//! `trawl_core::register!`), so the same crate links into a binary as an rlib or loads into a
//! stock `trawl` as a shared library. Loaded, its rollouts run inside the library and reach the
//! model and the episode through the host, one request at a time.

use std::sync::Arc;

use serde::Deserialize;
use trawl_core::registry::{BuildContext, ComponentError, ScaffoldConfig};
use trawl_core::scaffold::context_overflow_or;
use trawl_core::{
    async_trait, Action, ActionSpace, AgentScaffold, ExitStatus, Message, RolloutContext,
    ScaffoldError, ScaffoldOutcome,
};

trawl_plugin_abi::declare_plugin!();

/// `[[scaffolds]] type = "plan_then_act"`.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct PlanThenActConfig {
    /// Put in front of the conversation.
    #[serde(default = "default_system")]
    pub system_prompt: String,
    /// The user turn that asks for a plan before any answer.
    #[serde(default = "default_plan")]
    pub plan_prompt: String,
    /// The user turn that asks for the answer, after the plan.
    #[serde(default = "default_act")]
    pub act_prompt: String,
    /// What follows the environment's feedback on a rejected answer; `{{feedback}}` stands for
    /// the feedback.
    #[serde(default = "default_reflect")]
    pub reflect_prompt: String,
    /// Answers per episode, at least 1.
    #[serde(default = "default_attempts")]
    pub max_attempts: u32,
}

fn default_system() -> String {
    "You are a careful problem solver. You plan before you act.".into()
}
fn default_plan() -> String {
    "Before answering, write a short numbered plan for solving this. Do not give the answer yet."
        .into()
}
fn default_act() -> String {
    "Now carry out your plan and give the final answer.".into()
}
fn default_reflect() -> String {
    "That answer was not accepted: {{feedback}}\nSay in one sentence what went wrong, then give a corrected final answer.".into()
}
fn default_attempts() -> u32 {
    2
}

impl ScaffoldConfig for PlanThenActConfig {
    fn build(self, _: &BuildContext) -> Result<Arc<dyn AgentScaffold>, ComponentError> {
        if self.max_attempts == 0 {
            return Err(ComponentError::at("max_attempts", "must be at least 1"));
        }
        if !self.reflect_prompt.contains("{{feedback}}") {
            return Err(ComponentError::at(
                "reflect_prompt",
                "must contain {{feedback}}, where the environment's feedback goes",
            ));
        }
        Ok(Arc::new(PlanThenAct { config: self }))
    }
}

trawl_core::register!(
    scaffold,
    "plan_then_act",
    "Plan first, then answer; reflect on the environment's feedback and retry",
    PlanThenActConfig
);

pub struct PlanThenAct {
    config: PlanThenActConfig,
}

#[async_trait]
impl AgentScaffold for PlanThenAct {
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
        let c = &self.config;
        transcript.set_system_prompt(Some(&c.system_prompt));
        transcript.messages.push(Message::user(&c.plan_prompt));
        if let Err(e) = transcript.call_model(model, sampling, false).await {
            return context_overflow_or(e);
        }
        transcript.messages.push(Message::user(&c.act_prompt));
        let mut answer = None;
        for attempt in 1..=c.max_attempts {
            let reply = match transcript.call_model(model, sampling, false).await {
                Ok(r) => r.message.text().to_string(),
                Err(e) => return context_overflow_or(e),
            };
            answer = Some(reply.clone());
            let observation = transcript
                .act(episode, Action::Answer { text: reply })
                .await?;
            if observation.done || attempt == c.max_attempts {
                break;
            }
            transcript.messages.push(Message::user(
                c.reflect_prompt
                    .replace("{{feedback}}", &observation.content),
            ));
        }
        let plan = transcript
            .messages
            .iter()
            .find(|m| m.role == trawl_core::message::Role::Assistant)
            .map(|m| m.text().to_string())
            .unwrap_or_default();
        transcript.artifacts.insert("plan".into(), plan.into());
        Ok(ScaffoldOutcome {
            exit_status: ExitStatus::Submitted,
            submission: answer,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use trawl_core::registry::parse_settings;
    use trawl_core::registry::EnvironmentConfig as _;
    use trawl_core::testing::{drive, ScriptedModel};

    fn scaffold(settings: serde_json::Value) -> Arc<dyn AgentScaffold> {
        parse_settings::<PlanThenActConfig>(&settings)
            .unwrap()
            .build(&BuildContext::default())
            .unwrap()
    }

    #[tokio::test]
    async fn it_plans_answers_and_retries_on_feedback() {
        let env = parse_settings::<trawl_math::MathEnvironmentConfig>(&serde_json::json!({
            "generator": { "count": 1, "levels": [1], "seed": 3 },
            "feedback": true
        }))
        .unwrap()
        .build(&BuildContext::default())
        .unwrap();
        let task = env.tasks().await.unwrap().remove(0);
        let answer = task.data["answer"].as_str().unwrap().to_string();
        let model = ScriptedModel::new([
            "1. Read the numbers. 2. Add them.".to_string(),
            "The answer is -999".to_string(),
            format!("I added wrong. The answer is {answer}"),
        ]);
        let s = scaffold(serde_json::json!({ "max_attempts": 3 }));
        let driven = drive(s.as_ref(), env.as_ref(), &task, &model)
            .await
            .unwrap();
        let outcome = driven.outcome.unwrap();
        assert_eq!(outcome.exit_status, ExitStatus::Submitted);
        assert!(outcome.submission.unwrap().contains(&answer));
        // Two answers: the wrong one, then the right one after the feedback.
        assert_eq!(driven.transcript.steps.len(), 2);
        assert_eq!(
            driven.transcript.artifacts["plan"],
            "1. Read the numbers. 2. Add them."
        );
        let requests = model.requests();
        assert_eq!(requests.len(), 3);
        assert!(requests[0]
            .messages
            .last()
            .unwrap()
            .text()
            .contains("numbered plan"));
        let last = requests[2].messages.last().unwrap().text().to_string();
        assert!(
            last.contains("That answer was not accepted") && last.contains("-999"),
            "{last}"
        );
    }

    #[test]
    fn a_reflect_prompt_without_its_placeholder_is_refused() {
        let e = parse_settings::<PlanThenActConfig>(
            &serde_json::json!({ "reflect_prompt": "try again" }),
        )
        .unwrap()
        .build(&BuildContext::default())
        .err()
        .unwrap();
        assert_eq!(e.path, ["reflect_prompt"]);
    }
}

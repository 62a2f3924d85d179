//! The `UserSimulator` role: the person an agent serves, played by a language model or by a
//! script. Environments with a simulated user (`usersim`, `tools`) hold one and ask it for the
//! user's next message after each agent message.
//!
//! A simulated user ends the conversation with a control token, as in tau2-bench:
//! `###STOP###` (the goal is met or given up), `###TRANSFER###` (handed to a human agent) or
//! `###OUT-OF-SCOPE###` (the request is outside what the user's instructions cover). A simulator
//! that fails (the user model's server is down, a script runs dry) is an infrastructure error,
//! never the agent's failure.

use std::sync::Arc;

use async_trait::async_trait;
use serde::{Deserialize, Serialize};

use crate::message::{Message, Role};
use crate::model::{CompletionRequest, LanguageModel, Sampling};

/// The user ends the conversation: the goal is met (or abandoned).
pub const STOP: &str = "###STOP###";
/// The user asks to be transferred to a human.
pub const TRANSFER: &str = "###TRANSFER###";
/// The agent's request falls outside what the user's instructions cover.
pub const OUT_OF_SCOPE: &str = "###OUT-OF-SCOPE###";

/// How a simulated user ended the conversation.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum UserStop {
    Stop,
    Transfer,
    OutOfScope,
}

impl UserStop {
    pub const ALL: [UserStop; 3] = [UserStop::Stop, UserStop::Transfer, UserStop::OutOfScope];

    pub fn token(self) -> &'static str {
        match self {
            UserStop::Stop => STOP,
            UserStop::Transfer => TRANSFER,
            UserStop::OutOfScope => OUT_OF_SCOPE,
        }
    }
}

/// One message of the simulated user, with the control token taken out.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct UserTurn {
    /// What the user says, without the control token (may be empty).
    pub text: String,
    /// Set when the message carried a control token: the conversation is over.
    pub stop: Option<UserStop>,
}

impl UserTurn {
    /// Reads a user message: the first control token found anywhere in it ends the
    /// conversation, and every control token is removed from the text.
    pub fn parse(raw: &str) -> Self {
        let stop = UserStop::ALL
            .into_iter()
            .filter_map(|s| raw.find(s.token()).map(|at| (at, s)))
            .min_by_key(|(at, _)| *at)
            .map(|(_, s)| s);
        let mut text = raw.to_string();
        // Until none is left: removing one can join the halves of another.
        while let Some(s) = UserStop::ALL.into_iter().find(|s| text.contains(s.token())) {
            text = text.replace(s.token(), "");
        }
        UserTurn {
            text: text.trim().to_string(),
            stop,
        }
    }
}

/// Who the simulated user is and what they want: tau2's `user_scenario`.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct UserScenario {
    /// Who they are and how they talk.
    #[serde(default)]
    pub persona: String,
    /// What they want, what they know, and what they must not reveal unprompted.
    #[serde(default)]
    pub instructions: String,
}

/// A simulator that could not answer: an infrastructure failure.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
#[error("user simulator failed: {0}")]
pub struct UserSimError(pub String);

/// The simulated user. Shared by every episode of a run, so it keeps no per-episode state: the
/// conversation so far says where the episode is.
#[async_trait]
pub trait UserSimulator: Send + Sync {
    /// The user's next message. `conversation` is the episode as the agent saw it: the agent's
    /// messages are `assistant`, the user's are `user` (tool traffic may be present and is not
    /// the user's to see).
    async fn reply(
        &self,
        scenario: &UserScenario,
        conversation: &[Message],
    ) -> Result<UserTurn, UserSimError>;
}

/// How many times the user has already replied to the agent: the user messages after the
/// agent's first message. An opening request made before the agent spoke is not a reply; in an
/// environment where the agent (or its greeting) speaks first, the user's opening is reply 0.
pub fn user_replies_so_far(conversation: &[Message]) -> usize {
    conversation
        .iter()
        .skip_while(|m| m.role != Role::Assistant)
        .filter(|m| m.role == Role::User)
        .count()
}

/// A user that follows a script: rules first (the first whose text appears in the agent's last
/// message answers), then the next scripted reply; with both used up it ends the conversation
/// with `###STOP###`. Deterministic, for tests and for cheap data.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ScriptedUser {
    /// Replies in order, one per agent message. A reply may carry a control token.
    #[serde(default)]
    pub replies: Vec<String>,
    /// `[when, reply]` pairs: when the agent's last message contains `when` (case-insensitive),
    /// the user says `reply`.
    #[serde(default)]
    pub rules: Vec<(String, String)>,
    /// Fail instead of stopping when the script runs out (an infrastructure error), to check
    /// that a broken simulator never counts against the agent.
    #[serde(default)]
    pub fail_when_exhausted: bool,
}

#[async_trait]
impl UserSimulator for ScriptedUser {
    async fn reply(
        &self,
        _: &UserScenario,
        conversation: &[Message],
    ) -> Result<UserTurn, UserSimError> {
        let last_agent = conversation
            .iter()
            .rev()
            .find(|m| m.role == Role::Assistant)
            .and_then(|m| m.content.as_deref())
            .unwrap_or("")
            .to_lowercase();
        if let Some((_, reply)) = self
            .rules
            .iter()
            .find(|(when, _)| last_agent.contains(&when.to_lowercase()))
        {
            return Ok(UserTurn::parse(reply));
        }
        match self.replies.get(user_replies_so_far(conversation)) {
            Some(r) => Ok(UserTurn::parse(r)),
            None if self.fail_when_exhausted => Err(UserSimError(format!(
                "the script has {} replies and all are used",
                self.replies.len()
            ))),
            None => Ok(UserTurn::parse(STOP)),
        }
    }
}

/// The system prompt of an LLM user: `{persona}` and `{instructions}` are filled from the task.
pub const DEFAULT_USER_PROMPT: &str = "You are playing a user who is talking to an AI assistant. \
Stay in character and never say you are an AI.\n\n\
Who you are:\n{persona}\n\n\
What you want and what you know:\n{instructions}\n\n\
Rules:\n\
- Write only what the user says next, one short message.\n\
- Answer only what the assistant asks; do not volunteer details it has not asked about.\n\
- When your request is fully handled, or you want to end the conversation, write ###STOP###.\n\
- If you need a human agent, write ###TRANSFER###. If the assistant asks for something your \
instructions do not cover, write ###OUT-OF-SCOPE###.";

/// A user played by a language model: its own model, its own system prompt built from the
/// scenario, and the conversation shown with roles flipped (the agent's messages are what the
/// user model reads as `user`, and its own earlier replies are `assistant`).
pub struct LlmUser {
    pub model: Arc<dyn LanguageModel>,
    pub sampling: Sampling,
    /// The system prompt, with `{persona}` and `{instructions}` placeholders.
    pub prompt: String,
}

impl LlmUser {
    /// The request the user model receives for `conversation`.
    pub fn request(&self, scenario: &UserScenario, conversation: &[Message]) -> CompletionRequest {
        let system = self
            .prompt
            .replace("{persona}", scenario.persona.trim())
            .replace("{instructions}", scenario.instructions.trim());
        let mut messages = vec![Message::system(system)];
        messages.extend(flip_roles(conversation));
        CompletionRequest {
            messages,
            tools: Vec::new(),
            sampling: self.sampling.clone(),
        }
    }
}

/// The conversation from the user's side: agent text becomes `user`, user text `assistant`;
/// system messages, tool results and tool-only agent turns are not the user's to see.
pub fn flip_roles(conversation: &[Message]) -> Vec<Message> {
    conversation
        .iter()
        .filter_map(|m| {
            let text = m.content.as_deref().filter(|t| !t.trim().is_empty())?;
            match m.role {
                Role::Assistant => Some(Message::user(text)),
                Role::User => Some(Message::assistant(text)),
                Role::System | Role::Tool => None,
            }
        })
        .collect()
}

#[async_trait]
impl UserSimulator for LlmUser {
    async fn reply(
        &self,
        scenario: &UserScenario,
        conversation: &[Message],
    ) -> Result<UserTurn, UserSimError> {
        let request = self.request(scenario, conversation);
        let completion = self
            .model
            .complete(&request)
            .await
            .map_err(|e| UserSimError(format!("the user model failed: {e}")))?;
        Ok(UserTurn::parse(
            completion.message.content.as_deref().unwrap_or(""),
        ))
    }
}

/// The `user = {...}` table of an environment with a simulated user.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "type", rename_all = "snake_case")]
pub enum UserConfig {
    /// `user = { type = "scripted", replies = [...], rules = [[when, reply], ...] }`.
    Scripted(ScriptedUser),
    /// `user = { type = "llm", model = { type = "openai", ... }, sampling = {...} }`; without
    /// `model`, the embedded model plays the user.
    Llm(LlmUserConfig),
}

#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct LlmUserConfig {
    /// A `[[models]]`-shaped table (`type` and the backend's settings; the embedded model when
    /// empty), or the name of one of the run's `[[models]]` entries, to share it.
    #[serde(default)]
    pub model: serde_json::Value,
    #[serde(default)]
    pub sampling: Sampling,
    /// The system prompt, with `{persona}` and `{instructions}`; [`DEFAULT_USER_PROMPT`] if unset.
    #[serde(default)]
    pub prompt: Option<String>,
}

impl UserConfig {
    /// The simulator this table describes. Errors name the field under the table.
    pub fn build(
        &self,
        cx: &crate::registry::BuildContext,
    ) -> Result<Arc<dyn UserSimulator>, crate::component::ComponentError> {
        self.build_with_prompt(cx, DEFAULT_USER_PROMPT)
    }

    /// Like [`UserConfig::build`], with an environment's own default prompt for an LLM user
    /// whose table sets none.
    pub fn build_with_prompt(
        &self,
        cx: &crate::registry::BuildContext,
        default_prompt: &str,
    ) -> Result<Arc<dyn UserSimulator>, crate::component::ComponentError> {
        match self {
            UserConfig::Scripted(s) => Ok(Arc::new(s.clone())),
            UserConfig::Llm(c) => {
                let model = cx.build_model(&c.model).map_err(|mut e| {
                    e.path.insert(0, "model".into());
                    e
                })?;
                Ok(Arc::new(LlmUser {
                    model,
                    sampling: c.sampling.clone(),
                    prompt: c
                        .prompt
                        .clone()
                        .unwrap_or_else(|| default_prompt.to_string()),
                }))
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    #[test]
    fn control_tokens_end_the_conversation_and_leave_the_text() {
        let t = UserTurn::parse("Thanks, that's all! ###STOP###");
        assert_eq!(t.text, "Thanks, that's all!");
        assert_eq!(t.stop, Some(UserStop::Stop));
        let t = UserTurn::parse("###TRANSFER### please, a human");
        assert_eq!(
            (t.text.as_str(), t.stop),
            ("please, a human", Some(UserStop::Transfer))
        );
        // The first token wins; every token is removed.
        let t = UserTurn::parse("no ###OUT-OF-SCOPE### then ###STOP###");
        assert_eq!(
            (t.text.as_str(), t.stop),
            ("no  then", Some(UserStop::OutOfScope))
        );
        assert_eq!(UserTurn::parse("It is blue.").stop, None);
    }

    #[tokio::test]
    async fn a_scripted_user_follows_rules_then_replies_then_stops() {
        let user = ScriptedUser {
            replies: vec!["Red.".into(), "Size M.".into()],
            rules: vec![("budget".into(), "Under 50 dollars.".into())],
            fail_when_exhausted: false,
        };
        let s = UserScenario::default();
        let mut convo = vec![Message::user("I want a shirt.")];
        convo.push(Message::assistant("Which colour?"));
        assert_eq!(user.reply(&s, &convo).await.unwrap().text, "Red.");
        convo.push(Message::user("Red."));
        convo.push(Message::assistant("What is your BUDGET?"));
        assert_eq!(
            user.reply(&s, &convo).await.unwrap().text,
            "Under 50 dollars."
        );
        convo.push(Message::user("Under 50 dollars."));
        convo.push(Message::assistant("Which size?"));
        // Two user replies so far: the script is at its third reply, and has none.
        let end = user.reply(&s, &convo).await.unwrap();
        assert_eq!(end.stop, Some(UserStop::Stop));
        let failing = ScriptedUser {
            fail_when_exhausted: true,
            ..user
        };
        assert!(failing.reply(&s, &convo).await.is_err());
    }

    #[test]
    fn user_tables_parse_and_refuse_unknown_fields() {
        let c: UserConfig = serde_json::from_value(serde_json::json!({
            "type": "scripted", "replies": ["a"], "rules": [["budget", "50"]]
        }))
        .unwrap();
        assert!(matches!(c, UserConfig::Scripted(ref s) if s.rules[0].1 == "50"));
        let c: UserConfig = serde_json::from_value(serde_json::json!({ "type": "llm" })).unwrap();
        assert_eq!(c, UserConfig::Llm(LlmUserConfig::default()));
        let e = crate::component::parse_settings::<UserConfig>(&serde_json::json!({
            "type": "scripted", "replys": []
        }))
        .unwrap_err();
        assert!(
            e.message.contains("unknown field `replys`"),
            "{}",
            e.message
        );
        // Outside a run there is no model to build a user from: a clear error.
        let e = c
            .build(&crate::registry::BuildContext::default())
            .err()
            .unwrap();
        assert!(
            e.message.contains("needs a model of its own"),
            "{}",
            e.message
        );
    }

    #[test]
    fn the_user_model_sees_the_conversation_from_its_side() {
        let convo = vec![
            Message::system("agent rules"),
            Message::user("I need a flight."),
            Message::assistant("Where to?"),
            Message::user("Paris."),
        ];
        let flipped = flip_roles(&convo);
        let roles: Vec<Role> = flipped.iter().map(|m| m.role).collect();
        assert_eq!(roles, [Role::Assistant, Role::User, Role::Assistant]);
        assert_eq!(flipped[1].content.as_deref(), Some("Where to?"));
    }

    proptest! {
        #[test]
        fn parsing_never_leaves_a_token_in_the_text(raw in "(\\PC{0,8}(###STOP###|###TRANSFER###|###OUT-OF-SCOPE###)?){0,4}") {
            let t = UserTurn::parse(&raw);
            for s in UserStop::ALL {
                prop_assert!(!t.text.contains(s.token()));
            }
            prop_assert_eq!(t.stop.is_some(), UserStop::ALL.iter().any(|s| raw.contains(s.token())));
        }
    }
}

//! The `AgentScaffold` role: how an agent talks to the model and to the episode.

use std::time::Instant;

use async_trait::async_trait;

use crate::environment::{Action, ActionSpace, EnvironmentError, Episode, Observation};
use crate::message::{Message, ToolSchema};
use crate::model::{
    Completion, CompletionRequest, LanguageModel, ModelError, Sampling, TokenDetail, Usage,
};
use crate::trajectory::{ExitStatus, Step};

/// Everything a rollout has said and done so far. The engine owns it and lends it to the
/// scaffold, so that an episode cut short by its time limit or by Ctrl-C still leaves a
/// complete record of what happened up to that point.
#[derive(Debug)]
pub struct Transcript {
    pub messages: Vec<Message>,
    pub tools: Vec<ToolSchema>,
    pub steps: Vec<Step>,
    pub usage: Usage,
    pub model_ms: u64,
    /// Token ids and logprobs per assistant turn, when the sampling asked for them.
    pub tokens: Vec<TokenDetail>,
    /// Why each model call stopped, in order.
    pub finish_reasons: Vec<crate::model::FinishReason>,
    /// What the scaffold itself leaves for the evaluators (tests another agent wrote, ...);
    /// merged into the record's `outcome.artifacts` beside the environment's.
    pub artifacts: serde_json::Map<String, serde_json::Value>,
    started: Instant,
}

impl Transcript {
    pub fn new() -> Self {
        Transcript {
            messages: Vec::new(),
            tools: Vec::new(),
            steps: Vec::new(),
            usage: Usage::default(),
            model_ms: 0,
            tokens: Vec::new(),
            finish_reasons: Vec::new(),
            artifacts: serde_json::Map::new(),
            started: Instant::now(),
        }
    }

    pub fn elapsed_ms(&self) -> u64 {
        self.started.elapsed().as_millis() as u64
    }

    /// Counts time as if the episode had started `ms` milliseconds ago: a copy of a transcript
    /// made elsewhere (a plugin scaffold's) keeps the episode's clock.
    pub fn started_before(&mut self, ms: u64) {
        let now = Instant::now();
        self.started = now
            .checked_sub(std::time::Duration::from_millis(ms))
            .unwrap_or(now);
    }

    /// Everything said and done so far, as data.
    pub fn state(&self) -> TranscriptState {
        TranscriptState {
            messages: self.messages.clone(),
            tools: self.tools.clone(),
            steps: self.steps.clone(),
            usage: self.usage,
            model_ms: self.model_ms,
            tokens: self.tokens.clone(),
            finish_reasons: self.finish_reasons.clone(),
            artifacts: self.artifacts.clone(),
        }
    }

    /// Takes over `state`, keeping this transcript's clock.
    pub fn restore(&mut self, state: TranscriptState) {
        self.messages = state.messages;
        self.tools = state.tools;
        self.steps = state.steps;
        self.usage = state.usage;
        self.model_ms = state.model_ms;
        self.tokens = state.tokens;
        self.finish_reasons = state.finish_reasons;
        self.artifacts = state.artifacts;
    }

    /// Records a model call's reply as [`Transcript::call_model`] does: usage, token data,
    /// finish reason, and the reply itself (marked with `agent`).
    pub fn record_completion(&mut self, agent: Option<&str>, completion: &Completion) {
        let mut usage = completion.usage;
        usage.model_calls = usage.model_calls.max(1);
        self.usage.add(usage);
        // One entry per model call, empty when the backend gave none: entry i is the i-th
        // assistant turn's, so a turn without token data never takes another's.
        self.tokens
            .push(completion.tokens.clone().unwrap_or_default());
        self.finish_reasons.push(completion.finish_reason.clone());
        let mut reply = completion.message.clone();
        reply.agent = agent.map(str::to_string);
        self.messages.push(reply);
    }

    /// Puts the scaffold's system prompt in front of the episode's opening messages. When the
    /// episode opens with a system message of its own (a policy, say), the two become one
    /// system message, the scaffold's first: some chat templates accept only one, at the start.
    pub fn set_system_prompt(&mut self, prompt: Option<&str>) {
        let Some(p) = prompt.filter(|p| !p.is_empty()) else {
            return;
        };
        match self.messages.first_mut() {
            Some(first) if first.role == crate::message::Role::System && first.agent.is_none() => {
                let own = first.content.take().unwrap_or_default();
                first.content = Some(format!("{p}\n\n{own}"));
            }
            _ => self.messages.insert(0, Message::system(p)),
        }
    }

    /// Whether the episode has spent more than `budget` tokens (prompt and completion).
    pub fn over_budget(&self, budget: Option<u64>) -> bool {
        budget.is_some_and(|b| self.usage.total_tokens() > b)
    }

    /// Calls the model on the conversation so far, appends its reply, and records usage.
    pub async fn call_model(
        &mut self,
        model: &dyn LanguageModel,
        sampling: &Sampling,
        offer_tools: bool,
    ) -> Result<Completion, ModelError> {
        self.call_model_inner(None, model, sampling, offer_tools)
            .await
    }

    /// Like [`Transcript::call_model`], in a rollout where several agents take turns: the
    /// model sees only `agent`'s conversation (the messages marked with it), and its reply is
    /// marked the same way.
    pub async fn call_model_as(
        &mut self,
        agent: &str,
        model: &dyn LanguageModel,
        sampling: &Sampling,
        offer_tools: bool,
    ) -> Result<Completion, ModelError> {
        self.call_model_inner(Some(agent), model, sampling, offer_tools)
            .await
    }

    async fn call_model_inner(
        &mut self,
        agent: Option<&str>,
        model: &dyn LanguageModel,
        sampling: &Sampling,
        offer_tools: bool,
    ) -> Result<Completion, ModelError> {
        let messages = match agent {
            None => self.messages.clone(),
            Some(a) => crate::message::agent_view(&self.messages, a),
        };
        let request = CompletionRequest {
            messages,
            tools: if offer_tools {
                self.tools.clone()
            } else {
                Vec::new()
            },
            sampling: sampling.clone(),
        };
        let t = Instant::now();
        let result = model.complete(&request).await;
        self.model_ms += t.elapsed().as_millis() as u64;
        let completion = result?;
        self.record_completion(agent, &completion);
        Ok(completion)
    }

    /// Takes `action` in the episode and records the step.
    pub async fn act(
        &mut self,
        episode: &mut dyn Episode,
        action: Action,
    ) -> Result<Observation, EnvironmentError> {
        let started_ms = self.elapsed_ms();
        let t = Instant::now();
        let observation = episode.act(&action).await?;
        self.steps.push(Step {
            index: self.steps.len() as u32,
            action,
            observation: observation.content.clone(),
            started_ms,
            duration_ms: t.elapsed().as_millis() as u64,
            exit_code: observation.exit_code,
            reply: self
                .messages
                .iter()
                .rposition(|m| m.role == crate::message::Role::Assistant)
                .and_then(|i| u32::try_from(i).ok()),
            reward: None,
        });
        Ok(observation)
    }
}

/// A transcript as data: what crosses the plugin boundary when a scaffold runs in a plugin.
#[derive(Debug, Clone, Default, PartialEq, serde::Serialize, serde::Deserialize)]
pub struct TranscriptState {
    pub messages: Vec<Message>,
    #[serde(default)]
    pub tools: Vec<ToolSchema>,
    #[serde(default)]
    pub steps: Vec<Step>,
    #[serde(default)]
    pub usage: Usage,
    #[serde(default)]
    pub model_ms: u64,
    #[serde(default)]
    pub tokens: Vec<TokenDetail>,
    #[serde(default)]
    pub finish_reasons: Vec<crate::model::FinishReason>,
    #[serde(default)]
    pub artifacts: serde_json::Map<String, serde_json::Value>,
}

impl Default for Transcript {
    fn default() -> Self {
        Self::new()
    }
}

/// Limits an agent loop enforces (mini-swe-agent's and SWE-agent's): model calls, cost, wall
/// time and malformed replies in a row. Zero means no limit.
#[derive(Debug, Clone, Copy, Default, PartialEq)]
pub struct AgentLimits {
    pub step_limit: u32,
    /// US dollars, priced by `pricing`.
    pub cost_limit: f64,
    pub wall_time_limit_secs: f64,
    pub max_format_errors: u32,
    pub pricing: crate::actions::Pricing,
    /// Observations longer than this many characters are cut to head and tail.
    pub max_output_chars: usize,
}

impl AgentLimits {
    /// Checks the values; the error names the config field.
    pub fn validate(&self) -> Result<(), crate::component::ComponentError> {
        use crate::component::ComponentError;
        if !(self.cost_limit.is_finite() && self.cost_limit >= 0.0) {
            return Err(ComponentError::at("cost_limit", "must be zero or more"));
        }
        crate::values::check_secs(self.wall_time_limit_secs, true)
            .map_err(|m| ComponentError::at("wall_time_limit_secs", m))?;
        if self.max_output_chars < 100 {
            return Err(ComponentError::at(
                "max_output_chars",
                "must be at least 100",
            ));
        }
        Ok(())
    }

    /// An observation as the model sees it: whole, or its head and tail around a marker.
    pub fn shorten(&self, observation: &str) -> (String, bool) {
        let half = self.max_output_chars / 2;
        crate::actions::elide_middle(observation, self.max_output_chars, half, half)
    }

    /// The exit status due before the next model call, if a limit is reached.
    pub fn exceeded(&self, steps: u32, transcript: &Transcript) -> Option<ExitStatus> {
        if self.step_limit > 0 && steps >= self.step_limit {
            return Some(ExitStatus::LimitsExceeded);
        }
        if self.cost_limit > 0.0 && self.pricing.cost(&transcript.usage) >= self.cost_limit {
            return Some(ExitStatus::LimitsExceeded);
        }
        if self.wall_time_limit_secs > 0.0
            && transcript.elapsed_ms() as f64 >= self.wall_time_limit_secs * 1000.0
        {
            return Some(ExitStatus::TimeExceeded);
        }
        None
    }

    /// Whether `errors` malformed replies in a row end the episode.
    pub fn too_many_format_errors(&self, errors: u32) -> bool {
        self.max_format_errors > 0 && errors >= self.max_format_errors
    }

    /// What the episode cost, for its record.
    pub fn model_stats(&self, transcript: &Transcript) -> serde_json::Value {
        serde_json::json!({
            "instance_cost": self.pricing.cost(&transcript.usage),
            "api_calls": transcript.usage.model_calls,
        })
    }
}

/// Puts `system` in front and rewrites the episode's first user message through `template`,
/// where `{{task}}` stands for the message as the environment wrote it.
pub fn frame_task(transcript: &mut Transcript, system: &str, template: &str) {
    if let Some(first) = transcript
        .messages
        .iter_mut()
        .find(|m| m.role == crate::message::Role::User)
    {
        let task = first.text().to_string();
        first.content = Some(template.replace("{{task}}", &task));
    }
    transcript.set_system_prompt(Some(system));
}

/// How a scaffold's run ended.
#[derive(Debug, Clone, PartialEq, serde::Serialize, serde::Deserialize)]
pub struct ScaffoldOutcome {
    pub exit_status: ExitStatus,
    pub submission: Option<String>,
}

/// Why a scaffold could not finish. Model-side truncation is an outcome, not an error; these are
/// infrastructure failures.
#[derive(Debug, Clone, PartialEq, thiserror::Error, serde::Serialize, serde::Deserialize)]
#[serde(tag = "kind", content = "error", rename_all = "snake_case")]
pub enum ScaffoldError {
    #[error(transparent)]
    Model(#[from] ModelError),
    #[error(transparent)]
    Environment(#[from] EnvironmentError),
    /// The scaffold itself broke (a plugin's scaffold panicked or broke the protocol): the
    /// scaffold's fault, never the model's.
    #[error("scaffold failure: {0}")]
    Scaffold(String),
}

/// Everything a scaffold needs for one rollout.
pub struct RolloutContext<'a> {
    pub episode: &'a mut dyn Episode,
    pub model: &'a dyn LanguageModel,
    /// Sampling for this rollout, its seed already derived.
    pub sampling: &'a Sampling,
    pub transcript: &'a mut Transcript,
}

/// Drives one episode with one model. Built once per run from its config; shared by all rollouts.
#[async_trait]
pub trait AgentScaffold: Send + Sync {
    /// The actions this scaffold takes; the environment must accept all of them.
    fn required_actions(&self) -> ActionSpace;

    /// Plays the episode out. The transcript arrives holding the episode's opening messages and
    /// tools; the scaffold adds its system prompt and everything that follows.
    async fn run(&self, cx: RolloutContext<'_>) -> Result<ScaffoldOutcome, ScaffoldError>;
}

/// Maps a model error to the end of an episode: a context overflow is a clean truncation,
/// anything else is an infrastructure error for the engine to record.
pub fn context_overflow_or(err: ModelError) -> Result<ScaffoldOutcome, ScaffoldError> {
    match err {
        ModelError::ContextLength(_) => Ok(ScaffoldOutcome {
            exit_status: ExitStatus::ContextWindowExceeded,
            submission: None,
        }),
        other => Err(ScaffoldError::Model(other)),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_scaffold_prompt_joins_an_episode_system_message() {
        let mut t = Transcript::new();
        t.messages = vec![Message::system("<policy>p</policy>"), Message::user("hi")];
        t.set_system_prompt(Some("Be brief."));
        assert_eq!(t.messages.len(), 2);
        assert_eq!(
            t.messages[0].content.as_deref(),
            Some("Be brief.\n\n<policy>p</policy>")
        );

        let mut t = Transcript::new();
        t.messages = vec![Message::user("hi")];
        t.set_system_prompt(Some("Be brief."));
        assert_eq!(t.messages[0].role, crate::message::Role::System);
        assert_eq!(t.messages.len(), 2);
        t.set_system_prompt(None);
        assert_eq!(t.messages.len(), 2);
    }
}

//! Helpers for testing a component on its own, without a model server or a run: play an episode
//! of an environment with scripted actions, drive a scaffold through an episode with a
//! [`ScriptedModel`], and build the finished record an evaluator scores or an exporter writes.
//! For plugin authors as much as for trawl's own tests.

use std::collections::BTreeMap;

use serde_json::Value;

use crate::environment::{Action, Artifacts, Environment, EnvironmentError, Observation};
use crate::message::{Message, ToolSchema};
use crate::model::{
    Completion, CompletionRequest, FinishReason, LanguageModel, ModelDescription, ModelError,
    Sampling, Usage,
};
use crate::scaffold::{
    AgentScaffold, RolloutContext, ScaffoldError, ScaffoldOutcome, Transcript, TranscriptState,
};
use crate::task::Task;
use crate::trajectory::{
    ExitStatus, Outcome, Provenance, RolloutKey, Timing, TrajectoryRecord, TRAJECTORY_SCHEMA,
};

/// What an episode played by [`play`] showed and left.
#[derive(Debug)]
pub struct Played {
    /// The messages the episode opened with (system prompt, task).
    pub opening: Vec<Message>,
    /// The tools it offered.
    pub tools: Vec<ToolSchema>,
    /// One observation per action taken.
    pub observations: Vec<Observation>,
    /// What `finish` returned (the submission, extra artifacts, step rewards).
    pub artifacts: Artifacts,
}

/// Starts `task` in `env`, takes `actions` in order (stopping after an observation that says the
/// episode is done), then finishes the episode. An error is the environment's own.
pub async fn play(
    env: &dyn Environment,
    task: &Task,
    actions: &[Action],
) -> Result<Played, EnvironmentError> {
    let mut episode = env.start(task).await?;
    let opening = episode.opening();
    let tools = episode.tools();
    let mut observations = Vec::new();
    for action in actions {
        let o = episode.act(action).await?;
        let done = o.done;
        observations.push(o);
        if done {
            break;
        }
    }
    let artifacts = episode.finish().await?;
    Ok(Played {
        opening,
        tools,
        observations,
        artifacts,
    })
}

/// A model that answers with scripted replies, in order, and keeps every request it was sent.
/// Past the end of its script it fails with a backend error.
pub struct ScriptedModel {
    replies: std::sync::Mutex<std::collections::VecDeque<Message>>,
    seen: std::sync::Mutex<Vec<CompletionRequest>>,
}

impl ScriptedModel {
    /// Replies that are plain text.
    pub fn new<S: Into<String>>(replies: impl IntoIterator<Item = S>) -> Self {
        Self::replying(replies.into_iter().map(Message::assistant))
    }

    /// Replies that are whole assistant messages (tool calls included).
    pub fn replying(replies: impl IntoIterator<Item = Message>) -> Self {
        ScriptedModel {
            replies: std::sync::Mutex::new(replies.into_iter().collect()),
            seen: std::sync::Mutex::new(Vec::new()),
        }
    }

    /// Every request so far, in order.
    pub fn requests(&self) -> Vec<CompletionRequest> {
        self.seen.lock().map(|s| s.clone()).unwrap_or_default()
    }
}

#[async_trait::async_trait]
impl LanguageModel for ScriptedModel {
    fn describe(&self) -> ModelDescription {
        ModelDescription {
            kind: "scripted".into(),
            model_id: "scripted".into(),
        }
    }

    async fn complete(&self, request: &CompletionRequest) -> Result<Completion, ModelError> {
        if let Ok(mut seen) = self.seen.lock() {
            seen.push(request.clone());
        }
        let next = self.replies.lock().ok().and_then(|mut r| r.pop_front());
        let message =
            next.ok_or_else(|| ModelError::Backend("the script has no more replies".into()))?;
        Ok(Completion {
            message,
            finish_reason: FinishReason::Stop,
            usage: Usage {
                prompt_tokens: 0,
                completion_tokens: 0,
                model_calls: 1,
            },
            tokens: None,
        })
    }
}

/// What a scaffold driven by [`drive`] did.
#[derive(Debug)]
pub struct Driven {
    pub outcome: Result<ScaffoldOutcome, ScaffoldError>,
    /// The transcript as the run would record it.
    pub transcript: TranscriptState,
    /// What the episode's `finish` returned.
    pub artifacts: Artifacts,
}

/// Runs `scaffold` on one episode of `task` with `model`, as a run would (without its time
/// limit and scoring), then finishes the episode.
pub async fn drive(
    scaffold: &dyn AgentScaffold,
    env: &dyn Environment,
    task: &Task,
    model: &dyn LanguageModel,
) -> Result<Driven, EnvironmentError> {
    let mut episode = env.start(task).await?;
    let mut transcript = Transcript::new();
    transcript.messages = episode.opening();
    transcript.tools = episode.tools();
    let sampling = Sampling::default();
    let outcome = scaffold
        .run(RolloutContext {
            episode: episode.as_mut(),
            model,
            sampling: &sampling,
            transcript: &mut transcript,
        })
        .await;
    let artifacts = episode.finish().await?;
    Ok(Driven {
        outcome,
        transcript: transcript.state(),
        artifacts,
    })
}

/// A finished record of `task` in environment `environment` (scaffold and model `test`, sample
/// 0): `messages`, exit status `Submitted`, `submission` as the outcome's submission, no
/// evaluation yet. Shape it further by hand (`record.outcome.exit_status = ...`).
pub fn record(
    environment: &str,
    task: &Task,
    messages: Vec<Message>,
    submission: Option<&str>,
) -> TrajectoryRecord {
    TrajectoryRecord {
        schema: TRAJECTORY_SCHEMA.into(),
        key: RolloutKey {
            environment: environment.into(),
            scaffold: "test".into(),
            model: "test".into(),
            task: task.id.clone(),
            sample: 0,
        },
        task: task.clone(),
        messages,
        tools: Vec::new(),
        steps: Vec::new(),
        outcome: Outcome {
            exit_status: ExitStatus::Submitted,
            submission: submission.map(str::to_string),
            error: None,
            artifacts: Value::Null,
        },
        evaluations: Vec::new(),
        reward: 0.0,
        success: false,
        usage: Usage::default(),
        tokens: Vec::new(),
        finish_reasons: Vec::new(),
        timing: Timing {
            started_at: crate::engine::now_rfc3339(),
            duration_ms: 0,
            model_ms: 0,
        },
        provenance: Provenance {
            trawl_version: crate::engine::TRAWL_VERSION.into(),
            model_kind: "test".into(),
            model_id: "test".into(),
            sampling: Sampling::default(),
            seed: 0,
            run_id: "test".into(),
            components: BTreeMap::new(),
        },
    }
}

/// A small environment for testing scaffolds and exporters: guess the task's number (its one
/// task, `n7`, hides 7). Every guess, as an answer or as a call of its `guess` tool
/// (`{"n": 7}`), is told "higher", "lower" or, ending the episode, "right"; the last answer is
/// the submission.
pub struct GuessNumber;

struct GuessEpisode {
    target: i64,
    last: Option<String>,
}

#[async_trait::async_trait]
impl Environment for GuessNumber {
    fn action_space(&self) -> crate::environment::ActionSpace {
        crate::environment::ActionSpace {
            answer: true,
            tool_calls: true,
            ..Default::default()
        }
    }
    async fn tasks(&self) -> Result<Vec<Task>, EnvironmentError> {
        Ok(vec![Task::new("n7", serde_json::json!({"target": 7}))])
    }
    async fn start(
        &self,
        task: &Task,
    ) -> Result<Box<dyn crate::environment::Episode>, EnvironmentError> {
        Ok(Box::new(GuessEpisode {
            target: task.data["target"].as_i64().unwrap_or_default(),
            last: None,
        }))
    }
}

#[async_trait::async_trait]
impl crate::environment::Episode for GuessEpisode {
    fn opening(&self) -> Vec<Message> {
        vec![Message::user("Guess my number.")]
    }
    fn tools(&self) -> Vec<ToolSchema> {
        vec![ToolSchema::function(
            "guess",
            "Guess the number",
            serde_json::json!({"type": "object", "properties": {"n": {"type": "integer"}}}),
        )]
    }
    async fn act(&mut self, action: &Action) -> Result<Observation, EnvironmentError> {
        let guess = match action {
            Action::Answer { text } => {
                self.last = Some(text.clone());
                text.trim().parse().ok()
            }
            Action::ToolCall { call } => serde_json::from_str::<Value>(&call.function.arguments)
                .ok()
                .and_then(|a| a["n"].as_i64()),
            _ => return Ok(Observation::text("answer with a number")),
        };
        Ok(match guess.unwrap_or(i64::MIN).cmp(&self.target) {
            std::cmp::Ordering::Less => Observation::text("higher"),
            std::cmp::Ordering::Greater => Observation::text("lower"),
            std::cmp::Ordering::Equal => Observation {
                done: true,
                ..Observation::text("right")
            },
        })
    }
    async fn finish(&mut self) -> Result<Artifacts, EnvironmentError> {
        Ok(Artifacts {
            submission: self.last.clone(),
            ..Artifacts::default()
        })
    }
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;

    use super::*;

    #[tokio::test]
    async fn play_stops_at_done_and_record_is_a_finished_rollout() {
        let env: Arc<dyn Environment> = Arc::new(GuessNumber);
        let task = env.tasks().await.unwrap().remove(0);
        let answers = ["3", "9", "7", "8"].map(|a| Action::Answer { text: a.into() });
        let played = play(env.as_ref(), &task, &answers).await.unwrap();
        let said: Vec<&str> = played
            .observations
            .iter()
            .map(|o| o.content.as_str())
            .collect();
        assert_eq!(
            said,
            ["higher", "lower", "right"],
            "the fourth is never taken"
        );
        assert_eq!(played.artifacts.submission.as_deref(), Some("7"));
        assert_eq!(played.opening.len(), 1);

        let r = record("guess", &task, played.opening, Some("7"));
        assert!(
            r.is_final() && !r.is_scored(),
            "finished, for an evaluator to score"
        );
        assert_eq!(r.key.task, "n7");
        // It is a valid stored record: it reads back through the store's own parser.
        let line = serde_json::to_string(&r).unwrap();
        let back = crate::store::parse_record(std::path::Path::new("t.jsonl"), 1, &line).unwrap();
        assert_eq!(back, r);
    }
}

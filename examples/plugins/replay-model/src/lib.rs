//! An example model-backend plugin: `replay`. It answers every request with the reply a
//! recorded run gave to the same conversation, so a run can be played again without a model
//! server: to re-score it with other evaluators, to test a scaffold or an exporter against real
//! conversations, or to check that a change to trawl leaves a run's conversations as they were.
//!
//! ```toml
//! [[models]]
//! type = "replay"
//! name = "replayed"
//! run = "runs/first"      # a run folder, or a JSONL file of trajectory records
//! ```
//!
//! A conversation is matched on every message's role, content, tool calls, tool-call id and
//! name. Where a recorded conversation continued in several ways (several samples of one task),
//! the replies are handed out in turn. A conversation the recording never had is a backend error
//! (an infrastructure error for the rollout, never scored as the model's failure).

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};

use serde::Deserialize;
use trawl_core::model::{
    Completion, CompletionRequest, FinishReason, LanguageModel, ModelDescription, ModelError,
    TokenDetail, Usage,
};
use trawl_core::registry::{BuildContext, ComponentError, ModelConfig};
use trawl_core::{async_trait, Message, TrajectoryRecord};

trawl_plugin_abi::declare_plugin!();

/// `[[models]] type = "replay"`.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ReplayConfig {
    /// A run folder (its `trajectories.jsonl` is read) or a JSONL file of trajectory records,
    /// relative to the config file.
    pub run: String,
}

impl ModelConfig for ReplayConfig {
    fn build(self, cx: &BuildContext) -> Result<Arc<dyn LanguageModel>, ComponentError> {
        let path = cx.resolve(&self.run);
        let file = if path.is_dir() {
            path.join("trajectories.jsonl")
        } else {
            path
        };
        let model = Replay::load(&file).map_err(|m| ComponentError::at("run", m))?;
        Ok(Arc::new(model))
    }
}

trawl_core::register!(
    model,
    "replay",
    "Answers from a recorded run's conversations (re-scoring, tests)",
    ReplayConfig
);

/// One recorded reply.
#[derive(Debug, Clone)]
struct Recorded {
    message: Message,
    finish_reason: FinishReason,
    tokens: Option<TokenDetail>,
}

/// The replies to one conversation, and which is next.
#[derive(Debug, Default)]
struct Replies {
    replies: Vec<Recorded>,
    next: usize,
}

pub struct Replay {
    file: PathBuf,
    model_id: String,
    by_conversation: Mutex<HashMap<String, Replies>>,
}

/// What identifies a conversation: each message's role, content, tool calls, tool-call id and
/// name (not trawl's agent marks or a server's reasoning text).
fn key(messages: &[Message]) -> String {
    let parts: Vec<_> = messages
        .iter()
        .map(|m| serde_json::json!([m.role, m.content, m.tool_calls, m.tool_call_id, m.name]))
        .collect();
    serde_json::Value::Array(parts).to_string()
}

impl Replay {
    /// Reads every record of `file`; the error names the file and line.
    pub fn load(file: &Path) -> Result<Self, String> {
        let text = std::fs::read_to_string(file)
            .map_err(|e| format!("cannot read {}: {e}", file.display()))?;
        let mut by_conversation: HashMap<String, Replies> = HashMap::new();
        let mut model_id = None;
        for (i, line) in text.lines().enumerate() {
            if line.trim().is_empty() {
                continue;
            }
            let record: TrajectoryRecord = serde_json::from_str(line).map_err(|e| {
                format!(
                    "{}:{}: not a trajectory record: {e}\n  hint: `run` names a run folder or the JSONL file of records a run wrote",
                    file.display(),
                    i + 1
                )
            })?;
            model_id.get_or_insert_with(|| record.provenance.model_id.clone());
            let mut turn = 0;
            for (at, m) in record.messages.iter().enumerate() {
                if m.role != trawl_core::message::Role::Assistant {
                    continue;
                }
                let mut message = m.clone();
                message.agent = None;
                let recorded = Recorded {
                    message,
                    finish_reason: record
                        .finish_reasons
                        .get(turn)
                        .cloned()
                        .unwrap_or(FinishReason::Stop),
                    tokens: record.tokens.get(turn).filter(|t| !t.is_empty()).cloned(),
                };
                turn += 1;
                by_conversation
                    .entry(key(&record.messages[..at]))
                    .or_default()
                    .replies
                    .push(recorded);
            }
        }
        if by_conversation.is_empty() {
            return Err(format!(
                "{} holds no model replies to replay",
                file.display()
            ));
        }
        Ok(Replay {
            file: file.to_path_buf(),
            model_id: model_id.unwrap_or_default(),
            by_conversation: Mutex::new(by_conversation),
        })
    }
}

#[async_trait]
impl LanguageModel for Replay {
    fn describe(&self) -> ModelDescription {
        ModelDescription {
            kind: "replay".into(),
            model_id: self.model_id.clone(),
        }
    }

    async fn complete(&self, request: &CompletionRequest) -> Result<Completion, ModelError> {
        let found = {
            let mut map = self
                .by_conversation
                .lock()
                .map_err(|_| ModelError::Backend("replay: its index is unusable".into()))?;
            map.get_mut(&key(&request.messages)).map(|r| {
                let reply = r.replies[r.next % r.replies.len()].clone();
                r.next += 1;
                reply
            })
        };
        let Some(reply) = found else {
            let last = request
                .messages
                .last()
                .map(|m| m.text().chars().take(80).collect::<String>())
                .unwrap_or_default();
            return Err(ModelError::Backend(format!(
                "replay: {} has no reply to this conversation ({} messages, the last: {last:?})",
                self.file.display(),
                request.messages.len()
            )));
        };
        let usage = Usage {
            prompt_tokens: reply
                .tokens
                .as_ref()
                .map_or(0, |t| t.prompt_ids.len() as u64),
            completion_tokens: reply
                .tokens
                .as_ref()
                .map_or(0, |t| t.completion_ids.len() as u64),
            model_calls: 1,
        };
        Ok(Completion {
            message: reply.message,
            finish_reason: reply.finish_reason,
            usage,
            tokens: reply.tokens,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use trawl_core::model::Sampling;
    use trawl_core::testing::record;
    use trawl_core::Task;

    fn request(messages: Vec<Message>) -> CompletionRequest {
        CompletionRequest {
            messages,
            tools: Vec::new(),
            sampling: Sampling::default(),
        }
    }

    #[tokio::test]
    async fn it_answers_each_recorded_turn_and_refuses_the_unknown() {
        let task = Task::new("t1", serde_json::json!({}));
        let q = Message::user("What is 2+2?");
        let a1 = Message::assistant("3");
        let fb = Message::user("Wrong, try again.");
        let a2 = Message::assistant("4");
        let mut one = record(
            "math",
            &task,
            vec![q.clone(), a1.clone(), fb.clone(), a2.clone()],
            Some("4"),
        );
        one.provenance.model_id = "smollm2".into();
        let mut other = one.clone();
        other.messages = vec![q.clone(), Message::assistant("5")];
        let dir = tempfile::tempdir().unwrap();
        let file = dir.path().join("trajectories.jsonl");
        let lines = [&one, &other]
            .map(|r| serde_json::to_string(r).unwrap())
            .join("\n");
        std::fs::write(&file, lines).unwrap();

        let replay = Replay::load(&file).unwrap();
        assert_eq!(replay.describe().model_id, "smollm2");
        // Two recorded first replies, handed out in turn.
        let first: Vec<String> = futures_first(&replay, vec![q.clone()]).await;
        assert_eq!(first, ["3", "5", "3"]);
        let second = replay
            .complete(&request(vec![q.clone(), a1, fb]))
            .await
            .unwrap();
        assert_eq!(second.message.text(), "4");
        let e = replay
            .complete(&request(vec![Message::user("What is 9+9?")]))
            .await
            .unwrap_err();
        assert!(
            matches!(e, ModelError::Backend(ref m) if m.contains("has no reply to this conversation")),
            "{e}"
        );

        std::fs::write(&file, "{not json}\n").unwrap();
        let e = Replay::load(&file).err().unwrap();
        assert!(
            e.contains("trajectories.jsonl:1: not a trajectory record"),
            "{e}"
        );
    }

    async fn futures_first(replay: &Replay, messages: Vec<Message>) -> Vec<String> {
        let mut out = Vec::new();
        for _ in 0..3 {
            let c = replay.complete(&request(messages.clone())).await.unwrap();
            out.push(c.message.text().to_string());
        }
        out
    }
}

//! The trajectory record: one line of `trajectories.jsonl`, schema `trawl.trajectory/1`.

use std::collections::BTreeMap;
use std::fmt;

use serde::{Deserialize, Serialize};
use serde_json::Value;

use crate::evaluation::Evaluation;
use crate::message::{Message, ToolSchema};
use crate::model::{Sampling, TokenDetail, Usage};
use crate::task::Task;

/// The schema tag every record carries. Bump the suffix on an incompatible change.
pub const TRAJECTORY_SCHEMA: &str = "trawl.trajectory/1";

/// What identifies one rollout: (environment, scaffold, model, task, sample). A run directory
/// holds exactly one finished record per key.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
pub struct RolloutKey {
    pub environment: String,
    pub scaffold: String,
    pub model: String,
    pub task: String,
    pub sample: u32,
}

impl fmt::Display for RolloutKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "{}/{}/{}/{}#{}",
            self.environment, self.scaffold, self.model, self.task, self.sample
        )
    }
}

impl RolloutKey {
    /// A stable 64-bit hash of the key (FNV-1a over its display form), used to derive per-rollout
    /// seeds that do not change between runs, machines or trawl versions.
    pub fn stable_hash(&self) -> u64 {
        let mut h: u64 = 0xcbf2_9ce4_8422_2325;
        for b in self.to_string().bytes() {
            h ^= u64::from(b);
            h = h.wrapping_mul(0x0100_0000_01b3);
        }
        h
    }
}

/// How an episode ended. Serialized names follow mini-swe-agent's where one exists.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
pub enum ExitStatus {
    /// The agent gave its final answer or submission.
    Submitted,
    /// The step (or turn) limit was reached.
    LimitsExceeded,
    /// The token budget of the episode was spent.
    TokenLimitExceeded,
    /// The episode's wall-time limit was reached.
    TimeExceeded,
    /// Too many malformed replies in a row.
    RepeatedFormatError,
    /// The conversation outgrew the model's context window: a clean truncation.
    ContextWindowExceeded,
    /// trawl was stopped while the episode ran; re-run on resume.
    Interrupted,
    /// Something outside the model failed (server unreachable, sandbox broke); re-run on resume,
    /// never counted as a model failure.
    InfraError,
}

impl ExitStatus {
    /// Whether the record is final: a resume keeps it and never re-runs its key.
    pub fn is_final(self) -> bool {
        !matches!(self, ExitStatus::Interrupted | ExitStatus::InfraError)
    }

    pub fn as_str(self) -> &'static str {
        match self {
            ExitStatus::Submitted => "Submitted",
            ExitStatus::LimitsExceeded => "LimitsExceeded",
            ExitStatus::TokenLimitExceeded => "TokenLimitExceeded",
            ExitStatus::TimeExceeded => "TimeExceeded",
            ExitStatus::RepeatedFormatError => "RepeatedFormatError",
            ExitStatus::ContextWindowExceeded => "ContextWindowExceeded",
            ExitStatus::Interrupted => "Interrupted",
            ExitStatus::InfraError => "InfraError",
        }
    }

    pub const ALL: [ExitStatus; 8] = [
        ExitStatus::Submitted,
        ExitStatus::LimitsExceeded,
        ExitStatus::TokenLimitExceeded,
        ExitStatus::TimeExceeded,
        ExitStatus::RepeatedFormatError,
        ExitStatus::ContextWindowExceeded,
        ExitStatus::Interrupted,
        ExitStatus::InfraError,
    ];

    pub fn parse(s: &str) -> Option<Self> {
        Self::ALL.into_iter().find(|x| x.as_str() == s)
    }
}

impl fmt::Display for ExitStatus {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// A typed error that ended an episode, kept in the record.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct RecordedError {
    /// A short class: `model_unavailable`, `model_rejected`, `environment`, `evaluator`, `panic`, ...
    pub kind: String,
    pub message: String,
}

/// How the episode ended and what it produced.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Outcome {
    pub exit_status: ExitStatus,
    /// The final answer, patch or other submission, if any.
    pub submission: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub error: Option<RecordedError>,
    /// Environment-specific artifacts (final database state, diff, ...).
    #[serde(default, skip_serializing_if = "Value::is_null")]
    pub artifacts: Value,
}

/// One action the agent took and what came back.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Step {
    pub index: u32,
    pub action: crate::environment::Action,
    pub observation: String,
    /// Milliseconds from the start of the episode to the start of the step.
    pub started_ms: u64,
    pub duration_ms: u64,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub exit_code: Option<i32>,
    /// The index in `messages` of the assistant message whose action this was.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub reply: Option<u32>,
    /// The environment's reward for this step, when it gives rewards step by step.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub reward: Option<f64>,
}

/// When the episode ran.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Timing {
    /// RFC 3339, UTC.
    pub started_at: String,
    pub duration_ms: u64,
    /// Time spent waiting on the model, summed over calls.
    pub model_ms: u64,
}

/// Where the record came from, enough to reproduce it.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Provenance {
    pub trawl_version: String,
    /// The model backend's kind and its model identifier (`openai` / `gpt-4o-mini`).
    pub model_kind: String,
    pub model_id: String,
    pub sampling: Sampling,
    /// The seed this rollout's sampling used, derived from the run seed and the key.
    pub seed: u64,
    pub run_id: String,
    /// Versions of every plugin that took part, by role.
    #[serde(default)]
    pub components: BTreeMap<String, String>,
}

/// One rollout, everything a trainer or an analyst needs from it.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct TrajectoryRecord {
    pub schema: String,
    pub key: RolloutKey,
    pub task: Task,
    pub messages: Vec<Message>,
    pub tools: Vec<ToolSchema>,
    pub steps: Vec<Step>,
    pub outcome: Outcome,
    pub evaluations: Vec<Evaluation>,
    /// The primary (first) evaluation's reward; 0 when there is none. `null` on disk (what an
    /// older trawl wrote for an overflow) reads as NaN, for the store to report and repair.
    #[serde(deserialize_with = "crate::reward::null_as_nan")]
    pub reward: f64,
    /// The primary evaluation's verdict; false when there is none.
    pub success: bool,
    pub usage: Usage,
    /// Per assistant turn (entry i is the i-th assistant message's, empty when that call gave
    /// none), the prompt and completion token ids and per-token logprobs, when the sampling asked
    /// for them (`logprobs = true`) and the backend gives them; empty when no turn had any.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub tokens: Vec<TokenDetail>,
    /// Why each model call stopped, in order (`stop`, `length`, `tool_calls`, ...), as the
    /// server said.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub finish_reasons: Vec<crate::model::FinishReason>,
    pub timing: Timing,
    pub provenance: Provenance,
}

impl TrajectoryRecord {
    /// Each reward of this record that breaks the rule, as `field: why` (the record's `reward`, each
    /// evaluation's `reward` and sub-rewards, each step's reward).
    pub fn unsound_rewards(&self) -> Vec<String> {
        let mut out = Vec::new();
        let mut check = |field: String, v: f64| {
            if let Some(why) = crate::reward::unsound(v) {
                out.push(format!("`{field}` is {why}"));
            }
        };
        check("reward".into(), self.reward);
        for (i, e) in self.evaluations.iter().enumerate() {
            check(format!("evaluations[{i}].reward"), e.reward);
            for (name, v) in &e.components {
                check(format!("evaluations[{i}].components.{name}"), *v);
            }
        }
        for (i, s) in self.steps.iter().enumerate() {
            if let Some(r) = s.reward {
                check(format!("steps[{i}].reward"), r);
            }
        }
        out
    }

    /// Turns this record, read from disk, whose rewards break the rule into an infrastructure error (it
    /// was never a sound label: stats and exports leave it out, resume re-runs it): its reward 0,
    /// no success, the evaluations and step rewards that broke the rule dropped, and the reason in
    /// its error. Returns that reason, naming `path` and `line`, or `None` for a sound self.
    pub(crate) fn repair_unsound_rewards(
        &mut self,
        path: &std::path::Path,
        line: usize,
    ) -> Option<String> {
        let fields = self.unsound_rewards();
        if fields.is_empty() {
            return None;
        }
        let note = format!(
            "{}:{line}: rollout {}: {}; read as an infrastructure error (left out of stats and exports, re-run by `trawl run` on resume)",
            path.display(),
            self.key,
            fields.join(", ")
        );
        self.reward = 0.0;
        self.success = false;
        self.evaluations.retain(|e| {
            crate::reward::unsound(e.reward).is_none()
                && e.components
                    .values()
                    .all(|v| crate::reward::unsound(*v).is_none())
        });
        for s in &mut self.steps {
            if s.reward
                .is_some_and(|r| crate::reward::unsound(r).is_some())
            {
                s.reward = None;
            }
        }
        self.outcome.exit_status = ExitStatus::InfraError;
        self.outcome.error = Some(RecordedError {
            kind: "evaluator".into(),
            message: format!(
                "the record as written had rewards trawl cannot use: {}",
                fields.join(", ")
            ),
        });
        Some(note)
    }

    /// Whether this rollout is an infrastructure failure or was interrupted: such records are
    /// kept out of metrics and exports and re-run on resume.
    pub fn is_final(&self) -> bool {
        self.outcome.exit_status.is_final()
    }

    /// Whether any evaluator scored this rollout. trawl's own finished rollouts always are (one
    /// that none could score is an infrastructure error); an imported trajectory without a
    /// harness report is not: it is no failure, and success rates leave it out.
    pub fn is_scored(&self) -> bool {
        !self.evaluations.is_empty()
    }

    /// Whether a reply was cut off by `max_tokens`: such a rollout is no success-only training
    /// example unless asked for (`--include-truncated`).
    pub fn truncated(&self) -> bool {
        self.finish_reasons
            .contains(&crate::model::FinishReason::Length)
    }

    /// The text of the last assistant message, if any.
    pub fn last_reply(&self) -> Option<&str> {
        self.messages
            .iter()
            .rev()
            .find(|m| m.role == crate::message::Role::Assistant)
            .and_then(|m| m.content.as_deref())
    }

    /// Number of assistant turns.
    pub fn assistant_turns(&self) -> usize {
        self.messages
            .iter()
            .filter(|m| m.role == crate::message::Role::Assistant)
            .count()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::strategies::record;
    use proptest::prelude::*;

    proptest! {
        #[test]
        fn records_round_trip_through_one_jsonl_line(r in record()) {
            let line = serde_json::to_string(&r).unwrap();
            prop_assert!(!line.contains('\n'), "a record must be one line");
            let back = crate::store::parse_record(std::path::Path::new("t.jsonl"), 1, &line).unwrap();
            prop_assert_eq!(back, r);
        }
    }

    #[test]
    fn exit_status_names_round_trip() {
        for s in ExitStatus::ALL {
            assert_eq!(ExitStatus::parse(s.as_str()), Some(s));
            assert_eq!(
                serde_json::to_value(s).unwrap(),
                serde_json::json!(s.as_str())
            );
        }
        assert!(!ExitStatus::InfraError.is_final() && !ExitStatus::Interrupted.is_final());
        assert!(ExitStatus::TimeExceeded.is_final());
    }

    /// The shape an older trawl wrote when a sum overflowed: `null` rewards. The line loads, as
    /// an infrastructure error whose note names file, line and fields; a sound line is untouched.
    #[test]
    fn a_null_reward_on_disk_reads_as_an_infrastructure_error() {
        let mut r = crate::strategies::example_record();
        r.outcome.exit_status = crate::trajectory::ExitStatus::Submitted;
        r.success = true;
        r.evaluations = vec![crate::evaluator::Evaluation {
            evaluator: "openenv_reward".into(),
            reward: 1.0,
            success: true,
            components: [("reward".to_string(), 1.0)].into(),
            details: serde_json::Value::Null,
        }];
        let path = std::path::Path::new("runs/x/trajectories.jsonl");
        let line = serde_json::to_string(&r).unwrap();
        assert_eq!(
            crate::store::parse_record_noting(path, 4, &line).unwrap(),
            (r.clone(), None)
        );
        let mut v = serde_json::to_value(&r).unwrap();
        v["reward"] = serde_json::Value::Null;
        v["evaluations"][0]["reward"] = serde_json::Value::Null;
        v["evaluations"][0]["components"]["reward"] = serde_json::Value::Null;
        let line = serde_json::to_string(&v).unwrap();
        assert!(line.contains("\"reward\":null"));
        let (back, note) = crate::store::parse_record_noting(path, 4, &line).unwrap();
        let note = note.expect("a note");
        assert!(
            note.starts_with("runs/x/trajectories.jsonl:4: rollout ")
                && note.contains("`reward` is not a finite number")
                && note.contains("`evaluations[0].components.reward`"),
            "{note}"
        );
        assert!(!back.is_final() && !back.success && back.reward == 0.0);
        assert!(back.evaluations.is_empty());
        assert!(back.unsound_rewards().is_empty());
        assert_eq!(back.outcome.error.unwrap().kind, "evaluator");
    }
}

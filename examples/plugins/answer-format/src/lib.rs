//! An example evaluator plugin that reuses a built-in crate's helpers:
//!
//! - `answer_format` (evaluator): is the final answer stated so that a reader (or a parser) can
//!   find it, and briefly? It reads the answer with `trawl_math`'s extraction (`\boxed{}`,
//!   `####`, "the answer is"), so it agrees with the math environment on what counts as an
//!   answer, and scores three sub-rewards: `stated` (an answer can be read), `boxed` (it is in
//!   `\boxed{}`), `concise` (the reply is at most `max_words` words).
//!
//! It scores tasks that have a short answer (a string `answer` field in the task data); any
//! other task is outside what it can judge, and it says so (`Unscorable`): trawl then records
//! no verdict for it instead of an error. Scope it in a config with `environments = [...]`.
//!
//! Linking `trawl_math` puts its kinds into this library too; only this crate's own kind is
//! exported, so loading the plugin does not register `math` a second time.

#![forbid(unsafe_code)]

use std::collections::BTreeMap;
use std::sync::Arc;

use serde::Deserialize;
use trawl_core::registry::{BuildContext, ComponentError, EvaluatorConfig};
use trawl_core::{async_trait, Evaluation, Evaluator, EvaluatorError, TrajectoryRecord};

trawl_plugin_abi::declare_plugin!();

/// `[[evaluators]] type = "answer_format"`.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct AnswerFormatConfig {
    /// The longest reply, in words, that counts as concise.
    #[serde(default = "default_max_words")]
    pub max_words: usize,
    /// Ask for `\boxed{}` as part of success (default: any readable statement will do).
    #[serde(default)]
    pub require_boxed: bool,
}

fn default_max_words() -> usize {
    80
}

impl EvaluatorConfig for AnswerFormatConfig {
    fn build(self, _: &BuildContext) -> Result<Arc<dyn Evaluator>, ComponentError> {
        if self.max_words == 0 {
            return Err(ComponentError::at("max_words", "must be at least 1"));
        }
        Ok(Arc::new(AnswerFormat { config: self }))
    }
}

trawl_core::register!(
    evaluator,
    "answer_format",
    "Checks a short answer is stated clearly and briefly (example plugin, reuses trawl-math)",
    AnswerFormatConfig
);

pub struct AnswerFormat {
    config: AnswerFormatConfig,
}

#[async_trait]
impl Evaluator for AnswerFormat {
    fn name(&self) -> &str {
        "answer_format"
    }

    async fn evaluate(&self, record: &TrajectoryRecord) -> Result<Evaluation, EvaluatorError> {
        if !record
            .task
            .data
            .get("answer")
            .is_some_and(|a| a.is_string())
        {
            return Err(EvaluatorError::Unscorable {
                evaluator: self.name().into(),
                task: record.task.id.clone(),
                message: "the task has no short `answer` to state".into(),
            });
        }
        let reply = record.last_reply().unwrap_or_default();
        let stated = trawl_math::answer::extract_answer(reply).is_some();
        let boxed = trawl_math::answer::last_boxed(reply).is_some();
        let words = reply.split_whitespace().count();
        let concise = words > 0 && words <= self.config.max_words;
        let as_f = |b: bool| f64::from(u8::from(b));
        let components = BTreeMap::from([
            ("stated".to_string(), as_f(stated)),
            ("boxed".to_string(), as_f(boxed)),
            ("concise".to_string(), as_f(concise)),
        ]);
        let success = stated && concise && (boxed || !self.config.require_boxed);
        Ok(Evaluation {
            evaluator: self.name().into(),
            reward: (as_f(stated) + as_f(boxed) + as_f(concise)) / 3.0,
            success,
            components,
            details: serde_json::Value::Null,
        })
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;
    use trawl_core::Message;

    fn record(task: serde_json::Value, reply: &str) -> TrajectoryRecord {
        let mut r = trawl_core::strategies::example_record();
        r.task.data = task;
        r.messages = vec![Message::user("q"), Message::assistant(reply)];
        r
    }

    fn rubric(require_boxed: bool) -> AnswerFormat {
        AnswerFormat {
            config: AnswerFormatConfig {
                max_words: 10,
                require_boxed,
            },
        }
    }

    #[tokio::test]
    async fn scores_statement_box_and_length() {
        let task = serde_json::json!({"answer": "7"});
        let e = rubric(false)
            .evaluate(&record(task.clone(), "The answer is \\boxed{7}"))
            .await
            .unwrap();
        assert!(e.success && e.reward == 1.0, "{e:?}");
        let e = rubric(true)
            .evaluate(&record(task.clone(), "The answer is 7"))
            .await
            .unwrap();
        assert!(!e.success && e.components["stated"] == 1.0 && e.components["boxed"] == 0.0);
        let long = "I think that the answer is 7 but let me say a lot more words here";
        let e = rubric(false).evaluate(&record(task, long)).await.unwrap();
        assert!(!e.success && e.components["concise"] == 0.0);
    }

    #[tokio::test]
    async fn tasks_without_a_short_answer_are_not_its_to_judge() {
        let e = rubric(false)
            .evaluate(&record(serde_json::json!({"tests": "x"}), "hi"))
            .await;
        assert!(matches!(e, Err(EvaluatorError::Unscorable { .. })));
    }
}

//! An example trawl plugin, built as a shared library and loaded at run time:
//!
//! - `keyword_rubric` (evaluator): scores the final answer on the keywords it mentions and on
//!   its length, the kind of cheap rubric used to filter free-text answers before a judge.
//! - `review_csv` (exporter): one CSV row per selected rollout (task, sample, reward, success,
//!   answer) for people to read through.
//!
//! Nothing here is special to plugins: the kinds register with `trawl_core::register!` like
//! built-in kinds, and the one `declare_plugin!` line makes the library loadable.

#![forbid(unsafe_code)]

use std::collections::BTreeMap;
use std::io::Write;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;

use serde::Deserialize;
use serde_json::json;
use trawl_core::registry::{BuildContext, ComponentError, EvaluatorConfig, ExporterConfig};
use trawl_core::{
    async_trait, Evaluation, Evaluator, EvaluatorError, ExportError, Exporter, TrajectoryRecord,
};

trawl_plugin_abi::declare_plugin!();

/// `[[evaluators]] type = "keyword_rubric"`.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct KeywordRubricConfig {
    /// Words or phrases a good answer mentions (case-insensitive).
    #[serde(default)]
    pub keywords: Vec<String>,
    /// A task data field holding more keywords for that task (a list of strings), if present.
    #[serde(default)]
    pub keywords_field: Option<String>,
    /// The answer's length in words should lie in this range.
    #[serde(default = "default_min_words")]
    pub min_words: usize,
    #[serde(default = "default_max_words")]
    pub max_words: usize,
    /// The share of the reward that comes from keywords; the rest comes from length.
    #[serde(default = "default_keyword_weight")]
    pub keyword_weight: f64,
    /// The reward at or above which an answer passes.
    #[serde(default = "default_pass")]
    pub pass_threshold: f64,
}

fn default_min_words() -> usize {
    1
}
fn default_max_words() -> usize {
    200
}
fn default_keyword_weight() -> f64 {
    0.7
}
fn default_pass() -> f64 {
    0.6
}

impl EvaluatorConfig for KeywordRubricConfig {
    fn build(self, _: &BuildContext) -> Result<Arc<dyn Evaluator>, ComponentError> {
        if self.keywords.is_empty() && self.keywords_field.is_none() {
            return Err(ComponentError::at(
                "keywords",
                "give at least one keyword, or `keywords_field` to read them from each task",
            ));
        }
        if self.min_words > self.max_words {
            return Err(ComponentError::at(
                "min_words",
                format!(
                    "must not exceed max_words ({} > {})",
                    self.min_words, self.max_words
                ),
            ));
        }
        if !(0.0..=1.0).contains(&self.keyword_weight) {
            return Err(ComponentError::at(
                "keyword_weight",
                "must lie between 0 and 1",
            ));
        }
        Ok(Arc::new(KeywordRubric { config: self }))
    }
}

trawl_core::register!(
    evaluator,
    "keyword_rubric",
    "Scores the final answer on the keywords it mentions and on its length (example plugin)",
    KeywordRubricConfig
);

pub struct KeywordRubric {
    config: KeywordRubricConfig,
}

/// The text a rollout ends with: its submission, else the last assistant message.
pub fn final_answer(record: &TrajectoryRecord) -> String {
    record
        .outcome
        .submission
        .clone()
        .unwrap_or_else(|| record.last_reply().unwrap_or_default().to_string())
}

/// 1 inside `[min, max]` words, falling off in proportion outside it.
pub fn length_score(words: usize, min: usize, max: usize) -> f64 {
    if words < min {
        words as f64 / min as f64
    } else if words > max {
        max as f64 / words as f64
    } else {
        1.0
    }
}

#[async_trait]
impl Evaluator for KeywordRubric {
    fn name(&self) -> &str {
        "keyword_rubric"
    }

    async fn evaluate(&self, record: &TrajectoryRecord) -> Result<Evaluation, EvaluatorError> {
        let mut keywords = self.config.keywords.clone();
        if let Some(field) = &self.config.keywords_field {
            match record.task.data.get(field) {
                Some(serde_json::Value::Array(items)) => {
                    keywords.extend(items.iter().filter_map(|v| v.as_str().map(str::to_string)))
                }
                Some(_) => {
                    return Err(EvaluatorError::Unscorable {
                        evaluator: self.name().into(),
                        task: record.task.id.clone(),
                        message: format!("task field `{field}` is not a list of strings"),
                    })
                }
                None => {}
            }
        }
        let answer = final_answer(record);
        let lower = answer.to_lowercase();
        let (found, missing): (Vec<&String>, Vec<&String>) = keywords
            .iter()
            .partition(|k| lower.contains(&k.to_lowercase()));
        let keyword_score = if keywords.is_empty() {
            1.0
        } else {
            found.len() as f64 / keywords.len() as f64
        };
        let words = answer.split_whitespace().count();
        let length = length_score(words, self.config.min_words, self.config.max_words);
        let w = self.config.keyword_weight;
        let reward = w * keyword_score + (1.0 - w) * length;
        Ok(Evaluation {
            evaluator: self.name().into(),
            reward,
            success: reward >= self.config.pass_threshold,
            components: BTreeMap::from([
                ("keywords".to_string(), keyword_score),
                ("length".to_string(), length),
            ]),
            details: json!({ "found": found, "missing": missing, "words": words }),
        })
    }
}

/// `trawl export --format review_csv`.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ReviewCsvConfig {}

impl ExporterConfig for ReviewCsvConfig {
    fn build(self, _: &BuildContext) -> Result<Arc<dyn Exporter>, ComponentError> {
        Ok(Arc::new(ReviewCsv::default()))
    }
}

trawl_core::register!(
    exporter,
    "review_csv",
    "One CSV row per rollout (task, sample, reward, success, answer) for people to review (example plugin)",
    ReviewCsvConfig
);

#[derive(Default)]
pub struct ReviewCsv {
    header_written: AtomicBool,
}

/// A CSV field, quoted when it needs to be (RFC 4180).
pub fn csv_field(s: &str) -> String {
    if s.contains([',', '"', '\n', '\r']) {
        format!("\"{}\"", s.replace('"', "\"\""))
    } else {
        s.to_string()
    }
}

impl Exporter for ReviewCsv {
    fn extension(&self) -> &str {
        "csv"
    }

    fn write(&self, record: &TrajectoryRecord, out: &mut dyn Write) -> Result<usize, ExportError> {
        if !self.header_written.swap(true, Ordering::SeqCst) {
            writeln!(out, "environment,task,sample,reward,success,answer")?;
        }
        writeln!(
            out,
            "{},{},{},{},{},{}",
            csv_field(&record.key.environment),
            csv_field(&record.key.task),
            record.key.sample,
            record.reward,
            record.success,
            csv_field(&final_answer(record))
        )?;
        Ok(1)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn rubric(keywords: &[&str]) -> Arc<dyn Evaluator> {
        KeywordRubricConfig {
            keywords: keywords.iter().map(|s| s.to_string()).collect(),
            keywords_field: Some("keywords".into()),
            min_words: 3,
            max_words: 10,
            keyword_weight: 0.5,
            pass_threshold: 0.75,
        }
        .build(&BuildContext::default())
        .unwrap()
    }

    fn answered(text: &str, task_keywords: serde_json::Value) -> TrajectoryRecord {
        let mut r = trawl_core::strategies::example_record();
        r.outcome.submission = Some(text.into());
        r.task.data = json!({ "keywords": task_keywords });
        r
    }

    #[tokio::test]
    async fn keywords_and_length_make_the_reward() {
        let e = rubric(&["photosynthesis"]);
        let r = answered(
            "Plants use Photosynthesis and light",
            json!(["light", "water"]),
        );
        let v = e.evaluate(&r).await.unwrap();
        // 2 of 3 keywords, 5 words within [3, 10].
        assert!((v.components["keywords"] - 2.0 / 3.0).abs() < 1e-9);
        assert_eq!(v.components["length"], 1.0);
        assert!((v.reward - (0.5 * 2.0 / 3.0 + 0.5)).abs() < 1e-9);
        assert!(v.success);
        assert_eq!(v.details["missing"], json!(["water"]));
    }

    #[tokio::test]
    async fn a_task_field_of_the_wrong_shape_is_unscorable() {
        let e = rubric(&["x"]);
        let r = answered("x y z", json!("not a list"));
        assert!(matches!(
            e.evaluate(&r).await,
            Err(EvaluatorError::Unscorable { .. })
        ));
    }

    #[test]
    fn bad_settings_name_their_field() {
        let e = KeywordRubricConfig {
            keywords: vec![],
            keywords_field: None,
            min_words: 1,
            max_words: 2,
            keyword_weight: 0.5,
            pass_threshold: 0.5,
        }
        .build(&BuildContext::default())
        .err()
        .unwrap();
        assert_eq!(e.path, vec!["keywords"]);
    }

    proptest! {
        #[test]
        fn length_score_is_a_share(words in 0usize..1000, min in 1usize..50, extra in 0usize..100) {
            let s = length_score(words, min, min + extra);
            prop_assert!((0.0..=1.0).contains(&s));
        }

        #[test]
        fn csv_fields_keep_their_text(s in "\\PC{0,30}") {
            let f = csv_field(&s);
            let inner = if f.starts_with('"') && f.len() >= 2 && f != s {
                f[1..f.len() - 1].replace("\"\"", "\"")
            } else {
                f.clone()
            };
            prop_assert_eq!(inner, s);
        }
    }
}

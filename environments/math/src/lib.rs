//! The `math` environment: word problems and competition math with a final answer.
//!
//! Tasks come from JSONL files in GSM8K shape (`question`, `answer` ending in `#### N`) or MATH
//! shape (`problem`, `solution` with `\boxed{...}`), and from a built-in seeded generator. An
//! episode takes answers (and, when enabled, `calculator` tool calls); the `math_answer`
//! evaluator extracts the final answer and compares it numerically.

#![forbid(unsafe_code)]

pub mod answer;
pub mod calculator;
pub mod generator;

use std::collections::HashSet;
use std::path::Path;
use std::sync::Arc;

use serde::Deserialize;
use serde_json::{json, Value};
use trawl_core::registry::{BuildContext, ComponentError, EnvironmentConfig, EvaluatorConfig};
use trawl_core::{
    async_trait, Action, ActionSpace, Artifacts, Environment, EnvironmentError, Episode,
    Evaluation, Evaluator, EvaluatorError, Message, Observation, Task, ToolSchema,
    TrajectoryRecord,
};

/// `[[environments]] type = "math"`.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct MathEnvironmentConfig {
    /// Task files (GSM8K or MATH shape; JSONL, a JSON array or Parquet), relative to the
    /// config file.
    #[serde(default)]
    pub files: Vec<String>,
    /// Another project's field names, for files in its shape: trawl's field → the file's
    /// (a dotted path, numbers for list entries), e.g. `{ question = "problem", answer =
    /// "reward_model.ground_truth" }`.
    #[serde(default)]
    pub fields: trawl_core::task::FieldMap,
    /// The built-in generator; used when no files are given, or in addition to them.
    #[serde(default)]
    pub generator: Option<GeneratorConfig>,
    /// Offer a `calculator` tool (a safe expression evaluator) to tool-calling scaffolds.
    #[serde(default)]
    pub calculator: bool,
    /// Tell the agent whether its answer was right, so a multi-turn scaffold can try again.
    #[serde(default)]
    pub feedback: bool,
    /// Text added after each question (for example "Put the final answer after ####.").
    #[serde(default)]
    pub instruction: Option<String>,
    /// Use at most this many tasks (the first ones).
    #[serde(default)]
    pub limit: Option<usize>,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct GeneratorConfig {
    /// Number of problems.
    #[serde(default = "default_count")]
    pub count: usize,
    /// Difficulty levels, 1 (one small addition) to 5 (percentages and fractions, several steps).
    #[serde(default = "default_levels")]
    pub levels: Vec<u8>,
    /// Generator seed; the run's seed when unset.
    #[serde(default)]
    pub seed: Option<u64>,
}

fn default_count() -> usize {
    20
}
fn default_levels() -> Vec<u8> {
    vec![1, 2, 3]
}

impl EnvironmentConfig for MathEnvironmentConfig {
    fn build(self, cx: &BuildContext) -> Result<Arc<dyn Environment>, ComponentError> {
        let mut tasks = Vec::new();
        for (i, file) in self.files.iter().enumerate() {
            let path = cx.resolve(file);
            tasks.extend(
                load_tasks_with(&path, &self.fields).map_err(|e| ComponentError {
                    path: vec!["files".into(), i.to_string()],
                    message: e,
                })?,
            );
        }
        let generator = match (&self.generator, self.files.is_empty()) {
            (Some(g), _) => Some(g.clone()),
            (None, true) => Some(GeneratorConfig {
                count: default_count(),
                levels: default_levels(),
                seed: None,
            }),
            (None, false) => None,
        };
        if let Some(g) = generator {
            if g.levels.is_empty() {
                return Err(ComponentError::at(
                    "generator.levels",
                    "give at least one level",
                ));
            }
            if let Some(bad) = g.levels.iter().find(|l| !generator::LEVELS.contains(l)) {
                return Err(ComponentError::at(
                    "generator.levels",
                    format!("level {bad} does not exist; levels are 1 to 5"),
                ));
            }
            tasks.extend(generator::generate(
                g.seed.unwrap_or(cx.seed),
                &g.levels,
                g.count,
            ));
        }
        let mut seen = HashSet::new();
        for t in &tasks {
            if !seen.insert(t.id.clone()) {
                return Err(ComponentError::at(
                    "files",
                    format!(
                        "task id `{}` appears twice; ids must be unique across files",
                        t.id
                    ),
                ));
            }
        }
        if let Some(limit) = self.limit {
            tasks.truncate(limit);
        }
        Ok(Arc::new(MathEnvironment {
            tasks,
            calculator: self.calculator,
            feedback: self.feedback,
            instruction: self.instruction,
        }))
    }
}

trawl_core::register!(
    environment,
    "math",
    "Math word problems (GSM8K, MATH files or a built-in generator) with a final numeric answer",
    MathEnvironmentConfig
);

/// Reads a JSONL file of GSM8K- or MATH-shaped tasks. Errors name the file, line and field.
pub fn load_tasks(path: &Path) -> Result<Vec<Task>, String> {
    load_tasks_with(path, &Default::default())
}

/// Reads a task file (JSONL, a JSON array or Parquet) of GSM8K- or MATH-shaped tasks, once
/// `fields` has renamed another shape's fields. Errors name the file, line (or row) and field.
pub fn load_tasks_with(
    path: &Path,
    fields: &trawl_core::task::FieldMap,
) -> Result<Vec<Task>, String> {
    let text = trawl_core::task::read_task_rows(path, fields)?;
    let stem = path
        .file_stem()
        .map(|s| s.to_string_lossy().into_owned())
        .unwrap_or_else(|| "task".into());
    let mut tasks = Vec::new();
    for (i, line) in text.lines().enumerate() {
        let line_no = i + 1;
        if line.trim().is_empty() {
            continue;
        }
        let at = |field: &str, msg: String| {
            format!("{}:{line_no}: field `{field}`: {msg}", path.display())
        };
        let value: Value = serde_json::from_str(line).map_err(|e| {
            format!(
                "{}:{line_no}:{}: not valid JSON: {e}\n  hint: each line must be one JSON object",
                path.display(),
                e.column()
            )
        })?;
        let Some(obj) = value.as_object() else {
            return Err(format!(
                "{}:{line_no}: expected a JSON object, found {}",
                path.display(),
                kind_of(&value)
            ));
        };
        let str_field = |name: &str| -> Result<Option<&str>, String> {
            match obj.get(name) {
                None => Ok(None),
                Some(Value::String(s)) => Ok(Some(s)),
                Some(other) => Err(at(
                    name,
                    format!("expected a string, found {}", kind_of(other)),
                )),
            }
        };
        let id_field = ["id", "task_id", "unique_id"]
            .into_iter()
            .find(|f| obj.contains_key(*f))
            .unwrap_or("id");
        let id = match obj.get(id_field) {
            // Ids such as MATH's `test/algebra/1.json` are fine; one that could reach outside a
            // folder is not (ids become parts of file paths).
            Some(Value::String(s)) => {
                trawl_core::values::check_relative_path(s)
                    .map_err(|why| at(id_field, format!("`{}` {why}", s.escape_debug())))?;
                s.clone()
            }
            Some(Value::Number(n)) => n.to_string(),
            _ => format!("{stem}-{line_no}"),
        };
        let (question, answer, solution, source) = if let Some(q) = str_field("question")? {
            let raw = str_field("answer")?.ok_or_else(|| {
                at(
                    "answer",
                    "missing; a GSM8K task needs `question` and `answer`".into(),
                )
            })?;
            let final_answer = match raw.rfind("####") {
                Some(p) => raw[p + 4..].trim().to_string(),
                // A bare answer ("42") is fine too; a worked solution without #### is not.
                None if answer::parse_number(raw).is_some() => raw.trim().to_string(),
                None => return Err(at("answer", "no `#### <final answer>` at the end\n  hint: GSM8K answers end with a line `#### 42`".into())),
            };
            (q, final_answer, raw, "gsm8k")
        } else if let Some(p) = str_field("problem")? {
            let solution = str_field("solution")?.ok_or_else(|| {
                at(
                    "solution",
                    "missing; a MATH task needs `problem` and `solution`".into(),
                )
            })?;
            let final_answer = match str_field("answer")? {
                Some(a) => a.to_string(),
                None => answer::last_boxed(solution)
                    .ok_or_else(|| at("solution", "no \\boxed{...} final answer\n  hint: MATH solutions put the answer in \\boxed{}".into()))?,
            };
            (p, final_answer, solution, "math")
        } else {
            let keys: Vec<&str> = obj.keys().map(String::as_str).collect();
            return Err(format!(
                "{}:{line_no}: not a math task: expected `question` + `answer` (GSM8K) or `problem` + `solution` (MATH), found keys {keys:?}",
                path.display()
            ));
        };
        let mut data =
            json!({"question": question, "answer": answer, "solution": solution, "source": source});
        for extra in ["level", "type"] {
            if let Some(v) = obj.get(extra) {
                data[extra] = v.clone();
            }
        }
        tasks.push(Task::new(id, data));
    }
    Ok(tasks)
}

fn kind_of(v: &Value) -> &'static str {
    match v {
        Value::Null => "null",
        Value::Bool(_) => "a boolean",
        Value::Number(_) => "a number",
        Value::String(_) => "a string",
        Value::Array(_) => "an array",
        Value::Object(_) => "an object",
    }
}

/// The math environment, built from [`MathEnvironmentConfig`].
pub struct MathEnvironment {
    tasks: Vec<Task>,
    calculator: bool,
    feedback: bool,
    instruction: Option<String>,
}

#[async_trait]
impl Environment for MathEnvironment {
    fn action_space(&self) -> ActionSpace {
        ActionSpace {
            answer: true,
            tool_calls: true,
            ..ActionSpace::default()
        }
    }

    async fn tasks(&self) -> Result<Vec<Task>, EnvironmentError> {
        Ok(self.tasks.clone())
    }

    async fn start(&self, task: &Task) -> Result<Box<dyn Episode>, EnvironmentError> {
        let question = task
            .str_field("question")
            .ok_or_else(|| EnvironmentError::Start {
                task: task.id.clone(),
                message: "task data has no `question`".into(),
            })?;
        let expected = task.str_field("answer").unwrap_or_default().to_string();
        let prompt = match &self.instruction {
            Some(i) => format!("{question}\n\n{i}"),
            None => question.to_string(),
        };
        Ok(Box::new(MathEpisode {
            prompt,
            expected,
            calculator: self.calculator,
            feedback: self.feedback,
            last_answer: None,
        }))
    }

    fn default_evaluators(&self) -> Vec<(String, Value)> {
        vec![("math_answer".into(), json!({}))]
    }
}

struct MathEpisode {
    prompt: String,
    expected: String,
    calculator: bool,
    feedback: bool,
    last_answer: Option<String>,
}

fn calculator_schema() -> ToolSchema {
    ToolSchema::function(
        "calculator",
        "Evaluate an arithmetic expression (numbers, + - * / % ^, parentheses, sqrt, abs, round) and return its value.",
        json!({
            "type": "object",
            "properties": {"expression": {"type": "string", "description": "for example (12 + 30) * 4 / 7"}},
            "required": ["expression"]
        }),
    )
}

#[async_trait]
impl Episode for MathEpisode {
    fn opening(&self) -> Vec<Message> {
        vec![Message::user(self.prompt.clone())]
    }

    fn tools(&self) -> Vec<ToolSchema> {
        if self.calculator {
            vec![calculator_schema()]
        } else {
            Vec::new()
        }
    }

    async fn act(&mut self, action: &Action) -> Result<Observation, EnvironmentError> {
        Ok(match action {
            Action::Answer { text } => {
                self.last_answer = Some(text.clone());
                if !self.feedback {
                    Observation::finished("Answer recorded.")
                } else {
                    match answer::extract_answer(text) {
                        Some(a) if answer::answers_match(&a, &self.expected) => {
                            Observation::finished("Correct.")
                        }
                        Some(a) => Observation::text(format!(
                            "Your answer {a} is not correct. Check your work and try again."
                        )),
                        None => Observation::text(
                            "I could not find a final answer. State the final answer as a number.",
                        ),
                    }
                }
            }
            Action::ToolCall { call } if self.calculator && call.function.name == "calculator" => {
                let args: Result<Value, _> = serde_json::from_str(&call.function.arguments);
                match args
                    .as_ref()
                    .ok()
                    .and_then(|a| a.get("expression"))
                    .and_then(Value::as_str)
                {
                    Some(expr) => match calculator::evaluate(expr) {
                        Ok(v) => Observation::text(calculator::format_value(v)),
                        Err(e) => Observation::text(format!("error: {e}")),
                    },
                    None => {
                        Observation::text("error: call calculator with {\"expression\": \"...\"}")
                    }
                }
            }
            Action::ToolCall { call } => {
                let available = if self.calculator {
                    "calculator"
                } else {
                    "none"
                };
                Observation::text(format!(
                    "error: unknown tool `{}`; available tools: {available}",
                    call.function.name
                ))
            }
            other => Observation::text(format!(
                "error: this environment does not take {} actions",
                action_name(other)
            )),
        })
    }

    async fn finish(&mut self) -> Result<Artifacts, EnvironmentError> {
        Ok(Artifacts {
            submission: self.last_answer.clone(),
            extra: Value::Null,
            ..Artifacts::default()
        })
    }
}

fn action_name(a: &Action) -> &'static str {
    match a {
        Action::Answer { .. } => "answer",
        Action::ToolCall { .. } => "tool call",
        Action::Shell { .. } => "shell",
        Action::Message { .. } => "message",
    }
}

/// `[[evaluators]] type = "math_answer"`: final answer extraction plus numeric comparison.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct MathAnswerConfig {}

impl EvaluatorConfig for MathAnswerConfig {
    fn build(self, _: &BuildContext) -> Result<Arc<dyn Evaluator>, ComponentError> {
        Ok(Arc::new(MathAnswerEvaluator))
    }
}

trawl_core::register!(evaluator, "math_answer", "Extracts the final answer (\\boxed{}, ####, 'the answer is', last number) and compares numerically", MathAnswerConfig);

pub struct MathAnswerEvaluator;

#[async_trait]
impl Evaluator for MathAnswerEvaluator {
    fn name(&self) -> &str {
        "math_answer"
    }

    async fn evaluate(&self, record: &TrajectoryRecord) -> Result<Evaluation, EvaluatorError> {
        let expected =
            record
                .task
                .str_field("answer")
                .ok_or_else(|| EvaluatorError::Unscorable {
                    evaluator: self.name().into(),
                    task: record.task.id.clone(),
                    message: "the task has no `answer`".into(),
                })?;
        let submission = record.outcome.submission.as_deref().unwrap_or("");
        let extracted = answer::extract_answer(submission);
        let correct = extracted
            .as_deref()
            .is_some_and(|a| answer::answers_match(a, expected));
        let reward = if correct { 1.0 } else { 0.0 };
        Ok(Evaluation {
            evaluator: self.name().into(),
            reward,
            success: correct,
            components: [
                ("correct".to_string(), reward),
                (
                    "answer_found".to_string(),
                    if extracted.is_some() { 1.0 } else { 0.0 },
                ),
            ]
            .into_iter()
            .collect(),
            details: json!({"extracted": extracted, "expected": expected}),
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::Write;

    fn file_with(lines: &str) -> tempfile::NamedTempFile {
        let mut f = tempfile::Builder::new()
            .suffix(".jsonl")
            .tempfile()
            .unwrap();
        f.write_all(lines.as_bytes()).unwrap();
        f
    }

    #[test]
    fn reads_gsm8k_and_math_shapes() {
        let f = file_with(concat!(
            r#"{"question": "2+2?", "answer": "2+2=4\n#### 4"}"#,
            "\n",
            r#"{"problem": "Half of 1?", "solution": "It is $\\boxed{\\frac{1}{2}}$.", "level": "Level 1"}"#,
            "\n"
        ));
        let tasks = load_tasks(f.path()).unwrap();
        assert_eq!(tasks.len(), 2);
        assert_eq!(tasks[0].data["answer"], "4");
        assert_eq!(tasks[1].data["answer"], "\\frac{1}{2}");
        assert_eq!(tasks[1].data["level"], "Level 1");
        assert!(tasks[0].id.ends_with("-1"));
    }

    #[test]
    fn bad_lines_name_file_line_and_field() {
        let f = file_with("{\"question\": \"q\", \"answer\": \"4\"}\n{\"question\": \"q\", \"answer\": \"no final line\"}\n");
        let err = load_tasks(f.path()).unwrap_err();
        assert!(
            err.contains(&format!("{}:2: field `answer`", f.path().display())),
            "{err}"
        );
        let f = file_with("{\"question\": 7, \"answer\": \"4\"}\n");
        let err = load_tasks(f.path()).unwrap_err();
        assert!(
            err.contains(":1: field `question`: expected a string, found a number"),
            "{err}"
        );
        let f = file_with("{\"question\": \"q\"\n");
        assert!(load_tasks(f.path()).unwrap_err().contains(":1:"));
        let f = file_with("{\"prompt\": \"q\"}\n");
        assert!(load_tasks(f.path())
            .unwrap_err()
            .contains("not a math task"));
    }

    #[tokio::test]
    async fn feedback_episode_and_calculator() {
        let env = MathEnvironmentConfig {
            files: vec![],
            fields: Default::default(),
            generator: None,
            calculator: true,
            feedback: true,
            instruction: None,
            limit: Some(1),
        }
        .build(&BuildContext::default())
        .unwrap();
        let task = env.tasks().await.unwrap().remove(0);
        let expected = task.data["answer"].as_str().unwrap().to_string();
        let mut ep = env.start(&task).await.unwrap();
        assert_eq!(ep.tools()[0].name(), "calculator");
        let wrong = ep
            .act(&Action::Answer {
                text: "The answer is -999".into(),
            })
            .await
            .unwrap();
        assert!(!wrong.done && wrong.content.contains("-999"));
        let call = trawl_core::ToolCall::function("c1", "calculator", r#"{"expression": "6*7"}"#);
        assert_eq!(
            ep.act(&Action::ToolCall { call }).await.unwrap().content,
            "42"
        );
        let right = ep
            .act(&Action::Answer {
                text: format!("#### {expected}"),
            })
            .await
            .unwrap();
        assert!(right.done);
        assert_eq!(
            ep.finish().await.unwrap().submission.unwrap(),
            format!("#### {expected}")
        );
    }
}

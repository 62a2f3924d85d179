//! The `usersim` environment, IntentionGym-style: a user makes a vague request and holds hidden
//! details of graded importance; the agent asks questions, the simulated user answers only what
//! is asked, and the reward follows how many and how important the details uncovered are.
//!
//! - **Importance weights**: 3 → 1.0, 2 → 0.7, 1 → 0.4 (UserRL's IntentionGym). A question
//!   that uncovers several details at once loses `multi_detail_penalty` per extra detail; every
//!   question costs `step_penalty`.
//! - **Coverage** is judged by each detail's keywords (case-insensitive), so it is the same
//!   whichever user plays: deterministic, cheap, and checkable in a record.
//! - **The user**: by default the task's own answers (it says the answer of every detail the
//!   question covers, and that it has no preference otherwise); `user = { type = "llm", ... }`
//!   has a language model play it from the hidden details; `user = { type = "scripted", ... }`
//!   follows a script.
//! - **Endings**: `[finish]` from the agent, every detail uncovered, the step limit, or the user
//!   ending the conversation (`###STOP###` and the other control tokens). A simulator failure is
//!   an infrastructure error.
//! - **Actions**: a question in plain text (an `[action]` prefix is accepted) or an `ask_user`
//!   tool call; `[finish]` or the `finish` tool ends the conversation.
//! - **Per-turn rewards**: each question's reward is its step's reward (`step_rewards`, recorded
//!   on the record's steps; a finish or a malformed action earns 0), and the questions' rewards
//!   are in the artifacts too (`turn_rewards`).

use std::collections::BTreeMap;
use std::sync::Arc;

use serde::{Deserialize, Serialize};
use serde_json::{json, Value};
use trawl_core::registry::{BuildContext, ComponentError, EnvironmentConfig, EvaluatorConfig};
use trawl_core::usersim::{UserConfig, UserScenario, UserSimulator, UserStop};
use trawl_core::{
    async_trait, Action, ActionSpace, Artifacts, Environment, EnvironmentError, Episode,
    Evaluation, Evaluator, EvaluatorError, Message, Observation, Task, ToolSchema,
    TrajectoryRecord,
};

/// The built-in task set, written for trawl: 30 vague requests in 10 categories.
pub const BUILTIN_TASKS: &str = include_str!("../data/tasks.jsonl");

/// One hidden detail of a task.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Detail {
    pub description: String,
    /// 1 (nice to have) to 3 (critical).
    pub importance: u8,
    /// A question that mentions any of these (case-insensitive) asks about this detail.
    pub keywords: Vec<String>,
    /// What the user says when asked.
    pub answer: String,
}

/// One task: `{"id", "category", "task", "details": [...]}`, one per line of a JSONL file.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct IntentionTask {
    pub id: String,
    #[serde(default)]
    pub category: String,
    /// The vague request the user opens with.
    pub task: String,
    /// Who the user is, for an LLM user.
    #[serde(default)]
    pub persona: Option<String>,
    pub details: Vec<Detail>,
}

/// The reward weight of an importance level.
pub fn weight(importance: u8) -> f64 {
    match importance {
        3 => 1.0,
        2 => 0.7,
        _ => 0.4,
    }
}

/// Reads tasks from JSONL text; errors name the file, line and field.
pub fn parse_tasks(file: &str, text: &str) -> Result<Vec<IntentionTask>, String> {
    let mut out = Vec::new();
    for (i, line) in text.lines().enumerate() {
        if line.trim().is_empty() {
            continue;
        }
        let mut de = serde_json::Deserializer::from_str(line);
        let t: IntentionTask = serde_path_to_error::deserialize(&mut de)
            .map_err(|e| format!("{file}:{}: field `{}`: {}", i + 1, e.path(), e.inner()))?;
        if t.details.is_empty() {
            return Err(format!(
                "{file}:{}: field `details`: a task needs at least one hidden detail",
                i + 1
            ));
        }
        for (j, d) in t.details.iter().enumerate() {
            if !(1..=3).contains(&d.importance) {
                return Err(format!(
                    "{file}:{}: field `details[{j}].importance`: must be 1, 2 or 3, not {}",
                    i + 1,
                    d.importance
                ));
            }
            if d.keywords.iter().all(|k| k.trim().is_empty()) {
                return Err(format!(
                    "{file}:{}: field `details[{j}].keywords`: give at least one keyword",
                    i + 1
                ));
            }
        }
        out.push(t);
    }
    Ok(out)
}

/// `[[environments]] type = "usersim"`.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct UsersimConfig {
    /// Task files (JSONL, a JSON array or Parquet); the built-in set when empty.
    #[serde(default)]
    pub files: Vec<String>,
    /// Another project's field names, for files in its shape: trawl's field → the file's
    /// (a dotted path, numbers for list entries), e.g. `{ question = "problem", answer =
    /// "reward_model.ground_truth" }`.
    #[serde(default)]
    pub fields: trawl_core::task::FieldMap,
    /// Only the first `limit` tasks.
    #[serde(default)]
    pub limit: Option<usize>,
    /// Questions per episode.
    #[serde(default = "default_max_steps")]
    pub max_steps: u32,
    #[serde(default = "default_step_penalty")]
    pub step_penalty: f64,
    #[serde(default = "default_multi_penalty")]
    pub multi_detail_penalty: f64,
    /// Who plays the user; the task's own answers when unset.
    #[serde(default)]
    pub user: Option<UserConfig>,
}

fn default_max_steps() -> u32 {
    20
}
fn default_step_penalty() -> f64 {
    0.01
}
fn default_multi_penalty() -> f64 {
    0.2
}

impl EnvironmentConfig for UsersimConfig {
    fn build(self, cx: &BuildContext) -> Result<Arc<dyn Environment>, ComponentError> {
        if self.max_steps == 0 {
            return Err(ComponentError::at("max_steps", "must be at least 1"));
        }
        let mut tasks = Vec::new();
        if self.files.is_empty() {
            tasks = parse_tasks("(built-in usersim tasks)", BUILTIN_TASKS)
                .map_err(ComponentError::new)?;
        }
        for (i, f) in self.files.iter().enumerate() {
            let path = cx.resolve(f);
            let text = trawl_core::task::read_task_rows(&path, &self.fields)
                .map_err(|e| ComponentError::at(&format!("files.{i}"), e))?;
            tasks.extend(
                parse_tasks(&path.display().to_string(), &text)
                    .map_err(|e| ComponentError::at(&format!("files.{i}"), e))?,
            );
        }
        if let Some(n) = self.limit {
            tasks.truncate(n);
        }
        let user = match &self.user {
            Some(u) => Some(u.build(cx).map_err(|mut e| {
                e.path.insert(0, "user".into());
                e
            })?),
            None => None,
        };
        Ok(Arc::new(Usersim {
            tasks,
            max_steps: self.max_steps,
            step_penalty: self.step_penalty,
            multi_detail_penalty: self.multi_detail_penalty,
            user,
        }))
    }
}

trawl_core::register!(
    environment,
    "usersim",
    "IntentionGym-style: ask a simulated user about the hidden details of a vague request",
    UsersimConfig
);

pub struct Usersim {
    tasks: Vec<IntentionTask>,
    max_steps: u32,
    step_penalty: f64,
    multi_detail_penalty: f64,
    user: Option<Arc<dyn UserSimulator>>,
}

#[async_trait]
impl Environment for Usersim {
    fn action_space(&self) -> ActionSpace {
        ActionSpace {
            answer: true,
            user_messages: true,
            tool_calls: true,
            ..ActionSpace::default()
        }
    }

    async fn tasks(&self) -> Result<Vec<Task>, EnvironmentError> {
        self.tasks
            .iter()
            .map(|t| Task::from_payload(&t.id, t).map_err(EnvironmentError::from))
            .collect()
    }

    async fn start(&self, task: &Task) -> Result<Box<dyn Episode>, EnvironmentError> {
        let t: IntentionTask = task.payload("usersim")?;
        let scenario = UserScenario {
            persona: t
                .persona
                .clone()
                .unwrap_or_else(|| "A person asking an assistant for help.".into()),
            instructions: instructions(&t),
        };
        Ok(Box::new(IntentionEpisode {
            conversation: vec![Message::user(&t.task)],
            covered: vec![false; t.details.len()],
            task: t,
            scenario,
            user: self.user.clone(),
            max_steps: self.max_steps,
            step_penalty: self.step_penalty,
            multi_detail_penalty: self.multi_detail_penalty,
            steps: 0,
            turn_rewards: Vec::new(),
            step_rewards: Vec::new(),
            ended: None,
        }))
    }

    fn default_evaluators(&self) -> Vec<(String, Value)> {
        vec![("intention".into(), json!({}))]
    }
}

/// What an LLM user is told: the request and the hidden details with their answers.
pub fn instructions(t: &IntentionTask) -> String {
    let mut s = format!(
        "You asked the assistant: \"{}\". You have these details in mind but did not say them. \
         Reveal a detail only when the assistant asks about it, in your own words:\n",
        t.task
    );
    for d in &t.details {
        s.push_str(&format!("- {}: {}\n", d.description, d.answer));
    }
    s.push_str("If the assistant asks about something not listed, say you have no preference.");
    s
}

/// How an episode ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Ending {
    /// The agent said `[finish]`.
    Finish,
    /// Every detail was uncovered.
    AllUncovered,
    /// The step limit was reached.
    StepLimit,
    /// The user ended the conversation with a control token.
    User(UserStop),
}

struct IntentionEpisode {
    task: IntentionTask,
    scenario: UserScenario,
    user: Option<Arc<dyn UserSimulator>>,
    conversation: Vec<Message>,
    covered: Vec<bool>,
    max_steps: u32,
    step_penalty: f64,
    multi_detail_penalty: f64,
    steps: u32,
    turn_rewards: Vec<f64>,
    /// One per action, questions or not: what each step earned (0 for a finish or a malformed
    /// action).
    step_rewards: Vec<f64>,
    ended: Option<Ending>,
}

/// The details (by index) a question asks about.
pub fn asked_about(question: &str, details: &[Detail]) -> Vec<usize> {
    let q = question.to_lowercase();
    details
        .iter()
        .enumerate()
        .filter(|(_, d)| {
            d.keywords
                .iter()
                .any(|k| !k.trim().is_empty() && q.contains(&k.to_lowercase()))
        })
        .map(|(i, _)| i)
        .collect()
}

/// The reward of one question that newly uncovers `new` (importance levels).
pub fn step_reward(new: &[u8], step_penalty: f64, multi_detail_penalty: f64) -> f64 {
    let gained: f64 = new.iter().map(|&i| weight(i)).sum();
    let extra = new.len().saturating_sub(1) as f64;
    gained - multi_detail_penalty * extra - step_penalty
}

impl IntentionEpisode {
    fn end(&mut self, ending: Ending, text: String) -> Observation {
        self.ended = Some(ending);
        Observation::finished(text)
    }
}

/// The text after an `[action]`-style prefix, and whether it is `[finish]`.
fn read_action(text: &str) -> (String, bool) {
    let t = text.trim();
    if t.to_lowercase().contains("[finish]") {
        return (String::new(), true);
    }
    let t = t
        .strip_prefix("[action]")
        .or_else(|| t.strip_prefix("[Action]"))
        .unwrap_or(t);
    (t.trim().to_string(), false)
}

#[async_trait]
impl Episode for IntentionEpisode {
    fn opening(&self) -> Vec<Message> {
        vec![Message::user(format!(
            "{}\n\n(Ask me questions to find out what I need, one detail at a time. When you \
             know enough, reply [finish].)",
            self.task.task
        ))]
    }

    fn tools(&self) -> Vec<ToolSchema> {
        vec![
            ToolSchema::function(
                "ask_user",
                "Ask the user one question about what they need.",
                json!({
                    "type": "object",
                    "properties": { "question": { "type": "string" } },
                    "required": ["question"]
                }),
            ),
            ToolSchema::function(
                "finish",
                "End the conversation: you know enough about what the user needs.",
                json!({ "type": "object", "properties": {} }),
            ),
        ]
    }

    async fn act(&mut self, action: &Action) -> Result<Observation, EnvironmentError> {
        self.step_rewards.push(0.0);
        let text = match action {
            Action::Answer { text } | Action::Message { text } => text.clone(),
            Action::ToolCall { call } if call.function.name == "finish" => "[finish]".into(),
            Action::ToolCall { call } if call.function.name == "ask_user" => {
                let question = serde_json::from_str::<Value>(&call.function.arguments)
                    .ok()
                    .and_then(|v| {
                        v.get("question")
                            .and_then(Value::as_str)
                            .map(str::to_string)
                    });
                match question {
                    Some(q) => q,
                    None => {
                        return Ok(Observation::text(
                            "ask_user takes {\"question\": \"...\"}: nothing was asked.",
                        ))
                    }
                }
            }
            _ => {
                return Ok(Observation::text(
                    "Ask the user a question (or call ask_user), or reply [finish].",
                ))
            }
        };
        let (question, finish) = read_action(&text);
        if finish {
            return Ok(self.end(Ending::Finish, "Conversation finished.".into()));
        }
        self.steps += 1;
        self.conversation.push(Message::assistant(&question));
        let asked = asked_about(&question, &self.task.details);
        let new: Vec<usize> = asked
            .iter()
            .copied()
            .filter(|&i| !self.covered[i])
            .collect();
        for &i in &new {
            self.covered[i] = true;
        }
        let levels: Vec<u8> = new
            .iter()
            .map(|&i| self.task.details[i].importance)
            .collect();
        let earned = step_reward(&levels, self.step_penalty, self.multi_detail_penalty);
        self.turn_rewards.push(earned);
        if let Some(last) = self.step_rewards.last_mut() {
            *last = earned;
        }

        let turn = match &self.user {
            Some(user) => user
                .reply(&self.scenario, &self.conversation)
                .await
                .map_err(|e| EnvironmentError::Runtime(e.to_string()))?,
            None => trawl_core::usersim::UserTurn {
                text: if asked.is_empty() {
                    "I don't have a preference about that.".into()
                } else {
                    asked
                        .iter()
                        .map(|&i| self.task.details[i].answer.as_str())
                        .collect::<Vec<_>>()
                        .join(" ")
                },
                stop: None,
            },
        };
        self.conversation.push(Message::user(&turn.text));
        if let Some(stop) = turn.stop {
            return Ok(self.end(Ending::User(stop), turn.text));
        }
        if self.covered.iter().all(|c| *c) {
            return Ok(self.end(
                Ending::AllUncovered,
                format!("{}\n(You now know everything I had in mind.)", turn.text),
            ));
        }
        if self.steps >= self.max_steps {
            return Ok(self.end(
                Ending::StepLimit,
                format!("{}\n(No more questions.)", turn.text),
            ));
        }
        Ok(Observation::text(turn.text))
    }

    async fn finish(&mut self) -> Result<Artifacts, EnvironmentError> {
        let uncovered: Vec<Value> = self
            .task
            .details
            .iter()
            .zip(&self.covered)
            .map(|(d, c)| json!({ "description": d.description, "importance": d.importance, "uncovered": c }))
            .collect();
        Ok(Artifacts {
            submission: None,
            extra: json!({
                "details": uncovered,
                "questions": self.steps,
                "turn_rewards": self.turn_rewards,
                "ended": self.ended,
            }),
            step_rewards: self.step_rewards.clone(),
        })
    }
}

/// `[[evaluators]] type = "intention"`: the IntentionGym score of a usersim rollout.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct IntentionEvaluatorConfig {}

impl EvaluatorConfig for IntentionEvaluatorConfig {
    fn build(self, _: &BuildContext) -> Result<Arc<dyn Evaluator>, ComponentError> {
        Ok(Arc::new(IntentionEvaluator))
    }
}

trawl_core::register!(
    evaluator,
    "intention",
    "IntentionGym score: importance-weighted details uncovered, minus per-question and multi-detail penalties",
    IntentionEvaluatorConfig
);

pub struct IntentionEvaluator;

#[async_trait]
impl Evaluator for IntentionEvaluator {
    fn name(&self) -> &str {
        "intention"
    }

    async fn evaluate(&self, record: &TrajectoryRecord) -> Result<Evaluation, EvaluatorError> {
        let a = &record.outcome.artifacts;
        let unscorable = |m: &str| EvaluatorError::Unscorable {
            evaluator: "intention".into(),
            task: record.task.id.clone(),
            message: m.into(),
        };
        let details = a
            .get("details")
            .and_then(Value::as_array)
            .ok_or_else(|| unscorable("the rollout has no usersim artifacts"))?;
        let mut total = 0.0;
        let mut got = 0.0;
        let mut by_level: BTreeMap<u64, (u64, u64)> = BTreeMap::new();
        for d in details {
            let level = d["importance"].as_u64().unwrap_or(1);
            let w = weight(level as u8);
            let uncovered = d["uncovered"].as_bool().unwrap_or(false);
            total += w;
            if uncovered {
                got += w;
            }
            let e = by_level.entry(level).or_default();
            e.0 += 1;
            e.1 += u64::from(uncovered);
        }
        let turn_sum: f64 = a["turn_rewards"]
            .as_array()
            .map(|v| v.iter().filter_map(Value::as_f64).sum())
            .unwrap_or(0.0);
        let all = details.iter().all(|d| d["uncovered"] == true);
        let mut components = BTreeMap::from([
            (
                "coverage".to_string(),
                if total > 0.0 { got / total } else { 0.0 },
            ),
            (
                "questions".to_string(),
                a["questions"].as_f64().unwrap_or(0.0),
            ),
            // The penalties paid: what was gained minus what the turns summed to.
            ("penalties".to_string(), (got - turn_sum).max(0.0)),
        ]);
        if let Some((n, c)) = by_level.get(&3) {
            components.insert("critical_coverage".into(), *c as f64 / *n as f64);
        }
        // The normalised return: summed turn rewards over the best achievable (every detail
        // found, one question each, no penalties), clamped to [0, 1].
        let reward = if total > 0.0 {
            (turn_sum / total).clamp(0.0, 1.0)
        } else {
            0.0
        };
        Ok(Evaluation {
            evaluator: "intention".into(),
            reward,
            success: all,
            components,
            details: json!({ "ended": a["ended"] }),
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_builtin_set_has_thirty_tasks_in_several_categories() {
        let tasks = parse_tasks("builtin", BUILTIN_TASKS).unwrap();
        assert_eq!(tasks.len(), 30);
        let cats: std::collections::BTreeSet<&str> =
            tasks.iter().map(|t| t.category.as_str()).collect();
        assert!(cats.len() >= 5, "{cats:?}");
        for t in &tasks {
            assert!(t.details.iter().any(|d| d.importance == 3), "{}", t.id);
        }
    }

    #[test]
    fn bad_task_lines_name_file_line_and_field() {
        let e = parse_tasks("t.jsonl", "\n{\"id\":\"a\",\"task\":\"x\",\"details\":[{\"description\":\"d\",\"importance\":5,\"keywords\":[\"k\"],\"answer\":\"a\"}]}").unwrap_err();
        assert_eq!(
            e,
            "t.jsonl:2: field `details[0].importance`: must be 1, 2 or 3, not 5"
        );
        let e = parse_tasks(
            "t.jsonl",
            "{\"id\":\"a\",\"task\":\"x\",\"details\":[{\"descripton\":\"d\"}]}",
        )
        .unwrap_err();
        assert!(
            e.starts_with("t.jsonl:1: field `details[0].descripton`: unknown field"),
            "{e}"
        );
    }

    #[test]
    fn questions_are_matched_to_details_and_rewarded() {
        let tasks = parse_tasks("builtin", BUILTIN_TASKS).unwrap();
        let trip = &tasks[0];
        assert_eq!(asked_about("What is your budget?", &trip.details), vec![1]);
        assert_eq!(
            asked_about("Where to, and what budget?", &trip.details),
            vec![0, 1]
        );
        assert!(asked_about("Hmm.", &trip.details).is_empty());
        assert!((step_reward(&[3], 0.01, 0.2) - 0.99).abs() < 1e-12);
        assert!((step_reward(&[3, 2], 0.01, 0.2) - (1.7 - 0.2 - 0.01)).abs() < 1e-12);
        assert!((step_reward(&[], 0.01, 0.2) + 0.01).abs() < 1e-12);
    }
}

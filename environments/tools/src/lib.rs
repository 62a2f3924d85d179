//! The `tools` environment, tau2-bench-style: the agent serves a simulated user by talking to
//! them and calling a domain's tools over a JSON database, under the domain's policy.
//!
//! - **A domain** is a folder of four files (see [`domain`]): `policy.md` (given to the agent),
//!   `db.json` (tables of records by id), `tools.json` (tools as JSON schemas plus steps in
//!   [`lang`]) and `tasks.json` (tau2 tasks). The built-in `library` domain was written for
//!   trawl; `domain = "path/to/folder"` loads another in the same layout.
//! - **The conversation**: the simulated user opens (after the agent's greeting, which only the
//!   user sees); the agent's text goes to the user, its tool calls to the database. The agent
//!   ends with `###STOP###`, the user with `###STOP###`, `###TRANSFER###` or
//!   `###OUT-OF-SCOPE###`. `max_steps` agent actions or `max_errors` failed tool calls end it
//!   too, and such an ending scores 0.
//! - **The reward** (the `tau` evaluator) is the product of the task's `reward_basis`: `DB` (the
//!   final database equals the one the expected actions produce from a fresh copy),
//!   `COMMUNICATE` (each `communicate_info` string in the agent's messages) and `ACTION` (each
//!   expected call made). Per-step rewards: every step earns 0 but the last, which earns the
//!   episode's reward (`step_rewards`, recorded on the record's steps; `turn_rewards` in the
//!   artifacts).
//! - **A simulator failure** is an infrastructure error, never the agent's.

pub mod domain;
pub mod lang;

use std::collections::BTreeMap;
use std::sync::Arc;

use serde::{Deserialize, Serialize};
use serde_json::{json, Map, Value};
use trawl_core::registry::{BuildContext, ComponentError, EnvironmentConfig, EvaluatorConfig};
use trawl_core::usersim::{LlmUserConfig, UserConfig, UserScenario, UserSimulator, UserStop};
use trawl_core::{
    async_trait, Action, ActionSpace, Artifacts, Environment, EnvironmentError, Episode,
    Evaluation, Evaluator, EvaluatorError, Message, Observation, Task, ToolSchema,
    TrajectoryRecord,
};

pub use domain::{Basis, Domain, ToolTask};

/// What the agent is told before the domain's policy.
pub const AGENT_PROMPT: &str = "You are a customer service agent. Help the user with their \
request, following the policy below exactly. Each reply is either a message to the user or \
tool calls, never both. Check facts with the tools instead of guessing, and confirm with the \
user before any change to their records. When the user has nothing more to ask, end your last \
message with ###STOP###.";

/// The system prompt of an LLM user in this environment (`{persona}`, `{instructions}`).
pub const USER_PROMPT: &str = "You are playing a customer who is chatting with a help desk \
agent. Stay in character; never say you are an AI and never mention these instructions.\n\n\
Who you are:\n{persona}\n\n\
Your situation:\n{instructions}\n\n\
Rules:\n\
- Write only the customer's next message: short and natural.\n\
- Give details about yourself only when the agent asks, and only those your situation gives; \
if asked for something it does not give, say you don't know.\n\
- When your goal is met, or clearly cannot be met, end your message with ###STOP###.\n\
- If the agent transfers you to a human, write ###TRANSFER###.";

/// What the agent says first; only the user sees it (it is the same in every episode).
pub const GREETING: &str = "Hi! How can I help you today?";

/// `[[environments]] type = "tools"`.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ToolsEnvConfig {
    /// A built-in domain (`library`) or a folder in the same layout.
    #[serde(default = "default_domain")]
    pub domain: String,
    /// Only these task ids.
    #[serde(default)]
    pub tasks: Vec<String>,
    /// Only the first `limit` tasks.
    #[serde(default)]
    pub limit: Option<usize>,
    /// Agent actions (messages and tool calls) per episode.
    #[serde(default = "default_max_steps")]
    pub max_steps: u32,
    /// Failed tool calls per episode.
    #[serde(default = "default_max_errors")]
    pub max_errors: u32,
    /// Who plays the user; an LLM user on the embedded model when unset.
    #[serde(default)]
    pub user: Option<UserConfig>,
    /// The agent's instructions, put before the policy; [`AGENT_PROMPT`] when unset.
    #[serde(default)]
    pub agent_prompt: Option<String>,
}

fn default_domain() -> String {
    "library".into()
}
fn default_max_steps() -> u32 {
    30
}
fn default_max_errors() -> u32 {
    10
}

impl EnvironmentConfig for ToolsEnvConfig {
    fn build(self, cx: &BuildContext) -> Result<Arc<dyn Environment>, ComponentError> {
        if self.max_steps == 0 {
            return Err(ComponentError::at("max_steps", "must be at least 1"));
        }
        if self.max_errors == 0 {
            return Err(ComponentError::at("max_errors", "must be at least 1"));
        }
        let mut domain = match Domain::builtin(&self.domain) {
            Some(d) => d,
            None => {
                let dir = cx.resolve(&self.domain);
                if !dir.is_dir() {
                    return Err(ComponentError::at(
                        "domain",
                        format!(
                            "`{}` is neither a built-in domain ({}) nor a folder ({} does not exist)",
                            self.domain,
                            Domain::BUILTIN.join(", "),
                            dir.display()
                        ),
                    ));
                }
                Domain::load(&dir).map_err(|e| ComponentError::at("domain", e))?
            }
        };
        if !self.tasks.is_empty() {
            for (i, id) in self.tasks.iter().enumerate() {
                if !domain.tasks.iter().any(|t| &t.id == id) {
                    return Err(ComponentError::at(
                        &format!("tasks.{i}"),
                        format!("domain `{}` has no task `{id}`", domain.name),
                    ));
                }
            }
            domain.tasks.retain(|t| self.tasks.contains(&t.id));
        }
        if let Some(n) = self.limit {
            domain.tasks.truncate(n);
        }
        let user_config = self
            .user
            .clone()
            .unwrap_or(UserConfig::Llm(LlmUserConfig::default()));
        let user = user_config
            .build_with_prompt(cx, USER_PROMPT)
            .map_err(|mut e| {
                e.path.insert(0, "user".into());
                e
            })?;
        let system = format!(
            "{}\n\n<policy>\n{}\n</policy>",
            self.agent_prompt.as_deref().unwrap_or(AGENT_PROMPT).trim(),
            domain.policy.trim()
        );
        let schemas = domain
            .tools
            .iter()
            .map(|t| ToolSchema::function(&t.name, &t.description, t.parameters.clone()))
            .collect();
        Ok(Arc::new(ToolsEnv {
            domain: Arc::new(domain),
            schemas,
            system,
            user,
            max_steps: self.max_steps,
            max_errors: self.max_errors,
        }))
    }
}

trawl_core::register!(
    environment,
    "tools",
    "tau2-style service domain: tools over a JSON database, a policy, and a simulated user; scored by database state and what was said",
    ToolsEnvConfig
);

pub struct ToolsEnv {
    domain: Arc<Domain>,
    schemas: Vec<ToolSchema>,
    system: String,
    user: Arc<dyn UserSimulator>,
    max_steps: u32,
    max_errors: u32,
}

#[async_trait]
impl Environment for ToolsEnv {
    fn action_space(&self) -> ActionSpace {
        ActionSpace {
            answer: true,
            user_messages: true,
            tool_calls: true,
            ..ActionSpace::default()
        }
    }

    async fn tasks(&self) -> Result<Vec<Task>, EnvironmentError> {
        self.domain
            .tasks
            .iter()
            .map(|t| Task::from_payload(&t.id, t).map_err(EnvironmentError::from))
            .collect()
    }

    async fn start(&self, task: &Task) -> Result<Box<dyn Episode>, EnvironmentError> {
        let start_error = |message: String| EnvironmentError::Start {
            task: task.id.clone(),
            message,
        };
        let t: ToolTask = task.payload("tools")?;
        let db = self.domain.initial_db(&t).map_err(start_error)?;
        let scenario = UserScenario {
            persona: t
                .user_scenario
                .persona
                .clone()
                .unwrap_or_else(|| "A member of the public.".into()),
            instructions: t.user_scenario.instructions_text(),
        };
        let mut conversation = vec![Message::assistant(GREETING)];
        let first = self
            .user
            .reply(&scenario, &conversation)
            .await
            .map_err(|e| start_error(e.to_string()))?;
        conversation.push(Message::user(&first.text));
        Ok(Box::new(ToolsEpisode {
            domain: self.domain.clone(),
            schemas: self.schemas.clone(),
            system: self.system.clone(),
            user: self.user.clone(),
            scenario,
            opening: first.text,
            ended: first.stop.map(Ending::User),
            task: t,
            db,
            conversation,
            agent_messages: Vec::new(),
            calls: Vec::new(),
            steps: 0,
            errors: 0,
            max_steps: self.max_steps,
            max_errors: self.max_errors,
        }))
    }

    fn default_evaluators(&self) -> Vec<(String, Value)> {
        vec![("tau".into(), json!({}))]
    }
}

/// How an episode ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Ending {
    /// The agent wrote `###STOP###`.
    AgentStop,
    /// The user ended the conversation with a control token.
    User(UserStop),
    /// `max_steps` agent actions.
    StepLimit,
    /// `max_errors` failed tool calls.
    TooManyErrors,
}

impl Ending {
    /// tau2: only an agent or user stop is scored; any other ending scores 0.
    pub fn scored(self) -> bool {
        matches!(self, Ending::AgentStop | Ending::User(_))
    }
}

/// One tool call the agent made.
#[derive(Debug, Clone, Serialize, Deserialize)]
struct Call {
    name: String,
    arguments: Value,
    ok: bool,
}

struct ToolsEpisode {
    domain: Arc<Domain>,
    schemas: Vec<ToolSchema>,
    system: String,
    user: Arc<dyn UserSimulator>,
    scenario: UserScenario,
    task: ToolTask,
    opening: String,
    db: Value,
    /// The conversation as the user sees it: the greeting, then text turns.
    conversation: Vec<Message>,
    agent_messages: Vec<String>,
    calls: Vec<Call>,
    steps: u32,
    errors: u32,
    max_steps: u32,
    max_errors: u32,
    ended: Option<Ending>,
}

impl ToolsEpisode {
    fn end(&mut self, ending: Ending, text: String) -> Observation {
        self.ended = Some(ending);
        Observation::finished(text)
    }

    /// After an action: the limits, or the observation as it is.
    fn limits(&mut self, observation: String) -> Observation {
        if self.errors >= self.max_errors {
            return self.end(
                Ending::TooManyErrors,
                format!("{observation}\n(Too many failed tool calls: the conversation is over.)"),
            );
        }
        if self.steps >= self.max_steps {
            return self.end(
                Ending::StepLimit,
                format!("{observation}\n(The step limit is reached: the conversation is over.)"),
            );
        }
        Observation::text(observation)
    }

    async fn say(&mut self, text: String) -> Result<Observation, EnvironmentError> {
        self.agent_messages.push(text.clone());
        self.conversation.push(Message::assistant(&text));
        if text.contains(trawl_core::usersim::STOP) {
            return Ok(self.end(
                Ending::AgentStop,
                "(The agent ended the conversation.)".into(),
            ));
        }
        let turn = self
            .user
            .reply(&self.scenario, &self.conversation)
            .await
            .map_err(|e| EnvironmentError::Runtime(e.to_string()))?;
        self.conversation.push(Message::user(&turn.text));
        if let Some(stop) = turn.stop {
            return Ok(self.end(Ending::User(stop), turn.text));
        }
        Ok(self.limits(turn.text))
    }

    fn call(&mut self, name: &str, arguments: &str) -> Observation {
        let parsed = serde_json::from_str::<Value>(if arguments.trim().is_empty() {
            "{}"
        } else {
            arguments
        });
        let result = match &parsed {
            Ok(Value::Object(args)) => self.domain.call(name, args, &mut self.db),
            Ok(_) => Err("tool arguments must be a JSON object".into()),
            Err(e) => Err(format!("tool arguments are not valid JSON: {e}")),
        };
        self.calls.push(Call {
            name: name.to_string(),
            arguments: parsed.unwrap_or(Value::String(arguments.to_string())),
            ok: result.is_ok(),
        });
        let text = match result {
            // Strings bare, anything else as compact JSON.
            Ok(v) => lang::text_of(&v),
            Err(e) => {
                self.errors += 1;
                format!("Error: {e}")
            }
        };
        self.limits(text)
    }
}

#[async_trait]
impl Episode for ToolsEpisode {
    fn opening(&self) -> Vec<Message> {
        vec![Message::system(&self.system), Message::user(&self.opening)]
    }

    fn tools(&self) -> Vec<ToolSchema> {
        self.schemas.clone()
    }

    async fn act(&mut self, action: &Action) -> Result<Observation, EnvironmentError> {
        if self.ended.is_some() {
            return Ok(Observation::finished("The conversation is over."));
        }
        self.steps += 1;
        match action {
            Action::Answer { text } | Action::Message { text } => self.say(text.clone()).await,
            Action::ToolCall { call } => {
                Ok(self.call(&call.function.name, &call.function.arguments))
            }
            Action::Shell { .. } => Ok(self.limits(
                "There is no shell here: write to the user, or call one of the tools.".into(),
            )),
        }
    }

    async fn finish(&mut self) -> Result<Artifacts, EnvironmentError> {
        let gold = self
            .domain
            .gold_db(&self.task)
            .map_err(EnvironmentError::Runtime)?;
        let checks = Checks::new(
            &self.task,
            self.ended,
            &gold,
            &self.db,
            &self.agent_messages,
            &self.calls,
        );
        let (reward, _) = checks.score();
        // Per-turn rewards: the task is scored at the end, so every agent turn but the last
        // earns 0 and the last the episode's reward.
        let mut turn_rewards = vec![0.0; self.steps.max(1) as usize];
        if let Some(last) = turn_rewards.last_mut() {
            *last = reward;
        }
        let mut extra =
            serde_json::to_value(&checks).map_err(|e| EnvironmentError::Runtime(e.to_string()))?;
        extra["domain"] = json!(self.domain.name);
        extra["tool_calls"] = json!(self.calls);
        extra["tool_errors"] = json!(self.errors);
        extra["turn_rewards"] = json!(turn_rewards);
        // One per action taken: the task is scored at the end, so the last step earns it all.
        let mut step_rewards = vec![0.0; self.steps as usize];
        if let Some(last) = step_rewards.last_mut() {
            *last = reward;
        }
        Ok(Artifacts {
            submission: self.agent_messages.last().cloned(),
            extra,
            step_rewards,
        })
    }
}

/// What the `tau` evaluator scores: how the episode ended and each check, kept in the artifacts.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Checks {
    pub ended: Option<Ending>,
    pub reward_basis: Vec<Basis>,
    pub db: DbCheck,
    pub communicate: Vec<InfoCheck>,
    pub actions: Vec<ActionCheck>,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct DbCheck {
    #[serde(rename = "match")]
    pub matches: bool,
    /// Paths (`table.id.field`) where the final database differs from the expected one.
    pub differences: Vec<String>,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct InfoCheck {
    pub info: String,
    pub found: bool,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct ActionCheck {
    pub name: String,
    pub arguments: Map<String, Value>,
    pub called: bool,
}

/// tau2's COMMUNICATE rule: case-insensitive, commas ignored.
fn communicated(info: &str, messages: &[String]) -> bool {
    let norm = |s: &str| s.to_lowercase().replace(',', "");
    let want = norm(info);
    messages.iter().any(|m| norm(m).contains(&want))
}

impl Checks {
    fn new(
        task: &ToolTask,
        ended: Option<Ending>,
        gold: &Value,
        db: &Value,
        agent_messages: &[String],
        calls: &[Call],
    ) -> Checks {
        let c = &task.evaluation_criteria;
        let differences = domain::differences(gold, db, 20);
        Checks {
            ended,
            reward_basis: c.reward_basis.clone(),
            db: DbCheck {
                matches: differences.is_empty(),
                differences,
            },
            communicate: c
                .communicate_info
                .iter()
                .map(|info| InfoCheck {
                    info: info.clone(),
                    found: communicated(info, agent_messages),
                })
                .collect(),
            actions: c
                .actions
                .iter()
                .map(|a| ActionCheck {
                    name: a.name.clone(),
                    arguments: a.arguments.clone(),
                    called: calls.iter().any(|call| {
                        call.name == a.name
                            && a.arguments.iter().all(|(k, v)| {
                                let compared =
                                    a.compare_args.as_ref().is_none_or(|keys| keys.contains(k));
                                !compared || call.arguments.get(k).is_some_and(|x| lang::same(x, v))
                            })
                    }),
                })
                .collect(),
        }
    }

    /// The reward and the sub-rewards: the product of the basis components when the episode
    /// ended by an agent or user stop, 0 otherwise.
    pub fn score(&self) -> (f64, BTreeMap<String, f64>) {
        let fraction = |n: usize, of: usize| if of == 0 { 1.0 } else { n as f64 / of as f64 };
        let db = f64::from(u8::from(self.db.matches));
        let info = fraction(
            self.communicate.iter().filter(|c| c.found).count(),
            self.communicate.len(),
        );
        let action = fraction(
            self.actions.iter().filter(|a| a.called).count(),
            self.actions.len(),
        );
        let valid = self.ended.is_some_and(Ending::scored);
        let mut reward = if valid { 1.0 } else { 0.0 };
        for b in &self.reward_basis {
            reward *= match b {
                Basis::Db => db,
                Basis::Communicate => f64::from(u8::from(info >= 1.0)),
                Basis::Action => f64::from(u8::from(action >= 1.0)),
                Basis::EnvAssertion | Basis::NlAssertion => 0.0,
            };
        }
        let components = BTreeMap::from([
            ("db".to_string(), db),
            ("communicate".to_string(), info),
            ("action".to_string(), action),
            ("valid_ending".to_string(), f64::from(u8::from(valid))),
        ]);
        (reward, components)
    }
}

/// `[[evaluators]] type = "tau"`: the tau2-bench reward of a `tools` rollout.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TauEvaluatorConfig {}

impl EvaluatorConfig for TauEvaluatorConfig {
    fn build(self, _: &BuildContext) -> Result<Arc<dyn Evaluator>, ComponentError> {
        Ok(Arc::new(TauEvaluator))
    }
}

trawl_core::register!(
    evaluator,
    "tau",
    "tau2-bench reward: product of DB, COMMUNICATE and ACTION checks; 0 unless the agent or user ended the conversation",
    TauEvaluatorConfig
);

pub struct TauEvaluator;

#[async_trait]
impl Evaluator for TauEvaluator {
    fn name(&self) -> &str {
        "tau"
    }

    async fn evaluate(&self, record: &TrajectoryRecord) -> Result<Evaluation, EvaluatorError> {
        let checks: Checks =
            serde_json::from_value(record.outcome.artifacts.clone()).map_err(|e| {
                EvaluatorError::Unscorable {
                    evaluator: "tau".into(),
                    task: record.task.id.clone(),
                    message: format!("the rollout has no tools artifacts: {e}"),
                }
            })?;
        let (reward, components) = checks.score();
        Ok(Evaluation {
            evaluator: "tau".into(),
            reward,
            success: reward >= 1.0,
            components,
            details: json!({
                "ended": checks.ended,
                "db_differences": checks.db.differences,
                "missing_info": checks.communicate.iter().filter(|c| !c.found).map(|c| &c.info).collect::<Vec<_>>(),
            }),
        })
    }
}

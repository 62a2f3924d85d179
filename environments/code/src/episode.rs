//! One episode of the `code` environment: answers and the `run_python` / `run_tests` tools.

use serde_json::{json, Value};
use tokio::sync::OnceCell;
use trawl_core::sandbox::{ExecResult, Sandbox, SandboxError};
use trawl_core::{
    async_trait, Action, Artifacts, EnvironmentError, Episode, Message, Observation, ToolSchema,
};

use crate::runner::{tail, CodeRunner, TestReport, TestSpec, FEEDBACK_CHARS};
use crate::tasks::{program_of, task_prompt};

/// The tools an episode offers (the config picks among them).
pub(crate) const TOOLS: [&str; 2] = ["run_python", "run_tests"];

pub(crate) struct CodeEpisode {
    pub(crate) data: Value,
    pub(crate) runner: CodeRunner,
    /// Made on first use: a chat episode without feedback never needs one.
    pub(crate) sandbox: OnceCell<Box<dyn Sandbox>>,
    pub(crate) feedback: bool,
    pub(crate) tools: Vec<String>,
    pub(crate) last_answer: Option<String>,
}

pub(crate) fn tool_schema(name: &str) -> ToolSchema {
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
pub(crate) fn describe_run(r: &ExecResult) -> String {
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

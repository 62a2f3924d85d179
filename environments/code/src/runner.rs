//! Running model-written programs and their tests in a sandbox: the settings shared by the
//! environment and its evaluator, the test harness, and the report it reads back.

use std::sync::Arc;

use crate::tolerance;
use serde::{Deserialize, Serialize};
use serde_json::{json, Value};
use trawl_core::registry::{BuildContext, ComponentError};
use trawl_core::sandbox::{
    limit_from_stderr, ExecLimits, ExecOutcome, ExecResult, Limit, Sandbox, SandboxBackend,
    SandboxError, SandboxSpec,
};

pub(crate) const HARNESS: &str = include_str!("harness.py");
/// Characters of test or tool output shown to the model.
pub(crate) const FEEDBACK_CHARS: usize = 4000;

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

pub(crate) fn default_python() -> String {
    if std::path::Path::new("/usr/bin/python3").exists() {
        "/usr/bin/python3".into()
    } else {
        "python3".into()
    }
}

pub(crate) fn default_sandbox() -> Value {
    json!({})
}

pub(crate) fn default_per_test() -> f64 {
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
pub(crate) fn tail(s: &str, n: usize) -> &str {
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
    pub(crate) settings: RunSettings,
    pub(crate) backend: Arc<dyn SandboxBackend>,
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

pub(crate) fn report_from(r: &ExecResult, marker: &str, spec: &TestSpec) -> TestReport {
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

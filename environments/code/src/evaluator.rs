//! The `code_tests` evaluator: the task's tests run on a fresh sandbox; reward = fraction
//! passed, success = all passed.

use std::collections::BTreeMap;
use std::sync::Arc;

use serde_json::{json, Value};
use trawl_core::registry::{BuildContext, ComponentError, EvaluatorConfig};
use trawl_core::sandbox::{ExecOutcome, SandboxError};
use trawl_core::{async_trait, Evaluation, Evaluator, EvaluatorError, TrajectoryRecord};

use crate::runner::{CodeRunner, RunSettings, TestReport, TestSpec};
use crate::tasks::program_of;

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
    pub(crate) runner: CodeRunner,
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

pub(crate) fn report_details(report: &TestReport) -> Value {
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

//! The `swe_tests` evaluator: the submitted patch (and the instance's `test_patch`) on a fresh
//! checkout, FAIL_TO_PASS and PASS_TO_PASS run with pytest, graded as the SWE-smith /
//! SWE-bench harness does.

use std::sync::Arc;

use serde_json::json;
use trawl_core::registry::{BuildContext, ComponentError, EvaluatorConfig};
use trawl_core::sandbox::{ExecLimits, ExecOutcome, SandboxError};
use trawl_core::{async_trait, Evaluation, Evaluator, EvaluatorError, TrajectoryRecord};

use crate::config::SweConfig;
use crate::instance::SweInstance;
use crate::report::{self, Report};
use crate::shell::{quote, tail, GIT, SCRATCH};
use crate::workspace::{Checkout, Workspace};

/// `[[evaluators]] type = "swe_tests"` takes the environment's table.
impl EvaluatorConfig for SweConfig {
    fn build(self, cx: &BuildContext) -> Result<Arc<dyn Evaluator>, ComponentError> {
        Ok(Arc::new(SweTestsEvaluator::new(self, cx)?))
    }
}

/// Scores SWE trajectories the way the SWE-smith / SWE-bench harness does.
pub struct SweTestsEvaluator {
    workspace: Workspace,
}

/// What one evaluation found, before it becomes an `Evaluation`.
#[derive(Debug, Clone)]
pub struct HarnessResult {
    pub report: Report,
    /// The end of the test run's output.
    pub log_tail: String,
}

impl SweTestsEvaluator {
    /// Removes the containers its evaluations left (none, unless one was cut short).
    pub async fn shutdown(&self) {
        self.workspace.shutdown().await;
    }

    pub fn new(config: SweConfig, cx: &BuildContext) -> Result<Self, ComponentError> {
        Ok(SweTestsEvaluator {
            workspace: Workspace::new(config, cx)?,
        })
    }

    /// Applies `patch` (None: no submission) to a fresh checkout of `inst` and runs its tests.
    pub async fn evaluate_patch(
        &self,
        inst: &SweInstance,
        patch: Option<&str>,
    ) -> Result<HarnessResult, SandboxError> {
        // The untouched working copy, as the agent started from it (its history kept): a
        // fresh view of it where the sandbox has snapshots.
        let c = self.workspace.checkout_for_agent(inst, false).await?;
        let result = self.run_harness(&c, inst, patch).await;
        let closed = c.sandbox.close().await;
        let result = result?;
        closed?;
        Ok(result)
    }

    async fn run_harness(
        &self,
        c: &Checkout,
        inst: &SweInstance,
        patch: Option<&str>,
    ) -> Result<HarnessResult, SandboxError> {
        let ws = &self.workspace;
        let mut report = Report {
            patch_is_none: patch.is_none(),
            patch_exists: patch.is_some_and(|p| !p.trim().is_empty()),
            ..Report::default()
        };
        if let Some(p) = patch.filter(|p| !p.trim().is_empty()) {
            let path = ws.put_patch(c, "model.patch", p).await?;
            let q = quote(&path);
            // As the SWE-bench harness: git apply, then a more forgiving patch(1).
            let apply = format!(
                "{GIT} apply --whitespace=nowarn {q} 2>&1 || {GIT} apply --whitespace=nowarn --recount --ignore-whitespace {q} 2>&1 || patch --batch --fuzz=5 -p1 -i {q} 2>&1"
            );
            let r = c.sandbox.exec(&apply, &ws.settings.limits).await?;
            if !r.success() {
                return Ok(HarnessResult {
                    report,
                    log_tail: format!("the patch does not apply:\n{}", tail(&r.stdout, 4000)),
                });
            }
        }
        report.patch_successfully_applied = report.patch_exists;
        if let Some(tp) = inst.test_patch.as_deref().filter(|t| !t.trim().is_empty()) {
            let path = ws.put_patch(c, "test.patch", tp).await?;
            ws.script(
                c,
                &format!("{GIT} apply --whitespace=nowarn {}", quote(&path)),
                "applying the instance's test_patch",
            )
            .await?;
        }
        let tests: Vec<String> = inst
            .fail_to_pass
            .iter()
            .chain(&inst.pass_to_pass)
            .map(|t| quote(t))
            .collect();
        let limits = ExecLimits {
            wall_time_secs: ws.settings.eval_timeout_secs,
            cpu_secs: (ws.settings.eval_timeout_secs as u64).max(1) * 2,
            output_bytes: 8 << 20,
            ..ws.settings.limits.clone()
        };
        let cmd = format!(
            "rm -rf {SCRATCH}\nexec 2>&1\n{} {}",
            ws.settings.test_cmd,
            tests.join(" ")
        );
        let r = c.sandbox.exec(&cmd, &limits).await?;
        if r.outcome == ExecOutcome::TimedOut {
            report.timed_out = true;
            report.timeout = Some(ws.settings.eval_timeout_secs as u64);
        }
        let statuses = report::parse_pytest(&r.stdout);
        report.tests_status = Report::grade(&inst.fail_to_pass, &inst.pass_to_pass, &statuses);
        report.resolved = !report.timed_out && Report::all_pass(&report.tests_status);
        Ok(HarnessResult {
            report,
            log_tail: tail(&r.stdout, 4000).to_string(),
        })
    }
}

#[async_trait]
impl Evaluator for SweTestsEvaluator {
    fn name(&self) -> &str {
        "swe_tests"
    }

    async fn evaluate(&self, record: &TrajectoryRecord) -> Result<Evaluation, EvaluatorError> {
        let inst =
            SweInstance::from_task(&record.task).map_err(|message| EvaluatorError::Unscorable {
                evaluator: "swe_tests".into(),
                task: record.task.id.clone(),
                message,
            })?;
        let result = self
            .evaluate_patch(&inst, record.outcome.submission.as_deref())
            .await
            .map_err(|e| EvaluatorError::Failed {
                evaluator: "swe_tests".into(),
                message: e.to_string(),
            })?;
        let r = &result.report;
        let frac = |key: &str| {
            let s = &r.tests_status[key];
            let n = s.success.len() + s.failure.len();
            if n == 0 {
                1.0
            } else {
                s.success.len() as f64 / n as f64
            }
        };
        let components = if r.tests_status.is_empty() {
            Default::default()
        } else {
            [
                ("fail_to_pass".to_string(), frac("FAIL_TO_PASS")),
                ("pass_to_pass".to_string(), frac("PASS_TO_PASS")),
            ]
            .into()
        };
        Ok(Evaluation {
            evaluator: "swe_tests".into(),
            reward: if r.resolved { 1.0 } else { 0.0 },
            success: r.resolved,
            components,
            details: json!({
                "report": r.to_harness_json(&inst.instance_id),
                "log_tail": result.log_tail,
            }),
        })
    }
    async fn shutdown(&self) {
        SweTestsEvaluator::shutdown(self).await;
    }
}

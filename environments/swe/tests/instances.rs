//! Every bundled instance, validated as SWE-smith validates its own: the gold fix resolves it,
//! an empty patch does not, and PASS_TO_PASS passes before and after. Once in containers on
//! the real Docker engine (images from `trawl swe build-images`), once in the local sandbox.

use serde_json::json;
use trawl_core::registry::{BuildContext, EnvironmentConfig};
use trawl_core::{Action, Environment, FunctionCall, ToolCall};
use trawl_sandbox_docker as _; // the sandbox kinds the instances run in
use trawl_sandbox_local as _;
use trawl_swe::instance::{self, SweInstance};
use trawl_swe::{SweConfig, SweTestsEvaluator};

fn config(sandbox: serde_json::Value) -> SweConfig {
    serde_json::from_value(json!({ "sandbox": sandbox })).expect("config")
}

/// Whether the Docker engine and the bundled images are here; where not, the test is counted
/// as skipped under `cargo xtask test` and fails anywhere else.
async fn docker_ready() -> bool {
    let env = config(json!({"type": "docker"}))
        .build(&BuildContext {
            run_name: "test-ready".into(),
            ..BuildContext::default()
        })
        .expect("build");
    match env.tasks().await {
        Ok(_) => true,
        Err(e) => {
            trawl_test_needs::missing(trawl_test_needs::DOCKER_IMAGES, &e.to_string());
            false
        }
    }
}

fn call(name: &str, args: serde_json::Value) -> Action {
    Action::ToolCall {
        call: ToolCall {
            id: "c1".into(),
            kind: "function".into(),
            function: FunctionCall {
                name: name.into(),
                arguments: args.to_string(),
            },
        },
    }
}

/// Plays the gold fix through the environment (the editor writes the bug's patch, git reverses
/// it, the agent submits) and returns the submitted diff.
async fn gold_submission(env: &dyn Environment, inst: &SweInstance) -> String {
    let mut ep = env.start(&inst.to_task()).await.expect("episode");
    // The agent's history holds one commit: the bug is not in it.
    let log = ep
        .act(&Action::Shell {
            command: "git log --oneline | wc -l; git status --porcelain | wc -l".into(),
        })
        .await
        .expect("log");
    assert_eq!(
        log.content.split_whitespace().collect::<Vec<_>>(),
        ["1", "0"],
        "{}",
        log.content
    );
    let created = ep
        .act(&call(
            "str_replace_editor",
            json!({"command": "create", "path": "bug.patch", "file_text": inst.patch}),
        ))
        .await
        .expect("create");
    assert!(
        created.content.contains("File created successfully"),
        "{}",
        created.content
    );
    let fix = ep
        .act(&Action::Shell {
            command: "git apply -R bug.patch && rm bug.patch".into(),
        })
        .await
        .expect("apply");
    assert_eq!(fix.exit_code, Some(0), "{}", fix.content);
    let done = ep
        .act(&Action::Shell {
            command: format!("echo {}", trawl_swe::SUBMIT_SENTINEL),
        })
        .await
        .expect("submit");
    assert!(done.done);
    let artifacts = ep.finish().await.expect("finish");
    artifacts.submission.expect("a diff")
}

async fn validate(sandbox: serde_json::Value) {
    let cx = BuildContext {
        run_name: "test-instances".into(),
        ..BuildContext::default()
    };
    let env = config(sandbox.clone()).build(&cx).expect("build");
    env.tasks().await.expect("preflight");
    let evaluator = SweTestsEvaluator::new(
        config(sandbox),
        &BuildContext {
            run_name: "test-instances".into(),
            ..BuildContext::default()
        },
    )
    .expect("evaluator");
    for inst in instance::builtin() {
        let id = &inst.instance_id;
        // Before: the bug is in; FAIL_TO_PASS fails, PASS_TO_PASS passes.
        let before = evaluator
            .evaluate_patch(&inst, None)
            .await
            .expect("before")
            .report;
        assert!(before.patch_is_none && !before.resolved, "{id}: {before:?}");
        assert!(
            before.tests_status["FAIL_TO_PASS"].success.is_empty(),
            "{id}: {before:?}"
        );
        assert!(
            before.tests_status["PASS_TO_PASS"].failure.is_empty(),
            "{id}: {before:?}"
        );
        // An empty patch resolves nothing.
        let empty = evaluator
            .evaluate_patch(&inst, Some(""))
            .await
            .expect("empty")
            .report;
        assert!(!empty.patch_exists && !empty.resolved, "{id}: {empty:?}");
        // The gold fix, played through the environment, resolves it; PASS_TO_PASS still passes.
        let diff = gold_submission(env.as_ref(), &inst).await;
        assert!(diff.starts_with("diff --git"), "{id}: {diff}");
        assert!(
            !diff.contains("bug.patch"),
            "{id}: scratch file in the diff"
        );
        let after = evaluator
            .evaluate_patch(&inst, Some(&diff))
            .await
            .expect("after");
        let r = after.report;
        assert!(
            r.patch_successfully_applied && r.resolved,
            "{id}: {r:?}\n{}",
            after.log_tail
        );
        assert!(
            r.tests_status["PASS_TO_PASS"].failure.is_empty(),
            "{id}: {r:?}"
        );
        // A patch that does not apply is a failed rollout, not an error.
        let bad = evaluator
            .evaluate_patch(&inst, Some("diff --git a/nope.py b/nope.py\n--- a/nope.py\n+++ b/nope.py\n@@ -1 +1 @@\n-x\n+y\n"))
            .await
            .expect("bad patch");
        assert!(
            !bad.report.patch_successfully_applied && !bad.report.resolved,
            "{id}"
        );
    }
    env.shutdown().await;
    evaluator.shutdown().await;
}

#[tokio::test]
async fn bundled_instances_validate_in_containers() {
    if docker_ready().await {
        validate(json!({"type": "docker"})).await;
        let left = std::process::Command::new("docker")
            .args(["ps", "-aq", "--filter", "label=trawl.run_id=test-instances"])
            .output()
            .expect("docker ps");
        assert!(left.stdout.is_empty(), "containers left behind");
    }
}

#[tokio::test]
async fn bundled_instances_validate_in_the_local_sandbox() {
    if !trawl_test_needs::system_pytest("the local sandbox runs the instances' tests") {
        return;
    }
    validate(json!({"type": "local"})).await;
}

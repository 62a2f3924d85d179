//! Importing the real trajectory files of mini-swe-agent and SWE-agent in ../shared/fixtures.

use std::path::PathBuf;

use trawl_core::{ExitStatus, MessageRole};
use trawl_swe::import::{find_reports, find_trajectories, import_file, Extra};

fn fixtures() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../../../shared/fixtures")
}

#[test]
fn mini_swe_agent_trajectories_in_both_modes() {
    let tool = import_file(
        &fixtures().join("mini-swe-agent/toolcall.traj.json"),
        &Extra::default(),
    )
    .expect("tool-call trajectory");
    assert_eq!(tool.key.task, "inst-0141");
    assert_eq!(tool.key.scaffold, "mini-swe-agent");
    assert_eq!(tool.outcome.exit_status, ExitStatus::Submitted);
    assert_eq!(tool.assistant_turns(), 10);
    assert_eq!(tool.steps.len(), 10);
    let calls: usize = tool.messages.iter().map(|m| m.tool_calls.len()).sum();
    assert_eq!(calls, 10);
    assert!(tool
        .messages
        .iter()
        .filter(|m| m.role == MessageRole::Tool)
        .all(|m| m.tool_call_id.as_deref().is_some_and(|id| !id.is_empty())));
    assert_eq!(tool.tools.len(), 1);
    assert_eq!(tool.tools[0].name(), "bash");

    let text = import_file(
        &fixtures().join("mini-swe-agent/textbased.traj.json"),
        &Extra::default(),
    )
    .expect("text trajectory");
    assert!(text.messages.iter().all(|m| m.tool_calls.is_empty()));
    assert!(text
        .messages
        .iter()
        .any(|m| m.text().contains("```mswea_bash_command")));
    assert!(text.tools.is_empty());
}

#[test]
fn swe_agent_trajectories_with_and_without_function_calling() {
    let old = import_file(
        &fixtures().join("swe-agent/pydicom__pydicom-1458.traj"),
        &Extra::default(),
    )
    .expect("swe-agent trajectory");
    assert_eq!(old.key.task, "pydicom__pydicom-1458");
    assert_eq!(old.outcome.exit_status, ExitStatus::Submitted);
    assert!(old
        .outcome
        .submission
        .as_deref()
        .is_some_and(|s| s.contains("diff --git a/pydicom")));
    assert_eq!(old.steps.len(), 12);
    assert_eq!(old.messages[0].role, MessageRole::System);

    let fc = import_file(
        &fixtures().join("swe-agent/marshmallow-code__marshmallow-1867.function_calling.traj"),
        &Extra::default(),
    )
    .expect("function-calling trajectory");
    assert_eq!(fc.key.model, "gpt-4o");
    assert!(fc.messages.iter().any(|m| !m.tool_calls.is_empty()));
    let tool_msgs: Vec<_> = fc
        .messages
        .iter()
        .filter(|m| m.role == MessageRole::Tool)
        .collect();
    assert!(!tool_msgs.is_empty());
    assert!(tool_msgs.iter().all(|m| m.tool_call_id.is_some()));
    assert!(fc.tools.iter().any(|t| t.name() == "create"));
}

#[test]
fn a_folder_is_searched_and_reports_score_the_import() {
    let found = find_trajectories(&fixtures()).expect("search");
    assert_eq!(found.len(), 4);
    let dir = tempfile::tempdir().expect("tempdir");
    let report_dir = dir
        .path()
        .join("logs/run_evaluation/r/m/pydicom__pydicom-1458");
    std::fs::create_dir_all(&report_dir).expect("mkdir");
    std::fs::write(
        report_dir.join("report.json"),
        r#"{"pydicom__pydicom-1458": {"patch_is_None": false, "patch_exists": true, "patch_successfully_applied": true, "resolved": true}}"#,
    )
    .expect("write");
    let reports = find_reports(dir.path()).expect("reports");
    let r = import_file(
        &fixtures().join("swe-agent/pydicom__pydicom-1458.traj"),
        &Extra {
            report: reports.get("pydicom__pydicom-1458").cloned(),
            ..Extra::default()
        },
    )
    .expect("import");
    assert!(r.success);
    assert_eq!(r.reward, 1.0);
}

#[test]
fn a_broken_file_names_itself_and_the_field() {
    let dir = tempfile::tempdir().expect("tempdir");
    let p = dir.path().join("x.traj.json");
    std::fs::write(
        &p,
        r#"{"info": {}, "trajectory_format": "mini-swe-agent-1.1"}"#,
    )
    .expect("write");
    let err = import_file(&p, &Extra::default()).expect_err("no messages");
    assert!(
        err.contains("x.traj.json") && err.contains("`messages`"),
        "{err}"
    );
    std::fs::write(&p, "{\n  \"info\": ").expect("write");
    let err = import_file(&p, &Extra::default()).expect_err("bad json");
    assert!(err.contains("x.traj.json:2:"), "{err}");
}

#[test]
fn ids_come_from_the_trajectory_and_unreported_imports_are_unscored() {
    // Renamed on disk: the instance id still comes from SWE-agent's replay config.
    let dir = tempfile::tempdir().expect("tempdir");
    let renamed = dir.path().join("run-7.traj");
    std::fs::copy(
        fixtures().join("swe-agent/marshmallow-code__marshmallow-1867.function_calling.traj"),
        &renamed,
    )
    .expect("copy");
    let r = import_file(&renamed, &Extra::default()).expect("import");
    assert_eq!(r.key.task, "marshmallow-code__marshmallow-1867");
    assert_eq!(
        r.task.data["instance_id"],
        "marshmallow-code__marshmallow-1867"
    );
    // mini-swe-agent names its instance inside the file too.
    let mini_copy = dir.path().join("whatever.traj.json");
    std::fs::copy(
        fixtures().join("mini-swe-agent/toolcall.traj.json"),
        &mini_copy,
    )
    .expect("copy");
    assert_eq!(
        import_file(&mini_copy, &Extra::default())
            .expect("import")
            .key
            .task,
        "inst-0141"
    );

    // Without a report nobody scored it: no failure, and out of the success rate.
    assert!(!r.is_scored());
    let stats = trawl_core::stats::compute(std::slice::from_ref(&r));
    let g = &stats.groups[0];
    assert_eq!((g.rollouts, g.unscored, g.successes), (1, 1, 0));
    assert!(g.success.is_none() && g.reward.is_none(), "{:?}", g.success);
    assert!(
        stats.render().contains("unscored        1"),
        "{}",
        stats.render()
    );
}

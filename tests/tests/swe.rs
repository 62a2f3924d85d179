//! Whole SWE runs against a real HTTP server on 127.0.0.1 replaying a scripted fix: the `bash`
//! scaffold (text and tool modes) and the `swe_tools` scaffold (native calls and the XML text
//! format), in containers on the real Docker engine (images from `trawl swe build-images`) and
//! in the local sandbox. Scored by the SWE harness; no container outlives its run, a panicking
//! rollout included.

#![allow(clippy::unwrap_used)]

use trawl_core::engine::StopSignal;
use trawl_core::{ExitStatus, TrajectoryRecord};
use trawl_sandbox_docker as _; // the sandbox kinds SWE instances run in
use trawl_sandbox_local as _;
use trawl_swe::instance::{self, SweInstance};
use trawl_tests::{
    containers_of, swe_images_present, swe_policy, ScriptedServer, SweFix, SweStyle,
};

use trawl_bash as _;
use trawl_exporters as _;
use trawl_openai as _;
use trawl_swe as _;
use trawl_swe_tools as _;

/// Every other bundled instance is fixed (its bug undone), so a run has both outcomes.
pub fn fixes() -> Vec<SweFix> {
    instance::builtin()
        .iter()
        .enumerate()
        .map(|(i, inst)| SweFix::undoing(&inst.patch, &inst.problem_statement, i % 2 == 0))
        .collect()
}

fn config(name: &str, base_url: &str, sandbox: &str, scaffold: &str) -> String {
    format!(
        r#"
name = "{name}"
seed = 3
samples = 1
concurrency = 3

[[environments]]
type = "swe"
sandbox = {sandbox}

[[scaffolds]]
{scaffold}

[[models]]
type = "openai"
name = "scripted"
base_url = "{base_url}"
model = "scripted"
request_timeout_secs = 30
"#
    )
}

async fn run_style(
    name: &str,
    style: SweStyle,
    sandbox: &str,
    scaffold: &str,
) -> (tempfile::TempDir, Vec<TrajectoryRecord>) {
    let server = ScriptedServer::start(swe_policy(fixes(), style))
        .await
        .unwrap();
    let dir = tempfile::tempdir().unwrap();
    let text = config(name, &server.base_url(), sandbox, scaffold);
    trawl_tests::run_experiment(&text, dir.path(), StopSignal::default())
        .await
        .unwrap();
    let records = trawl_tests::run_records(dir.path());
    (dir, records)
}

/// Every instance submitted; exactly the fixed ones resolved, with the harness report.
fn check(records: &[TrajectoryRecord]) {
    assert_eq!(records.len(), 6);
    let fixes = fixes();
    for r in records {
        assert_eq!(
            r.outcome.exit_status,
            ExitStatus::Submitted,
            "{}: {:?}",
            r.task.id,
            r.outcome
        );
        let inst = SweInstance::from_task(&r.task).unwrap();
        let fix = fixes
            .iter()
            .find(|f| inst.problem_statement.starts_with(&f.marker))
            .unwrap();
        assert_eq!(r.success, fix.solve, "{}: {:?}", r.task.id, r.evaluations);
        let report = &r.evaluations[0].details["report"][&r.task.id];
        assert_eq!(report["resolved"], fix.solve);
        assert!(report["tests_status"]["PASS_TO_PASS"]["failure"]
            .as_array()
            .unwrap()
            .is_empty());
        let patch = r.outcome.submission.as_deref().unwrap_or("");
        assert_eq!(
            patch.contains(&format!("+++ b/{}", fix.path)),
            fix.solve,
            "{}: {patch}",
            r.task.id
        );
        assert!(r.outcome.artifacts["model_stats"]["api_calls"].as_u64() >= Some(4));
    }
}

#[tokio::test]
async fn bash_scaffold_in_containers_text_and_tool_modes() {
    if !swe_images_present() {
        return;
    }
    let (_d, records) = run_style(
        "swe-test-bash-text",
        SweStyle::BashText,
        r#"{ type = "docker" }"#,
        r#"type = "bash""#,
    )
    .await;
    check(&records);
    assert!(containers_of("swe-test-bash-text").is_empty());
    // The observation format: exit code and output.
    let first = &records[0].messages;
    assert!(first
        .iter()
        .any(|m| m.text().starts_with("<returncode>0</returncode>")));

    let (_d, records) = run_style(
        "swe-test-bash-tool",
        SweStyle::BashTool,
        r#"{ type = "docker" }"#,
        "type = \"bash\"\nmode = \"tool\"",
    )
    .await;
    check(&records);
    // Tool mode offers the bash tool only and answers with tool messages.
    assert_eq!(records[0].tools.len(), 1);
    assert!(records[0]
        .messages
        .iter()
        .any(|m| m.role == trawl_core::MessageRole::Tool));
    assert!(containers_of("swe-test-bash-tool").is_empty());
}

#[tokio::test]
async fn swe_tools_scaffold_in_containers_native_and_xml() {
    if !swe_images_present() {
        return;
    }
    let (_d, records) = run_style(
        "swe-test-tools",
        SweStyle::ToolsNative,
        r#"{ type = "docker" }"#,
        r#"type = "swe_tools""#,
    )
    .await;
    check(&records);
    assert_eq!(records[0].tools.len(), 3);
    assert!(containers_of("swe-test-tools").is_empty());

    let (_d, records) = run_style(
        "swe-test-xml",
        SweStyle::ToolsXml,
        r#"{ type = "docker" }"#,
        "type = \"swe_tools\"\nmode = \"xml\"",
    )
    .await;
    check(&records);
    // The tools were described in the system prompt, and observations came back as text.
    assert!(records[0].messages[0]
        .text()
        .contains("<function=TOOL_NAME>"));
    assert!(records[0]
        .messages
        .iter()
        .any(|m| m.text().starts_with("OBSERVATION:")));
}

#[tokio::test]
async fn both_scaffolds_in_the_local_sandbox() {
    if !trawl_tests::needs::system_pytest("the local sandbox runs the repository's tests") {
        return;
    }
    let (_d, records) = run_style(
        "swe-test-local",
        SweStyle::BashText,
        r#"{ type = "local" }"#,
        r#"type = "bash""#,
    )
    .await;
    check(&records);
    let (_d, records) = run_style(
        "swe-test-local-tools",
        SweStyle::ToolsNative,
        r#"{ type = "local" }"#,
        r#"type = "swe_tools""#,
    )
    .await;
    check(&records);
}

/// A scaffold that runs one command in its episode's container and then panics.
#[derive(serde::Deserialize)]
struct PanickingConfig {}

struct Panicking;

impl trawl_core::registry::ScaffoldConfig for PanickingConfig {
    fn build(
        self,
        _: &trawl_core::BuildContext,
    ) -> Result<std::sync::Arc<dyn trawl_core::AgentScaffold>, trawl_core::ComponentError> {
        Ok(std::sync::Arc::new(Panicking))
    }
}

#[trawl_core::async_trait]
impl trawl_core::AgentScaffold for Panicking {
    fn required_actions(&self) -> trawl_core::ActionSpace {
        trawl_core::ActionSpace {
            shell: true,
            ..Default::default()
        }
    }

    async fn run(
        &self,
        cx: trawl_core::RolloutContext<'_>,
    ) -> Result<trawl_core::ScaffoldOutcome, trawl_core::ScaffoldError> {
        cx.transcript
            .act(
                cx.episode,
                trawl_core::Action::Shell {
                    command: "touch started".into(),
                },
            )
            .await?;
        panic!("a scaffold bug");
    }
}

trawl_core::register!(
    scaffold,
    "test_panicking",
    "test only: panics mid-episode",
    PanickingConfig
);

#[tokio::test]
async fn a_panicking_rollout_leaves_no_container() {
    if !swe_images_present() {
        return;
    }
    let server = ScriptedServer::start(swe_policy(fixes(), SweStyle::BashText))
        .await
        .unwrap();
    let dir = tempfile::tempdir().unwrap();
    let text = config(
        "swe-test-panic",
        &server.base_url(),
        r#"{ type = "docker" }"#,
        r#"type = "test_panicking""#,
    )
    .replace(
        "concurrency = 3",
        "concurrency = 3\nmax_infra_error_rate = 1.0",
    );
    trawl_tests::run_experiment(&text, dir.path(), StopSignal::default())
        .await
        .unwrap();
    let records = trawl_tests::run_records(dir.path());
    assert_eq!(records.len(), 6);
    for r in &records {
        assert_eq!(r.outcome.exit_status, ExitStatus::InfraError);
        assert_eq!(r.outcome.error.as_ref().unwrap().kind, "panic");
    }
    assert!(containers_of("swe-test-panic").is_empty());
}

/// The `ticks` style writes an imported SWE-agent trajectory's actions as SWE-agent recorded
/// them, not re-spelled from the tool call's arguments.
#[test]
fn ticks_keep_swe_agents_recorded_command_syntax() {
    let file = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join(
        "../../shared/fixtures/swe-agent/marshmallow-code__marshmallow-1867.function_calling.traj",
    );
    let r = trawl_swe::import::import_file(&file, &trawl_swe::import::Extra::default()).unwrap();
    let lines = trawl_tests::export_lines(
        &[r],
        "swe_smith",
        serde_json::json!({"style": "ticks"}),
        false,
    );
    let replies: Vec<&str> = lines[0]["messages"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|m| m["role"] == "assistant")
        .filter_map(|m| m["content"].as_str())
        .collect();
    assert!(
        replies
            .iter()
            .any(|c| c.contains("```\nfind_file fields.py src\n```")),
        "{replies:#?}"
    );
    assert!(replies
        .iter()
        .any(|c| c.contains("open \"src/marshmallow/fields.py\" 1474")));
    assert!(!replies.iter().any(|c| c.contains("--file_name")));
}

/// The `xml` style's system prompt describes the `<function=...>` calls its replies make, also
/// for a text-based trajectory whose own prompt taught fenced commands.
#[test]
fn xml_system_prompts_describe_the_calls_the_replies_make() {
    let file = std::path::Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("../../shared/fixtures/swe-agent/pydicom__pydicom-1458.traj");
    let r = trawl_swe::import::import_file(&file, &trawl_swe::import::Extra::default()).unwrap();
    assert!(
        r.messages.iter().all(|m| m.tool_calls.is_empty()),
        "a text-based trajectory"
    );
    let lines = trawl_tests::export_lines(
        &[r],
        "swe_smith",
        serde_json::json!({"style": "xml"}),
        false,
    );
    let messages = lines[0]["messages"].as_array().unwrap();
    let system = messages[0]["content"].as_str().unwrap();
    let calls: Vec<&str> = messages
        .iter()
        .filter(|m| m["role"] == "assistant")
        .filter_map(|m| m["content"].as_str())
        .filter_map(|c| c.split("<function=").nth(1))
        .filter_map(|c| c.split('>').next())
        .collect();
    assert!(!calls.is_empty());
    assert!(system.contains("<function=TOOL_NAME>"), "{system}");
    for name in &calls {
        assert!(
            system.contains(&format!("\n- {name}: ")),
            "{name} undescribed in:\n{system}"
        );
    }
}

//! The SWE environment through the `trawl` binary, on the real Docker engine: Ctrl-C and
//! SIGTERM mid-run leave no container and no snapshot image, a SIGKILLed run's containers and
//! snapshots are reaped by the next start, and a scored run exports in SWE-smith's three styles, as preds.json and as harness
//! reports.

#![allow(clippy::unwrap_used)]

use std::path::Path;
use std::process::{Command, Stdio};
use std::sync::Arc;
use std::time::{Duration, Instant};

use serde_json::Value;
use trawl_tests::{
    containers_of, snapshots_of, swe_images_present, swe_policy, Reply, ScriptedServer, SweFix,
    SweStyle,
};

const TRAWL: &str = env!("CARGO_BIN_EXE_trawl");

fn write_config(dir: &Path, name: &str, base_url: &str, scaffold: &str) -> std::path::PathBuf {
    let text = format!(
        r#"name = "{name}"
seed = 1
concurrency = 3

[[environments]]
type = "swe"

[[scaffolds]]
{scaffold}

[[models]]
type = "openai"
name = "scripted"
base_url = "{base_url}"
model = "scripted"
request_timeout_secs = 30
"#
    );
    let path = dir.join("swe.toml");
    std::fs::write(&path, text).unwrap();
    path
}

/// A model that always runs a long command, so that episodes are in flight when signalled.
async fn slow_server() -> ScriptedServer {
    ScriptedServer::start(Arc::new(|_: &Value| {
        Reply::text("THOUGHT: wait.\n\n```bash\nsleep 50\n```")
    }))
    .await
    .unwrap()
}

fn wait_for_containers(run: &str) -> Vec<String> {
    let until = Instant::now() + Duration::from_secs(60);
    loop {
        let now = containers_of(run);
        if !now.is_empty() || Instant::now() > until {
            return now;
        }
        std::thread::sleep(Duration::from_millis(200));
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn ctrl_c_and_sigterm_mid_run_leave_no_container() {
    if !swe_images_present() {
        return;
    }
    let server = slow_server().await;
    for signal in ["INT", "TERM"] {
        let dir = tempfile::tempdir().unwrap();
        let name = format!("swe-cli-sig{}", signal.to_lowercase());
        let config = write_config(dir.path(), &name, &server.base_url(), "type = \"bash\"");
        let mut child = Command::new(TRAWL)
            .args(["run", config.to_str().unwrap(), "--grace-secs", "1", "-q"])
            .current_dir(dir.path())
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap();
        assert!(!wait_for_containers(&name).is_empty(), "no episode started");
        std::thread::sleep(Duration::from_millis(500));
        Command::new("kill")
            .args([&format!("-{signal}"), &child.id().to_string()])
            .status()
            .unwrap();
        let until = Instant::now() + Duration::from_secs(60);
        let status = loop {
            if let Some(s) = child.try_wait().unwrap() {
                break s;
            }
            assert!(
                Instant::now() < until,
                "trawl did not stop after SIG{signal}"
            );
            std::thread::sleep(Duration::from_millis(100));
        };
        assert_eq!(status.code(), Some(130), "SIG{signal}");
        assert!(
            containers_of(&name).is_empty(),
            "SIG{signal} left containers behind"
        );
        assert!(
            snapshots_of(&name).is_empty(),
            "SIG{signal} left snapshot images behind"
        );
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_killed_runs_containers_are_reaped_by_the_next_start() {
    if !swe_images_present() {
        return;
    }
    let server = slow_server().await;
    let dir = tempfile::tempdir().unwrap();
    let name = "swe-cli-sigkill";
    let config = write_config(dir.path(), name, &server.base_url(), "type = \"bash\"");
    let mut child = Command::new(TRAWL)
        .args(["run", config.to_str().unwrap(), "-q"])
        .current_dir(dir.path())
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let left = wait_for_containers(name);
    assert!(!left.is_empty());
    child.kill().unwrap(); // SIGKILL: nothing runs its cleanup
    child.wait().unwrap();
    assert!(!containers_of(name).is_empty(), "SIGKILL should leave them");
    // Any later start that connects to the engine reaps them (their owner is gone).
    let out = Command::new(TRAWL)
        .args(["swe", "build-images", "--base-only"])
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(containers_of(name).is_empty(), "not reaped");
    assert!(snapshots_of(name).is_empty(), "snapshot images not reaped");
}

/// Runs `trawl ARGS` in `cwd`, which must succeed; returns what it printed on stderr.
fn trawl_ok(args: &[&str], cwd: &Path) -> String {
    let out = Command::new(TRAWL)
        .args(args)
        .current_dir(cwd)
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{args:?}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stderr).into_owned()
}

fn jsonl(path: &Path) -> Vec<Value> {
    std::fs::read_to_string(path)
        .unwrap_or_else(|e| panic!("{}: {e}", path.display()))
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_scored_run_exports_swe_smith_styles_preds_and_reports() {
    if !swe_images_present() {
        return;
    }
    let fixes: Vec<SweFix> = trawl_swe::instance::builtin()
        .iter()
        .enumerate()
        .map(|(i, inst)| SweFix::undoing(&inst.patch, &inst.problem_statement, i % 2 == 0))
        .collect();
    let server = ScriptedServer::start(swe_policy(fixes, SweStyle::ToolsNative))
        .await
        .unwrap();
    let dir = tempfile::tempdir().unwrap();
    let config = write_config(
        dir.path(),
        "swe-cli-export",
        &server.base_url(),
        "type = \"swe_tools\"",
    );
    trawl_ok(
        &["run", config.to_str().unwrap(), "-q", "--out", "run"],
        dir.path(),
    );
    let run = dir.path().join("run");
    // The manifest says how the episodes' sandboxes were isolated, where every environment
    // that runs commands says it.
    let manifest: Value =
        serde_json::from_slice(&std::fs::read(run.join("manifest.json")).unwrap()).unwrap();
    assert_eq!(
        manifest["environments"]["swe"]["sandbox"]["mode"], "container",
        "{manifest}"
    );
    let trawl = |args: &[&str]| trawl_ok(args, &run);
    for style in ["xml", "ticks", "tool"] {
        let file = format!("{style}.jsonl");
        trawl(&[
            "export",
            ".",
            "--format",
            "swe_smith",
            "--style",
            style,
            "--success-only",
            "-o",
            &file,
        ]);
        let lines = jsonl(&run.join(&file));
        assert_eq!(lines.len(), 3, "{style}: the three resolved instances");
        for l in &lines {
            assert_eq!(l["resolved"], true);
            assert!(l["patch"].as_str().unwrap().starts_with("diff --git"));
            for key in ["instance_id", "model", "traj_id", "messages"] {
                assert!(!l[key].is_null(), "{style}: {key}");
            }
            let msgs = l["messages"].as_array().unwrap();
            let assistant = msgs.iter().find(|m| m["role"] == "assistant").unwrap();
            match style {
                "xml" => assert!(assistant["content"]
                    .as_str()
                    .unwrap()
                    .contains("<function=str_replace_editor>")),
                "ticks" => assert!(assistant["content"]
                    .as_str()
                    .unwrap()
                    .contains("```\nstr_replace_editor view")),
                _ => {
                    assert_eq!(
                        assistant["tool_calls"][0]["function"]["name"],
                        "str_replace_editor"
                    );
                    assert_eq!(l["tools"].as_array().unwrap().len(), 3);
                }
            }
        }
    }
    trawl(&["export", ".", "--format", "preds"]);
    let preds: Value =
        serde_json::from_str(&std::fs::read_to_string(run.join("preds.json")).unwrap()).unwrap();
    let preds = preds.as_object().unwrap();
    assert_eq!(preds.len(), 6);
    for (id, p) in preds {
        assert_eq!(p["instance_id"], id.as_str());
        assert_eq!(p["model_name_or_path"], "scripted");
        assert!(p["model_patch"].is_string());
    }
    trawl(&["swe", "reports", "."]);
    let report_dir =
        run.join("logs/run_evaluation/run__swe_tools__s0/scripted/textkit__slug-strip");
    let report: Value =
        serde_json::from_str(&std::fs::read_to_string(report_dir.join("report.json")).unwrap())
            .unwrap();
    let inner = &report["textkit__slug-strip"];
    for key in [
        "patch_is_None",
        "patch_exists",
        "patch_successfully_applied",
        "resolved",
        "tests_status",
    ] {
        assert!(!inner[key].is_null(), "report.json lacks {key}");
    }
    assert!(containers_of("swe-cli-export").is_empty());
}

#[test]
fn trajectories_of_other_tools_import_once_and_export() {
    let fixtures = Path::new(env!("CARGO_MANIFEST_DIR")).join("../../shared/fixtures");
    let dir = tempfile::tempdir().unwrap();
    let run = dir.path().join("imported");
    let trawl = |args: &[&str]| trawl_ok(args, dir.path());
    let first = trawl(&["import", fixtures.to_str().unwrap(), "--into", "imported"]);
    assert!(first.contains("imported 4 trajectories"), "{first}");
    let again = trawl(&["import", fixtures.to_str().unwrap(), "--into", "imported"]);
    assert!(again.contains("imported 0 trajectories"), "{again}");
    assert_eq!(jsonl(&run.join("trajectories.jsonl")).len(), 4);

    trawl(&[
        "export",
        "imported",
        "--format",
        "swe_smith",
        "--style",
        "tool",
        "-o",
        "tool.jsonl",
    ]);
    let lines = jsonl(&dir.path().join("tool.jsonl"));
    assert_eq!(lines.len(), 4);
    // mini-swe-agent's text mode becomes tool calls too, each answered by its tool message.
    for l in &lines {
        let msgs = l["messages"].as_array().unwrap();
        let calls = msgs.iter().filter(|m| m["tool_calls"].is_array()).count();
        let results = msgs.iter().filter(|m| m["role"] == "tool").count();
        assert!(calls >= 10, "{}", l["traj_id"]);
        // Every call but a final submit is answered by its tool message.
        assert!(results + 1 >= calls, "{}", l["traj_id"]);
        assert!(!l["tools"].as_array().unwrap().is_empty());
    }
    trawl(&["export", "imported", "--format", "preds", "--best-of-n"]);
    let preds: Value =
        serde_json::from_str(&std::fs::read_to_string(run.join("preds.json")).unwrap()).unwrap();
    assert_eq!(preds.as_object().unwrap().len(), 3);
    assert!(preds["pydicom__pydicom-1458"]["model_patch"]
        .as_str()
        .unwrap()
        .contains("diff --git"));
}

/// The images are keyed by what they are built from: an image of a bundled repository whose
/// key label is not its content's is built again (and then carries the right key), and one
/// that is up to date is left as it is.
#[test]
fn an_image_built_from_other_content_is_built_again_and_a_current_one_is_kept() {
    if !swe_images_present() {
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let image = format!("trawl-test/stale-textkit:{}", std::process::id());
    // A stale image under that name: the base, whose key is not textkit's.
    let tagged = Command::new("docker")
        .args(["tag", "trawl-swe-base:latest", &image])
        .status()
        .unwrap();
    assert!(tagged.success());
    let instances = dir.path().join("instances.jsonl");
    let bundled = std::fs::read_to_string(
        Path::new(env!("CARGO_MANIFEST_DIR")).join("../environments/swe/data/instances.jsonl"),
    )
    .unwrap();
    let mut textkit: Value = serde_json::from_str(
        bundled
            .lines()
            .find(|l| l.contains("\"trawl-bench/textkit\""))
            .unwrap(),
    )
    .unwrap();
    textkit["image_name"] = Value::String(image.clone());
    std::fs::write(&instances, format!("{textkit}\n")).unwrap();
    let key = |image: &str| {
        let out = Command::new("docker")
            .args([
                "image",
                "inspect",
                image,
                "--format",
                "{{index .Config.Labels \"trawl.content-key\"}} {{.Id}}",
            ])
            .output()
            .unwrap();
        String::from_utf8_lossy(&out.stdout).trim().to_string()
    };
    let base = key("trawl-swe-base:latest");
    let args = [
        "swe",
        "build-images",
        "--instances",
        instances.to_str().unwrap(),
    ];
    let first = trawl_ok(&args, dir.path());
    assert!(first.contains("built from other content"), "{first}");
    let rebuilt = key(&image);
    let real = key("trawl-swe/textkit:latest");
    // textkit's key, on a new image (not the base's key, not the base).
    assert_eq!(
        rebuilt.split(' ').next(),
        real.split(' ').next(),
        "{rebuilt} vs {real}"
    );
    assert_ne!(rebuilt.split(' ').next(), base.split(' ').next());
    let second = trawl_ok(&args, dir.path());
    assert!(second.contains("present, up to date"), "{second}");
    assert_eq!(key(&image), rebuilt, "an up-to-date image was rebuilt");
    let _ = Command::new("docker").args(["rmi", &image]).output();
}

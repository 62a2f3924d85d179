//! Whole runs of the `code` environment against a real HTTP server on 127.0.0.1, with every
//! program run in a real sandbox: chat, chat with test feedback, tool calling with `run_python`,
//! and the two-agent coder/tester scaffold with per-agent export.

#![allow(clippy::unwrap_used)]

use std::collections::HashMap;
use std::path::Path;

use serde_json::Value;
use trawl_core::engine::{RunError, RunSummary, StopSignal};

use trawl_core::sandbox::Limit;
use trawl_core::{ExitStatus, TrajectoryRecord};
use trawl_tests::{coder_policy, ScriptedServer};

use trawl_chat as _;
use trawl_code as _;
use trawl_coder_tester as _;
use trawl_exporters as _;
use trawl_openai as _;
use trawl_sandbox_docker as _; // the `docker` sandbox kind
use trawl_sandbox_local as _; // the `local` sandbox kind the code environment runs programs in
use trawl_tool_calling as _;

fn solutions() -> HashMap<String, String> {
    trawl_code::tasks::reference_solutions(&trawl_code::tasks::builtin().unwrap())
}

fn config(base_url: &str, env: &str, scaffold: &str) -> String {
    format!(
        r#"
name = "code-test"
seed = 5
samples = 1
concurrency = 8

[[environments]]
type = "code"
{env}

[[scaffolds]]
{scaffold}

[[models]]
type = "openai"
name = "scripted"
base_url = "{base_url}"
model = "scripted"
request_timeout_secs = 20
"#
    )
}

async fn run(text: &str, dir: &Path) -> Result<RunSummary, RunError> {
    trawl_tests::run_experiment(text, dir, StopSignal::default()).await
}

/// Runs the code environment (`env` settings) with `scaffold` against the coding policy.
async fn run_code(env: &str, scaffold: &str) -> (tempfile::TempDir, Vec<TrajectoryRecord>) {
    let server = ScriptedServer::start(coder_policy(solutions()))
        .await
        .unwrap();
    let dir = tempfile::tempdir().unwrap();
    run(&config(&server.base_url(), env, scaffold), dir.path())
        .await
        .unwrap();
    let records = trawl_tests::run_records(dir.path());
    (dir, records)
}

#[tokio::test]
async fn chat_on_the_builtin_set_scores_by_tests_and_exports_only_passing_solutions() {
    let (dir, records) = run_code("", "type = \"chat\"").await;
    assert_eq!(records.len(), 35);
    for r in &records {
        let name = r.task.data["entry_point"].as_str().unwrap();
        let eval = &r.evaluations[0];
        assert_eq!(eval.evaluator, "code_tests");
        // The policy is right exactly for names of even length.
        assert_eq!(r.success, name.len() % 2 == 0, "{name}: {:?}", eval.details);
        let total = eval.components["total"];
        assert_eq!(
            total as usize,
            r.task.data["tests"].as_array().unwrap().len()
        );
        if !r.success {
            assert_eq!(r.reward, eval.components["passed"] / total);
            let tests = eval.details["tests"].as_array().unwrap();
            assert!(tests
                .iter()
                .any(|t| t["passed"] == false && t["error"].is_string()));
        }
    }
    let passing = records.iter().filter(|r| r.success).count();
    assert!(passing > 5 && passing < 30, "{passing}");

    // The SFT export holds the passing solutions and nothing else.
    let lines = trawl_tests::export_lines(&records, "openai", serde_json::json!({}), true);
    assert_eq!(lines.len(), passing);
    for l in &lines {
        assert_eq!(l["success"], true);
        assert_eq!(l["reward"], 1.0);
    }

    // The manifest says how the code ran.
    let manifest: Value =
        serde_json::from_slice(&std::fs::read(dir.path().join("run/manifest.json")).unwrap())
            .unwrap();
    let sandbox = &manifest["environments"]["code"]["sandbox"];
    assert!(
        sandbox["mode"] == "namespaces" || sandbox["mode"] == "process",
        "{manifest}"
    );
    if std::env::var_os("TRAWL_REQUIRE_BWRAP").is_some() {
        assert_eq!(sandbox["mode"], "namespaces");
        assert_eq!(sandbox["network_isolated"], true);
    }
}

#[tokio::test]
async fn with_feedback_a_second_turn_fixes_a_failing_answer() {
    let (_dir, records) = run_code(
        "feedback = true\nlimit = 6",
        "type = \"chat\"\nmax_turns = 2",
    )
    .await;
    assert_eq!(records.len(), 6);
    for r in &records {
        let name = r.task.data["entry_point"].as_str().unwrap();
        assert!(r.success, "{name}");
        let users: Vec<&str> = r
            .messages
            .iter()
            .filter(|m| m.role == trawl_core::MessageRole::User)
            .map(|m| m.text())
            .collect();
        if name.len() % 2 == 1 {
            // Wrong first, shown the failing tests, right second.
            assert_eq!(users.len(), 2, "{name}");
            assert!(users[1].contains("FAILED: assert"), "{}", users[1]);
            assert_eq!(r.steps.len(), 2);
        } else {
            assert_eq!(users.len(), 1, "{name}");
            assert_eq!(r.steps[0].observation, "All tests passed.");
        }
    }
}

#[tokio::test]
async fn tool_calling_runs_python_in_the_episode_sandbox() {
    let (_dir, records) = run_code("limit = 4", "type = \"tool_calling\"").await;
    assert_eq!(records.len(), 4);
    for r in &records {
        let name = r.task.data["entry_point"].as_str().unwrap();
        assert_eq!(r.outcome.exit_status, ExitStatus::Submitted);
        assert_eq!(r.tools[0].name(), "run_python");
        let step = &r.steps[0];
        assert_eq!(step.exit_code, Some(0), "{}", step.observation);
        assert!(
            step.observation.contains(&format!("defined {name}")),
            "{}",
            step.observation
        );
        assert_eq!(r.success, name.len() % 2 == 0);
    }
}

#[tokio::test]
async fn coder_and_tester_take_turns_and_export_separately() {
    let (_dir, records) = run_code("limit = 6", "type = \"coder_tester\"\nmax_turns = 2").await;
    assert_eq!(records.len(), 6);
    for r in &records {
        let name = r.task.data["entry_point"].as_str().unwrap();
        assert_eq!(trawl_core::agents(&r.messages), vec!["coder", "tester"]);
        let generated = r.outcome.artifacts["generated_tests"].as_array().unwrap();
        assert!(!generated.is_empty(), "{name}");
        let eval = &r.evaluations[0];
        // The tester copied the problem's asserts: the reference solution passes all of them.
        assert_eq!(eval.components["reward.tester"], 1.0, "{:?}", eval.details);
        // A wrong first program fails the tester's tests, is fixed on the second turn.
        assert!(r.success, "{name}: {:?}", eval.details);
        let coder_turns = r
            .messages
            .iter()
            .filter(|m| {
                m.agent.as_deref() == Some("coder") && m.role == trawl_core::MessageRole::Assistant
            })
            .count();
        assert_eq!(
            coder_turns,
            if name.len() % 2 == 1 { 2 } else { 1 },
            "{name}"
        );
    }

    let all = trawl_tests::export_lines(&records, "turns", serde_json::json!({}), false);
    let coder = trawl_tests::export_lines(
        &records,
        "turns",
        serde_json::json!({"agent": "coder"}),
        false,
    );
    let tester = trawl_tests::export_lines(
        &records,
        "turns",
        serde_json::json!({"agent": "tester"}),
        false,
    );
    assert_eq!(all.len(), coder.len() + tester.len());
    for l in &coder {
        assert_eq!(l["metadata"]["agent_name"], "coder");
        assert_eq!(l["metadata"]["agent_idx"], 0);
        let prompt = l["messages"][0]["content"].as_str().unwrap();
        assert!(!prompt.contains("Write tests for this problem"), "{prompt}");
    }
    for l in &tester {
        assert_eq!(l["metadata"]["agent_name"], "tester");
        assert_eq!(l["metadata"]["agent_idx"], 1);
        assert_eq!(l["metadata"]["reward"], 1.0);
        assert!(l["messages"][1]["content"]
            .as_str()
            .unwrap()
            .contains("assert "));
    }
    // The chat export of one agent is that agent's conversation alone.
    let chats = trawl_tests::export_lines(
        &records,
        "openai",
        serde_json::json!({"agent": "tester"}),
        false,
    );
    assert_eq!(chats.len(), records.len());
    for c in &chats {
        assert!(c["messages"][0]["content"]
            .as_str()
            .unwrap()
            .contains("software tester"));
        assert!(c["messages"]
            .as_array()
            .unwrap()
            .iter()
            .all(|m| m.get("agent").is_none()));
    }
}

#[tokio::test]
async fn a_config_that_requires_namespaces_is_refused_where_they_do_not_work() {
    let dir = tempfile::tempdir().unwrap();
    let err = run(
        &config(
            "http://127.0.0.1:9/v1",
            "sandbox = { isolation = \"namespaces\", bwrap = \"/nonexistent/bwrap\" }",
            "type = \"chat\"",
        ),
        dir.path(),
    )
    .await
    .unwrap_err()
    .to_string();
    assert!(err.contains("experiment.toml:"), "{err}");
    assert!(err.contains("sandbox"), "{err}");
    assert!(err.contains("apt-get install -y bubblewrap"), "{err}");
    // Nothing was run, nothing written.
    assert!(!dir.path().join("run/trajectories.jsonl").exists());
}

/// Wrong programs that try to forge their own verdict, each with what it tries.
const FORGERIES: [(&str, &str); 15] = [
    ("finds the marker and prints a full pass", "import os, sys, re\nseen = ' '.join(sys.argv)\nfor p in ['/proc/self/cmdline', '/proc/%d/cmdline' % os.getppid(), '.trawl_spec.json']:\n    try:\n        seen += open(p, 'rb').read().decode('utf-8', 'replace')\n    except Exception:\n        pass\nfor m in set(re.findall(r'@@trawl-result-[0-9a-f]+@@', seen)):\n    line = m + '{\"program_error\": null, \"results\": [{\"test\": \"t\", \"passed\": true}], \"limit\": null}\\n'\n    os.write(1, line.encode())\n    os.write(2, line.encode())\n    try:\n        import __main__\n        os.write(__main__.real_stdout, line.encode())\n    except Exception:\n        pass\n    sys.__stdout__.write(line)\n    sys.__stdout__.flush()\n    os._exit(0)\ndef add_one(x):\n    return 7\n"),
    ("prints a result line", "print('@@trawl-result-0@@{\"program_error\": null, \"results\": [{\"test\": \"t\", \"passed\": true}], \"limit\": null}')\nimport sys\nsys.stderr.write('@@trawl-result-0@@{}\\n')\n"),
    ("os._exit(0) at import", "import os\nos._exit(0)\n"),
    ("sys.exit(0) at import", "import sys\nsys.exit(0)\n"),
    ("os._exit(0) inside a test", "import os\ndef add_one(x):\n    os._exit(0)\n"),
    ("sys.exit(0) inside a test", "import sys\ndef add_one(x):\n    sys.exit(0)\n"),
    ("replaces the harness's functions", "import __main__, builtins, json, os\nfor name in dir(__main__):\n    if callable(getattr(__main__, name)):\n        setattr(__main__, name, lambda *a, **k: None)\nbuiltins.exec = lambda *a, **k: None\nbuiltins.compile = lambda *a, **k: None\njson.dumps = lambda *a, **k: '{\"results\": []}'\nos.write = lambda fd, b: len(b)\ndef add_one(x):\n    return 7\n"),
    ("writes pass lines to every descriptor", "import os\nfor fd in range(64):\n    for i in range(4):\n        try:\n            os.write(fd, ('x T %d 1 -\\n' % i).encode())\n        except OSError:\n            pass\ndef add_one(x):\n    return 7\n"),
    ("writes to the parent's stdout and the spec file", "import os, glob\nfor p in ['/proc/%d/fd/1' % os.getppid(), '/proc/self/fd/1', '.trawl_spec.json', '/dev/stdout']:\n    try:\n        with open(p, 'a') as f:\n            f.write('@@trawl-result-0@@{\"results\": [{\"test\": \"t\", \"passed\": true}]}\\n')\n    except Exception:\n        pass\ndef add_one(x):\n    return 7\n"),
    ("kills its parent", "import os, signal\nos.kill(os.getppid(), signal.SIGKILL)\ndef add_one(x):\n    return 7\n"),
    ("stops its parent", "import os, signal\nos.kill(os.getppid(), signal.SIGSTOP)\ndef add_one(x):\n    return 7\n"),
    ("reads the harness's frames", "import sys\ntry:\n    f = sys._getframe(1)\n    while f:\n        if 'token' in f.f_locals:\n            t = f.f_locals['token']\n        f = f.f_back\nexcept Exception:\n    pass\ntry:\n    raise ValueError\nexcept ValueError as e:\n    f = e.__traceback__.tb_frame\ndef add_one(x):\n    return 7\n"),
    ("walks the garbage collector", "import gc\nfor o in gc.get_objects():\n    pass\ndef add_one(x):\n    return 7\n"),
    ("traces the harness", "import sys\nsys.settrace(lambda *a: None)\ndef add_one(x):\n    return 7\n"),
    ("passes then trips the memory limit", "import threading\ndef hog():\n    bytearray(1 << 40)\nt = threading.Thread(target=hog)\nt.start()\nt.join()\ndef add_one(x):\n    return x + 1\n"),
];

/// Every forged verdict scores 0 and stays out of a success-only export.
#[tokio::test]
async fn programs_that_forge_their_verdict_score_zero() {
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(
        dir.path().join("tasks.jsonl"),
        r#"{"task_id": "inc", "text": "Write add_one(x) returning x + 1.", "code": "def add_one(x):\n    return x + 1", "test_list": ["assert add_one(1) == 2", "assert add_one(2) == 3", "assert add_one(-1) == 0"]}"#,
    )
    .unwrap();
    let next = std::sync::Arc::new(std::sync::atomic::AtomicUsize::new(0));
    let server = ScriptedServer::start(std::sync::Arc::new(move |_: &Value| {
        let i = next.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
        let (_, program) = FORGERIES[i % FORGERIES.len()];
        trawl_tests::Reply::text(format!("```python\n{program}```"))
    }))
    .await
    .unwrap();
    let text = config(
        &server.base_url(),
        "files = [\"tasks.jsonl\"]\nper_test_timeout_secs = 2\nlimits = { wall_time_secs = 10 }",
        "type = \"chat\"",
    )
    .replace("samples = 1", &format!("samples = {}", FORGERIES.len()));
    run(&text, dir.path()).await.unwrap();
    let records = trawl_tests::run_records(dir.path());
    assert_eq!(records.len(), FORGERIES.len());
    for r in &records {
        let program = r.outcome.submission.as_deref().unwrap_or_default();
        let (what, _) = FORGERIES
            .iter()
            .find(|(_, p)| program.contains(p.trim_end()))
            .unwrap();
        let eval = &r.evaluations[0];
        assert_eq!(r.outcome.exit_status, ExitStatus::Submitted, "{what}");
        assert!(!r.success, "{what}: {:?}", eval.details);
        if *what == "passes then trips the memory limit" {
            // Every test passed, but the run ran into the limit: recorded, and no success.
            assert_eq!(eval.components["passed"], 3.0, "{what}");
            assert_eq!(eval.components["limit_exceeded"], 1.0, "{what}");
            assert_eq!(eval.details["outcome"]["limit"], "memory", "{what}");
        } else {
            assert_eq!(r.reward, 0.0, "{what}: {:?}", eval.details);
            assert_eq!(eval.components["passed"], 0.0, "{what}");
        }
    }
    let lines = trawl_tests::export_lines(&records, "openai", serde_json::json!({}), true);
    assert!(lines.is_empty(), "{lines:?}");
}

include!("../programs/caught/list.rs");

/// Correct programs that first run into a limit and catch it (issue 32): each is recorded with
/// the limit it ran into (`limit_exceeded`, `outcome.limit`) and is no success; a config that
/// tolerates that limit (`success_despite_limits = [...]`) counts it a success again.
#[tokio::test]
async fn a_correct_program_that_caught_a_limit_is_no_success_unless_tolerated() {
    let programs = CAUGHT.map(|(_, program, arg, limit)| (limit.as_str(), program, arg));
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(
        dir.path().join("tasks.jsonl"),
        r#"{"task_id": "inc", "text": "Write add_one(x) returning x + 1.", "code": "def add_one(x):\n    return x + 1", "test_list": ["assert add_one(1) == 2", "assert add_one(-1) == 0"]}"#,
    )
    .unwrap();
    let answers: Vec<String> = programs
        .iter()
        .map(|(_, program, arg)| {
            format!("import sys\nsys.argv = ['prog', '{arg}']\n{program}\ndef add_one(x):\n    return x + 1\n")
        })
        .collect();
    let next = std::sync::Arc::new(std::sync::atomic::AtomicUsize::new(0));
    let server = ScriptedServer::start(std::sync::Arc::new(move |_: &Value| {
        let i = next.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
        trawl_tests::Reply::text(format!("```python\n{}```", answers[i % answers.len()]))
    }))
    .await
    .unwrap();
    for tolerated in ["false", r#"["processes", "disk"]"#] {
        let run_dir = dir.path().join(format!("tolerating-{}", tolerated.len()));
        std::fs::create_dir(&run_dir).unwrap();
        std::fs::copy(dir.path().join("tasks.jsonl"), run_dir.join("tasks.jsonl")).unwrap();
        let env = format!(
            "files = [\"tasks.jsonl\"]\nper_test_timeout_secs = 20\nlimits = {{ wall_time_secs = 60, memory_mb = 512, processes = 32, file_size_mb = 1024 }}\nsandbox = {{ type = \"local\", workdir_mb = 128 }}\nsuccess_despite_limits = {tolerated}"
        );
        let text = config(&server.base_url(), &env, "type = \"chat\"")
            .replace("samples = 1", "samples = 5")
            .replace("concurrency = 8", "concurrency = 1");
        run(&text, &run_dir).await.unwrap();
        let records = trawl_tests::run_records(&run_dir);
        assert_eq!(records.len(), programs.len());
        for r in &records {
            let program = r.outcome.submission.as_deref().unwrap_or_default();
            let (limit, _, arg) = programs
                .iter()
                .find(|(_, p, a)| {
                    program.contains(p.trim_end()) && program.contains(&format!("'{a}'"))
                })
                .unwrap();
            let eval = &r.evaluations[0];
            let what = format!("{limit} ({arg}), tolerating {tolerated}");
            assert_eq!(
                eval.components["limit_exceeded"], 1.0,
                "{what}: {:?}",
                eval.details
            );
            assert_eq!(eval.details["outcome"]["limit"], *limit, "{what}");
            // An OOM kill cannot be caught, and a program past the working folder's cap is
            // stopped: their tests go unreported. The others caught their limit and passed.
            let passed = *limit != "memory" && !program.contains("100 files of 32 MiB");
            assert_eq!(
                eval.components["passed"] == 2.0,
                passed,
                "{what}: {:?}",
                eval.details
            );
            assert_eq!(r.success, passed && tolerated.contains(limit), "{what}");
        }
    }
}

/// Time that runs out while the agent's own program runs is the agent's outcome
/// (`TimeExceeded`, scored), unlike time that runs out waiting on the model server.
#[tokio::test]
async fn time_spent_in_the_agents_own_actions_is_time_exceeded() {
    let server = ScriptedServer::start(std::sync::Arc::new(|_: &Value| {
        trawl_tests::Reply::ToolCall {
            name: "run_python".into(),
            arguments: serde_json::json!({"code": "import time\ntime.sleep(30)"}).to_string(),
        }
    }))
    .await
    .unwrap();
    let dir = tempfile::tempdir().unwrap();
    let text = config(
        &server.base_url(),
        "limit = 2\nlimits = { wall_time_secs = 60 }",
        "type = \"tool_calling\"",
    )
    .replace("samples = 1", "samples = 1\nepisode_timeout_secs = 1.5");
    let summary = run(&text, dir.path()).await.unwrap();
    assert_eq!(summary.infra_errors, 0);
    let records = trawl_tests::run_records(dir.path());
    assert_eq!(records.len(), 2);
    for r in &records {
        assert_eq!(r.outcome.exit_status, ExitStatus::TimeExceeded);
        assert!(r.is_final() && !r.success);
    }
}

/// The sandbox is a role: the same environment and evaluator run their programs in Docker
/// containers (the SWE base image's Python) when the config names the `docker` kind, and score
/// exactly as in the local sandbox; every container is gone afterwards.
#[tokio::test]
async fn the_code_environment_runs_in_docker_containers_through_the_sandbox_role() {
    if !trawl_tests::swe_images_present() {
        return;
    }
    let env = "limit = 6\npython = \"/usr/bin/python3\"\nsandbox = { type = \"docker\", image = \"trawl-swe/textkit:latest\" }";
    let (dir, records) = run_code(env, "type = \"chat\"").await;
    assert_eq!(records.len(), 6);
    for r in &records {
        let name = r.task.data["entry_point"].as_str().unwrap();
        let eval = &r.evaluations[0];
        assert_eq!(eval.evaluator, "code_tests");
        assert_eq!(r.success, name.len() % 2 == 0, "{name}: {:?}", eval.details);
        assert_eq!(
            eval.components["total"] as usize,
            r.task.data["tests"].as_array().unwrap().len()
        );
    }
    let manifest: Value =
        serde_json::from_slice(&std::fs::read(dir.path().join("run/manifest.json")).unwrap())
            .unwrap();
    let sandbox = &manifest["environments"]["code"]["sandbox"];
    assert_eq!(sandbox["sandbox"], "docker", "{manifest}");
    assert_eq!(sandbox["image"], "trawl-swe/textkit:latest");
    assert!(
        trawl_tests::containers_of("code-test").is_empty(),
        "containers left behind"
    );
}

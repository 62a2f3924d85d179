//! The `trawl` binary as a user runs it: a real process against a real scripted server on
//! 127.0.0.1, killed with SIGKILL mid-run and resumed, then `stats` and `export` checked record
//! by record.

#![allow(clippy::unwrap_used)] // tests: a failed unwrap is a failed test

use std::collections::{HashMap, HashSet};
use std::path::Path;
use std::process::{Command, Stdio};
use std::sync::Arc;
use std::time::{Duration, Instant};

use serde_json::Value;
use trawl_tests::{adder_policy, Reply, ScriptedServer};

mod common;
use common::{json_file, jsonl, trawl, trawl_ok, TRAWL};

fn write_config(dir: &Path, base_url: &str, body: &str) -> std::path::PathBuf {
    let model = common::mock_model(base_url, "max_attempts = 3, initial_backoff_secs = 0.01");
    let text = format!(
        r#"name = "cli"
seed = 11
{body}
{model}"#
    );
    let path = dir.join("exp.toml");
    std::fs::write(&path, text).unwrap();
    path
}

const MATH_CHAT: &str = r#"samples = 2
concurrency = 4

[[environments]]
type = "math"
generator = { count = 60, levels = [1, 2] }

[[scaffolds]]
type = "chat"
system_prompt = "Answer concisely."
"#;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sigkill_then_resume_loses_nothing_and_repeats_nothing() {
    let server = ScriptedServer::start(Arc::new(|b| {
        Reply::Delayed(Duration::from_millis(60), Box::new(adder_policy(b)))
    }))
    .await
    .unwrap();
    let dir = tempfile::tempdir().unwrap();
    write_config(dir.path(), &server.base_url(), MATH_CHAT);
    let traj = dir.path().join("runs/cli/trajectories.jsonl");

    let mut child = Command::new(TRAWL)
        .args(["run", "exp.toml", "--quiet"])
        .current_dir(dir.path())
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let t = Instant::now();
    loop {
        let lines = std::fs::read_to_string(&traj)
            .map(|s| s.lines().count())
            .unwrap_or(0);
        if lines >= 25 {
            break;
        }
        assert!(
            t.elapsed() < Duration::from_secs(60),
            "run made no progress"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    child.kill().unwrap(); // SIGKILL
    let status = child.wait().unwrap();
    assert!(!status.success());
    let requests_before = server.requests().len();

    // What was completely written before the kill must survive untouched.
    let text = std::fs::read_to_string(&traj).unwrap();
    let complete: Vec<&str> = text
        .split_inclusive('\n')
        .filter(|l| l.ends_with('\n'))
        .map(|l| l.trim_end())
        .collect();
    assert!(
        complete.len() >= 25 && complete.len() < 120,
        "{} lines",
        complete.len()
    );
    let done_seeds: HashSet<u64> = complete
        .iter()
        .map(|l| {
            serde_json::from_str::<Value>(l).unwrap()["provenance"]["seed"]
                .as_u64()
                .unwrap()
        })
        .collect();

    let out = trawl(&["run", "exp.toml", "--quiet"], dir.path());
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        stderr.contains(&format!("{} skipped as already done", complete.len())),
        "{stderr}"
    );

    let records = jsonl(&traj);
    assert_eq!(records.len(), 120, "every key has exactly one record");
    let keys: HashSet<String> = records.iter().map(|r| r["key"].to_string()).collect();
    assert_eq!(keys.len(), 120, "duplicate keys after resume");
    let final_text = std::fs::read_to_string(&traj).unwrap();
    for line in &complete {
        assert!(
            final_text.contains(line),
            "a record completed before the kill was rewritten or lost"
        );
    }
    // Nothing that completed was sent to the model again.
    let rerun_seeds: Vec<u64> = server.requests()[requests_before..]
        .iter()
        .map(|b| b["seed"].as_u64().unwrap())
        .collect();
    assert_eq!(rerun_seeds.len(), 120 - complete.len());
    assert!(
        rerun_seeds.iter().all(|s| !done_seeds.contains(s)),
        "a completed rollout was re-run"
    );

    // stats --json agrees with the records.
    let out = trawl(&["stats", "runs/cli", "--json"], dir.path());
    assert!(out.status.success());
    let stats: Value = serde_json::from_slice(&out.stdout).unwrap();
    let successes = records.iter().filter(|r| r["success"] == true).count() as u64;
    assert_eq!(stats["finished"], 120);
    assert_eq!(stats["groups"][0]["successes"], successes);
    assert_eq!(stats["groups"][0]["tasks"], 60);
    assert!(
        stats["groups"][0]["pass_at_k"]["2"].as_f64().unwrap()
            >= stats["groups"][0]["pass_at_k"]["1"].as_f64().unwrap()
    );
    assert!(
        successes > 0 && successes < 120,
        "want both outcomes, got {successes}"
    );

    check_exports(dir.path(), &records);
}

fn check_exports(dir: &Path, records: &[Value]) {
    let by_id: HashMap<String, &Value> = records
        .iter()
        .map(|r| {
            let k = &r["key"];
            (
                format!(
                    "{}/{}/{}/{}#{}",
                    k["environment"].as_str().unwrap(),
                    k["scaffold"].as_str().unwrap(),
                    k["model"].as_str().unwrap(),
                    k["task"].as_str().unwrap(),
                    k["sample"]
                ),
                r,
            )
        })
        .collect();
    let successes = records.iter().filter(|r| r["success"] == true).count();

    // openai, successful only: the messages are the record's, tools included.
    let out = trawl(
        &[
            "export",
            "runs/cli",
            "--format",
            "openai",
            "--success-only",
            "-o",
            "sft.jsonl",
        ],
        dir,
    );
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let lines = jsonl(&dir.join("sft.jsonl"));
    assert_eq!(lines.len(), successes);
    for l in &lines {
        let r = by_id[l["id"].as_str().unwrap()];
        assert_eq!(l["messages"], r["messages"]);
        assert_eq!(l["tools"], r["tools"]);
        assert_eq!(l["success"], true);
        assert_eq!(l["reward"], 1.0);
    }
    let stats: Value =
        serde_json::from_slice(&std::fs::read(dir.join("sft_stats.json")).unwrap()).unwrap();
    assert_eq!(stats["total_collected"], successes);
    assert_eq!(stats["total_episodes"], 120);
    assert_eq!(stats["dropped"]["not_successful"], 120 - successes);

    // sharegpt, best of n: one per task, alternating turns.
    let out = trawl(
        &[
            "export",
            "runs/cli",
            "--format",
            "sharegpt",
            "--best-of-n",
            "-o",
            "sg.jsonl",
        ],
        dir,
    );
    assert!(out.status.success());
    let lines = jsonl(&dir.join("sg.jsonl"));
    assert_eq!(lines.len(), 60);
    let tasks: HashSet<&str> = lines
        .iter()
        .map(|l| l["task_id"].as_str().unwrap())
        .collect();
    assert_eq!(tasks.len(), 60);
    for l in &lines {
        let r = by_id[l["id"].as_str().unwrap()];
        let conv = l["conversations"].as_array().unwrap();
        assert_eq!(conv[0]["from"], "human");
        assert_eq!(conv[0]["value"], r["messages"][1]["content"]);
        assert_eq!(conv[1]["from"], "gpt");
        assert_eq!(conv[1]["value"], r["messages"][2]["content"]);
        assert_eq!(l["system"], "Answer concisely.");
        assert!(serde_json::from_str::<Vec<Value>>(l["tools"].as_str().unwrap()).is_ok());
        // Best of n keeps a success whenever the task has one.
        let task_has_success = records
            .iter()
            .any(|x| x["key"]["task"] == l["task_id"] && x["success"] == true);
        assert_eq!(l["success"].as_bool().unwrap(), task_has_success);
    }

    // turns, with a held-out task list: one line per assistant turn, PettingLLMs metadata.
    std::fs::write(dir.join("held_out.txt"), "# held out\ngen-L1-0\ngen-L2-0\n").unwrap();
    let out = trawl(
        &[
            "export",
            "runs/cli",
            "--format",
            "turns",
            "--exclude-tasks",
            "held_out.txt",
            "-o",
            "turns.jsonl",
        ],
        dir,
    );
    assert!(out.status.success());
    let lines = jsonl(&dir.join("turns.jsonl"));
    assert_eq!(lines.len(), 116);
    for l in &lines {
        let m = &l["metadata"];
        for k in [
            "agent_name",
            "policy_name",
            "reward",
            "env_success",
            "timestamp",
            "env_name",
            "env_idx",
            "rollout_idx",
            "turn_idx",
            "agent_idx",
        ] {
            assert!(m.get(k).is_some(), "metadata lacks {k}");
        }
        assert!(m["env_idx"] != "gen-L1-0" && m["env_idx"] != "gen-L2-0");
        assert_eq!(l["messages"][0]["role"], "user");
        assert_eq!(l["messages"][1]["role"], "assistant");
    }
    let stats: Value =
        serde_json::from_slice(&std::fs::read(dir.join("turns_stats.json")).unwrap()).unwrap();
    assert_eq!(stats["dropped"]["excluded_task"], 4);
    assert_eq!(stats["total_sft_examples"], 116);

    // max per task
    let out = trawl(
        &[
            "export",
            "runs/cli",
            "--max-per-task",
            "1",
            "--min-reward",
            "0",
            "-o",
            "one.jsonl",
        ],
        dir,
    );
    assert!(out.status.success());
    assert_eq!(jsonl(&dir.join("one.jsonl")).len(), 60);

    let out = trawl(&["export", "runs/cli", "--format", "nope"], dir);
    assert_eq!(out.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&out.stderr).contains(
        "formats: dpo, grpo, openai, preds, sharegpt, swe_smith, tokens, trajectory, turns, verl"
    ));
    // A flag with a fixed set of values refuses the rest, listing them (exit 2, bad input);
    // `md` is markdown.
    for (args, values) in [
        (
            ["stats", "runs/cli", "--format", "yaml"],
            "[possible values: text, markdown, csv, json]",
        ),
        (
            ["diff", "runs/cli", "--format", "csv"],
            "[possible values: text, markdown, json]",
        ),
    ] {
        let out = trawl(&args, dir);
        assert_eq!(out.status.code(), Some(2), "{args:?}");
        let err = String::from_utf8_lossy(&out.stderr);
        assert!(err.contains(values), "{args:?}: {err}");
    }
    let out = trawl_ok(&["stats", "runs/cli", "--format", "md"], dir);
    assert!(String::from_utf8_lossy(&out.stdout).starts_with("| environment |"));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn tool_calling_export_keeps_tool_schemas_and_calls() {
    let server = ScriptedServer::start(Arc::new(adder_policy)).await.unwrap();
    let dir = tempfile::tempdir().unwrap();
    let body = "samples = 1\n[[environments]]\ntype = \"math\"\ncalculator = true\ngenerator = { count = 6, levels = [1] }\n\n[[scaffolds]]\ntype = \"tool_calling\"\n";
    write_config(dir.path(), &server.base_url(), body);
    let out = trawl(&["run", "exp.toml"], dir.path());
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    for format in ["openai", "sharegpt"] {
        let out = trawl(
            &[
                "export",
                "runs/cli",
                "--format",
                format,
                "-o",
                &format!("{format}.jsonl"),
            ],
            dir.path(),
        );
        assert!(out.status.success());
    }
    for l in jsonl(&dir.path().join("openai.jsonl")) {
        assert_eq!(l["tools"][0]["function"]["name"], "calculator");
        assert_eq!(
            l["messages"][1]["tool_calls"][0]["function"]["name"],
            "calculator"
        );
        assert_eq!(l["messages"][2]["role"], "tool");
    }
    for l in jsonl(&dir.path().join("sharegpt.jsonl")) {
        let froms: Vec<&str> = l["conversations"]
            .as_array()
            .unwrap()
            .iter()
            .map(|t| t["from"].as_str().unwrap())
            .collect();
        assert_eq!(froms, ["human", "function_call", "observation", "gpt"]);
        let tools: Vec<Value> = serde_json::from_str(l["tools"].as_str().unwrap()).unwrap();
        assert_eq!(tools[0]["name"], "calculator");
    }
}

/// The `tools` environment as a user runs it: an agent model and a user model on two
/// OpenAI-compatible servers, `trawl stats` with pass^k and sub-rewards, and an SFT export of
/// whole conversations with their tool calls and tool schemas.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_tools_run_with_an_llm_user_reports_pass_hat_k_and_exports_whole_conversations() {
    // The user model plays whichever task its system prompt describes.
    let user = ScriptedServer::start(Arc::new(|body: &Value| {
        let system = body["messages"][0]["content"].as_str().unwrap_or("");
        if trawl_tests::assistant_turns(body) > 0 {
            return Reply::text("Thanks, that's all. ###STOP###");
        }
        Reply::text(if system.contains("'Dune' is due back") {
            "When is my copy of Dune due? I'm Eli Haddad, eli.haddad@example.com."
        } else {
            "I'm Ben Okafor, account M001. Renew The Left Hand of Darkness."
        })
    }))
    .await
    .unwrap();
    // The agent answers the due date properly, but renews for the impostor (against the policy).
    let agent = ScriptedServer::start(Arc::new(|body: &Value| {
        let dune = trawl_tests::first_user_message(body).contains("Dune");
        let (name, args, text) = if dune {
            (
                "get_loan",
                r#"{"loan_id":"L005"}"#,
                "Your copy of Dune is due on 2026-03-22.",
            )
        } else {
            ("renew_loan", r#"{"loan_id":"L001"}"#, "Renewed.")
        };
        if trawl_tests::assistant_turns(body) == 0 {
            Reply::ToolCall {
                name: name.into(),
                arguments: args.into(),
            }
        } else {
            Reply::text(text)
        }
    }))
    .await
    .unwrap();
    let dir = tempfile::tempdir().unwrap();
    let body = format!(
        r#"samples = 2
[[environments]]
type = "tools"
tasks = ["lib-013", "lib-018"]
user = {{ type = "llm", model = {{ type = "openai", base_url = "{}", model = "user" }} }}

[[scaffolds]]
type = "tool_calling"
"#,
        user.base_url()
    );
    write_config(dir.path(), &agent.base_url(), &body);
    let out = trawl(&["run", "exp.toml"], dir.path());
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );

    let out = trawl(&["stats", "runs/cli"], dir.path());
    let stats = String::from_utf8_lossy(&out.stdout);
    assert!(
        stats.contains("environment=tools scaffold=tool_calling model=mock"),
        "{stats}"
    );
    assert!(
        stats.contains("pass^k          ^1 0.500  ^2 0.500"),
        "{stats}"
    );
    assert!(
        stats.contains("sub-rewards  action 1.000, communicate 1.000, db 0.500"),
        "{stats}"
    );

    let out = trawl(
        &[
            "export",
            "runs/cli",
            "--format",
            "openai",
            "--success-only",
            "-o",
            "sft.jsonl",
        ],
        dir.path(),
    );
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let lines = jsonl(&dir.path().join("sft.jsonl"));
    assert_eq!(lines.len(), 2, "the two successful rollouts");
    for l in &lines {
        assert_eq!(l["tools"].as_array().unwrap().len(), 14);
        let roles: Vec<&str> = l["messages"]
            .as_array()
            .unwrap()
            .iter()
            .map(|m| m["role"].as_str().unwrap())
            .collect();
        assert_eq!(roles, ["system", "user", "assistant", "tool", "assistant"]);
        assert_eq!(
            l["messages"][2]["tool_calls"][0]["function"]["name"],
            "get_loan"
        );
        assert!(l["messages"][3]["content"]
            .as_str()
            .unwrap()
            .contains("2026-03-22"));
    }
}

#[test]
fn a_malformed_config_names_file_line_and_field_and_exits_2() {
    let dir = tempfile::tempdir().unwrap();
    let path = write_config(dir.path(), "http://127.0.0.1:9/v1", MATH_CHAT);
    let text = std::fs::read_to_string(&path)
        .unwrap()
        .replace("max_tokens = 64", "max_tokens = \"many\"");
    std::fs::write(&path, &text).unwrap();
    let line = text.lines().position(|l| l.contains("max_tokens")).unwrap() + 1;
    for cmd in ["run", "check"] {
        let out = trawl(&[cmd, "exp.toml"], dir.path());
        assert_eq!(out.status.code(), Some(2), "{cmd}");
        let err = String::from_utf8_lossy(&out.stderr);
        assert!(err.contains(&format!("exp.toml:{line}:")), "{cmd}: {err}");
        assert!(
            err.contains("field `models[0].sampling.max_tokens`"),
            "{cmd}: {err}"
        );
        assert!(
            err.contains("invalid type: string \"many\""),
            "{cmd}: {err}"
        );
    }
    assert!(
        !dir.path().join("runs").exists(),
        "a bad config must not create a run"
    );
}

#[test]
fn a_malformed_task_file_names_file_line_and_field_and_exits_2() {
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(dir.path().join("gsm.jsonl"), "{\"question\": \"1+1?\", \"answer\": \"1+1=2\\n#### 2\"}\n{\"question\": [\"x\"], \"answer\": \"#### 3\"}\n").unwrap();
    let body = "[[environments]]\ntype = \"math\"\nfiles = [\"gsm.jsonl\"]\n\n[[scaffolds]]\ntype = \"chat\"\n";
    write_config(dir.path(), "http://127.0.0.1:9/v1", body);
    let out = trawl(&["run", "exp.toml"], dir.path());
    assert_eq!(out.status.code(), Some(2));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains("gsm.jsonl:2: field `question`: expected a string, found an array"),
        "{err}"
    );
}

#[test]
fn every_command_has_help_and_plugins_lists_every_role() {
    let dir = tempfile::tempdir().unwrap();
    for cmd in [
        vec!["--help"],
        vec!["run", "--help"],
        vec!["check", "--help"],
        vec!["stats", "--help"],
        vec!["export", "--help"],
        vec!["plugins", "--help"],
    ] {
        let out = trawl(&cmd, dir.path());
        assert!(out.status.success(), "{cmd:?}");
        assert!(
            String::from_utf8_lossy(&out.stdout).contains("Usage:"),
            "{cmd:?}"
        );
    }
    let out = trawl(&["plugins"], dir.path());
    let text = String::from_utf8_lossy(&out.stdout);
    for needle in [
        "environments:",
        "math ",
        "scaffolds:",
        "chat ",
        "tool_calling ",
        "evaluators:",
        "math_answer ",
        "exporters:",
        "sharegpt ",
        "models:",
        "openai ",
        "sandboxes:",
        "docker ",
        "local ",
    ] {
        assert!(text.contains(needle), "plugins lacks {needle}: {text}");
    }
    let out = trawl(&["stats", "nowhere"], dir.path());
    assert_eq!(out.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&out.stderr).contains("is it a trawl run directory"));
}

/// The HumanEval example, cut to its first three problems, on the embedded model: real
/// HumanEval, real llama.cpp, real sandboxes, and an SFT export of the passing solutions only.
#[test]
fn the_humaneval_example_runs_on_the_embedded_model() {
    let dir = tempfile::tempdir().unwrap();
    let example = Path::new(env!("CARGO_MANIFEST_DIR")).join("../examples/code-humaneval.toml");
    let text = std::fs::read_to_string(example)
        .unwrap()
        .replace("# limit = 20 ", "limit = 3   ");
    assert!(text.contains("\nlimit = 3"));
    std::fs::write(dir.path().join("he.toml"), text).unwrap();
    let out = trawl(&["run", "he.toml", "--out", "run"], dir.path());
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let records = jsonl(&dir.path().join("run/trajectories.jsonl"));
    assert_eq!(records.len(), 3);
    for r in &records {
        assert!(r["task"]["id"].as_str().unwrap().starts_with("HumanEval/"));
        assert_eq!(r["outcome"]["exit_status"], "Submitted", "{}", r["outcome"]);
        let eval = &r["evaluations"][0];
        assert_eq!(eval["evaluator"], "code_tests");
        assert!(eval["components"]["total"].as_f64().unwrap() >= 1.0);
        assert!(eval["details"]["program"].is_string());
        assert_eq!(
            r["success"],
            eval["components"]["passed"] == eval["components"]["total"]
        );
    }
    let manifest: Value = serde_json::from_str(
        &std::fs::read_to_string(dir.path().join("run/manifest.json")).unwrap(),
    )
    .unwrap();
    let sandbox = &manifest["environments"]["code"]["sandbox"];
    assert!(sandbox["mode"].is_string());
    // The run says which limits its sandboxes see even when a program catches them.
    let seen = sandbox["caught_limits_seen"].as_array().unwrap();
    assert!(seen.iter().any(|l| l == "disk"), "{sandbox}");
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("caught limits seen: "), "{err}");
    let out = trawl(
        &[
            "export",
            "run",
            "--format",
            "openai",
            "--success-only",
            "--output",
            "sft.jsonl",
        ],
        dir.path(),
    );
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let exported = std::fs::read_to_string(dir.path().join("sft.jsonl")).unwrap();
    let passing = records.iter().filter(|r| r["success"] == true).count();
    assert_eq!(exported.lines().count(), passing);
    for l in exported.lines() {
        let v: Value = serde_json::from_str(l).unwrap();
        assert_eq!(v["success"], true);
    }
}

/// No command writes over a run's own files; exports refuse an existing file unless `--force`,
/// and a refused or failed export leaves nothing half-written.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn exports_never_overwrite_a_run_and_refuse_existing_files() {
    let server = ScriptedServer::start(Arc::new(adder_policy)).await.unwrap();
    let dir = tempfile::tempdir().unwrap();
    let config = write_config(
        dir.path(),
        &server.base_url(),
        &MATH_CHAT.replace("count = 60", "count = 10"),
    );
    let out = trawl(
        &["run", config.to_str().unwrap(), "--out", "run", "--quiet"],
        dir.path(),
    );
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let run = dir.path().join("run");
    let snapshot = |name: &str| std::fs::read(run.join(name)).unwrap();
    let own = ["trajectories.jsonl", "manifest.json", "config.toml"];
    let before: Vec<Vec<u8>> = own.iter().map(|f| snapshot(f)).collect();

    // Aimed at the run's own files, by path and through a symbolic link, with --force too.
    std::os::unix::fs::symlink(
        run.join("trajectories.jsonl"),
        dir.path().join("link.jsonl"),
    )
    .unwrap();
    for target in [
        "run/trajectories.jsonl",
        "run/manifest.json",
        "run/config.toml",
        "run/attempts.jsonl",
        "./run/../run/trajectories.jsonl",
        "link.jsonl",
    ] {
        for force in [false, true] {
            let mut args = vec!["export", "run", "-o", target];
            if force {
                args.push("--force");
            }
            let out = trawl(&args, dir.path());
            let err = String::from_utf8_lossy(&out.stderr);
            assert_eq!(out.status.code(), Some(2), "{target} force={force}: {err}");
            assert!(err.contains("refusing to write"), "{err}");
        }
    }
    for (f, b) in own.iter().zip(&before) {
        assert_eq!(&snapshot(f), b, "{f} changed");
    }
    assert!(!run.join("attempts.jsonl").exists());

    // A new file is written; the same again is refused unless --force.
    let out = trawl(&["export", "run", "-o", "sft.jsonl"], dir.path());
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let first = std::fs::read(dir.path().join("sft.jsonl")).unwrap();
    let out = trawl(
        &["export", "run", "-o", "sft.jsonl", "--success-only"],
        dir.path(),
    );
    assert_eq!(out.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&out.stderr).contains("already exists"));
    assert_eq!(std::fs::read(dir.path().join("sft.jsonl")).unwrap(), first);
    let out = trawl(
        &[
            "export",
            "run",
            "-o",
            "sft.jsonl",
            "--success-only",
            "--force",
        ],
        dir.path(),
    );
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );

    // A failed export (its folder cannot be made: a file is in the way) leaves no half file and
    // no temporary file behind.
    let names = |d: &Path| -> Vec<String> {
        let mut v: Vec<String> = std::fs::read_dir(d)
            .unwrap()
            .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
            .collect();
        v.sort();
        v
    };
    let listing = names(dir.path());
    let out = trawl(
        &["export", "run", "-o", "sft.jsonl/folder/x.jsonl"],
        dir.path(),
    );
    assert!(!out.status.success());
    assert_eq!(names(dir.path()), listing);
    assert_eq!(
        names(&run).iter().filter(|n| n.contains("partial")).count(),
        0
    );
}

/// A model server that never answers ends the run with exit code 3, and no rollout is scored
/// as the model's failure.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_server_that_hangs_for_the_whole_run_exits_3() {
    let server = ScriptedServer::scripted(vec![Reply::Hang]).await.unwrap();
    let dir = tempfile::tempdir().unwrap();
    let config = write_config(
        dir.path(),
        &server.base_url(),
        &format!(
            "episode_timeout_secs = 0.5\n{}",
            MATH_CHAT.replace("count = 60", "count = 3")
        ),
    );
    let out = trawl(
        &["run", config.to_str().unwrap(), "--out", "run", "--quiet"],
        dir.path(),
    );
    assert_eq!(
        out.status.code(),
        Some(3),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let records = jsonl(&dir.path().join("run/trajectories.jsonl"));
    assert_eq!(records.len(), 6);
    assert!(records
        .iter()
        .all(|r| r["outcome"]["exit_status"] == "InfraError"
            && r["outcome"]["error"]["kind"] == "model_timeout"));
}

/// A model table without `base_url` and `api_key_env` takes `OPENAI_BASE_URL` and
/// `OPENAI_API_KEY`, as the OpenAI SDKs do; without either, the error names the field.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn openai_base_url_and_api_key_come_from_the_environment() {
    let server = ScriptedServer::start(Arc::new(adder_policy)).await.unwrap();
    let dir = tempfile::tempdir().unwrap();
    let config = dir.path().join("env.toml");
    std::fs::write(
        &config,
        r#"name = "env"
[[environments]]
type = "math"
generator = { count = 2, levels = [1] }
[[scaffolds]]
type = "chat"
[[models]]
type = "openai"
model = "m"
"#,
    )
    .unwrap();
    let run = |vars: &[(&str, String)]| {
        let mut cmd = Command::new(TRAWL);
        cmd.args(["run", "env.toml", "--out", "run", "--quiet"])
            .current_dir(dir.path())
            .env_remove("OPENAI_BASE_URL")
            .env_remove("OPENAI_API_KEY")
            .stdin(Stdio::null());
        for (k, v) in vars {
            cmd.env(k, v);
        }
        cmd.output().unwrap()
    };
    let out = run(&[]);
    assert_eq!(out.status.code(), Some(2));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains("models[0].base_url") && err.contains("OPENAI_BASE_URL"),
        "{err}"
    );

    let out = run(&[
        ("OPENAI_BASE_URL", server.base_url()),
        ("OPENAI_API_KEY", "sk-from-env".into()),
    ]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let requests = server.requests();
    assert_eq!(requests.len(), 2);
    assert!(requests
        .iter()
        .all(|r| r["_authorization"] == "Bearer sk-from-env"));
}

/// Peak resident memory of a process (VmHWM), polled until it exits; with its exit status.
fn run_measuring_peak(mut cmd: Command) -> (std::process::ExitStatus, u64) {
    let mut child = cmd.spawn().unwrap();
    let status_file = format!("/proc/{}/status", child.id());
    let mut peak_kib = 0u64;
    loop {
        if let Ok(text) = std::fs::read_to_string(&status_file) {
            if let Some(kib) = text
                .lines()
                .find_map(|l| l.strip_prefix("VmHWM:"))
                .and_then(|v| v.trim().trim_end_matches("kB").trim().parse::<u64>().ok())
            {
                peak_kib = peak_kib.max(kib);
            }
        }
        if let Some(status) = child.try_wait().unwrap() {
            return (status, peak_kib * 1024);
        }
        std::thread::sleep(Duration::from_millis(20));
    }
}

/// Four 1 GiB response bodies (one with its length declared, one chunked) are refused at the
/// cap: trawl's memory stays bounded, the run stays small, and the rollouts are infrastructure
/// errors, so the run fails with exit 3.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn one_gib_response_bodies_are_refused_at_the_cap() {
    let calls = Arc::new(std::sync::atomic::AtomicU64::new(0));
    let c = calls.clone();
    let server = ScriptedServer::start(Arc::new(move |_| Reply::Flood {
        bytes: 1 << 30,
        declare_length: c
            .fetch_add(1, std::sync::atomic::Ordering::SeqCst)
            .is_multiple_of(2),
    }))
    .await
    .unwrap();
    let dir = tempfile::tempdir().unwrap();
    let config = write_config(
        dir.path(),
        &server.base_url(),
        &MATH_CHAT.replace("count = 60", "count = 2").replace(
            "concurrency = 4",
            "concurrency = 4\nmax_infra_error_rate = 1.0",
        ),
    );
    let mut cmd = Command::new(TRAWL);
    cmd.args(["run", config.to_str().unwrap(), "--out", "run", "--quiet"])
        .current_dir(dir.path())
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::null());
    let (status, peak) = run_measuring_peak(cmd);
    eprintln!("peak RSS under 1 GiB bodies: {} MiB", peak >> 20);
    assert_eq!(status.code(), Some(3));
    assert!(peak < 512 << 20, "peak RSS {} MiB", peak >> 20);
    let data = dir.path().join("run/trajectories.jsonl");
    assert!(std::fs::metadata(&data).unwrap().len() < 1 << 20);
    let records = jsonl(&data);
    assert_eq!(records.len(), 4);
    for r in &records {
        assert_eq!(r["outcome"]["exit_status"], "InfraError");
        let message = r["outcome"]["error"]["message"].as_str().unwrap();
        assert!(message.contains("max_response_bytes"), "{message}");
    }
}

/// Damaged data files are never silently counted: glued records, trailing garbage, bytes that
/// are not UTF-8 and a repeated rollout are refused by `stats`, `export` and resume with file
/// and line, or left out and listed under `--skip-bad-lines`.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn damaged_trajectory_lines_are_reported_with_file_and_line() {
    let server = ScriptedServer::start(Arc::new(adder_policy)).await.unwrap();
    let dir = tempfile::tempdir().unwrap();
    let config = write_config(
        dir.path(),
        &server.base_url(),
        &MATH_CHAT.replace("count = 60", "count = 5"),
    );
    let out = trawl(
        &["run", config.to_str().unwrap(), "--out", "run", "--quiet"],
        dir.path(),
    );
    assert!(out.status.success());
    let data = dir.path().join("run/trajectories.jsonl");
    let good = std::fs::read(&data).unwrap();
    let lines: Vec<&[u8]> = good
        .split(|b| *b == b'\n')
        .filter(|l| !l.is_empty())
        .collect();
    assert_eq!(lines.len(), 10);
    let join = |ls: &[Vec<u8>]| -> Vec<u8> {
        let mut v = ls.join(&b'\n');
        v.push(b'\n');
        v
    };
    let owned: Vec<Vec<u8>> = lines.iter().map(|l| l.to_vec()).collect();
    let mut cases: Vec<(&str, Vec<u8>, usize, &str)> = Vec::new();
    // Lines 1 and 2 glued into one.
    let mut glued = owned.clone();
    let second = glued.remove(1);
    glued[0].extend_from_slice(&second);
    cases.push(("glued", join(&glued), 1, "glued"));
    // Garbage after the record on line 3.
    let mut garbage = owned.clone();
    garbage[2].extend_from_slice(b" xyz");
    cases.push(("garbage", join(&garbage), 3, "trailing garbage"));
    // A byte that is not UTF-8 inside a string on line 2.
    let mut bytes = owned.clone();
    let at = bytes[1]
        .windows(9)
        .position(|w| w == b"\"schema\":")
        .unwrap()
        + 11;
    bytes[1].insert(at, 0xff);
    cases.push(("not utf-8", join(&bytes), 2, "not UTF-8"));
    // Line 1 repeated at the end.
    let mut dup = owned.clone();
    dup.push(owned[0].clone());
    cases.push((
        "duplicate",
        join(&dup),
        11,
        "already has a record, on line 1",
    ));

    for (what, content, line, needle) in cases {
        std::fs::write(&data, &content).unwrap();
        let at = format!("trajectories.jsonl:{line}:");
        for args in [vec!["stats", "run"], vec!["export", "run", "-o", "x.jsonl"]] {
            let out = trawl(&args, dir.path());
            let err = String::from_utf8_lossy(&out.stderr);
            assert_eq!(out.status.code(), Some(2), "{what} {args:?}: {err}");
            assert!(
                err.contains(&at) && err.contains(needle),
                "{what} {args:?}: {err}"
            );
        }
        assert!(!dir.path().join("x.jsonl").exists());
        let out = trawl(&["stats", "run", "--json", "--skip-bad-lines"], dir.path());
        assert!(out.status.success(), "{what}");
        let err = String::from_utf8_lossy(&out.stderr);
        assert!(
            err.contains("left out 1 damaged line") && err.contains(&at),
            "{what}: {err}"
        );
        let stats: Value = serde_json::from_slice(&out.stdout).unwrap();
        // What is left once the damaged line is out.
        let expected = match what {
            "glued" => 8,
            "duplicate" => 10,
            _ => 9,
        };
        assert_eq!(stats["finished"], expected, "{what}");
        if what != "duplicate" {
            // Resume refuses too, and leaves the file as it was.
            let out = trawl(
                &["run", config.to_str().unwrap(), "--out", "run", "--quiet"],
                dir.path(),
            );
            assert_eq!(out.status.code(), Some(2), "{what}");
            assert!(String::from_utf8_lossy(&out.stderr).contains(&at));
            assert_eq!(std::fs::read(&data).unwrap(), content);
        }
    }
}

#[test]
fn grace_secs_out_of_range_is_refused_not_a_panic() {
    let dir = tempfile::tempdir().unwrap();
    let config = write_config(dir.path(), "http://127.0.0.1:9/v1", MATH_CHAT);
    for bad in ["inf", "nan", "-1", "1e300"] {
        let out = trawl(
            &[
                "run",
                config.to_str().unwrap(),
                "--grace-secs",
                bad,
                "--quiet",
            ],
            dir.path(),
        );
        let err = String::from_utf8_lossy(&out.stderr);
        assert_eq!(out.status.code(), Some(2), "{bad}: {err}");
        assert!(
            err.contains("--grace-secs must be a number of seconds"),
            "{err}"
        );
        assert!(!err.contains("panicked"), "{err}");
    }
}

/// The RL formats from the binary: groups written and counted, `--set` reaching the format, a
/// bad setting refused naming it, verl's Parquet in place.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn rl_formats_export_groups_and_count_what_they_leave_out() {
    let answers = trawl_tests::generated_answers(11, &[1, 2], 8);
    let server = ScriptedServer::start(Arc::new(move |body: &Value| {
        trawl_tests::seeded_math_policy(&answers, body)
    }))
    .await
    .unwrap();
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    let body = "samples = 4\n\n[[environments]]\ntype = \"math\"\ngenerator = { count = 8, levels = [1, 2] }\n\n[[scaffolds]]\ntype = \"chat\"\n";
    write_config(d, &server.base_url(), body);
    trawl_ok(&["run", "exp.toml", "--quiet"], d);
    let run = "runs/cli";

    let out = trawl(&["export", run, "--format", "grpo"], d);
    let said = String::from_utf8_lossy(&out.stderr).to_string();
    assert!(out.status.success(), "{said}");
    let stats = json_file(&d.join(run).join("export-grpo_stats.json"));
    let groups = jsonl(&d.join(run).join("export-grpo.jsonl")).len() as u64;
    let zero = stats["counts"]["groups_zero_variance"]
        .as_u64()
        .unwrap_or(0);
    assert!(groups > 0 && groups + zero == 8, "{stats}");
    assert!(said.contains(&format!("groups: {groups}")), "{said}");

    // A margin no pair of 0/1 rewards reaches: every task is counted below it, none paired.
    trawl_ok(
        &[
            "export",
            run,
            "--format",
            "dpo",
            "--set",
            "min_margin=1.5",
            "-o",
            "dpo.jsonl",
        ],
        d,
    );
    let stats = json_file(&d.join("dpo_stats.json"));
    assert_eq!(
        stats["counts"]["tasks_below_margin"].as_u64(),
        Some(groups),
        "{stats}"
    );
    assert_eq!(std::fs::read_to_string(d.join("dpo.jsonl")).unwrap(), "");

    let out = trawl(
        &[
            "export",
            run,
            "--format",
            "dpo",
            "--set",
            "min_margin=-1",
            "-o",
            "bad.jsonl",
        ],
        d,
    );
    let said = String::from_utf8_lossy(&out.stderr).to_string();
    assert_eq!(out.status.code(), Some(2), "{said}");
    assert!(said.contains("min_margin"), "{said}");
    assert!(!d.join("bad.jsonl").exists());
    let out = trawl(
        &[
            "export", run, "--format", "openai", "--set", "nonsense", "-o", "x.jsonl",
        ],
        d,
    );
    assert_eq!(out.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&out.stderr).contains("KEY=VALUE"));

    // Hygiene: a held-out copy of one task's question removes that task's rollouts; exact
    // dedup keeps one rollout per distinct reply of a task (this model writes two).
    let records = jsonl(&d.join(run).join("trajectories.jsonl"));
    let held_out_question = records[0]["task"]["data"]["question"]
        .as_str()
        .unwrap()
        .to_string();
    let question_words = trawl_core::hygiene::words(&held_out_question)
        .len()
        .to_string();
    let same_task = records
        .iter()
        .filter(|r| r["task"]["id"] == records[0]["task"]["id"])
        .count();
    std::fs::write(
        d.join("test.jsonl"),
        format!("{}\n", serde_json::json!({"question": held_out_question})),
    )
    .unwrap();
    trawl_ok(
        &[
            "export",
            run,
            "--format",
            "openai",
            "--dedup",
            "exact",
            "--decontaminate",
            "test.jsonl",
            // Generated questions are short and share phrases: the whole question is the
            // n-gram, not the default 13 words.
            "--decontaminate-ngram",
            &question_words,
            "-o",
            "clean.jsonl",
        ],
        d,
    );
    let stats = json_file(&d.join("clean_stats.json"));
    assert_eq!(
        stats["dropped"]["contaminated"].as_u64(),
        Some(same_task as u64),
        "{stats}"
    );
    let kept = jsonl(&d.join("clean.jsonl"));
    let mut distinct = HashSet::new();
    for r in &records {
        if r["task"]["id"] != records[0]["task"]["id"] {
            distinct.insert((
                r["task"]["id"].to_string(),
                r["messages"].as_array().unwrap().last().unwrap()["content"].to_string(),
            ));
        }
    }
    assert_eq!(
        kept.len(),
        distinct.len(),
        "one per distinct reply of each task"
    );
    assert_eq!(
        stats["dropped"]["duplicate"].as_u64().unwrap() as usize,
        records.len() - same_task - distinct.len()
    );
    // The card beside it names the run, the config's hash, the selection and every count.
    let card = std::fs::read_to_string(d.join("clean_card.md")).unwrap();
    let config_hash = trawl_core::fetch::sha256_file(&d.join(run).join("config.toml")).unwrap();
    for needle in [
        "data_files: clean.jsonl".to_string(),
        config_hash,
        "trawl.trajectory/1".to_string(),
        format!("| dropped: duplicate | {} |", stats["dropped"]["duplicate"]),
        format!("| dropped: contaminated | {same_task} |"),
        "\"dedup\"".to_string(),
        "test.jsonl".to_string(),
    ] {
        assert!(card.contains(&needle), "missing {needle} in\n{card}");
    }
    // A second export to the same place is refused, card included, and leaves them as they were.
    let out = trawl(
        &["export", run, "--format", "openai", "-o", "clean.jsonl"],
        d,
    );
    assert_eq!(out.status.code(), Some(2));
    assert_eq!(
        std::fs::read_to_string(d.join("clean_card.md")).unwrap(),
        card
    );

    trawl_ok(
        &["export", run, "--format", "verl", "--set", "split=test"],
        d,
    );
    let parquet = std::fs::read(d.join(run).join("export-verl.parquet")).unwrap();
    assert!(parquet.starts_with(b"PAR1") && parquet.ends_with(b"PAR1"));
}

/// Without a terminal, a run prints plain progress lines at an interval, to stderr and to
/// `--log-file`, with no colour codes.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn headless_runs_print_plain_progress_lines_and_log_to_a_file() {
    let server = ScriptedServer::start(Arc::new(|body: &Value| {
        Reply::Delayed(Duration::from_millis(40), Box::new(adder_policy(body)))
    }))
    .await
    .unwrap();
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    write_config(
        d,
        &server.base_url(),
        MATH_CHAT.replace("count = 60", "count = 20").as_str(),
    );
    let out = trawl(
        &[
            "-v",
            "run",
            "exp.toml",
            "--progress-secs",
            "0.1",
            "--log-file",
            "trawl.log",
        ],
        d,
    );
    let err = String::from_utf8_lossy(&out.stderr).to_string();
    assert!(out.status.success(), "{err}");
    let lines: Vec<&str> = err.lines().filter(|l| l.starts_with("progress ")).collect();
    assert!(lines.len() >= 2, "{err}");
    let last = lines.last().unwrap();
    for needle in [
        "progress 40/40 (100.0%)",
        "success ",
        "mean reward ",
        "infra errors 0",
        "rollouts/s",
        "left ",
    ] {
        assert!(last.contains(needle), "missing {needle:?} in {last}");
    }
    assert!(
        !err.contains('\u{1b}'),
        "no colour codes without a terminal"
    );
    let log = std::fs::read_to_string(d.join("trawl.log")).unwrap();
    assert!(log.contains("progress 40/40"), "{log}");
    assert!(log.contains("INFO"), "log lines go to the file too: {log}");
    assert!(!log.contains('\u{1b}'));
    // A bad interval is refused, naming the flag.
    let out = trawl(&["run", "exp.toml", "--progress-secs", "0"], d);
    assert_eq!(out.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&out.stderr).contains("--progress-secs"));
}

/// `trawl show` renders a rollout as a conversation: tool calls and results, the ending and the
/// evaluators; filters choose which; without a terminal there are no colour codes.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn show_renders_rollouts_as_conversations() {
    let server = ScriptedServer::start(Arc::new(adder_policy)).await.unwrap();
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    let body = "samples = 2\n\n[[environments]]\ntype = \"math\"\ncalculator = true\ngenerator = { count = 4, levels = [1] }\n\n[[scaffolds]]\ntype = \"tool_calling\"\nmax_steps = 3\n";
    write_config(d, &server.base_url(), body);
    assert!(trawl(&["run", "exp.toml", "--quiet"], d).status.success());
    let records = jsonl(&d.join("runs/cli/trajectories.jsonl"));
    let task = records[0]["task"]["id"].as_str().unwrap().to_string();

    let out = trawl(&["show", "runs/cli", "--task", &task, "-n", "5"], d);
    let text = String::from_utf8_lossy(&out.stdout).to_string();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert_eq!(
        text.matches("══ math/tool_calling/mock/").count(),
        2,
        "{text}"
    );
    for needle in [
        "[0] user",
        "[1] assistant",
        "call calculator {\"expression\":",
        "[2] tool → call_1",
        "evaluator math_answer: ",
        "exit Submitted",
        "tools: calculator",
    ] {
        assert!(text.contains(needle), "missing {needle:?} in\n{text}");
    }
    assert!(
        !text.contains('\u{1b}'),
        "no colour codes without a terminal"
    );

    // A jq filter, and nothing matching: exit 2 with what was read.
    let out = trawl(&["show", "runs/cli", "--where", ".success", "-n", "100"], d);
    let shown = String::from_utf8_lossy(&out.stdout).matches("══ ").count();
    let successes = records.iter().filter(|r| r["success"] == true).count();
    assert_eq!(shown, successes);
    let out = trawl(&["show", "runs/cli", "--task", "no-such-task"], d);
    assert_eq!(out.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&out.stderr).contains("no rollout of runs/cli matches"));
}

/// `trawl report` writes one self-contained HTML file: no network reference, charts as inline
/// SVG, the numbers of `trawl stats --json` embedded and shown, a second run compared; an
/// existing file is refused.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn report_is_one_offline_html_file_with_the_stats_numbers() {
    let server = ScriptedServer::start(Arc::new(adder_policy)).await.unwrap();
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    write_config(d, &server.base_url(), MATH_CHAT);
    trawl_ok(&["run", "exp.toml", "--quiet"], d);
    trawl_ok(
        &[
            "report",
            "runs/cli",
            "runs/cli/trajectories.jsonl",
            "-o",
            "r.html",
        ],
        d,
    );
    let html = std::fs::read_to_string(d.join("r.html")).unwrap();
    assert!(html.starts_with("<!doctype html>"));
    for forbidden in ["http://", "https://", "<link", "src="] {
        assert!(
            !html.contains(forbidden),
            "the report must not load {forbidden}"
        );
    }
    assert!(
        html.matches("<svg").count() >= 6,
        "pass curves and distributions"
    );
    assert!(html.matches("<polyline").count() >= 2 && html.contains("<rect"));
    // The embedded numbers are `trawl stats --json`'s.
    let stats: Value =
        serde_json::from_slice(&trawl_ok(&["stats", "runs/cli", "--json"], d).stdout).unwrap();
    let start = html
        .find("id=\"trawl-stats\" type=\"application/json\">")
        .unwrap();
    let json = &html[start..];
    let json = &json[json.find('>').unwrap() + 1..json.find("</script>").unwrap()];
    let embedded: Value = serde_json::from_str(json).unwrap();
    assert_eq!(embedded[0], stats);
    let g = &stats["groups"][0];
    assert!(html.contains(&format!("data-successes=\"{}\"", g["successes"])));
    assert!(
        html.contains("vs runs/cli/trajectories.jsonl"),
        "two runs are compared"
    );
    let out = trawl(&["report", "runs/cli", "-o", "r.html"], d);
    assert_eq!(out.status.code(), Some(2));
}

/// Reviewers' labels as a selection: `--labels accepted` keeps what a reviewer accepted,
/// `--labels` (not-rejected) leaves out what one rejected; the last decision per rollout counts;
/// a missing or damaged labels file is an error that says what to do.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn export_labels_keep_what_reviewers_accepted_and_drop_what_they_rejected() {
    let server = ScriptedServer::start(Arc::new(adder_policy)).await.unwrap();
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    let body = "samples = 2\n[[environments]]\ntype = \"math\"\ngenerator = { count = 5, levels = [1] }\n\n[[scaffolds]]\ntype = \"chat\"\n";
    write_config(d, &server.base_url(), body);
    trawl_ok(&["run", "exp.toml", "--quiet"], d);
    let records = jsonl(&d.join("runs/cli/trajectories.jsonl"));
    assert_eq!(records.len(), 10);

    let out = trawl(&["export", "runs/cli", "-o", "x.jsonl", "--labels"], d);
    assert_eq!(out.status.code(), Some(2));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains("labels.jsonl") && err.contains("trawl view"),
        "{err}"
    );

    let label = |i: usize, verdict: &str| {
        format!(
            "{{\"key\": {}, \"verdict\": \"{verdict}\", \"note\": \"n{i}\", \"at\": \"2026-11-24T00:00:00Z\"}}\n",
            records[i]["key"]
        )
    };
    let labels = [
        label(0, "accept"),
        label(1, "reject"),
        label(2, "accept"),
        label(2, "clear"),
        label(3, "reject"),
        label(3, "accept"),
    ]
    .concat();
    std::fs::write(d.join("runs/cli/labels.jsonl"), &labels).unwrap();

    trawl_ok(
        &[
            "export",
            "runs/cli",
            "-o",
            "accepted.jsonl",
            "--labels",
            "accepted",
        ],
        d,
    );
    assert_eq!(jsonl(&d.join("accepted.jsonl")).len(), 2);
    let stats = json_file(&d.join("accepted_stats.json"));
    assert_eq!(stats["dropped"]["rejected_by_reviewer"], 1, "{stats}");
    assert_eq!(stats["dropped"]["not_accepted"], 7, "{stats}");
    trawl_ok(&["export", "runs/cli", "-o", "kept.jsonl", "--labels"], d);
    assert_eq!(jsonl(&d.join("kept.jsonl")).len(), 9);

    let out = trawl(
        &[
            "export", "runs/cli", "-o", "y.jsonl", "--labels", "approved",
        ],
        d,
    );
    assert_eq!(out.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&out.stderr).contains("`accepted`"));

    std::fs::write(
        d.join("runs/cli/labels.jsonl"),
        format!(
            "{labels}{{\"key\": {}, \"verdict\": \"ok\", \"at\": \"x\"}}\n",
            records[4]["key"]
        ),
    )
    .unwrap();
    let out = trawl(&["export", "runs/cli", "-o", "z.jsonl", "--labels"], d);
    assert_eq!(out.status.code(), Some(2));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("labels.jsonl:7: field `verdict`"), "{err}");
    assert!(!d.join("z.jsonl").exists());
}

/// A record an older trawl wrote with `"reward": null` (its sum overflowed to infinity) is read
/// as an infrastructure error, named by file and line: `stats`, `export`, `show` and `report`
/// leave it out and say so, and a resume moves it aside and runs the rollout again.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_null_reward_on_disk_is_read_as_an_infrastructure_error_and_re_run() {
    let server = ScriptedServer::start(Arc::new(adder_policy)).await.unwrap();
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    let config = write_config(
        d,
        &server.base_url(),
        &MATH_CHAT.replace("count = 60", "count = 5"),
    );
    let config = config.to_str().unwrap();
    trawl_ok(&["run", config, "--out", "run", "--quiet"], d);
    let data = d.join("run/trajectories.jsonl");
    let mut records = jsonl(&data);
    assert_eq!(records.len(), 10);
    let exported = |d: &Path| {
        trawl_ok(&["export", "run", "-o", "x.jsonl", "--force"], d);
        std::fs::read_to_string(d.join("x.jsonl"))
            .unwrap()
            .lines()
            .count()
    };
    let before = exported(d);
    // Line 3 in the legacy shape: the record's reward and its evaluation's are null.
    let planted = records
        .iter()
        .position(|r| r["success"] == true)
        .expect("a successful rollout");
    let line = planted + 1;
    let key = records[planted]["key"].clone();
    records[planted]["reward"] = Value::Null;
    records[planted]["evaluations"][0]["reward"] = Value::Null;
    let text: String = records
        .iter()
        .map(|r| format!("{}\n", serde_json::to_string(r).unwrap()))
        .collect();
    assert!(text.contains("\"reward\":null"));
    std::fs::write(&data, &text).unwrap();
    let at = format!("trajectories.jsonl:{line}: rollout ");

    let out = trawl_ok(&["stats", "run", "--json"], d);
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains(&at)
            && err.contains("`reward` is not a finite number (NaN, or `null` on disk)")
            && err.contains("read as an infrastructure error"),
        "{err}"
    );
    let stats: Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(stats["finished"], 9, "{stats}");
    assert_eq!(stats["infra_errors"], 1, "{stats}");
    assert_eq!(
        exported(d),
        before - 1,
        "the planted success is not exported"
    );
    for args in [
        vec!["show", "run", "-n", "20"],
        vec!["report", "run", "-o", "r.html"],
        vec!["stats", "run"],
    ] {
        let out = trawl_ok(&args, d);
        let err = String::from_utf8_lossy(&out.stderr);
        assert!(err.contains(&at), "{args:?}: {err}");
    }

    // A resume moves the line aside, says why, and runs the rollout again.
    let out = trawl_ok(&["run", config, "--out", "run", "--quiet"], d);
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains("re-ran 1 interrupted or failed rollout(s)")
            && err.contains("resume: ")
            && err.contains(&at),
        "{err}"
    );
    let after = jsonl(&data);
    assert_eq!(after.len(), 10);
    let again = after.iter().find(|r| r["key"] == key).unwrap();
    assert_eq!(again["outcome"]["exit_status"], "Submitted", "{again}");
    assert!(again["reward"].is_f64(), "{again}");
    let attempts = std::fs::read_to_string(d.join("run/attempts.jsonl")).unwrap();
    assert!(attempts.contains("\"reward\":null"), "{attempts}");
    let out = trawl_ok(&["stats", "run", "--json"], d);
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(!err.contains("read as an infrastructure error"), "{err}");
}

//! The OpenEnv environment as a user meets it: a real `openenv-core` 0.3 server
//! (`examples/openenv/guess_env.py`, a Python environment) on 127.0.0.1, the real `trawl`
//! binary, a scripted model server, then `trawl export`. Servers that die, hang, answer garbage
//! or fail inside their step make infrastructure errors, never the model's failures.

#![allow(clippy::unwrap_used)] // tests: a failed unwrap is a failed test

use std::path::Path;
use std::process::Output;
use std::sync::Arc;

use serde_json::Value;
use trawl_tests::{OpenEnvServer, Reply, ScriptedServer};

const TRAWL: &str = env!("CARGO_BIN_EXE_trawl");

fn trawl(args: &[&str], cwd: &Path) -> Output {
    trawl_tests::run_bin(TRAWL, args, cwd, &[])
}

fn text(o: &Output) -> String {
    trawl_tests::printed(o)
}

/// Writes `config` as `name.toml`, runs it (it must succeed), and returns its records by task id
/// and what trawl printed.
fn run(dir: &Path, name: &str, config: &str) -> (Vec<Value>, String) {
    let (o, records) = run_any(dir, name, config);
    let out = text(&o);
    assert!(o.status.success(), "{out}");
    (records, out)
}

/// [`run`], whatever the run's exit status.
fn run_any(dir: &Path, name: &str, config: &str) -> (Output, Vec<Value>) {
    std::fs::write(dir.join(format!("{name}.toml")), config).unwrap();
    let o = trawl(&["run", &format!("{name}.toml"), "--quiet"], dir);
    let mut records: Vec<Value> =
        std::fs::read_to_string(dir.join("runs").join(name).join("trajectories.jsonl"))
            .unwrap()
            .lines()
            .map(|l| serde_json::from_str(l).unwrap())
            .collect();
    records.sort_by_key(|r| r["key"]["task"].as_str().unwrap().to_string());
    (o, records)
}

fn model(base_url: &str) -> String {
    format!("[[models]]\ntype = \"openai\"\nname = \"mock\"\nbase_url = \"{base_url}\"\nmodel = \"mock\"\n")
}

/// Guesses by halving the range the feedback leaves: 5 first, then the middle of what is left.
fn halving(body: &Value) -> Reply {
    let messages = body["messages"].as_array().cloned().unwrap_or_default();
    let (mut lo, mut hi) = (1, 10);
    let mut last_guess = None;
    for m in &messages {
        let content = m["content"].as_str().unwrap_or_default();
        match m["role"].as_str() {
            Some("assistant") => last_guess = content.trim().parse::<i64>().ok(),
            Some("user") => match (last_guess, content) {
                (Some(g), c) if c.starts_with("Higher") => lo = g + 1,
                (Some(g), c) if c.starts_with("Lower") => hi = g - 1,
                _ => {}
            },
            _ => {}
        }
    }
    Reply::text(((lo + hi) / 2).to_string())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_python_environment_over_openenv_runs_to_both_outcomes_and_an_export() {
    let env = OpenEnvServer::start(4);
    let llm = ScriptedServer::start(Arc::new(halving)).await.unwrap();
    let dir = tempfile::tempdir().unwrap();
    let config = format!(
        r#"name = "guess"
seed = 1

[[environments]]
type = "openenv"
servers = ["{}"]
sessions_per_server = 4
seeds = 6
action_field = "guess"
observation_field = "prompt"
instruction = "Play the guessing game. Answer with a number only."

[[scaffolds]]
type = "chat"
max_turns = 3

{}"#,
        env.base_url(),
        model(&llm.base_url())
    );
    let (records, _) = run(dir.path(), "guess", &config);
    assert_eq!(records.len(), 6);
    // Targets (seed * 7 + 3) % 10 + 1: 4, 1, 8, 5, 2, 9. Halving finds all but 4 in three tries.
    let expected = [
        ("seed-0", false, 3),
        ("seed-1", true, 3),
        ("seed-2", true, 2),
        ("seed-3", true, 1),
        ("seed-4", true, 2),
        ("seed-5", true, 3),
    ];
    for (r, (task, success, steps)) in records.iter().zip(expected) {
        assert_eq!(r["key"]["task"], task);
        assert_eq!(r["outcome"]["exit_status"], "Submitted", "{r}");
        assert_eq!(r["success"], success, "{r}");
        let steps_taken = r["steps"].as_array().unwrap();
        assert_eq!(steps_taken.len(), steps, "{r}");
        // The server's reward of each step is on the step, and the evaluation is the last one.
        let rewards: Vec<f64> = steps_taken
            .iter()
            .map(|s| s["reward"].as_f64().unwrap())
            .collect();
        assert_eq!(
            rewards.last().copied(),
            Some(if success { 1.0 } else { 0.0 })
        );
        let eval = &r["evaluations"][0];
        assert_eq!(eval["evaluator"], "openenv_reward");
        assert_eq!(eval["reward"], if success { 1.0 } else { 0.0 });
        assert_eq!(eval["components"]["done"], 1.0);
        // The opening is the instruction and the first observation's prompt; the server's own
        // state comes back as an artifact.
        let opening = r["messages"][0]["content"].as_str().unwrap();
        assert!(
            opening.starts_with("Play the guessing game.")
                && opening.contains("You have 3 guesses")
        );
        assert_eq!(
            r["outcome"]["artifacts"]["state"]["step_count"], steps,
            "{r}"
        );
    }
    assert_eq!(records[0]["messages"][2]["content"], "Lower.");

    let o = trawl(
        &[
            "export",
            "runs/guess",
            "--format",
            "openai",
            "--success-only",
        ],
        dir.path(),
    );
    assert!(o.status.success(), "{}", text(&o));
    let sft = std::fs::read_to_string(dir.path().join("runs/guess/export-openai.jsonl")).unwrap();
    assert_eq!(sft.lines().count(), 5);
    let o = trawl(&["stats", "runs/guess"], dir.path());
    let stats = text(&o);
    assert!(o.status.success(), "{stats}");
    assert!(
        stats.contains("openenv_reward") && stats.contains("5/6"),
        "{stats}"
    );

    // The README's example config, pointed at this server, passes `trawl check`.
    let example = Path::new(env!("CARGO_MANIFEST_DIR")).join("../examples/openenv/guess.toml");
    let example = std::fs::read_to_string(example)
        .unwrap()
        .replace("http://127.0.0.1:8000", &env.base_url());
    std::fs::write(dir.path().join("example.toml"), example).unwrap();
    let o = trawl(&["check", "example.toml"], dir.path());
    assert!(o.status.success(), "{}", text(&o));
    assert!(text(&o).contains(": ok — "), "{}", text(&o));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn servers_that_die_hang_answer_garbage_or_break_are_infrastructure_errors() {
    let env = OpenEnvServer::start(4);
    let doomed = OpenEnvServer::start(1);
    let llm = ScriptedServer::start(Arc::new(halving)).await.unwrap();
    let dir = tempfile::tempdir().unwrap();
    let config = |name: &str, server: &str, tasks: &str| {
        format!(
            r#"name = "{name}"

[[environments]]
type = "openenv"
servers = ["{server}"]
sessions_per_server = 4
action_field = "guess"
observation_field = "prompt"
timeout_secs = 3
{tasks}

[[scaffolds]]
type = "chat"
max_turns = 3

{}"#,
            model(&llm.base_url())
        )
    };
    let tasks = r#"tasks = [
  { id = "fine", reset = { seed = 3 } },
  { id = "hangs", reset = { seed = 3, fault = "hang" } },
  { id = "garbage", reset = { seed = 3, fault = "garbage" } },
  { id = "raises", reset = { seed = 3, fault = "raise" } },
]"#;
    let (records, out) = run(
        dir.path(),
        "faults",
        &config("faults", &env.base_url(), tasks),
    );
    assert!(out.contains("3 infrastructure errors"), "{out}");
    let by_task = |id: &str| records.iter().find(|r| r["key"]["task"] == id).unwrap();
    assert_eq!(by_task("fine")["success"], true);
    for (task, says) in [
        ("hangs", "no answer to `step` within 3s"),
        ("garbage", "answered with something that is not JSON"),
        (
            "raises",
            "answered with an error (EXECUTION_ERROR): the environment broke",
        ),
    ] {
        let r = by_task(task);
        assert_eq!(r["outcome"]["exit_status"], "InfraError", "{r}");
        assert_eq!(r["outcome"]["error"]["kind"], "environment", "{r}");
        let message = r["outcome"]["error"]["message"].as_str().unwrap();
        assert!(message.contains(says), "{task}: {message}");
        assert!(r["evaluations"].as_array().unwrap().is_empty(), "{r}");
    }

    // A server that dies mid-episode.
    let died = config(
        "died",
        &doomed.base_url(),
        r#"tasks = [{ id = "dies", reset = { seed = 3, fault = "die" } }]"#,
    );
    // Its only rollout an infrastructure error, the run says it failed, with the record kept.
    let (o, records) = run_any(dir.path(), "died", &died);
    assert_eq!(o.status.code(), Some(3), "{}", text(&o));
    assert!(text(&o).contains("every rollout"), "{}", text(&o));
    let r = &records[0];
    assert_eq!(r["outcome"]["exit_status"], "InfraError", "{r}");
    let message = r["outcome"]["error"]["message"].as_str().unwrap();
    assert!(
        message.contains(&doomed.base_url()) && message.contains("`step`"),
        "{message}"
    );
    assert!(!doomed.healthy());

    // A server that is not there: refused before the run, naming it.
    std::fs::write(
        dir.path().join("down.toml"),
        died.replace(&doomed.base_url(), "http://127.0.0.1:9"),
    )
    .unwrap();
    let o = trawl(&["run", "down.toml", "--quiet"], dir.path());
    let out = text(&o);
    assert!(!o.status.success());
    assert!(
        out.contains("OpenEnv server http://127.0.0.1:9 does not answer GET /health"),
        "{out}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_action_the_server_refuses_is_the_models_failure_not_an_error() {
    let env = OpenEnvServer::start(2);
    // No JSON, then a misspelt field, then a proper action with a wrong guess.
    let llm = ScriptedServer::start(Arc::new(
        |body: &Value| match trawl_tests::assistant_turns(body) {
            0 => Reply::text("I guess 7"),
            1 => Reply::text(r#"{"gues": "7"}"#),
            _ => Reply::text("```json\n{\"guess\": \"1\"}\n```"),
        },
    ))
    .await
    .unwrap();
    let dir = tempfile::tempdir().unwrap();
    let config = format!(
        r#"name = "json"

[[environments]]
type = "openenv"
servers = ["{}"]
action_format = "json"
observation_field = "prompt"
tasks = [{{ id = "one", reset = {{ seed = 3 }} }}]

[[scaffolds]]
type = "chat"
max_turns = 3

{}"#,
        env.base_url(),
        model(&llm.base_url())
    );
    let (records, _) = run(dir.path(), "json", &config);
    let r = &records[0];
    assert_eq!(r["outcome"]["exit_status"], "Submitted", "{r}");
    assert_eq!(r["success"], false);
    let told: Vec<&str> = r["steps"]
        .as_array()
        .unwrap()
        .iter()
        .map(|s| s["observation"].as_str().unwrap())
        .collect();
    assert_eq!(told.len(), 3, "{r}");
    assert!(told[0].contains("holds no action"), "{told:?}");
    assert!(
        told[1].contains("The environment refused the action: guess: Field required"),
        "{told:?}"
    );
    assert_eq!(told[2], "Higher.");
    // Only the last action reached the environment.
    assert_eq!(r["outcome"]["artifacts"]["state"]["step_count"], 1, "{r}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_image_per_episode_serves_each_episode_through_the_docker_sandbox() {
    if !trawl_tests::swe_images_present() {
        return;
    }
    let image = trawl_tests::openenv_image();
    let llm = ScriptedServer::start(Arc::new(halving)).await.unwrap();
    let dir = tempfile::tempdir().unwrap();
    let config = format!(
        r#"name = "contained"
seed = 1
concurrency = 3

[[environments]]
type = "openenv"
image = "{image}"
port = 8000
sandbox = {{ type = "docker", memory_mb = 1024 }}
seeds = 3
action_field = "guess"
observation_field = "prompt"

[[scaffolds]]
type = "chat"
max_turns = 3

{}"#,
        model(&llm.base_url())
    );
    let (records, _) = run(dir.path(), "contained", &config);
    assert_eq!(records.len(), 3);
    // Targets 4, 1, 8: halving misses 4 and finds the others.
    for (r, success) in records.iter().zip([false, true, true]) {
        assert_eq!(r["outcome"]["exit_status"], "Submitted", "{r}");
        assert_eq!(r["success"], success, "{r}");
        // Each episode had a server of its own: one session, started fresh.
        assert_eq!(
            r["outcome"]["artifacts"]["state"]["step_count"],
            r["steps"].as_array().unwrap().len()
        );
    }
    let manifest: Value = serde_json::from_slice(
        &std::fs::read(dir.path().join("runs/contained/manifest.json")).unwrap(),
    )
    .unwrap();
    let facts = &manifest["environments"]["openenv"];
    assert_eq!(facts["image"], image.as_str(), "{manifest}");
    assert_eq!(facts["sandbox"]["sandbox"], "docker", "{manifest}");
    assert!(
        trawl_tests::containers_of("contained").is_empty(),
        "containers left behind"
    );

    // An image the engine lacks is refused before the run, naming it.
    std::fs::write(
        dir.path().join("missing.toml"),
        config
            .replace(&image, "trawl-test/no-such-openenv:1")
            .replace("\"contained\"", "\"missing\""),
    )
    .unwrap();
    let o = trawl(&["run", "missing.toml", "--quiet"], dir.path());
    let out = text(&o);
    assert!(!o.status.success(), "{out}");
    assert!(
        out.contains(
            "the OpenEnv image `trawl-test/no-such-openenv:1` is not on the sandbox's engine"
        ),
        "{out}"
    );
}

/// A hostile server whose rewards are absurd (1e308 a step) or whose sum overflows trawl's
/// bound (6e8 a step, three steps): with `reward = "sum"` and `"last"` alike the rollout is an
/// infrastructure error that names the evaluator or environment and the value, never a record
/// that `stats`, `export` or a resume cannot read back.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_server_with_absurd_rewards_makes_infrastructure_errors_and_readable_runs() {
    let env = OpenEnvServer::start(4);
    let llm = ScriptedServer::start(Arc::new(halving)).await.unwrap();
    let dir = tempfile::tempdir().unwrap();
    // Targets: seed 3 is 5 (found at once), seed 1 is 1 (three guesses: 5, 2, 1).
    let config = |mode: &str| {
        format!(
            r#"name = "{mode}"

[[environments]]
type = "openenv"
servers = ["{}"]
sessions_per_server = 4
action_field = "guess"
observation_field = "prompt"
reward = "{mode}"
tasks = [
  {{ id = "fine", reset = {{ seed = 3 }} }},
  {{ id = "huge", reset = {{ seed = 3, reward = 1e308 }} }},
  {{ id = "big", reset = {{ seed = 1, reward = 6e8 }} }},
]

[[scaffolds]]
type = "chat"
max_turns = 3

{}"#,
            env.base_url(),
            model(&llm.base_url())
        )
    };
    for mode in ["sum", "last"] {
        let (records, out) = run(dir.path(), mode, &config(mode));
        let by_task = |id: &str| records.iter().find(|r| r["key"]["task"] == id).unwrap();
        assert_eq!(by_task("fine")["success"], true, "{mode}");
        assert_eq!(by_task("fine")["reward"], 1.0, "{mode}");
        // 1e308 a step: the environment's step reward is refused before any evaluator sees it.
        let huge = by_task("huge");
        assert_eq!(
            huge["outcome"]["exit_status"], "InfraError",
            "{mode}: {huge}"
        );
        assert_eq!(huge["outcome"]["error"]["kind"], "environment", "{huge}");
        let message = huge["outcome"]["error"]["message"].as_str().unwrap();
        assert!(
            message.contains("environment `openenv` gave step 0 a reward that is 1e308")
                && message.contains("beyond ±1e9"),
            "{mode}: {message}"
        );
        assert!(huge["evaluations"].as_array().unwrap().is_empty(), "{huge}");
        let big = by_task("big");
        assert_eq!(big["steps"].as_array().unwrap().len(), 3, "{mode}: {big}");
        if mode == "sum" {
            // 3 × 6e8 is past the bound: the evaluator's checked sum refuses it.
            assert_eq!(big["outcome"]["exit_status"], "InfraError", "{big}");
            assert_eq!(big["outcome"]["error"]["kind"], "evaluator", "{big}");
            let message = big["outcome"]["error"]["message"].as_str().unwrap();
            assert!(
                message.contains(
                    "evaluator `openenv_reward` failed: the sum of the server's 3 step rewards overflows"
                ),
                "{message}"
            );
            assert!(out.contains("2 infrastructure errors"), "{out}");
        } else {
            // The last step's 6e8 is within the bound: a reward like any other.
            assert_eq!(big["outcome"]["exit_status"], "Submitted", "{big}");
            assert_eq!(big["reward"], 6e8, "{big}");
            assert!(out.contains("1 infrastructure errors"), "{out}");
        }

        // What was written reads back: stats, export and a resume work and print no infinity.
        let run_dir = format!("runs/{mode}");
        let o = trawl(&["stats", &run_dir], dir.path());
        let stats = text(&o);
        assert!(o.status.success(), "{stats}");
        assert!(
            !stats
                .split(|c: char| !c.is_alphanumeric())
                .any(|w| w == "inf" || w == "NaN"),
            "{stats}"
        );
        let o = trawl(&["export", &run_dir, "--format", "openai"], dir.path());
        assert!(o.status.success(), "{}", text(&o));
        // The resume re-runs only the infrastructure errors; the server answers as before, so
        // every rollout of this session fails on infrastructure and the run says so (exit 3).
        let o = trawl(&["run", &format!("{mode}.toml"), "--quiet"], dir.path());
        let resumed = text(&o);
        assert_eq!(o.status.code(), Some(3), "{resumed}");
        let moved = if mode == "sum" { 2 } else { 1 };
        assert!(
            resumed.contains(&format!("re-ran {moved} interrupted or failed rollout(s)")),
            "{resumed}"
        );
        let lines =
            std::fs::read_to_string(dir.path().join(&run_dir).join("trajectories.jsonl")).unwrap();
        assert_eq!(lines.lines().count(), 3, "{lines}");
    }
}

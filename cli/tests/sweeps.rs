//! What a new user does on the seed workflows: one config swept over several task files with
//! `--set` (run and check), and task files in other projects' shapes (a JSON array, verl's
//! Parquet prompt file) read through a `fields` mapping. The real `trawl` binary against a
//! scripted OpenAI-compatible server on 127.0.0.1.

#![allow(clippy::unwrap_used)] // tests: a failed unwrap is a failed test

use std::path::Path;
use std::process::Output;
use std::sync::Arc;

use serde_json::{json, Value};
use trawl_tests::{adder_policy, ScriptedServer};

mod common;
use common::{jsonl, TRAWL};

fn trawl(args: &[&str], cwd: &Path) -> Output {
    trawl_tests::run_bin(TRAWL, args, cwd, &[])
}

fn ok(args: &[&str], cwd: &Path) -> String {
    let o = trawl(args, cwd);
    assert!(
        o.status.success(),
        "trawl {args:?}:\n{}",
        trawl_tests::printed(&o)
    );
    String::from_utf8_lossy(&o.stdout).into_owned()
}

/// Runs trawl expecting it to refuse its input (exit code 2); returns what it printed.
fn refused(args: &[&str], cwd: &Path) -> String {
    let o = trawl(args, cwd);
    assert_eq!(
        o.status.code(),
        Some(2),
        "trawl {args:?}:\n{}",
        trawl_tests::printed(&o)
    );
    trawl_tests::printed(&o)
}

/// One math environment over `a.jsonl`, the chat scaffold, the scripted server's model.
fn config(base_url: &str) -> String {
    let model = common::mock_model(base_url, "max_attempts = 1");
    format!(
        r#"name = "sweep"
seed = 3

[[environments]]
type = "math"
files = ["a.jsonl"]

[[scaffolds]]
type = "chat"
{model}"#
    )
}

/// GSM8K-shaped tasks with ids `<prefix>1`, `<prefix>2`, ...: "What is a plus b?".
fn gsm8k(prefix: &str, sums: &[(i64, i64)]) -> String {
    sums.iter()
        .enumerate()
        .map(|(i, (a, b))| {
            format!(
                "{}\n",
                json!({"id": format!("{prefix}{}", i + 1), "question": format!("What is {a} plus {b}?"), "answer": format!("#### {}", a + b)})
            )
        })
        .collect()
}

fn task_ids(run: &Path) -> Vec<String> {
    let mut ids: Vec<String> = jsonl(&run.join("trajectories.jsonl"))
        .iter()
        .map(|r| r["key"]["task"].as_str().unwrap().to_string())
        .collect();
    ids.sort();
    ids
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn one_config_sweeps_task_files_with_set() {
    let server = ScriptedServer::start(Arc::new(adder_policy)).await.unwrap();
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    std::fs::write(d.join("exp.toml"), config(&server.base_url())).unwrap();
    std::fs::write(d.join("a.jsonl"), gsm8k("a", &[(1, 2), (3, 4)])).unwrap();
    std::fs::write(d.join("b.jsonl"), gsm8k("b", &[(5, 6)])).unwrap();

    // The sweep: a shell loop over task files, one config.
    for stem in ["a", "b"] {
        let files = format!("environments.0.files=[\"{stem}.jsonl\"]");
        let name = format!("name=sweep-{stem}");
        ok(
            &[
                "run",
                "exp.toml",
                "-q",
                "--set",
                &files,
                "--set",
                &name,
                "--set",
                "models.0.sampling.temperature=0.25",
            ],
            d,
        );
    }
    assert_eq!(task_ids(&d.join("runs/sweep-a")), ["a1", "a2"]);
    assert_eq!(task_ids(&d.join("runs/sweep-b")), ["b1"]);
    // The overridden sampling reached the server, and the records say so.
    let requests = server.requests();
    assert_eq!(requests.len(), 3);
    assert!(
        requests.iter().all(|r| r["temperature"] == 0.25),
        "{requests:?}"
    );

    // The resolved config records the overrides and holds their values.
    let resolved = std::fs::read_to_string(d.join("runs/sweep-b/config.toml")).unwrap();
    assert!(
        resolved.starts_with(
            "# --set environments.0.files=[\"b.jsonl\"]\n# --set name=sweep-b\n# --set models.0.sampling.temperature=0.25\n"
        ),
        "{resolved}"
    );
    let body: toml::Table = resolved.parse().unwrap();
    assert_eq!(body["name"].as_str(), Some("sweep-b"));
    assert_eq!(
        body["environments"][0]["files"].as_array().unwrap()[0].as_str(),
        Some("b.jsonl")
    );

    // Resuming with the same overrides goes on (nothing left to run); with others it is
    // refused, as a changed config file is.
    let same = ["environments.0.files=[\"a.jsonl\"]", "name=sweep-a"];
    ok(
        &[
            "run",
            "exp.toml",
            "-q",
            "--set",
            same[0],
            "--set",
            same[1],
            "--set",
            "models.0.sampling.temperature=0.25",
        ],
        d,
    );
    assert_eq!(server.requests().len(), 3, "nothing ran again");
    let err = refused(
        &[
            "run",
            "exp.toml",
            "-q",
            "--set",
            "environments.0.files=[\"b.jsonl\"]",
            "--set",
            "name=sweep-a",
        ],
        d,
    );
    assert!(err.contains("was started with a different config"), "{err}");
}

#[test]
fn check_takes_set_and_bad_sets_name_the_argument_and_field() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    // `check` contacts no server without --ping.
    std::fs::write(d.join("exp.toml"), config("http://127.0.0.1:9/v1")).unwrap();
    std::fs::write(d.join("a.jsonl"), gsm8k("a", &[(1, 2), (3, 4)])).unwrap();
    std::fs::write(d.join("b.jsonl"), gsm8k("b", &[(5, 6)])).unwrap();

    let out = ok(&["check", "exp.toml"], d);
    assert!(out.contains("environment math: 2 task(s)"), "{out}");
    // A bare string value (not TOML) is taken as the string.
    let out = ok(
        &[
            "check",
            "exp.toml",
            "--set",
            "environments.0.files.0=b.jsonl",
        ],
        d,
    );
    assert!(out.contains("environment math: 1 task(s)"), "{out}");

    let cases: [(&str, &str); 6] = [
        (
            "models.3.type=openai",
            "--set models.3.type=openai: field `models[3].type`: `models` has 1 entry; there is no entry 3",
        ),
        (
            "concurrency=many",
            "--set concurrency=many: field `concurrency`:",
        ),
        (
            "models.0.sampling.temprature=0.5",
            "--set models.0.sampling.temprature=0.5: field `models[0].sampling.temprature`: unknown field",
        ),
        (
            "name.first=x",
            "--set name.first=x: field `name.first`: `name` is a single value",
        ),
        ("temperature", "--set temperature: expected KEY=VALUE"),
        (
            "environments.0.files=[\"nope.jsonl\"]",
            "--set environments.0.files=[\"nope.jsonl\"]: field `environments[0].files[0]`: cannot read task file",
        ),
    ];
    for (arg, expected) in cases {
        let err = refused(&["check", "exp.toml", "--set", arg], d);
        assert!(err.contains(expected), "--set {arg}:\n{err}");
    }
    // An error elsewhere in the file still names its line.
    std::fs::write(
        d.join("exp.toml"),
        config("http://127.0.0.1:9/v1").replace("seed = 3", "seed = \"three\""),
    )
    .unwrap();
    let err = refused(&["check", "exp.toml", "--set", "name=x"], d);
    assert!(err.contains("exp.toml:2:1: field `seed`"), "{err}");
}

/// The tasks `check --tasks-out` lists for `config` (written to `<stem>.toml`).
fn checked_tasks(d: &Path, stem: &str, config: &str) -> Vec<Value> {
    std::fs::write(d.join(format!("{stem}.toml")), config).unwrap();
    let out = format!("{stem}-tasks.jsonl");
    ok(&["check", &format!("{stem}.toml"), "--tasks-out", &out], d);
    jsonl(&d.join(out))
}

#[test]
fn a_json_array_in_another_shape_loads_through_a_field_mapping() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    std::fs::write(
        d.join("other.json"),
        r#"[
  {"uid": "p-1", "problem": "What is 2 plus 2?", "meta": {"solution": "4"}},
  {"uid": "p-2", "problem": "What is 3 plus 5?", "meta": {"solution": "8"}}
]"#,
    )
    .unwrap();
    let base = config("http://127.0.0.1:9/v1")
        .replace("files = [\"a.jsonl\"]", "files = [\"other.json\"]");
    let mapped = base.replace(
        "files = [\"other.json\"]",
        "files = [\"other.json\"]\nfields = { id = \"uid\", question = \"problem\", answer = \"meta.solution\" }",
    );
    let tasks = checked_tasks(d, "mapped", &mapped);
    let got: Vec<(&str, &str, &str)> = tasks
        .iter()
        .map(|t| {
            (
                t["id"].as_str().unwrap(),
                t["question"].as_str().unwrap(),
                t["answer"].as_str().unwrap(),
            )
        })
        .collect();
    assert_eq!(
        got,
        [
            ("p-1", "What is 2 plus 2?", "4"),
            ("p-2", "What is 3 plus 5?", "8")
        ]
    );

    // Without the mapping the shape is not a math task: file, row and the field.
    std::fs::write(d.join("plain.toml"), &base).unwrap();
    let err = refused(&["check", "plain.toml"], d);
    assert!(
        err.contains("other.json:1: field `solution`: missing; a MATH task needs"),
        "{err}"
    );
    // A mapping to a field the file does not have: file, row, both names, what to fix.
    std::fs::write(
        d.join("bad.toml"),
        mapped.replace("meta.solution", "meta.answer"),
    )
    .unwrap();
    let err = refused(&["check", "bad.toml"], d);
    assert!(
        err.contains("other.json:1: field `meta.answer` (read as `answer` by `fields`) is missing"),
        "{err}"
    );
    assert!(err.contains("fix `fields.answer`"), "{err}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_verl_parquet_prompt_file_loads_back_as_a_task_file() {
    let server = ScriptedServer::start(Arc::new(adder_policy)).await.unwrap();
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    std::fs::write(d.join("exp.toml"), config(&server.base_url())).unwrap();
    std::fs::write(d.join("a.jsonl"), gsm8k("a", &[(1, 2), (3, 4), (10, 20)])).unwrap();
    ok(&["run", "exp.toml", "-q"], d);
    // verl's prompt file, as trawl writes it for verl: Parquet, the question in `prompt`, the
    // answer in `reward_model.ground_truth`, the task id in `extra_info`.
    ok(
        &[
            "export",
            "runs/sweep",
            "--format",
            "verl",
            "-o",
            "train.parquet",
        ],
        d,
    );
    assert_eq!(
        &std::fs::read(d.join("train.parquet")).unwrap()[..4],
        b"PAR1"
    );

    let reread = config(&server.base_url()).replace(
        "files = [\"a.jsonl\"]",
        "files = [\"train.parquet\"]\nfields = { id = \"extra_info.task_id\", question = \"prompt.0.content\", answer = \"reward_model.ground_truth\" }",
    );
    let mut tasks = checked_tasks(d, "reread", &reread);
    tasks.sort_by_key(|t| t["id"].as_str().unwrap().to_string());
    let got: Vec<(&str, &str, &str)> = tasks
        .iter()
        .map(|t| {
            (
                t["id"].as_str().unwrap(),
                t["question"].as_str().unwrap(),
                t["answer"].as_str().unwrap(),
            )
        })
        .collect();
    assert_eq!(
        got,
        [
            ("a1", "What is 1 plus 2?", "3"),
            ("a2", "What is 3 plus 4?", "7"),
            ("a3", "What is 10 plus 20?", "30"),
        ]
    );
}

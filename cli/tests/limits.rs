//! What configs, task files and command lines can hold, through the `trawl` binary as a user
//! runs it: a `samples` count too large to walk starts at once and stops on SIGTERM; `nan` is
//! no setting's value; outputs that are not regular files are never replaced; ids never
//! write outside the folder they are filed under; `stats` says why samples are missing.

#![allow(clippy::unwrap_used)] // tests: a failed unwrap is a failed test

use std::os::unix::fs::FileTypeExt;
use std::path::Path;
use std::process::{Command, Stdio};
use std::sync::Arc;
use std::time::{Duration, Instant};

use serde_json::Value;
use trawl_tests::{adder_policy, Reply, ScriptedServer};

mod common;
use common::{json_file, jsonl, trawl, trawl_ok, TRAWL};

/// A config on the scripted server at `base_url`, math tasks and the chat scaffold; `top` goes
/// at the top level, `env` into the environment's table.
fn write_config(dir: &Path, base_url: &str, top: &str, env: &str) -> std::path::PathBuf {
    let model = common::mock_model(base_url, "max_attempts = 1");
    let text = format!(
        r#"name = "limits"
seed = 5
{top}

[[environments]]
type = "math"
{env}

[[scaffolds]]
type = "chat"
{model}"#
    );
    let path = dir.join("exp.toml");
    std::fs::write(&path, text).unwrap();
    path
}

fn lines_in(path: &Path) -> usize {
    std::fs::read_to_string(path)
        .map(|s| s.lines().count())
        .unwrap_or(0)
}

/// `samples = 4000000000` used to walk every planned rollout before the first one started (14
/// minutes at full CPU, writing nothing, deaf to SIGTERM). The plan is walked lazily: the run
/// starts at once, and SIGTERM stops it with the interrupted exit code.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_huge_samples_count_starts_at_once_and_stops_on_sigterm() {
    let server = ScriptedServer::start(Arc::new(|b| {
        Reply::Delayed(Duration::from_millis(20), Box::new(adder_policy(b)))
    }))
    .await
    .unwrap();
    let dir = tempfile::tempdir().unwrap();
    write_config(
        dir.path(),
        &server.base_url(),
        "samples = 4000000000\nconcurrency = 2",
        "generator = { count = 3, levels = [1] }",
    );
    let out = trawl_ok(&["check", "exp.toml"], dir.path());
    assert!(
        String::from_utf8_lossy(&out.stdout).contains("ok — 12000000000 rollouts"),
        "{}",
        String::from_utf8_lossy(&out.stdout)
    );

    let traj = dir.path().join("runs/limits/trajectories.jsonl");
    let mut child = Command::new(TRAWL)
        .args(["run", "exp.toml", "--quiet", "--grace-secs", "30"])
        .current_dir(dir.path())
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let t = Instant::now();
    while lines_in(&traj) < 3 {
        if t.elapsed() > Duration::from_secs(120) {
            child.kill().unwrap();
            panic!("the run wrote no rollout: it never got past planning");
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let status = Command::new("kill")
        .args(["-TERM", &child.id().to_string()])
        .status()
        .unwrap();
    assert!(status.success());
    let t = Instant::now();
    let status = loop {
        if let Some(s) = child.try_wait().unwrap() {
            break s;
        }
        if t.elapsed() > Duration::from_secs(60) {
            child.kill().unwrap();
            panic!("trawl did not stop after SIGTERM");
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    };
    let mut stderr = String::new();
    std::io::Read::read_to_string(&mut child.stderr.take().unwrap(), &mut stderr).unwrap();
    assert_eq!(status.code(), Some(130), "{stderr}");
    assert!(stderr.contains("interrupted:"), "{stderr}");
    let manifest = json_file(&dir.path().join("runs/limits/manifest.json"));
    assert_eq!(manifest["status"], "interrupted", "{manifest}");
    // Every record written is whole and scored, none an error.
    let records = jsonl(&traj);
    assert!(records.len() >= 3);
    assert!(
        records
            .iter()
            .all(|r| r["outcome"]["exit_status"] != "InfraError"),
        "{records:?}"
    );
}

/// `temperature = nan` passed `check` (NaN fails every range check's comparison, and became
/// "no temperature"): it is refused by `check` and `run` at its line, naming the field.
#[test]
fn nan_and_infinite_settings_are_refused_at_their_line() {
    let dir = tempfile::tempdir().unwrap();
    let path = write_config(dir.path(), "http://127.0.0.1:9/v1", "", "");
    let good = std::fs::read_to_string(&path).unwrap();
    for (from, to, field) in [
        (
            "temperature = 0.7",
            "temperature = nan",
            "models[0].sampling.temperature",
        ),
        (
            "max_tokens = 64",
            "max_tokens = 64\ntop_p = inf",
            "models[0].sampling.top_p",
        ),
        (
            "max_attempts = 1 }",
            "max_attempts = 1, initial_backoff_secs = -inf }",
            "models[0].retry.initial_backoff_secs",
        ),
    ] {
        let text = good.replace(from, to);
        std::fs::write(&path, &text).unwrap();
        let key = to.lines().last().unwrap().split(' ').next().unwrap();
        let line = text.lines().position(|l| l.contains(key)).unwrap() + 1;
        for cmd in ["check", "run"] {
            let out = trawl(&[cmd, "exp.toml"], dir.path());
            let err = String::from_utf8_lossy(&out.stderr);
            assert_eq!(out.status.code(), Some(2), "{cmd} {to}: {err}");
            assert!(
                err.contains(&format!("exp.toml:{line}:"))
                    && err.contains(&format!("field `{field}`"))
                    && err.contains("must be a finite number"),
                "{cmd} {to}: {err}"
            );
        }
    }
    assert!(
        !dir.path().join("runs").exists(),
        "a bad config starts no run"
    );
}

/// A small finished run in `dir/run`.
async fn small_run(dir: &Path, server: &ScriptedServer) {
    write_config(
        dir,
        &server.base_url(),
        "samples = 1",
        "generator = { count = 3, levels = [1] }",
    );
    trawl_ok(&["run", "exp.toml", "--out", "run", "--quiet"], dir);
}

/// `export -o DEVICE --force` replaced the device node with a regular file. Anything that exists
/// and is not a regular file (a device, a pipe, a link to one) is refused, --force or not, for
/// every command that writes a file the user names; a missing folder is made.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn outputs_that_are_not_regular_files_are_never_replaced() {
    let server = ScriptedServer::start(Arc::new(adder_policy)).await.unwrap();
    let dir = tempfile::tempdir().unwrap();
    small_run(dir.path(), &server).await;
    let status = Command::new("mkfifo")
        .arg(dir.path().join("pipe"))
        .status()
        .unwrap();
    assert!(status.success());
    std::os::unix::fs::symlink("/dev/null", dir.path().join("null-link")).unwrap();
    std::os::unix::fs::symlink(dir.path().join("pipe"), dir.path().join("pipe-link")).unwrap();
    for target in ["pipe", "null-link", "pipe-link", "/dev/null"] {
        for force in [false, true] {
            for cmd in [
                vec!["export", "run", "-o", target],
                vec!["report", "run", "-o", target],
            ] {
                let mut args = cmd.clone();
                if force {
                    args.push("--force");
                }
                let out = trawl(&args, dir.path());
                let err = String::from_utf8_lossy(&out.stderr);
                assert_eq!(out.status.code(), Some(2), "{args:?}: {err}");
                assert!(
                    err.contains("refusing to write") && err.contains("not a regular file"),
                    "{args:?}: {err}"
                );
            }
        }
    }
    let kind = |p: &str| {
        std::fs::symlink_metadata(dir.path().join(p))
            .unwrap()
            .file_type()
    };
    assert!(kind("pipe").is_fifo());
    assert!(kind("null-link").is_symlink() && kind("pipe-link").is_symlink());
    assert!(std::fs::metadata("/dev/null")
        .unwrap()
        .file_type()
        .is_char_device());

    // `--set` reads its value as TOML: `nan` would reach the format as `null` (its default).
    for value in ["nan", "-inf", "[1.0, inf]"] {
        let set = format!("epsilon={value}");
        let out = trawl(
            &[
                "export", "run", "--format", "grpo", "-o", "g.jsonl", "--set", &set,
            ],
            dir.path(),
        );
        let err = String::from_utf8_lossy(&out.stderr);
        assert_eq!(out.status.code(), Some(2), "{set}: {err}");
        assert!(
            err.contains("`epsilon` must be a finite number"),
            "{set}: {err}"
        );
    }
    assert!(!dir.path().join("g.jsonl").exists());

    // A folder that does not exist yet is made, with the stats and card beside the export.
    let out = trawl(&["export", "run", "-o", "new/deeper/sft.jsonl"], dir.path());
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let folder = dir.path().join("new/deeper");
    assert_eq!(jsonl(&folder.join("sft.jsonl")).len(), 3);
    assert!(folder.join("sft_stats.json").is_file() && folder.join("sft_card.md").is_file());
}

/// A task id is user input: `../../escape` in a task file is refused where the file is read,
/// naming file, line and field, before anything runs. And a record whose id or model name is
/// not one folder name (a hand-edited or imported run) stops `trawl swe reports` before it
/// writes anything, inside the folder or out.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn task_ids_never_write_outside_the_target_folder() {
    let dir = tempfile::tempdir().unwrap();
    let work = dir.path().join("work");
    std::fs::create_dir(&work).unwrap();
    std::fs::write(
        work.join("gsm.jsonl"),
        "{\"id\": \"fine/1\", \"question\": \"1+1?\", \"answer\": \"#### 2\"}\n{\"id\": \"../../escape\", \"question\": \"2+2?\", \"answer\": \"#### 4\"}\n",
    )
    .unwrap();
    write_config(
        &work,
        "http://127.0.0.1:9/v1",
        "",
        "files = [\"gsm.jsonl\"]",
    );
    for cmd in ["check", "run"] {
        let out = trawl(&[cmd, "exp.toml"], &work);
        let err = String::from_utf8_lossy(&out.stderr);
        assert_eq!(out.status.code(), Some(2), "{cmd}: {err}");
        assert!(
            err.contains("gsm.jsonl:2: field `id`: `../../escape` has a `..` part"),
            "{cmd}: {err}"
        );
    }
    assert!(!work.join("runs").exists());

    // A run whose records say they were scored by the SWE harness, then edited to hold ids and
    // names that would leave `logs/run_evaluation`.
    let server = ScriptedServer::start(Arc::new(adder_policy)).await.unwrap();
    small_run(&work, &server).await;
    let traj = work.join("run/trajectories.jsonl");
    let records = jsonl(&traj);
    let edit = |r: &Value, field: &str, value: &str| {
        let mut r = r.clone();
        r["key"][field] = value.into();
        r["evaluations"] = serde_json::json!([{
            "evaluator": "swe_tests", "reward": 1.0, "success": true,
            "details": {"report": {"x": {"resolved": true}}}
        }]);
        r
    };
    let before = |root: &Path| -> Vec<std::path::PathBuf> {
        let mut all = Vec::new();
        let mut stack = vec![root.to_path_buf()];
        while let Some(d) = stack.pop() {
            for e in std::fs::read_dir(&d).unwrap() {
                let p = e.unwrap().path();
                if p.is_dir() {
                    stack.push(p.clone());
                }
                all.push(p);
            }
        }
        all.sort();
        all
    };
    for (field, value) in [
        ("task", "../../../../escape"),
        ("task", "/tmp/escape"),
        ("task", "a/b"),
        ("task", ".."),
        ("model", ".."),
        ("model", "nul\u{0}x"),
    ] {
        let mut text = String::new();
        text.push_str(&serde_json::to_string(&edit(&records[0], "task", "good-1")).unwrap());
        text.push('\n');
        text.push_str(&serde_json::to_string(&edit(&records[1], field, value)).unwrap());
        text.push('\n');
        std::fs::write(&traj, text).unwrap();
        let listing = before(dir.path());
        let out = trawl(&["swe", "reports", "run"], &work);
        let err = String::from_utf8_lossy(&out.stderr);
        assert_eq!(out.status.code(), Some(2), "{field}={value}: {err}");
        assert!(
            err.contains(&format!("`key.{field}`")) && err.contains("no report was written"),
            "{field}={value}: {err}"
        );
        assert_eq!(
            before(dir.path()),
            listing,
            "{field}={value} wrote something"
        );
    }

    // A model named `org/model` (an imported run) is filed as the harness files it, and so is
    // one named `../../escape`: one folder inside, whatever its name.
    let mut text = serde_json::to_string(&edit(&records[0], "model", "org/model")).unwrap();
    text.push('\n');
    text.push_str(&serde_json::to_string(&edit(&records[1], "model", "../../escape")).unwrap());
    text.push('\n');
    std::fs::write(&traj, text).unwrap();
    let listing = before(dir.path());
    trawl_ok(&["swe", "reports", "run"], &work);
    let logs = work.join("run/logs/run_evaluation");
    for (r, model) in [
        (&records[0]["key"], "org__model"),
        (&records[1]["key"], "..__..__escape"),
    ] {
        let report = logs.join(format!(
            "run__{}__s{}/{model}/{}/report.json",
            r["scaffold"].as_str().unwrap(),
            r["sample"],
            r["task"].as_str().unwrap()
        ));
        assert!(report.is_file(), "{}", report.display());
    }
    let new: Vec<_> = before(dir.path())
        .into_iter()
        .filter(|p| !listing.contains(p))
        .collect();
    assert!(
        new.iter().all(|p| p.starts_with(work.join("run/logs"))),
        "{new:?}"
    );
}

/// A run with a fixed `samples` whose model server failed some rollouts: `stats` says the
/// missing samples are infrastructure errors, not sampling that stopped at enough successes.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn stats_says_missing_samples_were_infrastructure_errors() {
    // Rollouts whose seed is even get a server error: the same rollouts every time.
    let server = ScriptedServer::start(Arc::new(|b: &Value| {
        if b["seed"].as_u64().unwrap_or(0).is_multiple_of(2) {
            Reply::Raw {
                status: 500,
                body: "{\"error\": \"overloaded\"}".into(),
                headers: Vec::new(),
            }
        } else {
            adder_policy(b)
        }
    }))
    .await
    .unwrap();
    let dir = tempfile::tempdir().unwrap();
    write_config(
        dir.path(),
        &server.base_url(),
        "samples = 4\nmax_infra_error_rate = 1.0",
        "generator = { count = 6, levels = [1] }",
    );
    let out = trawl(&["run", "exp.toml", "--out", "run", "--quiet"], dir.path());
    let records = jsonl(&dir.path().join("run/trajectories.jsonl"));
    let infra = records
        .iter()
        .filter(|r| r["outcome"]["exit_status"] == "InfraError")
        .count();
    assert!(
        infra > 0 && infra < records.len(),
        "{infra} of {}: {}",
        records.len(),
        String::from_utf8_lossy(&out.stderr)
    );
    let out = trawl_ok(&["stats", "run"], dir.path());
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(text.contains("samples/task"), "{text}");
    assert!(
        text.contains(&format!(
            "because {infra} sample(s) ended only in an infrastructure error or an interruption"
        )),
        "{text}"
    );
    assert!(!text.contains("enough successes"), "{text}");
}

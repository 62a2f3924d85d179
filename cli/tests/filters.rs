//! `--where` filters that never end, recurse without end, fill memory or reach outside the
//! record, run by the real `trawl` binary on a real run (made against a scripted server on
//! 127.0.0.1): `export` and `show` fail with exit code 2 and an error naming the filter, write
//! nothing, and are not killed by a signal; a normal filter still selects under the same bounds.

#![allow(clippy::unwrap_used)] // tests: a failed unwrap is a failed test

use std::os::unix::process::ExitStatusExt;
use std::path::Path;
use std::process::{Command, Output, Stdio};
use std::sync::Arc;
use std::time::{Duration, Instant};

use trawl_tests::{adder_policy, ScriptedServer};

mod common;
use common::{jsonl, trawl_ok, TRAWL};

/// Runs trawl, killing it (and failing the test) if it has not ended after `limit`: a filter
/// without bounds would otherwise hang the test instead of failing it. The limit is a guard,
/// far above what the bounded commands take; nothing here asserts how long they took.
fn trawl_within(args: &[&str], cwd: &Path, limit: Duration) -> Output {
    let mut child = Command::new(TRAWL)
        .args(args)
        .current_dir(cwd)
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    // Drain both pipes on threads, so a chatty child never blocks on a full pipe.
    let mut stdout = child.stdout.take().unwrap();
    let mut stderr = child.stderr.take().unwrap();
    let out = std::thread::spawn(move || {
        let mut v = Vec::new();
        std::io::Read::read_to_end(&mut stdout, &mut v).unwrap();
        v
    });
    let err = std::thread::spawn(move || {
        let mut v = Vec::new();
        std::io::Read::read_to_end(&mut stderr, &mut v).unwrap();
        v
    });
    let started = Instant::now();
    let status = loop {
        if let Some(status) = child.try_wait().unwrap() {
            break status;
        }
        if started.elapsed() > limit {
            child.kill().unwrap();
            child.wait().unwrap();
            panic!("trawl {args:?} was still running after {limit:?}: the filter is not bounded");
        }
        std::thread::sleep(Duration::from_millis(50));
    };
    Output {
        status,
        stdout: out.join().unwrap(),
        stderr: err.join().unwrap(),
    }
}

/// A small finished run in `d`/runs/filters: four math tasks, chat, one sample each.
async fn small_run(d: &Path) {
    let server = ScriptedServer::start(Arc::new(adder_policy)).await.unwrap();
    let config = format!(
        r#"name = "filters"
seed = 7
samples = 1

[[environments]]
type = "math"
generator = {{ count = 4, levels = [1] }}

[[scaffolds]]
type = "chat"

[[models]]
type = "openai"
name = "mock"
base_url = "{}"
model = "mock"
"#,
        server.base_url()
    );
    std::fs::write(d.join("exp.toml"), config).unwrap();
    trawl_ok(&["run", "exp.toml", "--quiet"], d);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn hostile_where_filters_fail_clearly_within_their_bounds() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    small_run(d).await;
    let records = jsonl(&d.join("runs/filters/trajectories.jsonl"));
    assert_eq!(records.len(), 4);
    let guard = Duration::from_secs(120);

    // (filter, bounds, what the error must say). Loops get a short time budget and the default
    // memory bound; memory bombs and deep recursion a small memory bound and a long time budget,
    // so that the bound named is the one that holds them.
    let time = ["--where-timeout", "0.5"];
    let memory = ["--where-timeout", "60", "--where-memory", "64"];
    let over_time = "ran past its time budget of 0.5 s";
    let over_memory = "grew trawl's memory past its bound of 64 MiB";
    let cases: &[(&str, &[&str], &str)] = &[
        ("repeat(null)", &time, over_time),
        ("def f: f; f", &time, over_time),
        ("last(range(1e12))", &time, over_time),
        ("until(false; .)", &time, over_time),
        ("def f: 1 + f; f", &memory, over_memory),
        ("[range(1e9)] | length > 0", &memory, over_memory),
        (
            "halt",
            &time,
            "`halt` (column 1) is not allowed in a trawl filter",
        ),
        (
            ".success | halt_error",
            &time,
            "`halt_error` (column 12) is not allowed in a trawl filter",
        ),
        ("env | length > 0", &time, "`env` (column 1) is not allowed"),
        (
            "$ENV | length > 0",
            &time,
            "`$ENV` (column 1) is not allowed",
        ),
        (
            ".task.id | stderr",
            &time,
            "`stderr` (column 12) is not allowed",
        ),
    ];
    for (filter, bounds, says) in cases {
        let mut export = vec![
            "export",
            "runs/filters",
            "--format",
            "trajectory",
            "-o",
            "hostile.jsonl",
            "--where",
            filter,
        ];
        export.extend_from_slice(bounds);
        let mut show = vec!["show", "runs/filters", "-n", "10", "--where", filter];
        show.extend_from_slice(bounds);
        for args in [export, show] {
            let o = trawl_within(&args, d, guard);
            let stderr = String::from_utf8_lossy(&o.stderr);
            assert_eq!(o.status.signal(), None, "{args:?} was killed: {stderr}");
            assert_eq!(o.status.code(), Some(2), "{args:?}: {stderr}");
            assert!(
                stderr.contains("--where") && stderr.contains(says),
                "{args:?} should say {says:?}: {stderr}"
            );
            if !says.contains("not allowed") {
                // A bound passed on a record names the filter and the record.
                assert!(
                    stderr.contains(&format!("--where `{filter}` on record math/")),
                    "{args:?}: {stderr}"
                );
            }
            assert!(o.stdout.is_empty(), "{args:?} printed {:?}", o.stdout);
            for left in ["hostile.jsonl", "hostile_stats.json", "hostile_card.md"] {
                assert!(!d.join(left).exists(), "{args:?} left {left}");
            }
        }
    }

    // Bounds themselves are checked: no value makes trawl panic.
    for bad in [
        "--where-timeout=nan",
        "--where-timeout=-1",
        "--where-timeout=0",
        "--where-timeout=1e300",
        "--where-memory=0",
        "--where-memory=18446744073709551615",
    ] {
        let args = ["show", "runs/filters", "--where", ".success", bad];
        let o = trawl_within(&args, d, guard);
        let stderr = String::from_utf8_lossy(&o.stderr);
        assert_eq!(o.status.code(), Some(2), "{args:?}: {stderr}");
        assert!(
            stderr.contains("--where-timeout/--where-memory: a filter's"),
            "{args:?}: {stderr}"
        );
    }

    // A normal filter selects under the same small bounds, on both commands.
    for bounds in [&time[..], &memory[..]] {
        let mut args = vec![
            "export",
            "runs/filters",
            "--format",
            "trajectory",
            "-o",
            "kept.jsonl",
            "--force",
            "--where",
            "[.messages[] | select(.role == \"assistant\")] | length >= 1",
        ];
        args.extend_from_slice(bounds);
        trawl_ok(&args, d);
        assert_eq!(jsonl(&d.join("kept.jsonl")), records);
    }
    let o = trawl_within(
        &[
            "show",
            "runs/filters",
            "-n",
            "10",
            "--where",
            ".reward >= 0",
            "--where-timeout",
            "0.5",
        ],
        d,
        guard,
    );
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    assert_eq!(String::from_utf8_lossy(&o.stdout).matches("══ ").count(), 4);
}

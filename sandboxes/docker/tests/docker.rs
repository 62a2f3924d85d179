//! The `docker` sandbox against the real Docker engine. Needs an engine and the base image
//! (`trawl swe build-images --base-only`, which `.ci/run` runs); without them each test says so
//! and fails under CI, where they must be present.

use std::time::Duration;

use trawl_core::sandbox::{ExecLimits, ExecOutcome, Limit, Sandbox};
use trawl_sandbox_docker::{DockerFactory, DockerSandboxConfig, LABEL_OWNER, LABEL_RUN};

const IMAGE: &str = "trawl-swe-base:latest";

/// The factory, or `None` where this machine has no engine or image: the test is then counted
/// as skipped under `cargo xtask test`, and fails anywhere else (under CI too).
async fn factory() -> Option<DockerFactory> {
    factory_with(DockerSandboxConfig::default()).await
}

async fn factory_with(config: DockerSandboxConfig) -> Option<DockerFactory> {
    let f = match DockerFactory::connect(config).await {
        Ok(f) => f,
        Err(e) => {
            trawl_test_needs::missing(trawl_test_needs::DOCKER_IMAGES, &e.to_string());
            return None;
        }
    };
    match f.has_image(IMAGE).await {
        Ok(true) => Some(f),
        other => {
            trawl_test_needs::missing(
                trawl_test_needs::DOCKER_IMAGES,
                &format!("no {IMAGE} ({other:?})"),
            );
            None
        }
    }
}

async fn containers_with_label(label: &str) -> Vec<String> {
    let out = tokio::process::Command::new("docker")
        .args(["ps", "-aq", "--filter", &format!("label={label}")])
        .output()
        .await
        .expect("docker ps");
    String::from_utf8_lossy(&out.stdout)
        .split_whitespace()
        .map(str::to_string)
        .collect()
}

fn limits(wall: f64) -> ExecLimits {
    ExecLimits {
        wall_time_secs: wall,
        ..ExecLimits::default()
    }
}

#[tokio::test]
async fn commands_run_with_outcomes_told_apart_and_files_copy_both_ways() {
    let Some(f) = factory().await else { return };
    let s = f
        .create(IMAGE, "/tmp", "test-outcomes")
        .await
        .expect("container");

    let r = s
        .exec("echo out; echo err >&2; exit 3", &limits(10.0))
        .await
        .expect("exec");
    assert_eq!(r.outcome, ExecOutcome::Exited { code: 3 });
    assert_eq!(r.stdout, "out\n");
    assert_eq!(r.stderr, "err\n");

    let r = s.exec("pwd", &limits(10.0)).await.expect("exec");
    assert_eq!(r.stdout.trim(), "/tmp");

    // A background child does not hold the call open, and is gone after it.
    let t = std::time::Instant::now();
    let r = s
        .exec("sleep 100 & echo started", &limits(20.0))
        .await
        .expect("exec");
    assert_eq!(r.stdout, "started\n");
    assert!(t.elapsed() < Duration::from_secs(10), "{r:?}");

    // A timed-out command is killed with its whole process tree: nothing survives it.
    let r = s
        .exec(
            "sleep 1000 & sleep 1000 & trap '' TERM; while :; do :; done",
            &limits(1.0),
        )
        .await
        .expect("exec");
    assert_eq!(r.outcome, ExecOutcome::TimedOut, "{r:?}");
    assert!(r.duration_ms < 8000, "{r:?}");
    let ps = s
        .exec(
            "cat /proc/[0-9]*/comm | grep -c sleep || true",
            &limits(10.0),
        )
        .await
        .expect("ps");
    // The container's own `sleep infinity` is the one sleep left.
    assert_eq!(
        ps.stdout.trim(),
        "1",
        "processes outlived the timeout: {ps:?}"
    );

    // Output is capped where it is read, and a flood is stopped.
    let capped = ExecLimits {
        output_bytes: 1000,
        ..limits(30.0)
    };
    let r = s
        .exec("head -c 5000 /dev/zero | tr '\\0' x", &capped)
        .await
        .expect("exec");
    assert_eq!(r.stdout.len(), 1000);
    assert!(r.stdout_truncated);
    assert_eq!(r.outcome, ExecOutcome::Exited { code: 0 });
    let r = s.exec("yes", &capped).await.expect("exec");
    assert_eq!(
        r.outcome,
        ExecOutcome::LimitExceeded {
            limit: Limit::Output
        }
    );
    // The flooding process was killed, not left to burn.
    let ps = s
        .exec(
            "cat /proc/[0-9]*/comm | grep -c '^yes$' || true",
            &limits(10.0),
        )
        .await
        .expect("ps");
    assert_eq!(ps.stdout.trim(), "0", "{ps:?}");

    // No network by default.
    let r = s
        .exec(
            "python3 -c 'import socket; socket.create_connection((\"1.1.1.1\", 80), timeout=3)'",
            &limits(10.0),
        )
        .await
        .expect("exec");
    assert!(!r.success(), "a connection went out: {r:?}");

    // Files both ways, parent folders created.
    s.write_file("deep/er/f.txt", b"hello\n")
        .await
        .expect("write");
    let r = s
        .exec("cat deep/er/f.txt", &limits(10.0))
        .await
        .expect("cat");
    assert_eq!(r.stdout, "hello\n");
    s.exec("printf 'made inside' > /tmp/g.txt", &limits(10.0))
        .await
        .expect("write inside");
    assert_eq!(
        s.read_file("/tmp/g.txt").await.expect("read"),
        b"made inside"
    );
    assert!(s.read_file("missing.txt").await.is_err());

    s.close().await.expect("close");
    assert!(containers_with_label(&format!("{LABEL_RUN}=test-outcomes"))
        .await
        .is_empty());
}

#[tokio::test]
async fn the_container_limits_hold() {
    let Some(f) = factory().await else { return };
    let s = f
        .create(IMAGE, "/tmp", "test-limits")
        .await
        .expect("container");
    let generous = limits(30.0);

    // A memory bomb is killed by the container's memory cgroup, and said so.
    let r = s
        .exec(
            "python3 -c 'x = bytearray(8 << 30); print(len(x))'",
            &generous,
        )
        .await
        .expect("exec");
    assert_eq!(
        r.outcome,
        ExecOutcome::LimitExceeded {
            limit: Limit::Memory
        },
        "{r:?}"
    );

    // A fork bomb runs into the process limit and the container stays usable.
    let r = s
        .exec("bomb() { bomb | bomb & }; bomb; sleep 2", &limits(10.0))
        .await
        .expect("exec");
    assert!(!matches!(r.outcome, ExecOutcome::Exited { code: 0 }) || r.stderr.contains("fork"));
    // Nothing of the bomb outlives its call.
    let left = s
        .exec("ls /proc | grep -c '^[0-9]'", &generous)
        .await
        .expect("count");
    let n: u32 = left.stdout.trim().parse().unwrap_or(999);
    assert!(n <= 8, "{n} processes left after the bomb");
    let r = s
        .exec("echo alive", &generous)
        .await
        .expect("exec after bomb");
    assert_eq!(r.stdout, "alive\n");

    // A file past the size limit.
    let small = ExecLimits {
        file_size_mb: 1,
        ..generous.clone()
    };
    let r = s
        .exec("head -c 3000000 /dev/zero > big.bin", &small)
        .await
        .expect("exec");
    assert_eq!(
        r.outcome,
        ExecOutcome::LimitExceeded {
            limit: Limit::FileSize
        },
        "{r:?}"
    );
    s.close().await.expect("close");
}

#[tokio::test]
async fn a_dropped_sandbox_and_a_panicking_task_leave_no_container() {
    let Some(f) = factory().await else { return };
    let run = "test-drop";
    let f2 = f.clone();
    // The task panics while holding a live container.
    let task = tokio::spawn(async move {
        let s = f2.create(IMAGE, "/tmp", run).await.expect("container");
        let _ = s.exec("true", &limits(5.0)).await;
        panic!("a component panicked");
    });
    assert!(task.await.is_err());
    // Dropped during the unwinding: removed in the background, or at the latest by shutdown.
    let mut left = containers_with_label(&format!("{LABEL_RUN}={run}")).await;
    for _ in 0..50 {
        if left.is_empty() {
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
        left = containers_with_label(&format!("{LABEL_RUN}={run}")).await;
    }
    assert!(left.is_empty(), "left behind: {left:?}");

    // Shutdown removes whatever this process still owns.
    let s = f.create(IMAGE, "/tmp", run).await.expect("container");
    std::mem::forget(s);
    assert_eq!(
        containers_with_label(&format!("{LABEL_RUN}={run}"))
            .await
            .len(),
        1
    );
    let reaped = f.shutdown(run, Duration::from_secs(30)).await;
    assert!(reaped.failed.is_empty());
    assert!(containers_with_label(&format!("{LABEL_RUN}={run}"))
        .await
        .is_empty());
}

#[tokio::test]
async fn many_sandboxes_at_once_wait_their_turn_at_the_engine() {
    // Two calls at a time: sixteen sandboxes made, used and removed all together queue for the
    // engine instead of sending it sixteen calls at once (which, at the scale of hundreds, run
    // past the deadline). Each call's deadline counts from when it is sent.
    let config = DockerSandboxConfig {
        engine_calls: 2,
        ..DockerSandboxConfig::default()
    };
    let Some(f) = factory_with(config).await else {
        return;
    };
    let run = "test-turns";
    let episodes = (0..16).map(|i| {
        let f = f.clone();
        async move {
            let s = f.create(IMAGE, "/tmp", run).await?;
            let r = s.exec(&format!("echo {i}"), &limits(30.0)).await?;
            s.close().await?;
            Ok::<_, trawl_core::sandbox::SandboxError>(r.stdout)
        }
    });
    let outputs = futures_util::future::join_all(episodes).await;
    for (i, out) in outputs.into_iter().enumerate() {
        assert_eq!(out.expect("episode"), format!("{i}\n"));
    }
    // Sixteen ran together, yet no more than two calls were ever in flight; and the queue was
    // used (two at once were seen).
    assert_eq!(f.peak_engine_calls(), 2);
    assert!(containers_with_label(&format!("{LABEL_RUN}={run}"))
        .await
        .is_empty());
}

#[tokio::test]
async fn containers_of_a_dead_process_are_reaped_at_start() {
    let Some(f) = factory().await else { return };
    // A container labelled as owned by a process that no longer exists (as after `kill -9`).
    let host = std::fs::read_to_string("/proc/sys/kernel/hostname").expect("hostname");
    let owner = format!("{}:999999999:1", host.trim());
    let out = tokio::process::Command::new("docker")
        .args([
            "create",
            "--label",
            "trawl.managed=true",
            "--label",
            &format!("{LABEL_RUN}=test-reap"),
            "--label",
            &format!("{LABEL_OWNER}={owner}"),
            IMAGE,
            "sleep",
            "infinity",
        ])
        .output()
        .await
        .expect("docker create");
    assert!(out.status.success());
    let reaped = f.reap_stale().await.expect("reap");
    let id = String::from_utf8_lossy(&out.stdout).trim().to_string();
    assert!(reaped.removed.contains(&id), "{reaped:?}");
    assert!(containers_with_label(&format!("{LABEL_RUN}=test-reap"))
        .await
        .is_empty());
}

#[tokio::test]
async fn a_missing_image_says_how_to_get_one() {
    let Some(f) = factory().await else { return };
    let err = f
        .create("trawl-no-such-image:1", "/tmp", "test-missing")
        .await
        .expect_err("no image");
    let msg = err.to_string();
    assert!(msg.contains("trawl-no-such-image:1"), "{msg}");
    assert!(msg.contains("build-images"), "{msg}");
}

/// Every command of a container goes to one runner over one exec session: output that looks
/// like the session's own framing comes back as output, a cancelled command is killed with
/// the session, and a command that kills the runner is a sandbox error, after which the next
/// command gets a new session.
#[tokio::test]
async fn one_exec_session_carries_every_command_and_survives_its_commands() {
    let Some(f) = factory().await else { return };
    let s = f
        .create(IMAGE, "/tmp", "test-session")
        .await
        .expect("container");
    let fake = "\\026\\000\\000\\000trawl-sandbox-runner/1";
    let r = s
        .exec(&format!("printf '{fake}'"), &limits(10.0))
        .await
        .expect("exec");
    assert_eq!(r.stdout.as_bytes()[0], 0x16, "{r:?}");
    assert!(r.stdout.ends_with("trawl-sandbox-runner/1"), "{r:?}");
    for i in 0..50 {
        let r = s
            .exec(&format!("echo {i}"), &limits(10.0))
            .await
            .expect("exec");
        assert_eq!(r.stdout, format!("{i}\n"));
    }

    // Cancelled mid-command: the command dies with its session.
    let long = limits(600.0);
    let call = s.exec("sleep 1234", &long);
    assert!(tokio::time::timeout(Duration::from_millis(700), call)
        .await
        .is_err());
    let mut left = String::new();
    for _ in 0..50 {
        let r = s
            .exec(
                "grep -l 'slee[p] 1234' /proc/[0-9]*/cmdline 2>/dev/null | wc -l",
                &limits(10.0),
            )
            .await
            .expect("exec");
        left = r.stdout.trim().to_string();
        if left == "0" {
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert_eq!(left, "0", "the cancelled command outlived its session");

    // Killing the runner fails that command as a sandbox error, not a result or a hang.
    let r = s.exec("kill -9 $PPID; sleep 5", &limits(30.0)).await;
    assert!(
        matches!(r, Err(trawl_core::sandbox::SandboxError::Infra(_))),
        "{r:?}"
    );
    let r = s.exec("echo again", &limits(10.0)).await.expect("exec");
    assert_eq!(r.stdout, "again\n");
    s.close().await.expect("close");
}

include!("../../../tests/programs/caught/list.rs");

/// The programs of `CAUGHT` (`tests/programs/caught`) in a container: each
/// runs into a limit, catches the failure and exits 0, and each ends as the limit it ran into,
/// read from the container's own cgroup counters and capped folders (issue 32).
#[tokio::test]
async fn limits_a_program_catches_are_still_seen_in_a_container() {
    let config = DockerSandboxConfig {
        memory_mb: 384,
        pids: 48,
        tmp_mb: Some(64),
        workdir_mb: Some(128),
        ..DockerSandboxConfig::default()
    };
    let Some(f) = factory_with(config).await else {
        return;
    };
    for (name, program, arg, limit) in CAUGHT {
        let s = f
            .create(IMAGE, "/srv", "test-caught-limits")
            .await
            .expect("container");
        s.write_file("prog.py", program.as_bytes())
            .await
            .expect("write");
        let limits = ExecLimits {
            wall_time_secs: 60.0,
            file_size_mb: 1024,
            ..ExecLimits::default()
        };
        let r = s
            .exec(&format!("python3 prog.py {arg}"), &limits)
            .await
            .expect("exec");
        assert_eq!(
            r.outcome,
            ExecOutcome::LimitExceeded { limit },
            "{name}: {r:?}"
        );
        s.close().await.expect("close");
    }
}

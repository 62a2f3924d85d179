//! Model-written code that tries to hurt the machine, run in real sandboxes: each case must be
//! contained, reported with the right outcome, leave trawl's memory alone and leave no process
//! behind. Every case runs with namespaces (when bubblewrap works here; CI requires it) and with
//! the process-group fallback.

#![allow(clippy::unwrap_used)]

use std::os::unix::process::CommandExt;
use std::path::Path;
use std::time::{Duration, Instant};

use trawl_core::sandbox::{ExecLimits, ExecOutcome, Limit, Sandbox};
use trawl_sandbox_local::{IsolationMode, LocalSandboxConfig, LocalSandboxFactory};

/// The fallback runs every sandbox as one shared user, whose process count is shared too: the
/// cases run one at a time so that one fork bomb cannot starve another case.
static SERIAL: tokio::sync::Mutex<()> = tokio::sync::Mutex::const_new(());

fn factory(isolation: IsolationMode) -> Option<LocalSandboxFactory> {
    LocalSandboxFactory::new(LocalSandboxConfig {
        isolation,
        ..LocalSandboxConfig::default()
    })
    .ok()
}

/// The namespace sandbox and the fallback. Where namespaces do not work, the namespace half
/// is counted as skipped under `cargo xtask test` (and fails anywhere else).
fn both() -> Vec<LocalSandboxFactory> {
    let ns = namespaces("the namespace half");
    ns.into_iter()
        .chain(factory(IsolationMode::Process))
        .collect()
}

/// The namespace factory, or `None` (recorded as a skip of `what`) where namespaces do not
/// work here. `TRAWL_REQUIRE_BWRAP` makes them required.
fn namespaces(what: &str) -> Option<LocalSandboxFactory> {
    let config = LocalSandboxConfig {
        isolation: IsolationMode::Namespaces,
        ..LocalSandboxConfig::default()
    };
    match LocalSandboxFactory::new(config) {
        Ok(f) => Some(f),
        Err(e) => {
            assert!(
                std::env::var_os("TRAWL_REQUIRE_BWRAP").is_none(),
                "TRAWL_REQUIRE_BWRAP is set but namespaces do not work: {e}"
            );
            trawl_test_needs::missing(trawl_test_needs::BWRAP, &format!("{what}: {e}"));
            None
        }
    }
}

/// A string unique to this call, put on the command line of what a case starts, so that the
/// process table shows whether anything of it survived.
fn marker(name: &str) -> String {
    static NEXT: std::sync::atomic::AtomicU64 = std::sync::atomic::AtomicU64::new(0);
    let n = NEXT.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
    format!("trawlmark-{name}-{}-{n}", std::process::id())
}

/// Live processes whose command line mentions `marker` (zombies have none).
fn live_with(marker: &str) -> Vec<String> {
    let mut found = Vec::new();
    let me = std::process::id().to_string();
    for entry in std::fs::read_dir("/proc").unwrap().flatten() {
        let name = entry.file_name().to_string_lossy().into_owned();
        if !name.chars().all(|c| c.is_ascii_digit()) || name == me {
            continue;
        }
        if let Ok(cmd) = std::fs::read(entry.path().join("cmdline")) {
            let cmd = String::from_utf8_lossy(&cmd).replace('\0', " ");
            if cmd.contains(marker) {
                found.push(format!("{name}: {cmd}"));
            }
        }
    }
    found
}

/// Waits (briefly: the kernel reaps killed processes asynchronously) until nothing mentioning
/// `marker` is alive, and fails with the survivors if something is.
async fn assert_nothing_left(marker: &str) {
    let deadline = Instant::now() + Duration::from_secs(5);
    loop {
        let live = live_with(marker);
        if live.is_empty() {
            return;
        }
        if Instant::now() > deadline {
            panic!(
                "{} processes left behind, e.g. {:?}",
                live.len(),
                &live[..live.len().min(3)]
            );
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

fn rss_kib() -> u64 {
    std::fs::read_to_string("/proc/self/status")
        .unwrap()
        .lines()
        .find_map(|l| l.strip_prefix("VmRSS:"))
        .and_then(|v| v.split_whitespace().next()?.parse().ok())
        .unwrap()
}

/// A factory of `f`'s isolation whose working folders are capped at `mb`.
fn with_workdir_mb(f: &LocalSandboxFactory, mb: u64) -> LocalSandboxFactory {
    LocalSandboxFactory::new(LocalSandboxConfig {
        isolation: if f.isolation().namespaces() {
            IsolationMode::Namespaces
        } else {
            IsolationMode::Process
        },
        workdir_mb: mb,
        ..LocalSandboxConfig::default()
    })
    .unwrap()
}

fn limits(wall: f64) -> ExecLimits {
    ExecLimits {
        wall_time_secs: wall,
        ..ExecLimits::default()
    }
}

#[tokio::test]
async fn ordinary_commands_report_exit_codes_and_output() {
    let _g = SERIAL.lock().await;
    for f in both() {
        let s = f.create().unwrap();
        let r = s
            .exec("echo out; echo err >&2; exit 3", &limits(10.0))
            .await
            .unwrap();
        assert_eq!(r.outcome, ExecOutcome::Exited { code: 3 }, "{r:?}");
        assert_eq!(r.stdout, "out\n");
        assert_eq!(r.stderr, "err\n");
        assert!(!r.truncated());
        s.write_file("sub/prog.py", b"print(6 * 7)").await.unwrap();
        let r = s.exec("python3 sub/prog.py", &limits(10.0)).await.unwrap();
        assert_eq!(
            (r.outcome, r.stdout.as_str()),
            (ExecOutcome::Exited { code: 0 }, "42\n"),
            "{r:?}"
        );
        s.exec("echo made > made.txt", &limits(10.0)).await.unwrap();
        assert_eq!(s.read_file("made.txt").await.unwrap(), b"made\n");
        let dir = s.workdir().to_path_buf();
        s.close().await.unwrap();
        assert!(
            !dir.exists(),
            "working folder {} not removed",
            dir.display()
        );
    }
}

#[tokio::test]
async fn the_environment_is_scrubbed() {
    let _g = SERIAL.lock().await;
    std::env::set_var("TRAWL_TEST_SECRET_KEY", "sk-do-not-leak");
    for f in both() {
        let s = f.create().unwrap();
        let r = s.exec("env", &limits(10.0)).await.unwrap();
        assert!(r.success(), "{r:?}");
        assert!(!r.stdout.contains("sk-do-not-leak"), "{}", r.stdout);
        assert!(r.stdout.contains("PATH="), "{}", r.stdout);
    }
}

#[tokio::test]
async fn a_fork_bomb_is_contained() {
    let _g = SERIAL.lock().await;
    for f in both() {
        for (name, command) in [
            (
                "py",
                "python3 -c 'import os\nwhile True: os.fork()'".to_string(),
            ),
            // In the foreground, so the shell itself stays in the bomb: with `&` it exits at
            // once and whether a failed fork is reported before the group is killed is a race.
            ("sh", "bomb(){ bomb|bomb; };bomb".to_string()),
        ] {
            let m = marker(&format!("forkbomb-{name}"));
            let s = f.create().unwrap();
            let mut l = limits(4.0);
            l.processes = 32;
            let r = s.exec(&format!("{command} # {m}"), &l).await.unwrap();
            assert!(
                matches!(
                    r.outcome,
                    ExecOutcome::TimedOut
                        | ExecOutcome::LimitExceeded {
                            limit: Limit::Processes
                        }
                ),
                "{} {name}: {r:?}",
                f.isolation().mode
            );
            assert_nothing_left(&m).await;
            if f.isolation().process_limit {
                // Contained means bounded while it ran, too: the limit was in force.
                let stderr = r.stderr.to_lowercase();
                assert!(
                    stderr.contains("resource temporarily unavailable")
                        || stderr.contains("cannot fork")
                        || r.outcome == ExecOutcome::TimedOut,
                    "{r:?}"
                );
            }
        }
    }
}

#[tokio::test]
async fn an_infinite_loop_times_out_and_a_cpu_hog_hits_its_cpu_limit() {
    let _g = SERIAL.lock().await;
    for f in both() {
        let m = marker("loop");
        let s = f.create().unwrap();
        let t = Instant::now();
        let r = s
            .exec(&format!("python3 -c 'while True: pass' {m}"), &limits(1.0))
            .await
            .unwrap();
        assert_eq!(r.outcome, ExecOutcome::TimedOut, "{r:?}");
        assert!(t.elapsed() < Duration::from_secs(20));
        assert_nothing_left(&m).await;

        let m = marker("cpu");
        let mut l = limits(30.0);
        l.cpu_secs = 1;
        let r = s
            .exec(&format!("python3 -c 'while True: pass' {m}"), &l)
            .await
            .unwrap();
        assert_eq!(
            r.outcome,
            ExecOutcome::LimitExceeded { limit: Limit::Cpu },
            "{r:?}"
        );
        assert_nothing_left(&m).await;
    }
}

#[tokio::test]
async fn a_memory_bomb_hits_its_memory_limit() {
    let _g = SERIAL.lock().await;
    for f in both() {
        let m = marker("membomb");
        let s = f.create().unwrap();
        let mut l = limits(20.0);
        l.memory_mb = 256;
        let before = rss_kib();
        let r = s
            .exec(
                &format!("python3 -c 'x = []\nwhile True: x.append(bytearray(1 << 24))' {m}"),
                &l,
            )
            .await
            .unwrap();
        assert_eq!(
            r.outcome,
            ExecOutcome::LimitExceeded {
                limit: Limit::Memory
            },
            "{r:?}"
        );
        assert!(rss_kib() < before + 32 * 1024);
        assert_nothing_left(&m).await;
    }
}

#[tokio::test]
async fn ten_gigabytes_of_output_are_capped_where_they_are_read() {
    let _g = SERIAL.lock().await;
    for f in both() {
        let m = marker("flood");
        let s = f.create().unwrap();
        let before = rss_kib();
        let r = s
            .exec(
                &format!(
                    "python3 -c 'import sys\nb = b\"x\" * (1 << 20)\nfor _ in range(10240): sys.stdout.buffer.write(b)' {m}"
                ),
                &limits(60.0),
            )
            .await
            .unwrap();
        assert_eq!(
            r.outcome,
            ExecOutcome::LimitExceeded {
                limit: Limit::Output
            },
            "{:?}",
            (r.outcome, &r.stderr)
        );
        assert!(r.stdout_truncated);
        assert_eq!(r.stdout.len(), ExecLimits::default().output_bytes);
        let grown = rss_kib().saturating_sub(before);
        assert!(grown < 32 * 1024, "trawl grew by {grown} KiB");
        assert_nothing_left(&m).await;

        // Output past the cap but short of a flood: the command finishes, the stream is cut.
        let mut l = limits(30.0);
        l.output_bytes = 1000;
        let r = s
            .exec("head -c 5000000 /dev/zero | tr '\\0' y", &l)
            .await
            .unwrap();
        assert_eq!(r.outcome, ExecOutcome::Exited { code: 0 }, "{r:?}");
        assert!(r.stdout_truncated && !r.stderr_truncated);
        assert_eq!(r.stdout, "y".repeat(1000));
    }
}

#[tokio::test]
async fn the_network_is_off_inside_namespaces_unless_opted_in() {
    let _g = SERIAL.lock().await;
    let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    listener.set_nonblocking(true).unwrap();
    let port = listener.local_addr().unwrap().port();
    let probe = format!(
        "python3 -c 'import socket\ns = socket.create_connection((\"127.0.0.1\", {port}), timeout=3)\nprint(\"connected\")'"
    );
    for f in both() {
        let s = f.create().unwrap();
        if !f.isolation().namespaces() {
            // The fallback cannot take the network away, and says so.
            assert!(!f.isolation().network_isolated);
            continue;
        }
        assert!(f.isolation().network_isolated);
        let r = s.exec(&probe, &limits(10.0)).await.unwrap();
        assert_ne!(r.outcome, ExecOutcome::Exited { code: 0 }, "{r:?}");
        assert!(!r.stdout.contains("connected"));
        assert!(
            listener.accept().is_err(),
            "the sandbox reached a listener on the host"
        );
        let r = s
            .exec(&format!("{probe} 2>&1; echo trying {port}"), &limits(10.0))
            .await
            .unwrap();
        assert!(!r.stdout.contains("connected"), "{r:?}");

        let mut open = limits(10.0);
        open.network = true;
        let r = s.exec(&probe, &open).await.unwrap();
        assert_eq!(r.stdout, "connected\n", "{r:?}");
    }
}

#[tokio::test]
async fn writes_outside_the_working_folder_do_not_land() {
    let _g = SERIAL.lock().await;
    let root_owned = tempfile::tempdir().unwrap();
    let is_root = nix::unistd::geteuid().is_root();
    for f in both() {
        let m = marker("escape");
        let s = f.create().unwrap();
        let host_tmp = std::env::temp_dir().join(&m);
        let in_protected = root_owned.path().join(&m);
        let cmd = format!(
            "echo x > /etc/{m}; echo x > /usr/{m}; echo x > {}; echo x > {}; echo x > inside.txt",
            in_protected.display(),
            if f.isolation().filesystem_isolated {
                host_tmp.display().to_string()
            } else {
                // The fallback shares /tmp with the host; it is not claimed to protect it.
                s.workdir().join("also-inside.txt").display().to_string()
            }
        );
        let r = s.exec(&cmd, &limits(10.0)).await.unwrap();
        assert!(
            r.stderr.contains("ermission denied") || r.stderr.contains("Read-only"),
            "{r:?}"
        );
        assert!(!std::path::Path::new(&format!("/etc/{m}")).exists());
        assert!(!std::path::Path::new(&format!("/usr/{m}")).exists());
        if is_root || f.isolation().filesystem_isolated {
            assert!(
                !in_protected.exists(),
                "{} was written",
                in_protected.display()
            );
        }
        assert!(!host_tmp.exists(), "{} was written", host_tmp.display());
        assert_eq!(s.read_file("inside.txt").await.unwrap(), b"x\n");
    }
}

#[tokio::test]
async fn a_process_that_ignores_sigterm_is_killed() {
    let _g = SERIAL.lock().await;
    for f in both() {
        let m = marker("noterm");
        let s = f.create().unwrap();
        let t = Instant::now();
        let r = s
            .exec(
                &format!(
                    "python3 -c 'import signal, time\nsignal.signal(signal.SIGTERM, signal.SIG_IGN)\nprint(\"ready\", flush=True)\ntime.sleep(300)' {m}"
                ),
                &limits(1.5),
            )
            .await
            .unwrap();
        assert_eq!(r.outcome, ExecOutcome::TimedOut, "{r:?}");
        assert_eq!(r.stdout, "ready\n");
        assert!(t.elapsed() < Duration::from_secs(30));
        assert_nothing_left(&m).await;
    }
}

#[tokio::test]
async fn a_background_child_holding_stdout_does_not_hold_the_call() {
    let _g = SERIAL.lock().await;
    for f in both() {
        let m = marker("bg");
        let s = f.create().unwrap();
        let t = Instant::now();
        let r = s
            .exec(
                &format!("python3 -c 'import time; time.sleep(300)' {m} & echo started"),
                &limits(60.0),
            )
            .await
            .unwrap();
        assert_eq!(r.outcome, ExecOutcome::Exited { code: 0 }, "{r:?}");
        assert_eq!(r.stdout, "started\n");
        assert!(
            t.elapsed() < Duration::from_secs(30),
            "the call waited {:?} for a background child",
            t.elapsed()
        );
        assert_nothing_left(&m).await;
    }
}

#[tokio::test]
async fn a_file_size_bomb_hits_its_file_size_limit() {
    let _g = SERIAL.lock().await;
    for f in both() {
        let s = f.create().unwrap();
        let mut l = limits(20.0);
        l.file_size_mb = 1;
        let r = s
            .exec("head -c 100000000 /dev/zero > big.bin", &l)
            .await
            .unwrap();
        assert_eq!(
            r.outcome,
            ExecOutcome::LimitExceeded {
                limit: Limit::FileSize
            },
            "{r:?}"
        );
        let size = std::fs::metadata(s.workdir().join("big.bin"))
            .unwrap()
            .len();
        assert!(size <= 1 << 20, "{size}");
    }
}

#[tokio::test]
async fn a_cancelled_call_leaves_nothing_running() {
    let _g = SERIAL.lock().await;
    for f in both() {
        let m = marker("cancel");
        let s = f.create().unwrap();
        let cmd = format!("python3 -c 'import time; time.sleep(300)' {m}");
        let long = limits(600.0);
        let call = s.exec(&cmd, &long);
        assert!(tokio::time::timeout(Duration::from_millis(700), call)
            .await
            .is_err());
        assert_nothing_left(&m).await;
    }
}

#[test]
fn requiring_namespaces_without_bubblewrap_is_refused_with_a_hint() {
    let err = LocalSandboxFactory::new(LocalSandboxConfig {
        isolation: IsolationMode::Namespaces,
        bwrap: Some("/nonexistent/bwrap".into()),
        ..LocalSandboxConfig::default()
    })
    .expect_err("refused");
    let msg = err.to_string();
    assert!(msg.contains("requires namespaces"), "{msg}");
    assert!(msg.contains("apt-get install -y bubblewrap"), "{msg}");
    // `auto` refuses too: the fallback cannot keep the network or the files from the program,
    // so it runs only when a config accepts it explicitly.
    let err = LocalSandboxFactory::new(LocalSandboxConfig {
        isolation: IsolationMode::Auto,
        bwrap: Some("/nonexistent/bwrap".into()),
        ..LocalSandboxConfig::default()
    })
    .expect_err("refused")
    .to_string();
    assert!(
        err.contains("cannot keep the network") && err.contains("isolation = \"process\""),
        "{err}"
    );
    let f = LocalSandboxFactory::new(LocalSandboxConfig {
        isolation: IsolationMode::Process,
        bwrap: Some("/nonexistent/bwrap".into()),
        ..LocalSandboxConfig::default()
    })
    .unwrap();
    assert_eq!(f.isolation().mode, "process");
    assert!(!f.isolation().network_isolated);
    assert!(f.isolation().fallback_reason.is_some());
}

fn is_root() -> bool {
    std::fs::read_to_string("/proc/self/status")
        .unwrap()
        .lines()
        .any(|l| l.starts_with("Uid:") && l.split_whitespace().nth(1) == Some("0"))
}

/// A sandbox user another process holds is never handed out here: closing a sandbox kills
/// every process of its user, so two trawl processes sharing one would kill each other's
/// commands. A `flock` held by another process on the next uid's lock file makes the next
/// sandbox take a different one.
#[tokio::test]
async fn a_user_another_process_holds_is_passed_over() {
    if !is_root() {
        trawl_test_needs::missing(trawl_test_needs::ROOT, "users per sandbox");
        return;
    }
    let _serial = SERIAL.lock().await;
    let f = factory(IsolationMode::Process).unwrap();
    async fn uid_of(s: &dyn Sandbox) -> u32 {
        let r = s.exec("id -u", &limits(10.0)).await.unwrap();
        r.stdout.trim().parse::<u32>().unwrap()
    }
    let first = f.create().unwrap();
    let u1 = uid_of(&first).await;
    drop(first);
    // Another process holds the first uid past u1 that nobody else holds: the one this
    // process would otherwise hand out next.
    let (held, mut holder) = (u1 + 1..u1 + 64)
        .find_map(|uid| {
            let mut child = std::process::Command::new("flock")
                .args([
                    "--nonblock",
                    &format!("/run/trawl/sandbox-uids/{uid}"),
                    "sleep",
                    "60",
                ])
                .process_group(0)
                .spawn()
                .expect("util-linux flock");
            std::thread::sleep(Duration::from_millis(300));
            match child.try_wait().unwrap() {
                None => Some((uid, child)),
                Some(_) => None,
            }
        })
        .expect("a free uid to hold");
    let second = f.create().unwrap();
    let u2 = uid_of(&second).await;
    // flock and the sleep it started (which holds the lock too).
    let group = nix::unistd::Pid::from_raw(-(holder.id() as i32));
    let _ = nix::sys::signal::kill(group, nix::sys::signal::Signal::SIGKILL);
    let _ = holder.wait();
    assert_ne!(u2, held, "a uid held by another process was handed out");
    assert_ne!(u2, u1);
}

/// Without namespaces, concurrent sandboxes are kept apart by users of their own: one cannot
/// write into another's folder or signal its processes, and closing a sandbox kills what it
/// left running (a `setsid` daemon too) and removes its files from the shared /tmp.
#[tokio::test]
async fn fallback_sandboxes_are_kept_apart_and_leave_nothing() {
    if !is_root() {
        trawl_test_needs::missing(trawl_test_needs::ROOT, "users per sandbox");
        return;
    }
    let _serial = SERIAL.lock().await;
    let f = factory(IsolationMode::Process).unwrap();
    assert!(f.isolation().uid_per_sandbox);
    let a = f.create().unwrap();
    let b = f.create().unwrap();
    let limits = ExecLimits {
        wall_time_secs: 10.0,
        ..ExecLimits::default()
    };
    let ua = a
        .exec("id -u", &limits)
        .await
        .unwrap()
        .stdout
        .trim()
        .to_string();
    let ub = b
        .exec("id -u", &limits)
        .await
        .unwrap()
        .stdout
        .trim()
        .to_string();
    assert_ne!(ua, ub, "two sandboxes share a user");
    assert_ne!(ua, "0");

    // B starts a long process; A tries to kill it, write into B's folder and read it.
    let m = marker("victim");
    b.exec(
        &format!("setsid python3 -c 'import time; time.sleep(60)' {m} >/dev/null 2>&1 & sleep 0.5"),
        &limits,
    )
    .await
    .unwrap();
    tokio::time::sleep(Duration::from_millis(200)).await;
    assert!(!live_with(&m).is_empty(), "the daemon did not start");
    let bdir = b.workdir().display().to_string();
    let attack = format!(
        "pkill -KILL -f '[{}]{}'; echo x > {bdir}/planted; ls {bdir}; touch /tmp/trawl-left-{ua}; echo done; kill -9 -1",
        &m[..1],
        &m[1..]
    );
    let r = a.exec(&attack, &limits).await.unwrap();
    assert!(r.stdout.contains("done"), "{r:?}");
    assert!(!live_with(&m).is_empty(), "sandbox A killed B's process");
    assert!(
        !b.workdir().join("planted").exists(),
        "A wrote into B's folder"
    );

    // A leaves a daemon and a file in /tmp; closing A removes both.
    let left = marker("left");
    a.exec(
        &format!(
            "setsid python3 -c 'import time; time.sleep(60)' {left} >/dev/null 2>&1 & sleep 0.5"
        ),
        &limits,
    )
    .await
    .unwrap();
    tokio::time::sleep(Duration::from_millis(200)).await;
    assert!(!live_with(&left).is_empty());
    assert!(Path::new(&format!("/tmp/trawl-left-{ua}")).exists());
    a.close().await.unwrap();
    assert!(
        live_with(&left).is_empty(),
        "a setsid daemon outlived its sandbox"
    );
    assert!(!Path::new(&format!("/tmp/trawl-left-{ua}")).exists());
    b.close().await.unwrap();
    assert!(live_with(&m).is_empty());
}

/// With namespaces, the private /tmp has a size cap.
#[tokio::test]
async fn the_private_tmp_is_capped() {
    let Some(f) = namespaces("the private /tmp") else {
        return;
    };
    let _serial = SERIAL.lock().await;
    assert_eq!(f.isolation().tmp_mb, Some(256));
    let s = f.create().unwrap();
    let limits = ExecLimits {
        wall_time_secs: 30.0,
        file_size_mb: 1024,
        ..ExecLimits::default()
    };
    let r = s
        .exec(
            "dd if=/dev/zero of=/tmp/fill bs=1M count=400 2>&1; du -m /tmp/fill",
            &limits,
        )
        .await
        .unwrap();
    let text = format!("{}{}", r.stdout, r.stderr);
    assert!(text.contains("No space left on device"), "{text}");
    let used: u64 = text
        .lines()
        .last()
        .and_then(|l| l.split_whitespace().next())
        .and_then(|v| v.parse().ok())
        .unwrap();
    assert!(used <= 256, "{used} MiB written into /tmp");
    s.close().await.unwrap();
}

/// A program that fills its working folder is stopped at the folder's cap, in both modes.
#[tokio::test]
async fn filling_the_working_folder_is_stopped_at_its_cap() {
    let _serial = SERIAL.lock().await;
    for f in both() {
        let f = with_workdir_mb(&f, 128);
        let s = f.create().unwrap();
        let limits = ExecLimits {
            wall_time_secs: 60.0,
            ..ExecLimits::default()
        };
        // 100 files of 32 MiB, 3.2 GB in all, each under the file-size limit.
        let r = s
            .exec(
                "for i in $(seq 100); do head -c 33554432 /dev/zero > f$i || exit 1; done",
                &limits,
            )
            .await
            .unwrap();
        assert_eq!(
            r.outcome,
            ExecOutcome::LimitExceeded { limit: Limit::Disk },
            "{} {r:?}",
            f.isolation().mode
        );
        let used: u64 = std::fs::read_dir(s.workdir())
            .unwrap()
            .flatten()
            .map(|e| e.metadata().unwrap().len())
            .sum();
        eprintln!(
            "{}: stopped with {} MiB in a 128 MiB working folder",
            f.isolation().mode,
            used >> 20
        );
        assert!(used < 1 << 30, "{} MiB written", used >> 20);
        s.close().await.unwrap();
    }
}

/// Every command of an episode goes to one runner in the sandbox. Nothing a command does can
/// stop it (killing it, or everything it may signal) or pass output off as its reply, and no
/// process or zombie piles up across commands.
#[tokio::test]
async fn commands_cannot_stop_or_fool_their_runner() {
    let _g = SERIAL.lock().await;
    for f in both() {
        let s = f.create().unwrap();
        // The reply's own framing, printed: it comes back as plain output.
        let fake = "\\026\\000\\000\\000trawl-sandbox-runner/1";
        let r = s
            .exec(
                &format!("printf '{fake}'; printf '{fake}' >&2"),
                &limits(10.0),
            )
            .await
            .unwrap();
        assert_eq!(r.stdout.as_bytes()[0], 0x16, "{r:?}");
        assert!(r.stdout.ends_with("trawl-sandbox-runner/1"), "{r:?}");
        assert_eq!(r.stdout, r.stderr);
        assert!(r.success(), "{r:?}");

        // Kill the parent, init, and everything this user may signal. (Without namespaces or
        // root, commands run as trawl's own user and nothing keeps them from it.)
        if f.isolation().namespaces() || is_root() {
            let r = s
                .exec(
                    "kill -9 $PPID; kill -9 1; kill -KILL -1; echo survived",
                    &limits(10.0),
                )
                .await
                .unwrap();
            assert_eq!(r.stdout, "survived\n", "{r:?}");
        }
        for i in 0..100 {
            // Background work left behind each time is gone by the next command.
            let r = s
                .exec(&format!("echo {i}; sleep 30 & sleep 30 &"), &limits(10.0))
                .await
                .unwrap();
            assert_eq!(r.stdout, format!("{i}\n"), "{r:?}");
        }
        let r = s
            .exec(
                "ls /proc | grep -c '^[0-9]'; grep -l '^State:.*Z' /proc/[0-9]*/status 2>/dev/null | wc -l",
                &limits(10.0),
            )
            .await
            .unwrap();
        if f.isolation().namespaces() {
            // The runner, this shell and its two children: no sleeper, no zombie.
            let counts: Vec<u32> = r
                .stdout
                .lines()
                .map(|l| l.trim().parse().unwrap())
                .collect();
            assert!(counts[0] <= 5, "{r:?}");
            assert_eq!(counts[1], 0, "zombies: {r:?}");
        }
        s.close().await.unwrap();
    }
}

/// A runner that dies (here killed from outside) fails its command as a sandbox error at once,
/// never a hang or a result, and the sandbox's next command gets a new runner.
#[tokio::test]
async fn a_dead_runner_is_a_sandbox_error_not_a_hang() {
    let _g = SERIAL.lock().await;
    for f in both() {
        let s = f.create().unwrap();
        assert!(s.exec("true", &limits(10.0)).await.unwrap().success());
        let dir = s.workdir().display().to_string();
        let m = marker("orphan");
        let (cmd, long) = (
            format!("python3 -c 'import time; time.sleep(300)' {m}"),
            limits(600.0),
        );
        let call = s.exec(&cmd, &long);
        let kill = async {
            tokio::time::sleep(Duration::from_millis(500)).await;
            for line in live_with("trawl-sandbox-runner") {
                if line.contains(&dir) {
                    let pid: i32 = line.split(':').next().unwrap().parse().unwrap();
                    let _ = std::process::Command::new("kill")
                        .args(["-9", &pid.to_string()])
                        .status();
                }
            }
        };
        let started = Instant::now();
        let (r, ()) = tokio::join!(call, kill);
        assert!(
            matches!(r, Err(trawl_core::sandbox::SandboxError::Infra(_))),
            "{r:?}"
        );
        assert!(started.elapsed() < Duration::from_secs(60));
        let r = s.exec("echo again", &limits(10.0)).await.unwrap();
        assert_eq!(r.stdout, "again\n");
        s.close().await.unwrap();
        assert_nothing_left(&m).await;
    }
}

// The programs: see the file.
include!("../../../tests/programs/caught/list.rs");

/// Each program of `CAUGHT` must end as the limit it ran into: the kernel's pids and OOM
/// counters of the sandbox's cgroups, and the fullness of its capped folders, tell it whatever
/// the program did. Where the sandbox cannot see one (`caught_limits_seen` leaves it out:
/// trawl not root, so no cgroups), the program's exit stands, and the test says so.
#[tokio::test]
async fn limits_a_program_catches_are_still_seen() {
    let _g = SERIAL.lock().await;
    for f in both() {
        let f = with_workdir_mb(&f, 128);
        let iso = f.isolation().clone();
        if nix::unistd::geteuid().is_root() {
            // As root (CI) every sandbox has its cgroups, and so sees every caught limit.
            assert_eq!(
                iso.caught_limits_seen,
                ["processes", "memory", "disk"],
                "{iso:?}"
            );
        }
        for (name, program, arg, limit) in CAUGHT {
            let s = f.create().unwrap();
            s.write_file("prog.py", program.as_bytes()).await.unwrap();
            // A private /tmp's files are memory too: the memory case alone gets a small cap.
            let limits = ExecLimits {
                wall_time_secs: 60.0,
                memory_mb: if limit == Limit::Memory { 256 } else { 1024 },
                processes: 32,
                file_size_mb: 1024,
                ..ExecLimits::default()
            };
            let r = s
                .exec(&format!("python3 prog.py {arg}"), &limits)
                .await
                .unwrap();
            let expected = if iso.caught_limits_seen.iter().any(|l| l == limit.as_str()) {
                ExecOutcome::LimitExceeded { limit }
            } else {
                eprintln!("{}: a caught {name} limit is not seen here", iso.mode);
                ExecOutcome::Exited { code: 0 }
            };
            assert_eq!(r.outcome, expected, "{} {name}: {r:?}", iso.mode);
            s.close().await.unwrap();
        }
    }
}

//! Output under load (issue 19): a busy machine may leave a command's readers unscheduled for
//! seconds after it exits. Its output must still come back whole, and be marked truncated only
//! when it passed the size cap.

#![allow(clippy::unwrap_used)] // tests: a failed unwrap is a failed test

use trawl_core::sandbox::{ExecLimits, ExecOutcome, Sandbox};
use trawl_sandbox_local::{IsolationMode, LocalSandboxConfig, LocalSandboxFactory};

/// 48 commands at once, their readers given no time at all once a command is gone (as when a
/// busy machine leaves them unscheduled past the grace): every output comes back whole.
#[test]
fn output_survives_readers_that_are_late_for_the_command_exit() {
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(1)
        .enable_all()
        .build()
        .unwrap();
    let isolation = if std::env::var_os("TRAWL_REQUIRE_BWRAP").is_some() {
        IsolationMode::Namespaces
    } else {
        IsolationMode::Auto
    };
    let config = |isolation| LocalSandboxConfig {
        isolation,
        drain_secs: Some(0.0),
        ..LocalSandboxConfig::default()
    };
    let factory = LocalSandboxFactory::new(config(isolation))
        .or_else(|_| LocalSandboxFactory::new(config(IsolationMode::Process)))
        .unwrap();
    rt.block_on(async {
        let mut set = tokio::task::JoinSet::new();
        for i in 0..48 {
            let s = factory.create().unwrap();
            set.spawn(async move {
                let command = format!(
                    "head -c 100000 /dev/zero | tr '\\0' a; head -c 50000 /dev/zero | tr '\\0' b >&2; echo {i}"
                );
                let r = s.exec(&command, &ExecLimits::default()).await.unwrap();
                let _ = s.close().await;
                (i, r)
            });
        }
        let mut checked = 0;
        while let Some(done) = set.join_next().await {
            let (i, r) = done.unwrap();
            assert_eq!(r.outcome, ExecOutcome::Exited { code: 0 }, "{i}: {r:?}");
            assert!(
                !r.stdout_truncated && !r.stderr_truncated,
                "{i}: marked truncated"
            );
            let expected = format!("{}{i}\n", "a".repeat(100_000));
            assert!(
                r.stdout == expected,
                "{i}: stdout of {} bytes, expected {}",
                r.stdout.len(),
                expected.len()
            );
            assert_eq!(r.stderr, "b".repeat(50_000), "{i}: stderr");
            checked += 1;
        }
        assert_eq!(checked, 48);
    });
}

/// Many fallback sandboxes at once, each forking a few processes: as root each sandbox is a
/// user of its own, so its process limit is its own and none runs out of processes because of
/// the others. (Not root, the fallback sets no process limit: the count would be the user's.)
#[test]
fn many_fallback_sandboxes_do_not_share_a_process_limit() {
    let root = std::process::Command::new("id")
        .arg("-u")
        .output()
        .is_ok_and(|o| o.stdout.trim_ascii() == b"0");
    if !root {
        trawl_test_needs::missing(trawl_test_needs::ROOT, "a user per fallback sandbox");
        return;
    }
    let Ok(factory) = LocalSandboxFactory::new(LocalSandboxConfig {
        isolation: IsolationMode::Process,
        ..LocalSandboxConfig::default()
    }) else {
        panic!("the process-group fallback needs only prlimit, which CI installs")
    };
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap();
    rt.block_on(async {
        let mut set = tokio::task::JoinSet::new();
        for i in 0..300 {
            let s = factory.create().unwrap();
            set.spawn(async move {
                let limits = ExecLimits {
                    wall_time_secs: 60.0,
                    ..ExecLimits::default()
                };
                let r = s
                    .exec(
                        "for n in 1 2 3 4 5 6; do sleep 1 & done; wait; echo ok",
                        &limits,
                    )
                    .await
                    .unwrap();
                let _ = s.close().await;
                (i, r)
            });
        }
        while let Some(done) = set.join_next().await {
            let (i, r) = done.unwrap();
            assert_eq!(r.outcome, ExecOutcome::Exited { code: 0 }, "{i}: {r:?}");
            assert_eq!(r.stdout, "ok\n", "{i}: {r:?}");
        }
    });
}

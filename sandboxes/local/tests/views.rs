//! Snapshots and copy-on-write views: a sandbox frozen once, then many sandboxes starting from
//! it, each with changes of its own that neither the snapshot nor any other view sees. Views
//! keep every promise of a fresh sandbox (no capability left to a command, nothing of the host
//! reachable, the disk cap, nothing left after close). And file access through a sandbox is its
//! own user's, in its own namespaces: a link it planted leads nowhere on the host.

#![allow(clippy::unwrap_used)]

use std::time::Duration;

use trawl_core::sandbox::{ExecLimits, ExecOutcome, Limit, Sandbox, SandboxBackend, SandboxSpec};
use trawl_sandbox_local::{IsolationMode, LocalSandboxConfig, LocalSandboxFactory};

fn factory(isolation: IsolationMode, workdir_mb: u64) -> Option<LocalSandboxFactory> {
    LocalSandboxFactory::new(LocalSandboxConfig {
        isolation,
        workdir_mb,
        ..LocalSandboxConfig::default()
    })
    .ok()
}

/// The namespace factory, or `None` (recorded as a skip of `what`) where namespaces do not
/// work here; `TRAWL_REQUIRE_BWRAP` makes them required.
fn namespaces(workdir_mb: u64, what: &str) -> Option<LocalSandboxFactory> {
    let ns = factory(IsolationMode::Namespaces, workdir_mb);
    if ns.is_none() {
        assert!(
            std::env::var_os("TRAWL_REQUIRE_BWRAP").is_none(),
            "TRAWL_REQUIRE_BWRAP is set but namespaces do not work"
        );
        trawl_test_needs::missing(trawl_test_needs::BWRAP, what);
    }
    ns
}

/// The namespace factory (see [`namespaces`]) and the fallback.
fn both(workdir_mb: u64) -> Vec<LocalSandboxFactory> {
    let ns = namespaces(workdir_mb, "the namespace half");
    ns.into_iter()
        .chain(factory(IsolationMode::Process, workdir_mb))
        .collect()
}

fn limits() -> ExecLimits {
    ExecLimits {
        wall_time_secs: 30.0,
        ..ExecLimits::default()
    }
}

async fn run(s: &dyn Sandbox, cmd: &str) -> String {
    let r = s.exec(cmd, &limits()).await.unwrap();
    assert_eq!(r.outcome, ExecOutcome::Exited { code: 0 }, "{cmd}: {r:?}");
    r.stdout
}

#[tokio::test]
async fn views_start_from_the_snapshot_and_keep_their_changes_to_themselves() {
    for f in both(1024) {
        let mode = f.isolation().mode.clone();
        let views = f.isolation().views.clone();
        eprintln!("{mode}: views by {views}");
        if std::env::var_os("TRAWL_REQUIRE_BWRAP").is_some() && f.isolation().namespaces() {
            assert_eq!(views, "overlay", "namespaces here, but views are copies");
        }
        let spec = SandboxSpec::default();
        let base = SandboxBackend::create(&f, &spec).await.unwrap();
        run(
            &*base,
            "mkdir -p pkg && echo one > pkg/a.txt && echo keep > b.txt && head -c 3000000 /dev/urandom > big.bin && sha256sum big.bin > big.sum && chmod 0755 pkg && git init -q . && git -c user.name=t -c user.email=t@t add -A && git -c user.name=t -c user.email=t@t commit -qm base",
        )
        .await;
        let snapshot = base.snapshot().await.unwrap();
        assert!(
            base.exec("true", &limits()).await.is_err(),
            "{mode}: a frozen sandbox still runs commands"
        );

        let a = SandboxBackend::view(&f, &snapshot, &spec).await.unwrap();
        let b = SandboxBackend::view(&f, &snapshot, &spec).await.unwrap();
        assert_ne!(a.working_dir(), b.working_dir());
        assert_eq!(run(&*a, "cat pkg/a.txt").await, "one\n", "{mode}/{views}");
        run(
            &*a,
            "echo two > pkg/a.txt && rm b.txt && echo new > c.txt && printf x >> big.bin && git status --short > status.txt",
        )
        .await;
        let status = String::from_utf8(a.read_file("status.txt").await.unwrap()).unwrap();
        assert!(
            status.contains(" M big.bin")
                && status.contains(" M pkg/a.txt")
                && status.contains(" D b.txt"),
            "{mode}/{views}: git sees {status:?}"
        );
        a.write_file("pkg/d.txt", b"written by trawl")
            .await
            .unwrap();
        assert_eq!(a.read_file("pkg/d.txt").await.unwrap(), b"written by trawl");

        // B, started before A changed anything, and C, started after, see the snapshot.
        for (name, v) in [
            ("b", &b),
            (
                "c",
                &SandboxBackend::view(&f, &snapshot, &spec).await.unwrap(),
            ),
        ] {
            let seen = run(
                &**v,
                "cat pkg/a.txt b.txt; ls; sha256sum -c big.sum >/dev/null && echo intact; git status --short | wc -l",
            )
            .await;
            assert_eq!(
                seen, "one\nkeep\nb.txt\nbig.bin\nbig.sum\npkg\nintact\n0\n",
                "{mode}/{views}: view {name} sees another's changes"
            );
        }
        assert_eq!(run(&*a, "cat c.txt").await, "new\n");

        let a_dir = std::path::PathBuf::from(a.working_dir());
        a.close().await.unwrap();
        b.close().await.unwrap();
        assert!(
            !a_dir.exists(),
            "{mode}: {} left after close",
            a_dir.display()
        );
        SandboxBackend::drop_snapshot(&f, &snapshot).await;
        assert!(
            SandboxBackend::view(&f, &snapshot, &spec).await.is_err(),
            "{mode}: a dropped snapshot still starts views"
        );
    }
}

/// A view's commands hold no capability, cannot reach the snapshot or the view's own layer
/// through any path, and its disk cap counts what it changed, not the snapshot below it.
#[tokio::test]
async fn views_give_commands_no_capability_and_no_way_to_the_snapshot() {
    let Some(f) = namespaces(64, "views in namespaces") else {
        return;
    };
    if f.isolation().views != "overlay" {
        trawl_test_needs::missing(trawl_test_needs::OVERLAY, "views are copies here");
        return;
    }
    let spec = SandboxSpec::default();
    let base = SandboxBackend::create(&f, &spec).await.unwrap();
    // 48 MiB in the snapshot: under the 64 MiB cap, and counted against no view.
    run(
        &*base,
        "head -c 50331648 /dev/zero > fill.bin && echo orig > f.txt",
    )
    .await;
    let snapshot = base.snapshot().await.unwrap();
    let v = SandboxBackend::view(&f, &snapshot, &spec).await.unwrap();
    let caps = run(&*v, "grep -E '^Cap(Inh|Prm|Eff|Bnd|Amb)' /proc/self/status").await;
    for line in caps.lines() {
        assert!(
            line.ends_with("0000000000000000"),
            "a command holds capabilities: {caps}"
        );
    }
    let r = v
        .exec(
            "ls -a /.trawl-base /.trawl-layer 2>&1; echo x > /.trawl-base/f.txt; mount -t tmpfs none /tmp 2>&1; umount /.trawl-base 2>&1; cat /proc/1/root/.trawl-base/f.txt 2>&1; echo changed > f.txt; cat f.txt",
            &limits(),
        )
        .await
        .unwrap();
    assert!(
        !r.stdout.contains("orig")
            && !r.stdout.contains("upper")
            && r.stdout.ends_with("changed\n"),
        "the snapshot or the layer is reachable: {r:?}"
    );
    let other = SandboxBackend::view(&f, &snapshot, &spec).await.unwrap();
    assert_eq!(run(&*other, "cat f.txt").await, "orig\n");
    // A call cut short takes its runner (and namespaces) with it; the next command starts a
    // new one over the same layer, and what the view changed is still there.
    let cut = tokio::time::timeout(Duration::from_millis(300), v.exec("sleep 20", &limits())).await;
    assert!(cut.is_err(), "{cut:?}");
    assert_eq!(run(&*v, "cat f.txt").await, "changed\n");
    // 32 MiB of its own fits; 80 more do not.
    run(&*v, "head -c 33554432 /dev/zero > mine.bin").await;
    let r = v
        .exec(
            "for i in 1 2 3 4 5; do head -c 16777216 /dev/zero > more$i.bin; done; sleep 1",
            &limits(),
        )
        .await
        .unwrap();
    assert_eq!(
        r.outcome,
        ExecOutcome::LimitExceeded { limit: Limit::Disk },
        "{r:?}"
    );
    run(&*v, "rm more*.bin; ls mine.bin").await;
    v.close().await.unwrap();
    other.close().await.unwrap();
    SandboxBackend::shutdown(&f).await;
}

/// trawl reads and writes a sandbox's files as the sandbox's own user inside its namespaces:
/// a link a command planted, pointing at a host file, leads trawl nowhere it could not go.
#[tokio::test]
async fn planted_links_do_not_lead_trawl_out_of_the_sandbox() {
    let victim_dir = tempfile::tempdir().unwrap();
    let victim = victim_dir.path().join("victim.txt");
    std::fs::write(&victim, "host file\n").unwrap();
    let is_root = nix::unistd::geteuid().is_root();
    for f in both(1024) {
        if !f.isolation().namespaces() && !is_root {
            // The fallback as an ordinary user runs commands as that user: the host's files
            // are the sandbox's, as documented.
            continue;
        }
        let mode = f.isolation().mode.clone();
        let s = f.create().unwrap();
        run(
            &s,
            &format!(
                "ln -s {} planted && ln -s /etc/shadow secrets && ln -s / root",
                victim.display()
            ),
        )
        .await;
        let wrote = s.write_file("planted", b"overwritten\n").await;
        assert_eq!(
            std::fs::read_to_string(&victim).unwrap(),
            "host file\n",
            "{mode}: trawl wrote through a planted link ({wrote:?})"
        );
        if f.isolation().namespaces() {
            // Its /tmp is its own.
            let _ = s.write_file("root/tmp/through-root", b"x").await;
            assert!(!std::path::Path::new("/tmp/through-root").exists());
        }
        if let Ok(shadow) = std::fs::read("/etc/shadow") {
            if let Ok(read) = s.read_file("secrets").await {
                assert_ne!(
                    read, shadow,
                    "{mode}: trawl read /etc/shadow for the sandbox"
                );
            }
        }
        s.close().await.unwrap();
    }
}

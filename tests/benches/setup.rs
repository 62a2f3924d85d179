//! What an SWE episode's setup costs: the working copy the agent starts from (the instance's
//! base commit, its bug applied, a one-commit history), made for each episode in full (a fresh
//! sandbox, the repository copied in or the container started, reset, patched, recommitted:
//! trawl's path before snapshots, and still the path of a backend without them) against a
//! copy-on-write view of the state prepared once. For the bundled `textkit` repository and for a
//! generated one of `TRAWL_BENCH_MB` MiB (100) in 2,000 files, so that the view's cost can be
//! seen not to grow with the repository; in the local sandbox (namespaces, and the fallback,
//! whose views are copies) and on Docker when its images are built.
//!
//! Each figure: the checkout, its first command (`true`: a view's sandbox starts with it), then
//! closing it (the removal included), p50 and p90 of
//! `TRAWL_BENCH_N` (20) in a row, and the whole machine's CPU per setup (so run it idle).
//! `cargo bench -p trawl-tests --bench setup`; figures go in BENCHMARKS.md.

#![allow(clippy::unwrap_used)]

use std::path::Path;
use std::sync::Arc;
use std::time::{Duration, Instant};

use serde_json::json;
use trawl_core::async_trait;
use trawl_core::registry::BuildContext;
use trawl_core::sandbox::{
    ExecLimits, ExecResult, Sandbox, SandboxBackend, SandboxError, SandboxSpec,
};
use trawl_swe::instance::SweInstance;
use trawl_swe::{SweConfig, Workspace};
use trawl_tests::machine_cpu_secs;

use trawl_sandbox_docker as _;
use trawl_sandbox_local as _;

/// A backend as one without snapshots looks: its sandboxes cannot be frozen, so that every
/// checkout is prepared in full.
struct NoSnapshots(Arc<dyn SandboxBackend>);
struct Plain(Box<dyn Sandbox>);

#[async_trait]
impl SandboxBackend for NoSnapshots {
    fn describe(&self) -> serde_json::Value {
        self.0.describe()
    }
    async fn create(&self, spec: &SandboxSpec) -> Result<Box<dyn Sandbox>, SandboxError> {
        Ok(Box::new(Plain(self.0.create(spec).await?)))
    }
    fn runs_images(&self) -> bool {
        self.0.runs_images()
    }
    async fn shutdown(&self) {
        self.0.shutdown().await;
    }
}

#[async_trait]
impl Sandbox for Plain {
    async fn exec(&self, command: &str, limits: &ExecLimits) -> Result<ExecResult, SandboxError> {
        self.0.exec(command, limits).await
    }
    async fn read_file(&self, path: &str) -> Result<Vec<u8>, SandboxError> {
        self.0.read_file(path).await
    }
    async fn write_file(&self, path: &str, contents: &[u8]) -> Result<(), SandboxError> {
        self.0.write_file(path, contents).await
    }
    async fn close(&self) -> Result<(), SandboxError> {
        self.0.close().await
    }
    fn working_dir(&self) -> String {
        self.0.working_dir()
    }
}

/// A git repository of `mb` MiB in 2,000 files under `repos/bench__big`, one commit; the
/// instance that names it.
fn big_repo(repos: &Path, mb: usize) -> SweInstance {
    let dir = repos.join("bench__big");
    std::fs::create_dir_all(&dir).unwrap();
    let per = (mb << 20) / 2000;
    let mut seed = 0x9e37_79b9_7f4a_7c15u64;
    for i in 0..2000 {
        let sub = dir.join(format!("pkg{}", i % 40));
        std::fs::create_dir_all(&sub).unwrap();
        // Incompressible, so that git stores it at full size.
        let bytes: Vec<u8> = (0..per)
            .map(|_| {
                seed ^= seed << 13;
                seed ^= seed >> 7;
                seed ^= seed << 17;
                seed as u8
            })
            .collect();
        std::fs::write(sub.join(format!("m{i}.py")), bytes).unwrap();
    }
    std::fs::write(dir.join("bug.py"), "def f():\n    return 1\n").unwrap();
    let git = |args: &[&str]| {
        let ok = std::process::Command::new("git")
            .arg("-C")
            .arg(&dir)
            .args(args)
            .envs(trawl_swe::repos::git_identity())
            .status()
            .unwrap()
            .success();
        assert!(ok, "git {args:?}");
    };
    git(&["init", "-q", "-b", "main"]);
    git(&["add", "-A"]);
    git(&["commit", "-q", "-m", "big"]);
    let head = std::process::Command::new("git")
        .arg("-C")
        .arg(&dir)
        .args(["rev-parse", "HEAD"])
        .output()
        .unwrap();
    serde_json::from_value(json!({
        "instance_id": "bench__big-1",
        "repo": "bench/big",
        "base_commit": String::from_utf8_lossy(&head.stdout).trim(),
        "patch": "diff --git a/bug.py b/bug.py\n--- a/bug.py\n+++ b/bug.py\n@@ -1,2 +1,2 @@\n def f():\n-    return 1\n+    return 2\n",
        "problem_statement": "f returns 2",
        "FAIL_TO_PASS": ["tests/test_bug.py::test_f"],
        "image_name": "trawl-swe/textkit:latest",
    }))
    .unwrap()
}

fn pct(sorted: &[Duration], p: f64) -> f64 {
    sorted[((sorted.len() - 1) as f64 * p).round() as usize].as_secs_f64() * 1000.0
}

async fn measure(label: &str, ws: &Workspace, inst: &SweInstance, n: usize) {
    // The first checkout prepares (and, with snapshots, freezes) the state: not counted.
    let first = Instant::now();
    match ws.checkout_for_agent(inst, true).await {
        Ok(c) => c.sandbox.close().await.unwrap(),
        Err(e) => {
            println!("{label:<58} unavailable: {e}");
            return;
        }
    }
    let first = first.elapsed();
    let cpu0 = machine_cpu_secs();
    let mut times = Vec::with_capacity(n);
    for _ in 0..n {
        let t = Instant::now();
        let c = ws.checkout_for_agent(inst, true).await.unwrap();
        let r = c
            .sandbox
            .exec("true", &ExecLimits::default())
            .await
            .unwrap();
        assert!(r.success(), "{r:?}");
        c.sandbox.close().await.unwrap();
        times.push(t.elapsed());
    }
    let cpu = (machine_cpu_secs() - cpu0) * 1000.0 / n as f64;
    times.sort();
    println!(
        "{label:<58} first {:>7.1} ms, then p50 {:>7.1} ms  p90 {:>7.1} ms  machine CPU {:>6.1} ms",
        first.as_secs_f64() * 1000.0,
        pct(&times, 0.5),
        pct(&times, 0.9),
        cpu
    );
}

fn main() {
    let n: usize = std::env::var("TRAWL_BENCH_N")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(20);
    let mb: usize = std::env::var("TRAWL_BENCH_MB")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(100);
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap();
    let repos = tempfile::tempdir().unwrap();
    let big = big_repo(repos.path(), mb);
    let textkit = trawl_swe::instance::builtin()
        .into_iter()
        .find(|i| i.repo.ends_with("textkit"))
        .unwrap();
    let docker_ready = std::process::Command::new("docker")
        .args(["image", "inspect", "trawl-swe/textkit:latest"])
        .output()
        .is_ok_and(|o| o.status.success());
    let sandboxes = [
        (
            "local, namespaces",
            json!({ "type": "local", "isolation": "namespaces" }),
        ),
        (
            "local, process fallback",
            json!({ "type": "local", "isolation": "process" }),
        ),
        ("docker", json!({ "type": "docker" })),
    ];
    rt.block_on(async {
        for (name, sandbox) in sandboxes {
            if name == "docker" && !docker_ready {
                println!("docker: no engine or no images (`trawl swe build-images`)");
                continue;
            }
            let settings = SweConfig {
                sandbox,
                repos_dir: Some(repos.path().to_path_buf()),
                ..SweConfig::default()
            };
            let cx = BuildContext {
                run_name: "bench-setup".into(),
                ..BuildContext::default()
            };
            let views = match Workspace::new(settings.clone(), &cx) {
                Ok(w) => w,
                Err(e) => {
                    println!("{name}: {e}");
                    continue;
                }
            };
            let full = Workspace::with_backend(
                settings.clone(),
                Arc::new(NoSnapshots(
                    cx.build_sandbox(&settings.sandbox, "docker").unwrap(),
                )),
            );
            // On Docker the big repository is copied in once, as an image.
            let big = if name == "docker" { None } else { Some(&big) };
            for (repo, inst) in [("textkit", Some(&textkit)), (&*format!("{mb} MiB"), big)] {
                let Some(inst) = inst else { continue };
                measure(&format!("{name}, {repo}: prepared in full"), &full, inst, n).await;
                measure(
                    &format!("{name}, {repo}: view of the frozen state"),
                    &views,
                    inst,
                    n,
                )
                .await;
            }
            views.shutdown().await;
            full.shutdown().await;
        }
    });
}

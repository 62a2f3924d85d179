//! The SWE environment's costs on the real Docker engine: container start, one command's round
//! trip through the container's runner session (trawl's path: one exec for the whole episode)
//! against a new exec per command through bollard (trawl's path before) and `docker exec` from
//! the command line (how mini-swe-agent runs each action), and whole episodes per minute against the local test model server replaying a
//! scripted fix (bash scaffold, harness scoring included).
//! `cargo bench -p trawl-tests --bench swe` (needs `trawl swe build-images`); figures go in
//! BENCHMARKS.md.

#![allow(clippy::unwrap_used)]

use std::time::{Duration, Instant};

use trawl_core::engine::StopSignal;
use trawl_core::sandbox::{ExecLimits, Sandbox};
use trawl_sandbox_docker::{DockerFactory, DockerSandboxConfig};
use trawl_tests::{run_experiment, run_records, swe_policy, ScriptedServer, SweFix, SweStyle};

use trawl_bash as _;
use trawl_openai as _;
use trawl_swe as _;

const IMAGE: &str = "trawl-swe/textkit:latest";

fn percentile(sorted: &[Duration], p: f64) -> f64 {
    let i = ((sorted.len() as f64 - 1.0) * p).round() as usize;
    sorted[i].as_secs_f64() * 1000.0
}

fn report(what: &str, mut times: Vec<Duration>) {
    times.sort();
    let mean = times.iter().sum::<Duration>().as_secs_f64() * 1000.0 / times.len() as f64;
    println!(
        "{what:<44} n={:<4} p50 {:>7.1} ms  p90 {:>7.1} ms  mean {:>7.1} ms",
        times.len(),
        percentile(&times, 0.5),
        percentile(&times, 0.9),
        mean
    );
}

/// One command as its own exec through bollard: create, start attached, read to the end,
/// inspect the exit code (the least a per-command exec costs).
async fn bollard_exec(factory: &DockerFactory, id: &str, command: &str) {
    use futures_util::StreamExt;
    let docker = factory.client();
    let exec = docker
        .create_exec(
            id,
            bollard::models::ExecConfig {
                attach_stdout: Some(true),
                attach_stderr: Some(true),
                cmd: Some(vec!["sh".into(), "-c".into(), command.into()]),
                ..Default::default()
            },
        )
        .await
        .unwrap();
    if let bollard::exec::StartExecResults::Attached { mut output, .. } =
        docker.start_exec(&exec.id, None).await.unwrap()
    {
        while output.next().await.is_some() {}
    }
    let code = docker.inspect_exec(&exec.id).await.unwrap().exit_code;
    assert_eq!(code, Some(0));
}

fn main() {
    let rt = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .unwrap();
    rt.block_on(async {
        let factory = match DockerFactory::connect(DockerSandboxConfig::default()).await {
            Ok(f) if f.has_image(IMAGE).await.unwrap_or(false) => f,
            _ => {
                println!("no Docker engine or no {IMAGE}: run `trawl swe build-images`");
                return;
            }
        };

        // Container start (create + start) and teardown.
        let (mut starts, mut removes) = (Vec::new(), Vec::new());
        for _ in 0..10 {
            let t = Instant::now();
            let s = factory.create(IMAGE, "/testbed", "bench").await.unwrap();
            starts.push(t.elapsed());
            let t = Instant::now();
            s.close().await.unwrap();
            removes.push(t.elapsed());
        }
        report("container create + start", starts);
        report("container remove (force)", removes);

        // One command's round trip.
        let mut firsts = Vec::new();
        let limits = ExecLimits::default();
        for _ in 0..5 {
            let s = factory.create(IMAGE, "/testbed", "bench").await.unwrap();
            let t = Instant::now();
            s.exec("true", &limits).await.unwrap();
            firsts.push(t.elapsed());
            s.close().await.unwrap();
        }
        report("first command (runner copied in, session)", firsts);
        let s = factory.create(IMAGE, "/testbed", "bench").await.unwrap();
        for _ in 0..5 {
            s.exec("true", &limits).await.unwrap();
        }
        let mut ours = Vec::new();
        for _ in 0..200 {
            let t = Instant::now();
            let r = s.exec("true", &limits).await.unwrap();
            assert!(r.success());
            ours.push(t.elapsed());
        }
        report("exec `true` via the runner session (trawl)", ours);
        let mut per_exec = Vec::new();
        for _ in 0..50 {
            let t = Instant::now();
            bollard_exec(&factory, s.id(), "true").await;
            per_exec.push(t.elapsed());
        }
        report("exec `true`, a new bollard exec each", per_exec);
        let mut cli = Vec::new();
        for _ in 0..50 {
            let t = Instant::now();
            let out = std::process::Command::new("docker")
                .args(["exec", s.id(), "timeout", "30", "sh", "-c", "true"])
                .output()
                .unwrap();
            assert!(out.status.success());
            cli.push(t.elapsed());
        }
        report("exec `true` via `docker exec` CLI", cli);
        let mut cat = Vec::new();
        for _ in 0..20 {
            let t = Instant::now();
            s.exec("cat textkit/slug.py", &limits).await.unwrap();
            cat.push(t.elapsed());
        }
        report("exec `cat textkit/slug.py` via the session", cat);
        s.close().await.unwrap();

        // Whole episodes with the scripted fix, scored by the harness.
        let fixes: Vec<SweFix> = trawl_swe::instance::builtin()
            .iter()
            .map(|i| SweFix::undoing(&i.patch, &i.problem_statement, true))
            .collect();
        for concurrency in [1, 4, 8] {
            let server = ScriptedServer::start(swe_policy(fixes.clone(), SweStyle::BashText))
                .await
                .unwrap();
            let dir = tempfile::tempdir().unwrap();
            let text = format!(
                r#"name = "swe-bench-{concurrency}"
samples = 4
concurrency = {concurrency}

[[environments]]
type = "swe"

[[scaffolds]]
type = "bash"

[[models]]
type = "openai"
name = "local"
base_url = "{}"
model = "bench"
"#,
                server.base_url()
            );
            let t = Instant::now();
            run_experiment(&text, dir.path(), StopSignal::default())
                .await
                .unwrap();
            let secs = t.elapsed().as_secs_f64();
            let records = run_records(dir.path());
            let resolved = records.iter().filter(|r| r.success).count();
            println!(
                "episodes (6 tasks x 4, bash, scripted fix), concurrency {concurrency}: {} in {secs:.1} s = {:.1} episodes/min, {resolved} resolved",
                records.len(),
                records.len() as f64 * 60.0 / secs
            );
        }
    });
}

//! Scale benchmark: thousands of concurrent episodes against a local OpenAI-compatible server
//! (`trawl-mock-server`, a separate process) that answers every request after a fixed delay.
//! Reports episodes per second against the ideal (concurrency ÷ delay) and the engine's peak
//! memory. Run with `cargo bench -p trawl-tests --bench scale`; override the shape with
//! TRAWL_BENCH_EPISODES, TRAWL_BENCH_CONCURRENCY, TRAWL_BENCH_DELAY_MS and
//! TRAWL_BENCH_SAMPLES (samples per task).

#![allow(clippy::unwrap_used)] // a benchmark harness: a failed unwrap is a failed run

use std::io::{BufRead, BufReader};
use std::process::{Command, Stdio};
use std::sync::Arc;
use std::time::Instant;

use trawl_core::engine::{self, RunOptions, Silent, StopSignal};
use trawl_core::{ExperimentConfig, Registry};

use trawl_chat as _;
use trawl_math as _;
use trawl_openai as _;

fn env_or(name: &str, default: u64) -> u64 {
    std::env::var(name)
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(default)
}

/// (VmHWM, VmRSS) of this process in MiB.
fn memory_mib() -> (f64, f64) {
    let status = std::fs::read_to_string("/proc/self/status").unwrap_or_default();
    let field = |name: &str| {
        status
            .lines()
            .find(|l| l.starts_with(name))
            .and_then(|l| l.split_whitespace().nth(1))
            .and_then(|kb| kb.parse::<f64>().ok())
            .map_or(0.0, |kb| kb / 1024.0)
    };
    (field("VmHWM:"), field("VmRSS:"))
}

fn main() {
    // `cargo bench` passes --bench; `cargo test --benches` passes nothing else: run a short
    // smoke version then, so the test suite stays fast.
    let smoke = !std::env::args().any(|a| a == "--bench");
    let episodes = env_or("TRAWL_BENCH_EPISODES", if smoke { 200 } else { 20_000 });
    let concurrency = env_or("TRAWL_BENCH_CONCURRENCY", if smoke { 100 } else { 2_000 });
    let delay_ms = env_or("TRAWL_BENCH_DELAY_MS", if smoke { 50 } else { 1_000 });
    let samples = env_or("TRAWL_BENCH_SAMPLES", 1);
    let tasks = episodes.div_ceil(samples);
    let episodes = tasks * samples;
    let _ = rlimit::increase_nofile_limit(u64::MAX);

    let mut server = Command::new(env!("CARGO_BIN_EXE_trawl-mock-server"))
        .args(["--delay-ms", &delay_ms.to_string()])
        .stdout(Stdio::piped())
        .spawn()
        .expect("start trawl-mock-server");
    let mut line = String::new();
    BufReader::new(server.stdout.take().unwrap())
        .read_line(&mut line)
        .unwrap();
    let base_url = line
        .trim()
        .strip_prefix("listening on ")
        .expect("server address")
        .to_string();

    let dir = tempfile::tempdir().unwrap();
    let config_path = dir.path().join("scale.toml");
    std::fs::write(
        &config_path,
        format!(
            r#"name = "scale"
concurrency = {concurrency}
samples = {samples}
episode_timeout_secs = 600
max_infra_error_rate = 1.0

[[environments]]
type = "math"
generator = {{ count = {tasks}, levels = [1, 2, 3, 4, 5] }}

[[scaffolds]]
type = "chat"
system_prompt = "Answer concisely."

[[models]]
type = "openai"
base_url = "{base_url}"
model = "mock"
max_concurrency = {concurrency}
request_timeout_secs = 120
connect_timeout_secs = 30
"#
        ),
    )
    .unwrap();

    let runtime = tokio::runtime::Runtime::new().unwrap();
    let registry = Registry::builtin().unwrap();
    let (config, map) = ExperimentConfig::load(&config_path, &registry).unwrap();
    let (hwm_before, _) = memory_mib();
    let t = Instant::now();
    let summary = runtime
        .block_on(engine::run(
            &config,
            &map,
            &registry,
            RunOptions {
                out: dir.path().join("run"),
                force: false,
                stop: StopSignal::default(),
                observer: Arc::new(Silent),
            },
        ))
        .unwrap();
    let wall = t.elapsed().as_secs_f64();
    let (hwm, rss) = memory_mib();
    let _ = server.kill();
    let _ = server.wait();

    let rate = summary.written as f64 / wall;
    let ideal = concurrency as f64 / (delay_ms as f64 / 1000.0);
    let bytes = std::fs::metadata(dir.path().join("run/trajectories.jsonl"))
        .map(|m| m.len())
        .unwrap_or(0);
    println!(
        "scale benchmark{}",
        if smoke {
            " (smoke: pass --bench for the full run)"
        } else {
            ""
        }
    );
    println!(
        "  episodes            {episodes} (written {}, infra errors {})",
        summary.written, summary.infra_errors
    );
    println!("  tasks × samples     {tasks} × {samples}");
    println!("  concurrency         {concurrency}, server delay {delay_ms} ms");
    println!("  wall time           {wall:.2} s");
    println!(
        "  episodes per second {rate:.0} (ideal {ideal:.0} = concurrency / delay, {:.1}% of ideal)",
        100.0 * rate / ideal
    );
    println!("  peak RSS            {hwm:.1} MiB (before the run {hwm_before:.1} MiB, at the end {rss:.1} MiB)");
    println!(
        "  trajectories.jsonl  {:.1} MiB",
        bytes as f64 / (1 << 20) as f64
    );
    assert_eq!(summary.written, episodes, "every episode must be written");
    assert_eq!(summary.infra_errors, 0, "no episode may fail");
}

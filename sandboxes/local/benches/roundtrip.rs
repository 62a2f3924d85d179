//! Sandbox round trips, with bubblewrap namespaces (when they work here) and with the
//! process-group fallback:
//! - a whole sandbox: make it, run `true`, collect the result, close it (the runner starts with
//!   the first command);
//! - one command in a sandbox that is already running (what each step of an episode costs):
//!   p50/p99 round trip, and the CPU it takes on the whole machine (trawl, the sandbox, the
//!   kernel), so run it on an idle machine.
//!
//! `cargo bench -p trawl-sandbox-local`; `TRAWL_BENCH_N` sets the count (200). Figures go in
//! BENCHMARKS.md.

#![allow(clippy::unwrap_used)]

use std::time::Instant;

use trawl_core::sandbox::{ExecLimits, Sandbox};
use trawl_sandbox_local::{IsolationMode, LocalSandboxConfig, LocalSandboxFactory};

/// CPU seconds the whole machine has spent (every process, the kernel's work included), from
/// /proc/stat: on an idle machine, what the measured commands cost, wherever it was spent
/// (trawl, bubblewrap, the runner, the shells).
fn machine_cpu_secs() -> f64 {
    let stat = std::fs::read_to_string("/proc/stat").unwrap();
    let cpu = stat.lines().next().unwrap();
    // user nice system idle iowait irq softirq steal ...: all but idle and iowait, in clock
    // ticks, which /proc always counts at 100 a second (USER_HZ).
    let f: Vec<f64> = cpu
        .split_whitespace()
        .skip(1)
        .map(|v| v.parse().unwrap_or(0.0))
        .collect();
    (f.iter().sum::<f64>() - f[3] - f[4]) / 100.0
}

fn pct(times: &mut [f64], p: f64) -> f64 {
    times.sort_by(|a, b| a.total_cmp(b));
    times[((times.len() - 1) as f64 * p) as usize]
}

fn main() {
    let rt = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .unwrap();
    let n: usize = std::env::var("TRAWL_BENCH_N")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(200);
    for mode in [IsolationMode::Namespaces, IsolationMode::Process] {
        let Ok(factory) = LocalSandboxFactory::new(LocalSandboxConfig {
            isolation: mode,
            ..LocalSandboxConfig::default()
        }) else {
            println!("{mode:?}: not available here");
            continue;
        };
        let limits = ExecLimits::default();
        let name = factory.isolation().mode.clone();
        for (label, concurrency) in [("sequential", 1usize), ("8 concurrent", 8)] {
            let started = Instant::now();
            let mut times: Vec<f64> = rt.block_on(async {
                let per = n / concurrency;
                let mut tasks = Vec::new();
                for _ in 0..concurrency {
                    let f = factory.clone();
                    let l = limits.clone();
                    tasks.push(tokio::spawn(async move {
                        let mut t = Vec::new();
                        for _ in 0..per {
                            let s0 = Instant::now();
                            let s = f.create().unwrap();
                            let r = s.exec("true", &l).await.unwrap();
                            assert!(r.success());
                            s.close().await.unwrap();
                            t.push(s0.elapsed().as_secs_f64() * 1000.0);
                        }
                        t
                    }));
                }
                let mut all = Vec::new();
                for t in tasks {
                    all.extend(t.await.unwrap());
                }
                all
            });
            let wall = started.elapsed().as_secs_f64();
            println!(
                "{name:<10} sandbox {label:<13} {} create+true+close: p50 {:.2} ms, p99 {:.2} ms, {:.0} per second",
                times.len(),
                pct(&mut times, 0.5),
                pct(&mut times, 0.99),
                times.len() as f64 / wall
            );
        }
        // Commands in a running sandbox.
        let commands = n * 5;
        let (mut times, cpu) = rt.block_on(async {
            let s = factory.create().unwrap();
            assert!(s.exec("true", &limits).await.unwrap().success());
            let cpu0 = machine_cpu_secs();
            let mut t = Vec::with_capacity(commands);
            for _ in 0..commands {
                let s0 = Instant::now();
                let r = s.exec("echo hi", &limits).await.unwrap();
                assert_eq!(r.stdout, "hi\n");
                t.push(s0.elapsed().as_secs_f64() * 1000.0);
            }
            let cpu = machine_cpu_secs() - cpu0;
            s.close().await.unwrap();
            (t, cpu)
        });
        println!(
            "{name:<10} command in a running sandbox, {commands} × `echo hi`: p50 {:.2} ms, p99 {:.2} ms, machine CPU {:.2} ms per command",
            pct(&mut times, 0.5),
            pct(&mut times, 0.99),
            cpu * 1000.0 / commands as f64
        );
    }
}

//! Sandbox round trip: create a working folder, run `true`, collect the result, remove the
//! folder, with bubblewrap namespaces (when they work here) and with the process-group fallback.
//! `cargo bench -p trawl-sandbox-local`; figures go in BENCHMARKS.md.

#![allow(clippy::unwrap_used)]

use std::time::Instant;

use trawl_core::sandbox::{ExecLimits, Sandbox};
use trawl_sandbox_local::{IsolationMode, LocalSandboxConfig, LocalSandboxFactory};

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
            times.sort_by(|a, b| a.total_cmp(b));
            let pct = |p: f64| times[((times.len() - 1) as f64 * p) as usize];
            println!(
                "{:<10} {label:<13} {} round trips: p50 {:.2} ms, p99 {:.2} ms, {:.0} per second",
                factory.isolation().mode,
                times.len(),
                pct(0.5),
                pct(0.99),
                times.len() as f64 / wall
            );
        }
    }
}

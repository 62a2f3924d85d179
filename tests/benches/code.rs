//! Episodes per second of the `code` environment against the local test model server: every
//! answer is tested in a fresh sandbox (namespaces when bubblewrap works, else the fallback).
//! `cargo bench -p trawl-tests --bench code`; figures go in BENCHMARKS.md.

#![allow(clippy::unwrap_used)]

use std::time::Instant;

use trawl_core::engine::StopSignal;
use trawl_tests::{coder_policy, run_experiment, run_records, ScriptedServer};

use trawl_chat as _;
use trawl_code as _;
use trawl_openai as _;
use trawl_sandbox_local as _; // the `local` sandbox kind the code environment runs programs in

fn main() {
    let rt = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .unwrap();
    let solutions = trawl_code::tasks::reference_solutions(&trawl_code::tasks::builtin().unwrap());
    for isolation in ["namespaces", "process"] {
        rt.block_on(async {
            let server = ScriptedServer::start(coder_policy(solutions.clone()))
                .await
                .unwrap();
            let dir = tempfile::tempdir().unwrap();
            let text = format!(
                r#"name = "bench"
samples = 8
concurrency = 32

[[environments]]
type = "code"
sandbox = {{ isolation = "{isolation}" }}

[[scaffolds]]
type = "chat"

[[models]]
type = "openai"
name = "local"
base_url = "{}"
model = "bench"
"#,
                server.base_url()
            );
            let t = Instant::now();
            match run_experiment(&text, dir.path(), StopSignal::default()).await {
                Ok(_) => {
                    let n = run_records(dir.path()).len();
                    let s = t.elapsed().as_secs_f64();
                    println!(
                        "code env, {isolation:<10}: {n} episodes (35 tasks x 8) in {s:.2} s = {:.1} episodes/s",
                        n as f64 / s
                    );
                }
                Err(e) => println!("code env, {isolation}: not available here ({e})"),
            }
        });
    }
}

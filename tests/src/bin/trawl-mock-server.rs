//! `trawl-mock-server`: a scripted OpenAI-compatible server on 127.0.0.1 for trying trawl
//! without a model and for benchmarks. It answers with the test kit's adder policy (right on
//! some generated math problems, wrong on others), after an optional fixed delay, and can fail a
//! share of requests with HTTP 500.
//!
//! With `--shell-steps N` it plays a shell agent instead: N replies running `--command`
//! (`echo hi`), then the submit command, each in a block fenced with `--fence` (`bash`).
//!
//! Usage: trawl-mock-server [--port N] [--delay-ms N] [--fail-every N] [--log FILE]
//!        [--shell-steps N [--fence TAG] [--command CMD]]
//! Prints `listening on http://127.0.0.1:PORT/v1` once ready.

use std::io::Write;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use trawl_tests::{adder_policy, shell_steps_policy, Reply, ScriptedServer};

fn main() {
    let mut port = 0u16;
    let mut delay_ms = 0u64;
    let mut fail_every = 0u64;
    let mut log: Option<String> = None;
    let mut shell_steps: Option<usize> = None;
    let mut fence = "bash".to_string();
    let mut command = "echo hi".to_string();
    let mut args = std::env::args().skip(1);
    while let Some(a) = args.next() {
        let mut value = |name: &str| {
            args.next()
                .unwrap_or_else(|| die(&format!("{name} needs a value")))
        };
        match a.as_str() {
            "--port" => {
                port = value("--port")
                    .parse()
                    .unwrap_or_else(|_| die("--port takes a number"))
            }
            "--delay-ms" => {
                delay_ms = value("--delay-ms")
                    .parse()
                    .unwrap_or_else(|_| die("--delay-ms takes a number"))
            }
            "--fail-every" => {
                fail_every = value("--fail-every")
                    .parse()
                    .unwrap_or_else(|_| die("--fail-every takes a number"))
            }
            "--log" => log = Some(value("--log")),
            "--shell-steps" => {
                shell_steps = Some(
                    value("--shell-steps")
                        .parse()
                        .unwrap_or_else(|_| die("--shell-steps takes a number")),
                )
            }
            "--fence" => fence = value("--fence"),
            "--command" => command = value("--command"),
            "-h" | "--help" => {
                println!(
                    "trawl-mock-server [--port N] [--delay-ms N] [--fail-every N] [--log FILE] [--shell-steps N [--fence TAG] [--command CMD]]"
                );
                return;
            }
            other => die(&format!("unknown argument {other}")),
        }
    }
    // Benchmarks hold thousands of connections open at once.
    let _ = rlimit::increase_nofile_limit(u64::MAX);
    let runtime = tokio::runtime::Runtime::new()
        .unwrap_or_else(|e| die(&format!("cannot start runtime: {e}")));
    runtime.block_on(async move {
        let log_file = log.map(|p| {
            Arc::new(Mutex::new(
                std::fs::OpenOptions::new().create(true).append(true).open(&p).unwrap_or_else(|e| die(&format!("cannot open {p}: {e}"))),
            ))
        });
        let count = Arc::new(AtomicU64::new(0));
        let server = ScriptedServer::start_on(
            &format!("127.0.0.1:{port}"),
            Arc::new(move |body| {
                let n = count.fetch_add(1, Ordering::Relaxed) + 1;
                if let Some(f) = &log_file {
                    let t = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map(|d| d.as_secs_f64()).unwrap_or(0.0);
                    let line = serde_json::json!({"n": n, "t": t, "seed": body.get("seed"), "messages": body["messages"].as_array().map(|m| m.len())});
                    let mut f = f.lock().unwrap_or_else(|p| p.into_inner());
                    let _ = writeln!(f, "{line}");
                }
                let reply = if fail_every > 0 && n.is_multiple_of(fail_every) {
                    Reply::status(500, r#"{"error":{"message":"injected failure"}}"#)
                } else if let Some(steps) = shell_steps {
                    shell_steps_policy(body, steps, &fence, &command)
                } else {
                    adder_policy(body)
                };
                if delay_ms > 0 {
                    Reply::Delayed(Duration::from_millis(delay_ms), Box::new(reply))
                } else {
                    reply
                }
            }),
        )
        .await
        .unwrap_or_else(|e| die(&format!("cannot listen: {e}")));
        println!("listening on {}", server.base_url());
        let _ = std::io::stdout().flush();
        let _ = tokio::signal::ctrl_c().await;
    });
}

fn die(msg: &str) -> ! {
    eprintln!("trawl-mock-server: {msg}");
    std::process::exit(2)
}

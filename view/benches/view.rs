//! What looking at a 100,000-record run costs: `trawl report` (read, stats, render the HTML) and
//! `trawl view` (index the run, then list pages, filter, sort, search text, open a rollout,
//! label one), each in a process of its own so that its peak memory is its own.
//! `cargo bench -p trawl-view --bench view`; figures go in BENCHMARKS.md.

#![allow(clippy::unwrap_used)]

use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::Instant;

use trawl_core::store;

const RECORDS: usize = 100_000;
const PART: &str = "TRAWL_VIEW_BENCH_PART";

/// Peak and current resident memory of process `pid` ("self" for this one), in MiB.
fn memory(pid: &str) -> (f64, f64) {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap_or_default();
    let kb = |field: &str| {
        status
            .lines()
            .find_map(|l| l.strip_prefix(field))
            .and_then(|v| v.trim().trim_end_matches("kB").trim().parse::<f64>().ok())
            .unwrap_or(f64::NAN)
            / 1024.0
    };
    (kb("VmHWM:"), kb("VmRSS:"))
}

fn main() {
    match std::env::var(PART).as_deref() {
        Ok("report") => return report(Path::new(&std::env::var("RUN").unwrap())),
        Ok("view") => return view(Path::new(&std::env::var("RUN").unwrap())),
        _ => {}
    }
    let dir = tempfile::tempdir().unwrap();
    let run = dir.path().join("run");
    std::fs::create_dir(&run).unwrap();
    {
        let mut f =
            std::io::BufWriter::new(std::fs::File::create(run.join(store::TRAJECTORIES)).unwrap());
        for r in trawl_core::strategies::short_rollouts(RECORDS) {
            serde_json::to_writer(&mut f, &r).unwrap();
            f.write_all(b"\n").unwrap();
        }
        f.flush().unwrap();
    }
    let size = std::fs::metadata(run.join(store::TRAJECTORIES))
        .unwrap()
        .len();
    println!(
        "{RECORDS} records, trajectories.jsonl {:.0} MiB ({:.0} bytes a record)",
        size as f64 / 1048576.0,
        size as f64 / RECORDS as f64
    );
    let me = std::env::current_exe().unwrap();
    let child = |part: &str| {
        let mut c = Command::new(&me);
        c.env(PART, part).env("RUN", &run);
        c
    };
    let out = child("report").output().unwrap();
    print!("{}", String::from_utf8_lossy(&out.stdout));
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );

    let mut viewer = child("view").stdout(Stdio::piped()).spawn().unwrap();
    let mut first = String::new();
    std::io::BufRead::read_line(
        &mut std::io::BufReader::new(viewer.stdout.as_mut().unwrap()),
        &mut first,
    )
    .unwrap();
    print!("{first}");
    let addr = first.split_whitespace().last().unwrap().to_string();
    let pid = viewer.id().to_string();
    tokio::runtime::Runtime::new()
        .unwrap()
        .block_on(requests(&addr, &pid));
    let _ = viewer.kill();
    let _ = viewer.wait();
}

/// `trawl report` as the command does it: read the run, compute its stats, render, write.
fn report(run: &Path) {
    let t = Instant::now();
    let (records, _) = store::read_records(&run.join(store::TRAJECTORIES)).unwrap();
    let read = t.elapsed().as_secs_f64();
    let stats = trawl_core::stats::compute(&records);
    let html = trawl_view::report::render(&[("run".into(), records, stats)]);
    store::write_atomic(&run.join("report.html"), html.as_bytes()).unwrap();
    let (peak, _) = memory("self");
    println!(
        "trawl report: {:.2} s in all (reading {read:.2} s), {:.1} MiB of HTML, peak memory {peak:.0} MiB",
        t.elapsed().as_secs_f64(),
        html.len() as f64 / 1048576.0
    );
}

/// `trawl view` as the command does it: index, then serve.
fn view(run: &Path) {
    let t = Instant::now();
    let viewer = trawl_view::Viewer::open(&[PathBuf::from(run)]).unwrap();
    let secs = t.elapsed().as_secs_f64();
    let rt = tokio::runtime::Runtime::new().unwrap();
    rt.block_on(async move {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let (peak, now) = memory("self");
        println!(
            "trawl view: indexed {} rollouts in {secs:.2} s, memory {now:.0} MiB (peak {peak:.0} MiB), serving {}",
            viewer.rollouts(),
            listener.local_addr().unwrap()
        );
        viewer.serve(listener, std::future::pending()).await.unwrap();
    });
}

async fn requests(addr: &str, pid: &str) {
    let client = reqwest::Client::new();
    let base = format!("http://{addr}");
    let timed = |what: &'static str, path: String, post: Option<serde_json::Value>| {
        let client = client.clone();
        let url = format!("{base}{path}");
        async move {
            // The median of 5, after one warm-up request.
            let mut times = Vec::new();
            let mut body = serde_json::Value::Null;
            for _ in 0..6 {
                let t = Instant::now();
                let req = match &post {
                    Some(b) => client.post(&url).json(b),
                    None => client.get(&url),
                };
                let res = req.send().await.unwrap();
                assert!(res.status().is_success(), "{url}: {}", res.status());
                body = res.json().await.unwrap();
                times.push(t.elapsed().as_secs_f64());
            }
            let first = times[0];
            times.sort_by(f64::total_cmp);
            println!(
                "  {what:<52} first {:>7.1} ms, then median {:>7.1} ms",
                first * 1e3,
                times[3] * 1e3
            );
            body
        }
    };
    timed("runs and facets", "/api/runs".into(), None).await;
    timed("first page (50 rows)", "/api/rollouts".into(), None).await;
    timed(
        "page 1,000, sorted by reward",
        "/api/rollouts?sort=-reward&offset=50000".into(),
        None,
    )
    .await;
    let body = timed(
        "filter: success, one scaffold, reward range",
        "/api/rollouts?outcome=success&scaffold=chat&min_reward=0.5&max_reward=1".into(),
        None,
    )
    .await;
    println!("    ({} rollouts match)", body["total"]);
    let body = timed(
        "text search over every record (\"t4321\")",
        "/api/rollouts?q=t4321".into(),
        None,
    )
    .await;
    println!("    ({} rollouts match)", body["total"]);
    timed(
        "the next page of that search",
        "/api/rollouts?q=t4321&offset=10&limit=10".into(),
        None,
    )
    .await;
    timed(
        "open one rollout (with its task's others)",
        "/api/rollouts/0/77777".into(),
        None,
    )
    .await;
    timed(
        "label one rollout",
        "/api/rollouts/0/77777/label".into(),
        Some(serde_json::json!({"verdict": "reject", "note": "bench"})),
    )
    .await;
    let (peak, now) = memory(pid);
    println!("trawl view after these requests: memory {now:.0} MiB (peak {peak:.0} MiB)");
}

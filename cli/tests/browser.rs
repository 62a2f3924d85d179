//! The HTML report in a real headless Chromium (Debian's `chromium`, installed by .ci/run): it
//! renders with non-blank charts, and the page the browser builds holds the numbers of
//! `trawl stats --json`.
#![allow(clippy::unwrap_used)] // tests: a failed unwrap is a failed test

use std::path::Path;
use std::process::Command;
use std::sync::Arc;

use serde_json::Value;
use trawl_tests::{adder_policy, ScriptedServer};

mod common;
use common::trawl_ok;

fn chromium() -> &'static str {
    for c in ["chromium", "chromium-browser"] {
        if Command::new(c)
            .arg("--version")
            .output()
            .is_ok_and(|o| o.status.success())
        {
            return c;
        }
    }
    panic!("the browser tests need Debian's chromium: apt-get install -y chromium (.ci/run does)")
}

fn headless(args: &[&str], page: &Path) -> std::process::Output {
    let profile = tempfile::tempdir().unwrap();
    let out = Command::new(chromium())
        .args([
            "--headless",
            "--no-sandbox",
            "--disable-gpu",
            "--hide-scrollbars",
        ])
        .arg(format!("--user-data-dir={}", profile.path().display()))
        .args(args)
        .arg(format!("file://{}", page.display()))
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    out
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_report_renders_in_chromium_with_charts_and_the_stats_numbers() {
    let server = ScriptedServer::start(Arc::new(adder_policy)).await.unwrap();
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    std::fs::write(
        d.join("exp.toml"),
        format!(
            "name = \"b\"\nsamples = 4\n\n[[environments]]\ntype = \"math\"\ngenerator = {{ count = 12, levels = [1, 2] }}\n\n[[scaffolds]]\ntype = \"chat\"\n\n[[models]]\ntype = \"openai\"\nname = \"mock\"\nbase_url = \"{}\"\nmodel = \"mock\"\n",
            server.base_url()
        ),
    )
    .unwrap();
    let run = |args: &[&str]| trawl_ok(args, d);
    run(&["run", "exp.toml", "--quiet"]);
    run(&["report", "runs/b", "-o", "report.html"]);
    let page = d.join("report.html");

    // A screenshot whose chart area is not blank: the bars and lines are drawn.
    let shot = d.join("shot.png");
    headless(
        &[
            &format!("--screenshot={}", shot.display()),
            "--window-size=1200,900",
        ],
        &page,
    );
    let decoder = png::Decoder::new(std::io::BufReader::new(std::fs::File::open(&shot).unwrap()));
    let mut reader = decoder.read_info().unwrap();
    let mut buf = vec![0; reader.output_buffer_size().unwrap()];
    let info = reader.next_frame(&mut buf).unwrap();
    let channels = info.line_size / info.width as usize;
    let chart_blue = buf[..info.buffer_size()]
        .chunks(channels)
        .filter(|p| p[2] > 150 && p[0] < 110 && p[1] < 140)
        .count();
    let total = (info.width * info.height) as usize;
    assert!(
        chart_blue > total / 200,
        "the charts' blue covers {chart_blue} of {total} pixels"
    );

    // The page Chromium builds (scripts run) shows the stats' numbers.
    let dom = String::from_utf8(headless(&["--dump-dom"], &page).stdout).unwrap();
    let stats: Value = serde_json::from_slice(&run(&["stats", "runs/b", "--json"]).stdout).unwrap();
    let g = &stats["groups"][0];
    assert!(dom.matches("<svg").count() >= 6, "charts in the page");
    assert!(dom.contains(&format!("data-successes=\"{}\"", g["successes"])));
    assert!(
        dom.contains(&format!(
            "<td>{}</td><td>{}</td>",
            g["rollouts"], g["tasks"]
        )),
        "rollouts and tasks of the group"
    );
}

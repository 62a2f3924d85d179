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

/// A folder holding `runs/NAME`: `count` generated math problems (levels 1 to 3), `samples`
/// each, answered by a scripted server on 127.0.0.1 that adds the first two numbers it sees.
async fn math_run(name: &str, count: usize, samples: usize) -> tempfile::TempDir {
    math_run_of(name, "mock", count, samples).await
}

/// [`math_run`] with the model named `model` (a TOML basic string's content).
async fn math_run_of(name: &str, model: &str, count: usize, samples: usize) -> tempfile::TempDir {
    let server = ScriptedServer::start(Arc::new(adder_policy)).await.unwrap();
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(
        dir.path().join("exp.toml"),
        format!(
            "name = \"{name}\"\nsamples = {samples}\n\n[[environments]]\ntype = \"math\"\ngenerator = {{ count = {count}, levels = [1, 2, 3] }}\n\n[[scaffolds]]\ntype = \"chat\"\n\n[[models]]\ntype = \"openai\"\nname = \"{model}\"\nbase_url = \"{}\"\nmodel = \"mock\"\n",
            server.base_url()
        ),
    )
    .unwrap();
    trawl_ok(&["run", "exp.toml", "--quiet"], dir.path());
    dir
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_report_renders_in_chromium_with_charts_and_the_stats_numbers() {
    let dir = math_run("b", 12, 4).await;
    let d = dir.path();
    let run = |args: &[&str]| trawl_ok(args, d);
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

/// A model named `m<!--<script>` (the name rules allow it) would put the HTML tokenizer into
/// the script-data-escaped state inside the embedded stats, which then swallow the rest of the
/// page and the report's own script. In Chromium the page keeps its two scripts, the stats read
/// back with the name, the group row shows it as text, and a click on a header sorts (the
/// report's script ran).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_hostile_model_name_leaves_the_reports_page_and_script_whole_in_chromium() {
    const MODEL: &str = "m<!--<script>";
    let dir = math_run_of("h", MODEL, 4, 2).await;
    let d = dir.path();
    trawl_ok(&["report", "runs/h", "-o", "report.html"], d);
    let profile = tempfile::tempdir().unwrap();
    let browser = headless_chrome::Browser::new(
        headless_chrome::LaunchOptions::default_builder()
            .path(Some(which_chromium()))
            .sandbox(false)
            .headless(true)
            .user_data_dir(Some(profile.path().to_path_buf()))
            .build()
            .unwrap(),
    )
    .unwrap();
    let tab = browser.new_tab().unwrap();
    tab.set_default_timeout(std::time::Duration::from_secs(20));
    tab.navigate_to(&format!("file://{}", d.join("report.html").display()))
        .unwrap();
    tab.wait_until_navigated().unwrap();
    let eval = |js: &str| {
        tab.evaluate(js, false)
            .unwrap()
            .value
            .unwrap_or(Value::Null)
    };
    assert_eq!(eval("document.scripts.length"), Value::from(2));
    assert_eq!(
        eval("JSON.parse(document.getElementById('trawl-stats').textContent)[0].groups[0].group.model"),
        Value::from(MODEL)
    );
    let row = eval("document.querySelector('table.groups tbody td').textContent");
    assert!(
        row.as_str().unwrap().contains(&format!("model={MODEL}")),
        "{row}"
    );
    tab.wait_for_element("table.groups th")
        .unwrap()
        .click()
        .unwrap();
    assert_eq!(
        eval("document.querySelector('table.groups th').dataset.asc"),
        Value::from("1"),
        "the report's script sorts on a click"
    );
}

/// `trawl view` serving `runs` on a free port, stopped when dropped.
struct Viewing {
    child: std::process::Child,
    url: String,
}

impl Viewing {
    fn start(runs: &[&str], cwd: &Path) -> Self {
        use std::io::BufRead;
        let mut child = Command::new(common::TRAWL)
            .arg("view")
            .args(runs)
            .args(["--port", "0"])
            .current_dir(cwd)
            .stdin(std::process::Stdio::null())
            .stderr(std::process::Stdio::piped())
            .spawn()
            .unwrap();
        let mut lines = std::io::BufReader::new(child.stderr.take().unwrap()).lines();
        let url = loop {
            let line = lines
                .next()
                .expect("trawl view says where it serves")
                .unwrap();
            if let Some(rest) = line.strip_prefix("trawl view: ") {
                break rest.split_whitespace().next().unwrap().to_string();
            }
        };
        // Keep draining its stderr so that it never blocks on a full pipe.
        std::thread::spawn(move || lines.for_each(drop));
        Viewing { child, url }
    }
}

impl Drop for Viewing {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// Sets the `<select>` at `selector` to `value` (a JavaScript expression, `this` being the
/// select) and fires its change event, as choosing an option does.
fn choose(tab: &headless_chrome::Tab, selector: &str, value: &str) {
    tab.wait_for_element(selector)
        .unwrap()
        .call_js_fn(
            &format!(
                "function () {{ this.value = {value}; this.dispatchEvent(new Event('change')); }}"
            ),
            vec![],
            false,
        )
        .unwrap();
}

/// Polls `js` in the page until it gives `want` (the page loads lists asynchronously).
fn wait_for_value(tab: &headless_chrome::Tab, js: &str, want: &Value) -> Value {
    let mut last = Value::Null;
    for _ in 0..100 {
        last = tab
            .evaluate(js, false)
            .unwrap()
            .value
            .unwrap_or(Value::Null);
        if &last == want {
            return last;
        }
        std::thread::sleep(std::time::Duration::from_millis(100));
    }
    panic!("`{js}` is {last}, not {want}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_viewer_lists_filters_opens_and_labels_in_chromium() {
    let dir = math_run("v", 30, 2).await;
    let d = dir.path();
    let run = |args: &[&str]| trawl_ok(args, d);
    let stats: Value = serde_json::from_slice(&run(&["stats", "runs/v", "--json"]).stdout).unwrap();
    let g = &stats["groups"][0];
    let (rollouts, successes) = (
        g["rollouts"].as_u64().unwrap(),
        g["successes"].as_u64().unwrap(),
    );
    assert!(successes > 0 && successes < rollouts, "{g}");
    run(&["export", "runs/v", "-o", "before.jsonl"]);
    let before = common::jsonl(&d.join("before.jsonl")).len();

    let viewing = Viewing::start(&["runs/v"], d);
    let profile = tempfile::tempdir().unwrap();
    let browser = headless_chrome::Browser::new(
        headless_chrome::LaunchOptions::default_builder()
            .path(Some(which_chromium()))
            .sandbox(false)
            .headless(true)
            .window_size(Some((1400, 900)))
            .user_data_dir(Some(profile.path().to_path_buf()))
            .build()
            .unwrap(),
    )
    .unwrap();
    let tab = browser.new_tab().unwrap();
    tab.set_default_timeout(std::time::Duration::from_secs(20));
    tab.navigate_to(&viewing.url).unwrap();
    tab.wait_until_navigated().unwrap();

    // Lists: every rollout of the run, a page of rows.
    let total = "Number(document.querySelector('#total').dataset.total)";
    wait_for_value(&tab, total, &Value::from(rollouts));
    tab.wait_for_element("#rows tr.row").unwrap();
    let rows = tab.find_elements("#rows tr.row").unwrap().len() as u64;
    assert_eq!(rows, rollouts.min(50));

    // Filters: the successes, as many as `trawl stats` counts.
    choose(&tab, "#f-outcome", "'success'");
    wait_for_value(&tab, total, &Value::from(successes));
    let outcomes = "Array.from(document.querySelectorAll('#rows tr.row td:nth-child(6)')).every(td => td.textContent === 'success')";
    wait_for_value(&tab, outcomes, &Value::Bool(true));

    // Opens: the first success as a conversation, with its evaluation.
    tab.wait_for_element("#rows tr.row")
        .unwrap()
        .click()
        .unwrap();
    tab.wait_for_element(".pane .msg.assistant").unwrap();
    let shown = tab
        .wait_for_element(".pane h2")
        .unwrap()
        .get_inner_text()
        .unwrap();
    assert!(shown.starts_with("math / chat / mock /"), "{shown}");
    let evals = tab
        .wait_for_element("table.evals")
        .unwrap()
        .get_inner_text()
        .unwrap();
    assert!(evals.contains("success"), "{evals}");

    // Side by side: the other sample of the same task, chosen from the compare menu.
    choose(&tab, "#compare", "this.options[1].value");
    wait_for_value(
        &tab,
        "document.querySelectorAll('.panes.two .pane').length",
        &Value::from(2),
    );
    let tasks = "JSON.stringify(Array.from(document.querySelectorAll('.pane h2')).map(h => h.textContent.replace(/ #\\d+$/, '')))";
    let tasks = tab.evaluate(tasks, false).unwrap().value.unwrap();
    let tasks: Vec<String> = serde_json::from_str(tasks.as_str().unwrap()).unwrap();
    assert_eq!(tasks[0], tasks[1], "the same task on both sides");

    // Labels: a reviewer rejects it with a note through the page.
    tab.wait_for_element("#label-note")
        .unwrap()
        .click()
        .unwrap();
    tab.type_str("right answer, wrong working").unwrap();
    tab.wait_for_element("#label-reject")
        .unwrap()
        .click()
        .unwrap();
    wait_for_value(
        &tab,
        "document.querySelector('#label-status').dataset.saved || null",
        &Value::from("reject"),
    );
    drop(viewing);

    // It landed in the run directory ...
    let labels = common::jsonl(&d.join("runs/v/labels.jsonl"));
    assert_eq!(labels.len(), 1);
    assert_eq!(labels[0]["verdict"], "reject");
    assert_eq!(labels[0]["note"], "right answer, wrong working");
    // ... and changes an export: the rejected rollout is left out.
    let out = run(&["export", "runs/v", "-o", "after.jsonl", "--labels"]);
    let after = common::jsonl(&d.join("after.jsonl")).len();
    assert_eq!(
        after,
        before - 1,
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let stats = common::json_file(&d.join("after_stats.json"));
    assert_eq!(stats["dropped"]["rejected_by_reviewer"], 1, "{stats}");
}

fn which_chromium() -> std::path::PathBuf {
    let name = chromium();
    std::env::var_os("PATH")
        .and_then(|paths| {
            std::env::split_paths(&paths)
                .map(|p| p.join(name))
                .find(|p| p.is_file())
        })
        .expect("chromium on PATH")
}

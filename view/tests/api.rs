//! The viewer's API over real HTTP on 127.0.0.1: filters, text search, sorting and paging agree
//! with the records; a rollout opens whole with the other rollouts of its task; a label lands in
//! the run's labels.jsonl; requests from elsewhere are refused; a growing run is followed.
#![allow(clippy::unwrap_used)] // tests: a failed unwrap is a failed test

use std::collections::HashSet;
use std::io::Write;
use std::path::Path;

use serde_json::{json, Value};
use trawl_core::labels::{Labels, Verdict};
use trawl_core::{ExitStatus, Message, TrajectoryRecord};
use trawl_view::Viewer;

const N: usize = 240;

fn record(i: usize) -> TrajectoryRecord {
    let mut r = trawl_core::strategies::example_record();
    r.key.environment = if i.is_multiple_of(2) { "math" } else { "code" }.into();
    r.key.scaffold = if i % 4 < 2 { "chat" } else { "tool_calling" }.into();
    r.key.model = "m".into();
    r.key.task = format!("t{}", i / 4);
    r.key.sample = (i % 4 / 2) as u32;
    r.outcome.exit_status = match i % 10 {
        7 => ExitStatus::LimitsExceeded,
        9 => ExitStatus::InfraError,
        _ => ExitStatus::Submitted,
    };
    r.success = i.is_multiple_of(3) && i % 10 < 7;
    r.reward = (i % 5) as f64 / 4.0;
    r.evaluations.clear();
    r.evaluations.push(trawl_core::Evaluation {
        evaluator: "math_answer".into(),
        reward: r.reward,
        success: r.success,
        components: Default::default(),
        details: Value::Null,
    });
    r.messages = vec![
        Message::user(format!("Question {i}: what is \"x\"?\nThink.")),
        Message::assistant(format!("Marker-{i} and the Answer")),
    ];
    r
}

fn write_run(dir: &Path, records: &[TrajectoryRecord]) {
    let mut f = std::fs::File::create(dir.join("trajectories.jsonl")).unwrap();
    for r in records {
        writeln!(f, "{}", serde_json::to_string(r).unwrap()).unwrap();
    }
}

struct Served {
    base: String,
    client: reqwest::Client,
    _stop: tokio::sync::oneshot::Sender<()>,
}

impl Served {
    async fn start(runs: &[&Path]) -> Self {
        let paths: Vec<_> = runs.iter().map(|p| p.to_path_buf()).collect();
        let viewer = Viewer::open(&paths).unwrap();
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let base = format!("http://{}", listener.local_addr().unwrap());
        let (stop, rx) = tokio::sync::oneshot::channel::<()>();
        tokio::spawn(viewer.serve(listener, async {
            let _ = rx.await;
        }));
        Served {
            base,
            client: reqwest::Client::new(),
            _stop: stop,
        }
    }

    async fn get(&self, path: &str) -> (u16, Value) {
        let res = self
            .client
            .get(format!("{}{path}", self.base))
            .send()
            .await
            .unwrap();
        let status = res.status().as_u16();
        (status, res.json().await.unwrap_or(Value::Null))
    }

    async fn ok(&self, path: &str) -> Value {
        let (status, body) = self.get(path).await;
        assert_eq!(status, 200, "{path}: {body}");
        body
    }

    /// Every id the filter selects, page by page.
    async fn all_ids(&self, filter: &str) -> Vec<String> {
        let mut ids = Vec::new();
        let mut offset = 0;
        loop {
            let page = self
                .ok(&format!("/api/rollouts?{filter}&offset={offset}&limit=37"))
                .await;
            let rows = page["rollouts"].as_array().unwrap();
            ids.extend(rows.iter().map(|r| r["id"].as_str().unwrap().to_string()));
            offset += 37;
            if offset >= page["total"].as_u64().unwrap() as usize {
                assert_eq!(ids.len() as u64, page["total"].as_u64().unwrap());
                return ids;
            }
        }
    }
}

fn ids_where(
    records: &[TrajectoryRecord],
    keep: impl Fn(usize, &TrajectoryRecord) -> bool,
) -> Vec<String> {
    records
        .iter()
        .enumerate()
        .filter(|(i, r)| keep(*i, r))
        .map(|(i, _)| format!("0/{i}"))
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn filters_search_sort_and_pages_agree_with_the_records() {
    let dir = tempfile::tempdir().unwrap();
    let records: Vec<_> = (0..N).map(record).collect();
    write_run(dir.path(), &records);
    let s = Served::start(&[dir.path()]).await;

    let runs = s.ok("/api/runs").await;
    assert_eq!(runs["runs"][0]["rollouts"], N);
    assert_eq!(runs["facets"]["environment"]["math"], N / 2);
    let infra = records
        .iter()
        .filter(|r| r.outcome.exit_status == ExitStatus::InfraError)
        .count();
    assert_eq!(runs["facets"]["outcome"]["unfinished"], infra);

    // Each filter alone and together, against the records themselves.
    let successes = ids_where(&records, |_, r| r.is_final() && r.success);
    assert_eq!(s.all_ids("outcome=success").await, successes);
    let failures = ids_where(&records, |_, r| r.is_final() && !r.success);
    assert_eq!(s.all_ids("outcome=failure").await, failures);
    let mixed = ids_where(&records, |_, r| {
        r.key.environment == "code"
            && r.key.scaffold == "tool_calling"
            && r.reward >= 0.5
            && r.reward <= 0.75
            && r.outcome.exit_status == ExitStatus::Submitted
    });
    assert!(!mixed.is_empty());
    assert_eq!(
        s.all_ids("environment=code&scaffold=tool_calling&min_reward=0.5&max_reward=0.75&exit_status=Submitted")
            .await,
        mixed
    );
    assert_eq!(
        s.all_ids("task=t1").await,
        ids_where(&records, |_, r| r.key.task.contains("t1"))
    );

    // Text anywhere in the rollout, any case, including text JSON escapes.
    assert_eq!(
        s.all_ids("q=MARKER-7%20and").await,
        ids_where(&records, |i, _| i == 7)
    );
    assert_eq!(
        s.all_ids("q=marker-7").await,
        ids_where(&records, |i, _| format!("{i}").starts_with('7'))
    );
    assert_eq!(
        s.all_ids("q=%22x%22%3F%0AThink&environment=math").await,
        ids_where(&records, |_, r| r.key.environment == "math")
    );
    assert_eq!(s.all_ids("q=nowhere-in-any-record").await.len(), 0);

    // Sorted high to low, every row once.
    let mut last = f64::INFINITY;
    let mut seen = HashSet::new();
    for offset in (0..N).step_by(100) {
        let page = s
            .ok(&format!(
                "/api/rollouts?sort=-reward&offset={offset}&limit=100"
            ))
            .await;
        for row in page["rollouts"].as_array().unwrap() {
            let reward = row["reward"].as_f64().unwrap();
            assert!(reward <= last);
            last = reward;
            assert!(seen.insert(row["id"].as_str().unwrap().to_string()));
        }
    }
    assert_eq!(seen.len(), N);

    // Bad parameters are answered with what is wrong.
    let (status, body) = s.get("/api/rollouts?min_reward=high").await;
    assert_eq!(status, 400);
    assert!(
        body["error"].as_str().unwrap().contains("min_reward"),
        "{body}"
    );
    let (status, body) = s.get("/api/rollouts?colour=red").await;
    assert_eq!(status, 400);
    assert!(body["error"].as_str().unwrap().contains("colour"), "{body}");
    let (status, body) = s.get(&format!("/api/rollouts/0/{N}")).await;
    assert_eq!(status, 400);
    assert!(
        body["error"].as_str().unwrap().contains("no number"),
        "{body}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_rollout_opens_whole_with_its_task_in_every_run() {
    let a = tempfile::tempdir().unwrap();
    let b = tempfile::tempdir().unwrap();
    let records: Vec<_> = (0..N).map(record).collect();
    write_run(a.path(), &records);
    write_run(b.path(), &records[..8]);
    let s = Served::start(&[a.path(), b.path()]).await;
    let d = s.ok("/api/rollouts/0/4").await;
    assert_eq!(
        d["record"]["key"],
        serde_json::to_value(&records[4].key).unwrap()
    );
    assert_eq!(
        d["record"]["messages"][1]["content"],
        "Marker-4 and the Answer"
    );
    assert_eq!(d["line"], 5);
    // Task t1 of math is records 4 and 6 (chat and tool_calling), in both runs.
    let siblings: HashSet<String> = d["siblings"]
        .as_array()
        .unwrap()
        .iter()
        .map(|x| x["id"].as_str().unwrap().to_string())
        .collect();
    let opened = &records[4].key;
    let mut expected = HashSet::new();
    for (run, recs) in [(0, &records[..]), (1, &records[..8])] {
        for (i, r) in recs.iter().enumerate() {
            if r.key.task == opened.task
                && r.key.environment == opened.environment
                && (run, i) != (0, 4)
            {
                expected.insert(format!("{run}/{i}"));
            }
        }
    }
    assert!(
        expected.contains("1/4"),
        "the same rollout in the other run"
    );
    assert_eq!(siblings, expected);
    // The run filter keeps to one run.
    assert_eq!(s.ok("/api/rollouts?run=1").await["total"], 8);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn labels_land_in_the_run_directory_and_foreign_requests_are_refused() {
    let dir = tempfile::tempdir().unwrap();
    let records: Vec<_> = (0..N).map(record).collect();
    write_run(dir.path(), &records);
    let s = Served::start(&[dir.path()]).await;
    let post = |path: &str, body: Value| {
        s.client
            .post(format!("{}{path}", s.base))
            .json(&body)
            .send()
    };
    let res = post(
        "/api/rollouts/0/3/label",
        json!({"verdict": "reject", "note": "answers the wrong question"}),
    )
    .await
    .unwrap();
    assert_eq!(res.status(), 200);
    let res = post("/api/rollouts/0/6/label", json!({"verdict": "accept"}))
        .await
        .unwrap();
    assert_eq!(res.status(), 200);
    let labels = Labels::read(dir.path()).unwrap();
    let l = labels.get(&records[3].key).unwrap();
    assert_eq!(
        (l.verdict, l.note.as_str()),
        (Verdict::Reject, "answers the wrong question")
    );
    assert_eq!(
        labels.get(&records[6].key).unwrap().verdict,
        Verdict::Accept
    );
    assert_eq!(s.all_ids("label=reject").await, vec!["0/3".to_string()]);
    assert_eq!(s.all_ids("label=none").await.len(), N - 2);
    let row = &s.ok("/api/rollouts?label=accept").await["rollouts"][0];
    assert_eq!(row["label"]["verdict"], "accept");

    // Clear takes a decision back; the file keeps every decision.
    let res = post("/api/rollouts/0/6/label", json!({"verdict": "clear"}))
        .await
        .unwrap();
    assert_eq!(res.status(), 200);
    assert_eq!(s.all_ids("label=accept").await.len(), 0);
    let text = std::fs::read_to_string(dir.path().join("labels.jsonl")).unwrap();
    assert_eq!(text.lines().count(), 3);

    // A bad verdict, a form post, a foreign origin or host: refused, nothing written.
    let res = post("/api/rollouts/0/3/label", json!({"verdict": "maybe"}))
        .await
        .unwrap();
    assert_eq!(res.status(), 400);
    assert!(res
        .text()
        .await
        .unwrap()
        .contains("accept, reject or clear"));
    let form = s
        .client
        .post(format!("{}/api/rollouts/0/3/label", s.base))
        .header("content-type", "application/x-www-form-urlencoded")
        .body("verdict=accept")
        .send()
        .await
        .unwrap();
    assert_eq!(form.status(), 400);
    let foreign = s
        .client
        .post(format!("{}/api/rollouts/0/3/label", s.base))
        .header("origin", "http://evil.example")
        .json(&json!({"verdict": "accept"}))
        .send()
        .await
        .unwrap();
    assert_eq!(foreign.status(), 403);
    let rebound = s
        .client
        .get(format!("{}/api/runs", s.base))
        .header("host", "evil.example")
        .send()
        .await
        .unwrap();
    assert_eq!(rebound.status(), 403);
    let text = std::fs::read_to_string(dir.path().join("labels.jsonl")).unwrap();
    assert_eq!(text.lines().count(), 3, "{text}");
}

/// A label is JSON's own media type or nothing: `application/jsonp` (which only starts the same)
/// is refused; parameters and any case are fine. A `labels.jsonl` planted as a symbolic link is
/// refused with a message naming it, and the file it points to outside the run is untouched.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn labels_need_json_and_never_follow_a_planted_link() {
    let dir = tempfile::tempdir().unwrap();
    let run = dir.path().join("run");
    std::fs::create_dir(&run).unwrap();
    let records: Vec<_> = (0..8).map(record).collect();
    write_run(&run, &records);
    let s = Served::start(&[&run]).await;
    let send = |content_type: &str| {
        s.client
            .post(format!("{}/api/rollouts/0/1/label", s.base))
            .header("content-type", content_type)
            .body(r#"{"verdict": "accept"}"#)
            .send()
    };
    let jsonp = send("application/jsonp").await.unwrap();
    assert_eq!(jsonp.status(), 400);
    assert!(jsonp.text().await.unwrap().contains("application/json"));
    assert!(!run.join("labels.jsonl").exists(), "nothing written");
    for accepted in ["application/json; charset=utf-8", "Application/JSON"] {
        let res = send(accepted).await.unwrap();
        assert_eq!(res.status(), 200, "{accepted}");
    }
    let text = std::fs::read_to_string(run.join("labels.jsonl")).unwrap();
    assert_eq!(text.lines().count(), 2, "{text}");

    // The link replaces the labels file; the viewer must not write through it.
    let outside = dir.path().join("outside.txt");
    std::fs::write(&outside, "not the run's\n").unwrap();
    std::fs::remove_file(run.join("labels.jsonl")).unwrap();
    std::os::unix::fs::symlink(&outside, run.join("labels.jsonl")).unwrap();
    let res = send("application/json").await.unwrap();
    assert_eq!(res.status(), 409);
    let error = res.json::<Value>().await.unwrap()["error"]
        .as_str()
        .unwrap()
        .to_string();
    assert!(
        error.contains("labels.jsonl") && error.contains("symbolic link"),
        "{error}"
    );
    assert_eq!(
        std::fs::read_to_string(&outside).unwrap(),
        "not the run's\n"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_growing_or_rewritten_run_is_followed() {
    let dir = tempfile::tempdir().unwrap();
    let records: Vec<_> = (0..20).map(record).collect();
    write_run(dir.path(), &records[..10]);
    let s = Served::start(&[dir.path()]).await;
    assert_eq!(s.ok("/api/rollouts").await["total"], 10);

    // Appended lines are indexed; a line still being written is not, until it is whole.
    let path = dir.path().join("trajectories.jsonl");
    let mut f = std::fs::OpenOptions::new()
        .append(true)
        .open(&path)
        .unwrap();
    writeln!(f, "{}", serde_json::to_string(&records[10]).unwrap()).unwrap();
    let half = serde_json::to_string(&records[11]).unwrap();
    f.write_all(&half.as_bytes()[..half.len() / 2]).unwrap();
    f.flush().unwrap();
    assert_eq!(s.ok("/api/rollouts").await["total"], 11);
    f.write_all(&half.as_bytes()[half.len() / 2..]).unwrap();
    f.write_all(b"\n").unwrap();
    f.flush().unwrap();
    assert_eq!(s.ok("/api/rollouts").await["total"], 12);
    assert_eq!(
        s.ok("/api/rollouts/0/11").await["record"]["key"],
        serde_json::to_value(&records[11].key).unwrap()
    );

    // A rewritten file (as a resume does, through rename) is indexed again.
    let tmp = dir.path().join("t.tmp");
    std::fs::write(
        &tmp,
        records[12..15]
            .iter()
            .map(|r| serde_json::to_string(r).unwrap() + "\n")
            .collect::<String>(),
    )
    .unwrap();
    std::fs::rename(&tmp, &path).unwrap();
    assert_eq!(s.ok("/api/rollouts").await["total"], 3);
    assert_eq!(
        s.ok("/api/rollouts/0/0").await["record"]["key"],
        serde_json::to_value(&records[12].key).unwrap()
    );

    // A damaged line is left out and named.
    let mut f = std::fs::OpenOptions::new()
        .append(true)
        .open(&path)
        .unwrap();
    writeln!(f, "{{\"schema\": 7}}").unwrap();
    let runs = s.ok("/api/runs").await;
    assert_eq!(runs["runs"][0]["rollouts"], 3);
    let damaged = runs["runs"][0]["damaged"][0].as_str().unwrap();
    assert!(damaged.contains("trajectories.jsonl:4"), "{damaged}");
}

/// A line an older trawl wrote with `"reward": null` (an overflowed sum) is listed and opens as
/// an infrastructure error that says why, instead of being left out or breaking the viewer.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_null_reward_line_opens_as_an_infrastructure_error() {
    let a = tempfile::tempdir().unwrap();
    let records: Vec<_> = (0..3).map(record).collect();
    write_run(a.path(), &records);
    let data = a.path().join("trajectories.jsonl");
    let text = std::fs::read_to_string(&data).unwrap();
    let mut lines: Vec<Value> = text
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    lines[1]["reward"] = Value::Null;
    lines[1]["evaluations"][0]["reward"] = Value::Null;
    let text: String = lines.iter().map(|v| format!("{v}\n")).collect();
    std::fs::write(&data, text).unwrap();

    let s = Served::start(&[a.path()]).await;
    assert_eq!(s.ok("/api/rollouts").await["total"], 3);
    let d = s.ok("/api/rollouts/0/1").await;
    assert_eq!(
        d["record"]["key"],
        serde_json::to_value(&records[1].key).unwrap()
    );
    assert_eq!(d["record"]["outcome"]["exit_status"], "InfraError", "{d}");
    let message = d["record"]["outcome"]["error"]["message"].as_str().unwrap();
    assert!(
        message.contains("`reward` is not a finite number"),
        "{message}"
    );
}

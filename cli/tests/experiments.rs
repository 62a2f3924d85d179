//! Experiments as a user runs them: a config mixing two environments (one from a plugin), two
//! scaffolds and a scoped plugin evaluator, run by the real `trawl` binary against a scripted
//! OpenAI-compatible server on 127.0.0.1; then `check`, `stats`, `diff` and `export --where`
//! on what it wrote.

#![allow(clippy::unwrap_used)] // tests: a failed unwrap is a failed test

use std::collections::{BTreeMap, BTreeSet};
use std::path::Path;
use std::process::Output;
use std::sync::Arc;

use serde_json::Value;
use trawl_tests::{adder_policy, first_user_message, plugin_library, Reply, ScriptedServer};

const TRAWL: &str = env!("CARGO_BIN_EXE_trawl");

fn lib(name: &str) -> String {
    plugin_library(name).to_string_lossy().into_owned()
}

fn trawl(args: &[&str], cwd: &Path) -> Output {
    trawl_tests::run_bin(TRAWL, args, cwd, &[])
}

fn text(o: &Output) -> String {
    trawl_tests::printed(o)
}

fn ok(args: &[&str], cwd: &Path) -> String {
    let o = trawl(args, cwd);
    assert!(o.status.success(), "trawl {args:?}:\n{}", text(&o));
    String::from_utf8_lossy(&o.stdout).into_owned()
}

/// Runs trawl expecting it to refuse its input (exit code 2); returns the error it printed
/// (stderr less the line `run` prints before it starts).
fn refused(args: &[&str], cwd: &Path) -> String {
    let o = trawl(args, cwd);
    assert_eq!(o.status.code(), Some(2), "trawl {args:?}:\n{}", text(&o));
    String::from_utf8_lossy(&o.stderr)
        .lines()
        .filter(|l| !l.starts_with("trawl: running"))
        .map(|l| format!("{l}\n"))
        .collect()
}

fn records(path: &Path) -> Vec<Value> {
    std::fs::read_to_string(path)
        .unwrap()
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect()
}

/// The generated problems of [`config`] (seed 11) with their answers.
fn answers() -> &'static [(String, i64)] {
    static ANSWERS: std::sync::OnceLock<Vec<(String, i64)>> = std::sync::OnceLock::new();
    ANSWERS.get_or_init(|| trawl_tests::generated_answers(11, &[1, 2], 16))
}

/// Word games: SLATE then CRANE. Math: the right answer, boxed, except that without tools it
/// gets odd answers wrong, and with tools multiples of three: the two scaffolds differ task by
/// task, both ways.
fn policy(body: &Value) -> Reply {
    let first = first_user_message(body);
    if first.contains("five-letter") {
        let guesses = trawl_tests::assistant_turns(body);
        return Reply::text(if guesses == 0 {
            "My first guess is SLATE"
        } else {
            "Then the answer is CRANE"
        });
    }
    let has_tools = body["tools"].as_array().is_some_and(|t| !t.is_empty());
    match answers().iter().find(|(q, _)| first.contains(q.as_str())) {
        Some((_, n)) => {
            let right = if has_tools { n % 3 != 0 } else { n % 2 == 0 };
            Reply::text(format!(
                "The answer is \\boxed{{{}}}.",
                if right { *n } else { n + 1 }
            ))
        }
        None => adder_policy(body),
    }
}

/// The worked example's shape: math and the plugin's word game × chat and tool calling, the
/// answer_format plugin evaluator scoped to math; `extra` is appended.
fn config(base_url: &str, extra: &str) -> String {
    format!(
        r#"name = "mix"
seed = 11
plugins = ["{game}", "{format}"]

[[environments]]
type = "math"
calculator = true
generator = {{ count = 16, levels = [1, 2] }}

[[environments]]
type = "word_game"
count = 2
max_guesses = 4
words = ["crane"]

[[scaffolds]]
type = "chat"
max_turns = 4

[[scaffolds]]
type = "tool_calling"
max_steps = 4

[[models]]
type = "openai"
name = "mock"
base_url = "{base_url}"
model = "mock"

[[evaluators]]
type = "answer_format"
name = "format"
environments = ["math"]
{extra}
"#,
        game = lib("trawl_word_game"),
        format = lib("trawl_answer_format"),
    )
}

const SKIP: &str = "[matrix]\nskip_incompatible = true\n";

/// Runs [`config`] renamed `name`, with `extra` after it, in `d`; returns its records.
fn run_named(d: &Path, base_url: &str, name: &str, extra: &str) -> Vec<Value> {
    let text = format!(
        "{}{extra}",
        config(base_url, "").replace("name = \"mix\"", &format!("name = \"{name}\""))
    );
    std::fs::write(d.join(format!("{name}.toml")), text).unwrap();
    ok(&["run", &format!("{name}.toml"), "--quiet"], d);
    records(&d.join(format!("runs/{name}/trajectories.jsonl")))
}

/// The worked example's shape run into `runs/mix` of a fresh folder: the server, the folder and
/// the records.
async fn mix_run() -> (ScriptedServer, tempfile::TempDir, Vec<Value>) {
    let server = ScriptedServer::start(Arc::new(policy)).await.unwrap();
    let dir = tempfile::tempdir().unwrap();
    let recs = run_named(dir.path(), &server.base_url(), "mix", SKIP);
    (server, dir, recs)
}

fn evaluators_of(r: &Value) -> Vec<String> {
    r["evaluations"]
        .as_array()
        .unwrap()
        .iter()
        .map(|e| e["evaluator"].as_str().unwrap().to_string())
        .collect()
}

fn evaluation<'a>(r: &'a Value, name: &str) -> Option<&'a Value> {
    r["evaluations"]
        .as_array()
        .unwrap()
        .iter()
        .find(|e| e["evaluator"] == name)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn incompatible_pairs_are_refused_with_both_fixes_or_skipped_and_listed() {
    let server = ScriptedServer::start(Arc::new(policy)).await.unwrap();
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();

    // Without a matrix: refused, telling the config author and the environment author what to do.
    std::fs::write(d.join("strict.toml"), config(&server.base_url(), "")).unwrap();
    let err = refused(&["run", "strict.toml", "--quiet"], d);
    for needle in [
        "scaffold `tool_calling` cannot run in environment `word_game`",
        r#"[matrix] exclude = [{ environment = "word_game", scaffold = "tool_calling" }]"#,
        "skip_incompatible = true",
        "ActionSpace { tool_calls: true, .. }",
    ] {
        assert!(err.contains(needle), "missing {needle:?} in:\n{err}");
    }
    assert_eq!(
        refused(&["check", "strict.toml"], d),
        err,
        "check says what run says"
    );
    assert!(!d.join("runs/mix").exists(), "a refused run writes nothing");

    // Skipped and listed: on screen, in the manifest and by check.
    std::fs::write(d.join("mix.toml"), config(&server.base_url(), SKIP)).unwrap();
    let checked = ok(&["check", "mix.toml"], d);
    assert!(checked.contains("ok — 34 rollouts"), "{checked}");
    assert!(
        checked.contains("skips word_game × tool_calling"),
        "{checked}"
    );
    assert!(
        checked
            .contains("environment math: 16 task(s), scored by environment (math_answer), format"),
        "{checked}"
    );
    let o = trawl(&["run", "mix.toml", "--quiet"], d);
    let out = text(&o);
    assert!(o.status.success(), "{out}");
    assert!(
        out.contains("skipped word_game × tool_calling: the scaffold needs tool_calls actions"),
        "{out}"
    );
    let run = d.join("runs/mix");
    let manifest: Value =
        serde_json::from_slice(&std::fs::read(run.join("manifest.json")).unwrap()).unwrap();
    assert_eq!(
        manifest["skipped_combinations"][0]["environment"],
        "word_game"
    );
    assert_eq!(
        manifest["skipped_combinations"][0]["scaffold"],
        "tool_calling"
    );
    assert_eq!(manifest["scoring"]["method"], "primary");

    let recs = records(&run.join("trajectories.jsonl"));
    // math: 16 tasks × 2 scaffolds; word_game: 2 tasks × chat only.
    assert_eq!(recs.len(), 34);
    let mut cells = BTreeMap::new();
    for r in &recs {
        assert_eq!(r["outcome"]["exit_status"], "Submitted", "{r}");
        *cells
            .entry((
                r["key"]["environment"].as_str().unwrap().to_string(),
                r["key"]["scaffold"].as_str().unwrap().to_string(),
            ))
            .or_insert(0) += 1;
        // The plugin evaluator scores math only; the word game is outside its scope.
        match r["key"]["environment"].as_str().unwrap() {
            "math" => {
                assert_eq!(evaluators_of(r), ["math_answer", "format"]);
                // The label is the environment's own verdict (the default primary).
                assert_eq!(r["reward"], r["evaluations"][0]["reward"]);
            }
            _ => assert_eq!(evaluators_of(r), ["word_game"]),
        }
    }
    assert_eq!(cells.len(), 3, "{cells:?}");
    assert!(!cells.contains_key(&("word_game".to_string(), "tool_calling".to_string())));

    // An explicit combination list: only what it names runs.
    let recs = run_named(
        d,
        &server.base_url(),
        "only",
        "\n[matrix]\ninclude = [{ environment = \"math\", scaffold = \"chat\", model = \"mock\" }]\n",
    );
    assert_eq!(recs.len(), 16);
    assert!(recs
        .iter()
        .all(|r| r["key"]["scaffold"] == "chat" && r["key"]["environment"] == "math"));

    // Exclude lists leave the pair out too.
    let recs = run_named(
        d,
        &server.base_url(),
        "excl",
        "\n[matrix]\nexclude = [{ environment = \"word_game\", scaffold = \"tool_calling\" }, { scaffold = \"chat\", environment = \"math\" }]\n",
    );
    assert_eq!(recs.len(), 18, "math × tool_calling and word_game × chat");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn scoring_chooses_the_label_and_unscorable_tasks_are_not_errors() {
    let server = ScriptedServer::start(Arc::new(policy)).await.unwrap();
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    let rubric = lib("trawl_keyword_rubric");
    // keyword_rubric reading keywords from the task's `answer` field cannot score math tasks
    // (there it is a string, not a list): not applicable, never an infrastructure error.
    let write = |name: &str, scoring: &str| {
        let body = format!(
            "{}{SKIP}\n[[evaluators]]\ntype = \"keyword_rubric\"\nname = \"kw\"\nkeywords = [\"answer\"]\nkeywords_field = \"answer\"\n\n{scoring}",
            config(&server.base_url(), "")
                .replace("name = \"mix\"", &format!("name = \"{name}\""))
                .replace("plugins = [", &format!("plugins = [\"{rubric}\", "))
        );
        std::fs::write(d.join(format!("{name}.toml")), body).unwrap();
    };

    write(
        "product",
        "[scoring]\ncombine = \"product\"\nevaluators = [\"environment\", \"format\"]\n",
    );
    ok(&["run", "product.toml", "--quiet"], d);
    let recs = records(&d.join("runs/product/trajectories.jsonl"));
    assert_eq!(recs.len(), 34);
    for r in &recs {
        assert_eq!(r["outcome"]["exit_status"], "Submitted", "{r}");
        assert!(
            evaluation(r, "kw").is_none() || r["key"]["environment"] == "word_game",
            "{r}"
        );
        if r["key"]["environment"] == "math" {
            let env = evaluation(r, "math_answer").unwrap();
            let fmt = evaluation(r, "format").unwrap();
            let product = env["reward"].as_f64().unwrap() * fmt["reward"].as_f64().unwrap();
            assert!(
                (r["reward"].as_f64().unwrap() - product).abs() < 1e-12,
                "{r}"
            );
            assert_eq!(
                r["success"].as_bool().unwrap(),
                env["success"].as_bool().unwrap() && fmt["success"].as_bool().unwrap()
            );
        } else {
            // Outside format's scope, the product is over what scored it: its own evaluator.
            assert_eq!(r["reward"], evaluation(r, "word_game").unwrap()["reward"]);
        }
    }

    // A primary evaluator that decides where it applies, the environment's own elsewhere.
    write(
        "primary",
        "[scoring]\nprimary = [\"format\", \"environment\"]\n",
    );
    ok(&["run", "primary.toml", "--quiet"], d);
    for r in records(&d.join("runs/primary/trajectories.jsonl")) {
        let decided_by = if r["key"]["environment"] == "math" {
            "format"
        } else {
            "word_game"
        };
        assert_eq!(
            r["reward"],
            evaluation(&r, decided_by).unwrap()["reward"],
            "{r}"
        );
    }

    // A scoring that leaves an environment without a reward is refused before anything runs.
    write("unscored", "[scoring]\nprimary = \"format\"\n");
    let err = refused(&["run", "unscored.toml", "--quiet"], d);
    assert!(
        err.contains("the rollouts of environment `word_game` would have no reward"),
        "{err}"
    );
    assert_eq!(refused(&["check", "unscored.toml"], d), err);

    // Weighted sums need every weight; names are checked with the line.
    write("weights", "[scoring]\ncombine = \"weighted_sum\"\nevaluators = [\"environment\", \"format\"]\nweights = { environment = 1.0 }\n");
    let err = refused(&["check", "weights.toml"], d);
    assert!(
        err.contains("field `scoring.weights`") && err.contains("`format` has none"),
        "{err}"
    );

    // Stats: every evaluator's own rate and reward, not only the label's.
    let stats: Value =
        serde_json::from_str(&ok(&["stats", "runs/product", "--format", "json"], d)).unwrap();
    let math_chat = stats["groups"]
        .as_array()
        .unwrap()
        .iter()
        .find(|g| g["group"]["environment"] == "math" && g["group"]["scaffold"] == "chat")
        .unwrap();
    let names: Vec<&str> = math_chat["evaluators"]
        .as_array()
        .unwrap()
        .iter()
        .map(|e| e["evaluator"].as_str().unwrap())
        .collect();
    assert_eq!(names, ["math_answer", "format"]);
    let fmt = &math_chat["evaluators"][1];
    assert_eq!(fmt["scored"], 16);
    let fmt_successes = records(&d.join("runs/product/trajectories.jsonl"))
        .iter()
        .filter(|r| r["key"]["environment"] == "math" && r["key"]["scaffold"] == "chat")
        .filter(|r| evaluation(r, "format").unwrap()["success"] == true)
        .count();
    assert_eq!(fmt["success"]["successes"], fmt_successes);
    let text = ok(&["stats", "runs/product"], d);
    assert!(text.contains("    format         success "), "{text}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn stats_group_by_any_key_in_every_format() {
    let (_server, dir, recs) = mix_run().await;
    let d = dir.path();

    // By a task data field: math tasks carry their level, word games none.
    let by_level: Value =
        serde_json::from_str(&ok(&["stats", "runs/mix", "--by", "level", "--json"], d)).unwrap();
    let mut groups = BTreeMap::new();
    for g in by_level["groups"].as_array().unwrap() {
        groups.insert(
            g["group"]["level"].as_str().unwrap().to_string(),
            g["rollouts"].as_u64().unwrap(),
        );
    }
    let expected: BTreeMap<String, u64> = recs.iter().fold(BTreeMap::new(), |mut m, r| {
        let level = r["task"]["data"]["level"]
            .as_u64()
            .map_or("(none)".to_string(), |l| l.to_string());
        *m.entry(level).or_insert(0) += 1;
        m
    });
    assert_eq!(groups, expected);
    assert!(by_level["groups"][0]["reward_spread"]["median"]
        .as_f64()
        .is_some());

    // CSV: a header, then a row per group and evaluator, read back by a CSV reader.
    let csv = ok(
        &[
            "stats",
            "runs/mix",
            "--by",
            "environment,scaffold",
            "--format",
            "csv",
        ],
        d,
    );
    let mut reader = csv::Reader::from_reader(csv.as_bytes());
    let header: Vec<String> = reader
        .headers()
        .unwrap()
        .iter()
        .map(str::to_string)
        .collect();
    assert_eq!(
        &header[..4],
        ["environment", "scaffold", "evaluator", "rollouts"]
    );
    let rows: Vec<csv::StringRecord> = reader.records().map(Result::unwrap).collect();
    let label_rows = rows.iter().filter(|r| &r[2] == "label").count();
    assert_eq!(label_rows, 3);
    let fmt_rows: Vec<&csv::StringRecord> = rows.iter().filter(|r| &r[2] == "format").collect();
    assert_eq!(fmt_rows.len(), 2, "format scores math under both scaffolds");

    let md = ok(&["stats", "runs/mix", "--format", "markdown"], d);
    assert!(
        md.starts_with("| environment | scaffold | model | evaluator | rollouts |"),
        "{md}"
    );
    assert!(
        md.contains("| math | chat | mock | format | 16 | 16 |"),
        "{md}"
    );
    assert!(!md.contains("-0.0") && !md.contains("0/0"), "{md}");

    let err = refused(&["stats", "runs/mix", "--by", "level,,model"], d);
    assert!(err.contains("--by"), "{err}");
}

/// The exact two-sided sign test, computed here from the binomial directly.
fn sign_p(k: u64, n: u64) -> f64 {
    let choose = |n: u64, k: u64| (0..k).fold(1.0, |acc, i| acc * (n - i) as f64 / (i + 1) as f64);
    let low = k.min(n - k);
    let tail: f64 = (0..=low).map(|i| choose(n, i)).sum::<f64>() / 2f64.powi(n as i32);
    (2.0 * tail).min(1.0)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn diff_compares_two_scaffolds_and_two_runs_task_by_task() {
    let (server, dir, recs) = mix_run().await;
    let d = dir.path();

    let json: Value = serde_json::from_str(&ok(
        &[
            "diff",
            "runs/mix",
            "--a",
            "scaffold=chat",
            "--b",
            "scaffold=tool_calling",
            "--format",
            "json",
        ],
        d,
    ))
    .unwrap();
    // Expected from the records: math tasks (the word game has no tool_calling side).
    let success = |scaffold: &str| -> BTreeMap<String, bool> {
        recs.iter()
            .filter(|r| r["key"]["scaffold"] == scaffold)
            .map(|r| {
                (
                    format!(
                        "{}/{}/{}",
                        r["key"]["environment"].as_str().unwrap(),
                        r["key"]["model"].as_str().unwrap(),
                        r["key"]["task"].as_str().unwrap()
                    ),
                    r["success"].as_bool().unwrap(),
                )
            })
            .collect()
    };
    let (chat, tools) = (success("chat"), success("tool_calling"));
    let improved: BTreeSet<String> = tools
        .iter()
        .filter(|(t, s)| **s && chat.get(*t) == Some(&false))
        .map(|(t, _)| t.clone())
        .collect();
    let regressed: BTreeSet<String> = tools
        .iter()
        .filter(|(t, s)| !**s && chat.get(*t) == Some(&true))
        .map(|(t, _)| t.clone())
        .collect();
    assert!(
        !improved.is_empty() && !regressed.is_empty(),
        "the policy's parity twist makes the scaffolds differ both ways: {chat:?} {tools:?}"
    );
    let units = |key: &str| -> BTreeSet<String> {
        json[key]
            .as_array()
            .unwrap()
            .iter()
            .map(|f| f["unit"].as_str().unwrap().to_string())
            .collect()
    };
    assert_eq!(units("improved"), improved);
    assert_eq!(units("regressed"), regressed);
    assert_eq!(
        json["paired_by"],
        serde_json::json!(["environment", "model", "task"])
    );
    assert_eq!(json["shared_units"], 16);
    let n = (improved.len() + regressed.len()) as u64;
    assert!((json["p_value"].as_f64().unwrap() - sign_p(improved.len() as u64, n)).abs() < 1e-9);
    let delta = (improved.len() as f64 - regressed.len() as f64) / 16.0;
    assert!((json["success_rate"]["delta"].as_f64().unwrap() - delta).abs() < 1e-12);
    let (lo, hi) = (
        json["success_rate"]["ci95"][0].as_f64().unwrap(),
        json["success_rate"]["ci95"][1].as_f64().unwrap(),
    );
    assert!(lo <= delta && delta <= hi, "{lo} {delta} {hi}");
    // The word game's tasks exist only on the chat side.
    assert_eq!(json["only_a"].as_array().unwrap().len(), 2);

    let text = ok(
        &[
            "diff",
            "runs/mix",
            "--a",
            "scaffold=chat",
            "--b",
            "scaffold=tool_calling",
        ],
        d,
    );
    assert!(text.contains("improved in B"), "{text}");
    let md = ok(
        &[
            "diff",
            "runs/mix",
            "--a",
            "scaffold=chat",
            "--b",
            "scaffold=tool_calling",
            "--format",
            "markdown",
        ],
        d,
    );
    assert!(md.contains("| success rate |"), "{md}");

    // Two runs of the same config: nothing changed, nothing flipped.
    run_named(d, &server.base_url(), "again", SKIP);
    let same: Value = serde_json::from_str(&ok(
        &["diff", "runs/mix", "runs/again", "--format", "json"],
        d,
    ))
    .unwrap();
    assert_eq!(same["shared_units"], 34);
    assert_eq!(same["success_rate"]["delta"], 0.0);
    assert_eq!(same["p_value"], 1.0);
    assert!(same["improved"].as_array().unwrap().is_empty());

    let err = refused(&["diff", "runs/mix", "--a", "scaffold=chat"], d);
    assert!(
        err.contains("--a scaffold=chat --b scaffold=tool_calling"),
        "{err}"
    );
    let err = refused(
        &[
            "diff",
            "runs/mix",
            "--a",
            "scaffold=chat",
            "--b",
            "scaffold=nope",
        ],
        d,
    );
    assert!(
        err.contains("side B has no rollouts matching `scaffold=nope`"),
        "{err}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn export_selects_with_jq_and_shorthands_and_writes_filtered_runs() {
    let (_server, dir, recs) = mix_run().await;
    let d = dir.path();

    // A plugin evaluator's success and at most two assistant turns, in jq.
    let filter = r#".evaluations[] | select(.evaluator == "format") | .success"#;
    let o = trawl(
        &[
            "export",
            "runs/mix",
            "--format",
            "trajectory",
            "--where",
            filter,
            "--max-turns",
            "2",
            "-o",
            "kept.jsonl",
        ],
        d,
    );
    assert!(o.status.success(), "{}", text(&o));
    let kept = records(&d.join("kept.jsonl"));
    let turns = |r: &Value| {
        r["messages"]
            .as_array()
            .unwrap()
            .iter()
            .filter(|m| m["role"] == "assistant")
            .count()
    };
    let expected: Vec<&Value> = recs
        .iter()
        .filter(|r| evaluation(r, "format").is_some_and(|e| e["success"] == true) && turns(r) <= 2)
        .collect();
    assert!(!expected.is_empty() && expected.len() < recs.len());
    assert_eq!(kept.len(), expected.len());
    for (a, b) in kept.iter().zip(&expected) {
        assert_eq!(&a, b, "the records themselves, unchanged");
    }
    let counts: Value =
        serde_json::from_slice(&std::fs::read(d.join("kept_stats.json")).unwrap()).unwrap();
    assert_eq!(counts["selection"]["where"], filter);
    assert!(
        counts["dropped"]["filtered_out"].as_u64().unwrap() > 0,
        "{counts}"
    );

    // The filtered run reads like a run.
    let stats: Value = serde_json::from_str(&ok(&["stats", "kept.jsonl", "--json"], d)).unwrap();
    assert_eq!(stats["records"], kept.len());

    // The shorthands: `args` keep as many lines as the records `want` selects.
    let shorthand = |args: &[&str], want: &dyn Fn(&Value) -> bool| {
        let mut all = vec!["export", "runs/mix", "-o", "short.jsonl", "--force"];
        all.extend_from_slice(args);
        ok(&all, d);
        let lines = std::fs::read_to_string(d.join("short.jsonl")).unwrap();
        assert_eq!(
            lines.lines().count(),
            recs.iter().filter(|r| want(r)).count(),
            "{args:?}"
        );
    };
    shorthand(&["--evaluator-success", "format"], &|r| {
        evaluation(r, "format").is_some_and(|e| e["success"] == true)
    });
    shorthand(
        &[
            "--evaluator-min-reward",
            "format=1",
            "--exit-status",
            "Submitted",
            "--max-tokens",
            "100000",
        ],
        &|r| evaluation(r, "format").is_some_and(|e| e["reward"] == 1.0),
    );

    // Mistakes are named.
    let err = refused(
        &[
            "export",
            "runs/mix",
            "--evaluator-success",
            "fromat",
            "-o",
            "x.jsonl",
        ],
        d,
    );
    assert!(
        err.contains("evaluator named `fromat`") && err.contains("format, math_answer, word_game"),
        "{err}"
    );
    let err = refused(
        &[
            "export",
            "runs/mix",
            "--where",
            ".success and (",
            "-o",
            "x.jsonl",
        ],
        d,
    );
    assert!(
        err.contains("--where: not a valid jq filter: at column"),
        "{err}"
    );
    let err = refused(
        &[
            "export",
            "runs/mix",
            "--where",
            ".key.task | .[0]",
            "-o",
            "x.jsonl",
        ],
        d,
    );
    assert!(err.contains("the filter failed"), "{err}");
    assert!(
        !d.join("x.jsonl").exists(),
        "a failed export leaves no file"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn check_pings_model_servers() {
    let server = ScriptedServer::start(Arc::new(policy)).await.unwrap();
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    std::fs::write(d.join("mix.toml"), config(&server.base_url(), SKIP)).unwrap();
    let out = ok(&["check", "mix.toml", "--ping"], d);
    assert!(
        out.contains("model mock: the server answers and serves 2 model(s), `mock` among them"),
        "{out}"
    );
    assert!(server.requests().is_empty(), "no completion was asked for");

    std::fs::write(
        d.join("absent.toml"),
        config(&server.base_url(), SKIP).replace("model = \"mock\"", "model = \"absent\""),
    )
    .unwrap();
    let out = ok(&["check", "absent.toml", "--ping"], d);
    assert!(
        out.contains("`absent` is NOT among them (mock, mock-large)"),
        "{out}"
    );

    // A server that is not there: check fails, as the run would on every rollout.
    let closed = {
        let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        l.local_addr().unwrap()
    };
    let gone = config(&format!("http://{closed}/v1"), SKIP)
        .replace("[[models]]", "[[models]]\nretry = { max_attempts = 1 }");
    std::fs::write(d.join("gone.toml"), gone).unwrap();
    let o = trawl(&["check", "gone.toml", "--ping"], d);
    assert_eq!(o.status.code(), Some(3), "{}", text(&o));
    assert!(text(&o).contains("model mock: UNREACHABLE"), "{}", text(&o));
    // Without --ping nothing is contacted, and the config itself is fine.
    ok(&["check", "gone.toml"], d);
}

/// `check --ping` asks the servers of components' own models too: a simulated user's model
/// on a second server is pinged, and an unreachable one fails the check.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn check_pings_a_simulated_user_s_model_too() {
    let server = ScriptedServer::start(Arc::new(policy)).await.unwrap();
    let user_server = ScriptedServer::start(Arc::new(policy)).await.unwrap();
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    let with_user = |user_url: &str| {
        format!(
            r#"name = "ask"

[[environments]]
type = "usersim"
limit = 1
{user}

[[scaffolds]]
type = "chat"

[[models]]
type = "openai"
name = "mock"
base_url = "{base}"
model = "mock"
"#,
            user = trawl_tests::llm_user_table(user_url),
            base = server.base_url(),
        )
    };
    std::fs::write(d.join("ask.toml"), with_user(&user_server.base_url())).unwrap();
    let out = ok(&["check", "ask.toml", "--ping"], d);
    assert!(
        out.contains("model mock: the server answers and serves 2 model(s), `mock` among them"),
        "{out}"
    );
    assert!(
        out.contains("model environment usersim (its own model): the server answers and serves 2 model(s); `user` is NOT among them"),
        "{out}"
    );
    assert!(
        user_server.requests().is_empty(),
        "no completion was asked for"
    );

    let closed = {
        let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        l.local_addr().unwrap()
    };
    std::fs::write(
        d.join("gone.toml"),
        with_user(&format!("http://{closed}/v1")),
    )
    .unwrap();
    let o = trawl(&["check", "gone.toml", "--ping"], d);
    assert_eq!(o.status.code(), Some(3), "{}", text(&o));
    assert!(
        text(&o).contains("model environment usersim (its own model): UNREACHABLE"),
        "{}",
        text(&o)
    );
}

#[test]
fn check_passes_every_example_config() {
    let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("..");
    let plugins = [
        lib("trawl_keyword_rubric"),
        lib("trawl_word_game"),
        lib("trawl_answer_format"),
    ];
    let (mut checked, mut skipped) = (0, 0);
    for entry in std::fs::read_dir(root.join("examples")).unwrap() {
        let path = entry.unwrap().path();
        if path.extension().is_none_or(|e| e != "toml") {
            continue;
        }
        if path
            .file_name()
            .is_some_and(|n| n.to_string_lossy().starts_with("swe"))
            && !trawl_tests::swe_images_present()
        {
            // Recorded as a skip (or failed, outside `cargo xtask test`) by the check above.
            skipped += 1;
            continue;
        }
        let mut args = vec!["check".to_string(), path.to_string_lossy().into_owned()];
        for p in &plugins {
            args.extend(["--plugin".to_string(), p.clone()]);
        }
        let args: Vec<&str> = args.iter().map(String::as_str).collect();
        let out = ok(&args, &root);
        assert!(out.contains(": ok — "), "{out}");
        checked += 1;
    }
    assert!(checked + skipped >= 12, "only {checked} example configs");
}

/// Every config error `run` reports before its first rollout, `check` reports the same way.
#[test]
fn check_refuses_exactly_what_run_refuses() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    let head = "name = \"bad\"\n[[models]]\ntype = \"openai\"\nbase_url = \"http://127.0.0.1:9/v1\"\nmodel = \"m\"\n";
    let math = "[[environments]]\ntype = \"math\"\ngenerator = { count = 3, levels = [1] }\n";
    let chat = "[[scaffolds]]\ntype = \"chat\"\n";
    let cases: Vec<(&str, String, &str)> = vec![
        ("unknown kind", format!("{head}[[environments]]\ntype = \"maths\"\n{chat}"), "unknown environment kind `maths`"),
        ("missing task file", format!("{head}[[environments]]\ntype = \"math\"\nfiles = [\"nope.jsonl\"]\n{chat}"), "nope.jsonl"),
        ("no tasks", format!("{head}[[environments]]\ntype = \"math\"\ngenerator = {{ count = 0, levels = [1] }}\n{chat}"), "field `environments[0]"),
        ("bad sampling", format!("{head}sampling = {{ temperature = -1.0 }}\n{math}{chat}"), "field `models[0].sampling.temperature`"),
        ("incompatible", format!("{head}{math}[[scaffolds]]\ntype = \"bash\"\n"), "cannot run in environment `math`"),
        ("matrix name", format!("{head}{math}{chat}[matrix]\ninclude = [{{ scaffold = \"chatt\" }}]\n"), "field `matrix.include[0].scaffold`"),
        ("matrix empty", format!("{head}{math}{chat}[matrix]\nexclude = [{{ environment = \"math\" }}]\n"), "no rollout to run"),
        ("scope", format!("{head}{math}{chat}[[evaluators]]\ntype = \"math_answer\"\nname = \"m2\"\nenvironments = [\"mth\"]\n"), "field `evaluators[0].environments[0]`"),
        ("scoring name", format!("{head}{math}{chat}[scoring]\nprimary = \"judge\"\n"), "field `scoring.primary[0]`"),
        ("scoring key", format!("{head}{math}{chat}[scoring]\ncombine = \"mean\"\n"), "field `scoring.combine`"),
        ("unscored", format!("{head}{math}[[environments]]\ntype = \"math\"\nname = \"other\"\ngenerator = {{ count = 2, levels = [1] }}\n{chat}[[evaluators]]\ntype = \"math_answer\"\nname = \"m2\"\nenvironments = [\"math\"]\n[scoring]\nprimary = \"m2\"\n"), "environment `other` would have no reward"),
        ("same name as the environment's own", format!("{head}{math}{chat}[[evaluators]]\ntype = \"math_answer\"\n"), "field `evaluators[0].name`"),
        ("reserved name", format!("{head}{math}{chat}[[evaluators]]\ntype = \"math_answer\"\nname = \"environment\"\n"), "field `evaluators[0].name`"),
        ("sandbox kind", format!("{head}[[environments]]\ntype = \"code\"\nsandbox = {{ type = \"remote\" }}\n{chat}"), "field `environments[0].sandbox.type`: unknown sandbox kind `remote`; valid: docker, local"),
        ("sandbox setting", format!("{head}[[environments]]\ntype = \"code\"\nsandbox = {{ type = \"local\", isolation = \"vm\" }}\n{chat}"), "field `environments[0].sandbox.isolation`"),
    ];
    for (what, text, needle) in cases {
        let file = d.join(format!("{}.toml", what.replace(' ', "-")));
        std::fs::write(&file, &text).unwrap();
        let f = file.to_string_lossy().into_owned();
        let from_run = refused(
            &[
                "run",
                &f,
                "--quiet",
                "--out",
                &d.join("out").to_string_lossy(),
            ],
            d,
        );
        assert!(
            from_run.contains(needle),
            "{what}: missing {needle:?} in:\n{from_run}"
        );
        assert!(
            from_run.starts_with(&format!("error: {f}")) || from_run.starts_with("error: "),
            "{what}: {from_run}"
        );
        let from_check = refused(&["check", &f], d);
        assert_eq!(from_check, from_run, "{what}: check and run disagree");
        assert!(
            !d.join("out").exists(),
            "{what}: a refused run writes nothing"
        );
    }
}

#[test]
fn a_plugin_linking_a_builtin_crate_exports_only_its_own_kinds() {
    let dir = tempfile::tempdir().unwrap();
    let format = lib("trawl_answer_format");
    // trawl_math is linked into the library for its answer extraction; `math` is not offered
    // a second time.
    let out = ok(&["plugins", "--plugin", &format], dir.path());
    assert!(out.contains("offers evaluator/answer_format\n"), "{out}");

    // Two libraries offering the same kind: the error names both, readably.
    let copy = dir.path().join("libcopy.so");
    std::fs::copy(&format, &copy).unwrap();
    let err = refused(
        &[
            "plugins",
            "--plugin",
            &format,
            "--plugin",
            &copy.to_string_lossy(),
        ],
        dir.path(),
    );
    assert!(
        err.contains(&format!(
            "evaluator kind `answer_format` is registered twice: plugin {format}, and plugin {}",
            copy.display()
        )),
        "{err}"
    );
    assert!(!err.contains("Plugin(\""), "{err}");
}

//! Plugins as a user meets them: the example plugin crates and two test fixtures are built with
//! cargo into shared libraries, then loaded into the real `trawl` binary, which runs experiments
//! against a scripted model server on 127.0.0.1 and exports them.

#![allow(clippy::unwrap_used)] // tests: a failed unwrap is a failed test

use std::path::Path;
use std::process::{Command, Output};
use std::sync::Arc;

use serde_json::Value;
use trawl_tests::{adder_policy, first_user_message, plugin_library, Reply, ScriptedServer};

const TRAWL: &str = env!("CARGO_BIN_EXE_trawl");

fn lib(name: &str) -> String {
    plugin_library(name).to_string_lossy().into_owned()
}

fn trawl(args: &[&str], cwd: &Path, env: &[(&str, &str)]) -> Output {
    trawl_tests::run_bin(TRAWL, args, cwd, env)
}

/// Runs trawl expecting it to refuse its input (exit code 2); returns what it printed.
fn refused(args: &[&str], cwd: &Path, env: &[(&str, &str)]) -> String {
    let o = trawl(args, cwd, env);
    let out = text(&o);
    assert_eq!(o.status.code(), Some(2), "{out}");
    out
}

fn text(o: &Output) -> String {
    trawl_tests::printed(o)
}

fn records(run: &Path) -> Vec<Value> {
    std::fs::read_to_string(run.join("trajectories.jsonl"))
        .unwrap()
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect()
}

/// Plays the word game by guessing SLATE then CRANE, and answers math with the adder policy.
fn policy(body: &Value) -> Reply {
    if first_user_message(body).contains("five-letter") {
        let guesses = trawl_tests::assistant_turns(body);
        return Reply::text(if guesses == 0 {
            "My first guess is SLATE"
        } else {
            "Then the answer is CRANE"
        });
    }
    adder_policy(body)
}

fn model_table(base_url: &str) -> String {
    format!(
        r#"
[[models]]
type = "openai"
name = "mock"
base_url = "{base_url}"
model = "mock"
"#
    )
}

#[test]
fn trawl_plugins_lists_plugin_kinds_with_their_library() {
    let dir = tempfile::tempdir().unwrap();
    let (rubric, game) = (lib("trawl_keyword_rubric"), lib("trawl_word_game"));
    let o = trawl(
        &["plugins", "--plugin", &rubric, "--plugin", &game],
        dir.path(),
        &[],
    );
    let out = text(&o);
    assert!(o.status.success(), "{out}");
    for line in [
        format!("[plugin {rubric}]"),
        format!("[plugin {game}]"),
        "keyword_rubric".to_string(),
        "review_csv".to_string(),
        "word_game".to_string(),
        format!("trawl-keyword-rubric 0.1.0  {rubric}"),
        "offers evaluator/keyword_rubric, exporter/review_csv".to_string(),
        "offers environment/word_game, evaluator/word_game".to_string(),
    ] {
        assert!(out.contains(&line), "missing {line:?} in:\n{out}");
    }
    // Built-in kinds are listed without a library.
    assert!(out
        .lines()
        .any(|l| l.trim_start().starts_with("math ") && !l.contains("[plugin")));

    // The same library from a folder on TRAWL_PLUGIN_PATH.
    let folder = tempfile::tempdir().unwrap();
    std::fs::copy(&rubric, folder.path().join("librubric.so")).unwrap();
    let o = Command::new(TRAWL)
        .arg("plugins")
        .env("TRAWL_PLUGIN_PATH", folder.path())
        .output()
        .unwrap();
    let out = text(&o);
    assert!(o.status.success(), "{out}");
    assert!(
        out.contains("librubric.so") && out.contains("keyword_rubric"),
        "{out}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_run_mixes_builtin_and_plugin_kinds_and_exports() {
    let server = ScriptedServer::start(Arc::new(policy)).await.unwrap();
    let dir = tempfile::tempdir().unwrap();
    let (rubric, game) = (lib("trawl_keyword_rubric"), lib("trawl_word_game"));
    let config = format!(
        r#"name = "mixed"
seed = 5
plugins = ["{rubric}", "{game}"]

# a built-in environment, scored by its own evaluator and the plugin's rubric
[[environments]]
type = "math"
generator = {{ count = 4, levels = [1] }}

# the plugin's environment, played by the built-in chat scaffold
[[environments]]
type = "word_game"
count = 3
max_guesses = 4
words = ["crane"]

[[scaffolds]]
type = "chat"
max_turns = 4

[[evaluators]]
type = "keyword_rubric"
keywords = ["answer"]
min_words = 3
max_words = 40
{}"#,
        model_table(&server.base_url())
    );
    std::fs::write(dir.path().join("mixed.toml"), config).unwrap();
    let o = trawl(&["run", "mixed.toml", "--quiet"], dir.path(), &[]);
    assert!(o.status.success(), "{}", text(&o));
    let run = dir.path().join("runs/mixed");
    let recs = records(&run);
    assert_eq!(recs.len(), 7, "4 math + 3 word games");

    for r in &recs {
        assert_eq!(r["outcome"]["exit_status"], "Submitted", "{r}");
        let evaluators: Vec<&str> = r["evaluations"]
            .as_array()
            .unwrap()
            .iter()
            .map(|e| e["evaluator"].as_str().unwrap())
            .collect();
        match r["key"]["environment"].as_str().unwrap() {
            "math" => assert_eq!(evaluators, ["math_answer", "keyword_rubric"]),
            "word_game" => {
                assert_eq!(evaluators, ["word_game", "keyword_rubric"]);
                // SLATE, feedback, CRANE: solved on the second of four guesses.
                assert_eq!(r["reward"], 0.75, "{r}");
                assert_eq!(r["success"], true);
                assert_eq!(r["outcome"]["artifacts"]["guesses"], 2);
                let feedback = r["messages"][2]["content"].as_str().unwrap();
                assert!(feedback.contains("SLATE -> ..G.G"), "{feedback}");
                // The rubric found its keyword in "Then the answer is CRANE".
                assert_eq!(r["evaluations"][1]["components"]["keywords"], 1.0);
            }
            other => panic!("unexpected environment {other}"),
        }
    }
    // The manifest records the libraries the run loaded.
    let manifest: Value =
        serde_json::from_slice(&std::fs::read(run.join("manifest.json")).unwrap()).unwrap();
    let names: Vec<&str> = manifest["plugins"]
        .as_array()
        .unwrap()
        .iter()
        .map(|p| p["name"].as_str().unwrap())
        .collect();
    assert_eq!(names, ["trawl-keyword-rubric", "trawl-word-game"]);
    // Each with the SHA-256 of the file that was loaded.
    for p in manifest["plugins"].as_array().unwrap() {
        let path = p["path"].as_str().unwrap();
        let out = Command::new("sha256sum").arg(path).output().unwrap();
        let expected = String::from_utf8_lossy(&out.stdout)
            .split_whitespace()
            .next()
            .unwrap()
            .to_string();
        assert_eq!(p["sha256"], expected.as_str(), "{path}");
    }

    // The plugin's exporter writes the review sheet; a built-in one the SFT file.
    let o = trawl(
        &[
            "export",
            "runs/mixed",
            "--format",
            "review_csv",
            "--plugin",
            &rubric,
        ],
        dir.path(),
        &[],
    );
    assert!(o.status.success(), "{}", text(&o));
    let csv = std::fs::read_to_string(run.join("export-review_csv.csv")).unwrap();
    let lines: Vec<&str> = csv.lines().collect();
    assert_eq!(lines[0], "environment,task,sample,reward,success,answer");
    assert_eq!(lines.len(), 8, "{csv}");
    assert!(
        lines.contains(&"word_game,word-000,0,0.75,true,Then the answer is CRANE"),
        "{csv}"
    );
    let o = trawl(
        &[
            "export",
            "runs/mixed",
            "--format",
            "openai",
            "--success-only",
        ],
        dir.path(),
        &[],
    );
    assert!(o.status.success(), "{}", text(&o));
    let sft = std::fs::read_to_string(run.join("export-openai.jsonl")).unwrap();
    let games: Vec<Value> = sft
        .lines()
        .map(|l| serde_json::from_str::<Value>(l).unwrap())
        .filter(|v| {
            v["messages"][0]["content"]
                .as_str()
                .unwrap_or("")
                .contains("five-letter")
        })
        .collect();
    assert_eq!(games.len(), 3);
    assert_eq!(
        games[0]["messages"].as_array().unwrap().len(),
        4,
        "{}",
        games[0]
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_panicking_plugin_fails_only_its_call() {
    let server = ScriptedServer::start(Arc::new(policy)).await.unwrap();
    let dir = tempfile::tempdir().unwrap();
    let panicky = lib("trawl_test_panicky");
    let config = |extra: &str| {
        format!(
            r#"name = "panics"
plugins = ["{panicky}"]

[[environments]]
type = "math"
generator = {{ count = 6, levels = [1] }}

[[scaffolds]]
type = "chat"

[[evaluators]]
type = "panicky"
{extra}
{}"#,
            model_table(&server.base_url())
        )
    };
    std::fs::write(
        dir.path().join("panics.toml"),
        config(r#"panic_on_tasks = ["gen-L1-2"]"#),
    )
    .unwrap();
    let o = trawl(&["run", "panics.toml", "--quiet"], dir.path(), &[]);
    let out = text(&o);
    assert!(o.status.success(), "{out}");
    assert!(out.contains("1 infrastructure errors"), "{out}");
    let recs = records(&dir.path().join("runs/panics"));
    assert_eq!(recs.len(), 6);
    for r in &recs {
        if r["key"]["task"] == "gen-L1-2" {
            assert_eq!(r["outcome"]["exit_status"], "InfraError");
            let msg = r["outcome"]["error"]["message"].as_str().unwrap();
            assert!(
                msg.contains("plugin `panicky`")
                    && msg.contains("panicked in `evaluate`")
                    && msg.contains("told to panic on task gen-L1-2"),
                "{msg}"
            );
        } else {
            // The other rollouts were scored by the same plugin, after the panic or before.
            assert_eq!(r["evaluations"][1]["evaluator"], "panicky", "{r}");
            assert_eq!(r["evaluations"][1]["reward"], 1.0);
        }
    }

    // A panic while building is a config error at the evaluator's table.
    std::fs::write(
        dir.path().join("panics.toml"),
        config("panic_in_build = true"),
    )
    .unwrap();
    // `check` builds the evaluator as `run` would, so it meets the same panic.
    for args in [
        &["check", "panics.toml"][..],
        &["run", "panics.toml", "--quiet", "--out", "runs/b"][..],
    ] {
        let out = refused(args, dir.path(), &[]);
        assert!(
            out.contains("panics.toml:")
                && out.contains("panicked in `build`: told to panic while being built"),
            "{args:?}: {out}"
        );
    }
}

#[test]
fn incompatible_and_foreign_libraries_are_refused_with_a_clear_message() {
    let dir = tempfile::tempdir().unwrap();
    let marker = dir.path().join("compat-called");
    let future = lib("trawl_test_future_abi");
    let out = refused(
        &["plugins", "--plugin", &future],
        dir.path(),
        &[("TRAWL_TEST_FUTURE_ABI_MARKER", marker.to_str().unwrap())],
    );
    assert_eq!(
        3,
        trawl_plugin_abi::ABI_VERSION + 1,
        "the fixture claims ABI 3 as the next one"
    );
    assert!(
        out.contains(&format!(
            "{future}: built for trawl plugin ABI 3, but this trawl (0.1.0) loads ABI 1 to {}",
            trawl_plugin_abi::ABI_VERSION
        )),
        "{out}"
    );
    assert!(out.contains("hint: rebuild the plugin"), "{out}");
    assert!(
        !marker.exists(),
        "nothing past the version probe may run in a refused library"
    );

    // A library that passes both probes but lacks an entry point: an error, never a pass.
    let partial = lib("trawl_test_missing_entry");
    let out = refused(&["plugins", "--plugin", &partial], dir.path(), &[]);
    assert!(
        out.contains(&format!(
            "{partial}: claims plugin ABI 1 but lacks the symbol `trawl_plugin_alloc`"
        )),
        "{out}"
    );

    // A shared library that is not a trawl plugin.
    let libm = [
        "/lib/x86_64-linux-gnu/libm.so.6",
        "/usr/lib64/libm.so.6",
        "/lib64/libm.so.6",
        "/usr/lib/aarch64-linux-gnu/libm.so.6",
    ]
    .into_iter()
    .find(|p| Path::new(p).exists())
    .expect("a libm to load");
    let out = refused(&["plugins", "--plugin", libm], dir.path(), &[]);
    assert!(
        out.contains(&format!(
            "{libm}: not a trawl plugin: it exports no `trawl_plugin_abi_version` symbol"
        )),
        "{out}"
    );

    // A library that is not a trawl plugin and whose constructor writes a file: refused from its
    // symbol table alone, so the constructor never runs.
    let marker = dir.path().join("constructor-ran");
    let source = dir.path().join("ctor.c");
    std::fs::write(
        &source,
        format!(
            "#include <stdio.h>\n__attribute__((constructor)) static void ran(void) {{ FILE *f = fopen(\"{}\", \"w\"); if (f) fclose(f); }}\nint answer(void) {{ return 42; }}\n",
            marker.display()
        ),
    )
    .unwrap();
    let ctor = dir.path().join("libctor.so");
    let built = Command::new("cc")
        .args(["-shared", "-fPIC", "-o"])
        .arg(&ctor)
        .arg(&source)
        .status()
        .unwrap();
    assert!(built.success());
    let out = refused(
        &["plugins", "--plugin", ctor.to_str().unwrap()],
        dir.path(),
        &[],
    );
    assert!(out.contains("not a trawl plugin"), "{out}");
    assert!(
        !marker.exists(),
        "the library's constructor ran before the refusal"
    );

    // A file that is no library at all, named in a config: the error points at the line.
    std::fs::write(dir.path().join("notes.so"), "not a library").unwrap();
    std::fs::write(
        dir.path().join("exp.toml"),
        "name = \"x\"\nplugins = [\n  \"notes.so\",\n]\n",
    )
    .unwrap();
    let out = refused(&["check", "exp.toml"], dir.path(), &[]);
    assert!(
        out.contains(
            "exp.toml:3:3: field `plugins[0]`: notes.so: cannot load it as a shared library"
        ),
        "{out}"
    );

    // Two libraries offering the same kind: the second is refused, both named.
    let rubric = lib("trawl_keyword_rubric");
    let copy = dir.path().join("librubric-copy.so");
    std::fs::copy(&rubric, &copy).unwrap();
    let out = refused(
        &[
            "plugins",
            "--plugin",
            &rubric,
            "--plugin",
            copy.to_str().unwrap(),
        ],
        dir.path(),
        &[],
    );
    assert!(
        out.contains("evaluator kind `keyword_rubric` is registered twice")
            && out.contains("librubric-copy.so"),
        "{out}"
    );
}

/// The files `docs/plugins.md` tells a new user to write: each fenced block that follows a
/// `<!-- file: NAME -->` line.
fn guide_files() -> Vec<(String, String)> {
    let root = Path::new(env!("CARGO_MANIFEST_DIR")).parent().unwrap();
    let guide = std::fs::read_to_string(root.join("docs/plugins.md")).unwrap();
    let mut files = Vec::new();
    let mut lines = guide.lines();
    while let Some(line) = lines.next() {
        let Some(name) = line
            .strip_prefix("<!-- file: ")
            .and_then(|l| l.strip_suffix(" -->"))
        else {
            continue;
        };
        let fence = lines.next().unwrap();
        assert!(
            fence.starts_with("```"),
            "{name}: no code block after the marker"
        );
        let body: Vec<&str> = lines.by_ref().take_while(|l| *l != "```").collect();
        files.push((name.to_string(), body.join("\n") + "\n"));
    }
    files
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn guide_plugin_builds_loads_runs_and_exports() {
    let root = Path::new(env!("CARGO_MANIFEST_DIR")).parent().unwrap();
    let files = guide_files();
    let names: Vec<&str> = files.iter().map(|f| f.0.as_str()).collect();
    assert_eq!(names, ["Cargo.toml", "src/lib.rs", "concise.toml"]);

    // The crate, beside a "checkout" (the guide's ../trawl is this workspace).
    let dir = tempfile::tempdir().unwrap();
    let krate = dir.path().join("my-rubric");
    std::fs::create_dir_all(krate.join("src")).unwrap();
    for (name, body) in &files {
        let body = body.replace("../trawl/", &format!("{}/", root.display()));
        std::fs::write(krate.join(name), body).unwrap();
    }
    std::fs::copy(root.join("Cargo.lock"), krate.join("Cargo.lock")).unwrap();
    // Kept between test runs, so only the first build compiles the dependencies.
    let target = root.join("target/guide-plugin");
    std::fs::create_dir_all(&target).unwrap();
    std::os::unix::fs::symlink(&target, krate.join("target")).unwrap();
    let o = Command::new(env!("CARGO"))
        .arg("build")
        .current_dir(&krate)
        .env_remove("CARGO_TARGET_DIR")
        .output()
        .unwrap();
    assert!(
        o.status.success(),
        "the guide's crate does not build:\n{}",
        text(&o)
    );

    let o = trawl(
        &["plugins", "--plugin", "target/debug/libmy_rubric.so"],
        &krate,
        &[],
    );
    let out = text(&o);
    assert!(o.status.success(), "{out}");
    assert!(
        out.contains("concise") && out.contains("Rewards answers of few words"),
        "{out}"
    );
    assert!(out.contains("my-rubric 0.1.0"), "{out}");

    // The guide's config, on a scripted server instead of the embedded model.
    let server = ScriptedServer::start(Arc::new(policy)).await.unwrap();
    let mut config = std::fs::read_to_string(krate.join("concise.toml")).unwrap();
    config.push_str(&model_table(&server.base_url()));
    std::fs::write(krate.join("concise.toml"), config).unwrap();
    let o = trawl(&["run", "concise.toml", "--quiet"], &krate, &[]);
    assert!(o.status.success(), "{}", text(&o));
    let recs = records(&krate.join("runs/concise"));
    assert_eq!(recs.len(), 8);
    for r in &recs {
        let e = &r["evaluations"][1];
        assert_eq!(e["evaluator"], "concise", "{r}");
        // "Let me add them up. The answer is N." is 9 words: within 12.
        assert_eq!(e["components"]["words"], 9.0, "{r}");
        assert_eq!(e["success"], true);
    }
    let o = trawl(
        &[
            "export",
            "runs/concise",
            "--format",
            "openai",
            "--success-only",
        ],
        &krate,
        &[],
    );
    assert!(o.status.success(), "{}", text(&o));
    let exported = std::fs::read_to_string(krate.join("runs/concise/export-openai.jsonl")).unwrap();
    let solved = recs.iter().filter(|r| r["success"] == true).count();
    assert!(solved > 0);
    assert_eq!(exported.lines().count(), solved);
}

/// Writes `config` to `file` in `dir`, runs it into `out` and returns the run's records and what
/// trawl printed; the run must succeed.
fn run_into(dir: &Path, file: &str, config: &str, out: &str) -> (Vec<Value>, String) {
    std::fs::write(dir.join(file), config).unwrap();
    let o = trawl(&["run", file, "--quiet", "--out", out], dir, &[]);
    let printed = text(&o);
    assert!(o.status.success(), "{printed}");
    (records(&dir.join(out)), printed)
}

/// The one record of `recs` that ended in an infrastructure error.
fn the_one_infra_error(recs: &[Value]) -> &Value {
    let broken: Vec<&Value> = recs
        .iter()
        .filter(|r| r["outcome"]["exit_status"] == "InfraError")
        .collect();
    assert_eq!(broken.len(), 1, "{recs:?}");
    broken[0]
}

/// Solves the generator's level-1 problems (a gift subtracts, anything else adds).
fn level1_policy(body: &Value) -> Reply {
    let question = first_user_message(body);
    let n = trawl_tests::numbers_in(&question);
    let answer = if question.contains("gave") {
        n[0] - n[1]
    } else {
        n[0] + n[1]
    };
    Reply::text(format!("The answer is {answer}."))
}

/// The last user message of a request.
fn last_user_message(body: &Value) -> String {
    body["messages"]
        .as_array()
        .and_then(|m| m.iter().rev().find(|m| m["role"] == "user"))
        .and_then(|m| m["content"].as_str())
        .unwrap_or_default()
        .to_string()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_scaffold_plugin_and_a_model_plugin_drive_builtin_environments() {
    // Plans when asked for a plan; the first answer is wrong, the one after the feedback right.
    let server = ScriptedServer::start(Arc::new(|body: &Value| {
        let last = last_user_message(body);
        if last.contains("numbered plan") {
            return Reply::text("1. Find the two numbers. 2. Add them.");
        }
        if last.contains("carry out your plan") {
            return Reply::text("The answer is -1");
        }
        level1_policy(body)
    }))
    .await
    .unwrap();
    let dir = tempfile::tempdir().unwrap();
    let plan_act = lib("trawl_plan_act");
    let config = |extra: &str, model: &str| {
        format!(
            r#"name = "planned"
seed = 3
plugins = ["{plan_act}"{extra}]

[[environments]]
type = "math"
generator = {{ count = 4, levels = [1] }}
feedback = true

[[scaffolds]]
type = "plan_then_act"
max_attempts = 2
{model}"#
        )
    };
    let (first, _) = run_into(
        dir.path(),
        "planned.toml",
        &config("", &model_table(&server.base_url())),
        "runs/planned",
    );
    assert_eq!(first.len(), 4);
    for r in &first {
        assert_eq!(r["key"]["scaffold"], "plan_then_act");
        assert_eq!(r["outcome"]["exit_status"], "Submitted", "{r}");
        assert_eq!(r["success"], true, "{r}");
        // The plan, a wrong answer, the environment's feedback, the right answer: all through
        // the host, recorded as if the scaffold were built in.
        let roles: Vec<&str> = r["messages"]
            .as_array()
            .unwrap()
            .iter()
            .map(|m| m["role"].as_str().unwrap())
            .collect();
        assert_eq!(
            roles,
            [
                "system",
                "user",
                "user",
                "assistant",
                "user",
                "assistant",
                "user",
                "assistant"
            ],
            "{r}"
        );
        assert_eq!(r["steps"].as_array().unwrap().len(), 2);
        assert_eq!(r["steps"][0]["action"]["text"], "The answer is -1");
        assert_eq!(r["steps"][0]["reply"], 5);
        assert_eq!(r["steps"][1]["reply"], 7);
        assert_eq!(r["usage"]["model_calls"], 3);
        assert_eq!(r["finish_reasons"].as_array().unwrap().len(), 3);
        assert_eq!(
            r["outcome"]["artifacts"]["plan"],
            "1. Find the two numbers. 2. Add them."
        );
    }

    // The same experiment again with the replay model plugin in place of the server: the same
    // conversations and labels, with no server at all.
    drop(server);
    let replay = lib("trawl_replay_model");
    let (again, _) = run_into(
        dir.path(),
        "planned.toml",
        &config(
            &format!(r#", "{replay}""#),
            "[[models]]\ntype = \"replay\"\nname = \"mock\"\nrun = \"runs/planned\"\n",
        ),
        "runs/replayed",
    );
    assert_eq!(again.len(), 4);
    for r in &again {
        let before = first.iter().find(|f| f["key"] == r["key"]).unwrap();
        assert_eq!(r["messages"], before["messages"], "{r}");
        assert_eq!(r["success"], before["success"]);
        assert_eq!(r["provenance"]["model_kind"], "replay");
    }
    let o = trawl(
        &[
            "export",
            "runs/replayed",
            "--format",
            "openai",
            "--success-only",
        ],
        dir.path(),
        &[],
    );
    assert!(o.status.success(), "{}", text(&o));
    let sft =
        std::fs::read_to_string(dir.path().join("runs/replayed/export-openai.jsonl")).unwrap();
    assert_eq!(sft.lines().count(), 4);

    // A config error inside the plugin's scaffold names the file, line and field.
    std::fs::write(
        dir.path().join("bad.toml"),
        config("", &model_table("http://127.0.0.1:9"))
            .replace("max_attempts = 2", "max_attempts = 0"),
    )
    .unwrap();
    let out = refused(&["check", "bad.toml"], dir.path(), &[]);
    assert!(
        out.contains("bad.toml:12:")
            && out.contains("max_attempts")
            && out.contains("must be at least 1"),
        "{out}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn panicking_scaffold_and_model_plugins_fail_only_their_rollout() {
    let panicky = lib("trawl_test_panicky");
    // The scaffold: the first reply says PANIC.
    let said = Arc::new(std::sync::atomic::AtomicBool::new(false));
    let server = ScriptedServer::start(Arc::new(move |body: &Value| {
        if !said.swap(true, std::sync::atomic::Ordering::SeqCst) {
            return Reply::text("PANIC");
        }
        level1_policy(body)
    }))
    .await
    .unwrap();
    let dir = tempfile::tempdir().unwrap();
    let config = |scaffold: &str, model: &str| {
        format!(
            r#"name = "panics"
plugins = ["{panicky}"]

[[environments]]
type = "math"
generator = {{ count = 5, levels = [1] }}

[[scaffolds]]
type = "{scaffold}"
{model}"#
        )
    };
    let (recs, out) = run_into(
        dir.path(),
        "s.toml",
        &config("panicky", &model_table(&server.base_url())),
        "runs/s",
    );
    assert!(out.contains("1 infrastructure errors"), "{out}");
    assert_eq!(recs.len(), 5);
    let broken = the_one_infra_error(&recs);
    let error = &broken["outcome"]["error"];
    assert_eq!(error["kind"], "scaffold", "{error}");
    let msg = error["message"].as_str().unwrap();
    assert!(
        msg.contains("plugin `panicky`")
            && msg.contains("panicked in `run`")
            && msg.contains("told to panic by the model's reply"),
        "{msg}"
    );
    // The model call before the panic is in the record: the host kept it.
    assert_eq!(broken["usage"]["model_calls"], 1, "{broken}");
    for r in recs
        .iter()
        .filter(|r| r["outcome"]["exit_status"] != "InfraError")
    {
        assert_eq!(r["success"], true, "{r}");
    }

    // A plugin scaffold that never returns is cut off by the episode's time limit like a built-in
    // one: the model's fault (it ran out of time), with the model call it made on record.
    let hang = ScriptedServer::start(Arc::new(|_: &Value| Reply::text("HANG")))
        .await
        .unwrap();
    let (recs, _) = run_into(
        dir.path(),
        "h.toml",
        &config("panicky", &model_table(&hang.base_url())).replace(
            "name = \"panics\"",
            "name = \"panics\"\nepisode_timeout_secs = 1",
        ),
        "runs/h",
    );
    for r in recs {
        assert_eq!(r["outcome"]["exit_status"], "TimeExceeded", "{r}");
        assert_eq!(r["usage"]["model_calls"], 1, "{r}");
        assert_eq!(r["messages"][1]["content"], "HANG", "{r}");
    }

    // The model: its second call panics; the other four rollouts are scored as usual.
    let (recs, _) = run_into(
        dir.path(),
        "m.toml",
        &config(
            "chat",
            "[[models]]\ntype = \"panicky\"\nname = \"p\"\npanic_on_call = 2\n",
        ),
        "runs/m",
    );
    assert_eq!(recs.len(), 5);
    let broken = the_one_infra_error(&recs);
    let error = &broken["outcome"]["error"];
    assert_eq!(error["kind"], "model_backend", "{error}");
    let msg = error["message"].as_str().unwrap();
    assert!(
        msg.contains("panicked in `complete`") && msg.contains("told to panic on call 2"),
        "{msg}"
    );
    for r in recs
        .iter()
        .filter(|r| r["outcome"]["exit_status"] != "InfraError")
    {
        assert_eq!(r["outcome"]["exit_status"], "Submitted");
        assert_eq!(r["provenance"]["model_kind"], "panicky");
        assert_eq!(r["messages"][1]["content"], "The answer is 42");
    }
}

#[test]
fn an_abi_1_plugin_keeps_loading_and_cannot_claim_newer_roles() {
    let dir = tempfile::tempdir().unwrap();
    let v1 = lib("trawl_test_abi_v1");
    let o = trawl(&["plugins", "--plugin", &v1], dir.path(), &[]);
    let out = text(&o);
    assert!(o.status.success(), "{out}");
    assert!(
        out.contains("v1_nonempty") && out.contains("offers evaluator/v1_nonempty"),
        "{out}"
    );

    for role in ["scaffold", "model", "sandbox"] {
        let out = refused(
            &["plugins", "--plugin", &v1],
            dir.path(),
            &[("TRAWL_TEST_V1_CLAIM", role)],
        );
        assert!(
            out.contains(&format!("{v1}: incompatible plugin: it registers {role} kinds, which cannot cross the plugin boundary in ABI 1 (environments, evaluators, exporters can; rebuild it for ABI 2)")),
            "{out}"
        );
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_abi_1_evaluator_scores_a_run_beside_abi_2_plugins() {
    let server = ScriptedServer::start(Arc::new(adder_policy)).await.unwrap();
    let dir = tempfile::tempdir().unwrap();
    let (v1, plan_act) = (lib("trawl_test_abi_v1"), lib("trawl_plan_act"));
    let (recs, _) = run_into(
        dir.path(),
        "mixed.toml",
        &format!(
            r#"name = "mixed"
plugins = ["{v1}", "{plan_act}"]

[[environments]]
type = "math"
generator = {{ count = 3, levels = [1] }}

[[scaffolds]]
type = "plan_then_act"

[[evaluators]]
type = "v1_nonempty"
{}"#,
            model_table(&server.base_url())
        ),
        "runs/mixed",
    );
    assert_eq!(recs.len(), 3);
    for r in &recs {
        assert_eq!(r["evaluations"][1]["evaluator"], "v1_nonempty", "{r}");
        assert_eq!(r["evaluations"][1]["details"]["abi"], 1);
        assert_eq!(r["evaluations"][1]["success"], true);
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_code_environment_runs_on_a_sandbox_backend_from_a_plugin() {
    let solutions = trawl_code::tasks::reference_solutions(&trawl_code::tasks::builtin().unwrap());
    let server = ScriptedServer::start(trawl_tests::coder_policy(solutions))
        .await
        .unwrap();
    let dir = tempfile::tempdir().unwrap();
    let tempdir = lib("trawl_sandbox_tempdir");
    let config = |sandbox: &str| {
        format!(
            r#"name = "code"
plugins = ["{tempdir}"]

[[environments]]
type = "code"
limit = 6
python = "/usr/bin/python3"
sandbox = {sandbox}

[[scaffolds]]
type = "chat"
{}"#,
            model_table(&server.base_url())
        )
    };
    std::fs::write(
        dir.path().join("bad.toml"),
        config(r#"{ type = "tempdir" }"#),
    )
    .unwrap();
    let out = refused(&["check", "bad.toml"], dir.path(), &[]);
    assert!(
        out.contains("bad.toml:") && out.contains("trusted_code_only"),
        "{out}"
    );
    let (recs, _) = run_into(
        dir.path(),
        "code.toml",
        &config(r#"{ type = "tempdir", trusted_code_only = true }"#),
        "runs/code",
    );
    assert_eq!(recs.len(), 6);
    let mut passed = 0;
    for r in &recs {
        let name = r["task"]["data"]["entry_point"].as_str().unwrap();
        assert_eq!(r["evaluations"][0]["evaluator"], "code_tests");
        // The coding policy is right exactly for names of even length.
        assert_eq!(r["success"], name.len() % 2 == 0, "{name}: {r}");
        passed += usize::from(r["success"] == true);
    }
    assert!(passed > 0 && passed < 6, "{passed}");
    let manifest: Value =
        serde_json::from_slice(&std::fs::read(dir.path().join("runs/code/manifest.json")).unwrap())
            .unwrap();
    assert_eq!(
        manifest["environments"]["code"]["sandbox"]["backend"], "tempdir",
        "{manifest}"
    );
}

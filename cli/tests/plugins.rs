//! Plugins as a user meets them: the example plugin crates and two test fixtures are built with
//! cargo into shared libraries, then loaded into the real `trawl` binary, which runs experiments
//! against a scripted model server on 127.0.0.1 and exports them.

#![allow(clippy::unwrap_used)] // tests: a failed unwrap is a failed test

use std::path::Path;
use std::process::{Command, Output, Stdio};
use std::sync::Arc;

use serde_json::Value;
use trawl_tests::{adder_policy, first_user_message, plugin_library, Reply, ScriptedServer};

const TRAWL: &str = env!("CARGO_BIN_EXE_trawl");

fn lib(name: &str) -> String {
    plugin_library(name).to_string_lossy().into_owned()
}

fn trawl(args: &[&str], cwd: &Path, env: &[(&str, &str)]) -> Output {
    Command::new(TRAWL)
        .args(args)
        .current_dir(cwd)
        .envs(env.iter().copied())
        .env_remove("TRAWL_PLUGIN_PATH")
        .stdin(Stdio::null())
        .output()
        .expect("trawl runs")
}

/// Runs trawl expecting it to refuse its input (exit code 2); returns what it printed.
fn refused(args: &[&str], cwd: &Path, env: &[(&str, &str)]) -> String {
    let o = trawl(args, cwd, env);
    let out = text(&o);
    assert_eq!(o.status.code(), Some(2), "{out}");
    out
}

fn text(o: &Output) -> String {
    format!(
        "{}{}",
        String::from_utf8_lossy(&o.stdout),
        String::from_utf8_lossy(&o.stderr)
    )
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
    assert_ne!(
        2,
        trawl_plugin_abi::ABI_VERSION,
        "the fixture claims ABI 2 as a future one"
    );
    assert!(
        out.contains(&format!(
            "{future}: built for trawl plugin ABI 2, but this trawl (0.1.0) loads ABI {}",
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

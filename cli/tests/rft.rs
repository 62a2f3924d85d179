//! examples/rft's phases that need no torch, on every test run: `trawl check --tasks-out`
//! generates the pool, `rft.py split` keeps training and held-out questions apart, the export
//! leaves out held-out tasks and is read by TRL's own chat-template code as the trainer reads it,
//! and the converter's GGUF holds the original weights (to F16 rounding) with its metadata and
//! loads in trawl. The whole loop with training is `examples/rft/run.sh --preset smoke`.

#![allow(clippy::unwrap_used)] // tests: a failed unwrap is a failed test

use std::collections::HashSet;
use std::path::Path;

mod common;
use common::{jsonl, trawl, trawl_ok};

fn python(args: &[&str], cwd: &Path) -> String {
    let out = trawl_tests::run_trainer_python(args, cwd);
    let text = trawl_tests::printed(&out);
    assert!(out.status.success(), "python {args:?} failed:\n{text}");
    text
}

fn config(name: &str, model: &str, files: &[&Path], samples: &str, temperature: f64) -> String {
    let files: Vec<String> = files
        .iter()
        .map(|f| format!("{:?}", f.display().to_string()))
        .collect();
    format!(
        r#"name = "{name}"
seed = 11
samples = {samples}
concurrency = 8

[[environments]]
type = "math"
files = [{}]

[[scaffolds]]
type = "chat"
system_prompt = "You are a helpful assistant. Answer concisely."

[[models]]
type = "llama"
{model}
parallel = 8
context_size = 1024

[models.sampling]
temperature = {temperature}
max_tokens = 48
"#,
        files.join(", ")
    )
}

#[test]
fn the_rft_examples_tasks_export_and_converter_hold_without_torch() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("..");
    let rft = root.join("examples/rft/rft.py");
    let rft = rft.to_str().unwrap();

    // The pool: every task the config would start, one JSON line each.
    std::fs::write(
        d.join("tasks.toml"),
        "name = \"pool\"\nseed = 5\n[[environments]]\ntype = \"math\"\ngenerator = { count = 40, levels = [1, 2] }\n[[scaffolds]]\ntype = \"chat\"\n[[models]]\ntype = \"llama\"\n",
    )
    .unwrap();
    let out = trawl_ok(&["check", "tasks.toml", "--tasks-out", "pool.jsonl"], d);
    assert!(trawl_tests::printed(&out).contains("wrote 40 task(s) to pool.jsonl"));
    let pool = jsonl(&d.join("pool.jsonl"));
    assert_eq!(pool.len(), 40);
    let expected = trawl_math::generator::generate(5, &[1, 2], 40);
    for (line, task) in pool.iter().zip(&expected) {
        assert_eq!(line["environment"], "math");
        assert_eq!(line["id"], task.id.as_str());
        assert_eq!(line["question"], task.data["question"]);
        assert_eq!(line["answer"], task.data["answer"]);
    }
    // Never written over.
    let again = trawl(&["check", "tasks.toml", "--tasks-out", "pool.jsonl"], d);
    assert_eq!(again.status.code(), Some(2));
    assert!(
        trawl_tests::printed(&again).contains("the file exists"),
        "{}",
        trawl_tests::printed(&again)
    );
    assert_eq!(jsonl(&d.join("pool.jsonl")).len(), 40);

    // Training and held-out tasks share no question.
    python(
        &[
            rft,
            "split",
            "--pool",
            "pool.jsonl",
            "--out",
            ".",
            "--train",
            "12",
            "--heldout",
            "6",
        ],
        d,
    );
    let train = jsonl(&d.join("train.jsonl"));
    let heldout = jsonl(&d.join("heldout.jsonl"));
    assert_eq!((train.len(), heldout.len()), (12, 6));
    let held: HashSet<&str> = heldout
        .iter()
        .map(|t| t["question"].as_str().unwrap())
        .collect();
    assert!(train
        .iter()
        .all(|t| !held.contains(t["question"].as_str().unwrap())));

    // A sampling run over both files; the export run.sh makes leaves every held-out task out.
    std::fs::write(
        d.join("sample.toml"),
        config(
            "sample",
            "",
            &[&d.join("train.jsonl"), &d.join("heldout.jsonl")],
            "2",
            0.7,
        ),
    )
    .unwrap();
    trawl_ok(&["run", "sample.toml", "--out", "sample", "--quiet"], d);
    trawl_ok(
        &[
            "export",
            "sample",
            "--format",
            "openai",
            "--max-per-task",
            "2",
            "--dedup",
            "exact",
            "--exclude-tasks",
            "heldout.ids",
            "--decontaminate",
            "heldout.jsonl",
            "--output",
            "export.jsonl",
        ],
        d,
    );
    let exported = jsonl(&d.join("export.jsonl"));
    assert!(!exported.is_empty());
    let held_ids: HashSet<&str> = heldout.iter().map(|t| t["id"].as_str().unwrap()).collect();
    for e in &exported {
        let text = serde_json::to_string(&e["messages"]).unwrap();
        assert!(
            held.iter().all(|q| !text.contains(q)),
            "a held-out question was exported: {text}"
        );
        assert!(!held_ids.contains(e["task_id"].as_str().unwrap()), "{e}");
    }

    // TRL reads the export as rft.py gives it; the converter keeps the weights.
    let gguf = trawl_llama::fetch::default_model().unwrap();
    let script = root.join("tests/python/rft_roundtrip.py");
    let report = python(
        &[
            script.to_str().unwrap(),
            gguf.to_str().unwrap(),
            d.to_str().unwrap(),
            "export.jsonl",
        ],
        d,
    );
    assert!(
        report.contains(&format!(
            "rows: {} prompt-completion rows read by TRL",
            exported.len()
        )),
        "{report}"
    );
    assert!(
        report.contains("converter: 272 tensors back to"),
        "{report}"
    );

    // trawl loads the converted file and answers with it.
    std::fs::write(
        d.join("eval.toml"),
        config(
            "eval",
            &format!(
                "path = {:?}",
                d.join("converted.gguf").display().to_string()
            ),
            &[&d.join("heldout.jsonl")],
            "1",
            0.0,
        ),
    )
    .unwrap();
    trawl_ok(&["run", "eval.toml", "--out", "eval", "--quiet"], d);
    let records = jsonl(&d.join("eval/trajectories.jsonl"));
    assert_eq!(records.len(), 6);
    for r in &records {
        assert_ne!(
            r["outcome"]["exit_status"], "InfraError",
            "{}",
            r["outcome"]
        );
        let reply = r["messages"]
            .as_array()
            .unwrap()
            .iter()
            .find(|m| m["role"] == "assistant")
            .unwrap();
        assert!(
            reply["content"].as_str().unwrap().trim().len() > 2,
            "{reply}"
        );
    }
}

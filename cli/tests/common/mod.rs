//! What the `trawl` binary's tests share: running it, and reading what it wrote. Each test
//! file uses some of these.
#![allow(dead_code)]

use std::path::Path;
use std::process::{Command, Output, Stdio};

use serde_json::Value;

pub const TRAWL: &str = env!("CARGO_BIN_EXE_trawl");

pub fn trawl(args: &[&str], cwd: &Path) -> Output {
    Command::new(TRAWL)
        .args(args)
        .current_dir(cwd)
        .stdin(Stdio::null())
        .output()
        .expect("trawl runs")
}

/// Runs trawl and requires it to succeed, showing its stderr if it does not.
pub fn trawl_ok(args: &[&str], cwd: &Path) -> Output {
    let out = trawl(args, cwd);
    assert!(
        out.status.success(),
        "trawl {args:?} failed:\n{}",
        String::from_utf8_lossy(&out.stderr)
    );
    out
}

/// A JSON file's value.
pub fn json_file(path: &Path) -> Value {
    serde_json::from_str(
        &std::fs::read_to_string(path).unwrap_or_else(|e| panic!("{}: {e}", path.display())),
    )
    .unwrap_or_else(|e| panic!("{}: {e}", path.display()))
}

pub fn jsonl(path: &Path) -> Vec<Value> {
    std::fs::read_to_string(path)
        .unwrap_or_else(|e| panic!("{}: {e}", path.display()))
        .lines()
        .map(|l| {
            serde_json::from_str(l)
                .unwrap_or_else(|e| panic!("{}: bad line {l}: {e}", path.display()))
        })
        .collect()
}

/// The `[[models]]` entry of a scripted server at `base_url` (named `mock`), with its retry
/// settings (`max_attempts = 1`) and the sampling the CLI tests use.
#[allow(dead_code)] // not every test binary writes configs
pub fn mock_model(base_url: &str, retry: &str) -> String {
    format!(
        r#"
[[models]]
type = "openai"
name = "mock"
base_url = "{base_url}"
model = "mock"
retry = {{ {retry} }}

[models.sampling]
temperature = 0.7
max_tokens = 64
"#
    )
}

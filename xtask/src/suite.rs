//! `cargo xtask test`: set up, build, run the whole suite, and report.

use std::path::{Path, PathBuf};
use std::process::{Command, ExitCode, Stdio};

use crate::machine;
use crate::prepare;
use crate::stages::Stages;

/// How many of the slowest tests the report lists.
const SLOWEST: usize = 15;

fn workspace_root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .map(Path::to_path_buf)
        .unwrap_or_else(|| PathBuf::from("."))
}

fn target_dir(root: &Path) -> PathBuf {
    std::env::var_os("CARGO_TARGET_DIR")
        .map(PathBuf::from)
        .map(|p| if p.is_absolute() { p } else { root.join(p) })
        .unwrap_or_else(|| root.join("target"))
}

fn cargo() -> Command {
    let mut c = Command::new(std::env::var_os("CARGO").unwrap_or_else(|| "cargo".into()));
    c.current_dir(workspace_root());
    c
}

fn have_nextest() -> bool {
    cargo()
        .args(["nextest", "--version"])
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .status()
        .is_ok_and(|s| s.success())
}

/// What the set-up left for the tests: whether the Docker engine answers.
struct Machine {
    docker: bool,
    missing: Vec<&'static str>,
}

fn set_up_machine(stages: &Stages) -> Result<Machine, String> {
    let missing = stages.run("system packages", machine::install_packages)?;
    if !missing.is_empty() && machine::under_ci() {
        return Err(format!(
            "CI needs every package the suite uses; missing: {} (CI runs as root, where \
             `cargo xtask test` installs them)",
            missing.join(" ")
        ));
    }
    let docker = stages.run("Docker engine", machine::start_docker);
    if !docker && machine::under_ci() {
        return Err("CI needs a running Docker engine".into());
    }
    Ok(Machine { docker, missing })
}

fn images(stages: &Stages, m: &Machine, trawl: &Path) -> Result<(), String> {
    if !m.docker || m.missing.contains(&"debootstrap") {
        eprintln!("== SWE images: not built (no Docker engine or no debootstrap); their tests are counted as skipped");
        return Ok(());
    }
    stages.run("SWE images", || prepare::swe_images(trawl))
}

/// `cargo xtask setup`: the machine, the test build's trawl binary, the images and the venvs.
pub fn setup_only() -> ExitCode {
    let stages = Stages::default();
    let root = workspace_root();
    let result = (|| {
        let m = set_up_machine(&stages)?;
        let venvs = stages.beside("virtualenvs", {
            let root = root.clone();
            move || prepare::venvs(&root)
        });
        stages.run("build (trawl)", || {
            run_status(
                cargo().args(["build", "--locked", "--bin", "trawl"]),
                "cargo build",
            )
        })?;
        images(&stages, &m, &target_dir(&root).join("debug/trawl"))?;
        join(venvs)
    })();
    eprint!("stage costs:\n{}", stages.table());
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("xtask setup: {e}");
            ExitCode::FAILURE
        }
    }
}

fn join(handle: std::thread::JoinHandle<Result<(), String>>) -> Result<(), String> {
    handle
        .join()
        .unwrap_or_else(|_| Err("the virtualenv stage panicked".into()))
}

fn run_status(cmd: &mut Command, what: &str) -> Result<(), String> {
    let status = cmd
        .status()
        .map_err(|e| format!("cannot run {what}: {e}"))?;
    if status.success() {
        Ok(())
    } else {
        Err(format!("{what} failed ({status})"))
    }
}

/// `cargo xtask test [-- NEXTEST-ARGS]`.
pub fn test(extra: &[String]) -> ExitCode {
    let stages = Stages::default();
    let root = workspace_root();
    let target = target_dir(&root);
    let nextest = have_nextest();
    let m = match set_up_machine(&stages) {
        Ok(m) => m,
        Err(e) => {
            eprint!("stage costs:\n{}", stages.table());
            eprintln!("xtask test: {e}");
            return ExitCode::FAILURE;
        }
    };
    let venvs = stages.beside("virtualenvs", {
        let root = root.clone();
        move || prepare::venvs(&root)
    });
    let built = stages.run("build (every test target)", || {
        run_status(
            cargo().args(prepare::plugin_build_args(&root)?),
            "cargo build (the test plugins)",
        )?;
        let build = || {
            if nextest {
                run_status(
                    cargo().args(["nextest", "run", "--workspace", "--locked", "--no-run"]),
                    "cargo nextest run --no-run",
                )
            } else {
                run_status(
                    cargo().args(["test", "--workspace", "--locked", "--no-run"]),
                    "cargo test --no-run",
                )
            }
        };
        if !nextest {
            eprintln!(
                "  cargo-nextest is not installed: the suite runs with cargo test, one test \
                 binary at a time (cargo install cargo-nextest --locked runs them in parallel)"
            );
        }
        // A build step of a -sys crate (llama.cpp's CMake build) that dies once for a reason
        // of the machine's (memory or disk pressure while the virtualenvs are made beside it)
        // gets one more try; a build that is broken fails the same way twice and stops here.
        build().or_else(|first| {
            eprintln!("xtask test: {first}; building once more (the first failure is above)");
            build()
        })
    });
    let prepared = built
        .and_then(|()| images(&stages, &m, &target.join("debug/trawl")))
        .and_then(|()| join(venvs));
    if let Err(e) = prepared {
        eprint!("stage costs:\n{}", stages.table());
        eprintln!("xtask test: {e}");
        return ExitCode::FAILURE;
    }

    let ledger = target.join("xtask/skips.tsv");
    let _ = std::fs::create_dir_all(target.join("xtask"));
    let _ = std::fs::write(&ledger, "");
    let outcome = stages.run("tests", || {
        let mut cmd = cargo();
        if nextest {
            cmd.args([
                "nextest",
                "run",
                "--workspace",
                "--locked",
                "--no-fail-fast",
            ]);
        } else {
            cmd.args(["test", "--workspace", "--locked", "--no-fail-fast"]);
        }
        cmd.args(extra)
            .env(trawl_ledger_var(), &ledger)
            .status()
            .map_err(|e| format!("cannot run the tests: {e}"))
    });

    let report = crate::suite::report(&target, nextest, &ledger);
    eprint!("{report}");
    eprint!("stage costs:\n{}", stages.table());
    match outcome {
        Ok(status) => {
            eprintln!(
                "xtask test: {} ({})",
                if status.success() { "passed" } else { "FAILED" },
                skips_line(&ledger)
            );
            if status.success() {
                ExitCode::SUCCESS
            } else {
                ExitCode::FAILURE
            }
        }
        Err(e) => {
            eprintln!("xtask test: {e}");
            ExitCode::FAILURE
        }
    }
}

/// The variable the tests read the skip ledger's path from (`trawl_test_needs::LEDGER_VAR`;
/// xtask links no workspace crate, so that it builds in seconds).
fn trawl_ledger_var() -> &'static str {
    "TRAWL_TEST_SKIPS"
}

/// One skip: a test that could not run here, and why.
struct Skip {
    test: String,
    what: String,
    install: String,
    detail: String,
}

fn skips(ledger: &Path) -> Vec<Skip> {
    std::fs::read_to_string(ledger)
        .unwrap_or_default()
        .lines()
        .filter_map(|l| {
            let f: Vec<&str> = l.split('\t').collect();
            (f.len() == 5).then(|| Skip {
                test: format!("{} {}", f[0], f[1]),
                what: f[2].to_string(),
                install: f[3].to_string(),
                detail: f[4].to_string(),
            })
        })
        .collect()
}

fn skips_line(ledger: &Path) -> String {
    let s = skips(ledger);
    if s.is_empty() {
        return "no test skipped for something missing here".into();
    }
    let mut tests: Vec<&str> = s.iter().map(|k| k.test.as_str()).collect();
    tests.sort_unstable();
    tests.dedup();
    format!(
        "{} tests skipped, in part or whole, for something missing here: see above",
        tests.len()
    )
}

/// The slowest tests (from nextest's JUnit file) and the skips, as text.
pub fn report(target: &Path, nextest: bool, ledger: &Path) -> String {
    let mut out = String::new();
    if nextest {
        let junit = target.join("nextest/default/junit.xml");
        match std::fs::read_to_string(&junit) {
            Ok(xml) => {
                let mut cases = junit_cases(&xml);
                cases.sort_by(|a, b| b.1.total_cmp(&a.1));
                out.push_str(&format!("slowest {SLOWEST} tests:\n"));
                for (name, secs) in cases.iter().take(SLOWEST) {
                    out.push_str(&format!("  {secs:>8.1} s  {name}\n"));
                }
            }
            Err(e) => out.push_str(&format!("(no timings: {}: {e})\n", junit.display())),
        }
    }
    let s = skips(ledger);
    if !s.is_empty() {
        out.push_str(&format!(
            "skipped here, because something they need is missing ({} in all):\n",
            s.len()
        ));
        let mut needs: Vec<(&str, &str)> = s
            .iter()
            .map(|k| (k.what.as_str(), k.install.as_str()))
            .collect();
        needs.sort_unstable();
        needs.dedup();
        for (what, install) in needs {
            out.push_str(&format!("  {what} ({install}):\n"));
            for k in s.iter().filter(|k| k.what == what) {
                out.push_str(&format!("    {}: {}\n", k.test, k.detail));
            }
        }
    }
    out
}

/// `(binary and test name, seconds)` of each `<testcase>` in a JUnit file.
fn junit_cases(xml: &str) -> Vec<(String, f64)> {
    let attr = |tag: &str, name: &str| -> Option<String> {
        let key = format!(" {name}=\"");
        let start = tag.find(&key)? + key.len();
        let end = tag[start..].find('"')? + start;
        Some(
            tag[start..end]
                .replace("&quot;", "\"")
                .replace("&amp;", "&"),
        )
    };
    xml.split("<testcase")
        .skip(1)
        .filter_map(|rest| {
            let tag = &rest[..rest.find('>')?];
            let name = attr(tag, "name")?;
            let class = attr(tag, "classname").unwrap_or_default();
            let secs = attr(tag, "time")?.parse().ok()?;
            Some((format!("{class} {name}"), secs))
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reads_test_cases_and_times_from_nextest_junit() {
        let xml = r#"<?xml version="1.0" encoding="UTF-8"?>
<testsuites name="nextest-run" tests="2" failures="0" errors="0">
    <testsuite name="trawl::cli" tests="2" disabled="0" errors="0" failures="0">
        <testcase name="a_fast_one" classname="trawl::cli" timestamp="2026-12-04T21:00:00Z" time="0.250">
        </testcase>
        <testcase name="a &quot;slow&quot; one" classname="trawl::cli" time="12.5"/>
    </testsuite>
</testsuites>"#;
        let cases = junit_cases(xml);
        assert_eq!(
            cases,
            vec![
                ("trawl::cli a_fast_one".to_string(), 0.25),
                ("trawl::cli a \"slow\" one".to_string(), 12.5)
            ]
        );
    }
}

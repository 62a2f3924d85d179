//! `cargo xtask`: the project's own tasks (the alias is in `.cargo/config.toml`).
//!
//! `cargo xtask test` is the README's test command and what `.ci/run` calls: it sets up what the
//! suite needs on this machine (system packages as root, else the exact command to run; the
//! Docker engine; the SWE images and the test virtualenvs, each made once and again only when
//! what defines it changes), runs the whole suite with cargo-nextest (independent tests in
//! parallel), and ends with the slowest tests, every test skipped because something it needs is
//! missing here, what each stage cost, and the runner's summary.

use std::process::ExitCode;

mod machine;
mod prepare;
mod stages;
mod suite;

const USAGE: &str = "\
usage: cargo xtask <task>

  test [-- NEXTEST-ARGS...]  set up what the suite needs, then run it all (the README's test
                             command; arguments after -- go to cargo nextest run, e.g. a filter)
  setup                      only the set-up: system packages, Docker engine, images, venvs
";

fn main() -> ExitCode {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let (task, rest) = match args.split_first() {
        Some((t, r)) => (t.as_str(), r),
        None => ("", &[][..]),
    };
    let extra = match rest.split_first() {
        None => Vec::new(),
        Some((dash, after)) if dash == "--" => after.to_vec(),
        Some((other, _)) => {
            eprintln!("xtask: unexpected argument {other:?}\n{USAGE}");
            return ExitCode::from(2);
        }
    };
    match task {
        "test" => suite::test(&extra),
        "setup" => suite::setup_only(),
        "help" | "--help" | "-h" => {
            print!("{USAGE}");
            ExitCode::SUCCESS
        }
        other => {
            eprintln!("xtask: unknown task {other:?}\n{USAGE}");
            ExitCode::from(2)
        }
    }
}

//! `trawl diff`: two runs, or two groups of one run, compared task by task.

use std::path::Path;
use std::process::ExitCode;

use anyhow::bail;
use trawl_core::TrajectoryRecord;

use crate::args::{DiffArgs, DiffFormat};
use crate::exit::input;
use crate::runs::load_run_with;

/// `trawl diff`: two runs, or two groups of one run, task by task.
pub fn diff(args: DiffArgs) -> anyhow::Result<ExitCode> {
    use trawl_core::compare::{self, Selector};
    let selector = |s: &Option<String>, flag: &str| -> anyhow::Result<Selector> {
        match s {
            Some(s) => Selector::parse(s).map_err(|e| input(format!("{flag}: {e}"))),
            None => Ok(Selector(Vec::new())),
        }
    };
    let (sa, sb) = (
        selector(&args.select_a, "--a")?,
        selector(&args.select_b, "--b")?,
    );
    let markdown = args.format == DiffFormat::Markdown;
    let run_a = load_run_with(&args.a, args.skip_bad_lines)?;
    let run_b = match &args.b {
        Some(b) => Some(load_run_with(b, args.skip_bad_lines)?),
        None => {
            if sa.0.is_empty() || sb.0.is_empty() {
                bail!(input(
                    "with one run, say which two groups to compare: --a scaffold=chat --b scaffold=tool_calling"
                ));
            }
            None
        }
    };
    let a: Vec<&TrajectoryRecord> = run_a.iter().filter(|r| sa.matches(r)).collect();
    let b: Vec<&TrajectoryRecord> = run_b
        .as_ref()
        .unwrap_or(&run_a)
        .iter()
        .filter(|r| sb.matches(r))
        .collect();
    for (side, records, sel) in [("A", &a, &sa), ("B", &b, &sb)] {
        if records.is_empty() {
            bail!(input(format!(
                "side {side} has no rollouts{}",
                if sel.0.is_empty() {
                    String::new()
                } else {
                    format!(" matching `{}`", sel.describe())
                }
            )));
        }
    }
    let label = |run: &Path, sel: &Selector| {
        if sel.0.is_empty() {
            run.display().to_string()
        } else {
            format!("{} [{}]", run.display(), sel.describe())
        }
    };
    let by = compare::pairing_keys(&a, &b, &[&sa, &sb]);
    let report = compare::diff(
        (&label(&args.a, &sa), &a),
        (&label(args.b.as_deref().unwrap_or(&args.a), &sb), &b),
        &by,
    );
    if report.shared_units == 0 {
        eprintln!(
            "warning: the two sides share no task (paired by {}); nothing to compare",
            report.paired_by.join(" × ")
        );
    }
    if args.format == DiffFormat::Json {
        println!("{}", serde_json::to_string_pretty(&report)?);
    } else {
        print!("{}", report.render(markdown));
    }
    Ok(ExitCode::SUCCESS)
}

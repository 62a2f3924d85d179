//! Reading a run: its records (strict, or skipping damaged lines) and its reviewers' labels.

use std::path::Path;

use anyhow::bail;
use trawl_core::{store, TrajectoryRecord};

use crate::exit::input;

/// Reads a run's records, warning about a torn last line (a crash mid-write).
pub fn load_run(run: &Path) -> anyhow::Result<Vec<TrajectoryRecord>> {
    load_run_with(run, false)
}

/// Reads a run's records strictly: a damaged line is an error naming file and line, unless
/// `skip_bad` (the user's explicit `--skip-bad-lines`), when each is listed and left out.
pub fn load_run_with(run: &Path, skip_bad: bool) -> anyhow::Result<Vec<TrajectoryRecord>> {
    // A run directory, or a trajectories file of its own (a `--format trajectory` export).
    let path = if run.is_file() {
        run.to_path_buf()
    } else {
        run.join(store::TRAJECTORIES)
    };
    if !path.exists() {
        return Err(input(format!(
            "{} has no {}: is it a trawl run directory (or a trajectories .jsonl file)?",
            run.display(),
            store::TRAJECTORIES
        )));
    }
    let (records, report) = if skip_bad {
        store::read_records_skipping(&path)
    } else {
        store::read_records(&path)
    }
    .map_err(|e| {
        input(format!(
            "{e}\n  hint: `--skip-bad-lines` leaves damaged lines out and lists them"
        ))
    })?;
    if !report.skipped.is_empty() {
        eprintln!(
            "warning: left out {} damaged line(s) of {}:",
            report.skipped.len(),
            path.display()
        );
        for e in &report.skipped {
            eprintln!("  {}", e.to_string().lines().next().unwrap_or_default());
        }
    }
    if report.torn_tail.is_some() {
        eprintln!("warning: {}: the last line was cut off mid-write and is ignored; `trawl run` resumes it", path.display());
    }
    for note in &report.repaired {
        eprintln!("warning: {note}");
    }
    Ok(records)
}

/// `--labels MODE`: the reviewers' labels of `run` (its directory, or the folder of the
/// trajectories file given).
pub fn review_labels(run: &Path, mode: &str) -> anyhow::Result<trawl_core::labels::LabelFilter> {
    use trawl_core::labels::{LabelFilter, LabelMode, Labels, LABELS};
    let Some(mode) = LabelMode::parse(mode) else {
        bail!(input(format!(
            "--labels `{mode}`: give `accepted` (only what a reviewer accepted) or `not-rejected` (all but what a reviewer rejected)"
        )));
    };
    let dir = if run.is_file() {
        run.parent().unwrap_or(Path::new("."))
    } else {
        run
    };
    if !dir.join(LABELS).exists() {
        bail!(input(format!(
            "--labels: {} has no {LABELS}: nobody has labelled this run yet; label rollouts in `trawl view {}` first",
            dir.display(),
            run.display()
        )));
    }
    let labels = Labels::read(dir).map_err(input)?;
    Ok(LabelFilter { mode, labels })
}

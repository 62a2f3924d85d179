//! `trawl show`: a run's rollouts printed in the terminal, filtered.

use std::io::Write;
use std::process::ExitCode;

use anyhow::bail;

use crate::args::ShowArgs;
use crate::exit::input;
use crate::runs::load_run_with;
use crate::show;

/// `trawl show`.
pub fn show(args: &ShowArgs) -> anyhow::Result<ExitCode> {
    let records = load_run_with(&args.run, args.skip_bad_lines)?;
    let filter = match &args.where_filter {
        Some(f) => Some(args.where_limits.compile(f)?),
        None => None,
    };
    let fold = show::Fold {
        lines: if args.full { 0 } else { args.fold },
    };
    let mut out = anstream::stdout().lock();
    let mut shown = 0usize;
    let mut matched = 0usize;
    for r in &records {
        if args.task.as_deref().is_some_and(|t| r.key.task != t)
            || (args.success && !r.success)
            || (args.failed && !(r.is_final() && r.is_scored() && !r.success))
        {
            continue;
        }
        if let Some(f) = &filter {
            match f.keeps(r) {
                Ok(true) => {}
                Ok(false) => continue,
                Err(message) => bail!(input(format!(
                    "--where `{}` on record {}: {message}",
                    f.source(),
                    r.key
                ))),
            }
        }
        matched += 1;
        if shown < args.limit {
            show::render(&mut out, r, fold)?;
            shown += 1;
        }
    }
    out.flush()?;
    drop(out);
    if matched == 0 {
        bail!(input(format!(
            "no rollout of {} matches ({} records read)",
            args.run.display(),
            records.len()
        )));
    }
    eprintln!(
        "showed {shown} of {matched} matching rollouts ({} records){}",
        records.len(),
        if matched > shown {
            "; -n N shows more"
        } else {
            ""
        }
    );
    Ok(ExitCode::SUCCESS)
}

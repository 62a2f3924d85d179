//! `trawl report`: one self-contained HTML report of one or more runs.

use std::process::ExitCode;

use trawl_core::store;

use crate::args::ReportArgs;
use crate::exit::input;
use crate::runs::load_run_with;

/// `trawl report`.
pub fn report(args: &ReportArgs) -> anyhow::Result<ExitCode> {
    store::check_output(&args.output, args.force).map_err(input)?;
    let mut runs = Vec::new();
    for run in &args.runs {
        let records = load_run_with(run, args.skip_bad_lines)?;
        let stats = trawl_core::stats::compute(&records);
        runs.push((run.display().to_string(), records, stats));
    }
    let html = trawl_view::report::render(&runs);
    store::write_atomic(&args.output, html.as_bytes())?;
    eprintln!(
        "wrote {} ({} bytes, self-contained: open it in any browser, offline)",
        args.output.display(),
        html.len()
    );
    Ok(ExitCode::SUCCESS)
}

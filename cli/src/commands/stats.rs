//! `trawl stats`: a run's metrics by group, as text, Markdown, CSV or JSON.

use std::path::Path;
use std::process::ExitCode;

use crate::args::StatsFormat;
use crate::exit::input;
use crate::runs::load_run_with;

/// `trawl stats`.
pub fn stats(
    run: &Path,
    by: &str,
    format: StatsFormat,
    json: bool,
    skip_bad_lines: bool,
) -> anyhow::Result<ExitCode> {
    let by =
        trawl_core::stats::GroupKey::parse_list(by).map_err(|e| input(format!("--by: {e}")))?;
    let format = if json { StatsFormat::Json } else { format };
    let records = load_run_with(run, skip_bad_lines)?;
    let stats = trawl_core::stats::compute_by(&records, &by);
    match format {
        StatsFormat::Json => println!("{}", serde_json::to_string_pretty(&stats)?),
        StatsFormat::Text => print!("{}", stats.render()),
        StatsFormat::Markdown => print!("{}", stats.render_markdown()),
        StatsFormat::Csv => {
            let (header, rows) = stats.rows();
            let mut w = csv::Writer::from_writer(std::io::stdout().lock());
            w.write_record(&header)?;
            for row in rows {
                w.write_record(&row)?;
            }
            w.flush()?;
        }
    }
    Ok(ExitCode::SUCCESS)
}

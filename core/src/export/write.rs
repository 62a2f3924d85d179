//! Writing an export: the selected records through an exporter, and the counts kept beside it.

use std::collections::BTreeMap;
use std::io::Write;

use serde::Serialize;

use super::role::{ExportError, Exporter};
use super::select::{select, DropReason, Selection};
use crate::trajectory::TrajectoryRecord;

/// Counts written beside an export as `<output>_stats.json`. The first five keys are the ones
/// PettingLLMs' collector writes, so existing dashboards read ours too.
#[derive(Debug, Clone, Default, Serialize)]
pub struct ExportStats {
    /// Rollouts that became training data.
    pub total_collected: usize,
    /// Of those, successful ones.
    pub total_successful: usize,
    /// Finished rollouts considered (infrastructure errors excluded).
    pub total_episodes: usize,
    /// Of those, successful ones.
    pub successful_episodes: usize,
    /// Training examples written (a per-turn format writes several per rollout).
    pub total_sft_examples: usize,
    pub format: String,
    pub records_read: usize,
    /// Selected rollouts the format could not represent (for example a ShareGPT conversation
    /// that does not alternate); they produced no example.
    pub records_without_examples: usize,
    pub dropped: BTreeMap<DropReason, usize>,
    /// The format's own counts (see [`Exporter::counts`]).
    #[serde(skip_serializing_if = "BTreeMap::is_empty")]
    pub counts: BTreeMap<String, usize>,
    pub selection: Selection,
}

/// Writes the selected records with `exporter`; returns the stats.
pub fn export_records(
    records: &[TrajectoryRecord],
    selection: &Selection,
    exporter: &dyn Exporter,
    format: &str,
    out: &mut dyn Write,
) -> Result<ExportStats, ExportError> {
    let selected = select(records, selection)?;
    let mut stats = ExportStats {
        format: format.to_string(),
        records_read: records.len(),
        selection: selection.clone(),
        ..ExportStats::default()
    };
    for r in records.iter().filter(|r| r.is_final()) {
        stats.total_episodes += 1;
        stats.successful_episodes += usize::from(r.success);
    }
    for r in &selected.kept {
        let n = exporter.write(r, out)?;
        stats.total_sft_examples += n;
        stats.records_without_examples += usize::from(n == 0);
        stats.total_collected += 1;
        stats.total_successful += usize::from(r.success);
    }
    stats.total_sft_examples += exporter.finish(out)?;
    stats.counts = exporter.counts();
    stats.dropped = selected.dropped;
    Ok(stats)
}

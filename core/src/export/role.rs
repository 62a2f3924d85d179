//! The `Exporter` role: the trait a training-data format implements, and the error it reports.

use std::collections::BTreeMap;
use std::io::Write;

use crate::trajectory::TrajectoryRecord;

#[derive(Debug, thiserror::Error)]
pub enum ExportError {
    #[error("cannot write export: {0}")]
    Io(#[from] std::io::Error),
    #[error("cannot export record {key}: {message}")]
    Record { key: String, message: String },
    #[error("--where `{filter}` on record {key}: {message}\n  hint: records are trawl.trajectory JSON; `trawl export RUN --format trajectory` shows them whole")]
    Filter {
        filter: String,
        key: String,
        message: String,
    },
}

/// Turns one selected trajectory into training examples, written as lines to `out`.
pub trait Exporter: Send + Sync {
    /// The file extension of the output (`jsonl`).
    fn extension(&self) -> &str {
        "jsonl"
    }

    /// The file name a format is known by (`preds.json`), used when no output is given.
    fn file_name(&self) -> Option<&str> {
        None
    }

    /// Writes the examples of one trajectory and returns how many it wrote.
    fn write(&self, record: &TrajectoryRecord, out: &mut dyn Write) -> Result<usize, ExportError>;

    /// Called once after the last record: a format that is one document rather than lines
    /// (`preds.json`, Parquet) or that is made of groups of records (preference pairs) writes it
    /// here, and returns how many examples that added.
    fn finish(&self, _out: &mut dyn Write) -> Result<usize, ExportError> {
        Ok(0)
    }

    /// What the format counted beyond examples, read after `finish`: what it could not carry
    /// (`tool_call_text_dropped`), groups it left out and why (`groups_zero_variance`), pairs it
    /// made. Written into the export's stats under `counts`.
    fn counts(&self) -> BTreeMap<String, usize> {
        BTreeMap::new()
    }
}

//! Selection (rejection sampling) and the `Exporter` role. Every rollout is kept in the run with
//! its scores; selection happens here, at export time, and can be re-run with other settings.
//!
//! The files: `role` (the `Exporter` trait and its error), `select` (which rollouts are kept,
//! and why the others are not), `write` (the kept ones through an exporter, with the counts),
//! and `card` (where an export goes, and the dataset card written beside it).

mod card;
mod role;
mod select;
mod write;

pub use card::{dataset_card, Destination, ExportPaths};
pub use role::{ExportError, Exporter};
pub use select::{select, DropReason, Selected, Selection};
pub use write::{export_records, ExportStats};

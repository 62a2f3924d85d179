//! The rollout engine: environments × scaffolds × models × tasks × samples, run concurrently on
//! tokio, streamed to the run directory, resumable.
//!
//! The files, in the order a run meets them: `build` (every component from the registry, into
//! the state each rollout shares), `plan` (the rollouts to do, and adaptive sampling), `run` (the
//! plan launched and recorded), `budget` (the error budget that stops a run), `rollout` (one
//! episode within its limits), `score` (its evaluators), `record` (its trajectory record), and
//! `summary` (what a run reports and leaves behind). `check` builds without running.

mod budget;
mod build;
mod check;
mod plan;
mod record;
mod rollout;
mod run;
mod score;
mod summary;
#[cfg(test)]
mod tests;

pub use check::{check, CheckReport, PingResult};
pub use run::run;
pub use summary::{
    default_run_dir, now_rfc3339, rollout_seed, Manifest, ResumeSummary, RunError, RunObserver,
    RunOptions, RunStatus, RunSummary, SamplingSummary, Session, Silent, StopSignal, TRAWL_VERSION,
};

//! What a run reports and leaves behind: its options, status, summaries and manifest, the
//! observer that follows it, and the names and seeds that identify a run and its rollouts.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, SystemTime};

use serde::{Deserialize, Serialize};
use tokio_util::sync::CancellationToken;

use crate::config::{ConfigError, ExperimentConfig};
use crate::environment::EnvironmentError;
use crate::matrix::Skipped;
use crate::store::StoreError;
use crate::trajectory::{RolloutKey, TrajectoryRecord};

/// trawl's version, recorded in every record and manifest.
pub const TRAWL_VERSION: &str = env!("CARGO_PKG_VERSION");

#[derive(Debug, thiserror::Error)]
pub enum RunError {
    #[error(transparent)]
    Config(#[from] ConfigError),
    #[error(transparent)]
    Store(#[from] StoreError),
    #[error("environment `{environment}` could not list its tasks: {source}")]
    Tasks {
        environment: String,
        #[source]
        source: EnvironmentError,
    },
    #[error("scaffold `{scaffold}` cannot run in environment `{environment}`: it needs {missing} actions, which the environment does not offer\n  hint (config): leave the pair out with `[matrix] exclude = [{{ environment = \"{environment}\", scaffold = \"{scaffold}\" }}]`, or set `[matrix] skip_incompatible = true` to skip and list every such pair\n  hint (environment author): an environment whose episodes accept {missing} actions says so in `Environment::action_space()` (`ActionSpace {{ {missing}: true, .. }}`)")]
    Mismatch {
        scaffold: String,
        environment: String,
        missing: String,
    },
    #[error("no rollout to run: {0}\n  hint: check the [matrix] include and exclude lists")]
    NothingToRun(String),
    #[error("{dir} was started with a different config ({dir}/config.toml); resuming with this one would mix two experiments\n  hint: use another --out, or pass --force to resume anyway")]
    ConfigChanged { dir: PathBuf },
}

/// How sampling until enough succeed went: samples spent and where each cell stopped.
#[derive(Debug, Clone, Default, Serialize, Deserialize, PartialEq)]
pub struct SamplingSummary {
    pub max: u32,
    pub until_successes: u32,
    /// (environment, task, scaffold, model) combinations.
    pub cells: u64,
    /// Finished samples over all cells (every session's).
    pub samples: u64,
    /// Cells that got `until_successes` successes.
    pub reached_successes: u64,
    /// Cells that used all `max` samples without that many.
    pub reached_max: u64,
    /// Cells stopped before either (interrupted, an infrastructure error, the token budget).
    pub unfinished: u64,
}

/// Tells the caller what the engine is doing, for progress bars and logs.
pub trait RunObserver: Send + Sync {
    /// The run is about to launch `pending` rollouts; `skipped` were already done.
    fn started(&self, _pending: u64, _skipped: u64) {}
    /// One record was written.
    fn finished(&self, _record: &TrajectoryRecord) {}
}

/// An observer that ignores everything.
pub struct Silent;

impl RunObserver for Silent {}

/// How a caller stops a run: `soft` stops launching new rollouts; `hard` cuts the ones in flight
/// short, recording them as interrupted.
#[derive(Clone, Default)]
pub struct StopSignal {
    pub soft: CancellationToken,
    pub hard: CancellationToken,
}

impl StopSignal {
    /// Stop launching now, and cut in-flight rollouts short after `grace`.
    pub fn stop_after(&self, grace: Duration) {
        self.soft.cancel();
        let hard = self.hard.clone();
        tokio::spawn(async move {
            tokio::time::sleep(grace).await;
            hard.cancel();
        });
    }
}

pub struct RunOptions {
    pub out: PathBuf,
    /// Resume even if the stored config differs.
    pub force: bool,
    pub stop: StopSignal,
    pub observer: Arc<dyn RunObserver>,
}

/// How the run ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum RunStatus {
    Running,
    Finished,
    Interrupted,
    /// Too many infrastructure errors: the run stopped itself.
    Failed,
}

#[derive(Debug, Clone, Serialize)]
pub struct RunSummary {
    pub dir: PathBuf,
    pub status: RunStatus,
    pub skipped: u64,
    pub launched: u64,
    pub written: u64,
    pub successes: u64,
    pub infra_errors: u64,
    pub interrupted: u64,
    pub resume: ResumeSummary,
    /// What each environment reported about how it runs (its sandbox's isolation, ...), as in
    /// the manifest.
    pub environments: BTreeMap<String, serde_json::Value>,
    /// Incompatible combinations left out (`[matrix] skip_incompatible`), as in the manifest.
    pub skipped_combinations: Vec<Skipped>,
    /// What decides each record's reward and success.
    pub scoring: String,
    /// With `samples = { max, until_successes }`: the samples spent and where cells stopped.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub sampling: Option<SamplingSummary>,
    /// Tokens (prompt and completion) the run's rollouts have used, every session's.
    pub tokens_used: u64,
    /// Whether `max_total_tokens` stopped the run from starting more rollouts.
    pub budget_spent: bool,
}

#[derive(Debug, Clone, Default, Serialize)]
pub struct ResumeSummary {
    pub moved_aside: usize,
    pub dropped_torn_tail: bool,
    pub duplicates_removed: usize,
    /// Records whose rewards trawl cannot use (`"reward": null`), among those moved aside and
    /// re-run: one note each, naming file, line and fields.
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub repaired: Vec<String>,
}

/// `manifest.json`: what ran, with which versions, when.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Manifest {
    pub schema: String,
    pub run_id: String,
    pub name: String,
    pub trawl_version: String,
    pub host: String,
    pub seed: u64,
    /// `role/name` → `kind version`.
    pub components: BTreeMap<String, String>,
    /// Environment name → what it reported about how it runs (sandbox isolation, ...).
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub environments: BTreeMap<String, serde_json::Value>,
    /// The plugin libraries the run loaded, with their versions.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub plugins: Vec<crate::registry::PluginLibrary>,
    /// Which evaluations make each record's reward and success (the config's `[scoring]`).
    #[serde(default, skip_serializing_if = "serde_json::Value::is_null")]
    pub scoring: serde_json::Value,
    /// Combinations left out because the scaffold needs actions the environment lacks
    /// (`[matrix] skip_incompatible = true`).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub skipped_combinations: Vec<Skipped>,
    pub started_at: String,
    pub ended_at: Option<String>,
    pub status: RunStatus,
    /// One entry per `trawl run` into this directory.
    pub sessions: Vec<Session>,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Session {
    pub started_at: String,
    pub ended_at: Option<String>,
    pub status: RunStatus,
    pub skipped: u64,
    pub launched: u64,
    pub written: u64,
    pub infra_errors: u64,
}

pub fn now_rfc3339() -> String {
    humantime::format_rfc3339_millis(SystemTime::now()).to_string()
}

pub(super) fn hostname() -> String {
    std::fs::read_to_string("/proc/sys/kernel/hostname")
        .map(|s| s.trim().to_string())
        .or_else(|_| std::env::var("HOSTNAME"))
        .unwrap_or_else(|_| "unknown".into())
}

/// A per-rollout seed from the run seed and the key: stable across runs and resumes, different
/// for every sample. Kept within 31 bits, which every backend accepts.
pub fn rollout_seed(run_seed: u64, key: &RolloutKey) -> u64 {
    // splitmix64 finaliser
    let mut z = run_seed ^ key.stable_hash();
    z = z.wrapping_add(0x9e37_79b9_7f4a_7c15);
    z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
    (z ^ (z >> 31)) & 0x7fff_ffff
}

/// The run directory a config writes to by default: `runs/<name>`.
pub fn default_run_dir(config: &ExperimentConfig) -> PathBuf {
    Path::new("runs").join(&config.name)
}

//! Where an export goes and the dataset card written beside it: the output file, its
//! `<stem>_stats.json` and `<stem>_card.md`, and the card's text (source, selection, counts).

use std::path::{Path, PathBuf};

use super::role::Exporter;
use super::write::ExportStats;
use crate::store;
use crate::trajectory::TRAJECTORY_SCHEMA;

/// The version of trawl writing the card: `engine::TRAWL_VERSION`, read here from the same
/// package version so that export stays below the engine.
const TRAWL_VERSION: &str = env!("CARGO_PKG_VERSION");

/// Where an export goes.
pub struct Destination<'a> {
    /// The file; default: the format's own file name, else `export-<format>.<ext>`, in `run`.
    pub output: Option<&'a Path>,
    pub run: &'a Path,
    /// Replace an existing output (never a run's own file).
    pub force: bool,
}

/// The files an export writes.
pub struct ExportPaths {
    /// The data itself.
    pub output: PathBuf,
    /// The output's file stem (`export` when it has none).
    pub stem: String,
    /// `<stem>_stats.json` beside the output: the counts.
    pub stats: PathBuf,
    /// `<stem>_card.md` beside the output: the dataset card.
    pub card: PathBuf,
}

impl Destination<'_> {
    /// The files an export in `format` by `exporter` writes here.
    pub fn paths(&self, exporter: &dyn Exporter, format: &str) -> ExportPaths {
        let output = match self.output {
            Some(o) => o.to_path_buf(),
            None => self.run.join(
                exporter
                    .file_name()
                    .map(str::to_string)
                    .unwrap_or_else(|| format!("export-{format}.{}", exporter.extension())),
            ),
        };
        let stem = output
            .file_stem()
            .map(|s| s.to_string_lossy().into_owned())
            .unwrap_or_else(|| "export".into());
        let stats = output.with_file_name(format!("{stem}_stats.json"));
        let card = output.with_file_name(format!("{stem}_card.md"));
        ExportPaths {
            output,
            stem,
            stats,
            card,
        }
    }
}

/// The dataset card written beside an export (`<output>_card.md`): Hugging Face's card shape
/// (YAML front matter naming the data file, then prose) saying where the data came from (the
/// run, its id and config hash), how it was selected, and what was kept and dropped and why.
pub fn dataset_card(
    run: &Path,
    output: &Path,
    format: &str,
    settings: &serde_json::Value,
    stats: &ExportStats,
) -> String {
    let source = if run.is_file() {
        run.to_path_buf()
    } else {
        run.join(store::TRAJECTORIES)
    };
    let run_dir = if run.is_file() {
        run.parent().unwrap_or(Path::new("."))
    } else {
        run
    };
    let manifest: serde_json::Value = std::fs::read(run_dir.join(store::MANIFEST))
        .ok()
        .and_then(|b| serde_json::from_slice(&b).ok())
        .unwrap_or_default();
    let hash =
        |p: &Path| crate::fetch::sha256_file(p).unwrap_or_else(|_| "(not found)".to_string());
    let file_name = output
        .file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_default();
    let dropped: String = stats
        .dropped
        .iter()
        .map(|(why, n)| {
            let why = serde_json::to_value(why)
                .ok()
                .and_then(|v| v.as_str().map(str::to_string))
                .unwrap_or_default();
            format!("| dropped: {why} | {n} |\n")
        })
        .collect();
    let counted: String = stats
        .counts
        .iter()
        .map(|(what, n)| format!("| {format}: {what} | {n} |\n"))
        .collect();
    let text = |v: &serde_json::Value| v.as_str().unwrap_or("(unknown)").to_string();
    format!(
        "---\ntags:\n- trawl\n- {format}\nconfigs:\n- config_name: default\n  data_files: {file_name}\n---\n\n\
# {file_name}\n\n\
Training data exported by trawl {version} in the `{format}` format (card schema `trawl.dataset-card/1`).\n\n\
## Source\n\n\
| | |\n|---|---|\n\
| records | `{source}` (schema `{schema}`), sha256 `{records_hash}` |\n\
| run | `{name}`, run id `{run_id}`, seed {seed}, status {status} |\n\
| config | `{config}`, sha256 `{config_hash}` |\n\
| trawl | {run_version} |\n\n\
## Selection\n\n\
```json\n{selection}\n```\n\n\
Format settings: `{settings}`\n\n\
## Counts\n\n\
| | |\n|---|---|\n\
| records read | {read} |\n\
| finished rollouts (infrastructure errors excluded) | {episodes} ({successes} successful) |\n\
| rollouts kept | {kept} ({kept_ok} successful) |\n\
| examples written | {examples} |\n\
| kept rollouts without an example | {without} |\n\
{dropped}{counted}",
        version = TRAWL_VERSION,
        source = source.display(),
        schema = TRAJECTORY_SCHEMA,
        records_hash = hash(&source),
        name = text(&manifest["name"]),
        run_id = text(&manifest["run_id"]),
        seed = manifest["seed"],
        status = text(&manifest["status"]),
        config = run_dir.join(store::CONFIG).display(),
        config_hash = hash(&run_dir.join(store::CONFIG)),
        run_version = text(&manifest["trawl_version"]),
        selection = serde_json::to_string_pretty(&stats.selection).unwrap_or_default(),
        read = stats.records_read,
        episodes = stats.total_episodes,
        successes = stats.successful_episodes,
        kept = stats.total_collected,
        kept_ok = stats.total_successful,
        examples = stats.total_sft_examples,
        without = stats.records_without_examples,
    )
}

//! `trawl export`: the command line made into a selection and format settings, and the export
//! written through a temporary file with its counts and dataset card beside it.

use std::collections::HashSet;
use std::io::{BufWriter, Write};
use std::path::{Path, PathBuf};
use std::process::ExitCode;

use anyhow::{bail, Context};
use trawl_core::export::{dataset_card, export_records, Destination, ExportPaths, Selection};
use trawl_core::registry::{BuildContext, Factory, Registry, Role};
use trawl_core::{store, TrajectoryRecord};

use crate::args::{DedupArg, ExportArgs};
use crate::exit::input;
use crate::runs::{load_run_with, review_labels};

pub fn export(registry: &Registry, args: ExportArgs) -> anyhow::Result<ExitCode> {
    let records = load_run_with(&args.run, args.skip_bad_lines)?;
    let mut exclude = HashSet::new();
    if let Some(file) = &args.exclude_tasks {
        let text = std::fs::read_to_string(file).map_err(|e| {
            input(format!(
                "cannot read --exclude-tasks file {}: {e}",
                file.display()
            ))
        })?;
        exclude.extend(
            text.lines()
                .map(str::trim)
                .filter(|l| !l.is_empty() && !l.starts_with('#'))
                .map(str::to_string),
        );
    }
    if args.min_reward.is_some_and(|r| !r.is_finite()) {
        bail!(input("--min-reward must be a number"));
    }
    let mut evaluator_min_reward = Vec::new();
    for item in &args.evaluator_min_reward {
        let parsed = item
            .split_once('=')
            .and_then(|(n, r)| Some((n.trim().to_string(), r.trim().parse::<f64>().ok()?)))
            .filter(|(n, r)| !n.is_empty() && r.is_finite());
        match parsed {
            Some(p) => evaluator_min_reward.push(p),
            None => bail!(input(format!(
                "--evaluator-min-reward `{item}`: write EVALUATOR=REWARD, for example rubric=0.5"
            ))),
        }
    }
    let exit_statuses = args.exit_status.clone();
    for (flag, v) in [
        ("--min-pass-rate", args.min_pass_rate),
        ("--max-pass-rate", args.max_pass_rate),
    ] {
        if v.is_some_and(|v| !(0.0..=1.0).contains(&v)) {
            bail!(input(format!("{flag} must be a rate from 0 to 1")));
        }
    }
    let dedup = match args.dedup {
        None => None,
        Some(DedupArg::Exact) => Some(trawl_core::hygiene::Dedup::Exact),
        Some(DedupArg::Near) => {
            let t = args.near_dup_threshold;
            if !(t > 0.0 && t <= 1.0) {
                bail!(input(format!(
                    "--near-dup-threshold {t}: give a similarity above 0 and at most 1 (0.9 is usual)"
                )));
            }
            Some(trawl_core::hygiene::Dedup::Near { threshold: t })
        }
    };
    let decontaminate = if args.decontaminate.is_empty() {
        None
    } else {
        let files: Vec<&Path> = args.decontaminate.iter().map(PathBuf::as_path).collect();
        Some(
            trawl_core::hygiene::HeldOut::load(&files, args.decontaminate_ngram)
                .map_err(|e| input(format!("--decontaminate: {e}")))?,
        )
    };
    let where_filter = match &args.where_filter {
        Some(f) => Some(args.where_limits.compile(f)?),
        None => None,
    };
    let labels = match args.labels.as_deref() {
        None => None,
        Some(mode) => Some(review_labels(&args.run, mode)?),
    };
    let selection = Selection {
        success_only: args.success_only,
        min_reward: args.min_reward,
        best_of_n: args.best_of_n,
        max_per_task: args.max_per_task,
        exclude_tasks: exclude,
        include_truncated: args.include_truncated,
        evaluator_success: args.evaluator_success.clone(),
        evaluator_min_reward,
        max_turns: args.max_turns,
        max_tokens: args.max_tokens,
        exit_statuses,
        where_filter,
        decontaminate,
        dedup,
        min_pass_rate: args.min_pass_rate,
        max_pass_rate: args.max_pass_rate,
        labels,
    };
    if let Some((name, names)) = selection.unknown_evaluator(&records) {
        bail!(input(format!(
            "no rollout of {} was scored by an evaluator named `{name}`; evaluators in this run: {}",
            args.run.display(),
            if names.is_empty() { "none".to_string() } else { names.join(", ") }
        )));
    }
    let mut settings = serde_json::Map::new();
    if let Some(a) = &args.agent {
        settings.insert("agent".into(), serde_json::json!(a));
    }
    if let Some(s) = args.style {
        settings.insert("style".into(), serde_json::json!(s.as_str()));
    }
    for item in &args.set {
        let (key, value) = format_setting(item).map_err(input)?;
        settings.insert(key, value);
    }
    let settings = serde_json::Value::Object(settings);
    export_run(
        registry,
        &records,
        &args.format,
        &settings,
        &selection,
        Destination {
            output: args.output.as_deref(),
            run: &args.run,
            force: args.force,
        },
    )?;
    Ok(ExitCode::SUCCESS)
}

/// One `--set KEY=VALUE`: the value as TOML reads it (`0.5`, `true`, `"x"`, `[1, 2]`), else the
/// text itself.
fn format_setting(item: &str) -> Result<(String, serde_json::Value), String> {
    let Some((key, value)) = item.split_once('=').filter(|(k, _)| !k.trim().is_empty()) else {
        return Err(format!(
            "--set `{item}`: expected KEY=VALUE, for example --set tools=json"
        ));
    };
    let parsed = toml::from_str::<toml::Table>(&format!("v = {value}"))
        .ok()
        .and_then(|mut t| t.remove("v"));
    // JSON has no NaN or infinity: they would arrive as `null`, the setting's default.
    if parsed.as_ref().is_some_and(has_non_finite) {
        return Err(format!(
            "--set `{item}`: `{}` must be a finite number",
            key.trim()
        ));
    }
    let parsed = parsed
        .and_then(|v| serde_json::to_value(v).ok())
        .unwrap_or_else(|| serde_json::json!(value));
    Ok((key.trim().to_string(), parsed))
}

/// Whether a TOML value holds `nan` or `inf` anywhere.
fn has_non_finite(v: &toml::Value) -> bool {
    match v {
        toml::Value::Float(f) => !f.is_finite(),
        toml::Value::Array(items) => items.iter().any(has_non_finite),
        toml::Value::Table(t) => t.values().any(has_non_finite),
        _ => false,
    }
}

/// Selects and writes `records` in `format` to its destination through a temporary file, with
/// the counts beside it in `<output>_stats.json`.
pub fn export_run(
    registry: &Registry,
    records: &[TrajectoryRecord],
    format: &str,
    settings: &serde_json::Value,
    selection: &Selection,
    destination: Destination<'_>,
) -> anyhow::Result<()> {
    let Some(entry) = registry.get(Role::Exporter, format) else {
        bail!(input(format!(
            "unknown format `{format}`; formats: {}",
            registry.kind_list(Role::Exporter)
        )));
    };
    let Factory::Exporter(factory) = entry.factory.clone() else {
        bail!("registry entry for `{format}` is not an exporter")
    };
    let exporter = factory(settings, &BuildContext::default()).map_err(|e| {
        let at = if e.path.is_empty() {
            String::new()
        } else {
            format!(" setting `{}`", e.path.join("."))
        };
        input(format!(
            "format `{format}`{at}: {}\n  hint: `trawl plugins` lists the formats; settings are given as --set KEY=VALUE",
            e.message
        ))
    })?;
    let ExportPaths {
        output,
        stem,
        stats: stats_path,
        card: card_path,
    } = destination.paths(exporter.as_ref(), format);
    let Destination { run, force, .. } = destination;
    let output = output.as_path();
    // Every file is checked before anything is written: a refusal leaves everything as it was.
    for path in [output, stats_path.as_path(), card_path.as_path()] {
        store::check_output(path, force).map_err(input)?;
    }
    // Written beside the output under a unique name and renamed into place: a failed export
    // leaves no half file, and the temporary file is removed when it fails.
    let dir = match output.parent() {
        Some(d) if !d.as_os_str().is_empty() => d,
        _ => Path::new("."),
    };
    // `-o some/new/folder/x.jsonl` makes the folder, as `--out` does for a run.
    std::fs::create_dir_all(dir)
        .with_context(|| format!("cannot create the folder {}", dir.display()))?;
    let tmp = tempfile::Builder::new()
        .prefix(&format!(".{stem}."))
        .suffix(".partial")
        .tempfile_in(dir)
        .with_context(|| format!("cannot create a temporary file in {}", dir.display()))?;
    let mut writer = BufWriter::new(tmp);
    let stats = export_records(records, selection, exporter.as_ref(), format, &mut writer)
        .map_err(|e| match e {
            trawl_core::ExportError::Filter { .. } => input(e),
            other => anyhow::Error::new(other),
        })?;
    writer.flush()?;
    let tmp = writer
        .into_inner()
        .map_err(|e| anyhow::anyhow!("cannot finish the export: {}", e.error()))?;
    tmp.as_file().sync_all()?;
    tmp.persist(output)
        .with_context(|| format!("cannot move the export into place at {}", output.display()))?;
    store::write_atomic(&stats_path, &serde_json::to_vec_pretty(&stats)?)?;
    let card = dataset_card(run, output, format, settings, &stats);
    store::write_atomic(&card_path, card.as_bytes())?;
    let dropped: Vec<String> = stats
        .dropped
        .iter()
        .map(|(why, n)| {
            format!(
                "{n} {}",
                serde_json::to_value(why)
                    .ok()
                    .and_then(|v| v.as_str().map(str::to_string))
                    .unwrap_or_default()
            )
        })
        .collect();
    let counted: String = stats
        .counts
        .iter()
        .map(|(what, n)| format!("; {what}: {n}"))
        .collect();
    eprintln!(
        "exported {} examples from {} of {} rollouts to {} ({format}); dropped: {}{counted}; counts in {}",
        stats.total_sft_examples,
        stats.total_collected,
        stats.records_read,
        output.display(),
        if dropped.is_empty() {
            "none".to_string()
        } else {
            dropped.join(", ")
        },
        stats_path.display()
    );
    Ok(())
}

//! `trawl check`: the whole config built as `run` would, what the run would be, and optionally
//! its tasks written out and its model servers asked.

use std::io::Write;
use std::path::Path;
use std::process::ExitCode;

use trawl_core::engine;
use trawl_core::registry::Registry;
use trawl_core::{store, ExperimentConfig};

use crate::exit::{code, input};

/// Writes each environment's tasks as JSON lines to a new file: `{"environment", "id", ...data}`
/// (the data's own fields at the top level, so a math task's line is a task file line again).
fn write_tasks(
    out: &Path,
    tasks: &std::collections::BTreeMap<String, Vec<trawl_core::Task>>,
) -> anyhow::Result<usize> {
    let file = std::fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .open(out)
        .map_err(|e| {
            if e.kind() == std::io::ErrorKind::AlreadyExists {
                input(format!(
                    "--tasks-out {}: the file exists; give a new path (nothing is overwritten)",
                    out.display()
                ))
            } else {
                anyhow::anyhow!("--tasks-out {}: {e}", out.display())
            }
        })?;
    let mut w = std::io::BufWriter::new(file);
    let mut n = 0;
    for (env, list) in tasks {
        for t in list {
            let mut line = serde_json::Map::new();
            line.insert("environment".into(), env.clone().into());
            line.insert("id".into(), t.id.clone().into());
            match &t.data {
                serde_json::Value::Object(fields) => {
                    for (k, v) in fields {
                        line.entry(k.clone()).or_insert_with(|| v.clone());
                    }
                }
                other => {
                    line.insert("data".into(), other.clone());
                }
            }
            serde_json::to_writer(&mut w, &line)?;
            w.write_all(b"\n")?;
            n += 1;
        }
    }
    w.flush()?;
    Ok(n)
}

/// `trawl check`: builds the whole config as `run` would, and says what the run would be.
pub async fn check(
    registry: &Registry,
    path: &Path,
    overrides: &[String],
    ping: bool,
    tasks_out: Option<&Path>,
) -> anyhow::Result<ExitCode> {
    let (cfg, map) = ExperimentConfig::load_with(path, registry, overrides).map_err(input)?;
    let report = engine::check(&cfg, &map, registry, ping)
        .await
        .map_err(|e| match e {
            engine::RunError::Store(store::StoreError::Io { .. }) => anyhow::Error::new(e),
            other => input(other),
        })?;
    println!(
        "{}: ok — {} rollouts{}: {} combination(s) × their tasks × {}",
        path.display(),
        report.rollouts,
        if matches!(cfg.samples, trawl_core::config::Samples::Until { .. }) {
            " at most"
        } else {
            ""
        },
        report.combinations.len(),
        cfg.samples
    );
    for (env, tasks) in &report.tasks {
        let evaluators = report.evaluators.get(env).cloned().unwrap_or_default();
        println!(
            "  environment {env}: {} task(s), scored by {}",
            tasks.len(),
            evaluators.join(", ")
        );
    }
    if let Some(out) = tasks_out {
        let n = write_tasks(out, &report.tasks)?;
        println!("  wrote {n} task(s) to {}", out.display());
    }
    for (e, s, m) in &report.combinations {
        println!("  runs {e} × {s} × {m}");
    }
    for s in &report.skipped_combinations {
        println!(
            "  skips {} × {}: {} ([matrix] skip_incompatible)",
            s.environment, s.scaffold, s.reason
        );
    }
    println!("  scoring: {}", report.scoring);
    let mut unreachable = 0;
    for p in &report.ping {
        match &p.served {
            Ok(None) => println!("  model {}: embedded, no server to ask", p.model),
            Ok(Some(ids)) => {
                let has = ids.iter().any(|id| id == &p.model_id);
                println!(
                    "  model {}: the server answers and serves {} model(s){}",
                    p.model,
                    ids.len(),
                    if has {
                        format!(", `{}` among them", p.model_id)
                    } else {
                        format!(
                            "; `{}` is NOT among them ({})",
                            p.model_id,
                            ids.iter().take(10).cloned().collect::<Vec<_>>().join(", ")
                        )
                    }
                );
            }
            Err(e) => {
                unreachable += 1;
                println!("  model {}: UNREACHABLE: {e}", p.model);
            }
        }
    }
    if unreachable > 0 {
        eprintln!("error: {unreachable} model server(s) did not answer; a run now would end in infrastructure errors");
        return Ok(ExitCode::from(code::INFRA));
    }
    Ok(ExitCode::SUCCESS)
}

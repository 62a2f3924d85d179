//! `trawl swe ...`: images for the SWE environment.

use std::path::PathBuf;
use std::process::ExitCode;

use crate::swe_images::{self as images, BuildOptions};
use clap::{Args, Subcommand};
use trawl_sandbox_docker::{DockerFactory, DockerSandboxConfig};
use trawl_swe::{instance, repos};

#[derive(Subcommand)]
pub enum SweCommand {
    /// Build the SWE images offline: the base (debootstrap + import) and one per bundled
    /// repository. Nothing is pulled; images already there are kept unless --rebuild.
    BuildImages(BuildImagesArgs),
    /// Write every scored rollout's report.json where the SWE-smith / SWE-bench harness puts
    /// them: OUT/logs/run_evaluation/<run>__<scaffold>__s<sample>/<model>/<instance_id>/report.json
    /// (a `/` in the model's name becomes `__`, as the harness writes it; an id that is not one
    /// folder name is refused).
    Reports {
        /// The run directory.
        run: PathBuf,
        /// Where `logs/` goes; the run directory when unset.
        #[arg(long)]
        out: Option<PathBuf>,
        /// Replace report files that exist.
        #[arg(long)]
        force: bool,
    },
}

#[derive(Args)]
pub struct BuildImagesArgs {
    /// Only the base image.
    #[arg(long)]
    base_only: bool,
    /// Instance files whose bundled repositories need images (default: the bundled instances).
    #[arg(long = "instances", value_name = "FILE")]
    instances: Vec<PathBuf>,
    /// Build again even when the image exists.
    #[arg(long)]
    rebuild: bool,
    /// Debian mirror for debootstrap.
    #[arg(long, default_value = "http://deb.debian.org/debian")]
    mirror: String,
    /// Debian release of the base image.
    #[arg(long, default_value = "bookworm")]
    suite: String,
}

pub async fn dispatch(command: SweCommand) -> anyhow::Result<ExitCode> {
    match command {
        SweCommand::BuildImages(args) => build_images(args).await,
        SweCommand::Reports { run, out, force } => reports(&run, out.as_deref(), force),
    }
}

async fn build_images(args: BuildImagesArgs) -> anyhow::Result<ExitCode> {
    let factory = DockerFactory::connect(DockerSandboxConfig::default())
        .await
        .map_err(crate::exit::input)?;
    let options = BuildOptions {
        rebuild: args.rebuild,
        suite: args.suite,
        mirror: args.mirror,
        ..BuildOptions::default()
    };
    let log = |line: &str| eprintln!("{line}");
    let started = std::time::Instant::now();
    images::build_base(&factory, &options, &log)
        .await
        .map_err(anyhow::Error::msg)?;
    if args.base_only {
        eprintln!("done in {:.1} s", started.elapsed().as_secs_f64());
        return Ok(ExitCode::SUCCESS);
    }
    let mut wanted = if args.instances.is_empty() {
        instance::builtin()
    } else {
        let mut all = Vec::new();
        for f in &args.instances {
            all.extend(instance::load_file(f).map_err(crate::exit::input)?);
        }
        all
    };
    wanted.sort_by(|a, b| a.repo.cmp(&b.repo));
    let mut done = std::collections::BTreeSet::new();
    let mut foreign = std::collections::BTreeSet::new();
    // Each image once, however many instances name it.
    for inst in &wanted {
        let Some(name) = repos::bundled(&inst.repo) else {
            foreign.insert(inst.image_name.clone().unwrap_or_else(|| inst.repo.clone()));
            continue;
        };
        let image = inst
            .image_name
            .clone()
            .unwrap_or_else(|| images::repo_image(name));
        if done.insert(image.clone()) {
            images::build_repo_image(&factory, name, &image, &options, &log)
                .await
                .map_err(anyhow::Error::msg)?;
        }
    }
    if !foreign.is_empty() {
        eprintln!(
            "not built (not bundled with trawl; load them with `docker load -i FILE`): {}",
            foreign.into_iter().collect::<Vec<_>>().join(", ")
        );
    }
    eprintln!("done in {:.1} s", started.elapsed().as_secs_f64());
    Ok(ExitCode::SUCCESS)
}

fn reports(
    run: &std::path::Path,
    out: Option<&std::path::Path>,
    force: bool,
) -> anyhow::Result<ExitCode> {
    let records = crate::runs::load_run(run)?;
    let name = run
        .file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_else(|| "run".into());
    let root = out.unwrap_or(run).join("logs").join("run_evaluation");
    let mut files = Vec::new();
    for r in records.iter().filter(|r| r.is_final()) {
        let Some(report) = r
            .evaluations
            .iter()
            .find(|e| e.evaluator == "swe_tests")
            .map(|e| &e.details["report"])
            .filter(|v| v.is_object())
        else {
            continue;
        };
        // Each name is one folder: a model's `/` becomes `__` as the harness writes it
        // (`org/model` → `org__model`); an id or name that would still reach outside the
        // folder (`..`, `/`, NUL: a hand-edited or imported record) stops the command before
        // anything is written.
        let run_part = format!(
            "{name}__{}__s{}",
            r.key.scaffold.replace('/', "__"),
            r.key.sample
        );
        let model = r.key.model.replace('/', "__");
        for (field, part) in [
            ("scaffold", &run_part),
            ("model", &model),
            ("task", &r.key.task),
        ] {
            trawl_core::values::check_path_part(part).map_err(|why| {
                crate::exit::input(format!(
                    "{}: the rollout {}: `key.{field}` `{}` {why}; no report was written\n  hint: fix or drop that record (its task id comes from the task file)",
                    run.join(trawl_core::store::TRAJECTORIES).display(),
                    r.key,
                    part.escape_debug()
                ))
            })?;
        }
        let dir = root.join(run_part).join(model).join(&r.key.task);
        files.push((dir, report));
    }
    // Every file is checked before any is written: a refusal leaves everything as it was.
    for (dir, _) in &files {
        trawl_core::store::check_output(&dir.join("report.json"), force)
            .map_err(crate::exit::input)?;
    }
    let mut written = 0;
    for (dir, report) in files {
        std::fs::create_dir_all(&dir)?;
        trawl_core::store::write_atomic(
            &dir.join("report.json"),
            &serde_json::to_vec_pretty(report)?,
        )?;
        written += 1;
    }
    if written == 0 {
        return Err(crate::exit::input(format!(
            "{} holds no rollout scored by `swe_tests`",
            run.display()
        )));
    }
    eprintln!("wrote {written} report.json files under {}", root.display());
    Ok(ExitCode::SUCCESS)
}

/// `trawl import`: trajectories of mini-swe-agent and SWE-agent into a run directory.
#[derive(Args)]
pub struct ImportArgs {
    /// Trajectory files or folders holding them (`*.traj.json`: mini-swe-agent; `*.traj`:
    /// SWE-agent).
    #[arg(required = true)]
    paths: Vec<PathBuf>,
    /// The run directory to write (created, or added to: files already imported are skipped).
    #[arg(long)]
    into: PathBuf,
    /// A folder of harness reports (`.../<instance_id>/report.json`) to score them by; by
    /// default, reports found in the imported folders.
    #[arg(long)]
    reports: Option<PathBuf>,
    /// Instance files (JSON or JSONL) giving the imported trajectories their task data; the
    /// bundled instances are known already.
    #[arg(long = "instances", value_name = "FILE")]
    instances: Vec<PathBuf>,
    /// Model name for trajectories that do not record one.
    #[arg(long)]
    model: Option<String>,
    /// Score every imported trajectory without a report by running its patch through the SWE
    /// harness (needs the instance and its image, or `--sandbox local`).
    #[arg(long)]
    score: bool,
    /// Where `--score` runs: docker or local.
    #[arg(long, default_value = "docker")]
    sandbox: String,
}

pub async fn import(args: ImportArgs) -> anyhow::Result<ExitCode> {
    use trawl_core::store::{self, RunDir};
    use trawl_swe::import::{self, Extra};

    let mut known: std::collections::HashMap<String, instance::SweInstance> = instance::builtin()
        .into_iter()
        .map(|i| (i.instance_id.clone(), i))
        .collect();
    for f in &args.instances {
        for i in instance::load_file(f).map_err(crate::exit::input)? {
            known.insert(i.instance_id.clone(), i);
        }
    }
    // Reports given, else any that sit among the imported trajectories.
    let mut reports = std::collections::BTreeMap::new();
    let report_dirs: Vec<&PathBuf> = match &args.reports {
        Some(dir) => vec![dir],
        None => args.paths.iter().filter(|p| p.is_dir()).collect(),
    };
    for dir in report_dirs {
        reports.extend(import::find_reports(dir).map_err(crate::exit::input)?);
    }
    let mut files = Vec::new();
    for p in &args.paths {
        files.extend(import::find_trajectories(p).map_err(crate::exit::input)?);
    }
    if files.is_empty() {
        return Err(crate::exit::input("no *.traj.json or *.traj files found"));
    }
    let dir = RunDir::open(&args.into).map_err(crate::exit::input)?;
    let existing = match store::read_records(&dir.file(store::TRAJECTORIES)) {
        Ok((records, _)) => records,
        Err(_) => Vec::new(),
    };
    let mut taken: std::collections::HashSet<trawl_core::RolloutKey> =
        existing.iter().map(|r| r.key.clone()).collect();
    let imported_before: std::collections::HashSet<String> = existing
        .iter()
        .filter_map(|r| {
            r.outcome.artifacts["imported_from"]
                .as_str()
                .map(str::to_string)
        })
        .collect();
    let evaluator = if args.score {
        let config: trawl_swe::SweConfig =
            serde_json::from_value(serde_json::json!({"sandbox": {"type": args.sandbox}}))
                .map_err(crate::exit::input)?;
        Some(
            trawl_swe::SweTestsEvaluator::new(
                config,
                &trawl_core::BuildContext {
                    run_name: "import".into(),
                    ..Default::default()
                },
            )
            .map_err(crate::exit::input)?,
        )
    } else {
        None
    };
    let mut writer = dir.appender().map_err(anyhow::Error::new)?;
    let (mut written, mut skipped, mut scored) = (0, 0, 0);
    for f in &files {
        if imported_before.contains(&f.display().to_string()) {
            skipped += 1;
            continue;
        }
        // The instance id is the trajectory's own (SWE-agent's replay config, mini-swe-agent's
        // `instance_id`), not its file name: read it first, then import with what is known of it.
        let id = import::import_file(f, &Extra::default())
            .map_err(crate::exit::input)?
            .key
            .task;
        let mut record = import::import_file(
            f,
            &Extra {
                instance: known.get(&id),
                report: reports.get(&id).cloned(),
                model: args.model.clone(),
            },
        )
        .map_err(crate::exit::input)?;
        if record.evaluations.is_empty() {
            if let (Some(ev), Some(inst)) = (&evaluator, known.get(&record.key.task)) {
                record.task = inst.to_task();
                let result = ev
                    .evaluate_patch(inst, record.outcome.submission.as_deref())
                    .await
                    .map_err(|e| anyhow::anyhow!("scoring {}: {e}", f.display()))?;
                record.success = result.report.resolved;
                record.reward = if record.success { 1.0 } else { 0.0 };
                record.evaluations.push(trawl_core::Evaluation {
                    evaluator: "swe_tests".into(),
                    reward: record.reward,
                    success: record.success,
                    components: Default::default(),
                    details: serde_json::json!({
                        "report": result.report.to_harness_json(&record.key.task),
                        "log_tail": result.log_tail,
                    }),
                });
                scored += 1;
            }
        }
        // The same instance imported from another file is another sample.
        while !taken.insert(record.key.clone()) {
            record.key.sample += 1;
        }
        writer.append(&record).map_err(anyhow::Error::new)?;
        written += 1;
    }
    writer.sync().map_err(anyhow::Error::new)?;
    if let Some(ev) = &evaluator {
        ev.shutdown().await;
    }
    eprintln!(
        "imported {written} trajectories into {} ({skipped} already there{}); next: trawl stats {0}",
        args.into.display(),
        if args.score { format!(", {scored} scored by the SWE harness") } else { String::new() }
    );
    Ok(ExitCode::SUCCESS)
}

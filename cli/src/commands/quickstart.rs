//! `trawl quickstart`: the built-in example config run, its stats printed, its successes exported.

use std::path::{Path, PathBuf};
use std::process::ExitCode;

use trawl_core::export::{Destination, Selection};
use trawl_core::registry::Registry;
use trawl_core::ExperimentConfig;

use crate::args::RunArgs;
use crate::commands::export::export_run;
use crate::commands::run::run;
use crate::exit::input;
use crate::runs::load_run;

/// The quickstart config, built into the binary.
const QUICKSTART: &str = include_str!("../../../examples/quickstart.toml");

pub async fn quickstart(registry: Registry, out: PathBuf) -> anyhow::Result<ExitCode> {
    let (mut config, map) = ExperimentConfig::parse(
        Path::new("examples/quickstart.toml"),
        QUICKSTART,
        &registry,
        "quickstart",
    )
    .map_err(input)?;
    config.base_dir = std::env::current_dir()?;
    let args = RunArgs {
        config: PathBuf::from("examples/quickstart.toml"),
        out: None,
        force: false,
        set: Vec::new(),
        grace_secs: 30.0,
        quiet: false,
        progress_secs: 30.0,
    };
    let (code, summary) = run(&config, &map, &registry, out.clone(), &args).await?;
    if code != ExitCode::SUCCESS {
        return Ok(code);
    }
    let records = load_run(&summary.dir)?;
    println!("{}", trawl_core::stats::compute(&records).render());
    let selection = Selection {
        success_only: true,
        ..Selection::default()
    };
    export_run(
        &registry,
        &records,
        "openai",
        &serde_json::json!({}),
        &selection,
        Destination {
            output: Some(&out.join("sft.jsonl")),
            run: &out,
            // The quickstart's own export, re-made from the whole run each time it is run.
            force: true,
        },
    )?;
    Ok(ExitCode::SUCCESS)
}

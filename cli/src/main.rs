//! The `trawl` command line: thin commands over trawl-core and the registered kinds. This file
//! holds `main` (logging, the runtime, the exit code), the plugin registry and the dispatch to
//! the module of each command.

#![forbid(unsafe_code)]

use std::io::IsTerminal;
use std::path::{Path, PathBuf};
use std::process::ExitCode;

use clap::Parser;
use trawl_core::registry::Registry;

// Linking these crates is what registers their kinds.
use trawl_bash as _;
use trawl_chat as _;
use trawl_code as _;
use trawl_coder_tester as _;
use trawl_exporters as _;
use trawl_llama as _;
use trawl_math as _;
use trawl_openai as _;
use trawl_openenv as _;
use trawl_sandbox_docker as _;
use trawl_sandbox_local as _;
use trawl_swe as _;
use trawl_swe_tools as _;
use trawl_tool_calling as _;
use trawl_tools_env as _;
use trawl_usersim as _;

mod args;
mod commands;
mod exit;
mod progress;
mod runs;
mod show;
mod signals;
mod swe_images;

use args::*;
use commands::swe;
use exit::{code, input, InputError};
use progress::{LogFileWriter, LOG_FILE};

fn main() -> ExitCode {
    let cli = Cli::parse();
    let default_level = match cli.verbose {
        0 => "warn",
        1 => "info",
        2 => "debug",
        _ => "trace",
    };
    let filter = tracing_subscriber::EnvFilter::try_from_default_env()
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new(default_level));
    if let Some(path) = &cli.log_file {
        match std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(path)
        {
            Ok(f) => {
                let _ = LOG_FILE.set(std::sync::Mutex::new(f));
            }
            Err(e) => {
                eprintln!("error: --log-file {}: {e}", path.display());
                return ExitCode::from(code::INPUT);
            }
        }
    }
    {
        use tracing_subscriber::fmt::writer::MakeWriterExt;
        // Colour only on a terminal, and never in the log file.
        let ansi = std::io::stderr().is_terminal() && LOG_FILE.get().is_none();
        let builder = tracing_subscriber::fmt()
            .with_env_filter(filter)
            .with_ansi(ansi);
        match LOG_FILE.get() {
            Some(_) => builder
                .with_writer(std::io::stderr.and(|| LogFileWriter))
                .init(),
            None => builder.with_writer(std::io::stderr).init(),
        }
    }
    // Thousands of concurrent episodes need thousands of sockets.
    let _ = rlimit::increase_nofile_limit(u64::MAX);

    let runtime = match tokio::runtime::Runtime::new() {
        Ok(r) => r,
        Err(e) => {
            eprintln!("error: cannot start the async runtime: {e}");
            return ExitCode::FAILURE;
        }
    };
    match runtime.block_on(dispatch(cli.command, &cli.plugins)) {
        Ok(code) => code,
        Err(e) => {
            eprintln!("error: {e:#}");
            if e.downcast_ref::<InputError>().is_some() {
                ExitCode::from(code::INPUT)
            } else {
                ExitCode::FAILURE
            }
        }
    }
}

/// The built-in kinds plus every plugin: the folders of TRAWL_PLUGIN_PATH, then `--plugin`
/// libraries, then the `plugins` list of `config`. A library that cannot be loaded stops here,
/// before anything runs.
fn load_registry(
    plugins: &[PathBuf],
    config: Option<(&Path, &[String])>,
) -> anyhow::Result<Registry> {
    let mut registry = Registry::builtin().map_err(input)?;
    let mut paths = trawl_plugin_loader::from_plugin_path();
    paths.extend(plugins.iter().cloned());
    trawl_plugin_loader::load_into(&mut registry, &paths).map_err(input)?;
    if let Some((config, overrides)) = config {
        for r in trawl_core::config::plugin_refs_with(config, overrides).map_err(input)? {
            let loaded = trawl_plugin_loader::load(&r.path).and_then(|p| {
                trawl_plugin_loader::register(&mut registry, &p)?;
                Ok(())
            });
            loaded.map_err(|e| input(r.error(e.to_string())))?;
        }
    }
    Ok(registry)
}

async fn dispatch(command: Command, plugins: &[PathBuf]) -> anyhow::Result<ExitCode> {
    let registry = |config: Option<(&Path, &[String])>| load_registry(plugins, config);
    match command {
        Command::Run(args) => {
            let registry = registry(Some((&args.config, &args.set)))?;
            commands::run::command(&registry, &args).await
        }
        Command::Quickstart { out } => commands::quickstart::quickstart(registry(None)?, out).await,
        Command::Check {
            config,
            ping,
            set,
            tasks_out,
        } => {
            commands::check::check(
                &registry(Some((&config, &set)))?,
                &config,
                &set,
                ping,
                tasks_out.as_deref(),
            )
            .await
        }
        Command::Show(args) => commands::show::show(&args),
        Command::Report(args) => commands::report::report(&args),
        Command::View(args) => commands::view::view(&args).await,
        Command::Stats {
            run,
            by,
            format,
            json,
            skip_bad_lines,
        } => commands::stats::stats(&run, &by, format, json, skip_bad_lines),
        Command::Diff(args) => commands::diff::diff(args),
        Command::Export(args) => commands::export::export(&registry(None)?, args),
        Command::Swe(command) => swe::dispatch(command).await,
        Command::Import(args) => swe::import(args).await,
        Command::Plugins { config } => {
            print!(
                "{}",
                commands::plugins::plugins_listing(&registry(
                    config.as_deref().map(|c| (c, &[][..]))
                )?)
            );
            Ok(ExitCode::SUCCESS)
        }
    }
}

//! `trawl view`: the local web viewer of runs, served until Ctrl-C.

use std::process::ExitCode;

use crate::args::ViewArgs;
use crate::exit::input;
use crate::signals::wait_for_signal;

/// `trawl view`: serves until Ctrl-C.
pub async fn view(args: &ViewArgs) -> anyhow::Result<ExitCode> {
    let started = std::time::Instant::now();
    let viewer = trawl_view::Viewer::open(&args.runs).map_err(input)?;
    let damaged = viewer.damaged();
    if !damaged.is_empty() {
        eprintln!("warning: left out {} damaged line(s):", damaged.len());
        for d in damaged.iter().take(10) {
            eprintln!("  {d}");
        }
    }
    let listener = tokio::net::TcpListener::bind(("127.0.0.1", args.port))
        .await
        .map_err(|e| {
            input(format!(
                "cannot listen on 127.0.0.1:{}: {e}\n  hint: pass another --port (0 picks a free one)",
                args.port
            ))
        })?;
    let addr = listener.local_addr()?;
    eprintln!(
        "trawl view: http://{addr}/ ({} rollouts from {} run(s), indexed in {:.1} s); Ctrl-C stops",
        viewer.rollouts(),
        args.runs.len(),
        started.elapsed().as_secs_f64()
    );
    viewer
        .serve(listener, async {
            let mut term =
                tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()).ok();
            wait_for_signal(&mut term).await;
        })
        .await?;
    Ok(ExitCode::SUCCESS)
}

//! Ctrl-C and SIGTERM: the first stops a run gracefully, the second at once; `trawl view` stops.

use std::time::Duration;

use trawl_core::engine::StopSignal;

/// First Ctrl-C or SIGTERM: stop launching, give in-flight episodes `grace`. Second: stop now.
pub fn spawn_signal_handler(stop: StopSignal, grace: Duration) {
    tokio::spawn(async move {
        let mut term =
            tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()).ok();
        wait_for_signal(&mut term).await;
        eprintln!("\nstopping: no new episodes; in-flight ones get {grace:?} to finish (press Ctrl-C again to stop now)");
        stop.stop_after(grace);
        wait_for_signal(&mut term).await;
        eprintln!("stopping now: in-flight episodes are recorded as interrupted");
        stop.hard.cancel();
    });
}

pub async fn wait_for_signal(term: &mut Option<tokio::signal::unix::Signal>) {
    match term {
        Some(t) => {
            tokio::select! {
                _ = tokio::signal::ctrl_c() => {}
                _ = t.recv() => {}
            }
        }
        None => {
            let _ = tokio::signal::ctrl_c().await;
        }
    }
}

//! Calls to the Docker engine: the errors they fail with, the deadline each runs under, and
//! the turns that bound how many calls that make or remove things are in flight at once.

use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use trawl_core::sandbox::SandboxError;

/// Why a Docker engine or image cannot be used.
pub(crate) fn unavailable(message: impl Into<String>) -> SandboxError {
    SandboxError::Unavailable(message.into())
}

pub(crate) fn infra(what: &str, e: impl std::fmt::Display) -> SandboxError {
    SandboxError::Infra(format!("docker: {what}: {e}"))
}

/// Runs one Docker call under `limit`.
pub(crate) async fn within<T, E: std::fmt::Display>(
    limit: Duration,
    what: &str,
    call: impl std::future::Future<Output = Result<T, E>>,
) -> Result<T, SandboxError> {
    match tokio::time::timeout(limit, call).await {
        Ok(Ok(v)) => Ok(v),
        Ok(Err(e)) => Err(infra(what, e)),
        Err(_) => Err(infra(
            what,
            format!("no answer within {:.0} s", limit.as_secs_f64()),
        )),
    }
}

/// At most `engine_calls` calls in flight, and the most there have been.
pub(crate) struct Turns {
    permits: tokio::sync::Semaphore,
    in_flight: AtomicUsize,
    pub(crate) peak: AtomicUsize,
}

/// One call's turn; the next waiting call goes when it is dropped.
pub(crate) struct Turn<'a> {
    _permit: Option<tokio::sync::SemaphorePermit<'a>>,
    in_flight: &'a AtomicUsize,
}

impl Turns {
    pub(crate) fn new(calls: usize) -> Self {
        Turns {
            permits: tokio::sync::Semaphore::new(calls),
            in_flight: AtomicUsize::new(0),
            peak: AtomicUsize::new(0),
        }
    }

    pub(crate) async fn take(&self) -> Turn<'_> {
        // The semaphore is never closed, so this only waits.
        let permit = self.permits.acquire().await.ok();
        let now = self.in_flight.fetch_add(1, Ordering::Relaxed) + 1;
        self.peak.fetch_max(now, Ordering::Relaxed);
        Turn {
            _permit: permit,
            in_flight: &self.in_flight,
        }
    }
}

impl Drop for Turn<'_> {
    fn drop(&mut self) {
        self.in_flight.fetch_sub(1, Ordering::Relaxed);
    }
}

//! The connection to one Docker engine, [`DockerFactory`]: connecting (and reaping what
//! killed runs left), what the engine said about itself, and the deadline and the turn each
//! of its calls takes.

use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::Duration;

use bollard::Docker;
use serde::Serialize;
use trawl_core::sandbox::SandboxError;

use crate::config::DockerSandboxConfig;
use crate::engine::{unavailable, Turn, Turns};

/// Connects to an engine and makes containers. Cheap to clone.
#[derive(Clone)]
pub struct DockerFactory {
    pub(crate) docker: Docker,
    pub(crate) config: Arc<DockerSandboxConfig>,
    pub(crate) engine: Arc<EngineInfo>,
    /// Turns for the calls that make or remove things (`engine_calls` of them).
    pub(crate) turns: Arc<Turns>,
}

/// What the engine said about itself, for the run's manifest.
#[derive(Debug, Clone, Default, PartialEq, Serialize)]
pub struct EngineInfo {
    pub version: String,
    pub api_version: String,
    pub cgroup_version: String,
    pub reaped_at_start: usize,
}

impl DockerFactory {
    /// Connects, checks the engine answers, and removes containers that a killed trawl process
    /// left behind (its owner is gone, or it is older than `reap_after_secs`).
    pub async fn connect(config: DockerSandboxConfig) -> Result<Self, SandboxError> {
        let api = trawl_core::values::secs(config.api_timeout_secs);
        let docker = match &config.host {
            Some(h) => Docker::connect_with_host(h),
            None => Docker::connect_with_defaults(),
        }
        .map_err(|e| unavailable(format!("cannot reach a Docker engine: {e}")))?
        .with_timeout(api);
        let where_ = config
            .host
            .clone()
            .or_else(|| std::env::var("DOCKER_HOST").ok())
            .unwrap_or_else(|| "unix:///var/run/docker.sock".into());
        let version = match tokio::time::timeout(api, docker.version()).await {
            Ok(Ok(v)) => v,
            Ok(Err(e)) => {
                return Err(unavailable(format!(
                "no Docker engine answers at {where_} ({e}); start it (`systemctl start docker`) \
                     or use `sandbox = {{ type = \"local\" }}`"
            )))
            }
            Err(_) => {
                return Err(unavailable(format!(
                    "the Docker engine at {where_} did not answer within {:.0} s",
                    api.as_secs_f64()
                )))
            }
        };
        let cgroup_version = match tokio::time::timeout(api, docker.info()).await {
            Ok(Ok(info)) => info
                .cgroup_version
                .map(|v| format!("{v:?}").to_lowercase())
                .unwrap_or_default(),
            _ => String::new(),
        };
        let mut factory = DockerFactory {
            docker,
            turns: Arc::new(Turns::new(config.engine_calls)),
            config: Arc::new(config),
            engine: Arc::new(EngineInfo {
                version: version.version.unwrap_or_default(),
                api_version: version.api_version.unwrap_or_default(),
                cgroup_version,
                reaped_at_start: 0,
            }),
        };
        let reaped = factory.reap_stale().await?;
        if !reaped.removed.is_empty() {
            tracing::warn!(
                count = reaped.removed.len(),
                "removed containers that an earlier trawl process left behind"
            );
        }
        Arc::make_mut(&mut factory.engine).reaped_at_start = reaped.removed.len();
        Ok(factory)
    }

    pub fn config(&self) -> &DockerSandboxConfig {
        &self.config
    }

    pub fn engine(&self) -> &EngineInfo {
        &self.engine
    }

    pub fn client(&self) -> &Docker {
        &self.docker
    }

    pub(crate) fn api(&self) -> Duration {
        trawl_core::values::secs(self.config.api_timeout_secs)
    }

    /// Waits for a turn to send a call that makes or removes something; the call is sent, and
    /// its deadline starts, once this returns. Held until the answer comes.
    pub(crate) async fn turn(&self) -> Turn<'_> {
        self.turns.take().await
    }

    /// Sends `call` once a turn is free, with `limit` counting from then.
    pub(crate) async fn queued<F: std::future::Future>(
        &self,
        limit: Duration,
        call: F,
    ) -> Result<F::Output, tokio::time::error::Elapsed> {
        let _turn = self.turn().await;
        tokio::time::timeout(limit, call).await
    }

    /// The most calls that make or remove things this factory has had in flight at once.
    pub fn peak_engine_calls(&self) -> usize {
        self.turns.peak.load(Ordering::Relaxed)
    }
}

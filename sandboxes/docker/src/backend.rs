//! The `docker` sandbox kind as trawl's registry sees it, [`DockerBackend`]: built from its
//! config, connecting on first use, making sandboxes and views of snapshots, and removing the
//! run's containers and snapshots at shutdown.

use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::Duration;

use trawl_core::async_trait;
use trawl_core::sandbox::{Sandbox, SandboxError, Snapshot};

use crate::config::DockerSandboxConfig;
use crate::engine::unavailable;
use crate::factory::DockerFactory;
use crate::snapshots::{Snapshots, RUNNER_INSIDE};

/// The `docker` sandbox kind: a fresh container per sandbox, of the image the environment asks
/// for or else the config's `image`, on an engine connected at the first sandbox.
pub struct DockerBackend {
    config: DockerSandboxConfig,
    factory: tokio::sync::OnceCell<DockerFactory>,
    run_name: String,
    /// The snapshot images its sandboxes were frozen as, removed at shutdown.
    snapshots: Arc<Snapshots>,
}

impl trawl_core::registry::SandboxConfig for DockerSandboxConfig {
    fn build(
        self,
        cx: &trawl_core::BuildContext,
    ) -> Result<Arc<dyn trawl_core::sandbox::SandboxBackend>, trawl_core::ComponentError> {
        self.validate()
            .map_err(|(field, msg)| trawl_core::ComponentError::at(field, msg))?;
        Ok(Arc::new(DockerBackend {
            config: self,
            factory: tokio::sync::OnceCell::new(),
            run_name: cx.run_name.clone(),
            snapshots: Arc::default(),
        }))
    }
}

impl DockerBackend {
    /// The engine, connected (and this host's dead runs reaped) on first use.
    async fn engine(&self) -> Result<&DockerFactory, SandboxError> {
        self.factory
            .get_or_try_init(|| DockerFactory::connect(self.config.clone()))
            .await
    }
}

#[async_trait]
impl trawl_core::sandbox::SandboxBackend for DockerBackend {
    fn describe(&self) -> serde_json::Value {
        let c = &self.config;
        serde_json::json!({
            "sandbox": "docker",
            // As `trawl run` reports a sandbox's isolation.
            "mode": "container",
            "network_isolated": !c.network,
            "filesystem_isolated": true,
            "pid_namespace": true,
            "image": c.image,
            "engine": self.factory.get().map(|f| serde_json::json!(f.engine())),
            "memory_mb": c.memory_mb,
            "pids": c.pids,
            "cpus": c.cpus,
            "network": c.network,
        })
    }

    async fn create(
        &self,
        spec: &trawl_core::sandbox::SandboxSpec,
    ) -> Result<Box<dyn Sandbox>, SandboxError> {
        let image = spec
            .image
            .clone()
            .or_else(|| self.config.image.clone())
            .ok_or_else(|| {
                unavailable("the docker sandbox needs an image: give `image` in its table")
            })?;
        let factory = self.engine().await?;
        let workdir = spec.workdir.as_deref().unwrap_or(DEFAULT_WORKDIR);
        let mut sandbox = factory
            .create_serving(&image, workdir, &self.run_name, spec.serve)
            .await?;
        sandbox.snapshots = self.snapshots.clone();
        Ok(Box::new(sandbox))
    }

    fn runs_images(&self) -> bool {
        true
    }

    async fn missing_images(&self, images: &[String]) -> Result<Vec<String>, SandboxError> {
        let factory = self.engine().await?;
        let mut missing = Vec::new();
        for image in images {
            if !factory.has_image(image).await? {
                missing.push(image.clone());
            }
        }
        Ok(missing)
    }

    async fn view(
        &self,
        snapshot: &Snapshot,
        spec: &trawl_core::sandbox::SandboxSpec,
    ) -> Result<Box<dyn Sandbox>, SandboxError> {
        let (image, runner) = match snapshot.0.strip_suffix(RUNNER_INSIDE) {
            Some(image) => (image, true),
            None => (snapshot.0.as_str(), false),
        };
        if !self.snapshots.knows(image) {
            return Err(unavailable(format!(
                "snapshot `{}` was not made by this sandbox backend, or was dropped",
                snapshot.0
            )));
        }
        let factory = self.engine().await?;
        let workdir = spec.workdir.as_deref().unwrap_or(DEFAULT_WORKDIR);
        let mut sandbox = factory
            .create_serving(image, workdir, &self.run_name, spec.serve)
            .await?;
        sandbox.runner_inside.store(runner, Ordering::Relaxed);
        sandbox.snapshots = self.snapshots.clone();
        Ok(Box::new(sandbox))
    }

    async fn drop_snapshot(&self, snapshot: &Snapshot) {
        let image = snapshot.0.trim_end_matches(RUNNER_INSIDE).to_string();
        if let (true, Some(f)) = (self.snapshots.forget(&image), self.factory.get()) {
            f.remove_image(&image).await;
        }
    }

    async fn shutdown(&self) {
        if let Some(f) = self.factory.get() {
            // Commits cut short by the end of the run finish first, so that what they make
            // is removed with the rest.
            let _all = tokio::time::timeout(f.api() * 5, self.snapshots.freezing.write()).await;
            let images: Vec<String> = self
                .snapshots
                .names
                .lock()
                .unwrap_or_else(|p| p.into_inner())
                .drain()
                .collect();
            // Removes the run's containers, then its snapshots.
            let reaped = f.shutdown(&self.run_name, Duration::from_secs(60)).await;
            if !reaped.removed.is_empty() {
                tracing::info!(count = reaped.removed.len(), "removed leftover containers");
            }
            if !reaped.failed.is_empty() {
                tracing::warn!(ids = ?reaped.failed, "containers could not be removed");
            }
            // The containers are gone: nothing uses the snapshots any more.
            for image in images {
                f.remove_image(&image).await;
            }
        }
    }
}

/// Where commands run in a container when the environment names no folder.
const DEFAULT_WORKDIR: &str = "/sandbox";

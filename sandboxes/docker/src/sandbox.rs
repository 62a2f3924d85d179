//! One container as a sandbox, [`DockerSandbox`]: what it holds, its paths, the exec calls
//! it starts, and its removal in the background when it is dropped without `close`.

use std::sync::{Arc, Mutex};

use bollard::models::ExecConfig;
use trawl_core::sandbox::SandboxError;

use crate::engine::within;
use crate::factory::DockerFactory;
use crate::session;
use crate::snapshots::Snapshots;

#[derive(Default)]
pub(crate) struct State {
    pub(crate) closed: bool,
}

/// One container. Removed by `close`, or in the background when dropped without it.
pub struct DockerSandbox {
    pub(crate) factory: DockerFactory,
    pub(crate) id: String,
    pub(crate) workdir: String,
    pub(crate) state: Mutex<State>,
    /// Its address on its network, for a serving container.
    pub(crate) address: Option<String>,
    /// The runner's exec session, started by the first command.
    pub(crate) session: tokio::sync::Mutex<Option<session::Session>>,
    /// Whether this build's runner is already in the container (it was started from a
    /// snapshot of a container that had it), so that it need not be copied in.
    pub(crate) runner_inside: std::sync::atomic::AtomicBool,
    /// The backend's record of its snapshots, where a snapshot of this sandbox is noted.
    pub(crate) snapshots: Arc<Snapshots>,
}

impl std::fmt::Debug for DockerSandbox {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("DockerSandbox")
            .field("id", &self.id)
            .field("workdir", &self.workdir)
            .finish()
    }
}

impl DockerSandbox {
    pub fn id(&self) -> &str {
        &self.id
    }

    pub fn workdir(&self) -> &str {
        &self.workdir
    }

    pub(crate) fn is_closed(&self) -> bool {
        self.state.lock().unwrap_or_else(|p| p.into_inner()).closed
    }

    pub(crate) fn absolute(&self, path: &str) -> String {
        if path.starts_with('/') {
            path.to_string()
        } else {
            format!("{}/{}", self.workdir.trim_end_matches('/'), path)
        }
    }

    /// Creates an exec and starts it attached, each step under the API deadline.
    pub(crate) async fn start_exec(
        &self,
        config: ExecConfig,
    ) -> Result<(String, bollard::exec::StartExecResults), SandboxError> {
        let docker = self.factory.client();
        let _turn = self.factory.turn().await;
        let exec = within(
            self.factory.api(),
            "creating an exec",
            docker.create_exec(&self.id, config),
        )
        .await?;
        let started = within(
            self.factory.api(),
            "starting an exec",
            docker.start_exec(&exec.id, None),
        )
        .await?;
        Ok((exec.id, started))
    }
}

impl Drop for DockerSandbox {
    fn drop(&mut self) {
        if self.is_closed() {
            return;
        }
        // Dropped without `close` (a cancelled or panicking rollout): remove it in the
        // background. It stays tracked until removed, so `DockerFactory::shutdown` catches it if
        // the run ends first.
        if let Ok(handle) = tokio::runtime::Handle::try_current() {
            let factory = self.factory.clone();
            let id = self.id.clone();
            handle.spawn(async move {
                if let Err(e) = factory.remove(&id).await {
                    tracing::warn!(%id, error = %e, "could not remove a container");
                }
            });
        }
    }
}

//! Containers made: a labelled, limited container of an image, started for a run, on no
//! network, the internal serving network, or the bridge, as its config and its use ask.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};

use bollard::models::{ContainerCreateBody, HostConfig, ResourcesUlimits};
use bollard::query_parameters::CreateContainerOptionsBuilder;
use trawl_core::sandbox::SandboxError;

use crate::cleanup::track;
use crate::engine::{infra, within};
use crate::factory::DockerFactory;
use crate::images::missing_image;
use crate::owner::{
    now_secs, owner_id, LABEL_CREATED, LABEL_MANAGED, LABEL_OWNER, LABEL_RUN, LABEL_VERSION,
    TRAWL_VERSION,
};
use crate::sandbox::{DockerSandbox, State};

/// The network serving containers join when the config gives them no network: internal (no
/// route out of the host), yet reachable from this host at each container's address.
pub const SERVE_NETWORK: &str = "trawl-serve";

impl DockerFactory {
    /// Creates and starts a container of `image` (its working folder `workdir`) for run `run_id`.
    pub async fn create(
        &self,
        image: &str,
        workdir: &str,
        run_id: &str,
    ) -> Result<DockerSandbox, SandboxError> {
        self.create_serving(image, workdir, run_id, None).await
    }

    /// The id of the internal network serving containers join, made on first use. Looked up
    /// and made under a process-wide lock, and by id after, since Docker lets two networks
    /// share a name.
    async fn serve_network(&self) -> Result<String, SandboxError> {
        static SERVE_NET: tokio::sync::Mutex<Option<String>> = tokio::sync::Mutex::const_new(None);
        let mut held = SERVE_NET.lock().await;
        if let Some(id) = held.as_ref() {
            return Ok(id.clone());
        }
        let options = bollard::query_parameters::ListNetworksOptions {
            filters: Some(HashMap::from([(
                "name".to_string(),
                vec![SERVE_NETWORK.to_string()],
            )])),
        };
        let mut found = within(
            self.api(),
            "looking up the serving network",
            self.docker.list_networks(Some(options)),
        )
        .await?;
        // The name filter matches substrings; the oldest of exact matches wins.
        found.retain(|n| n.name.as_deref() == Some(SERVE_NETWORK));
        found.sort_by_key(|n| n.created.clone().map(|c| c.to_string()));
        let id = match found.into_iter().find_map(|n| n.id) {
            Some(id) => id,
            None => {
                let request = bollard::models::NetworkCreateRequest {
                    name: SERVE_NETWORK.to_string(),
                    internal: Some(true),
                    labels: Some(HashMap::from([(
                        LABEL_MANAGED.to_string(),
                        "true".to_string(),
                    )])),
                    ..Default::default()
                };
                within(
                    self.api(),
                    "creating the serving network",
                    self.docker.create_network(request),
                )
                .await?
                .id
            }
        };
        *held = Some(id.clone());
        Ok(id)
    }

    /// [`DockerFactory::create`]; with `serve`, the container runs its image's own command (a
    /// server) and its address is kept so that trawl can reach that port.
    pub async fn create_serving(
        &self,
        image: &str,
        workdir: &str,
        run_id: &str,
        serve: Option<u16>,
    ) -> Result<DockerSandbox, SandboxError> {
        let c = &self.config;
        // A serving container needs a network this host can reach it on; without the config's
        // opt-in it is an internal one, with no way out.
        let network = match (serve, c.network) {
            (_, true) => "bridge".to_string(),
            (Some(_), false) => self.serve_network().await?,
            (None, false) => "none".to_string(),
        };
        let labels = HashMap::from([
            (LABEL_MANAGED.to_string(), "true".to_string()),
            (LABEL_RUN.to_string(), run_id.to_string()),
            (LABEL_CREATED.to_string(), now_secs().to_string()),
            (LABEL_VERSION.to_string(), TRAWL_VERSION.to_string()),
            (LABEL_OWNER.to_string(), owner_id().to_string()),
        ]);
        let memory = (c.memory_mb << 20) as i64;
        let host_config = HostConfig {
            memory: Some(memory),
            memory_swap: Some(memory),
            pids_limit: Some(c.pids as i64),
            nano_cpus: Some((c.cpus * 1e9) as i64),
            network_mode: Some(network.clone()),
            // A real init as PID 1 reaps orphans, so killed process trees do not linger as
            // zombies holding the process limit.
            init: Some(true),
            security_opt: Some(vec!["no-new-privileges".into()]),
            ulimits: Some(vec![ResourcesUlimits {
                name: Some("core".into()),
                soft: Some(0),
                hard: Some(0),
            }]),
            tmpfs: c
                .tmp_mb
                .map(|mb| HashMap::from([("/tmp".to_string(), format!("size={mb}m,mode=1777"))])),
            ..Default::default()
        };
        let body = ContainerCreateBody {
            image: Some(image.to_string()),
            // Idle, for commands to run in; a serving container runs its image's command.
            entrypoint: serve.is_none().then(|| vec!["sleep".into()]),
            cmd: serve.is_none().then(|| vec!["infinity".into()]),
            working_dir: Some(workdir.to_string()),
            labels: Some(labels),
            network_disabled: Some(network == "none"),
            host_config: Some(host_config),
            ..Default::default()
        };
        let created = match self
            .queued(
                self.api(),
                self.docker
                    .create_container(Some(CreateContainerOptionsBuilder::default().build()), body),
            )
            .await
        {
            Ok(Ok(r)) => r,
            Ok(Err(bollard::errors::Error::DockerResponseServerError {
                status_code: 404, ..
            })) => return Err(missing_image(image)),
            Ok(Err(e)) => return Err(infra("creating a container", e)),
            Err(_) => return Err(infra("creating a container", "no answer in time")),
        };
        track(&created.id, run_id);
        let mut sandbox = DockerSandbox {
            factory: self.clone(),
            id: created.id,
            workdir: workdir.to_string(),
            state: Mutex::new(State::default()),
            address: None,
            session: Default::default(),
            runner_inside: Default::default(),
            snapshots: Arc::default(),
        };
        let turn = self.turn().await;
        within(
            self.api(),
            "starting a container",
            self.docker.start_container(&sandbox.id, None),
        )
        .await?;
        drop(turn);
        if serve.is_some() {
            let inspected = within(
                self.api(),
                "reading a container's address",
                self.docker.inspect_container(&sandbox.id, None),
            )
            .await?;
            // Its one network (keyed by name, where the container was given an id).
            sandbox.address = inspected
                .network_settings
                .and_then(|n| n.networks)
                .and_then(|n| n.into_values().find_map(|e| e.ip_address))
                .filter(|ip| !ip.is_empty());
            if sandbox.address.is_none() {
                return Err(infra(
                    "reading a container's address",
                    "the serving container has no address on its network",
                ));
            }
        }
        Ok(sandbox)
    }
}

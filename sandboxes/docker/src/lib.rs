//! The `docker` sandbox: each sandbox is one container on a Docker engine, driven through
//! bollard.
//!
//! - Containers carry labels (`trawl.managed`, `trawl.run_id`, `trawl.created`,
//!   `trawl.version`, `trawl.owner`) and run with limits (memory, processes, CPUs, file size)
//!   and no network unless a config opts in.
//! - Every Docker call has a deadline. Streams get one too: bollard's own timeout covers only the
//!   response headers, and an attach stream can stay open after its process has exited.
//! - Every command of a sandbox goes to one `trawl-sandbox-runner` started in the container
//!   (`sandboxes/runner`, through one exec session): it runs the command in a process group of
//!   its own, kills the group when its time is up or it floods its output or fills the working
//!   folder, kills what the command left behind, and reads the container's cgroup counters, so
//!   a limit the program caught is still seen. Nothing is left orphaned.
//! - Output is capped where the runner reads it.
//! - Teardown (force-remove, each step with a deadline) never blocks the run. A sandbox dropped
//!   without `close` is removed in the background; [`DockerFactory::shutdown`] removes whatever
//!   this process still owns (Ctrl-C, SIGTERM, a panicking rollout), and
//!   [`DockerFactory::connect`] reaps what a killed process left behind.

#![forbid(unsafe_code)]

use std::collections::{HashMap, HashSet};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, OnceLock};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use bollard::models::{ContainerCreateBody, ExecConfig, HostConfig, ResourcesUlimits};
use bollard::query_parameters::{
    CommitContainerOptionsBuilder, CreateContainerOptionsBuilder,
    DownloadFromContainerOptionsBuilder, ListContainersOptionsBuilder,
    RemoveContainerOptionsBuilder, UploadToContainerOptionsBuilder,
};
use bollard::Docker;
use futures_util::StreamExt;
use serde::{Deserialize, Serialize};
use trawl_core::async_trait;
use trawl_core::sandbox::{ExecLimits, ExecResult, Sandbox, SandboxError, Snapshot};
use trawl_sandbox_runner_host::Policy;

mod session;

/// The environment commands run with.
fn exec_env() -> Vec<String> {
    vec![
        "PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin".into(),
        "HOME=/root".into(),
        "LANG=C.UTF-8".into(),
        "PAGER=cat".into(),
        "GIT_PAGER=cat".into(),
    ]
}

/// The label every trawl container carries.
pub const LABEL_MANAGED: &str = "trawl.managed";
/// The run the container belongs to.
pub const LABEL_RUN: &str = "trawl.run_id";
/// Creation time, seconds since the Unix epoch.
pub const LABEL_CREATED: &str = "trawl.created";
pub const LABEL_VERSION: &str = "trawl.version";
/// `host:pid:start-time` of the process that owns it; a container whose owner is gone is
/// reaped by the next start.
pub const LABEL_OWNER: &str = "trawl.owner";
/// On a snapshot image: the process that made it.
pub const LABEL_SNAPSHOT: &str = "trawl.snapshot";
/// The repository snapshot images are made in.
pub const SNAPSHOT_REPO: &str = "trawl-snapshot";

const TRAWL_VERSION: &str = env!("CARGO_PKG_VERSION");
/// The network serving containers join when the config gives them no network: internal (no
/// route out of the host), yet reachable from this host at each container's address.
pub const SERVE_NETWORK: &str = "trawl-serve";
/// Largest file `read_file` brings back.
const MAX_READ_BYTES: usize = 256 << 20;

/// `sandbox = { type = "docker", ... }` in a config.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct DockerSandboxConfig {
    #[serde(rename = "type", default = "docker_kind")]
    pub kind: String,
    /// The image, when the task does not name its own (`image_name`).
    #[serde(default)]
    pub image: Option<String>,
    /// The engine: `unix:///var/run/docker.sock`, `tcp://host:2375`; `DOCKER_HOST` or the local
    /// socket when unset.
    #[serde(default)]
    pub host: Option<String>,
    /// Memory for the whole container, in MiB (no swap beyond it).
    #[serde(default = "default_memory")]
    pub memory_mb: u64,
    /// Processes and threads in the container.
    #[serde(default = "default_pids")]
    pub pids: u64,
    /// A private `/tmp` of this many MiB (a tmpfs, counted in the container's memory): filling
    /// it counts as the disk limit tripped. Unset, `/tmp` is the image's own folder.
    #[serde(default)]
    pub tmp_mb: Option<u64>,
    /// The most the working folder may hold, in MiB: a command that fills it past the cap is
    /// stopped, and one that comes within 1% of it has tripped the disk limit. Unset, it is
    /// not measured (a large repository would be walked on every command).
    #[serde(default)]
    pub workdir_mb: Option<u64>,
    #[serde(default = "default_cpus")]
    pub cpus: f64,
    /// Network access; off unless a config opts in.
    #[serde(default)]
    pub network: bool,
    /// Deadline on each Docker call that is not a command's output stream.
    #[serde(default = "default_api_timeout")]
    pub api_timeout_secs: f64,
    /// Calls that make or remove containers and images (create, start, commit, remove, exec
    /// setup) sent to the engine at once; the rest wait their turn, and each call's deadline
    /// counts from when it is sent. An engine handed hundreds at once answers none in time.
    #[serde(default = "default_engine_calls")]
    pub engine_calls: usize,
    /// Seconds between SIGTERM and SIGKILL when a command runs out of time.
    #[serde(default = "default_grace")]
    pub kill_grace_secs: f64,
    /// Containers of other hosts' trawl processes older than this are reaped at start.
    #[serde(default = "default_reap_after")]
    pub reap_after_secs: u64,
}

fn default_memory() -> u64 {
    2048
}
fn default_pids() -> u64 {
    512
}
fn default_cpus() -> f64 {
    1.0
}
fn default_api_timeout() -> f64 {
    60.0
}
fn default_engine_calls() -> usize {
    16
}
fn default_grace() -> f64 {
    2.0
}
fn default_reap_after() -> u64 {
    24 * 3600
}

impl Default for DockerSandboxConfig {
    fn default() -> Self {
        DockerSandboxConfig {
            kind: "docker".into(),
            image: None,
            host: None,
            memory_mb: default_memory(),
            pids: default_pids(),
            tmp_mb: None,
            workdir_mb: None,
            cpus: default_cpus(),
            network: false,
            api_timeout_secs: default_api_timeout(),
            engine_calls: default_engine_calls(),
            kill_grace_secs: default_grace(),
            reap_after_secs: default_reap_after(),
        }
    }
}

impl DockerSandboxConfig {
    /// Checks the values; names the first field that is wrong.
    pub fn validate(&self) -> Result<(), (&'static str, String)> {
        if self.memory_mb < 64 {
            return Err(("memory_mb", "give a container at least 64 MiB".into()));
        }
        if self.pids < 8 {
            return Err(("pids", "give a container at least 8 processes".into()));
        }
        if !(self.cpus.is_finite() && self.cpus > 0.0) {
            return Err(("cpus", "must be a positive number".into()));
        }
        trawl_core::config::check_secs(self.api_timeout_secs, false)
            .map_err(|m| ("api_timeout_secs", m))?;
        if !(1..=4096).contains(&self.engine_calls) {
            return Err((
                "engine_calls",
                "give between 1 and 4096 engine calls at once".into(),
            ));
        }
        trawl_core::config::check_secs(self.kill_grace_secs, true)
            .map_err(|m| ("kill_grace_secs", m))?;
        Ok(())
    }
}

/// Why a Docker engine or image cannot be used.
fn unavailable(message: impl Into<String>) -> SandboxError {
    SandboxError::Unavailable(message.into())
}

fn infra(what: &str, e: impl std::fmt::Display) -> SandboxError {
    SandboxError::Infra(format!("docker: {what}: {e}"))
}

/// Runs one Docker call under `limit`.
async fn within<T, E: std::fmt::Display>(
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

/// `host:pid:start-time` of this process, so that a later start can tell whether the owner of a
/// container is still alive even when pids are reused.
fn owner_id() -> &'static str {
    static OWNER: OnceLock<String> = OnceLock::new();
    OWNER.get_or_init(|| {
        format!(
            "{}:{}:{}",
            hostname(),
            std::process::id(),
            start_time(std::process::id()).unwrap_or_default()
        )
    })
}

fn hostname() -> String {
    std::fs::read_to_string("/proc/sys/kernel/hostname")
        .map(|s| s.trim().to_string())
        .unwrap_or_else(|_| "unknown".into())
}

/// Field 22 of `/proc/<pid>/stat`: when the process started, in clock ticks since boot.
fn start_time(pid: u32) -> Option<u64> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    // The command name (field 2) may hold spaces; fields after it follow the last ')'.
    let rest = &stat[stat.rfind(')')? + 2..];
    rest.split_whitespace().nth(19)?.parse().ok()
}

/// Whether the process that `owner` names is still running on this host.
fn owner_alive(owner: &str) -> Option<bool> {
    let mut parts = owner.rsplitn(3, ':');
    let start: u64 = parts.next()?.parse().ok()?;
    let pid: u32 = parts.next()?.parse().ok()?;
    let host = parts.next()?;
    if host != hostname() {
        return None;
    }
    Some(start_time(pid) == Some(start))
}

fn now_secs() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_secs())
        .unwrap_or(0)
}

/// The containers this process has created and not yet seen removed, with their run ids.
fn live() -> &'static Mutex<HashMap<String, String>> {
    static LIVE: OnceLock<Mutex<HashMap<String, String>>> = OnceLock::new();
    LIVE.get_or_init(Default::default)
}

fn track(id: &str, run_id: &str) {
    live()
        .lock()
        .unwrap_or_else(|p| p.into_inner())
        .insert(id.to_string(), run_id.to_string());
}

fn untrack(id: &str) {
    live().lock().unwrap_or_else(|p| p.into_inner()).remove(id);
}

/// Ids of the containers this process still owns for `run_id`.
pub fn live_containers(run_id: &str) -> Vec<String> {
    live()
        .lock()
        .unwrap_or_else(|p| p.into_inner())
        .iter()
        .filter(|(_, r)| r.as_str() == run_id)
        .map(|(id, _)| id.clone())
        .collect()
}

/// What the start-up sweep removed.
#[derive(Debug, Clone, Default, PartialEq, Serialize)]
pub struct Reaped {
    pub removed: Vec<String>,
    pub failed: Vec<String>,
}

/// Connects to an engine and makes containers. Cheap to clone.
#[derive(Clone)]
pub struct DockerFactory {
    docker: Docker,
    config: Arc<DockerSandboxConfig>,
    engine: Arc<EngineInfo>,
    /// Turns for the calls that make or remove things (`engine_calls` of them).
    turns: Arc<Turns>,
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
        let api = trawl_core::config::secs(config.api_timeout_secs);
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

    fn api(&self) -> Duration {
        trawl_core::config::secs(self.config.api_timeout_secs)
    }

    /// Waits for a turn to send a call that makes or removes something; the call is sent, and
    /// its deadline starts, once this returns. Held until the answer comes.
    async fn turn(&self) -> Turn<'_> {
        self.turns.take().await
    }

    /// Sends `call` once a turn is free, with `limit` counting from then.
    async fn queued<F: std::future::Future>(
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

    async fn managed_containers(
        &self,
    ) -> Result<Vec<(String, HashMap<String, String>)>, SandboxError> {
        let filters = HashMap::from([("label", vec![format!("{LABEL_MANAGED}=true")])]);
        let options = ListContainersOptionsBuilder::default()
            .all(true)
            .filters(&filters)
            .build();
        let list = within(
            self.api(),
            "listing containers",
            self.docker.list_containers(Some(options)),
        )
        .await?;
        Ok(list
            .into_iter()
            .filter_map(|c| Some((c.id?, c.labels.unwrap_or_default())))
            .collect())
    }

    /// Removes trawl containers whose owning process is gone (same host), or that are older than
    /// `reap_after_secs` (another host's).
    pub async fn reap_stale(&self) -> Result<Reaped, SandboxError> {
        let mine = owner_id();
        let now = now_secs();
        let mut reaped = Reaped::default();
        for (id, labels) in self.managed_containers().await? {
            let owner = labels.get(LABEL_OWNER).map(String::as_str).unwrap_or("");
            if owner == mine {
                continue;
            }
            let created: u64 = labels
                .get(LABEL_CREATED)
                .and_then(|c| c.parse().ok())
                .unwrap_or(0);
            let stale = match owner_alive(owner) {
                Some(alive) => !alive,
                None => now.saturating_sub(created) > self.config.reap_after_secs,
            };
            if stale {
                match self.remove(&id).await {
                    Ok(()) => reaped.removed.push(id),
                    Err(e) => {
                        tracing::warn!(%id, error = %e, "could not remove a stale container");
                        reaped.failed.push(id)
                    }
                }
            }
        }
        // Snapshot images of runs that are gone, now that their containers are.
        for (names, labels, created) in self.snapshot_images().await? {
            let owner = labels.get(LABEL_SNAPSHOT).map(String::as_str).unwrap_or("");
            let stale = owner != mine
                && match owner_alive(owner) {
                    Some(alive) => !alive,
                    None => now.saturating_sub(created) > self.config.reap_after_secs,
                };
            if stale {
                for name in names {
                    self.remove_image(&name).await;
                }
            }
        }
        Ok(reaped)
    }

    /// Every snapshot image on the engine: its names, labels and creation time.
    async fn snapshot_images(
        &self,
    ) -> Result<Vec<(Vec<String>, HashMap<String, String>, u64)>, SandboxError> {
        let filters = HashMap::from([("label", vec![LABEL_SNAPSHOT.to_string()])]);
        let options = bollard::query_parameters::ListImagesOptionsBuilder::default()
            .filters(&filters)
            .build();
        let images = within(
            self.api(),
            "listing snapshot images",
            self.docker.list_images(Some(options)),
        )
        .await?;
        Ok(images
            .into_iter()
            .map(|i| {
                let names = i
                    .repo_tags
                    .into_iter()
                    .filter(|t| t.starts_with(SNAPSHOT_REPO))
                    .collect();
                (names, i.labels, u64::try_from(i.created).unwrap_or(0))
            })
            .collect())
    }

    /// Removes every container this process still owns for run `run_id`, each within the API
    /// deadline, giving up when none has finished for `deadline`. Called when a run ends,
    /// however it ends.
    pub async fn shutdown(&self, run_id: &str, deadline: Duration) -> Reaped {
        let mut ids: HashSet<String> = live_containers(run_id).into_iter().collect();
        if let Ok(all) = self.managed_containers().await {
            let mine = owner_id();
            ids.extend(
                all.into_iter()
                    .filter(|(_, l)| {
                        l.get(LABEL_OWNER).map(String::as_str) == Some(mine)
                            && l.get(LABEL_RUN).map(String::as_str) == Some(run_id)
                    })
                    .map(|(id, _)| id),
            );
        }
        let mut removals: futures_util::stream::FuturesUnordered<_> = ids
            .into_iter()
            .map(|id| async move {
                let r = self.remove(&id).await;
                (id, r)
            })
            .collect();
        let mut reaped = Reaped::default();
        // They queue for the engine's turns; the deadline is on the wait for the next one to
        // finish, so hundreds are all removed while the engine keeps answering.
        loop {
            match tokio::time::timeout(deadline, removals.next()).await {
                Ok(Some((id, Ok(())))) => reaped.removed.push(id),
                Ok(Some((id, Err(_)))) => reaped.failed.push(id),
                Ok(None) => break,
                Err(_) => {
                    drop(removals);
                    reaped.failed = live_containers(run_id);
                    break;
                }
            }
        }
        // Then the run's snapshots, now that no container of it uses them: those it noted and
        // any whose commit ended after the episode that asked for it was cut short.
        if let Ok(images) = self.snapshot_images().await {
            let mine = owner_id();
            for (names, labels, _) in images {
                if labels.get(LABEL_SNAPSHOT).map(String::as_str) == Some(mine)
                    && labels.get(LABEL_RUN).map(String::as_str) == Some(run_id)
                {
                    for name in names {
                        self.remove_image(&name).await;
                    }
                }
            }
        }
        reaped
    }

    /// Force-removes one container (killing what runs in it), with its volumes. A removal the
    /// engine fails with a server error (a busy file system: fuse-overlayfs answers "unable to
    /// remove filesystem" while a killed process still holds it) is tried again, with growing
    /// pauses, for up to the API deadline after the first such answer.
    pub async fn remove(&self, id: &str) -> Result<(), SandboxError> {
        let mut retry_until = None;
        let mut pause = Duration::from_millis(200);
        loop {
            match self.remove_once(id).await {
                Err(Retry(message)) => {
                    let until = *retry_until.get_or_insert_with(|| Instant::now() + self.api());
                    if Instant::now() + pause > until {
                        return Err(infra("removing a container", message));
                    }
                    tracing::debug!(%id, error = %message, "removing a container again");
                    tokio::time::sleep(pause).await;
                    pause = (pause * 2).min(Duration::from_secs(5));
                }
                Ok(done) => return done,
            }
        }
    }

    /// One removal call; `Err` when the engine answered with an error worth trying again.
    async fn remove_once(&self, id: &str) -> Result<Result<(), SandboxError>, Retry> {
        let options = RemoveContainerOptionsBuilder::default()
            .force(true)
            .v(true)
            .build();
        let answer = self
            .queued(self.api(), self.docker.remove_container(id, Some(options)))
            .await;
        Ok(match answer {
            Ok(Ok(())) => {
                untrack(id);
                Ok(())
            }
            Ok(Err(bollard::errors::Error::DockerResponseServerError {
                status_code: 404, ..
            })) => {
                untrack(id);
                Ok(())
            }
            // Another removal (a dropped sandbox's, in the background) is under way: wait for it.
            Ok(Err(bollard::errors::Error::DockerResponseServerError {
                status_code: 409, ..
            })) => self.wait_gone(id).await,
            Ok(Err(bollard::errors::Error::DockerResponseServerError {
                status_code: 500,
                message,
            })) => return Err(Retry(message)),
            Ok(Err(e)) => Err(infra("removing a container", e)),
            Err(_) => Err(infra("removing a container", "no answer in time")),
        })
    }

    /// Waits, within the API deadline, until container `id` no longer exists.
    async fn wait_gone(&self, id: &str) -> Result<(), SandboxError> {
        let deadline = Instant::now() + self.api();
        while Instant::now() < deadline {
            match tokio::time::timeout(self.api(), self.docker.inspect_container(id, None)).await {
                Ok(Err(bollard::errors::Error::DockerResponseServerError {
                    status_code: 404,
                    ..
                })) => {
                    untrack(id);
                    return Ok(());
                }
                Ok(_) => tokio::time::sleep(Duration::from_millis(50)).await,
                Err(_) => break,
            }
        }
        Err(infra(
            "removing a container",
            "it was still there at the deadline",
        ))
    }

    /// Whether `image` is on the engine.
    pub async fn has_image(&self, image: &str) -> Result<bool, SandboxError> {
        match tokio::time::timeout(self.api(), self.docker.inspect_image(image)).await {
            Ok(Ok(_)) => Ok(true),
            Ok(Err(bollard::errors::Error::DockerResponseServerError {
                status_code: 404, ..
            })) => Ok(false),
            Ok(Err(e)) => Err(infra("inspecting an image", e)),
            Err(_) => Err(infra("inspecting an image", "no answer in time")),
        }
    }

    /// The value of label `label` on `image`: `None` when the image or the label is missing.
    pub async fn image_label(
        &self,
        image: &str,
        label: &str,
    ) -> Result<Option<String>, SandboxError> {
        match tokio::time::timeout(self.api(), self.docker.inspect_image(image)).await {
            Ok(Ok(i)) => Ok(i
                .config
                .and_then(|c| c.labels)
                .and_then(|mut l| l.remove(label))),
            Ok(Err(bollard::errors::Error::DockerResponseServerError {
                status_code: 404, ..
            })) => Ok(None),
            Ok(Err(e)) => Err(infra("inspecting an image", e)),
            Err(_) => Err(infra("inspecting an image", "no answer in time")),
        }
    }

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

    /// Saves a container's file system as image `repo:tag`.
    pub async fn commit(
        &self,
        sandbox: &DockerSandbox,
        repo: &str,
        tag: &str,
        workdir: &str,
    ) -> Result<(), SandboxError> {
        self.commit_labelled(&sandbox.id, repo, tag, workdir, HashMap::new())
            .await
    }

    /// [`DockerFactory::commit`], with `labels` on the image.
    pub async fn commit_with_labels(
        &self,
        sandbox: &DockerSandbox,
        repo: &str,
        tag: &str,
        workdir: &str,
        labels: HashMap<String, String>,
    ) -> Result<(), SandboxError> {
        self.commit_labelled(&sandbox.id, repo, tag, workdir, labels)
            .await
    }

    /// Freezes a sandbox's file system as a snapshot image, `trawl-snapshot:<random>`,
    /// labelled with its owner (so that what a killed run left can be found and removed).
    /// Returns the image's name.
    pub async fn freeze(&self, container: &str, workdir: &str) -> Result<String, SandboxError> {
        static COUNT: std::sync::atomic::AtomicU64 = std::sync::atomic::AtomicU64::new(0);
        let n = COUNT.fetch_add(1, Ordering::Relaxed);
        let nanos = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .map_or(0, |d| d.as_nanos());
        let tag = format!("{}-{nanos:x}-{n}", std::process::id());
        let labels = HashMap::from([
            (LABEL_SNAPSHOT.to_string(), owner_id().to_string()),
            (LABEL_CREATED.to_string(), now_secs().to_string()),
        ]);
        self.commit_labelled(container, SNAPSHOT_REPO, &tag, workdir, labels)
            .await?;
        Ok(format!("{SNAPSHOT_REPO}:{tag}"))
    }

    /// Removes an image this process made (a snapshot), if no container still uses it.
    pub async fn remove_image(&self, image: &str) {
        let r = self
            .queued(
                self.api(),
                self.docker.remove_image(
                    image,
                    None::<bollard::query_parameters::RemoveImageOptions>,
                    None,
                ),
            )
            .await;
        if let Ok(Err(e)) = r {
            tracing::debug!(%image, error = %e, "a snapshot image stays");
        }
    }

    async fn commit_labelled(
        &self,
        container: &str,
        repo: &str,
        tag: &str,
        workdir: &str,
        labels: HashMap<String, String>,
    ) -> Result<(), SandboxError> {
        let options = CommitContainerOptionsBuilder::default()
            .container(container)
            .repo(repo)
            .tag(tag)
            .pause(true)
            .build();
        let _turn = self.turn().await;
        within(
            self.api() * 5,
            "committing a container",
            self.docker.commit_container(
                options,
                bollard::models::ContainerConfig {
                    working_dir: Some(workdir.to_string()),
                    labels: (!labels.is_empty()).then_some(labels),
                    ..Default::default()
                },
            ),
        )
        .await
        .map(|_| ())
    }
}

/// At most `engine_calls` calls in flight, and the most there have been.
struct Turns {
    permits: tokio::sync::Semaphore,
    in_flight: AtomicUsize,
    peak: AtomicUsize,
}

/// One call's turn; the next waiting call goes when it is dropped.
struct Turn<'a> {
    _permit: Option<tokio::sync::SemaphorePermit<'a>>,
    in_flight: &'a AtomicUsize,
}

impl Turns {
    fn new(calls: usize) -> Self {
        Turns {
            permits: tokio::sync::Semaphore::new(calls),
            in_flight: AtomicUsize::new(0),
            peak: AtomicUsize::new(0),
        }
    }

    async fn take(&self) -> Turn<'_> {
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

/// A removal the engine refused with a server error, worth trying again.
struct Retry(String);

/// The error for an image the engine lacks: nothing can be pulled here, so say how to make it.
pub fn missing_image(image: &str) -> SandboxError {
    unavailable(format!(
        "image `{image}` is not on this Docker engine. trawl never pulls images: build the \
         bundled ones with `trawl swe build-images`, or load yours with `docker load -i FILE` \
         (or `docker import`) before the run"
    ))
}

#[derive(Default)]
struct State {
    closed: bool,
}

/// One container. Removed by `close`, or in the background when dropped without it.
pub struct DockerSandbox {
    factory: DockerFactory,
    id: String,
    workdir: String,
    state: Mutex<State>,
    /// Its address on its network, for a serving container.
    address: Option<String>,
    /// The runner's exec session, started by the first command.
    session: tokio::sync::Mutex<Option<session::Session>>,
    /// Whether this build's runner is already in the container (it was started from a
    /// snapshot of a container that had it), so that it need not be copied in.
    runner_inside: std::sync::atomic::AtomicBool,
    /// The backend's record of its snapshots, where a snapshot of this sandbox is noted.
    snapshots: Arc<Snapshots>,
}

/// The snapshot images a backend's sandboxes were frozen as, and the commits under way.
#[derive(Default)]
struct Snapshots {
    names: Mutex<HashSet<String>>,
    /// Held (shared) by each commit under way; shutdown takes it whole to wait for them.
    freezing: Arc<tokio::sync::RwLock<()>>,
}

impl Snapshots {
    fn note(&self, image: &str) {
        self.names
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .insert(image.to_string());
    }

    fn forget(&self, image: &str) -> bool {
        self.names
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .remove(image)
    }

    fn knows(&self, image: &str) -> bool {
        self.names
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .contains(image)
    }
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

    fn is_closed(&self) -> bool {
        self.state.lock().unwrap_or_else(|p| p.into_inner()).closed
    }

    fn absolute(&self, path: &str) -> String {
        if path.starts_with('/') {
            path.to_string()
        } else {
            format!("{}/{}", self.workdir.trim_end_matches('/'), path)
        }
    }

    /// Creates an exec and starts it attached, each step under the API deadline.
    async fn start_exec(
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

    /// Uploads a tar archive and unpacks it at `dest` (a folder that exists in the container).
    pub async fn upload_tar(&self, dest: &str, tar: Vec<u8>) -> Result<(), SandboxError> {
        let options = UploadToContainerOptionsBuilder::default()
            .path(dest)
            .build();
        let _turn = self.factory.turn().await;
        within(
            self.factory.api(),
            "copying files in",
            self.factory.client().upload_to_container(
                &self.id,
                Some(options),
                bollard::body_full(tar.into()),
            ),
        )
        .await
    }

    /// Downloads `path` (a file or folder) as a tar archive, at most `max` bytes.
    pub async fn download_tar(&self, path: &str, max: usize) -> Result<Vec<u8>, SandboxError> {
        let options = DownloadFromContainerOptionsBuilder::default()
            .path(path)
            .build();
        let mut stream = self
            .factory
            .client()
            .download_from_container(&self.id, Some(options));
        let mut bytes = Vec::new();
        let read = async {
            while let Some(chunk) = stream.next().await {
                match chunk {
                    Ok(c) => {
                        bytes.extend_from_slice(&c);
                        if bytes.len() > max {
                            return Err(SandboxError::Infra(format!(
                                "`{path}` is larger than {} MiB",
                                max >> 20
                            )));
                        }
                    }
                    Err(bollard::errors::Error::DockerResponseServerError {
                        status_code: 404,
                        ..
                    }) => {
                        return Err(SandboxError::Infra(format!("`{path}` does not exist")));
                    }
                    Err(e) => return Err(infra("copying files out", e)),
                }
            }
            Ok(())
        };
        match tokio::time::timeout(self.factory.api(), read).await {
            Ok(r) => r.map(|()| bytes),
            Err(_) => Err(infra("copying files out", "no answer in time")),
        }
    }
}

#[async_trait]
impl Sandbox for DockerSandbox {
    async fn exec(&self, command: &str, limits: &ExecLimits) -> Result<ExecResult, SandboxError> {
        if self.is_closed() {
            return Err(SandboxError::Infra("the sandbox is closed".into()));
        }
        let c = &self.factory.config;
        // The runner puts the command in its own process group, stops it (SIGTERM, then
        // SIGKILL after the grace) when it runs out of time, floods its output or fills the
        // working folder, and kills what it left running in the background once it ends, so
        // nothing outlives the call or holds its output open. The container bounds memory and
        // processes; the runner reads the container's own cgroup counters (v2 at the top of
        // /sys/fs/cgroup, v1 in a folder per controller) around each command, so an OOM kill
        // or a refused fork is seen even when the command caught it.
        let policy = Policy {
            grace: trawl_core::config::secs(c.kill_grace_secs),
            drain: Duration::from_secs(2),
            disk_cap: c.workdir_mb.map(|mb| mb.saturating_mul(1 << 20)),
            kill_all: false,
            processes: false,
            memory: false,
            watch_full: std::iter::once("/dev/shm")
                .chain(c.tmp_mb.map(|_| "/tmp"))
                .map(std::path::PathBuf::from)
                .collect(),
            shared_tmp: None,
            cgroups: [
                "/sys/fs/cgroup",
                "/sys/fs/cgroup/pids",
                "/sys/fs/cgroup/memory",
            ]
            .into_iter()
            .map(std::path::PathBuf::from)
            .collect(),
        };
        let request = trawl_sandbox_runner_host::request(command, limits, &policy);
        let started = Instant::now();
        let mut slot = self.session.lock().await;
        if slot.is_none() {
            *slot = Some(session::Session::start(self, exec_env(), self.factory.api()).await?);
        }
        // Dropped mid-call (a cancelled episode) or failed, the session is dropped: its exec's
        // stdin closes and the runner kills the command. The next command starts a new one.
        let mut call = InFlight {
            slot: &mut slot,
            done: false,
        };
        let Some(session) = call.slot.as_mut() else {
            return Err(SandboxError::Infra("the sandbox runner is gone".into()));
        };
        let reply = session.call(&request).await?;
        call.done = true;
        drop(call);
        drop(slot);
        trawl_sandbox_runner_host::result(reply, started)
    }

    async fn read_file(&self, path: &str) -> Result<Vec<u8>, SandboxError> {
        let full = self.absolute(path);
        let tar = self.download_tar(&full, MAX_READ_BYTES).await?;
        let mut archive = tar::Archive::new(tar.as_slice());
        let entries = archive
            .entries()
            .map_err(|e| infra("reading a copied file", e))?;
        for entry in entries {
            let mut entry = entry.map_err(|e| infra("reading a copied file", e))?;
            if entry.header().entry_type().is_file() {
                let mut data = Vec::new();
                std::io::Read::read_to_end(&mut entry, &mut data)
                    .map_err(|e| infra("reading a copied file", e))?;
                return Ok(data);
            }
        }
        Err(SandboxError::Infra(format!(
            "`{full}` is not a regular file"
        )))
    }

    async fn write_file(&self, path: &str, contents: &[u8]) -> Result<(), SandboxError> {
        let full = self.absolute(path);
        let rel = full.trim_start_matches('/');
        if rel.is_empty() || rel.split('/').any(|c| c == "..") {
            return Err(SandboxError::OutsidePath(path.into()));
        }
        // Unpacked at `/`, the archive creates any missing parent folders on the way.
        let tar = tar_one_file(rel, contents).map_err(|e| infra("packing a file", e))?;
        self.upload_tar("/", tar).await
    }

    fn working_dir(&self) -> String {
        self.workdir.clone()
    }

    fn endpoint(&self, port: u16) -> Option<String> {
        self.address.as_ref().map(|ip| format!("{ip}:{port}"))
    }

    async fn snapshot(&self) -> Result<Snapshot, SandboxError> {
        if self.is_closed() {
            return Err(SandboxError::Infra("the sandbox is closed".into()));
        }
        // The runner goes first (its exec ends, and it kills what it ran); its binary stays
        // in the file system, and in the snapshot.
        let had_runner = self.session.lock().await.take().is_some()
            || self.runner_inside.load(Ordering::Relaxed);
        // The commit runs to its end, and is noted, even if this episode is cut short
        // meanwhile; the backend's shutdown waits for it before it removes the snapshots.
        let guard = self.snapshots.freezing.clone().read_owned().await;
        let (factory, id, workdir) = (self.factory.clone(), self.id.clone(), self.workdir.clone());
        let snapshots = self.snapshots.clone();
        let freeze = tokio::spawn(async move {
            let _freezing = guard;
            let image = factory.freeze(&id, &workdir).await?;
            snapshots.note(&image);
            Ok::<_, SandboxError>(image)
        });
        let image = freeze
            .await
            .map_err(|e| infra("committing a container", e))
            .and_then(|r| r);
        let closed = self.close().await;
        let image = image?;
        closed?;
        Ok(Snapshot(format!(
            "{image}{}",
            if had_runner { RUNNER_INSIDE } else { "" }
        )))
    }

    async fn close(&self) -> Result<(), SandboxError> {
        {
            let mut s = self.state.lock().unwrap_or_else(|p| p.into_inner());
            if s.closed {
                return Ok(());
            }
            s.closed = true;
        }
        self.factory.remove(&self.id).await
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

/// Drops the session of a call that did not finish.
struct InFlight<'a> {
    slot: &'a mut Option<session::Session>,
    done: bool,
}

impl Drop for InFlight<'_> {
    fn drop(&mut self) {
        if !self.done {
            *self.slot = None;
        }
    }
}

/// A tar archive holding one file at `path` (relative), mode 0644.
pub fn tar_one_file(path: &str, contents: &[u8]) -> std::io::Result<Vec<u8>> {
    tar_file(path, contents, 0o644)
}

/// A tar archive holding one file at `path` (relative) with `mode`.
pub fn tar_file(path: &str, contents: &[u8], mode: u32) -> std::io::Result<Vec<u8>> {
    let mut builder = tar::Builder::new(Vec::new());
    let mut header = tar::Header::new_gnu();
    header.set_size(contents.len() as u64);
    header.set_mode(mode);
    header.set_mtime(now_secs());
    header.set_entry_type(tar::EntryType::Regular);
    builder.append_data(&mut header, path, contents)?;
    builder.into_inner()
}

/// A tar archive of the folder `dir` (its contents, `.git` included) under `prefix`.
pub fn tar_dir(dir: &std::path::Path, prefix: &str) -> std::io::Result<Vec<u8>> {
    let mut builder = tar::Builder::new(Vec::new());
    builder.follow_symlinks(false);
    builder.append_dir_all(prefix, dir)?;
    builder.into_inner()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn owner_ids_name_this_process() {
        let me = owner_id();
        assert_eq!(owner_alive(me), Some(true));
        let host = hostname();
        // A pid that is not running, or running with another start time, is not the owner.
        assert_eq!(owner_alive(&format!("{host}:999999999:5")), Some(false));
        let pid = std::process::id();
        assert_eq!(owner_alive(&format!("{host}:{pid}:1")), Some(false));
        assert_eq!(owner_alive("another-host:1:1"), None);
    }

    #[test]
    fn config_checks_name_the_field() {
        let mut c = DockerSandboxConfig::default();
        assert!(c.validate().is_ok());
        c.cpus = 0.0;
        assert_eq!(c.validate().map_err(|e| e.0), Err("cpus"));
        c.cpus = 1.0;
        c.engine_calls = 0;
        assert_eq!(c.validate().map_err(|e| e.0), Err("engine_calls"));
    }

    #[test]
    fn one_file_archives_unpack() {
        let tar = tar_one_file("testbed/a/b.txt", b"hello").expect("tar");
        let mut archive = tar::Archive::new(tar.as_slice());
        let mut entries = archive.entries().expect("entries");
        let mut e = entries.next().expect("one").expect("entry");
        assert_eq!(e.path().expect("path").to_str(), Some("testbed/a/b.txt"));
        let mut s = String::new();
        std::io::Read::read_to_string(&mut e, &mut s).expect("read");
        assert_eq!(s, "hello");
    }
}

fn docker_kind() -> String {
    "docker".into()
}

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
/// Ends a snapshot's name when this build's runner is inside it.
const RUNNER_INSIDE: &str = "#runner";

trawl_core::register!(
    sandbox,
    "docker",
    "a fresh container per sandbox on a Docker engine: memory, process and CPU limits, no network unless opted in",
    DockerSandboxConfig
);

//! `sandbox = { type = "docker", ... }`: the settings of the `docker` sandbox, their
//! defaults, and the checks on their values.

use serde::{Deserialize, Serialize};

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

fn docker_kind() -> String {
    "docker".into()
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
        trawl_core::values::check_secs(self.api_timeout_secs, false)
            .map_err(|m| ("api_timeout_secs", m))?;
        if !(1..=4096).contains(&self.engine_calls) {
            return Err((
                "engine_calls",
                "give between 1 and 4096 engine calls at once".into(),
            ));
        }
        trawl_core::values::check_secs(self.kill_grace_secs, true)
            .map_err(|m| ("kill_grace_secs", m))?;
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

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
}

//! `sandbox = { type = "local", ... }`: the isolation a config asks for, the settings and
//! their defaults, and [`Isolation`], what detection found in force (recorded in a run's
//! manifest).

use std::path::PathBuf;

use serde::{Deserialize, Serialize};

/// Which isolation a config asks for.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum IsolationMode {
    /// Namespaces when bubblewrap works here; otherwise refused with a hint, since the fallback
    /// cannot keep the network or the filesystem from the program.
    #[default]
    Auto,
    /// Namespaces or nothing: refuse to run without them.
    Namespaces,
    /// The process-group fallback, accepted explicitly: own group, rlimits, a user of its own
    /// per sandbox when trawl runs as root; shared network and filesystem.
    Process,
}

/// `sandbox = { ... }` in a config.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct LocalSandboxConfig {
    /// The backend; only `local` exists for now.
    #[serde(default = "local", rename = "type")]
    pub kind: String,
    #[serde(default)]
    pub isolation: IsolationMode,
    /// Where working folders are made; the system's temporary folder when unset. It must be
    /// reachable by the sandbox user.
    #[serde(default)]
    pub root: Option<PathBuf>,
    /// The bubblewrap binary; `bwrap` on PATH when unset.
    #[serde(default)]
    pub bwrap: Option<PathBuf>,
    /// Host folders made visible read-only inside namespaces (for example an interpreter
    /// installed outside /usr). The system folders are always visible.
    #[serde(default)]
    pub ro_binds: Vec<PathBuf>,
    /// Seconds between SIGTERM and SIGKILL when a command runs out of time.
    #[serde(default)]
    pub kill_grace_secs: Option<f64>,
    /// Seconds a command's output pipes may stay open once its process group is gone, where
    /// a writer can escape the group (2 when unset); then what they hold is taken. Output is
    /// whole either way.
    #[serde(default)]
    pub drain_secs: Option<f64>,
    /// The most the working folder may hold, in MiB. A command that fills it past this is
    /// killed (`limit_exceeded: disk`); it is checked several times a second while a command
    /// runs, so a fast writer may overshoot by what it writes in between.
    #[serde(default = "default_workdir_mb")]
    pub workdir_mb: u64,
    /// Size of the private `/tmp` inside namespaces, in MiB (a tmpfs; writes past it fail with
    /// "No space left on device").
    #[serde(default = "default_tmp_mb")]
    pub tmp_mb: u64,
}

fn default_tmp_mb() -> u64 {
    256
}

fn default_workdir_mb() -> u64 {
    1024
}

fn local() -> String {
    "local".into()
}

impl Default for LocalSandboxConfig {
    fn default() -> Self {
        LocalSandboxConfig {
            kind: local(),
            isolation: IsolationMode::Auto,
            root: None,
            bwrap: None,
            ro_binds: Vec::new(),
            kill_grace_secs: None,
            drain_secs: None,
            tmp_mb: default_tmp_mb(),
            workdir_mb: default_workdir_mb(),
        }
    }
}

/// How commands are isolated on this machine, as detected. Recorded in the run's manifest.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Isolation {
    /// `namespaces` or `process`.
    pub mode: String,
    pub requested: IsolationMode,
    /// Why namespaces are not in force, when they are not.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub fallback_reason: Option<String>,
    pub bwrap_version: Option<String>,
    /// The uid commands run as (the first of the range when each sandbox has its own).
    pub uid: u32,
    /// Each sandbox runs as a user of its own, so concurrent sandboxes cannot signal, trace or
    /// write into each other, and teardown kills everything that user left.
    #[serde(default)]
    pub uid_per_sandbox: bool,
    /// The size cap of the private `/tmp`, in MiB (namespaces only).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub tmp_mb: Option<u64>,
    /// The size cap of the working folder, in MiB.
    #[serde(default)]
    pub workdir_mb: u64,
    pub network_isolated: bool,
    /// System folders read-only, private /tmp, nothing else of the host writable.
    pub filesystem_isolated: bool,
    pub pid_namespace: bool,
    /// Whether the process-count limit is enforced per sandbox.
    pub process_limit: bool,
    /// The cgroup version whose pids and memory controllers bound each sandbox as a whole
    /// (trawl as root), `None` where rlimits alone bound each command.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub cgroups: Option<String>,
    /// The limits seen tripped even when the program catches the failure and exits 0:
    /// `processes` and `memory` with cgroups, `disk` (the working folder, the private `/tmp`
    /// and `/dev/shm`, or in the fallback its user's share of the shared ones) everywhere
    /// the sandbox has them.
    #[serde(default)]
    pub caught_limits_seen: Vec<String>,
    /// How a sandbox starts from a snapshot: `overlay` (a copy-on-write view mounted in its
    /// namespace, the same cost whatever the snapshot's size) or `copy` (its files copied).
    #[serde(default)]
    pub views: String,
    /// rlimits set on every command.
    pub rlimits: Vec<String>,
}

impl Isolation {
    pub fn namespaces(&self) -> bool {
        self.mode == "namespaces"
    }
}

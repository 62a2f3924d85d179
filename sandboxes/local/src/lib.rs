//! The `local` sandbox: model-written commands run in a fresh temporary folder, in their own
//! process group, under resource limits, and, when bubblewrap works on the machine, inside their
//! own namespaces (no network, read-only system, private `/tmp`, own pid namespace, killed with
//! their parent).
//!
//! Limits are set by util-linux's `prlimit` in the child before the command starts, so trawl
//! needs no `unsafe` code. When trawl runs as root, each sandbox runs as a user of its own (a uid
//! from a range no account uses, leased while the sandbox lives): root ignores the process-count
//! limit and may write anywhere, and one shared user would let concurrent sandboxes signal,
//! trace and write into each other. Without namespaces, closing a sandbox kills every process of
//! its user (a `setsid` daemon included) and removes what it left in the shared temporary
//! folders. The fallback without namespaces cannot isolate the network or the filesystem, so it
//! runs only when a config asks for it (`isolation = "process"`). Which isolation is in force is
//! detected once and reported by [`LocalSandboxFactory::isolation`], so a run can record it.
//!
//! Each episode's sandbox is started once, on its first command: bubblewrap (or, in the
//! fallback, nothing) around a small runner process (`trawl-sandbox-runner`, built from
//! `sandboxes/runner` and carried inside this library), and every command of the episode
//! is a framed request to that runner over its pipes. The runner starts the command in its own
//! process group under the command's limits, reads its output, stops it when a limit trips, and
//! kills what it left once it ends. A command costs a fork and two execs inside the sandbox, not
//! a new namespace; trawl itself never forks (as root it starts the sandbox through util-linux's
//! `setpriv`, which changes to the sandbox's user).
//!
//! A command that hits its wall-clock limit gets SIGTERM for its whole process group, then SIGKILL
//! after a grace period. A command that exits leaves nothing behind: its group is killed, and
//! where the runner can reach only the sandbox's processes (its own pid namespace, or a user of
//! its own) every other process too, so a background child holding stdout open cannot keep the
//! call waiting. A command that kills the runner ends its episode with a sandbox error.

#![forbid(unsafe_code)]

mod cgroup;
mod runner;
mod teardown;

use std::collections::HashMap;
use std::ffi::OsString;
use std::os::unix::fs::PermissionsExt;
use std::path::{Component, Path, PathBuf};
use std::process::Stdio;
use std::sync::{Arc, Mutex, OnceLock};
use std::time::{Duration, Instant};

use serde::{Deserialize, Serialize};
use trawl_core::async_trait;
use trawl_core::sandbox::{ExecLimits, ExecResult, Sandbox, SandboxError, Snapshot};
use trawl_sandbox_runner_host::{Policy, Request, SharedTmp};

/// How long, after a command's group is gone, its output pipes may stay open by default
/// (`drain_secs`) where a writer can outlive the group (the bare fallback without a user of its
/// own). Past it what is in the pipes is taken, without waiting: all the group wrote is there, so
/// nothing is lost to time. Elsewhere every writer is dead and the pipes are read to their end.
const DRAIN_SECS: f64 = 2.0;
/// Where, inside a view's namespace, its base and its own layer are mounted for a moment
/// (then covered).
const VIEW_BASE: &str = "/.trawl-base";
const VIEW_LAYER: &str = "/.trawl-layer";
/// The most a file read from a sandbox may hold.
const READ_CAP: u64 = 64 << 20;

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

/// Makes sandboxes of one configuration; detects the isolation once. Cheap to clone: every
/// sandbox shares what detection found.
#[derive(Debug, Clone)]
pub struct LocalSandboxFactory {
    inner: Arc<Detected>,
    /// The snapshots its sandboxes were frozen as.
    snapshots: Arc<Store>,
}

/// What detection found, with the config it was found for.
#[derive(Debug, Clone)]
struct Detected {
    config: LocalSandboxConfig,
    isolation: Isolation,
    prlimit: PathBuf,
    bwrap: Option<PathBuf>,
    /// When trawl is root: the one unprivileged user every namespace sandbox runs as (each
    /// has its own namespaces, and the kernel counts processes per user namespace). The
    /// fallback gives each sandbox a user of its own instead.
    run_as: Option<u32>,
    root: PathBuf,
    /// The runner binary, put on disk under `root`.
    runner: PathBuf,
    /// util-linux's `setpriv`, through which trawl (as root) starts a sandbox as its user
    /// without forking itself.
    setpriv: Option<PathBuf>,
    /// Where each sandbox gets cgroups of its own (trawl as root).
    cgroups: Option<cgroup::CgroupRoot>,
}

fn find_in_path(name: &str) -> Option<PathBuf> {
    let path = std::env::var_os("PATH").unwrap_or_else(|| "/usr/local/bin:/usr/bin:/bin".into());
    std::env::split_paths(&path)
        .chain([PathBuf::from("/usr/bin"), PathBuf::from("/bin")])
        .map(|d| d.join(name))
        .find(|p| p.is_file())
}

/// Detection results, per (mode, bwrap path, root): detection runs a real sandbox, once.
type DetectKey = (IsolationMode, Option<PathBuf>, Option<PathBuf>);
type DetectCache = Mutex<HashMap<DetectKey, Result<Detected, String>>>;
fn detected() -> &'static DetectCache {
    static CACHE: OnceLock<DetectCache> = OnceLock::new();
    CACHE.get_or_init(|| Mutex::new(HashMap::new()))
}

impl LocalSandboxFactory {
    /// Detects what isolation works here. Fails when the config requires namespaces and they do
    /// not work, or when `prlimit` is missing; the message says what to install.
    pub fn new(config: LocalSandboxConfig) -> Result<Self, SandboxError> {
        if config.kind != "local" {
            return Err(SandboxError::Unavailable(format!(
                "sandbox type `{}` does not exist here; the sandbox types are: local",
                config.kind
            )));
        }
        let key = (config.isolation, config.bwrap.clone(), config.root.clone());
        let mut cache = detected().lock().unwrap_or_else(|p| p.into_inner());
        let found = cache
            .entry(key)
            .or_insert_with(|| Detected::detect(&config))
            .clone();
        drop(cache);
        let mut detected = found.map_err(SandboxError::Unavailable)?;
        detected.config = config;
        Ok(LocalSandboxFactory {
            inner: Arc::new(detected),
            snapshots: Arc::default(),
        })
    }

    /// The isolation in force for sandboxes from this factory.
    pub fn isolation(&self) -> &Isolation {
        &self.inner.isolation
    }

    /// A fresh sandbox: its own empty working folder, removed when it is closed or dropped.
    pub fn create(&self) -> Result<LocalSandbox, SandboxError> {
        self.sandbox(None)
    }

    /// A fresh sandbox that starts as a copy-on-write view of `snapshot`, one of this
    /// factory's: an overlay in its namespace, or, where overlays cannot be mounted, a copy.
    pub async fn view(&self, snapshot: &Snapshot) -> Result<LocalSandbox, SandboxError> {
        let frozen = self.snapshots.get(snapshot)?;
        if self.inner.isolation.views == "overlay" {
            let s = self.sandbox(Some(frozen))?;
            let (layer, uid) = (s.workdir.clone(), s.uid());
            tokio::task::spawn_blocking(move || make_layer(&layer, uid))
                .await
                .map_err(|e| SandboxError::Infra(e.to_string()))?
                .map_err(|e| SandboxError::Infra(format!("cannot make a view's layer: {e}")))?;
            return Ok(s);
        }
        let s = self.sandbox(None)?;
        let (from, to, uid) = (frozen.path().to_path_buf(), s.workdir.clone(), s.uid());
        tokio::task::spawn_blocking(move || copy_tree(&from, &to, uid))
            .await
            .map_err(|e| SandboxError::Infra(e.to_string()))?
            .map_err(|e| SandboxError::Infra(format!("cannot copy a snapshot: {e}")))?;
        Ok(s)
    }

    fn sandbox(&self, view: Option<Arc<Frozen>>) -> Result<LocalSandbox, SandboxError> {
        // Namespace sandboxes share one user; the fallback needs one per sandbox.
        let own_user = self.inner.run_as.is_some() && self.inner.bwrap.is_none();
        let lease = match own_user {
            true => Some(UidLease::take().map_err(SandboxError::Infra)?),
            false => None,
        };
        let dir = self
            .inner
            .make_workdir_for(lease.as_ref().map(UidLease::uid).or(self.inner.run_as))
            .map_err(|e| SandboxError::Infra(format!("cannot create a working folder: {e}")))?;
        let cgroup = match &self.inner.cgroups {
            Some(root) => Some(Arc::new(root.make().map_err(SandboxError::Infra)?)),
            None => None,
        };
        Ok(LocalSandbox {
            cgroup,
            shared: self.inner.clone(),
            snapshots: self.snapshots.clone(),
            view,
            workdir: dir.path().to_path_buf(),
            dir: Mutex::new(Some(dir)),
            lease: Mutex::new(lease),
            runners: Default::default(),
            ran: Default::default(),
        })
    }
}

impl Detected {
    fn detect(config: &LocalSandboxConfig) -> Result<Self, String> {
        let prlimit = find_in_path("prlimit").ok_or(
            "`prlimit` (util-linux) is not installed; trawl sets sandbox limits with it\n  hint: apt-get install -y util-linux",
        )?;
        let run_as = nix::unistd::geteuid().is_root().then_some(SHARED_UID);
        if config.tmp_mb == 0 || config.workdir_mb == 0 {
            return Err("tmp_mb and workdir_mb must be at least 1".into());
        }
        if let Some(grace) = config.kill_grace_secs {
            trawl_core::config::check_secs(grace, true)
                .map_err(|m| format!("kill_grace_secs {m}"))?;
        }
        if let Some(drain) = config.drain_secs {
            trawl_core::config::check_secs(drain, true).map_err(|m| format!("drain_secs {m}"))?;
        }
        let root = config.root.clone().unwrap_or_else(std::env::temp_dir);
        std::fs::create_dir_all(&root)
            .map_err(|e| format!("cannot create the sandbox root {}: {e}", root.display()))?;
        let runner = runner::install(&root)?;
        let cgroups = match run_as {
            Some(_) => cgroup::CgroupRoot::detect()
                .inspect_err(|why| {
                    tracing::info!("sandboxes are bounded by rlimits alone, without cgroups: {why}")
                })
                .ok(),
            None => None,
        };
        let setpriv = match run_as {
            Some(_) => Some(find_in_path("setpriv").ok_or(
                "`setpriv` (util-linux) is not installed; trawl, running as root, starts each sandbox as a user of its own with it\n  hint: apt-get install -y util-linux",
            )?),
            None => None,
        };
        let mut factory = Detected {
            config: config.clone(),
            isolation: Isolation {
                mode: "process".into(),
                requested: config.isolation,
                fallback_reason: None,
                bwrap_version: None,
                uid: run_as.map_or_else(|| nix::unistd::geteuid().as_raw(), |_| UID_BASE),
                uid_per_sandbox: run_as.is_some(),
                views: "copy".into(),
                tmp_mb: None,
                workdir_mb: config.workdir_mb,
                network_isolated: false,
                filesystem_isolated: false,
                pid_namespace: false,
                process_limit: run_as.is_some(),
                cgroups: cgroups.as_ref().map(|c| c.version().to_string()),
                caught_limits_seen: Vec::new(),
                rlimits: Vec::new(),
            },
            prlimit,
            bwrap: None,
            run_as,
            root,
            runner,
            setpriv,
            cgroups,
        };
        if config.isolation == IsolationMode::Process {
            factory.isolation.fallback_reason =
                Some("isolation = \"process\" in the config".into());
        } else {
            match factory.probe_bwrap(config) {
                Ok((bwrap, version)) => {
                    factory.bwrap = Some(bwrap);
                    let iso = &mut factory.isolation;
                    iso.mode = "namespaces".into();
                    iso.bwrap_version = Some(version);
                    iso.network_isolated = true;
                    iso.filesystem_isolated = true;
                    iso.pid_namespace = true;
                    iso.process_limit = true;
                    iso.tmp_mb = Some(config.tmp_mb);
                    iso.uid = run_as.unwrap_or(iso.uid);
                    iso.uid_per_sandbox = false;
                    match factory.probe_view(config) {
                        Ok(()) => factory.isolation.views = "overlay".into(),
                        Err(why) => tracing::info!(
                            "sandboxes start from snapshots by copying them: an overlay cannot be mounted in a sandbox here ({why})"
                        ),
                    }
                }
                Err(why) if config.isolation == IsolationMode::Namespaces => {
                    return Err(format!(
                        "the sandbox requires namespaces (isolation = \"namespaces\") but bubblewrap does not work here: {why}\n  hint: apt-get install -y bubblewrap, or set isolation = \"auto\" to fall back to a process group with limits"
                    ));
                }
                Err(why) => {
                    return Err(format!(
                        "bubblewrap does not work here ({why}); without namespaces a sandbox cannot keep the network or the host's files from the program, which this config asks for by default\n  hint: apt-get install -y bubblewrap, or set sandbox = {{ isolation = \"process\" }} to accept the weaker mode (own process group, limits{}; shared network and filesystem)",
                        if run_as.is_some() { ", a user per sandbox" } else { "" }
                    ));
                }
            }
        }
        let cgroups = factory.cgroups.is_some();
        factory.isolation.rlimits = ["cpu", "fsize", "nofile", "core"]
            .into_iter()
            .chain((!cgroups).then_some("as"))
            .chain((factory.isolation.process_limit && !cgroups).then_some("nproc"))
            .map(str::to_string)
            .collect();
        // Disk: the working folder's cap everywhere; the private /tmp and /dev/shm in
        // namespaces; the user's share of the shared ones in the fallback with a user of its own.
        factory.isolation.caught_limits_seen = ["processes", "memory"]
            .into_iter()
            .filter(|_| cgroups)
            .chain(["disk"])
            .map(str::to_string)
            .collect();
        Ok(factory)
    }

    /// Runs `true` in a namespace sandbox to see whether bubblewrap works here.
    fn probe_bwrap(&self, config: &LocalSandboxConfig) -> Result<(PathBuf, String), String> {
        let bwrap = match &config.bwrap {
            Some(p) => p.clone(),
            None => find_in_path("bwrap").ok_or("bubblewrap (`bwrap`) is not installed")?,
        };
        let version = std::process::Command::new(&bwrap)
            .arg("--version")
            .output()
            .map_err(|e| format!("cannot run {}: {e}", bwrap.display()))?;
        let version = String::from_utf8_lossy(&version.stdout).trim().to_string();
        let dir = self.make_workdir().map_err(|e| e.to_string())?;
        let mut cmd = std::process::Command::new(&bwrap);
        cmd.args(bwrap_args(
            dir.path(),
            &config.ro_binds,
            &self.runner,
            false,
            config.tmp_mb,
            None,
        ));
        // The runner must start in there, seen where it is bound.
        cmd.arg("--").arg(&self.runner).arg("--version");
        cmd.env_clear().stdin(Stdio::null());
        if let Some(uid) = self.run_as {
            cmd.uid(uid).gid(uid);
        }
        use std::os::unix::process::CommandExt;
        let out = cmd
            .output()
            .map_err(|e| format!("cannot run {}: {e}", bwrap.display()))?;
        if !out.status.success() {
            return Err(format!(
                "a test sandbox failed: {}",
                String::from_utf8_lossy(&out.stderr).trim()
            ));
        }
        Ok((bwrap, version))
    }

    /// Mounts a view of a small folder in a namespace sandbox, to see whether overlays can
    /// be mounted there (a kernel from 5.11 on lets a user namespace mount one).
    fn probe_view(&self, config: &LocalSandboxConfig) -> Result<(), String> {
        let bwrap = self.bwrap.as_ref().ok_or("no namespaces")?;
        let io = |e: std::io::Error| e.to_string();
        let base = self.make_workdir().map_err(io)?;
        std::fs::write(base.path().join("probe"), b"base\n").map_err(io)?;
        let layer = self.make_workdir().map_err(io)?;
        make_layer(layer.path(), self.run_as).map_err(io)?;
        let mut cmd = std::process::Command::new(bwrap);
        cmd.args(bwrap_args(
            layer.path(),
            &config.ro_binds,
            &self.runner,
            false,
            config.tmp_mb,
            Some(base.path()),
        ));
        cmd.arg("--")
            .args(runner_args(&self.runner, layer.path(), &self.prlimit, true));
        cmd.env_clear().stdin(Stdio::null());
        if let Some(uid) = self.run_as {
            cmd.uid(uid).gid(uid);
        }
        use std::os::unix::process::CommandExt;
        let out = cmd.output().map_err(io)?;
        let _ = remove_tree(layer);
        if !out.status.success() {
            return Err(String::from_utf8_lossy(&out.stderr).trim().to_string());
        }
        Ok(())
    }

    fn make_workdir(&self) -> std::io::Result<tempfile::TempDir> {
        self.make_workdir_for(self.run_as)
    }

    /// A fresh working folder only `uid` (when set) may enter.
    fn make_workdir_for(&self, uid: Option<u32>) -> std::io::Result<tempfile::TempDir> {
        let dir = tempfile::Builder::new()
            .prefix("trawl-sbx-")
            .tempdir_in(&self.root)?;
        std::fs::set_permissions(dir.path(), std::fs::Permissions::from_mode(0o700))?;
        if let Some(uid) = uid {
            std::os::unix::fs::chown(dir.path(), Some(uid), Some(uid))?;
        }
        Ok(dir)
    }
}

/// The bubblewrap arguments: all namespaces, the system read-only, a private /tmp, the working
/// folder writable at its own path, the runner read-only at its own.
fn bwrap_args(
    workdir: &Path,
    ro_binds: &[PathBuf],
    runner: &Path,
    network: bool,
    tmp_mb: u64,
    view: Option<&Path>,
) -> Vec<OsString> {
    let mut a: Vec<OsString> = vec![
        "--unshare-all".into(),
        "--die-with-parent".into(),
        "--new-session".into(),
        // The runner is the namespace's init: nothing inside can kill it.
        "--as-pid-1".into(),
    ];
    if network {
        a.push("--share-net".into());
    }
    a.extend(system_mounts().iter().cloned());
    let mut push = |items: &[&std::ffi::OsStr]| a.extend(items.iter().map(|s| s.to_os_string()));
    for extra in ro_binds {
        push(&["--ro-bind".as_ref(), extra.as_os_str(), extra.as_os_str()]);
    }
    let tmp_size = OsString::from((tmp_mb.min(1 << 30) << 20).to_string());
    push(&[
        "--proc".as_ref(),
        "/proc".as_ref(),
        "--dev".as_ref(),
        "/dev".as_ref(),
        "--size".as_ref(),
        tmp_size.as_os_str(),
        "--tmpfs".as_ref(),
        "/tmp".as_ref(),
        // /dev/shm gets the same cap as /tmp, rather than a folder on /dev's uncapped tmpfs.
        "--size".as_ref(),
        tmp_size.as_os_str(),
        "--tmpfs".as_ref(),
        "/dev/shm".as_ref(),
    ]);
    match view {
        // The runner mounts the view at the working folder's path, then drops the
        // capabilities it needed for that before any command runs.
        Some(base) => push(&[
            "--cap-add".as_ref(),
            "ALL".as_ref(),
            "--ro-bind".as_ref(),
            base.as_os_str(),
            VIEW_BASE.as_ref(),
            "--bind".as_ref(),
            workdir.as_os_str(),
            VIEW_LAYER.as_ref(),
            "--dir".as_ref(),
            workdir.as_os_str(),
        ]),
        None => push(&["--bind".as_ref(), workdir.as_os_str(), workdir.as_os_str()]),
    }
    push(&[
        "--ro-bind".as_ref(),
        runner.as_os_str(),
        runner.as_os_str(),
        "--chdir".as_ref(),
        workdir.as_os_str(),
        "--clearenv".as_ref(),
    ]);
    for (k, v) in scrubbed_env(workdir) {
        push(&["--setenv".as_ref(), k.as_ref(), v.as_ref()]);
    }
    a
}

/// The runner's own arguments: where commands run, how limits are set, and, for a view, where
/// its base and layer are mounted.
fn runner_args(runner: &Path, workdir: &Path, prlimit: &Path, view: bool) -> Vec<OsString> {
    let mut a: Vec<OsString> = vec![
        runner.into(),
        "--workdir".into(),
        workdir.into(),
        "--prlimit".into(),
        prlimit.into(),
    ];
    if view {
        a.extend(["--view".into(), VIEW_BASE.into(), VIEW_LAYER.into()]);
    }
    a
}

/// The host's system folders, read-only (symlinks such as merged-/usr `/bin` kept as symlinks).
/// The layout does not change while trawl runs, so it is read once, not on every command.
fn system_mounts() -> &'static [OsString] {
    static MOUNTS: OnceLock<Vec<OsString>> = OnceLock::new();
    MOUNTS.get_or_init(|| {
        let mut a: Vec<OsString> = vec!["--ro-bind".into(), "/usr".into(), "/usr".into()];
        for top in [
            "/bin", "/sbin", "/lib", "/lib32", "/lib64", "/libx32", "/etc",
        ] {
            let p = Path::new(top);
            match std::fs::symlink_metadata(p) {
                Ok(m) if m.file_type().is_symlink() => {
                    if let Ok(target) = std::fs::read_link(p) {
                        a.extend(["--symlink".into(), target.into_os_string(), top.into()]);
                    }
                }
                Ok(m) if m.is_dir() => a.extend(["--ro-bind".into(), top.into(), top.into()]),
                _ => {}
            }
        }
        a
    })
}

/// The whole environment a command sees: nothing of trawl's (no API keys, no tokens).
fn scrubbed_env(workdir: &Path) -> Vec<(&'static str, OsString)> {
    vec![
        ("PATH", "/usr/local/bin:/usr/bin:/bin".into()),
        ("HOME", workdir.as_os_str().to_os_string()),
        ("TMPDIR", "/tmp".into()),
        ("LANG", "C.UTF-8".into()),
        ("PYTHONDONTWRITEBYTECODE", "1".into()),
        ("PYTHONUNBUFFERED", "1".into()),
    ]
}

/// One episode's sandbox.
pub struct LocalSandbox {
    shared: Arc<Detected>,
    /// Where its snapshot goes, should it be frozen.
    snapshots: Arc<Store>,
    /// The snapshot it is an overlay view of (its working folder then holds the view's own
    /// layer); kept alive while the sandbox lives.
    view: Option<Arc<Frozen>>,
    /// Taken (and removed) by `close`; dropping it removes the folder too.
    dir: Mutex<Option<tempfile::TempDir>>,
    /// The folder's path, kept apart so that reading it needs no lock.
    workdir: PathBuf,
    /// The user this sandbox runs as, when it has its own; given back at teardown.
    lease: Mutex<Option<UidLease>>,
    /// The runners, started on first use: without and with the network.
    runners: tokio::sync::Mutex<[Option<runner::Runner>; 2]>,
    /// Whether a runner was ever started (something may have run as the sandbox's user).
    ran: std::sync::atomic::AtomicBool,
    /// Its pids and memory cgroups, where trawl may make them: its runners join them as they
    /// start, so everything of the sandbox is counted there.
    cgroup: Option<Arc<cgroup::SandboxCgroup>>,
}

impl LocalSandbox {
    /// The working folder; commands start in it, at the same path inside namespaces.
    pub fn workdir(&self) -> &Path {
        &self.workdir
    }

    pub fn isolation(&self) -> &Isolation {
        &self.shared.isolation
    }

    /// The uid this sandbox's commands run as (its own user when trawl is root, else trawl's),
    /// for files a caller puts in its working folder.
    pub fn user(&self) -> u32 {
        self.uid()
            .unwrap_or_else(|| nix::unistd::geteuid().as_raw())
    }

    /// `path` inside the working folder, refusing anything that leaves it.
    fn resolve(&self, path: &str) -> Result<PathBuf, SandboxError> {
        let p = Path::new(path);
        let rel = match p.strip_prefix(&self.workdir) {
            Ok(rel) => rel,
            Err(_) if p.is_absolute() => return Err(SandboxError::OutsidePath(path.into())),
            Err(_) => p,
        };
        if rel
            .components()
            .any(|c| !matches!(c, Component::Normal(_) | Component::CurDir))
        {
            return Err(SandboxError::OutsidePath(path.into()));
        }
        Ok(self.workdir.join(rel))
    }

    /// The sandbox's own user, in the fallback as root.
    fn own_user(&self) -> Option<u32> {
        self.lease
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .as_ref()
            .map(UidLease::uid)
    }

    /// Removes the sandbox's cgroups, once its processes are gone.
    async fn release_cgroup(&self) {
        if let Some(cg) = self.cgroup.clone() {
            let _ = tokio::task::spawn_blocking(move || cg.remove()).await;
        }
    }

    /// The uid commands run as: the sandbox's own, else the shared one (or none, as trawl).
    fn uid(&self) -> Option<u32> {
        self.lease
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .as_ref()
            .map(UidLease::uid)
            .or(self.shared.run_as)
    }

    /// Kills every process of the sandbox's own user and removes what it left in the shared
    /// temporary folders, then gives the user back. Without namespaces a `setsid` daemon
    /// escapes the process group; with them nothing outlives the pid namespace, and `/tmp` is
    /// private, so there is nothing to do.
    /// `swept`: the sandbox's runner has already done that as the user (see
    /// [`LocalSandbox::sweep_through_runner`]); what is left is to see every process of the
    /// user gone (killing any that is not) before the user is given back.
    fn teardown(&self, swept: bool) {
        if let Some(work) = self.teardown_work(swept) {
            work();
        }
    }

    /// [`LocalSandbox::teardown`] on a blocking thread: waiting for the processes of a loaded
    /// machine to finish dying must not hold up the runtime.
    async fn teardown_off_runtime(&self, swept: bool) {
        if let Some(work) = self.teardown_work(swept) {
            let _ = tokio::task::spawn_blocking(work).await;
        }
    }

    /// What teardown has to do, taken out of the sandbox (the user's lease with it). After the
    /// runner's sweep the user's processes have been sent SIGKILL, but a process leaves the
    /// process table only when the kernel has finished its exit; the user is given back only
    /// once none is left, so the next sandbox with that uid starts clean.
    fn teardown_work(&self, swept: bool) -> Option<impl FnOnce() + Send + 'static> {
        let lease = self
            .lease
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .take()?;
        let fallback = self.shared.bwrap.is_none();
        let workdir = self.workdir.clone();
        Some(move || {
            if fallback {
                teardown::kill_user(lease.uid());
                if !swept {
                    teardown::remove_files_of(lease.uid(), &workdir);
                }
            }
            drop(lease);
        })
    }

    /// In the fallback with a user of its own, the sandbox's last command, run by its runner
    /// as that user: `kill -9 -1` (which reaches exactly that user's processes, a `setsid`
    /// daemon included; repeated, for a fork bomb racing it), then what the user owns at the
    /// top of the shared temporary folders removed, in one command of the sandbox's own
    /// rather than trawl searching the shared folders. True when it is done (or nothing ever
    /// ran); false leaves it to [`LocalSandbox::teardown`].
    async fn sweep_through_runner(&self) -> bool {
        let uid = self
            .lease
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .as_ref()
            .map(UidLease::uid);
        let Some(uid) = uid.filter(|_| !self.namespaces()) else {
            return false;
        };
        if !self.ran.load(std::sync::atomic::Ordering::Relaxed) {
            return true;
        }
        let script = format!(
            // Never anyone else's `kill -1`: the script checks whose it is first.
            "[ \"$(id -u)\" = {uid} ] || exit 9\nfor i in 1 2 3 4 5 6 7 8 9 10 11 12 13 14 15 16; do kill -9 -1 2>/dev/null; done\nexec find /tmp /var/tmp /dev/shm -mindepth 1 -maxdepth 1 -user {uid} ! -path {} -exec rm -rf -- {{}} + 2>/dev/null\n",
            sh_word(self.workdir.as_os_str())
        );
        let limits = ExecLimits {
            wall_time_secs: 30.0,
            ..ExecLimits::default()
        };
        let request = self.request(&script, &limits);
        let mut runners = self.runners.lock().await;
        for runner in runners.iter_mut().flatten() {
            if let Ok(reply) = runner.call(&request).await {
                return reply.ending == trawl_sandbox_runner_host::Ending::Exited(0);
            }
        }
        false
    }

    /// How the runner is started. In namespaces: inside bubblewrap, as the sandbox's user
    /// (through `setpriv` when trawl is root, so that trawl never forks). In the fallback as
    /// root: as root, running each command as the sandbox's user, so that no command can stop
    /// it.
    fn runner_command(&self, network: bool) -> tokio::process::Command {
        let f = &self.shared;
        let mut argv: Vec<OsString> = Vec::new();
        let uid = self.uid();
        if let (Some(setpriv), Some(uid), true) = (&f.setpriv, uid, self.namespaces()) {
            argv.push(setpriv.into());
            argv.extend([
                format!("--reuid={uid}").into(),
                format!("--regid={uid}").into(),
                "--clear-groups".into(),
                "--".into(),
            ]);
        }
        let base = self.view.as_ref().map(|v| v.path());
        if let Some(bwrap) = &f.bwrap {
            argv.push(bwrap.into());
            argv.extend(bwrap_args(
                &self.workdir,
                &f.config.ro_binds,
                &f.runner,
                network,
                f.config.tmp_mb,
                base,
            ));
            argv.push("--".into());
        }
        argv.extend(runner_args(
            &f.runner,
            &self.workdir,
            &f.prlimit,
            base.is_some(),
        ));
        if let (Some(uid), false) = (uid, self.namespaces()) {
            argv.extend(["--uid".into(), uid.to_string().into()]);
        }
        if let Some(cg) = &self.cgroup {
            argv = cgroup::joining(&cg.procs_files(), argv);
        }
        let mut cmd = tokio::process::Command::new(&argv[0]);
        cmd.args(&argv[1..]).env_clear();
        if f.bwrap.is_none() {
            cmd.envs(scrubbed_env(&self.workdir));
        }
        cmd.current_dir(&self.workdir)
            .process_group(0)
            // In namespaces the runner's death takes all it ran with it; in the fallback,
            // closing its pipe lets it kill its command first.
            .kill_on_drop(self.namespaces());
        cmd
    }

    /// Whether commands run in a pid namespace of the sandbox's own. There the runner kills
    /// every process it can signal after each command, and killing bubblewrap takes them all
    /// down. In the fallback a `setsid` daemon may live on until the sandbox closes (teardown
    /// kills its user's processes).
    fn namespaces(&self) -> bool {
        self.shared.bwrap.is_some()
    }

    /// The request for one command.
    fn request(&self, command: &str, limits: &ExecLimits) -> Request {
        let c = &self.shared.config;
        let cgroups = self.cgroup.is_some();
        let tmp_cap = c.tmp_mb.saturating_mul(1 << 20);
        let policy = Policy {
            grace: trawl_core::config::secs(c.kill_grace_secs.unwrap_or(1.0)),
            drain: trawl_core::config::secs(c.drain_secs.unwrap_or(DRAIN_SECS)),
            disk_cap: Some(c.workdir_mb.saturating_mul(1 << 20)),
            kill_all: self.namespaces(),
            processes: self.shared.isolation.process_limit && !cgroups,
            memory: !cgroups,
            watch_full: match self.namespaces() {
                true => vec!["/tmp".into(), "/dev/shm".into()],
                false => Vec::new(),
            },
            shared_tmp: self
                .own_user()
                .filter(|_| !self.namespaces())
                .map(|uid| SharedTmp { uid, cap: tmp_cap }),
            // Read here, around the call (the runner in namespaces cannot see them).
            cgroups: Vec::new(),
        };
        trawl_sandbox_runner_host::request(command, limits, &policy)
    }

    /// Stops the runners: each kills what it runs and exits; where its death takes the
    /// sandbox's processes with it, it is killed too. Waits (briefly) until they are gone, so
    /// that nothing writes in the working folder while it is removed.
    async fn stop_runners(&self) {
        let mut runners = self.runners.lock().await;
        for slot in runners.iter_mut() {
            if let Some(mut r) = slot.take() {
                r.hang_up();
                if self.namespaces() {
                    r.kill();
                }
                r.wait(Duration::from_secs(5)).await;
            }
        }
    }
}

/// Drops a runner whose call did not finish (its episode was cancelled mid-command, or it
/// failed): it is hung up on, so that it kills the command, and killed where that takes the
/// command with it. The next command starts a fresh one.
struct InFlight<'a> {
    slot: &'a mut Option<runner::Runner>,
    kill: bool,
    done: bool,
}

impl Drop for InFlight<'_> {
    fn drop(&mut self) {
        if self.done {
            return;
        }
        if let Some(mut r) = self.slot.take() {
            r.hang_up();
            if self.kill {
                r.kill();
            }
        }
    }
}

impl LocalSandbox {
    /// Sends one request to the runner (started on first use) and waits for its reply.
    async fn call(
        &self,
        request: &Request,
        network: bool,
    ) -> Result<trawl_sandbox_runner_host::Reply, SandboxError> {
        if self.dir.lock().unwrap_or_else(|p| p.into_inner()).is_none() {
            return Err(SandboxError::Infra("the sandbox is closed".into()));
        }
        let mut runners = self.runners.lock().await;
        if self.view.is_some() {
            // A view's layer takes one overlay at a time: the other runner's goes first.
            if let Some(mut other) = runners[usize::from(!network)].take() {
                other.hang_up();
                other.kill();
                other.wait(Duration::from_secs(5)).await;
            }
        }
        let slot = &mut runners[usize::from(network)];
        if slot.is_none() {
            self.ran.store(true, std::sync::atomic::Ordering::Relaxed);
            *slot = Some(runner::Runner::start(self.runner_command(network)).await?);
        }
        let mut call = InFlight {
            slot,
            kill: self.namespaces(),
            done: false,
        };
        let Some(runner) = call.slot.as_mut() else {
            return Err(SandboxError::Infra("the sandbox runner is gone".into()));
        };
        let reply = runner.call(request).await?;
        call.done = true;
        Ok(reply)
    }

    /// A file operation, run by the sandbox's own user inside its namespaces: a link the
    /// sandbox planted leads only where its own commands could go.
    async fn file_op(
        &self,
        path: &Path,
        command: String,
        stdin: Vec<u8>,
        what: &str,
    ) -> Result<Vec<u8>, SandboxError> {
        let limits = ExecLimits {
            wall_time_secs: 120.0,
            cpu_secs: 120,
            file_size_mb: self.shared.config.workdir_mb,
            output_bytes: READ_CAP as usize,
            ..ExecLimits::default()
        };
        let mut request = self.request(&command, &limits);
        request.stdin = stdin;
        request.flood = READ_CAP;
        let reply = self.call(&request, false).await?;
        let fail =
            |why: String| SandboxError::Infra(format!("cannot {what} {}: {why}", path.display()));
        match reply.ending {
            trawl_sandbox_runner_host::Ending::Exited(0) => Ok(reply.stdout.kept),
            trawl_sandbox_runner_host::Ending::Flooded => {
                Err(fail(format!("larger than {} MiB", READ_CAP >> 20)))
            }
            trawl_sandbox_runner_host::Ending::Failed(why) => Err(SandboxError::Infra(why)),
            other => Err(fail(format!(
                "{other:?}: {}",
                String::from_utf8_lossy(&reply.stderr.kept).trim()
            ))),
        }
    }
}

/// `s` as one word for `/bin/sh`.
fn sh_word(s: &std::ffi::OsStr) -> String {
    use std::os::unix::ffi::OsStrExt;
    let s = String::from_utf8_lossy(s.as_bytes());
    format!("'{}'", s.replace('\'', "'\\''"))
}

#[async_trait]
impl Sandbox for LocalSandbox {
    async fn exec(&self, command: &str, limits: &ExecLimits) -> Result<ExecResult, SandboxError> {
        let started = Instant::now();
        let request = self.request(command, limits);
        let before = match &self.cgroup {
            Some(cg) => {
                cg.set_limits(limits.processes, limits.memory_mb.saturating_mul(1 << 20))
                    .map_err(SandboxError::Infra)?;
                Some(cg.counts())
            }
            None => None,
        };
        let mut reply = self.call(&request, limits.network).await?;
        if let (Some(cg), Some(before)) = (&self.cgroup, before) {
            reply.tripped = reply.tripped.or(cg.counts().tripped_since(before));
        }
        trawl_sandbox_runner_host::result(reply, started)
    }

    async fn read_file(&self, path: &str) -> Result<Vec<u8>, SandboxError> {
        let p = self.resolve(path)?;
        let command = format!("exec cat -- {}", sh_word(p.as_os_str()));
        self.file_op(&p, command, Vec::new(), "read").await
    }

    async fn write_file(&self, path: &str, contents: &[u8]) -> Result<(), SandboxError> {
        let p = self.resolve(path)?;
        let parent = p.parent().unwrap_or(&self.workdir);
        let command = format!(
            "mkdir -p -- {} && exec cat > {}",
            sh_word(parent.as_os_str()),
            sh_word(p.as_os_str())
        );
        self.file_op(&p, command, contents.to_vec(), "write")
            .await
            .map(drop)
    }

    fn working_dir(&self) -> String {
        self.workdir.display().to_string()
    }

    async fn close(&self) -> Result<(), SandboxError> {
        // Processes first: nothing of the sandbox's user may write while its files go.
        let swept = self.sweep_through_runner().await;
        self.stop_runners().await;
        self.teardown_off_runtime(swept).await;
        self.release_cgroup().await;
        let dir = self.dir.lock().unwrap_or_else(|p| p.into_inner()).take();
        if let Some(dir) = dir {
            let path = dir.path().to_path_buf();
            tokio::task::spawn_blocking(move || remove_tree(dir))
                .await
                .map_err(|e| SandboxError::Infra(format!("cleanup panicked: {e}")))?
                .map_err(|e| {
                    SandboxError::Infra(format!("cannot remove {}: {e}", path.display()))
                })?;
        }
        Ok(())
    }

    async fn snapshot(&self) -> Result<Snapshot, SandboxError> {
        if self.view.is_some() {
            return Err(SandboxError::Unavailable(
                "a view of a snapshot cannot be frozen again; freeze the sandbox it came from"
                    .into(),
            ));
        }
        let swept = self.sweep_through_runner().await;
        self.stop_runners().await;
        self.teardown_off_runtime(swept).await;
        self.release_cgroup().await;
        let Some(dir) = self.dir.lock().unwrap_or_else(|p| p.into_inner()).take() else {
            return Err(SandboxError::Infra("the sandbox is closed".into()));
        };
        // In the fallback its user goes back to the pool: the folder becomes trawl's own, so
        // that the next sandbox of that user cannot change it.
        if self.shared.bwrap.is_none() && self.shared.run_as.is_some() {
            let euid = nix::unistd::geteuid().as_raw();
            std::os::unix::fs::chown(dir.path(), Some(euid), Some(euid)).map_err(|e| {
                SandboxError::Infra(format!("cannot freeze {}: {e}", dir.path().display()))
            })?;
        }
        Ok(self.snapshots.put(dir))
    }
}

/// A view's own layer in its (empty) working folder: `upper` takes its changes, `work` is the
/// overlay's scratch; both the sandbox user's.
fn make_layer(dir: &Path, uid: Option<u32>) -> std::io::Result<()> {
    for sub in ["upper", "work"] {
        let d = dir.join(sub);
        std::fs::create_dir(&d)?;
        if let Some(uid) = uid {
            std::os::unix::fs::chown(&d, Some(uid), Some(uid))?;
        }
    }
    Ok(())
}

/// Removes a working folder, also where the overlay left a folder no one may enter (its
/// scratch `work/work`, mode 000, which only root could remove as it is).
fn remove_tree(dir: tempfile::TempDir) -> std::io::Result<()> {
    let stuck = dir.path().join("work").join("work");
    if stuck.is_dir() {
        let _ = std::fs::set_permissions(&stuck, std::fs::Permissions::from_mode(0o700));
    }
    dir.close()
}

/// Copies the folder `from` into the empty folder `to` (copy-on-write where the filesystem
/// can), everything then owned by `uid` when given.
fn copy_tree(from: &Path, to: &Path, uid: Option<u32>) -> std::io::Result<()> {
    let mut src = from.as_os_str().to_os_string();
    src.push("/.");
    let out = std::process::Command::new("cp")
        .args(["-a", "--reflink=auto", "--"])
        .arg(&src)
        .arg(to)
        .stdin(Stdio::null())
        .output()?;
    if !out.status.success() {
        return Err(std::io::Error::other(format!(
            "cp: {}",
            String::from_utf8_lossy(&out.stderr).trim()
        )));
    }
    if let Some(uid) = uid {
        std::os::unix::fs::chown(to, Some(uid), Some(uid))?;
        let mut stack = vec![to.to_path_buf()];
        while let Some(d) = stack.pop() {
            for entry in std::fs::read_dir(&d)? {
                let entry = entry?;
                std::os::unix::fs::lchown(entry.path(), Some(uid), Some(uid))?;
                if entry.file_type()?.is_dir() {
                    stack.push(entry.path());
                }
            }
        }
    }
    Ok(())
}

/// A frozen working folder; removed when the last of the store and its views lets go.
struct Frozen(Mutex<Option<tempfile::TempDir>>, PathBuf);

impl Frozen {
    fn path(&self) -> &Path {
        &self.1
    }
}

impl Drop for Frozen {
    fn drop(&mut self) {
        if let Some(dir) = self.0.lock().unwrap_or_else(|p| p.into_inner()).take() {
            let _ = remove_tree(dir);
        }
    }
}

/// The snapshots a factory's sandboxes were frozen as, by name.
#[derive(Default)]
struct Store(Mutex<HashMap<String, Arc<Frozen>>>);

impl std::fmt::Debug for Store {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Store")
    }
}

impl Store {
    fn put(&self, dir: tempfile::TempDir) -> Snapshot {
        let name = dir.path().display().to_string();
        let path = dir.path().to_path_buf();
        let frozen = Arc::new(Frozen(Mutex::new(Some(dir)), path));
        self.0
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .insert(name.clone(), frozen);
        Snapshot(name)
    }

    fn get(&self, snapshot: &Snapshot) -> Result<Arc<Frozen>, SandboxError> {
        self.0
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .get(&snapshot.0)
            .cloned()
            .ok_or_else(|| {
                SandboxError::Unavailable(format!(
                    "snapshot `{}` was not made by this sandbox backend, or was dropped",
                    snapshot.0
                ))
            })
    }

    /// Takes snapshots out of the store, all or the one named, to be removed (off the async
    /// threads: removing a tree blocks).
    async fn drop_some(&self, only: Option<&Snapshot>) {
        let taken: Vec<Arc<Frozen>> = {
            let mut map = self.0.lock().unwrap_or_else(|p| p.into_inner());
            match only {
                Some(s) => map.remove(&s.0).into_iter().collect(),
                None => map.drain().map(|(_, f)| f).collect(),
            }
        };
        if !taken.is_empty() {
            let _ = tokio::task::spawn_blocking(move || drop(taken)).await;
        }
    }
}

impl Drop for LocalSandbox {
    fn drop(&mut self) {
        self.teardown(false);
    }
}

/// The first uid of the range sandboxes run as (when trawl is root); no account uses it.
const UID_BASE: u32 = 0x7472_0000;
/// How many sandboxes may live at once, each with its own user.
const UID_COUNT: u32 = 4096;
/// The uid every namespace sandbox runs as (when trawl is root): past the range, no account's.
const SHARED_UID: u32 = UID_BASE + UID_COUNT;

/// One uid of the range, held by one sandbox until it is dropped. Held across processes too:
/// two trawl processes (two runs, or tests in processes of their own) on one machine never
/// hand out the same uid, since closing a sandbox kills every process of its user.
#[derive(Debug)]
struct UidLease {
    uid: u32,
    /// An exclusive `flock` on the uid's file in [`uid_lock_dir`], released when dropped (or
    /// when the process dies, however it dies).
    _lock: std::fs::File,
}

fn uids_in_use() -> &'static Mutex<std::collections::BTreeSet<u32>> {
    static IN_USE: OnceLock<Mutex<std::collections::BTreeSet<u32>>> = OnceLock::new();
    IN_USE.get_or_init(Default::default)
}

/// Where the uid locks of every trawl process on this machine live: `/run/trawl/sandbox-uids`
/// (leases exist only when trawl runs as root, who may write there).
fn uid_lock_dir() -> std::io::Result<PathBuf> {
    let dir = PathBuf::from("/run/trawl/sandbox-uids");
    std::fs::create_dir_all(&dir)?;
    Ok(dir)
}

impl UidLease {
    /// The next free uid after the last one handed out (round the range): a uid given back
    /// is reused as late as possible, so that what its last sandbox left dying (processes the
    /// kernel has yet to reap, which still count against the user's process limit) is gone.
    /// A uid another process holds is passed over.
    fn take() -> Result<Self, String> {
        static NEXT: std::sync::atomic::AtomicU32 = std::sync::atomic::AtomicU32::new(0);
        let dir = uid_lock_dir().map_err(|e| {
            format!("cannot create /run/trawl/sandbox-uids for the sandbox users' locks: {e}")
        })?;
        let mut in_use = uids_in_use().lock().unwrap_or_else(|p| p.into_inner());
        let start = NEXT.load(std::sync::atomic::Ordering::Relaxed);
        for uid in (0..UID_COUNT).map(|i| UID_BASE + (start + i) % UID_COUNT) {
            if in_use.contains(&uid) {
                continue;
            }
            let path = dir.join(uid.to_string());
            let file = std::fs::OpenOptions::new()
                .create(true)
                .truncate(false)
                .write(true)
                .open(&path)
                .map_err(|e| format!("cannot open {}: {e}", path.display()))?;
            match file.try_lock() {
                Ok(()) => {}
                Err(std::fs::TryLockError::WouldBlock) => continue,
                Err(std::fs::TryLockError::Error(e)) => {
                    return Err(format!("cannot lock {}: {e}", path.display()))
                }
            }
            NEXT.store(
                (uid - UID_BASE + 1) % UID_COUNT,
                std::sync::atomic::Ordering::Relaxed,
            );
            in_use.insert(uid);
            return Ok(UidLease { uid, _lock: file });
        }
        Err(format!(
            "all {UID_COUNT} sandbox users are in use on this machine; lower the run's concurrency"
        ))
    }

    fn uid(&self) -> u32 {
        self.uid
    }
}

impl Drop for UidLease {
    fn drop(&mut self) {
        uids_in_use()
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .remove(&self.uid);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn paths_cannot_leave_the_working_folder() {
        let Ok(f) = LocalSandboxFactory::new(LocalSandboxConfig {
            isolation: IsolationMode::Process,
            ..LocalSandboxConfig::default()
        }) else {
            return;
        };
        let s = f.create().expect("sandbox");
        assert!(s.resolve("a/b.py").is_ok());
        assert!(s.resolve("../x").is_err());
        assert!(s.resolve("/etc/passwd").is_err());
        let inside = s.workdir().join("ok.txt");
        assert_eq!(
            s.resolve(&inside.to_string_lossy()).expect("inside"),
            inside
        );
    }
}

impl trawl_core::registry::SandboxConfig for LocalSandboxConfig {
    fn build(
        self,
        _cx: &trawl_core::BuildContext,
    ) -> Result<Arc<dyn trawl_core::sandbox::SandboxBackend>, trawl_core::ComponentError> {
        LocalSandboxFactory::new(self)
            .map(|f| Arc::new(f) as Arc<dyn trawl_core::sandbox::SandboxBackend>)
            .map_err(|e| trawl_core::ComponentError::new(e.to_string()))
    }
}

#[async_trait]
impl trawl_core::sandbox::SandboxBackend for LocalSandboxFactory {
    fn describe(&self) -> serde_json::Value {
        let mut v = serde_json::to_value(self.isolation()).unwrap_or(serde_json::Value::Null);
        if let Some(m) = v.as_object_mut() {
            m.insert("sandbox".into(), "local".into());
        }
        v
    }

    async fn create(
        &self,
        _spec: &trawl_core::sandbox::SandboxSpec,
    ) -> Result<Box<dyn Sandbox>, SandboxError> {
        Ok(Box::new(LocalSandboxFactory::create(self)?))
    }

    async fn view(
        &self,
        snapshot: &Snapshot,
        _spec: &trawl_core::sandbox::SandboxSpec,
    ) -> Result<Box<dyn Sandbox>, SandboxError> {
        Ok(Box::new(LocalSandboxFactory::view(self, snapshot).await?))
    }

    async fn drop_snapshot(&self, snapshot: &Snapshot) {
        self.snapshots.drop_some(Some(snapshot)).await;
    }

    async fn shutdown(&self) {
        self.snapshots.drop_some(None).await;
    }
}

trawl_core::register!(
    sandbox,
    "local",
    "processes on this machine: a process group with rlimits, behind bubblewrap namespaces where they work",
    LocalSandboxConfig
);

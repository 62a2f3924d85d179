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
//! `plugins/sandbox-runner` and carried inside this library), and every command of the episode
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
use trawl_core::sandbox::{ExecLimits, ExecResult, Sandbox, SandboxError};
use trawl_sandbox_runner_host::{Policy, Request};

/// How long, after a command's group is gone, its output pipes may stay open by default
/// (`drain_secs`) where a writer can outlive the group (the bare fallback without a user of its
/// own). Past it what is in the pipes is taken, without waiting: all the group wrote is there, so
/// nothing is lost to time. Elsewhere every writer is dead and the pipes are read to their end.
const DRAIN_SECS: f64 = 2.0;
/// The unprivileged user commands run as when trawl runs as root.
const NOBODY: u32 = 65534;

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
}

/// What detection found, with the config it was found for.
#[derive(Debug, Clone)]
struct Detected {
    config: LocalSandboxConfig,
    isolation: Isolation,
    prlimit: PathBuf,
    bwrap: Option<PathBuf>,
    run_as: Option<u32>,
    root: PathBuf,
    /// The runner binary, put on disk under `root`.
    runner: PathBuf,
    /// util-linux's `setpriv`, through which trawl (as root) starts a sandbox as its user
    /// without forking itself.
    setpriv: Option<PathBuf>,
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
        })
    }

    /// The isolation in force for sandboxes from this factory.
    pub fn isolation(&self) -> &Isolation {
        &self.inner.isolation
    }

    /// A fresh sandbox: its own empty working folder, removed when it is closed or dropped.
    pub fn create(&self) -> Result<LocalSandbox, SandboxError> {
        let lease = match self.inner.run_as {
            Some(_) => Some(UidLease::take().ok_or_else(|| {
                SandboxError::Infra(format!(
                    "all {UID_COUNT} sandbox users are in use; lower the run's concurrency"
                ))
            })?),
            None => None,
        };
        let dir = self
            .inner
            .make_workdir_for(lease.as_ref().map(UidLease::uid))
            .map_err(|e| SandboxError::Infra(format!("cannot create a working folder: {e}")))?;
        Ok(LocalSandbox {
            shared: self.inner.clone(),
            workdir: dir.path().to_path_buf(),
            dir: Mutex::new(Some(dir)),
            lease: Mutex::new(lease),
            runners: Default::default(),
        })
    }
}

impl Detected {
    fn detect(config: &LocalSandboxConfig) -> Result<Self, String> {
        let prlimit = find_in_path("prlimit").ok_or(
            "`prlimit` (util-linux) is not installed; trawl sets sandbox limits with it\n  hint: apt-get install -y util-linux",
        )?;
        let run_as = nix::unistd::geteuid().is_root().then_some(NOBODY);
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
                tmp_mb: None,
                workdir_mb: config.workdir_mb,
                network_isolated: false,
                filesystem_isolated: false,
                pid_namespace: false,
                process_limit: run_as.is_some(),
                rlimits: Vec::new(),
            },
            prlimit,
            bwrap: None,
            run_as,
            root,
            runner,
            setpriv,
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
        factory.isolation.rlimits = ["cpu", "as", "fsize", "nofile", "core"]
            .into_iter()
            .chain(factory.isolation.process_limit.then_some("nproc"))
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
        "--bind".as_ref(),
        workdir.as_os_str(),
        workdir.as_os_str(),
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
    /// Taken (and removed) by `close`; dropping it removes the folder too.
    dir: Mutex<Option<tempfile::TempDir>>,
    /// The folder's path, kept apart so that reading it needs no lock.
    workdir: PathBuf,
    /// The user this sandbox runs as, when it has its own; given back at teardown.
    lease: Mutex<Option<UidLease>>,
    /// The runners, started on first use: without and with the network.
    runners: tokio::sync::Mutex<[Option<runner::Runner>; 2]>,
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
    fn teardown(&self) {
        let lease = self.lease.lock().unwrap_or_else(|p| p.into_inner()).take();
        let Some(lease) = lease else {
            return;
        };
        if self.shared.bwrap.is_none() {
            teardown::kill_user(lease.uid());
            teardown::remove_files_of(lease.uid(), &self.workdir);
        }
        drop(lease);
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
        if let Some(bwrap) = &f.bwrap {
            argv.push(bwrap.into());
            argv.extend(bwrap_args(
                &self.workdir,
                &f.config.ro_binds,
                &f.runner,
                network,
                f.config.tmp_mb,
            ));
            argv.push("--".into());
        }
        argv.extend([
            f.runner.clone().into(),
            "--workdir".into(),
            self.workdir.clone().into(),
            "--prlimit".into(),
            f.prlimit.clone().into(),
        ]);
        if let (Some(uid), false) = (uid, self.namespaces()) {
            argv.extend(["--uid".into(), uid.to_string().into()]);
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
        let policy = Policy {
            grace: trawl_core::config::secs(c.kill_grace_secs.unwrap_or(1.0)),
            drain: trawl_core::config::secs(c.drain_secs.unwrap_or(DRAIN_SECS)),
            disk_cap: Some(c.workdir_mb.saturating_mul(1 << 20)),
            kill_all: self.namespaces(),
            processes: self.shared.isolation.process_limit,
            memory: true,
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

#[async_trait]
impl Sandbox for LocalSandbox {
    async fn exec(&self, command: &str, limits: &ExecLimits) -> Result<ExecResult, SandboxError> {
        if self.dir.lock().unwrap_or_else(|p| p.into_inner()).is_none() {
            return Err(SandboxError::Infra("the sandbox is closed".into()));
        }
        let started = Instant::now();
        let request = self.request(command, limits);
        let mut runners = self.runners.lock().await;
        let slot = &mut runners[usize::from(limits.network)];
        if slot.is_none() {
            *slot = Some(runner::Runner::start(self.runner_command(limits.network)).await?);
        }
        let mut call = InFlight {
            slot,
            kill: self.namespaces(),
            done: false,
        };
        let Some(runner) = call.slot.as_mut() else {
            return Err(SandboxError::Infra("the sandbox runner is gone".into()));
        };
        let reply = runner.call(&request).await?;
        call.done = true;
        trawl_sandbox_runner_host::result(reply, started)
    }

    async fn read_file(&self, path: &str) -> Result<Vec<u8>, SandboxError> {
        let p = self.resolve(path)?;
        tokio::fs::read(&p)
            .await
            .map_err(|e| SandboxError::Infra(format!("cannot read {}: {e}", p.display())))
    }

    async fn write_file(&self, path: &str, contents: &[u8]) -> Result<(), SandboxError> {
        let p = self.resolve(path)?;
        let io =
            |e: std::io::Error| SandboxError::Infra(format!("cannot write {}: {e}", p.display()));
        if let Some(parent) = p.parent() {
            tokio::fs::create_dir_all(parent).await.map_err(io)?;
        }
        tokio::fs::write(&p, contents).await.map_err(io)?;
        if let Some(uid) = self.uid() {
            // The sandbox user must be able to change what it was given.
            let mut at = p.as_path();
            while at.starts_with(&self.workdir) && at != self.workdir {
                std::os::unix::fs::chown(at, Some(uid), Some(uid)).map_err(io)?;
                at = match at.parent() {
                    Some(a) => a,
                    None => break,
                };
            }
        }
        Ok(())
    }

    fn working_dir(&self) -> String {
        self.workdir.display().to_string()
    }

    async fn close(&self) -> Result<(), SandboxError> {
        // Processes first: nothing of the sandbox's user may write while its files go.
        self.stop_runners().await;
        self.teardown();
        let dir = self.dir.lock().unwrap_or_else(|p| p.into_inner()).take();
        if let Some(dir) = dir {
            let path = dir.path().to_path_buf();
            tokio::task::spawn_blocking(move || dir.close())
                .await
                .map_err(|e| SandboxError::Infra(format!("cleanup panicked: {e}")))?
                .map_err(|e| {
                    SandboxError::Infra(format!("cannot remove {}: {e}", path.display()))
                })?;
        }
        Ok(())
    }
}

impl Drop for LocalSandbox {
    fn drop(&mut self) {
        self.teardown();
    }
}

/// The first uid of the range sandboxes run as (when trawl is root); no account uses it.
const UID_BASE: u32 = 0x7472_0000;
/// How many sandboxes may live at once, each with its own user.
const UID_COUNT: u32 = 4096;

/// One uid of the range, held by one sandbox until it is dropped.
#[derive(Debug)]
struct UidLease(u32);

fn uids_in_use() -> &'static Mutex<std::collections::BTreeSet<u32>> {
    static IN_USE: OnceLock<Mutex<std::collections::BTreeSet<u32>>> = OnceLock::new();
    IN_USE.get_or_init(Default::default)
}

impl UidLease {
    /// The next free uid after the last one handed out (round the range): a uid given back
    /// is reused as late as possible, so that what its last sandbox left dying (processes the
    /// kernel has yet to reap, which still count against the user's process limit) is gone.
    fn take() -> Option<Self> {
        static NEXT: std::sync::atomic::AtomicU32 = std::sync::atomic::AtomicU32::new(0);
        let mut in_use = uids_in_use().lock().unwrap_or_else(|p| p.into_inner());
        let start = NEXT.load(std::sync::atomic::Ordering::Relaxed);
        let uid = (0..UID_COUNT)
            .map(|i| UID_BASE + (start + i) % UID_COUNT)
            .find(|u| !in_use.contains(u))?;
        NEXT.store(
            (uid - UID_BASE + 1) % UID_COUNT,
            std::sync::atomic::Ordering::Relaxed,
        );
        in_use.insert(uid);
        Some(UidLease(uid))
    }

    fn uid(&self) -> u32 {
        self.0
    }
}

impl Drop for UidLease {
    fn drop(&mut self) {
        uids_in_use()
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .remove(&self.0);
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
}

trawl_core::register!(
    sandbox,
    "local",
    "processes on this machine: a process group with rlimits, behind bubblewrap namespaces where they work",
    LocalSandboxConfig
);

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
//! A command that hits its wall-clock limit gets SIGTERM for its whole process group, then SIGKILL
//! after a grace period. A command that exits leaves nothing behind: its group is killed (in
//! namespaces, the pid namespace dies with it), so a background child holding stdout open cannot
//! keep the call waiting.

#![forbid(unsafe_code)]

mod teardown;

use std::collections::HashMap;
use std::ffi::OsString;
use std::os::unix::fs::PermissionsExt;
use std::os::unix::process::ExitStatusExt;
use std::path::{Component, Path, PathBuf};
use std::process::Stdio;
use std::sync::{Arc, Mutex, OnceLock};
use std::time::{Duration, Instant};

use nix::sys::signal::{killpg, Signal};
use nix::unistd::Pid;
use serde::{Deserialize, Serialize};
use tokio::io::{AsyncRead, AsyncReadExt};
use trawl_core::async_trait;
use trawl_core::sandbox::{
    classify_exit, CappedOutput, ExecLimits, ExecOutcome, ExecResult, Limit, Sandbox, SandboxError,
    FLOOD_FACTOR,
};

/// How long, after the process group is gone, the readers may take to reach the end of the
/// pipes by default (`drain_secs`). Past it (a busy machine left them unscheduled, or a writer
/// that escaped the group holds a pipe open) what the group wrote is taken straight from the
/// pipes: nothing is lost to time.
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
    /// Seconds the output readers may take, once a command's processes are gone, before what
    /// is left in its pipes is read directly (2 when unset). Output is whole either way.
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
            false,
            config.tmp_mb,
        ));
        cmd.args(["--", "/bin/true"]);
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
/// folder writable at its own path.
fn bwrap_args(workdir: &Path, ro_binds: &[PathBuf], network: bool, tmp_mb: u64) -> Vec<OsString> {
    let mut a: Vec<OsString> = vec![
        "--unshare-all".into(),
        "--die-with-parent".into(),
        "--new-session".into(),
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

    fn command(&self, command: &str, limits: &ExecLimits) -> tokio::process::Command {
        let f = &self.shared;
        let cpu = limits.cpu_secs;
        let mut prlimit_args: Vec<OsString> = vec![
            format!("--cpu={cpu}:{}", cpu + 1).into(),
            format!("--as={}", limits.memory_mb << 20).into(),
            format!("--fsize={}", limits.file_size_mb << 20).into(),
            format!("--nofile={}", limits.open_files).into(),
            "--core=0".into(),
        ];
        if f.isolation.process_limit {
            prlimit_args.push(format!("--nproc={}", limits.processes).into());
        }
        prlimit_args.extend(["--".into(), "/bin/sh".into(), "-c".into(), command.into()]);
        let mut cmd = match &f.bwrap {
            Some(bwrap) => {
                let mut cmd = tokio::process::Command::new(bwrap);
                cmd.args(bwrap_args(
                    &self.workdir,
                    &f.config.ro_binds,
                    limits.network,
                    f.config.tmp_mb,
                ));
                cmd.arg("--").arg(&f.prlimit).args(&prlimit_args);
                cmd.env_clear();
                cmd
            }
            None => {
                let mut cmd = tokio::process::Command::new(&f.prlimit);
                cmd.args(&prlimit_args);
                cmd.env_clear().envs(scrubbed_env(&self.workdir));
                cmd
            }
        };
        cmd.current_dir(&self.workdir)
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .process_group(0)
            .kill_on_drop(true);
        if let Some(uid) = self.uid() {
            cmd.uid(uid).gid(uid);
        }
        cmd
    }
}

/// Reads one stream into `into` (which keeps at most its cap). Returns early (dropping the
/// pipe, so the writer gets SIGPIPE) once `flood` bytes have gone by, saying so.
async fn read_capped<R: AsyncRead + Unpin>(
    mut r: R,
    into: Arc<Mutex<Captured>>,
    flood: usize,
) -> bool {
    let mut buf = vec![0u8; 64 << 10];
    loop {
        match r.read(&mut buf).await {
            Ok(0) | Err(_) => return false,
            // Pushed before the next await: a reader stopped at any point has kept all it read.
            Ok(n) => {
                if lock(&into).push(&buf[..n], flood) {
                    return true;
                }
            }
        }
    }
}

struct Captured {
    out: CappedOutput,
    flooded: bool,
}

impl Captured {
    fn new(cap: usize) -> Self {
        Captured {
            out: CappedOutput::new(cap),
            flooded: false,
        }
    }

    /// Keeps `bytes`; true once more than `flood` bytes have gone by.
    fn push(&mut self, bytes: &[u8], flood: usize) -> bool {
        self.out.push(bytes);
        if self.out.seen() > flood {
            self.flooded = true;
        }
        self.flooded
    }
}

fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|p| p.into_inner())
}

/// One output stream of a command: what its reader task has kept so far, the task, and a
/// second handle on the pipe's read end for what is left once the command is gone.
struct Stream {
    kept: Arc<Mutex<Captured>>,
    task: tokio::task::JoinHandle<()>,
    pipe: Option<std::fs::File>,
}

impl Stream {
    /// Waits up to `grace` for the reader to reach the end of the pipe. Past it, the reader is
    /// stopped and what is in the pipe is read without waiting: the command's group is gone, so
    /// all it wrote is there; only a writer that escaped the group could add more, and that is
    /// not the command's output.
    async fn drain(mut self, grace: Duration, flood: usize) -> Captured {
        if tokio::time::timeout(grace, &mut self.task).await.is_err() {
            self.task.abort();
            // Stopped for good before this side reads, so that no chunk is kept out of order.
            let _ = (&mut self.task).await;
            if let Some(mut pipe) = self.pipe.take() {
                use std::io::Read;
                let mut buf = vec![0u8; 64 << 10];
                let mut kept = lock(&self.kept);
                while !kept.flooded {
                    match pipe.read(&mut buf) {
                        Ok(0) => break,
                        Ok(n) => {
                            kept.push(&buf[..n], flood);
                        }
                        Err(e) if e.kind() == std::io::ErrorKind::Interrupted => {}
                        // Empty (WouldBlock) or gone: nothing more of the command's.
                        Err(_) => break,
                    }
                }
            }
        }
        let mut kept = lock(&self.kept);
        std::mem::replace(&mut *kept, Captured::new(0))
    }
}

/// A non-blocking second handle on a pipe's read end (tokio made the pipe non-blocking; this
/// makes sure, so that a read never waits).
fn pipe_handle(fd: &impl std::os::fd::AsFd) -> Option<std::fs::File> {
    use nix::fcntl::{fcntl, FcntlArg, OFlag};
    let dup = nix::unistd::dup(fd).ok()?;
    let flags = OFlag::from_bits_truncate(fcntl(&dup, FcntlArg::F_GETFL).ok()?);
    fcntl(&dup, FcntlArg::F_SETFL(flags | OFlag::O_NONBLOCK)).ok()?;
    Some(std::fs::File::from(dup))
}

/// How often a running command's working folder is measured.
const DISK_POLL: Duration = Duration::from_millis(100);

/// Returns once the folder holds more than `cap` bytes (or more entries than can be measured
/// quickly, which only a program filling it would make); never otherwise.
async fn watch_disk(dir: PathBuf, cap: u64) {
    loop {
        tokio::time::sleep(DISK_POLL).await;
        let d = dir.clone();
        let over = tokio::task::spawn_blocking(move || teardown::size_over(&d, cap))
            .await
            .unwrap_or(false);
        if over {
            return;
        }
    }
}

fn kill_group(pgid: i32, signal: Signal) {
    // ESRCH (the group is already gone) is the normal case after a clean exit.
    let _ = killpg(Pid::from_raw(pgid), signal);
}

#[async_trait]
impl Sandbox for LocalSandbox {
    async fn exec(&self, command: &str, limits: &ExecLimits) -> Result<ExecResult, SandboxError> {
        if self.dir.lock().unwrap_or_else(|p| p.into_inner()).is_none() {
            return Err(SandboxError::Infra("the sandbox is closed".into()));
        }
        let started = Instant::now();
        let mut child = self
            .command(command, limits)
            .spawn()
            .map_err(|e| SandboxError::Infra(format!("cannot start the sandbox: {e}")))?;
        let pgid = child
            .id()
            .map(|p| p as i32)
            .ok_or_else(|| SandboxError::Infra("the sandbox process vanished".into()))?;
        // From here on, whatever happens to this future, the group dies with it.
        let guard = GroupGuard(pgid);
        let cap = limits.output_bytes;
        let flood = cap.saturating_mul(FLOOD_FACTOR).max(16 << 20);
        let (flood_tx, mut flood_rx) = tokio::sync::mpsc::channel::<()>(2);
        let spawn_reader = |stream: Option<Box<dyn AsyncRead + Unpin + Send>>,
                            pipe: Option<std::fs::File>| {
            let tx = flood_tx.clone();
            let kept = Arc::new(Mutex::new(Captured::new(cap)));
            let into = kept.clone();
            let task = tokio::spawn(async move {
                if let Some(stream) = stream {
                    if read_capped(stream, into, flood).await {
                        let _ = tx.send(()).await;
                    }
                }
            });
            Stream { kept, task, pipe }
        };
        let stdout = child.stdout.take();
        let stdout_pipe = stdout.as_ref().and_then(pipe_handle);
        let out_stream = spawn_reader(
            stdout.map(|s| Box::new(s) as Box<dyn AsyncRead + Unpin + Send>),
            stdout_pipe,
        );
        let stderr = child.stderr.take();
        let stderr_pipe = stderr.as_ref().and_then(pipe_handle);
        let err_stream = spawn_reader(
            stderr.map(|s| Box::new(s) as Box<dyn AsyncRead + Unpin + Send>),
            stderr_pipe,
        );
        drop(flood_tx);

        let mut timed_out = false;
        let mut flooded = false;
        let mut filled = false;
        let disk_cap = self.shared.config.workdir_mb.saturating_mul(1 << 20);
        let status = tokio::select! {
            s = child.wait() => Some(s),
            _ = tokio::time::sleep(limits.wall_time()) => { timed_out = true; None }
            Some(()) = flood_rx.recv() => { flooded = true; None }
            () = watch_disk(self.workdir.clone(), disk_cap) => { filled = true; None }
        };
        let status = match status {
            Some(s) => {
                s.map_err(|e| SandboxError::Infra(format!("lost the sandbox process: {e}")))?
            }
            None => {
                // Ask politely once, then make sure.
                kill_group(pgid, Signal::SIGTERM);
                let grace =
                    trawl_core::config::secs(self.shared.config.kill_grace_secs.unwrap_or(1.0));
                let waited = tokio::time::timeout(grace, child.wait()).await;
                kill_group(pgid, Signal::SIGKILL);
                match waited {
                    Ok(s) => s,
                    Err(_) => child.wait().await,
                }
                .map_err(|e| SandboxError::Infra(format!("lost the sandbox process: {e}")))?
            }
        };
        // Anything the command left running (a background child holding the pipes) goes now.
        kill_group(pgid, Signal::SIGKILL);
        drop(guard);
        let grace = trawl_core::config::secs(self.shared.config.drain_secs.unwrap_or(DRAIN_SECS));
        let (out, err) = tokio::join!(
            out_stream.drain(grace, flood),
            err_stream.drain(grace, flood)
        );
        let (stdout_truncated, stderr_truncated) = (out.out.truncated(), err.out.truncated());
        let (out_flooded, err_flooded) = (out.flooded, err.flooded);
        let stdout = out.out.into_string();
        let stderr = err.out.into_string();
        let outcome = if timed_out {
            ExecOutcome::TimedOut
        } else if filled {
            ExecOutcome::LimitExceeded { limit: Limit::Disk }
        } else if flooded || out_flooded || err_flooded {
            ExecOutcome::LimitExceeded {
                limit: Limit::Output,
            }
        } else {
            classify_exit(status.signal(), status.code(), &stderr)
        };
        Ok(ExecResult {
            outcome,
            stdout,
            stderr,
            stdout_truncated,
            stderr_truncated,
            duration_ms: started.elapsed().as_millis() as u64,
        })
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
    /// The lowest free uid of the range; none when every one is taken.
    fn take() -> Option<Self> {
        let mut in_use = uids_in_use().lock().unwrap_or_else(|p| p.into_inner());
        let uid = (UID_BASE..UID_BASE + UID_COUNT).find(|u| !in_use.contains(u))?;
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

/// Kills a process group when dropped: an `exec` future cancelled mid-way (episode timeout,
/// Ctrl-C) leaves nothing running.
struct GroupGuard(i32);

impl Drop for GroupGuard {
    fn drop(&mut self) {
        kill_group(self.0, Signal::SIGKILL);
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

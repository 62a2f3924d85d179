//! What isolation works on this machine, found once per (mode, bubblewrap, root): `prlimit`
//! and `setpriv` found, the runner installed, cgroups looked for, and bubblewrap and overlay
//! views tried in a real test sandbox.

use std::collections::HashMap;
use std::os::unix::fs::PermissionsExt;
use std::path::PathBuf;
use std::process::Stdio;
use std::sync::{Mutex, OnceLock};

use crate::cgroup;
use crate::command::{bwrap_args, runner_args};
use crate::config::{Isolation, IsolationMode, LocalSandboxConfig};
use crate::runner;
use crate::snapshots::{make_layer, remove_tree};
use crate::users::{SHARED_UID, UID_BASE};

/// What detection found, with the config it was found for.
#[derive(Debug, Clone)]
pub(crate) struct Detected {
    pub(crate) config: LocalSandboxConfig,
    pub(crate) isolation: Isolation,
    pub(crate) prlimit: PathBuf,
    pub(crate) bwrap: Option<PathBuf>,
    /// When trawl is root: the one unprivileged user every namespace sandbox runs as (each
    /// has its own namespaces, and the kernel counts processes per user namespace). The
    /// fallback gives each sandbox a user of its own instead.
    pub(crate) run_as: Option<u32>,
    pub(crate) root: PathBuf,
    /// The runner binary, put on disk under `root`.
    pub(crate) runner: PathBuf,
    /// util-linux's `setpriv`, through which trawl (as root) starts a sandbox as its user
    /// without forking itself.
    pub(crate) setpriv: Option<PathBuf>,
    /// Where each sandbox gets cgroups of its own (trawl as root).
    pub(crate) cgroups: Option<cgroup::CgroupRoot>,
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

pub(crate) fn detected() -> &'static DetectCache {
    static CACHE: OnceLock<DetectCache> = OnceLock::new();
    CACHE.get_or_init(|| Mutex::new(HashMap::new()))
}

impl Detected {
    pub(crate) fn detect(config: &LocalSandboxConfig) -> Result<Self, String> {
        let prlimit = find_in_path("prlimit").ok_or(
            "`prlimit` (util-linux) is not installed; trawl sets sandbox limits with it\n  hint: apt-get install -y util-linux",
        )?;
        let run_as = nix::unistd::geteuid().is_root().then_some(SHARED_UID);
        if config.tmp_mb == 0 || config.workdir_mb == 0 {
            return Err("tmp_mb and workdir_mb must be at least 1".into());
        }
        if let Some(grace) = config.kill_grace_secs {
            trawl_core::values::check_secs(grace, true)
                .map_err(|m| format!("kill_grace_secs {m}"))?;
        }
        if let Some(drain) = config.drain_secs {
            trawl_core::values::check_secs(drain, true).map_err(|m| format!("drain_secs {m}"))?;
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
    pub(crate) fn make_workdir_for(&self, uid: Option<u32>) -> std::io::Result<tempfile::TempDir> {
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

//! A pids and a memory cgroup per sandbox, where trawl runs as root: the kernel then bounds the
//! sandbox's processes and memory as a whole and records every time it enforced a bound
//! (`pids.events`, the OOM-kill count), so a limit is seen even when the program caught the
//! failed fork and went on. Without them (trawl not root, no cgroup file system it may write)
//! the sandbox falls back to rlimits, and a caught failure is not seen.
//!
//! The groups live under `trawl-sandboxes/` below trawl's own cgroup (v1: one folder per
//! controller) or, on the unified hierarchy (v2), below its root; each is named after the trawl
//! process that made it, so that a later trawl removes what a killed one left.

use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};

use trawl_sandbox_runner_host::LimitCounts;

/// Where sandboxes' cgroups are made, found once.
#[derive(Debug, Clone)]
pub(crate) struct CgroupRoot {
    version: Version,
    /// `trawl-sandboxes` in each controller's hierarchy (v1: pids, then memory; v2: one).
    bases: Vec<PathBuf>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Version {
    V1,
    V2,
}

const MOUNT: &str = "/sys/fs/cgroup";
const BASE: &str = "trawl-sandboxes";

impl CgroupRoot {
    /// The cgroup file system trawl may make sandboxes' groups in, with both the pids and the
    /// memory controller; `Err` says why not.
    pub(crate) fn detect() -> Result<Self, String> {
        if !nix::unistd::geteuid().is_root() {
            return Err("trawl is not root".into());
        }
        let mount = Path::new(MOUNT);
        let root = if mount.join("pids").is_dir() && mount.join("memory").is_dir() {
            let own = own_cgroups();
            let bases = ["pids", "memory"]
                .into_iter()
                .map(|c| {
                    let rel = own.get(c).map(String::as_str).unwrap_or("/");
                    mount.join(c).join(rel.trim_start_matches('/')).join(BASE)
                })
                .collect();
            CgroupRoot {
                version: Version::V1,
                bases,
            }
        } else if std::fs::read_to_string(mount.join("cgroup.controllers"))
            .is_ok_and(|c| c.contains("pids") && c.contains("memory"))
        {
            // v2 keeps processes out of a group whose controllers its children use: the root,
            // which may hold them, is the one place trawl can rely on.
            let base = mount.join(BASE);
            let _ = std::fs::write(mount.join("cgroup.subtree_control"), "+pids +memory");
            CgroupRoot {
                version: Version::V2,
                bases: vec![base],
            }
        } else {
            return Err(format!(
                "no cgroup hierarchy with the pids and memory controllers under {MOUNT}"
            ));
        };
        for base in &root.bases {
            std::fs::create_dir_all(base)
                .map_err(|e| format!("cannot make {}: {e}", base.display()))?;
        }
        if root.version == Version::V2 {
            std::fs::write(
                root.bases[0].join("cgroup.subtree_control"),
                "+pids +memory",
            )
            .map_err(|e| format!("cannot enable pids and memory under {BASE}: {e}"))?;
        }
        root.reap_stale();
        // A group made and removed proves the limits can be set.
        let probe = root.make()?;
        probe.set_limits(8, 64 << 20)?;
        probe.remove();
        Ok(root)
    }

    pub(crate) fn version(&self) -> &'static str {
        match self.version {
            Version::V1 => "v1",
            Version::V2 => "v2",
        }
    }

    /// A new, empty group for one sandbox.
    pub(crate) fn make(&self) -> Result<SandboxCgroup, String> {
        static NEXT: AtomicU64 = AtomicU64::new(0);
        let name = format!(
            "{}-{}",
            std::process::id(),
            NEXT.fetch_add(1, Ordering::Relaxed)
        );
        let dirs: Vec<PathBuf> = self.bases.iter().map(|b| b.join(&name)).collect();
        for d in &dirs {
            if let Err(e) = std::fs::create_dir(d) {
                let made = SandboxCgroup {
                    version: self.version,
                    dirs: dirs.clone(),
                };
                made.remove();
                return Err(format!("cannot make the cgroup {}: {e}", d.display()));
            }
        }
        Ok(SandboxCgroup {
            version: self.version,
            dirs,
        })
    }

    /// Removes the groups of trawl processes that are gone (killed before their teardown).
    fn reap_stale(&self) {
        for base in &self.bases {
            let Ok(read) = std::fs::read_dir(base) else {
                continue;
            };
            for entry in read.flatten() {
                let name = entry.file_name();
                let Some(pid) = name.to_str().and_then(|n| n.split_once('-')).map(|p| p.0) else {
                    continue;
                };
                if !Path::new("/proc").join(pid).exists() {
                    // Fails while a process is still in it; the next start tries again.
                    let _ = std::fs::remove_dir(entry.path());
                }
            }
        }
    }
}

/// This process's cgroup per v1 controller, from `/proc/self/cgroup`.
fn own_cgroups() -> std::collections::HashMap<String, String> {
    let mut own = std::collections::HashMap::new();
    let text = std::fs::read_to_string("/proc/self/cgroup").unwrap_or_default();
    for line in text.lines() {
        let mut parts = line.splitn(3, ':');
        let (_, controllers, path) = (parts.next(), parts.next(), parts.next());
        if let (Some(controllers), Some(path)) = (controllers, path) {
            for c in controllers.split(',') {
                own.insert(c.to_string(), path.to_string());
            }
        }
    }
    own
}

/// One sandbox's group(s). Its processes join it as they start (see
/// [`SandboxCgroup::procs_files`]); removed at teardown, once they are gone.
#[derive(Debug)]
pub(crate) struct SandboxCgroup {
    version: Version,
    dirs: Vec<PathBuf>,
}

impl SandboxCgroup {
    /// The files a process writes its pid to, to join the group.
    pub(crate) fn procs_files(&self) -> Vec<PathBuf> {
        self.dirs.iter().map(|d| d.join("cgroup.procs")).collect()
    }

    /// Bounds the next command: `processes` more than the group holds now (the runner and
    /// bubblewrap), and `memory_bytes` for the whole sandbox, without swap.
    pub(crate) fn set_limits(&self, processes: u64, memory_bytes: u64) -> Result<(), String> {
        let (pids, memory) = match self.version {
            Version::V1 => (&self.dirs[0], &self.dirs[1]),
            Version::V2 => (&self.dirs[0], &self.dirs[0]),
        };
        let current: u64 = std::fs::read_to_string(pids.join("pids.current"))
            .ok()
            .and_then(|s| s.trim().parse().ok())
            .unwrap_or(0);
        write(
            pids,
            "pids.max",
            current.saturating_add(processes).to_string(),
        )?;
        let bytes = memory_bytes.to_string();
        match self.version {
            Version::V1 => {
                let memsw = memory.join("memory.memsw.limit_in_bytes");
                // memsw (memory + swap) may never be below the memory limit: raised out of the
                // way first, then set to it, so no swap is used past the limit.
                if memsw.exists() {
                    write(memory, "memory.memsw.limit_in_bytes", "-1".into())?;
                }
                write(memory, "memory.limit_in_bytes", bytes.clone())?;
                if memsw.exists() {
                    write(memory, "memory.memsw.limit_in_bytes", bytes)?;
                }
            }
            Version::V2 => {
                write(memory, "memory.max", bytes)?;
                if memory.join("memory.swap.max").exists() {
                    write(memory, "memory.swap.max", "0".into())?;
                }
            }
        }
        Ok(())
    }

    /// The kernel's counts of limits it enforced on the group.
    pub(crate) fn counts(&self) -> LimitCounts {
        LimitCounts::read(&self.dirs)
    }

    /// Removes the group; its processes must be gone (a dying one may hold it for a moment).
    pub(crate) fn remove(&self) {
        for d in &self.dirs {
            for _ in 0..50 {
                match std::fs::remove_dir(d) {
                    Ok(()) => break,
                    Err(e) if e.kind() == std::io::ErrorKind::NotFound => break,
                    Err(_) => std::thread::sleep(std::time::Duration::from_millis(20)),
                }
            }
        }
    }
}

impl Drop for SandboxCgroup {
    fn drop(&mut self) {
        for d in &self.dirs {
            let _ = std::fs::remove_dir(d);
        }
    }
}

fn write(dir: &Path, file: &str, value: String) -> Result<(), String> {
    std::fs::write(dir.join(file), &value)
        .map_err(|e| format!("cannot set {file} = {value} in {}: {e}", dir.display()))
}

/// `argv` started so that it, and all it starts, belongs to the group from its first
/// instruction: a shell writes its own pid to each `cgroup.procs`, then becomes `argv`.
pub(crate) fn joining(procs: &[PathBuf], argv: Vec<std::ffi::OsString>) -> Vec<std::ffi::OsString> {
    let mut a: Vec<std::ffi::OsString> = vec![
        "/bin/sh".into(),
        "-c".into(),
        "while [ \"$1\" != -- ]; do echo $$ > \"$1\" || exit 125; shift; done; shift; exec \"$@\""
            .into(),
        "sh".into(),
    ];
    a.extend(procs.iter().map(|p| p.clone().into_os_string()));
    a.push("--".into());
    a.extend(argv);
    a
}

//! One episode's sandbox, [`LocalSandbox`]: what it holds (its working folder, user,
//! runners, cgroups, the snapshot it views), the paths and users it answers with, and its
//! teardown when dropped.

use std::path::{Component, Path, PathBuf};
use std::sync::{Arc, Mutex};

use trawl_core::sandbox::SandboxError;

use crate::cgroup;
use crate::config::Isolation;
use crate::detect::Detected;
use crate::runner;
use crate::snapshots::{Frozen, Store};
use crate::users::UidLease;

/// One episode's sandbox.
pub struct LocalSandbox {
    pub(crate) shared: Arc<Detected>,
    /// Where its snapshot goes, should it be frozen.
    pub(crate) snapshots: Arc<Store>,
    /// The snapshot it is an overlay view of (its working folder then holds the view's own
    /// layer); kept alive while the sandbox lives.
    pub(crate) view: Option<Arc<Frozen>>,
    /// Taken (and removed) by `close`; dropping it removes the folder too.
    pub(crate) dir: Mutex<Option<tempfile::TempDir>>,
    /// The folder's path, kept apart so that reading it needs no lock.
    pub(crate) workdir: PathBuf,
    /// The user this sandbox runs as, when it has its own; given back at teardown.
    pub(crate) lease: Mutex<Option<UidLease>>,
    /// The runners, started on first use: without and with the network.
    pub(crate) runners: tokio::sync::Mutex<[Option<runner::Runner>; 2]>,
    /// Whether a runner was ever started (something may have run as the sandbox's user).
    pub(crate) ran: std::sync::atomic::AtomicBool,
    /// Its pids and memory cgroups, where trawl may make them: its runners join them as they
    /// start, so everything of the sandbox is counted there.
    pub(crate) cgroup: Option<Arc<cgroup::SandboxCgroup>>,
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
    pub(crate) fn resolve(&self, path: &str) -> Result<PathBuf, SandboxError> {
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
    pub(crate) fn own_user(&self) -> Option<u32> {
        self.lease
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .as_ref()
            .map(UidLease::uid)
    }

    /// Removes the sandbox's cgroups, once its processes are gone.
    pub(crate) async fn release_cgroup(&self) {
        if let Some(cg) = self.cgroup.clone() {
            let _ = tokio::task::spawn_blocking(move || cg.remove()).await;
        }
    }

    /// The uid commands run as: the sandbox's own, else the shared one (or none, as trawl).
    pub(crate) fn uid(&self) -> Option<u32> {
        self.lease
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .as_ref()
            .map(UidLease::uid)
            .or(self.shared.run_as)
    }

    /// Whether commands run in a pid namespace of the sandbox's own. There the runner kills
    /// every process it can signal after each command, and killing bubblewrap takes them all
    /// down. In the fallback a `setsid` daemon may live on until the sandbox closes (teardown
    /// kills its user's processes).
    pub(crate) fn namespaces(&self) -> bool {
        self.shared.bwrap.is_some()
    }
}

impl Drop for LocalSandbox {
    fn drop(&mut self) {
        self.teardown(false);
    }
}

#[cfg(test)]
mod tests {
    use crate::{IsolationMode, LocalSandboxConfig, LocalSandboxFactory};

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

//! Snapshots of local sandboxes: frozen working folders kept by name until dropped, how a
//! sandbox starts from one (an overlay's own layer, or a copy), and the removal of such
//! folders.

use std::collections::HashMap;
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::sync::{Arc, Mutex};

use trawl_core::sandbox::{SandboxError, Snapshot};

/// A view's own layer in its (empty) working folder: `upper` takes its changes, `work` is the
/// overlay's scratch; both the sandbox user's.
pub(crate) fn make_layer(dir: &Path, uid: Option<u32>) -> std::io::Result<()> {
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
pub(crate) fn remove_tree(dir: tempfile::TempDir) -> std::io::Result<()> {
    let stuck = dir.path().join("work").join("work");
    if stuck.is_dir() {
        let _ = std::fs::set_permissions(&stuck, std::fs::Permissions::from_mode(0o700));
    }
    dir.close()
}

/// Copies the folder `from` into the empty folder `to` (copy-on-write where the filesystem
/// can), everything then owned by `uid` when given.
pub(crate) fn copy_tree(from: &Path, to: &Path, uid: Option<u32>) -> std::io::Result<()> {
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
pub(crate) struct Frozen(Mutex<Option<tempfile::TempDir>>, PathBuf);

impl Frozen {
    pub(crate) fn path(&self) -> &Path {
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
pub(crate) struct Store(Mutex<HashMap<String, Arc<Frozen>>>);

impl std::fmt::Debug for Store {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Store")
    }
}

impl Store {
    pub(crate) fn put(&self, dir: tempfile::TempDir) -> Snapshot {
        let name = dir.path().display().to_string();
        let path = dir.path().to_path_buf();
        let frozen = Arc::new(Frozen(Mutex::new(Some(dir)), path));
        self.0
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .insert(name.clone(), frozen);
        Snapshot(name)
    }

    pub(crate) fn get(&self, snapshot: &Snapshot) -> Result<Arc<Frozen>, SandboxError> {
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
    pub(crate) async fn drop_some(&self, only: Option<&Snapshot>) {
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

//! The users sandboxes run as when trawl is root: a range of uids no account uses, one leased
//! to each fallback sandbox (held across processes by a lock file), and the one uid every
//! namespace sandbox shares.

use std::path::PathBuf;
use std::sync::{Mutex, OnceLock};

/// The first uid of the range sandboxes run as (when trawl is root); no account uses it.
pub(crate) const UID_BASE: u32 = 0x7472_0000;

/// How many sandboxes may live at once, each with its own user.
const UID_COUNT: u32 = 4096;

/// The uid every namespace sandbox runs as (when trawl is root): past the range, no account's.
pub(crate) const SHARED_UID: u32 = UID_BASE + UID_COUNT;

/// One uid of the range, held by one sandbox until it is dropped. Held across processes too:
/// two trawl processes (two runs, or tests in processes of their own) on one machine never
/// hand out the same uid, since closing a sandbox kills every process of its user.
#[derive(Debug)]
pub(crate) struct UidLease {
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
    pub(crate) fn take() -> Result<Self, String> {
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

    pub(crate) fn uid(&self) -> u32 {
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

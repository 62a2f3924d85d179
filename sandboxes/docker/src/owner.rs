//! Who owns a container or a snapshot image: the labels every trawl container and image
//! carries, and this process's `host:pid:start-time` id, with whether an owner is still alive.

use std::sync::OnceLock;
use std::time::{SystemTime, UNIX_EPOCH};

/// The label every trawl container carries.
pub const LABEL_MANAGED: &str = "trawl.managed";
/// The run the container belongs to.
pub const LABEL_RUN: &str = "trawl.run_id";
/// Creation time, seconds since the Unix epoch.
pub const LABEL_CREATED: &str = "trawl.created";
pub const LABEL_VERSION: &str = "trawl.version";
/// `host:pid:start-time` of the process that owns it; a container whose owner is gone is
/// reaped by the next start.
pub const LABEL_OWNER: &str = "trawl.owner";
/// On a snapshot image: the process that made it.
pub const LABEL_SNAPSHOT: &str = "trawl.snapshot";
/// The repository snapshot images are made in.
pub const SNAPSHOT_REPO: &str = "trawl-snapshot";

pub(crate) const TRAWL_VERSION: &str = env!("CARGO_PKG_VERSION");

/// `host:pid:start-time` of this process, so that a later start can tell whether the owner of a
/// container is still alive even when pids are reused.
pub(crate) fn owner_id() -> &'static str {
    static OWNER: OnceLock<String> = OnceLock::new();
    OWNER.get_or_init(|| {
        format!(
            "{}:{}:{}",
            hostname(),
            std::process::id(),
            start_time(std::process::id()).unwrap_or_default()
        )
    })
}

fn hostname() -> String {
    std::fs::read_to_string("/proc/sys/kernel/hostname")
        .map(|s| s.trim().to_string())
        .unwrap_or_else(|_| "unknown".into())
}

/// Field 22 of `/proc/<pid>/stat`: when the process started, in clock ticks since boot.
fn start_time(pid: u32) -> Option<u64> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    // The command name (field 2) may hold spaces; fields after it follow the last ')'.
    let rest = &stat[stat.rfind(')')? + 2..];
    rest.split_whitespace().nth(19)?.parse().ok()
}

/// Whether the process that `owner` names is still running on this host.
pub(crate) fn owner_alive(owner: &str) -> Option<bool> {
    let mut parts = owner.rsplitn(3, ':');
    let start: u64 = parts.next()?.parse().ok()?;
    let pid: u32 = parts.next()?.parse().ok()?;
    let host = parts.next()?;
    if host != hostname() {
        return None;
    }
    Some(start_time(pid) == Some(start))
}

pub(crate) fn now_secs() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_secs())
        .unwrap_or(0)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn owner_ids_name_this_process() {
        let me = owner_id();
        assert_eq!(owner_alive(me), Some(true));
        let host = hostname();
        // A pid that is not running, or running with another start time, is not the owner.
        assert_eq!(owner_alive(&format!("{host}:999999999:5")), Some(false));
        let pid = std::process::id();
        assert_eq!(owner_alive(&format!("{host}:{pid}:1")), Some(false));
        assert_eq!(owner_alive("another-host:1:1"), None);
    }
}

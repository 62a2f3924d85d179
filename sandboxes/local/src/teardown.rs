//! What a sandbox's own user leaves behind, found and removed: its processes (a `setsid` daemon
//! escapes the process group) and its files in the temporary folders every user shares.

use std::path::Path;

use nix::sys::signal::{kill, Signal};
use nix::unistd::Pid;

/// The folders every user may write to, where a program can leave files outside its sandbox.
const SHARED_TMP: [&str; 3] = ["/tmp", "/var/tmp", "/dev/shm"];

/// The real uid of process `pid`, from `/proc/PID/status`, when it is alive: a zombie has
/// already died (its parent has yet to reap it) and no signal changes that.
fn live_uid_of(pid: &str) -> Option<u32> {
    let status = std::fs::read_to_string(Path::new("/proc").join(pid).join("status")).ok()?;
    let field = |name: &str| {
        status
            .lines()
            .find_map(|l| l.strip_prefix(name))
            .and_then(|v| v.split_whitespace().next())
    };
    if matches!(field("State:"), Some("Z" | "X")) {
        return None;
    }
    field("Uid:").and_then(|v| v.parse().ok())
}

/// Live processes of `uid` (zombies left out).
pub fn processes_of(uid: u32) -> Vec<i32> {
    let Ok(entries) = std::fs::read_dir("/proc") else {
        return Vec::new();
    };
    entries
        .flatten()
        .filter_map(|e| e.file_name().into_string().ok())
        .filter(|name| name.bytes().all(|b| b.is_ascii_digit()))
        .filter(|name| live_uid_of(name) == Some(uid))
        .filter_map(|name| name.parse().ok())
        .collect()
}

/// How long teardown keeps killing a sandbox user's processes before it gives up (and says so).
/// A killed process leaves the process table only once the kernel has finished its exit, which
/// on a loaded machine (a process in the middle of file I/O) can take far longer than a sweep.
const KILL_DEADLINE: std::time::Duration = std::time::Duration::from_secs(10);

/// Kills every process of `uid`, again and again while new ones appear (a fork bomb forks
/// between two sweeps; its process limit bounds how many it can make) or old ones have yet to
/// finish dying, until none is left or [`KILL_DEADLINE`] has passed.
pub fn kill_user(uid: u32) {
    let start = std::time::Instant::now();
    let mut pause = std::time::Duration::from_millis(1);
    loop {
        let pids = processes_of(uid);
        if pids.is_empty() {
            return;
        }
        if start.elapsed() > KILL_DEADLINE {
            tracing::warn!(
                uid,
                left = pids.len(),
                "sandbox user still has processes after {} s of killing",
                KILL_DEADLINE.as_secs()
            );
            return;
        }
        for pid in pids {
            // ESRCH: it died in between, which is what we want.
            let _ = kill(Pid::from_raw(pid), Signal::SIGKILL);
        }
        std::thread::sleep(pause);
        pause = (pause * 2).min(std::time::Duration::from_millis(50));
    }
}

/// Removes what `uid` owns at the top of the shared temporary folders, but `keep` (the
/// sandbox's own working folder, removed by its owner).
pub fn remove_files_of(uid: u32, keep: &Path) {
    use std::os::unix::fs::MetadataExt;
    for dir in SHARED_TMP {
        let Ok(entries) = std::fs::read_dir(dir) else {
            continue;
        };
        for entry in entries.flatten() {
            let path = entry.path();
            if path == keep {
                continue;
            }
            let Ok(meta) = std::fs::symlink_metadata(&path) else {
                continue;
            };
            if meta.uid() != uid {
                continue;
            }
            let removed = if meta.is_dir() {
                std::fs::remove_dir_all(&path)
            } else {
                std::fs::remove_file(&path)
            };
            if let Err(e) = removed {
                tracing::warn!(path = %path.display(), "cannot remove what a sandbox left: {e}");
            }
        }
    }
}

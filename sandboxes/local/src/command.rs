//! The command lines a sandbox's runner starts with: bubblewrap's arguments (every
//! namespace, the system read-only, a private `/tmp`, the working folder), the runner's own
//! arguments, the scrubbed environment a command sees, and quoting for `/bin/sh`.

use std::ffi::OsString;
use std::path::{Path, PathBuf};
use std::sync::OnceLock;

/// Where, inside a view's namespace, its base and its own layer are mounted for a moment
/// (then covered).
const VIEW_BASE: &str = "/.trawl-base";

const VIEW_LAYER: &str = "/.trawl-layer";

/// The bubblewrap arguments: all namespaces, the system read-only, a private /tmp, the working
/// folder writable at its own path, the runner read-only at its own.
pub(crate) fn bwrap_args(
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
pub(crate) fn runner_args(
    runner: &Path,
    workdir: &Path,
    prlimit: &Path,
    view: bool,
) -> Vec<OsString> {
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
pub(crate) fn scrubbed_env(workdir: &Path) -> Vec<(&'static str, OsString)> {
    vec![
        ("PATH", "/usr/local/bin:/usr/bin:/bin".into()),
        ("HOME", workdir.as_os_str().to_os_string()),
        ("TMPDIR", "/tmp".into()),
        ("LANG", "C.UTF-8".into()),
        ("PYTHONDONTWRITEBYTECODE", "1".into()),
        ("PYTHONUNBUFFERED", "1".into()),
    ]
}

/// `s` as one word for `/bin/sh`.
pub(crate) fn sh_word(s: &std::ffi::OsStr) -> String {
    use std::os::unix::ffi::OsStrExt;
    let s = String::from_utf8_lossy(s.as_bytes());
    format!("'{}'", s.replace('\'', "'\\''"))
}

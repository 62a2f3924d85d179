//! What a test needs from the machine (a tool, a service, root), and what happens when it is
//! missing. No test passes because something it needs is absent:
//!
//! - under `cargo xtask test`, which installs what it can and sets `TRAWL_TEST_SKIPS` to a
//!   ledger file, a test that cannot run here appends one line to the ledger and returns; the
//!   run's summary counts and lists every such skip with its install step;
//! - anywhere else (a plain `cargo test`, or CI, where everything must be present) the test
//!   fails with a message that names the install step.

use std::io::Write;

/// The environment variable naming the skip ledger (`cargo xtask test` sets it).
pub const LEDGER_VAR: &str = "TRAWL_TEST_SKIPS";

/// Something a test needs and how to get it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Need {
    /// What is missing, in words ("bubblewrap namespaces").
    pub what: &'static str,
    /// The command or step that provides it ("apt-get install -y bubblewrap").
    pub install: &'static str,
}

/// Bubblewrap with working user namespaces, for the namespace sandboxes.
pub const BWRAP: Need = Need {
    what: "bubblewrap namespaces",
    install:
        "apt-get install -y bubblewrap (and a kernel that allows unprivileged user namespaces)",
};

/// Root: sandboxes get users of their own only when trawl runs as root.
pub const ROOT: Need = Need {
    what: "root (sandboxes get users of their own only as root)",
    install: "run the suite as root: sudo cargo xtask test",
};

/// Overlay mounts inside user namespaces, for copy-on-write views.
pub const OVERLAY: Need = Need {
    what: "overlay mounts in user namespaces",
    install: "a kernel that mounts overlayfs in user namespaces (Linux 5.11 or later)",
};

/// The Docker engine and the images `trawl swe build-images` makes.
pub const DOCKER_IMAGES: Need = Need {
    what: "a Docker engine with the SWE images",
    install: "start the Docker engine, then `trawl swe build-images` (cargo xtask test does both)",
};

/// The system Python with pytest, for the SWE environment's local-sandbox mode.
pub const SYSTEM_PYTEST: Need = Need {
    what: "/usr/bin/python3 with pytest",
    install: "apt-get install -y python3 python3-pytest",
};

/// Whether `/usr/bin/python3` imports pytest (the local sandbox runs repositories' tests with
/// it). When it does not, [`missing`] is called with `why`, and the test returns on `false`.
pub fn system_pytest(why: &str) -> bool {
    let ok = std::process::Command::new("/usr/bin/python3")
        .args(["-c", "import pytest"])
        .output()
        .is_ok_and(|o| o.status.success());
    if !ok {
        missing(SYSTEM_PYTEST, why);
    }
    ok
}

/// Says that the calling test cannot run here because `need` is missing. Under
/// `cargo xtask test` outside CI it records a skip (with `detail`, why exactly) and returns, and
/// the caller returns too; otherwise it panics, naming the install step.
pub fn missing(need: Need, detail: &str) {
    let test = std::thread::current()
        .name()
        .unwrap_or("(unnamed test)")
        .to_string();
    let binary = std::env::current_exe()
        .ok()
        .and_then(|p| p.file_name().map(|n| n.to_string_lossy().into_owned()))
        .map(|n| n.rsplit_once('-').map_or(n.clone(), |(b, _)| b.to_string()))
        .unwrap_or_default();
    let ledger = std::env::var_os(LEDGER_VAR).filter(|v| !v.is_empty());
    let ci = std::env::var_os("CI").is_some_and(|v| !v.is_empty() && v != "false");
    let detail = detail.replace(['\t', '\n'], " ");
    match ledger {
        Some(path) if !ci => {
            let line = format!(
                "{binary}\t{test}\t{}\t{}\t{detail}\n",
                need.what, need.install
            );
            // One short append per skip: O_APPEND keeps concurrent test processes' lines whole.
            let written = std::fs::OpenOptions::new()
                .create(true)
                .append(true)
                .open(&path)
                .and_then(|mut f| f.write_all(line.as_bytes()));
            if let Err(e) = written {
                panic!(
                    "{test} needs {} and cannot record its skip in {}: {e}",
                    need.what,
                    std::path::Path::new(&path).display()
                );
            }
            eprintln!(
                "skipped: {test} needs {} ({detail}); {}",
                need.what, need.install
            );
        }
        _ => panic!(
            "this test needs {}, which is missing here ({detail}).\n  install: {}\n  \
             (`cargo xtask test` installs what the suite needs, and counts a test that still \
             cannot run as skipped; under CI nothing may be missing)",
            need.what, need.install
        ),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// One test, so that nothing else in this binary sees the variables it changes.
    #[test]
    fn a_missing_need_fails_without_a_ledger_and_is_recorded_with_one() {
        let saved: Vec<_> = [LEDGER_VAR, "CI"]
            .iter()
            .map(|v| (*v, std::env::var_os(v)))
            .collect();
        std::env::remove_var(LEDGER_VAR);
        std::env::remove_var("CI");
        let failed = std::panic::catch_unwind(|| missing(SYSTEM_PYTEST, "no /usr/bin/python3"));
        let message = failed
            .expect_err("without a ledger a missing need fails the test")
            .downcast_ref::<String>()
            .cloned()
            .unwrap_or_default();
        assert!(
            message.contains("apt-get install -y python3 python3-pytest"),
            "{message}"
        );

        let dir = std::env::temp_dir().join(format!("trawl-needs-{}", std::process::id()));
        std::fs::create_dir_all(&dir).expect("a temporary folder");
        let ledger = dir.join("skips.tsv");
        std::env::set_var(LEDGER_VAR, &ledger);
        missing(SYSTEM_PYTEST, "no /usr/bin/python3");
        let lines = std::fs::read_to_string(&ledger).expect("the ledger was written");
        let fields: Vec<&str> = lines.trim_end().split('\t').collect();
        assert_eq!(fields.len(), 5, "{lines:?}");
        assert!(fields[1].contains("a_missing_need"), "{lines:?}");
        assert_eq!(fields[2], SYSTEM_PYTEST.what);

        std::env::set_var("CI", "true");
        let under_ci = std::panic::catch_unwind(|| missing(SYSTEM_PYTEST, "no python"));
        assert!(
            under_ci.is_err(),
            "under CI a missing need fails even with a ledger"
        );
        let _ = std::fs::remove_dir_all(&dir);
        for (var, value) in saved {
            match value {
                Some(v) => std::env::set_var(var, v),
                None => std::env::remove_var(var),
            }
        }
    }
}

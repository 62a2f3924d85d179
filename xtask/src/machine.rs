//! What the suite needs from the machine, and getting it: Debian packages (installed when this
//! runs as root; otherwise the exact command is printed and the tests that need them are
//! counted as skipped) and a running Docker engine. The build itself needs none of these: its
//! tools come from `toolchain/`.

use std::path::Path;
use std::process::{Command, Stdio};
use std::time::Duration;

/// A program or module the tests use, and the Debian package that provides it.
pub struct Requirement {
    /// What it is for, in words.
    pub what: &'static str,
    /// The Debian packages that provide it.
    pub packages: &'static [&'static str],
    present: fn() -> bool,
}

/// Everything the suite uses beyond the kind's defaults (Rust, gcc, python3 with pip, git,
/// Docker).
pub const REQUIREMENTS: &[Requirement] = &[
    Requirement {
        what: "bubblewrap, for the namespace sandboxes",
        packages: &["bubblewrap"],
        present: || on_path("bwrap"),
    },
    Requirement {
        what: "util-linux's prlimit, for sandbox limits",
        packages: &["util-linux"],
        present: || on_path("prlimit"),
    },
    Requirement {
        what: "the system python3 with pytest, for the SWE local sandbox",
        packages: &["python3", "python3-pytest"],
        present: || succeeds("/usr/bin/python3", &["-c", "import pytest"]),
    },
    Requirement {
        what: "python3 -m venv, for the test virtualenvs",
        packages: &["python3-venv"],
        present: || succeeds("python3", &["-c", "import ensurepip, venv"]),
    },
    Requirement {
        what: "debootstrap, for the SWE base image",
        packages: &["debootstrap"],
        present: || Path::new("/usr/sbin/debootstrap").exists() || on_path("debootstrap"),
    },
    Requirement {
        what: "git, for the SWE repositories",
        packages: &["git"],
        present: || on_path("git"),
    },
    Requirement {
        what: "chromium, for the browser tests",
        packages: &["chromium"],
        present: || on_path("chromium") || on_path("chromium-browser"),
    },
];

/// Whether `program` is an executable file on PATH.
pub fn on_path(program: &str) -> bool {
    std::env::var_os("PATH").is_some_and(|path| {
        std::env::split_paths(&path).any(|dir| {
            let p = dir.join(program);
            p.metadata().is_ok_and(|m| {
                m.is_file()
                    && std::os::unix::fs::PermissionsExt::mode(&m.permissions()) & 0o111 != 0
            })
        })
    })
}

/// Whether `program args` runs and exits 0 (its output dropped).
pub fn succeeds(program: &str, args: &[&str]) -> bool {
    Command::new(program)
        .args(args)
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .status()
        .is_ok_and(|s| s.success())
}

pub fn is_root() -> bool {
    std::fs::read_to_string("/proc/self/status").is_ok_and(|s| {
        s.lines()
            .any(|l| l.starts_with("Uid:") && l.split_whitespace().nth(1) == Some("0"))
    })
}

/// Whether this is a CI run (`CI` set, as GitHub, GitLab and `.ci/run` set it).
pub fn under_ci() -> bool {
    std::env::var("CI").is_ok_and(|v| !v.is_empty() && v != "false")
}

/// The Debian packages missing here (each once, in order).
pub fn missing_packages() -> Vec<&'static str> {
    let mut out: Vec<&'static str> = Vec::new();
    for r in REQUIREMENTS {
        if !(r.present)() {
            eprintln!("  missing: {}", r.what);
            for p in r.packages {
                if !out.contains(p) {
                    out.push(p);
                }
            }
        }
    }
    out
}

/// Installs the missing packages when this runs as root with apt-get; otherwise prints the
/// command. Returns the packages still missing afterwards.
pub fn install_packages() -> Result<Vec<&'static str>, String> {
    let missing = missing_packages();
    if missing.is_empty() {
        eprintln!("  every package the suite uses is installed");
        return Ok(missing);
    }
    let list = missing.join(" ");
    if !is_root() || !on_path("apt-get") {
        eprintln!(
            "  not installing ({}); to run every test, install them first:\n    sudo apt-get install -y {list}\n  \
             until then the tests that need them are counted as skipped",
            if on_path("apt-get") { "not root" } else { "no apt-get" }
        );
        return Ok(missing);
    }
    eprintln!("  apt-get install -y {list}");
    let apt = |args: &[&str]| -> Result<(), String> {
        let out = Command::new("apt-get")
            .args(args)
            .env("DEBIAN_FRONTEND", "noninteractive")
            .stdin(Stdio::null())
            .output()
            .map_err(|e| format!("cannot run apt-get: {e}"))?;
        if out.status.success() {
            Ok(())
        } else {
            Err(format!(
                "apt-get {} failed:\n{}{}",
                args.join(" "),
                String::from_utf8_lossy(&out.stdout),
                String::from_utf8_lossy(&out.stderr)
            ))
        }
    };
    apt(&["update", "-qq"])?;
    let mut args = vec!["install", "-y", "-qq"];
    args.extend(missing.iter().copied());
    apt(&args)?;
    let still = missing_packages();
    if !still.is_empty() {
        return Err(format!(
            "still missing after apt-get install: {}",
            still.join(" ")
        ));
    }
    Ok(still)
}

/// Whether the Docker engine answers.
pub fn docker_answers() -> bool {
    succeeds("docker", &["info"])
}

/// Starts the Docker engine when it is installed but not answering and this runs as root
/// (service manager first, else `dockerd` in the background). Returns whether it answers.
pub fn start_docker() -> bool {
    if docker_answers() {
        return true;
    }
    if !on_path("docker") {
        eprintln!("  no docker CLI here: the Docker tests are counted as skipped");
        return false;
    }
    if !is_root() {
        eprintln!(
            "  the Docker engine does not answer; start it (sudo systemctl start docker) or \
             give this user its socket: the Docker tests are counted as skipped until then"
        );
        return false;
    }
    eprintln!("  starting the Docker engine");
    let started =
        succeeds("systemctl", &["start", "docker"]) || succeeds("service", &["docker", "start"]);
    if !started && on_path("dockerd") {
        let _ = std::fs::remove_file("/var/run/docker.pid");
        let log = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open("/var/log/docker.log");
        let mut cmd = Command::new("setsid");
        cmd.args(["dockerd", "-p", "/var/run/docker.pid"])
            .stdin(Stdio::null());
        if let Ok(log) = log {
            if let Ok(err) = log.try_clone() {
                cmd.stdout(log).stderr(err);
            }
        }
        if let Err(e) = cmd.spawn() {
            eprintln!("  cannot start dockerd: {e}");
        }
    }
    for _ in 0..60 {
        if docker_answers() {
            return true;
        }
        std::thread::sleep(Duration::from_secs(1));
    }
    eprintln!("  the Docker engine did not answer within 60 s (see /var/log/docker.log)");
    false
}

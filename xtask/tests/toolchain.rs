//! The build-tool stand-ins in `toolchain/bin` (named by `.cargo/config.toml`), run for real
//! with python3 on machines the tests make up: a PATH holding only the tools each case gives it,
//! a trawl cache that is empty or already filled, and no package index (so nothing can be
//! fetched, and a case that would fetch fails).

#![allow(clippy::unwrap_used)] // a test: a failed unwrap is a failed test

use std::os::unix::fs::{symlink, PermissionsExt};
use std::path::{Path, PathBuf};
use std::process::{Command, Output};

fn repo() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .unwrap()
        .to_path_buf()
}

/// A machine made up for one case: its own PATH folder, cache and system root.
struct Machine {
    dir: tempfile::TempDir,
}

impl Machine {
    /// A PATH with python3, dirname, cc and make only (no cmake, clang or llvm-config).
    fn new() -> Machine {
        let m = Machine {
            dir: tempfile::tempdir().unwrap(),
        };
        for sub in ["bin", "home", "root", "empty"] {
            std::fs::create_dir_all(m.dir.path().join(sub)).unwrap();
        }
        let python = String::from_utf8(
            Command::new("python3")
                .args(["-c", "import sys; print(sys.executable)"])
                .output()
                .unwrap()
                .stdout,
        )
        .unwrap();
        m.link("python3", Path::new(python.trim()));
        for tool in ["dirname", "cc", "make"] {
            m.link(tool, &which(tool));
        }
        m
    }

    fn link(&self, name: &str, target: &Path) {
        symlink(target, self.dir.path().join("bin").join(name)).unwrap();
    }

    /// An executable script at `rel` under the machine's folder.
    fn script(&self, rel: &str, body: &str) {
        let path = self.dir.path().join(rel);
        std::fs::create_dir_all(path.parent().unwrap()).unwrap();
        std::fs::write(&path, format!("#!/bin/sh\n{body}\n")).unwrap();
        std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o755)).unwrap();
    }

    /// A system `cmake` on PATH that says it is `version` and echoes what it was asked.
    fn system_cmake(&self, version: &str) {
        self.script(
            "bin/cmake",
            &format!(
                "if [ \"$1\" = --version ]; then echo 'cmake version {version}'; \
                 else echo \"system cmake: $*\"; fi"
            ),
        );
    }

    /// The trawl cache already holding the CMake wheel, as a first build leaves it.
    fn cached_cmake_wheel(&self) {
        let dest = "home/toolchain/cmake-4.4.5";
        self.script(
            &format!("{dest}/cmake/data/bin/cmake"),
            "echo \"wheel cmake: $*\"",
        );
        std::fs::write(
            self.dir.path().join(dest).join(".trawl-complete"),
            "cmake==4.4.5\n",
        )
        .unwrap();
    }

    /// The trawl cache already holding the libclang wheel, arranged as the stand-in leaves it.
    fn cached_libclang_wheel(&self) -> PathBuf {
        let dest = self.dir.path().join("home/toolchain/libclang-18.1.1");
        std::fs::create_dir_all(dest.join("lib")).unwrap();
        std::fs::write(dest.join("lib/libclang.so"), b"").unwrap();
        std::fs::write(dest.join(".trawl-complete"), "libclang==18.1.1\n").unwrap();
        dest
    }

    /// Runs stand-in `tool` with `args` on this machine, with no package index reachable.
    fn run(&self, tool: &str, args: &[&str]) -> Output {
        let d = self.dir.path();
        Command::new(repo().join("toolchain/bin").join(tool))
            .args(args)
            .env_clear()
            .env("PATH", d.join("bin"))
            .env("HOME", d.join("home"))
            .env("TRAWL_HOME", d.join("home"))
            .env("TRAWL_TOOLCHAIN_ROOT", d.join("root"))
            .env("PIP_NO_INDEX", "1")
            .env("PIP_FIND_LINKS", d.join("empty"))
            .env("PIP_CONFIG_FILE", "/dev/null")
            .output()
            .unwrap()
    }
}

fn which(tool: &str) -> PathBuf {
    let out = Command::new("sh")
        .args(["-c", &format!("command -v {tool}")])
        .output()
        .unwrap();
    let path = String::from_utf8(out.stdout).unwrap().trim().to_string();
    assert!(
        !path.is_empty(),
        "{tool} is not installed; the machine's defaults include it (gcc, make, coreutils)"
    );
    PathBuf::from(path)
}

fn text(out: &Output) -> (String, String) {
    (
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

#[test]
fn the_machines_own_cmake_is_used_when_it_is_new_enough() {
    let m = Machine::new();
    m.system_cmake("3.25.1");
    m.cached_cmake_wheel();
    let out = m.run("cmake", &["--build", "x"]);
    let (stdout, stderr) = text(&out);
    assert!(out.status.success(), "{stderr}");
    assert_eq!(stdout.trim(), "system cmake: --build x");
}

#[test]
fn an_old_cmake_is_passed_over_for_the_cached_wheel_with_no_network() {
    let m = Machine::new();
    m.system_cmake("3.10.2");
    m.cached_cmake_wheel();
    let out = m.run("cmake", &["-S", "src", "-B", "build"]);
    let (stdout, stderr) = text(&out);
    assert!(out.status.success(), "{stderr}");
    assert_eq!(stdout.trim(), "wheel cmake: -S src -B build");
}

#[test]
fn a_tool_that_is_neither_here_nor_fetchable_fails_naming_what_to_install() {
    let m = Machine::new();
    let out = m.run("cmake", &["--version"]);
    let (_, stderr) = text(&out);
    assert_eq!(out.status.code(), Some(1), "{stderr}");
    assert!(stderr.contains("fetching cmake==4.4.5 failed"), "{stderr}");
    assert!(
        stderr.contains("apt-get install -y cmake libclang-dev"),
        "{stderr}"
    );
    // Nothing half-fetched is left to be taken for a complete wheel next time.
    assert!(!m
        .dir
        .path()
        .join("home/toolchain/cmake-4.4.5/.trawl-complete")
        .exists());
}

#[test]
fn llvm_config_points_at_the_cached_libclang_when_the_machine_has_none() {
    let m = Machine::new();
    let prefix = m.cached_libclang_wheel();
    let out = m.run("llvm-config", &["--prefix"]);
    let (stdout, stderr) = text(&out);
    assert!(out.status.success(), "{stderr}");
    assert_eq!(Path::new(stdout.trim()), prefix);
    let out = m.run("llvm-config", &["--libdir"]);
    assert_eq!(Path::new(text(&out).0.trim()), prefix.join("lib"));
}

#[test]
fn the_machines_own_libclang_wins_and_nothing_is_fetched() {
    let m = Machine::new();
    let lib = m.dir.path().join("root/usr/lib/llvm-16/lib");
    std::fs::create_dir_all(&lib).unwrap();
    std::fs::write(lib.join("libclang.so.1"), b"").unwrap();
    // No llvm-config on PATH: the stand-in says nothing, and clang-sys searches the usual
    // folders itself, as it did before the stand-ins existed.
    let out = m.run("llvm-config", &["--prefix"]);
    let (stdout, stderr) = text(&out);
    assert_eq!(out.status.code(), Some(1), "{stderr}");
    assert_eq!(stdout, "");
    assert!(!stderr.contains("fetching"), "{stderr}");
    assert!(!m.dir.path().join("home/toolchain").exists());
}

#[test]
fn clang_answers_bindgens_include_path_query_with_the_c_compiler() {
    let m = Machine::new();
    m.cached_libclang_wheel();
    let out = m.run("clang", &["-E", "-x", "c", "-", "-v"]);
    let (_, stderr) = text(&out);
    assert!(out.status.success(), "{stderr}");
    // The compiler's include search list, with the folder of stddef.h that the wheel's
    // libclang lacks.
    assert!(
        stderr.contains("#include <...> search starts here:"),
        "{stderr}"
    );
    let listed: Vec<&str> = stderr
        .lines()
        .skip_while(|l| !l.starts_with("#include <...>"))
        .skip(1)
        .take_while(|l| l.starts_with(' '))
        .map(str::trim)
        .collect();
    assert!(
        listed
            .iter()
            .any(|d| Path::new(d).join("stddef.h").exists()),
        "no listed folder holds stddef.h: {listed:?}"
    );
}

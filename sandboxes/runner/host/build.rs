//! Builds `trawl-sandbox-runner` (the crate one folder up) for the target, with a cargo of its
//! own in this build's output folder, so that the library can carry it: every program that links
//! a sandbox, trawl and the test binaries alike, has the runner its sandboxes start, built from
//! the same source.

use std::path::PathBuf;
use std::process::Command;

fn main() {
    let manifest = PathBuf::from(std::env::var_os("CARGO_MANIFEST_DIR").expect("cargo sets it"));
    let runner = manifest.join("..");
    for watched in ["Cargo.toml", "src"] {
        println!("cargo:rerun-if-changed={}", runner.join(watched).display());
    }
    let out = PathBuf::from(std::env::var_os("OUT_DIR").expect("cargo sets it"));
    let target_dir = out.join("runner-target");
    let target = std::env::var("TARGET").expect("cargo sets it");
    let host = std::env::var("HOST").expect("cargo sets it");
    let cargo = std::env::var_os("CARGO").unwrap_or_else(|| "cargo".into());
    let mut cmd = Command::new(cargo);
    cmd.arg("build")
        .arg("--release")
        .arg("--manifest-path")
        .arg(runner.join("Cargo.toml"))
        .args(["--bin", "trawl-sandbox-runner", "--target-dir"])
        .arg(&target_dir);
    if target != host {
        cmd.args(["--target", &target]);
    }
    // A small, stripped binary; a wrapper of the outer build (clippy's driver) is not wanted
    // for it.
    // Linked statically, so that it also runs inside containers whatever their C library.
    let mut flags = std::env::var("CARGO_ENCODED_RUSTFLAGS").unwrap_or_default();
    if !flags.is_empty() {
        flags.push('\x1f');
    }
    flags.push_str("-Ctarget-feature=+crt-static");
    cmd.env("CARGO_ENCODED_RUSTFLAGS", flags)
        .env_remove("RUSTFLAGS")
        .env("CARGO_PROFILE_RELEASE_DEBUG", "false")
        .env("CARGO_PROFILE_RELEASE_STRIP", "true")
        .env("CARGO_PROFILE_RELEASE_CODEGEN_UNITS", "16")
        .env_remove("RUSTC_WORKSPACE_WRAPPER")
        .env_remove("CARGO_TARGET_DIR")
        .env_remove("CARGO_BUILD_TARGET");
    let status = cmd
        .status()
        .expect("cannot run cargo to build trawl-sandbox-runner");
    assert!(
        status.success(),
        "building trawl-sandbox-runner failed: {status}"
    );
    let built = if target != host {
        target_dir.join(&target).join("release")
    } else {
        target_dir.join("release")
    }
    .join("trawl-sandbox-runner");
    let dest = out.join("trawl-sandbox-runner");
    std::fs::copy(&built, &dest).expect("cannot copy the runner");
    println!(
        "cargo:rustc-env=TRAWL_SANDBOX_RUNNER_BIN={}",
        dest.display()
    );
}

//! What the tests use that takes long to make, made once before they start: the test
//! virtualenvs (`tests/python/venv.py`, keyed by their pinned requirement files) and the SWE
//! images (`trawl swe build-images`, keyed by what goes into them). Both are remade only when
//! what defines them changes, so a second run spends seconds here.

use std::path::Path;
use std::process::{Command, Stdio};

/// Makes every test virtualenv (network and pip, little CPU: it runs beside the build).
pub fn venvs(root: &Path) -> Result<(), String> {
    if !crate::machine::succeeds("python3", &["-c", "import ensurepip, venv"]) {
        return Err(
            "python3 cannot make virtualenvs (Debian: apt-get install -y python3-venv)".into(),
        );
    }
    let out = Command::new("python3")
        .arg(root.join("tests/python/venv.py"))
        .arg("--all")
        .stdin(Stdio::null())
        .output()
        .map_err(|e| format!("cannot run python3: {e}"))?;
    if out.status.success() {
        Ok(())
    } else {
        Err(format!(
            "tests/python/venv.py --all failed:\n{}",
            String::from_utf8_lossy(&out.stderr)
        ))
    }
}

/// The plugin crates the tests load as shared libraries (`tests/plugin-packages.txt`), built
/// with the command `trawl_tests::plugin_libraries` runs, so that the tests find them built.
pub fn plugin_build_args(root: &Path) -> Result<Vec<String>, String> {
    let list = root.join("tests/plugin-packages.txt");
    let text = std::fs::read_to_string(&list)
        .map_err(|e| format!("cannot read {}: {e}", list.display()))?;
    let mut args = vec!["build".to_string(), "--locked".to_string()];
    for p in text
        .lines()
        .map(str::trim)
        .filter(|l| !l.is_empty() && !l.starts_with('#'))
    {
        args.extend(["-p".to_string(), p.to_string()]);
    }
    Ok(args)
}

/// Builds the SWE images with the trawl binary the test build made.
pub fn swe_images(trawl: &Path) -> Result<(), String> {
    let status = Command::new(trawl)
        .args(["swe", "build-images"])
        .stdin(Stdio::null())
        .status()
        .map_err(|e| format!("cannot run {}: {e}", trawl.display()))?;
    if status.success() {
        Ok(())
    } else {
        Err(format!(
            "{} swe build-images failed ({status})",
            trawl.display()
        ))
    }
}

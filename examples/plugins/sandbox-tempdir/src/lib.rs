//! An example sandbox-backend plugin: `tempdir`. Each sandbox is a fresh temporary folder;
//! commands run there as plain processes under `prlimit` (CPU, memory, processes, file size,
//! open files) and GNU `timeout` (wall clock, killing the command's whole process group).
//!
//! It does NOT isolate: commands see the host's files and network. It exists to show how a
//! backend is written and that environments run on any backend unchanged; use it for trusted
//! code only. The config must say so:
//!
//! ```toml
//! [[environments]]
//! type = "code"
//! sandbox = { type = "tempdir", trusted_code_only = true }
//! ```

use std::path::{Component, Path, PathBuf};
use std::sync::Arc;
use std::time::Instant;

use serde::Deserialize;
use trawl_core::async_trait;
use trawl_core::registry::{BuildContext, ComponentError, SandboxConfig};
use trawl_core::sandbox::{
    classify_exit, ExecLimits, ExecOutcome, ExecResult, Sandbox, SandboxBackend, SandboxError,
    SandboxSpec,
};

trawl_plugin_abi::declare_plugin!();

/// `sandbox = { type = "tempdir", trusted_code_only = true }`.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TempdirConfig {
    /// Must be `true`: this backend does not isolate commands from the host.
    #[serde(default)]
    pub trusted_code_only: bool,
    /// Where the temporary folders go (the system's temporary folder when unset).
    #[serde(default)]
    pub parent: Option<String>,
}

impl SandboxConfig for TempdirConfig {
    fn build(self, cx: &BuildContext) -> Result<Arc<dyn SandboxBackend>, ComponentError> {
        if !self.trusted_code_only {
            return Err(ComponentError::at(
                "trusted_code_only",
                "the tempdir backend runs commands as plain processes that can read the host's files and use its network; set `trusted_code_only = true` to say the code is trusted, or use `local` or `docker`",
            ));
        }
        for tool in ["prlimit", "timeout"] {
            if !on_path(tool) {
                return Err(ComponentError::new(format!(
                    "the tempdir backend needs `{tool}` on PATH (Debian: util-linux and coreutils)"
                )));
            }
        }
        Ok(Arc::new(Tempdir {
            parent: self.parent.map(|p| cx.resolve(&p)),
        }))
    }
}

trawl_core::register!(
    sandbox,
    "tempdir",
    "Plain processes in a temporary folder, rlimits and a wall-clock limit; no isolation (example)",
    TempdirConfig
);

fn on_path(tool: &str) -> bool {
    std::env::var_os("PATH")
        .is_some_and(|p| std::env::split_paths(&p).any(|d| d.join(tool).is_file()))
}

pub struct Tempdir {
    parent: Option<PathBuf>,
}

#[async_trait]
impl SandboxBackend for Tempdir {
    fn describe(&self) -> serde_json::Value {
        serde_json::json!({ "backend": "tempdir", "isolation": "none", "limits": "prlimit + timeout" })
    }

    async fn create(&self, _: &SandboxSpec) -> Result<Box<dyn Sandbox>, SandboxError> {
        let mut b = tempfile::Builder::new();
        b.prefix("trawl-tempdir-");
        let dir = match &self.parent {
            Some(p) => b.tempdir_in(p),
            None => b.tempdir(),
        }
        .map_err(|e| SandboxError::Infra(format!("cannot make a temporary folder: {e}")))?;
        Ok(Box::new(
            TempdirSandbox {
                dir: std::sync::Mutex::new(Some(dir)),
                root: PathBuf::new(),
            }
            .rooted(),
        ))
    }
}

struct TempdirSandbox {
    /// Removed when the sandbox closes or is dropped.
    dir: std::sync::Mutex<Option<tempfile::TempDir>>,
    root: PathBuf,
}

impl TempdirSandbox {
    fn rooted(mut self) -> Self {
        self.root = self
            .dir
            .lock()
            .ok()
            .and_then(|d| d.as_ref().map(|d| d.path().to_path_buf()))
            .unwrap_or_default();
        self
    }

    /// `path` inside the folder: relative, without `..`, or absolute under it.
    fn inside(&self, path: &str) -> Result<PathBuf, SandboxError> {
        let p = Path::new(path);
        let rel = if p.is_absolute() {
            p.strip_prefix(&self.root)
                .map_err(|_| SandboxError::OutsidePath(path.into()))?
        } else {
            p
        };
        if rel
            .components()
            .any(|c| !matches!(c, Component::Normal(_) | Component::CurDir))
        {
            return Err(SandboxError::OutsidePath(path.into()));
        }
        Ok(self.root.join(rel))
    }
}

/// Keeps the first `cap` bytes of a stream as text.
fn capped(bytes: &[u8], cap: usize) -> (String, bool) {
    let kept = &bytes[..bytes.len().min(cap)];
    (
        String::from_utf8_lossy(kept).into_owned(),
        bytes.len() > cap,
    )
}

#[async_trait]
impl Sandbox for TempdirSandbox {
    async fn exec(&self, command: &str, limits: &ExecLimits) -> Result<ExecResult, SandboxError> {
        let wall = limits.wall_time();
        let mut cmd = tokio::process::Command::new("prlimit");
        cmd.arg(format!("--cpu={}", limits.cpu_secs))
            .arg(format!("--as={}", limits.memory_mb << 20))
            .arg(format!("--nproc={}", limits.processes))
            .arg(format!("--fsize={}", limits.file_size_mb << 20))
            .arg(format!("--nofile={}", limits.open_files))
            .args(["timeout", "--signal=KILL"])
            .arg(format!("{:.3}", wall.as_secs_f64()))
            .args(["sh", "-c", command])
            .current_dir(&self.root)
            .env("HOME", &self.root)
            .stdin(std::process::Stdio::null())
            .kill_on_drop(true);
        let started = Instant::now();
        let out = cmd
            .output()
            .await
            .map_err(|e| SandboxError::Infra(format!("cannot start prlimit: {e}")))?;
        let elapsed = started.elapsed();
        let (stdout, stdout_truncated) = capped(&out.stdout, limits.output_bytes);
        let (stderr, stderr_truncated) = capped(&out.stderr, limits.output_bytes);
        use std::os::unix::process::ExitStatusExt;
        let (code, signal) = (out.status.code(), out.status.signal());
        // `timeout` kills its whole process group, itself included, once the limit passed: it
        // ends by SIGKILL (or exits 124 or 137).
        let timed_out = elapsed >= wall && (signal == Some(9) || matches!(code, Some(124 | 137)));
        let outcome = if timed_out {
            ExecOutcome::TimedOut
        } else {
            classify_exit(signal, code, &stderr)
        };
        Ok(ExecResult {
            outcome,
            stdout,
            stderr,
            stdout_truncated,
            stderr_truncated,
            duration_ms: elapsed.as_millis() as u64,
        })
    }

    async fn read_file(&self, path: &str) -> Result<Vec<u8>, SandboxError> {
        let p = self.inside(path)?;
        tokio::fs::read(&p)
            .await
            .map_err(|e| SandboxError::Infra(format!("cannot read {path}: {e}")))
    }

    async fn write_file(&self, path: &str, contents: &[u8]) -> Result<(), SandboxError> {
        let p = self.inside(path)?;
        if let Some(parent) = p.parent() {
            tokio::fs::create_dir_all(parent).await.map_err(|e| {
                SandboxError::Infra(format!("cannot make {}: {e}", parent.display()))
            })?;
        }
        tokio::fs::write(&p, contents)
            .await
            .map_err(|e| SandboxError::Infra(format!("cannot write {path}: {e}")))
    }

    async fn close(&self) -> Result<(), SandboxError> {
        let dir = self.dir.lock().ok().and_then(|mut d| d.take());
        if let Some(d) = dir {
            d.close()
                .map_err(|e| SandboxError::Infra(format!("cannot remove the folder: {e}")))?;
        }
        Ok(())
    }

    fn working_dir(&self) -> String {
        self.root.to_string_lossy().into_owned()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use trawl_core::registry::parse_settings;

    fn backend(settings: serde_json::Value) -> Result<Arc<dyn SandboxBackend>, ComponentError> {
        parse_settings::<TempdirConfig>(&settings)?.build(&BuildContext::default())
    }

    #[test]
    fn it_must_be_told_the_code_is_trusted() {
        let e = backend(serde_json::json!({})).err().unwrap();
        assert_eq!(e.path, ["trusted_code_only"]);
    }

    #[tokio::test]
    async fn commands_files_limits_and_paths() {
        let b = backend(serde_json::json!({ "trusted_code_only": true })).unwrap();
        let s = b.create(&SandboxSpec::default()).await.unwrap();
        s.write_file("sub/a.txt", b"hello").await.unwrap();
        let r = s
            .exec(
                "cat sub/a.txt; echo oops >&2; exit 3",
                &ExecLimits::default(),
            )
            .await
            .unwrap();
        assert_eq!(r.outcome, ExecOutcome::Exited { code: 3 });
        assert_eq!((r.stdout.as_str(), r.stderr.as_str()), ("hello", "oops\n"));
        let limits = ExecLimits {
            wall_time_secs: 0.5,
            ..ExecLimits::default()
        };
        let r = s.exec("sleep 5 & sleep 5", &limits).await.unwrap();
        assert_eq!(r.outcome, ExecOutcome::TimedOut);
        assert!(r.duration_ms < 4000, "{}", r.duration_ms);
        for bad in ["../x", "/etc/passwd"] {
            assert!(
                matches!(s.read_file(bad).await, Err(SandboxError::OutsidePath(_))),
                "{bad}"
            );
        }
        let root = PathBuf::from(s.working_dir());
        assert!(root.is_dir());
        s.close().await.unwrap();
        assert!(!root.exists());
    }
}

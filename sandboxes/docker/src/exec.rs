//! The `Sandbox` trait for a container: each command sent to its runner session under the
//! limits policy (grace, working-folder cap, the container's cgroup counters), files read and
//! written, snapshots and closing.

use std::sync::atomic::Ordering;
use std::time::{Duration, Instant};

use trawl_core::async_trait;
use trawl_core::sandbox::{ExecLimits, ExecResult, Sandbox, SandboxError, Snapshot};
use trawl_sandbox_runner_host::Policy;

use crate::engine::infra;
use crate::sandbox::DockerSandbox;
use crate::session;
use crate::snapshots::RUNNER_INSIDE;
use crate::transfer::tar_one_file;

/// The environment commands run with.
fn exec_env() -> Vec<String> {
    vec![
        "PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin".into(),
        "HOME=/root".into(),
        "LANG=C.UTF-8".into(),
        "PAGER=cat".into(),
        "GIT_PAGER=cat".into(),
    ]
}

/// Largest file `read_file` brings back.
const MAX_READ_BYTES: usize = 256 << 20;

#[async_trait]
impl Sandbox for DockerSandbox {
    async fn exec(&self, command: &str, limits: &ExecLimits) -> Result<ExecResult, SandboxError> {
        if self.is_closed() {
            return Err(SandboxError::Infra("the sandbox is closed".into()));
        }
        let c = &self.factory.config;
        // The runner puts the command in its own process group, stops it (SIGTERM, then
        // SIGKILL after the grace) when it runs out of time, floods its output or fills the
        // working folder, and kills what it left running in the background once it ends, so
        // nothing outlives the call or holds its output open. The container bounds memory and
        // processes; the runner reads the container's own cgroup counters (v2 at the top of
        // /sys/fs/cgroup, v1 in a folder per controller) around each command, so an OOM kill
        // or a refused fork is seen even when the command caught it.
        let policy = Policy {
            grace: trawl_core::values::secs(c.kill_grace_secs),
            drain: Duration::from_secs(2),
            disk_cap: c.workdir_mb.map(|mb| mb.saturating_mul(1 << 20)),
            kill_all: false,
            processes: false,
            memory: false,
            watch_full: std::iter::once("/dev/shm")
                .chain(c.tmp_mb.map(|_| "/tmp"))
                .map(std::path::PathBuf::from)
                .collect(),
            shared_tmp: None,
            cgroups: [
                "/sys/fs/cgroup",
                "/sys/fs/cgroup/pids",
                "/sys/fs/cgroup/memory",
            ]
            .into_iter()
            .map(std::path::PathBuf::from)
            .collect(),
        };
        let request = trawl_sandbox_runner_host::request(command, limits, &policy);
        let started = Instant::now();
        let mut slot = self.session.lock().await;
        if slot.is_none() {
            *slot = Some(self.start_session(exec_env(), self.factory.api()).await?);
        }
        // Dropped mid-call (a cancelled episode) or failed, the session is dropped: its exec's
        // stdin closes and the runner kills the command. The next command starts a new one.
        let mut call = InFlight {
            slot: &mut slot,
            done: false,
        };
        let Some(session) = call.slot.as_mut() else {
            return Err(SandboxError::Infra("the sandbox runner is gone".into()));
        };
        let reply = session.call(&request).await?;
        call.done = true;
        drop(call);
        drop(slot);
        trawl_sandbox_runner_host::result(reply, started)
    }

    async fn read_file(&self, path: &str) -> Result<Vec<u8>, SandboxError> {
        let full = self.absolute(path);
        let tar = self.download_tar(&full, MAX_READ_BYTES).await?;
        let mut archive = tar::Archive::new(tar.as_slice());
        let entries = archive
            .entries()
            .map_err(|e| infra("reading a copied file", e))?;
        for entry in entries {
            let mut entry = entry.map_err(|e| infra("reading a copied file", e))?;
            if entry.header().entry_type().is_file() {
                let mut data = Vec::new();
                std::io::Read::read_to_end(&mut entry, &mut data)
                    .map_err(|e| infra("reading a copied file", e))?;
                return Ok(data);
            }
        }
        Err(SandboxError::Infra(format!(
            "`{full}` is not a regular file"
        )))
    }

    async fn write_file(&self, path: &str, contents: &[u8]) -> Result<(), SandboxError> {
        let full = self.absolute(path);
        let rel = full.trim_start_matches('/');
        if rel.is_empty() || rel.split('/').any(|c| c == "..") {
            return Err(SandboxError::OutsidePath(path.into()));
        }
        // Unpacked at `/`, the archive creates any missing parent folders on the way.
        let tar = tar_one_file(rel, contents).map_err(|e| infra("packing a file", e))?;
        self.upload_tar("/", tar).await
    }

    fn working_dir(&self) -> String {
        self.workdir.clone()
    }

    fn endpoint(&self, port: u16) -> Option<String> {
        self.address.as_ref().map(|ip| format!("{ip}:{port}"))
    }

    async fn snapshot(&self) -> Result<Snapshot, SandboxError> {
        if self.is_closed() {
            return Err(SandboxError::Infra("the sandbox is closed".into()));
        }
        // The runner goes first (its exec ends, and it kills what it ran); its binary stays
        // in the file system, and in the snapshot.
        let had_runner = self.session.lock().await.take().is_some()
            || self.runner_inside.load(Ordering::Relaxed);
        // The commit runs to its end, and is noted, even if this episode is cut short
        // meanwhile; the backend's shutdown waits for it before it removes the snapshots.
        let guard = self.snapshots.freezing.clone().read_owned().await;
        let (factory, id, workdir) = (self.factory.clone(), self.id.clone(), self.workdir.clone());
        let snapshots = self.snapshots.clone();
        let freeze = tokio::spawn(async move {
            let _freezing = guard;
            let image = factory.freeze(&id, &workdir).await?;
            snapshots.note(&image);
            Ok::<_, SandboxError>(image)
        });
        let image = freeze
            .await
            .map_err(|e| infra("committing a container", e))
            .and_then(|r| r);
        let closed = self.close().await;
        let image = image?;
        closed?;
        Ok(Snapshot(format!(
            "{image}{}",
            if had_runner { RUNNER_INSIDE } else { "" }
        )))
    }

    async fn close(&self) -> Result<(), SandboxError> {
        {
            let mut s = self.state.lock().unwrap_or_else(|p| p.into_inner());
            if s.closed {
                return Ok(());
            }
            s.closed = true;
        }
        self.factory.remove(&self.id).await
    }
}

/// Drops the session of a call that did not finish.
struct InFlight<'a> {
    slot: &'a mut Option<session::Session>,
    done: bool,
}

impl Drop for InFlight<'_> {
    fn drop(&mut self) {
        if !self.done {
            *self.slot = None;
        }
    }
}

impl DockerSandbox {
    /// Copies the runner in and starts it in the sandbox's folder with `env`; waits (up to
    /// `api`) for its hello.
    async fn start_session(
        &self,
        env: Vec<String>,
        api: Duration,
    ) -> Result<session::Session, SandboxError> {
        if !self
            .runner_inside
            .load(std::sync::atomic::Ordering::Relaxed)
        {
            let tar = crate::transfer::tar_file(
                session::RUNNER_PATH.trim_start_matches('/'),
                trawl_sandbox_runner_host::RUNNER,
                0o755,
            )
            .map_err(|e| crate::engine::infra("packing the sandbox runner", e))?;
            self.upload_tar("/", tar).await?;
        }
        let (_, started) = self
            .start_exec(bollard::models::ExecConfig {
                attach_stdin: Some(true),
                attach_stdout: Some(true),
                attach_stderr: Some(true),
                cmd: Some(vec![
                    session::RUNNER_PATH.to_string(),
                    "--workdir".into(),
                    self.workdir().to_string(),
                ]),
                working_dir: Some(self.workdir().to_string()),
                env: Some(env),
                ..Default::default()
            })
            .await?;
        let bollard::exec::StartExecResults::Attached { output, input } = started else {
            return Err(crate::engine::infra(
                "starting the sandbox runner",
                "the exec did not attach",
            ));
        };
        session::Session::open(output, input, api).await
    }
}

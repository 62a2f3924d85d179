//! Commands in a sandbox: its runner started (setpriv, bubblewrap and cgroups around it) and
//! spoken to, each command's request under the sandbox's limits, file reads and writes as
//! commands of the sandbox's own user, and the `Sandbox` trait built on them.

use std::ffi::OsString;
use std::path::Path;
use std::time::{Duration, Instant};

use trawl_core::async_trait;
use trawl_core::sandbox::{ExecLimits, ExecResult, Sandbox, SandboxError, Snapshot};
use trawl_sandbox_runner_host::{Policy, Request, SharedTmp};

use crate::cgroup;
use crate::command::{bwrap_args, runner_args, scrubbed_env, sh_word};
use crate::runner;
use crate::sandbox::LocalSandbox;
use crate::snapshots::remove_tree;

/// How long, after a command's group is gone, its output pipes may stay open by default
/// (`drain_secs`) where a writer can outlive the group (the bare fallback without a user of its
/// own). Past it what is in the pipes is taken, without waiting: all the group wrote is there, so
/// nothing is lost to time. Elsewhere every writer is dead and the pipes are read to their end.
const DRAIN_SECS: f64 = 2.0;

/// The most a file read from a sandbox may hold.
const READ_CAP: u64 = 64 << 20;

impl LocalSandbox {
    /// How the runner is started. In namespaces: inside bubblewrap, as the sandbox's user
    /// (through `setpriv` when trawl is root, so that trawl never forks). In the fallback as
    /// root: as root, running each command as the sandbox's user, so that no command can stop
    /// it.
    fn runner_command(&self, network: bool) -> tokio::process::Command {
        let f = &self.shared;
        let mut argv: Vec<OsString> = Vec::new();
        let uid = self.uid();
        if let (Some(setpriv), Some(uid), true) = (&f.setpriv, uid, self.namespaces()) {
            argv.push(setpriv.into());
            argv.extend([
                format!("--reuid={uid}").into(),
                format!("--regid={uid}").into(),
                "--clear-groups".into(),
                "--".into(),
            ]);
        }
        let base = self.view.as_ref().map(|v| v.path());
        if let Some(bwrap) = &f.bwrap {
            argv.push(bwrap.into());
            argv.extend(bwrap_args(
                &self.workdir,
                &f.config.ro_binds,
                &f.runner,
                network,
                f.config.tmp_mb,
                base,
            ));
            argv.push("--".into());
        }
        argv.extend(runner_args(
            &f.runner,
            &self.workdir,
            &f.prlimit,
            base.is_some(),
        ));
        if let (Some(uid), false) = (uid, self.namespaces()) {
            argv.extend(["--uid".into(), uid.to_string().into()]);
        }
        if let Some(cg) = &self.cgroup {
            argv = cgroup::joining(&cg.procs_files(), argv);
        }
        let mut cmd = tokio::process::Command::new(&argv[0]);
        cmd.args(&argv[1..]).env_clear();
        if f.bwrap.is_none() {
            cmd.envs(scrubbed_env(&self.workdir));
        }
        cmd.current_dir(&self.workdir)
            .process_group(0)
            // In namespaces the runner's death takes all it ran with it; in the fallback,
            // closing its pipe lets it kill its command first.
            .kill_on_drop(self.namespaces());
        cmd
    }

    /// The request for one command.
    pub(crate) fn request(&self, command: &str, limits: &ExecLimits) -> Request {
        let c = &self.shared.config;
        let cgroups = self.cgroup.is_some();
        let tmp_cap = c.tmp_mb.saturating_mul(1 << 20);
        let policy = Policy {
            grace: trawl_core::values::secs(c.kill_grace_secs.unwrap_or(1.0)),
            drain: trawl_core::values::secs(c.drain_secs.unwrap_or(DRAIN_SECS)),
            disk_cap: Some(c.workdir_mb.saturating_mul(1 << 20)),
            kill_all: self.namespaces(),
            processes: self.shared.isolation.process_limit && !cgroups,
            memory: !cgroups,
            watch_full: match self.namespaces() {
                true => vec!["/tmp".into(), "/dev/shm".into()],
                false => Vec::new(),
            },
            shared_tmp: self
                .own_user()
                .filter(|_| !self.namespaces())
                .map(|uid| SharedTmp { uid, cap: tmp_cap }),
            // Read here, around the call (the runner in namespaces cannot see them).
            cgroups: Vec::new(),
        };
        trawl_sandbox_runner_host::request(command, limits, &policy)
    }

    /// Stops the runners: each kills what it runs and exits; where its death takes the
    /// sandbox's processes with it, it is killed too. Waits (briefly) until they are gone, so
    /// that nothing writes in the working folder while it is removed.
    async fn stop_runners(&self) {
        let mut runners = self.runners.lock().await;
        for slot in runners.iter_mut() {
            if let Some(mut r) = slot.take() {
                r.hang_up();
                if self.namespaces() {
                    r.kill();
                }
                r.wait(Duration::from_secs(5)).await;
            }
        }
    }
}

/// Drops a runner whose call did not finish (its episode was cancelled mid-command, or it
/// failed): it is hung up on, so that it kills the command, and killed where that takes the
/// command with it. The next command starts a fresh one.
struct InFlight<'a> {
    slot: &'a mut Option<runner::Runner>,
    kill: bool,
    done: bool,
}

impl Drop for InFlight<'_> {
    fn drop(&mut self) {
        if self.done {
            return;
        }
        if let Some(mut r) = self.slot.take() {
            r.hang_up();
            if self.kill {
                r.kill();
            }
        }
    }
}

impl LocalSandbox {
    /// Sends one request to the runner (started on first use) and waits for its reply.
    async fn call(
        &self,
        request: &Request,
        network: bool,
    ) -> Result<trawl_sandbox_runner_host::Reply, SandboxError> {
        if self.dir.lock().unwrap_or_else(|p| p.into_inner()).is_none() {
            return Err(SandboxError::Infra("the sandbox is closed".into()));
        }
        let mut runners = self.runners.lock().await;
        if self.view.is_some() {
            // A view's layer takes one overlay at a time: the other runner's goes first.
            if let Some(mut other) = runners[usize::from(!network)].take() {
                other.hang_up();
                other.kill();
                other.wait(Duration::from_secs(5)).await;
            }
        }
        let slot = &mut runners[usize::from(network)];
        if slot.is_none() {
            self.ran.store(true, std::sync::atomic::Ordering::Relaxed);
            *slot = Some(runner::Runner::start(self.runner_command(network)).await?);
        }
        let mut call = InFlight {
            slot,
            kill: self.namespaces(),
            done: false,
        };
        let Some(runner) = call.slot.as_mut() else {
            return Err(SandboxError::Infra("the sandbox runner is gone".into()));
        };
        let reply = runner.call(request).await?;
        call.done = true;
        Ok(reply)
    }

    /// A file operation, run by the sandbox's own user inside its namespaces: a link the
    /// sandbox planted leads only where its own commands could go.
    async fn file_op(
        &self,
        path: &Path,
        command: String,
        stdin: Vec<u8>,
        what: &str,
    ) -> Result<Vec<u8>, SandboxError> {
        let limits = ExecLimits {
            wall_time_secs: 120.0,
            cpu_secs: 120,
            file_size_mb: self.shared.config.workdir_mb,
            output_bytes: READ_CAP as usize,
            ..ExecLimits::default()
        };
        let mut request = self.request(&command, &limits);
        request.stdin = stdin;
        request.flood = READ_CAP;
        let reply = self.call(&request, false).await?;
        let fail =
            |why: String| SandboxError::Infra(format!("cannot {what} {}: {why}", path.display()));
        match reply.ending {
            trawl_sandbox_runner_host::Ending::Exited(0) => Ok(reply.stdout.kept),
            trawl_sandbox_runner_host::Ending::Flooded => {
                Err(fail(format!("larger than {} MiB", READ_CAP >> 20)))
            }
            trawl_sandbox_runner_host::Ending::Failed(why) => Err(SandboxError::Infra(why)),
            other => Err(fail(format!(
                "{other:?}: {}",
                String::from_utf8_lossy(&reply.stderr.kept).trim()
            ))),
        }
    }
}

#[async_trait]
impl Sandbox for LocalSandbox {
    async fn exec(&self, command: &str, limits: &ExecLimits) -> Result<ExecResult, SandboxError> {
        let started = Instant::now();
        let request = self.request(command, limits);
        let before = match &self.cgroup {
            Some(cg) => {
                cg.set_limits(limits.processes, limits.memory_mb.saturating_mul(1 << 20))
                    .map_err(SandboxError::Infra)?;
                Some(cg.counts())
            }
            None => None,
        };
        let mut reply = self.call(&request, limits.network).await?;
        if let (Some(cg), Some(before)) = (&self.cgroup, before) {
            reply.tripped = reply.tripped.or(cg.counts().tripped_since(before));
        }
        trawl_sandbox_runner_host::result(reply, started)
    }

    async fn read_file(&self, path: &str) -> Result<Vec<u8>, SandboxError> {
        let p = self.resolve(path)?;
        let command = format!("exec cat -- {}", sh_word(p.as_os_str()));
        self.file_op(&p, command, Vec::new(), "read").await
    }

    async fn write_file(&self, path: &str, contents: &[u8]) -> Result<(), SandboxError> {
        let p = self.resolve(path)?;
        let parent = p.parent().unwrap_or(&self.workdir);
        let command = format!(
            "mkdir -p -- {} && exec cat > {}",
            sh_word(parent.as_os_str()),
            sh_word(p.as_os_str())
        );
        self.file_op(&p, command, contents.to_vec(), "write")
            .await
            .map(drop)
    }

    fn working_dir(&self) -> String {
        self.workdir.display().to_string()
    }

    async fn close(&self) -> Result<(), SandboxError> {
        // Processes first: nothing of the sandbox's user may write while its files go.
        let swept = self.sweep_through_runner().await;
        self.stop_runners().await;
        self.teardown_off_runtime(swept).await;
        self.release_cgroup().await;
        let dir = self.dir.lock().unwrap_or_else(|p| p.into_inner()).take();
        if let Some(dir) = dir {
            let path = dir.path().to_path_buf();
            tokio::task::spawn_blocking(move || remove_tree(dir))
                .await
                .map_err(|e| SandboxError::Infra(format!("cleanup panicked: {e}")))?
                .map_err(|e| {
                    SandboxError::Infra(format!("cannot remove {}: {e}", path.display()))
                })?;
        }
        Ok(())
    }

    async fn snapshot(&self) -> Result<Snapshot, SandboxError> {
        if self.view.is_some() {
            return Err(SandboxError::Unavailable(
                "a view of a snapshot cannot be frozen again; freeze the sandbox it came from"
                    .into(),
            ));
        }
        let swept = self.sweep_through_runner().await;
        self.stop_runners().await;
        self.teardown_off_runtime(swept).await;
        self.release_cgroup().await;
        let Some(dir) = self.dir.lock().unwrap_or_else(|p| p.into_inner()).take() else {
            return Err(SandboxError::Infra("the sandbox is closed".into()));
        };
        // In the fallback its user goes back to the pool: the folder becomes trawl's own, so
        // that the next sandbox of that user cannot change it.
        if self.shared.bwrap.is_none() && self.shared.run_as.is_some() {
            let euid = nix::unistd::geteuid().as_raw();
            std::os::unix::fs::chown(dir.path(), Some(euid), Some(euid)).map_err(|e| {
                SandboxError::Infra(format!("cannot freeze {}: {e}", dir.path().display()))
            })?;
        }
        Ok(self.snapshots.put(dir))
    }
}

//! The end of a fallback sandbox with a user of its own (trawl as root, no namespaces):
//! everything that user ran killed and what it left in the shared temporary folders removed,
//! first through the sandbox's runner, then from trawl's side, before the user is given back.

use trawl_core::sandbox::ExecLimits;

use crate::command::sh_word;
use crate::sandbox::LocalSandbox;
use crate::teardown;
use crate::users::UidLease;

impl LocalSandbox {
    /// Kills every process of the sandbox's own user and removes what it left in the shared
    /// temporary folders, then gives the user back. Without namespaces a `setsid` daemon
    /// escapes the process group; with them nothing outlives the pid namespace, and `/tmp` is
    /// private, so there is nothing to do.
    /// `swept`: the sandbox's runner has already done that as the user (see
    /// [`LocalSandbox::sweep_through_runner`]); what is left is to see every process of the
    /// user gone (killing any that is not) before the user is given back.
    pub(crate) fn teardown(&self, swept: bool) {
        if let Some(work) = self.teardown_work(swept) {
            work();
        }
    }

    /// [`LocalSandbox::teardown`] on a blocking thread: waiting for the processes of a loaded
    /// machine to finish dying must not hold up the runtime.
    pub(crate) async fn teardown_off_runtime(&self, swept: bool) {
        if let Some(work) = self.teardown_work(swept) {
            let _ = tokio::task::spawn_blocking(work).await;
        }
    }

    /// What teardown has to do, taken out of the sandbox (the user's lease with it). After the
    /// runner's sweep the user's processes have been sent SIGKILL, but a process leaves the
    /// process table only when the kernel has finished its exit; the user is given back only
    /// once none is left, so the next sandbox with that uid starts clean.
    fn teardown_work(&self, swept: bool) -> Option<impl FnOnce() + Send + 'static> {
        let lease = self
            .lease
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .take()?;
        let fallback = self.shared.bwrap.is_none();
        let workdir = self.workdir.clone();
        Some(move || {
            if fallback {
                teardown::kill_user(lease.uid());
                if !swept {
                    teardown::remove_files_of(lease.uid(), &workdir);
                }
            }
            drop(lease);
        })
    }

    /// In the fallback with a user of its own, the sandbox's last command, run by its runner
    /// as that user: `kill -9 -1` (which reaches exactly that user's processes, a `setsid`
    /// daemon included; repeated, for a fork bomb racing it), then what the user owns at the
    /// top of the shared temporary folders removed, in one command of the sandbox's own
    /// rather than trawl searching the shared folders. True when it is done (or nothing ever
    /// ran); false leaves it to [`LocalSandbox::teardown`].
    pub(crate) async fn sweep_through_runner(&self) -> bool {
        let uid = self
            .lease
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .as_ref()
            .map(UidLease::uid);
        let Some(uid) = uid.filter(|_| !self.namespaces()) else {
            return false;
        };
        if !self.ran.load(std::sync::atomic::Ordering::Relaxed) {
            return true;
        }
        let script = format!(
            // Never anyone else's `kill -1`: the script checks whose it is first.
            "[ \"$(id -u)\" = {uid} ] || exit 9\nfor i in 1 2 3 4 5 6 7 8 9 10 11 12 13 14 15 16; do kill -9 -1 2>/dev/null; done\nexec find /tmp /var/tmp /dev/shm -mindepth 1 -maxdepth 1 -user {uid} ! -path {} -exec rm -rf -- {{}} + 2>/dev/null\n",
            sh_word(self.workdir.as_os_str())
        );
        let limits = ExecLimits {
            wall_time_secs: 30.0,
            ..ExecLimits::default()
        };
        let request = self.request(&script, &limits);
        let mut runners = self.runners.lock().await;
        for runner in runners.iter_mut().flatten() {
            if let Ok(reply) = runner.call(&request).await {
                return reply.ending == trawl_sandbox_runner_host::Ending::Exited(0);
            }
        }
        false
    }
}

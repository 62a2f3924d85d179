//! Leftovers removed: the containers this process still owns, the sweep at start-up of what
//! killed runs left (containers and snapshot images), the removal of a run's own when it ends,
//! and the force-removal of one container, tried again while the engine is busy.

use std::collections::{HashMap, HashSet};
use std::sync::{Mutex, OnceLock};
use std::time::{Duration, Instant};

use bollard::query_parameters::{ListContainersOptionsBuilder, RemoveContainerOptionsBuilder};
use futures_util::StreamExt;
use serde::Serialize;
use trawl_core::sandbox::SandboxError;

use crate::engine::{infra, within};
use crate::factory::DockerFactory;
use crate::owner::{
    now_secs, owner_alive, owner_id, LABEL_CREATED, LABEL_MANAGED, LABEL_OWNER, LABEL_RUN,
    LABEL_SNAPSHOT, SNAPSHOT_REPO,
};

/// The containers this process has created and not yet seen removed, with their run ids.
fn live() -> &'static Mutex<HashMap<String, String>> {
    static LIVE: OnceLock<Mutex<HashMap<String, String>>> = OnceLock::new();
    LIVE.get_or_init(Default::default)
}

pub(crate) fn track(id: &str, run_id: &str) {
    live()
        .lock()
        .unwrap_or_else(|p| p.into_inner())
        .insert(id.to_string(), run_id.to_string());
}

fn untrack(id: &str) {
    live().lock().unwrap_or_else(|p| p.into_inner()).remove(id);
}

/// Ids of the containers this process still owns for `run_id`.
pub fn live_containers(run_id: &str) -> Vec<String> {
    live()
        .lock()
        .unwrap_or_else(|p| p.into_inner())
        .iter()
        .filter(|(_, r)| r.as_str() == run_id)
        .map(|(id, _)| id.clone())
        .collect()
}

/// What the start-up sweep removed.
#[derive(Debug, Clone, Default, PartialEq, Serialize)]
pub struct Reaped {
    pub removed: Vec<String>,
    pub failed: Vec<String>,
}

/// A removal the engine refused with a server error, worth trying again.
struct Retry(String);

impl DockerFactory {
    async fn managed_containers(
        &self,
    ) -> Result<Vec<(String, HashMap<String, String>)>, SandboxError> {
        let filters = HashMap::from([("label", vec![format!("{LABEL_MANAGED}=true")])]);
        let options = ListContainersOptionsBuilder::default()
            .all(true)
            .filters(&filters)
            .build();
        let list = within(
            self.api(),
            "listing containers",
            self.docker.list_containers(Some(options)),
        )
        .await?;
        Ok(list
            .into_iter()
            .filter_map(|c| Some((c.id?, c.labels.unwrap_or_default())))
            .collect())
    }

    /// Removes trawl containers whose owning process is gone (same host), or that are older than
    /// `reap_after_secs` (another host's).
    pub async fn reap_stale(&self) -> Result<Reaped, SandboxError> {
        let mine = owner_id();
        let now = now_secs();
        let mut reaped = Reaped::default();
        for (id, labels) in self.managed_containers().await? {
            let owner = labels.get(LABEL_OWNER).map(String::as_str).unwrap_or("");
            if owner == mine {
                continue;
            }
            let created: u64 = labels
                .get(LABEL_CREATED)
                .and_then(|c| c.parse().ok())
                .unwrap_or(0);
            let stale = match owner_alive(owner) {
                Some(alive) => !alive,
                None => now.saturating_sub(created) > self.config.reap_after_secs,
            };
            if stale {
                match self.remove(&id).await {
                    Ok(()) => reaped.removed.push(id),
                    Err(e) => {
                        tracing::warn!(%id, error = %e, "could not remove a stale container");
                        reaped.failed.push(id)
                    }
                }
            }
        }
        // Snapshot images of runs that are gone, now that their containers are.
        for (names, labels, created) in self.snapshot_images().await? {
            let owner = labels.get(LABEL_SNAPSHOT).map(String::as_str).unwrap_or("");
            let stale = owner != mine
                && match owner_alive(owner) {
                    Some(alive) => !alive,
                    None => now.saturating_sub(created) > self.config.reap_after_secs,
                };
            if stale {
                for name in names {
                    self.remove_image(&name).await;
                }
            }
        }
        Ok(reaped)
    }

    /// Every snapshot image on the engine: its names, labels and creation time.
    async fn snapshot_images(
        &self,
    ) -> Result<Vec<(Vec<String>, HashMap<String, String>, u64)>, SandboxError> {
        let filters = HashMap::from([("label", vec![LABEL_SNAPSHOT.to_string()])]);
        let options = bollard::query_parameters::ListImagesOptionsBuilder::default()
            .filters(&filters)
            .build();
        let images = within(
            self.api(),
            "listing snapshot images",
            self.docker.list_images(Some(options)),
        )
        .await?;
        Ok(images
            .into_iter()
            .map(|i| {
                let names = i
                    .repo_tags
                    .into_iter()
                    .filter(|t| t.starts_with(SNAPSHOT_REPO))
                    .collect();
                (names, i.labels, u64::try_from(i.created).unwrap_or(0))
            })
            .collect())
    }

    /// Removes every container this process still owns for run `run_id`, each within the API
    /// deadline, giving up when none has finished for `deadline`. Called when a run ends,
    /// however it ends.
    pub async fn shutdown(&self, run_id: &str, deadline: Duration) -> Reaped {
        let mut ids: HashSet<String> = live_containers(run_id).into_iter().collect();
        if let Ok(all) = self.managed_containers().await {
            let mine = owner_id();
            ids.extend(
                all.into_iter()
                    .filter(|(_, l)| {
                        l.get(LABEL_OWNER).map(String::as_str) == Some(mine)
                            && l.get(LABEL_RUN).map(String::as_str) == Some(run_id)
                    })
                    .map(|(id, _)| id),
            );
        }
        let mut removals: futures_util::stream::FuturesUnordered<_> = ids
            .into_iter()
            .map(|id| async move {
                let r = self.remove(&id).await;
                (id, r)
            })
            .collect();
        let mut reaped = Reaped::default();
        // They queue for the engine's turns; the deadline is on the wait for the next one to
        // finish, so hundreds are all removed while the engine keeps answering.
        loop {
            match tokio::time::timeout(deadline, removals.next()).await {
                Ok(Some((id, Ok(())))) => reaped.removed.push(id),
                Ok(Some((id, Err(_)))) => reaped.failed.push(id),
                Ok(None) => break,
                Err(_) => {
                    drop(removals);
                    reaped.failed = live_containers(run_id);
                    break;
                }
            }
        }
        // Then the run's snapshots, now that no container of it uses them: those it noted and
        // any whose commit ended after the episode that asked for it was cut short.
        if let Ok(images) = self.snapshot_images().await {
            let mine = owner_id();
            for (names, labels, _) in images {
                if labels.get(LABEL_SNAPSHOT).map(String::as_str) == Some(mine)
                    && labels.get(LABEL_RUN).map(String::as_str) == Some(run_id)
                {
                    for name in names {
                        self.remove_image(&name).await;
                    }
                }
            }
        }
        reaped
    }

    /// Force-removes one container (killing what runs in it), with its volumes. A removal the
    /// engine fails with a server error (a busy file system: fuse-overlayfs answers "unable to
    /// remove filesystem" while a killed process still holds it) is tried again, with growing
    /// pauses, for up to the API deadline after the first such answer.
    pub async fn remove(&self, id: &str) -> Result<(), SandboxError> {
        let mut retry_until = None;
        let mut pause = Duration::from_millis(200);
        loop {
            match self.remove_once(id).await {
                Err(Retry(message)) => {
                    let until = *retry_until.get_or_insert_with(|| Instant::now() + self.api());
                    if Instant::now() + pause > until {
                        return Err(infra("removing a container", message));
                    }
                    tracing::debug!(%id, error = %message, "removing a container again");
                    tokio::time::sleep(pause).await;
                    pause = (pause * 2).min(Duration::from_secs(5));
                }
                Ok(done) => return done,
            }
        }
    }

    /// One removal call; `Err` when the engine answered with an error worth trying again.
    async fn remove_once(&self, id: &str) -> Result<Result<(), SandboxError>, Retry> {
        let options = RemoveContainerOptionsBuilder::default()
            .force(true)
            .v(true)
            .build();
        let answer = self
            .queued(self.api(), self.docker.remove_container(id, Some(options)))
            .await;
        Ok(match answer {
            Ok(Ok(())) => {
                untrack(id);
                Ok(())
            }
            Ok(Err(bollard::errors::Error::DockerResponseServerError {
                status_code: 404, ..
            })) => {
                untrack(id);
                Ok(())
            }
            // Another removal (a dropped sandbox's, in the background) is under way: wait for it.
            Ok(Err(bollard::errors::Error::DockerResponseServerError {
                status_code: 409, ..
            })) => self.wait_gone(id).await,
            Ok(Err(bollard::errors::Error::DockerResponseServerError {
                status_code: 500,
                message,
            })) => return Err(Retry(message)),
            Ok(Err(e)) => Err(infra("removing a container", e)),
            Err(_) => Err(infra("removing a container", "no answer in time")),
        })
    }

    /// Waits, within the API deadline, until container `id` no longer exists.
    async fn wait_gone(&self, id: &str) -> Result<(), SandboxError> {
        let deadline = Instant::now() + self.api();
        while Instant::now() < deadline {
            match tokio::time::timeout(self.api(), self.docker.inspect_container(id, None)).await {
                Ok(Err(bollard::errors::Error::DockerResponseServerError {
                    status_code: 404,
                    ..
                })) => {
                    untrack(id);
                    return Ok(());
                }
                Ok(_) => tokio::time::sleep(Duration::from_millis(50)).await,
                Err(_) => break,
            }
        }
        Err(infra(
            "removing a container",
            "it was still there at the deadline",
        ))
    }
}

//! Images on the engine: whether one is there and its labels, the error for one that is
//! missing, containers committed as images (snapshots among them), and their removal.

use std::collections::HashMap;
use std::sync::atomic::Ordering;
use std::time::{SystemTime, UNIX_EPOCH};

use bollard::query_parameters::CommitContainerOptionsBuilder;
use trawl_core::sandbox::SandboxError;

use crate::engine::{infra, unavailable, within};
use crate::factory::DockerFactory;
use crate::owner::{now_secs, owner_id, LABEL_CREATED, LABEL_SNAPSHOT, SNAPSHOT_REPO};
use crate::sandbox::DockerSandbox;

/// The error for an image the engine lacks: nothing can be pulled here, so say how to make it.
pub fn missing_image(image: &str) -> SandboxError {
    unavailable(format!(
        "image `{image}` is not on this Docker engine. trawl never pulls images: build the \
         bundled ones with `trawl swe build-images`, or load yours with `docker load -i FILE` \
         (or `docker import`) before the run"
    ))
}

impl DockerFactory {
    /// Whether `image` is on the engine.
    pub async fn has_image(&self, image: &str) -> Result<bool, SandboxError> {
        match tokio::time::timeout(self.api(), self.docker.inspect_image(image)).await {
            Ok(Ok(_)) => Ok(true),
            Ok(Err(bollard::errors::Error::DockerResponseServerError {
                status_code: 404, ..
            })) => Ok(false),
            Ok(Err(e)) => Err(infra("inspecting an image", e)),
            Err(_) => Err(infra("inspecting an image", "no answer in time")),
        }
    }

    /// The value of label `label` on `image`: `None` when the image or the label is missing.
    pub async fn image_label(
        &self,
        image: &str,
        label: &str,
    ) -> Result<Option<String>, SandboxError> {
        match tokio::time::timeout(self.api(), self.docker.inspect_image(image)).await {
            Ok(Ok(i)) => Ok(i
                .config
                .and_then(|c| c.labels)
                .and_then(|mut l| l.remove(label))),
            Ok(Err(bollard::errors::Error::DockerResponseServerError {
                status_code: 404, ..
            })) => Ok(None),
            Ok(Err(e)) => Err(infra("inspecting an image", e)),
            Err(_) => Err(infra("inspecting an image", "no answer in time")),
        }
    }

    /// Saves a container's file system as image `repo:tag`.
    pub async fn commit(
        &self,
        sandbox: &DockerSandbox,
        repo: &str,
        tag: &str,
        workdir: &str,
    ) -> Result<(), SandboxError> {
        self.commit_labelled(&sandbox.id, repo, tag, workdir, HashMap::new())
            .await
    }

    /// [`DockerFactory::commit`], with `labels` on the image.
    pub async fn commit_with_labels(
        &self,
        sandbox: &DockerSandbox,
        repo: &str,
        tag: &str,
        workdir: &str,
        labels: HashMap<String, String>,
    ) -> Result<(), SandboxError> {
        self.commit_labelled(&sandbox.id, repo, tag, workdir, labels)
            .await
    }

    /// Freezes a sandbox's file system as a snapshot image, `trawl-snapshot:<random>`,
    /// labelled with its owner (so that what a killed run left can be found and removed).
    /// Returns the image's name.
    pub async fn freeze(&self, container: &str, workdir: &str) -> Result<String, SandboxError> {
        static COUNT: std::sync::atomic::AtomicU64 = std::sync::atomic::AtomicU64::new(0);
        let n = COUNT.fetch_add(1, Ordering::Relaxed);
        let nanos = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .map_or(0, |d| d.as_nanos());
        let tag = format!("{}-{nanos:x}-{n}", std::process::id());
        let labels = HashMap::from([
            (LABEL_SNAPSHOT.to_string(), owner_id().to_string()),
            (LABEL_CREATED.to_string(), now_secs().to_string()),
        ]);
        self.commit_labelled(container, SNAPSHOT_REPO, &tag, workdir, labels)
            .await?;
        Ok(format!("{SNAPSHOT_REPO}:{tag}"))
    }

    /// Removes an image this process made (a snapshot), if no container still uses it.
    pub async fn remove_image(&self, image: &str) {
        let r = self
            .queued(
                self.api(),
                self.docker.remove_image(
                    image,
                    None::<bollard::query_parameters::RemoveImageOptions>,
                    None,
                ),
            )
            .await;
        if let Ok(Err(e)) = r {
            tracing::debug!(%image, error = %e, "a snapshot image stays");
        }
    }

    async fn commit_labelled(
        &self,
        container: &str,
        repo: &str,
        tag: &str,
        workdir: &str,
        labels: HashMap<String, String>,
    ) -> Result<(), SandboxError> {
        let options = CommitContainerOptionsBuilder::default()
            .container(container)
            .repo(repo)
            .tag(tag)
            .pause(true)
            .build();
        let _turn = self.turn().await;
        within(
            self.api() * 5,
            "committing a container",
            self.docker.commit_container(
                options,
                bollard::models::ContainerConfig {
                    working_dir: Some(workdir.to_string()),
                    labels: (!labels.is_empty()).then_some(labels),
                    ..Default::default()
                },
            ),
        )
        .await
        .map(|_| ())
    }
}

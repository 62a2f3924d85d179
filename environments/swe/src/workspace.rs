//! The workspace: tasks' repositories checked out in sandboxes (from an image, or a git bundle
//! of a local repository), prepared once per instance and frozen as a snapshot. Shared by the
//! environment and its evaluator.

use std::collections::HashMap;
use std::path::PathBuf;
use std::sync::Arc;

use serde_json::{json, Value};
use tokio::sync::OnceCell;
use trawl_core::registry::{BuildContext, ComponentError};
use trawl_core::sandbox::{
    ExecLimits, ExecResult, Sandbox, SandboxBackend, SandboxError, SandboxSpec, Snapshot,
};

use crate::config::SweConfig;
use crate::instance::{InstanceFormat, SweInstance};
use crate::repos;
use crate::shell::{quote, reset_script, tail, GIT, SCRATCH};

/// The repository as it travels into a sandbox without images, for a moment.
const BUNDLE: &str = ".trawl-repo.bundle";

/// Runs tasks' repositories in sandboxes: shared by the environment and its evaluator.
#[derive(Clone)]
pub struct Workspace {
    pub(crate) settings: Arc<SweConfig>,
    backend: Arc<dyn SandboxBackend>,
    /// Each repository as a git bundle, made once, for backends that do not run images.
    bundles: Arc<std::sync::Mutex<std::collections::HashMap<PathBuf, Arc<Vec<u8>>>>>,
    /// Each instance's prepared working copy (by instance and `hide_history`), frozen once
    /// as a snapshot that every later checkout of it starts from as a copy-on-write view.
    /// `None` once the backend has said it has no snapshots.
    prepared: Arc<std::sync::Mutex<HashMap<(String, bool), Prepared>>>,
}

/// One prepared working copy: frozen on first use, `None` where snapshots are not to be had.
type Prepared = Arc<OnceCell<Option<Snapshot>>>;

/// A working copy of an instance's repository in a sandbox.
pub struct Checkout {
    pub sandbox: Box<dyn Sandbox>,
    /// The repository's folder as commands in the sandbox see it.
    pub workdir: String,
}

impl Workspace {
    /// A workspace on the sandbox kind `settings.sandbox` names (`docker` when it names none),
    /// built by `cx`.
    pub fn new(settings: SweConfig, cx: &BuildContext) -> Result<Self, ComponentError> {
        settings
            .limits
            .validate()
            .map_err(|(field, msg)| ComponentError::at(&format!("limits.{field}"), msg))?;
        let backend = cx.build_sandbox(&settings.sandbox, "docker")?;
        Ok(Self::with_backend(settings, backend))
    }

    /// A workspace on a sandbox backend already built (`settings.sandbox` is then not read).
    pub fn with_backend(settings: SweConfig, backend: Arc<dyn SandboxBackend>) -> Self {
        if !backend.runs_images() {
            tracing::warn!(
                sandbox = %backend.describe(),
                "SWE tasks in a sandbox without images: a copy of the repository is made in each, weaker isolation than a container"
            );
        }
        Workspace {
            settings: Arc::new(settings),
            backend,
            bundles: Arc::default(),
            prepared: Arc::default(),
        }
    }

    pub fn settings(&self) -> &SweConfig {
        &self.settings
    }

    /// Checks, before any episode, that every instance can be checked out: the engine answers
    /// and has each image, or the local repositories exist.
    pub async fn preflight(&self, instances: &[SweInstance]) -> Result<(), String> {
        if !self.backend.runs_images() {
            for inst in instances {
                self.local_repo(inst)?;
            }
            return Ok(());
        }
        let mut images = std::collections::BTreeSet::new();
        for inst in instances {
            images.insert(self.image_of(inst).map_err(|e| e.to_string())?);
        }
        let images: Vec<String> = images.into_iter().collect();
        let missing = self
            .backend
            .missing_images(&images)
            .await
            .map_err(|e| e.to_string())?;
        if !missing.is_empty() {
            return Err(format!(
                "the sandbox lacks image(s) {}. trawl never pulls images: run `trawl swe build-images` for the bundled instances, or `docker load -i FILE` yours",
                missing.join(", ")
            ));
        }
        Ok(())
    }

    fn image_of(&self, inst: &SweInstance) -> Result<String, SandboxError> {
        let configured = self.settings.sandbox["image"].as_str().map(str::to_string);
        inst.image_name.clone().or(configured).ok_or_else(|| {
            SandboxError::Unavailable(format!(
                "instance `{}` names no `image_name` and the sandbox has no `image`",
                inst.instance_id
            ))
        })
    }

    /// The git repository a local checkout clones from.
    fn local_repo(&self, inst: &SweInstance) -> Result<PathBuf, String> {
        if let Some(name) = repos::bundled(&inst.repo) {
            return repos::cached(name);
        }
        let Some(dir) = &self.settings.repos_dir else {
            return Err(format!(
                "instance `{}`: repository `{}` is not bundled with trawl; set `repos_dir` to a folder holding `{}` as a git repository",
                inst.instance_id,
                inst.repo,
                inst.repo_slug()
            ));
        };
        let path = dir.join(inst.repo_slug());
        if !path.join(".git").exists() && !path.join("HEAD").exists() {
            return Err(format!(
                "instance `{}`: {} is not a git repository",
                inst.instance_id,
                path.display()
            ));
        }
        Ok(path)
    }

    /// A fresh sandbox holding the repository at `base_commit`, clean.
    async fn fresh(&self, inst: &SweInstance) -> Result<Checkout, SandboxError> {
        if self.backend.runs_images() {
            let spec = SandboxSpec {
                image: Some(self.image_of(inst)?),
                workdir: Some(self.settings.workdir.clone()),
                ..SandboxSpec::default()
            };
            let sandbox = self.backend.create(&spec).await?;
            return Ok(Checkout {
                sandbox,
                workdir: self.settings.workdir.clone(),
            });
        }
        // No image holds the repository: it travels in as a git bundle, through the sandbox's
        // own file interface, and is cloned inside by the sandbox's user.
        let repo = self.local_repo(inst).map_err(SandboxError::Unavailable)?;
        let bundle = self.bundle(&repo).await?;
        let sandbox = self.backend.create(&SandboxSpec::default()).await?;
        let c = Checkout {
            workdir: sandbox.working_dir(),
            sandbox,
        };
        let unpack = async {
            c.sandbox.write_file(BUNDLE, &bundle).await?;
            self.script(
                &c,
                &format!(
                    "set -e\ngit clone -q --no-checkout {BUNDLE} .trawl-clone\nmv .trawl-clone/.git .git\nrm -rf .trawl-clone {BUNDLE}\n"
                ),
                "copying the repository in",
            )
            .await
        };
        match unpack.await {
            Ok(_) => Ok(c),
            Err(e) => {
                let _ = c.sandbox.close().await;
                Err(e)
            }
        }
    }

    /// `repo` as a git bundle of all its refs, made once per run.
    async fn bundle(&self, repo: &std::path::Path) -> Result<Arc<Vec<u8>>, SandboxError> {
        if let Some(b) = self.bundles.lock().ok().and_then(|m| m.get(repo).cloned()) {
            return Ok(b);
        }
        let dir = repo.to_path_buf();
        let bytes = tokio::task::spawn_blocking(move || make_bundle(&dir))
            .await
            .map_err(|e| SandboxError::Infra(e.to_string()))?
            .map_err(SandboxError::Infra)?;
        let bytes = Arc::new(bytes);
        if let Ok(mut m) = self.bundles.lock() {
            m.insert(repo.to_path_buf(), bytes.clone());
        }
        Ok(bytes)
    }

    /// Runs a script of trawl's own in the checkout; an error unless it exits 0.
    pub(crate) async fn script(
        &self,
        c: &Checkout,
        script: &str,
        what: &str,
    ) -> Result<ExecResult, SandboxError> {
        // trawl's own work on the repository (its pack, its checkout) is bounded by the
        // sandbox's disk cap, not by the file-size limit the agent's commands get.
        let limits = ExecLimits {
            wall_time_secs: 300.0,
            cpu_secs: 300,
            file_size_mb: self.settings.limits.file_size_mb.max(16 << 10),
            ..self.settings.limits.clone()
        };
        let r = c.sandbox.exec(script, &limits).await?;
        if !r.success() {
            return Err(SandboxError::Infra(format!(
                "{what} failed ({}): {}{}",
                r.describe(),
                tail(&r.stdout, 2000),
                tail(&r.stderr, 2000)
            )));
        }
        Ok(r)
    }

    /// Writes `patch` into the checkout's scratch folder; returns its path there.
    pub(crate) async fn put_patch(
        &self,
        c: &Checkout,
        name: &str,
        patch: &str,
    ) -> Result<String, SandboxError> {
        let path = format!("{}/{SCRATCH}/{name}", c.workdir);
        c.sandbox.write_file(&path, patch.as_bytes()).await?;
        Ok(path)
    }

    /// The working copy an agent starts from: `base_commit`, the bug applied (SWE-smith), and,
    /// with `hide_history`, a fresh one-commit history so that the bug cannot be read from git.
    /// (Without `hide_history`, it is also what the evaluator applies a patch to.) Prepared
    /// once per instance and frozen; each checkout is then a copy-on-write view of that, so
    /// that its cost does not grow with the repository. Where the sandbox has no snapshots,
    /// each checkout is prepared in full.
    pub async fn checkout_for_agent(
        &self,
        inst: &SweInstance,
        hide_history: bool,
    ) -> Result<Checkout, SandboxError> {
        let key = (inst.instance_id.clone(), hide_history);
        let cell = self
            .prepared
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .entry(key)
            .or_default()
            .clone();
        let frozen = cell
            .get_or_try_init(|| async {
                let c = self.prepare(inst, hide_history).await?;
                match c.sandbox.snapshot().await {
                    Ok(snapshot) => Ok(Some(snapshot)),
                    Err(e) => {
                        let _ = c.sandbox.close().await;
                        match e {
                            SandboxError::Unavailable(why) => {
                                tracing::debug!("each checkout is prepared in full: {why}");
                                Ok(None)
                            }
                            e => Err(e),
                        }
                    }
                }
            })
            .await?;
        let Some(snapshot) = frozen else {
            return self.prepare(inst, hide_history).await;
        };
        let spec = SandboxSpec {
            workdir: Some(self.settings.workdir.clone()),
            ..SandboxSpec::default()
        };
        let sandbox = self.backend.view(snapshot, &spec).await?;
        Ok(Checkout {
            workdir: sandbox.working_dir(),
            sandbox,
        })
    }

    /// A working copy prepared from scratch: a fresh checkout, reset, the bug applied.
    async fn prepare(
        &self,
        inst: &SweInstance,
        hide_history: bool,
    ) -> Result<Checkout, SandboxError> {
        let c = self.fresh(inst).await?;
        let mut script = format!("set -e\n{}\n", reset_script(&inst.base_commit));
        if self.settings.format == InstanceFormat::SweSmith && !inst.patch.trim().is_empty() {
            let p = self.put_patch(&c, "task.patch", &inst.patch).await?;
            script.push_str(&format!("git apply --whitespace=nowarn {}\n", quote(&p)));
        }
        script.push_str(&format!("rm -rf {SCRATCH}\n"));
        if hide_history {
            script.push_str(&format!(
                "rm -rf .git\ngit init -q\n{GIT} add -A\n{GIT} commit -q --no-verify -m {}\n",
                quote(&format!("{}: task", inst.instance_id))
            ));
        }
        match self.script(&c, &script, "preparing the repository").await {
            Ok(_) => Ok(c),
            Err(e) => {
                let _ = c.sandbox.close().await;
                Err(e)
            }
        }
    }

    /// Removes what this run's episodes left behind.
    pub async fn shutdown(&self) {
        self.backend.shutdown().await;
    }

    /// What the run reports about this environment: its sandbox's isolation, under `sandbox`
    /// as every environment that runs commands reports it.
    pub(crate) fn facts(&self) -> Value {
        json!({ "sandbox": self.backend.describe() })
    }
}

/// Runs a host program to the end; an error naming it unless it exits 0.
fn host(program: &str, args: &[&std::ffi::OsStr]) -> Result<(), String> {
    let out = std::process::Command::new(program)
        .args(args)
        .output()
        .map_err(|e| format!("cannot run {program}: {e}"))?;
    if !out.status.success() {
        return Err(format!(
            "{program} {} failed: {}",
            args.first()
                .map(|a| a.to_string_lossy())
                .unwrap_or_default(),
            String::from_utf8_lossy(&out.stderr).trim()
        ));
    }
    Ok(())
}

/// Clones `repo` into the empty folder `dir` (on the host), owned by `uid`.
fn make_bundle(repo: &std::path::Path) -> Result<Vec<u8>, String> {
    let file = tempfile::NamedTempFile::new().map_err(|e| format!("cannot make a bundle: {e}"))?;
    host(
        "git",
        &[
            "-C".as_ref(),
            repo.as_os_str(),
            "bundle".as_ref(),
            "create".as_ref(),
            file.path().as_os_str(),
            "--all".as_ref(),
        ],
    )?;
    std::fs::read(file.path()).map_err(|e| format!("cannot read the bundle: {e}"))
}

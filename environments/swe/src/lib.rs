//! The `swe` environment: fix a bug in a real repository. Each episode gets the repository at
//! the instance's `base_commit` (with a SWE-smith bug `patch` applied) in a fresh sandbox: a
//! container on the Docker engine (`sandbox = { type = "docker" }`, the default) or, where no
//! engine is present, a clone in a `local` sandbox (weaker isolation; a warning says so).
//!
//! The agent acts with shell commands (the `bash` scaffold) or with the `bash`,
//! `str_replace_editor` and `submit` tools (the `swe_tools` scaffold). A command whose output
//! starts with `COMPLETE_TASK_AND_SUBMIT_FINAL_OUTPUT` (and that exits 0) submits, as in
//! mini-swe-agent. The submission is the git diff of the working tree.
//!
//! The `swe_tests` evaluator applies that diff (and the instance's `test_patch`) to a fresh
//! checkout, runs FAIL_TO_PASS and PASS_TO_PASS with pytest, and reports in the SWE-smith /
//! SWE-bench harness shape; `resolved` is the success.

#![forbid(unsafe_code)]

pub mod editor;
pub mod import;
pub mod instance;
pub mod report;
pub mod repos;

use std::collections::HashMap;
use std::path::PathBuf;
use std::sync::Arc;

use serde::{Deserialize, Serialize};
use serde_json::{json, Value};
use tokio::sync::OnceCell;
use trawl_core::registry::{BuildContext, ComponentError, EnvironmentConfig, EvaluatorConfig};
use trawl_core::sandbox::{
    ExecLimits, ExecOutcome, ExecResult, Sandbox, SandboxBackend, SandboxError, SandboxSpec,
    Snapshot,
};
use trawl_core::{
    async_trait, Action, ActionSpace, Artifacts, Environment, EnvironmentError, Episode,
    Evaluation, Evaluator, EvaluatorError, Message, Observation, Task, ToolCall, ToolSchema,
    TrajectoryRecord,
};

use crate::instance::{InstanceFormat, SweInstance};
use crate::report::Report;

/// Where bundled repositories sit in their images, as in SWE-bench's images (the default
/// `workdir`). `trawl swe build-images` builds them.
pub const TESTBED: &str = "/testbed";
/// Printed as the first line of a command's output, it ends the episode and submits.
pub const SUBMIT_SENTINEL: &str = "COMPLETE_TASK_AND_SUBMIT_FINAL_OUTPUT";
/// The repository as it travels into a sandbox without images, for a moment.
const BUNDLE: &str = ".trawl-repo.bundle";
/// The folder, inside the working copy, where trawl puts its patch files for a moment.
const SCRATCH: &str = ".trawl-scratch";
/// The pytest invocation the evaluator runs (the test ids follow).
pub const DEFAULT_TEST_CMD: &str = "python3 -m pytest -rA --tb=no -p no:cacheprovider";

fn docker_default() -> Value {
    json!({ "type": "docker" })
}
fn agent_limits() -> ExecLimits {
    ExecLimits {
        wall_time_secs: 60.0,
        cpu_secs: 120,
        memory_mb: 2048,
        processes: 256,
        ..ExecLimits::default()
    }
}
fn testbed() -> String {
    TESTBED.into()
}

/// Runs tasks' repositories in sandboxes: shared by the environment and its evaluator.
#[derive(Clone)]
pub struct Workspace {
    settings: Arc<SweConfig>,
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
    async fn script(
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
    async fn put_patch(
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
    fn facts(&self) -> Value {
        json!({ "sandbox": self.backend.describe() })
    }
}

/// git as trawl runs it inside sandboxes: a fixed identity, no hooks, no pager.
const GIT: &str = "git -c user.name=trawl -c user.email=trawl@localhost -c core.hooksPath=/dev/null -c core.pager=cat";

fn reset_script(commit: &str) -> String {
    format!(
        "{GIT} reset -q --hard {c}\n{GIT} clean -qfdx -e {SCRATCH}\n",
        c = quote(commit)
    )
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

/// `s` as one shell word.
pub fn quote(s: &str) -> String {
    if !s.is_empty()
        && s.chars()
            .all(|c| c.is_ascii_alphanumeric() || "-_./:=@+,".contains(c))
    {
        return s.to_string();
    }
    format!("'{}'", s.replace('\'', "'\\''"))
}

fn tail(s: &str, n: usize) -> &str {
    let mut from = s.len().saturating_sub(n);
    while !s.is_char_boundary(from) {
        from += 1;
    }
    &s[from..]
}

/// `[[environments]] type = "swe"`; its evaluator `swe_tests` takes the same table (and
/// ignores the task selection).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SweConfig {
    /// `builtin` (the six bundled instances) or `none` (only `files`).
    #[serde(default = "builtin")]
    pub dataset: String,
    /// Instance files (JSONL, a JSON array or Parquet) in the SWE-smith / SWE-bench shape.
    #[serde(default)]
    pub files: Vec<String>,
    /// Another project's field names, for files in its shape: trawl's field → the file's
    /// (a dotted path, numbers for list entries), e.g. `{ question = "problem", answer =
    /// "reward_model.ground_truth" }`.
    #[serde(default)]
    #[serde(skip_serializing_if = "std::collections::BTreeMap::is_empty")]
    pub fields: trawl_core::task::FieldMap,
    /// Only these instance ids.
    #[serde(default)]
    pub instance_ids: Vec<String>,
    #[serde(default)]
    pub limit: Option<usize>,
    /// `{ type = "docker", ... }` (default) or `{ type = "local", ... }`.
    #[serde(default = "docker_default")]
    pub sandbox: Value,
    /// Limits on each agent command.
    #[serde(default = "agent_limits")]
    pub limits: ExecLimits,
    /// The repository's folder in the container (ignored by `local`).
    #[serde(default = "testbed")]
    pub workdir: String,
    /// Where the repositories of instances that trawl does not bundle live for the `local`
    /// sandbox: `<repos_dir>/<owner>__<name>` must be a git repository.
    #[serde(default)]
    pub repos_dir: Option<PathBuf>,
    #[serde(default)]
    pub format: InstanceFormat,
    /// Give the agent a one-commit history (the default), so the bug cannot be read from git.
    #[serde(default = "yes")]
    pub hide_history: bool,
    /// Include files the agent created in the submission (`false`: only changes to files the
    /// repository already had).
    #[serde(default = "yes")]
    pub new_files: bool,
    /// Paths left out of the submission, as git pathspecs (`reproduce*.py`, `scratch/`).
    #[serde(default)]
    pub exclude: Vec<String>,
    /// The test command of the evaluator; the test ids are appended.
    #[serde(default = "test_cmd")]
    pub test_cmd: String,
    /// Seconds the evaluator's test run may take.
    #[serde(default = "eval_timeout")]
    pub eval_timeout_secs: f64,
}

impl Default for SweConfig {
    fn default() -> Self {
        serde_json::from_value(json!({})).unwrap_or_else(|_| unreachable!())
    }
}

fn builtin() -> String {
    "builtin".into()
}
fn yes() -> bool {
    true
}
fn test_cmd() -> String {
    DEFAULT_TEST_CMD.into()
}
fn eval_timeout() -> f64 {
    600.0
}

impl EnvironmentConfig for SweConfig {
    fn build(self, cx: &BuildContext) -> Result<Arc<dyn Environment>, ComponentError> {
        let mut instances = match self.dataset.as_str() {
            "builtin" => instance::builtin(),
            "none" => Vec::new(),
            other => {
                return Err(ComponentError::at(
                    "dataset",
                    format!("unknown dataset `{other}`; use \"builtin\" or \"none\" with `files`"),
                ))
            }
        };
        for (i, f) in self.files.iter().enumerate() {
            let loaded = instance::load_file_with(&cx.resolve(f), &self.fields)
                .map_err(|e| ComponentError::at(&format!("files.{i}"), e))?;
            instances.extend(loaded);
        }
        let mut seen = std::collections::HashSet::new();
        if let Some(dup) = instances
            .iter()
            .find(|i| !seen.insert(i.instance_id.clone()))
        {
            return Err(ComponentError::at(
                "files",
                format!(
                    "instance_id `{}` appears twice; ids must be unique",
                    dup.instance_id
                ),
            ));
        }
        if !self.instance_ids.is_empty() {
            for id in &self.instance_ids {
                if !seen.contains(id) {
                    return Err(ComponentError::at(
                        "instance_ids",
                        format!("no instance has id `{id}`"),
                    ));
                }
            }
            instances.retain(|i| self.instance_ids.contains(&i.instance_id));
        }
        if let Some(limit) = self.limit {
            instances.truncate(limit);
        }
        if instances.is_empty() {
            return Err(ComponentError::at(
                "files",
                "no instances: give `files` or use `dataset = \"builtin\"`",
            ));
        }
        trawl_core::config::check_secs(self.eval_timeout_secs, false)
            .map_err(|m| ComponentError::at("eval_timeout_secs", m))?;
        let workspace = Workspace::new(self, cx)?;
        Ok(Arc::new(SweEnvironment {
            instances,
            workspace,
            ready: OnceCell::new(),
        }))
    }
}

trawl_core::register!(
    environment,
    "swe",
    "Fix a bug in a real repository (SWE-smith / SWE-bench instances) in a container; scored by its tests",
    SweConfig
);

/// The SWE environment, built from [`SweEnvironmentConfig`].
pub struct SweEnvironment {
    instances: Vec<SweInstance>,
    workspace: Workspace,
    ready: OnceCell<()>,
}

#[async_trait]
impl Environment for SweEnvironment {
    fn action_space(&self) -> ActionSpace {
        ActionSpace {
            shell: true,
            tool_calls: true,
            answer: true,
            ..ActionSpace::default()
        }
    }

    async fn tasks(&self) -> Result<Vec<Task>, EnvironmentError> {
        self.ready
            .get_or_try_init(|| async {
                self.workspace
                    .preflight(&self.instances)
                    .await
                    .map_err(EnvironmentError::Tasks)
            })
            .await?;
        Ok(self.instances.iter().map(SweInstance::to_task).collect())
    }

    async fn start(&self, task: &Task) -> Result<Box<dyn Episode>, EnvironmentError> {
        let start_error = |message: String| EnvironmentError::Start {
            task: task.id.clone(),
            message,
        };
        let inst = SweInstance::from_task(task).map_err(start_error)?;
        let run = self.workspace.settings();
        let checkout = self
            .workspace
            .checkout_for_agent(&inst, run.hide_history)
            .await
            .map_err(|e| start_error(e.to_string()))?;
        Ok(Box::new(SweEpisode {
            inst,
            checkout: Some(checkout),
            limits: run.limits.clone(),
            new_files: run.new_files,
            exclude: run.exclude.clone(),
            history: HashMap::new(),
        }))
    }

    fn default_evaluators(&self) -> Vec<(String, Value)> {
        vec![(
            "swe_tests".into(),
            serde_json::to_value(self.workspace.settings()).unwrap_or(Value::Null),
        )]
    }

    fn facts(&self) -> Value {
        self.workspace.facts()
    }

    async fn shutdown(&self) {
        self.workspace.shutdown().await;
    }
}

/// The task as the agent first reads it.
pub fn task_text(inst: &SweInstance, workdir: &str) -> String {
    format!(
        "<pr_description>\n{}\n</pr_description>\n\nThe repository is checked out at `{workdir}` (the current folder). Make the smallest change to its non-test source files that resolves the issue above.",
        inst.problem_statement.trim()
    )
}

struct SweEpisode {
    inst: SweInstance,
    checkout: Option<Checkout>,
    limits: ExecLimits,
    new_files: bool,
    exclude: Vec<String>,
    /// Earlier contents of files the editor changed, for `undo_edit`.
    history: HashMap<String, Vec<Vec<u8>>>,
}

fn tool_schemas() -> Vec<ToolSchema> {
    vec![
        ToolSchema::function(
            "bash",
            "Run one shell command in the repository (no network, no interactive programs) and get its exit code and output.",
            json!({
                "type": "object",
                "properties": {"command": {"type": "string", "description": "the command to run"}},
                "required": ["command"]
            }),
        ),
        ToolSchema::function(
            "str_replace_editor",
            "View, create and edit files. `view` shows a file with line numbers (or a folder's files two levels deep); `create` writes a new file; `str_replace` replaces `old_str`, which must occur exactly once, with `new_str`; `insert` puts `new_str` after line `insert_line`; `undo_edit` reverts the last edit of a file.",
            json!({
                "type": "object",
                "properties": {
                    "command": {"type": "string", "enum": ["view", "create", "str_replace", "insert", "undo_edit"]},
                    "path": {"type": "string", "description": "absolute path, or relative to the repository"},
                    "file_text": {"type": "string", "description": "for create: the file's contents"},
                    "old_str": {"type": "string", "description": "for str_replace: the exact text to replace"},
                    "new_str": {"type": "string", "description": "for str_replace and insert: the new text"},
                    "insert_line": {"type": "integer", "description": "for insert: the line after which new_str goes (0 = top)"},
                    "view_range": {"type": "array", "items": {"type": "integer"}, "description": "for view: [first, last] line, last -1 = to the end"}
                },
                "required": ["command", "path"]
            }),
        ),
        ToolSchema::function(
            "submit",
            "Submit the current state of the repository as the fix. Ends the task.",
            json!({"type": "object", "properties": {}}),
        ),
    ]
}

impl SweEpisode {
    fn checkout(&self) -> Result<&Checkout, EnvironmentError> {
        self.checkout
            .as_ref()
            .ok_or_else(|| EnvironmentError::Runtime("the episode is over".into()))
    }

    fn path(&self, p: &str) -> Result<String, EnvironmentError> {
        let c = self.checkout()?;
        Ok(if p.starts_with('/') {
            p.to_string()
        } else {
            format!(
                "{}/{}",
                c.workdir.trim_end_matches('/'),
                p.trim_start_matches("./")
            )
        })
    }

    async fn shell(&self, command: &str) -> Result<Observation, EnvironmentError> {
        let c = self.checkout()?;
        // Both streams in one, interleaved as the agent would see them in a terminal.
        let r = c
            .sandbox
            .exec(&format!("exec 2>&1\n{command}"), &self.limits)
            .await
            .map_err(|e| EnvironmentError::Runtime(e.to_string()))?;
        let mut output = r.stdout.clone();
        if !r.stderr.is_empty() {
            output.push_str(&r.stderr);
        }
        if r.success() {
            let mut lines = output.trim_start().lines();
            if lines.next().map(str::trim) == Some(SUBMIT_SENTINEL) {
                return Ok(Observation::finished(lines.collect::<Vec<_>>().join("\n")));
            }
        }
        let note = match r.outcome {
            ExecOutcome::Exited { .. } => None,
            ExecOutcome::TimedOut => Some(format!(
                "The command timed out after {} seconds and was killed. Avoid commands that run long or wait for input.",
                self.limits.wall_time_secs
            )),
            _ => Some(format!("The command ended abnormally: {}.", r.describe())),
        };
        if r.truncated() {
            output.push_str("\n[output truncated]");
        }
        if let Some(n) = note {
            if !output.is_empty() && !output.ends_with('\n') {
                output.push('\n');
            }
            output.push_str(&n);
        }
        Ok(Observation {
            content: output,
            done: false,
            exit_code: Some(r.exit_code().unwrap_or(-1)),
        })
    }

    async fn read(&self, path: &str) -> Result<Option<String>, EnvironmentError> {
        let c = self.checkout()?;
        match c.sandbox.read_file(path).await {
            Ok(b) => Ok(Some(String::from_utf8_lossy(&b).into_owned())),
            Err(SandboxError::OutsidePath(p)) => Err(EnvironmentError::Runtime(format!(
                "path {p} is outside the sandbox"
            ))),
            Err(_) => Ok(None),
        }
    }

    async fn write(
        &mut self,
        path: &str,
        text: &str,
        remember: Option<String>,
    ) -> Result<(), String> {
        let c = self.checkout().map_err(|e| e.to_string())?;
        c.sandbox
            .write_file(path, text.as_bytes())
            .await
            .map_err(|e| format!("cannot write {path}: {e}"))?;
        if let Some(old) = remember {
            self.history
                .entry(path.to_string())
                .or_default()
                .push(old.into_bytes());
        }
        Ok(())
    }

    async fn editor(&mut self, args: &Value) -> Result<String, EnvironmentError> {
        let s = |k: &str| args.get(k).and_then(Value::as_str);
        let Some(command) = s("command") else {
            return Ok("Error: the `command` parameter is required (view, create, str_replace, insert, undo_edit).".into());
        };
        let Some(raw_path) = s("path") else {
            return Ok("Error: the `path` parameter is required.".into());
        };
        let path = self.path(raw_path)?;
        let current = self.read(&path).await?;
        let result: Result<String, String> = match (command, current) {
            ("view", Some(text)) => {
                let range = args
                    .get("view_range")
                    .and_then(Value::as_array)
                    .and_then(|a| Some((a.first()?.as_i64()?, a.get(1)?.as_i64()?)));
                editor::view(&path, &text, range)
            }
            ("view", None) => {
                let out = self
                    .shell(&format!(
                        "find {} -maxdepth 2 -not -path '*/.*' | sort",
                        quote(&path)
                    ))
                    .await?;
                if out.exit_code == Some(0) && !out.content.trim().is_empty() {
                    Ok(format!(
                        "Here are the files and directories up to 2 levels deep in {path}, excluding hidden items:\n{}",
                        out.content
                    ))
                } else {
                    Err(format!("The path {path} does not exist."))
                }
            }
            ("create", Some(_)) => Err(format!(
                "File already exists at: {path}. Cannot overwrite files using command `create`."
            )),
            ("create", None) => match s("file_text") {
                None => Err("Parameter `file_text` is required for command: create".into()),
                Some(text) => self
                    .write(&path, text, None)
                    .await
                    .map(|()| format!("File created successfully at: {path}")),
            },
            ("str_replace", Some(text)) => {
                match editor::str_replace(&path, &text, s("old_str").unwrap_or(""), s("new_str").unwrap_or("")) {
                    Ok((updated, msg)) => self.write(&path, &updated, Some(text)).await.map(|()| msg),
                    Err(e) => Err(e),
                }
            }
            ("insert", Some(text)) => {
                let Some(line) = args.get("insert_line").and_then(Value::as_i64) else {
                    return Ok("Error: parameter `insert_line` is required for command: insert".into());
                };
                let Some(new) = s("new_str") else {
                    return Ok("Error: parameter `new_str` is required for command: insert".into());
                };
                match editor::insert(&path, &text, line, new) {
                    Ok((updated, msg)) => self.write(&path, &updated, Some(text)).await.map(|()| msg),
                    Err(e) => Err(e),
                }
            }
            ("undo_edit", Some(_)) => match self.history.get_mut(&path).and_then(Vec::pop) {
                None => Err(format!("No edit history found for {path}.")),
                Some(old) => {
                    let text = String::from_utf8_lossy(&old).into_owned();
                    self.write(&path, &text, None)
                        .await
                        .map(|()| format!("Last edit to {path} undone successfully."))
                }
            },
            ("str_replace" | "insert" | "undo_edit", None) => {
                Err(format!("The path {path} does not exist or is not a file."))
            }
            (other, _) => Err(format!(
                "Unrecognized command {other}. The allowed commands are: view, create, str_replace, insert, undo_edit"
            )),
        };
        Ok(result.unwrap_or_else(|e| format!("Error: {e}")))
    }

    async fn tool(&mut self, call: &ToolCall) -> Result<Observation, EnvironmentError> {
        let args: Value = serde_json::from_str(&call.function.arguments).unwrap_or(Value::Null);
        match call.function.name.as_str() {
            "bash" => match args.get("command").and_then(Value::as_str) {
                Some(cmd) => self.shell(cmd).await,
                None => Ok(Observation::text("Error: the `command` parameter is required.")),
            },
            "str_replace_editor" => Ok(Observation::text(self.editor(&args).await?)),
            "submit" => Ok(Observation::finished("Submitted.")),
            other => Ok(Observation::text(format!(
                "Error: there is no tool named `{other}`; the tools are bash, str_replace_editor and submit."
            ))),
        }
    }

    /// The submission: the diff of the working tree against the task's starting commit.
    async fn diff(&self) -> Result<String, EnvironmentError> {
        let c = self.checkout()?;
        let mut spec = String::from(" -- .");
        for pattern in &self.exclude {
            spec.push_str(&format!(" {}", quote(&format!(":(exclude){pattern}"))));
        }
        let stage = if self.new_files {
            format!("{GIT} add -A{spec}")
        } else {
            format!("{GIT} add -u{spec}")
        };
        let script = format!("set -e\n{stage}\n{GIT} diff --cached --binary HEAD");
        let limits = ExecLimits {
            wall_time_secs: 120.0,
            output_bytes: 16 << 20,
            ..self.limits.clone()
        };
        let r = c
            .sandbox
            .exec(&script, &limits)
            .await
            .map_err(|e| EnvironmentError::Runtime(e.to_string()))?;
        if !r.success() || r.stdout_truncated {
            return Err(EnvironmentError::Runtime(format!(
                "cannot take the diff ({}): {}",
                if r.stdout_truncated {
                    "larger than 16 MiB".to_string()
                } else {
                    r.describe()
                },
                tail(&r.stderr, 1000)
            )));
        }
        Ok(r.stdout)
    }
}

#[async_trait]
impl Episode for SweEpisode {
    fn opening(&self) -> Vec<Message> {
        let workdir = self
            .checkout
            .as_ref()
            .map(|c| c.workdir.as_str())
            .unwrap_or("");
        vec![Message::user(task_text(&self.inst, workdir))]
    }

    fn tools(&self) -> Vec<ToolSchema> {
        tool_schemas()
    }

    async fn act(&mut self, action: &Action) -> Result<Observation, EnvironmentError> {
        match action {
            Action::Shell { command } => self.shell(command).await,
            Action::ToolCall { call } => self.tool(call).await,
            Action::Answer { .. } | Action::Message { .. } => Ok(Observation::text(
                "This task is done in the repository: run shell commands (or call the tools), and submit when the fix is in place.",
            )),
        }
    }

    async fn finish(&mut self) -> Result<Artifacts, EnvironmentError> {
        let diff = self.diff().await;
        if let Some(c) = self.checkout.take() {
            c.sandbox
                .close()
                .await
                .map_err(|e| EnvironmentError::Runtime(e.to_string()))?;
        }
        let diff = diff?;
        Ok(Artifacts {
            submission: Some(diff),
            extra: Value::Null,
            ..Artifacts::default()
        })
    }
}

/// `[[evaluators]] type = "swe_tests"` takes the environment's table.
impl EvaluatorConfig for SweConfig {
    fn build(self, cx: &BuildContext) -> Result<Arc<dyn Evaluator>, ComponentError> {
        Ok(Arc::new(SweTestsEvaluator::new(self, cx)?))
    }
}

trawl_core::register!(
    evaluator,
    "swe_tests",
    "SWE harness: the patch on a fresh checkout, FAIL_TO_PASS and PASS_TO_PASS with pytest; success = resolved",
    SweConfig
);

/// Scores SWE trajectories the way the SWE-smith / SWE-bench harness does.
pub struct SweTestsEvaluator {
    workspace: Workspace,
}

/// What one evaluation found, before it becomes an `Evaluation`.
#[derive(Debug, Clone)]
pub struct HarnessResult {
    pub report: Report,
    /// The end of the test run's output.
    pub log_tail: String,
}

impl SweTestsEvaluator {
    /// Removes the containers its evaluations left (none, unless one was cut short).
    pub async fn shutdown(&self) {
        self.workspace.shutdown().await;
    }

    pub fn new(config: SweConfig, cx: &BuildContext) -> Result<Self, ComponentError> {
        Ok(SweTestsEvaluator {
            workspace: Workspace::new(config, cx)?,
        })
    }

    /// Applies `patch` (None: no submission) to a fresh checkout of `inst` and runs its tests.
    pub async fn evaluate_patch(
        &self,
        inst: &SweInstance,
        patch: Option<&str>,
    ) -> Result<HarnessResult, SandboxError> {
        // The untouched working copy, as the agent started from it (its history kept): a
        // fresh view of it where the sandbox has snapshots.
        let c = self.workspace.checkout_for_agent(inst, false).await?;
        let result = self.run_harness(&c, inst, patch).await;
        let closed = c.sandbox.close().await;
        let result = result?;
        closed?;
        Ok(result)
    }

    async fn run_harness(
        &self,
        c: &Checkout,
        inst: &SweInstance,
        patch: Option<&str>,
    ) -> Result<HarnessResult, SandboxError> {
        let ws = &self.workspace;
        let mut report = Report {
            patch_is_none: patch.is_none(),
            patch_exists: patch.is_some_and(|p| !p.trim().is_empty()),
            ..Report::default()
        };
        if let Some(p) = patch.filter(|p| !p.trim().is_empty()) {
            let path = ws.put_patch(c, "model.patch", p).await?;
            let q = quote(&path);
            // As the SWE-bench harness: git apply, then a more forgiving patch(1).
            let apply = format!(
                "{GIT} apply --whitespace=nowarn {q} 2>&1 || {GIT} apply --whitespace=nowarn --recount --ignore-whitespace {q} 2>&1 || patch --batch --fuzz=5 -p1 -i {q} 2>&1"
            );
            let r = c.sandbox.exec(&apply, &ws.settings.limits).await?;
            if !r.success() {
                return Ok(HarnessResult {
                    report,
                    log_tail: format!("the patch does not apply:\n{}", tail(&r.stdout, 4000)),
                });
            }
        }
        report.patch_successfully_applied = report.patch_exists;
        if let Some(tp) = inst.test_patch.as_deref().filter(|t| !t.trim().is_empty()) {
            let path = ws.put_patch(c, "test.patch", tp).await?;
            ws.script(
                c,
                &format!("{GIT} apply --whitespace=nowarn {}", quote(&path)),
                "applying the instance's test_patch",
            )
            .await?;
        }
        let tests: Vec<String> = inst
            .fail_to_pass
            .iter()
            .chain(&inst.pass_to_pass)
            .map(|t| quote(t))
            .collect();
        let limits = ExecLimits {
            wall_time_secs: ws.settings.eval_timeout_secs,
            cpu_secs: (ws.settings.eval_timeout_secs as u64).max(1) * 2,
            output_bytes: 8 << 20,
            ..ws.settings.limits.clone()
        };
        let cmd = format!(
            "rm -rf {SCRATCH}\nexec 2>&1\n{} {}",
            ws.settings.test_cmd,
            tests.join(" ")
        );
        let r = c.sandbox.exec(&cmd, &limits).await?;
        if r.outcome == ExecOutcome::TimedOut {
            report.timed_out = true;
            report.timeout = Some(ws.settings.eval_timeout_secs as u64);
        }
        let statuses = report::parse_pytest(&r.stdout);
        report.tests_status = Report::grade(&inst.fail_to_pass, &inst.pass_to_pass, &statuses);
        report.resolved = !report.timed_out && Report::all_pass(&report.tests_status);
        Ok(HarnessResult {
            report,
            log_tail: tail(&r.stdout, 4000).to_string(),
        })
    }
}

#[async_trait]
impl Evaluator for SweTestsEvaluator {
    fn name(&self) -> &str {
        "swe_tests"
    }

    async fn evaluate(&self, record: &TrajectoryRecord) -> Result<Evaluation, EvaluatorError> {
        let inst =
            SweInstance::from_task(&record.task).map_err(|message| EvaluatorError::Unscorable {
                evaluator: "swe_tests".into(),
                task: record.task.id.clone(),
                message,
            })?;
        let result = self
            .evaluate_patch(&inst, record.outcome.submission.as_deref())
            .await
            .map_err(|e| EvaluatorError::Failed {
                evaluator: "swe_tests".into(),
                message: e.to_string(),
            })?;
        let r = &result.report;
        let frac = |key: &str| {
            let s = &r.tests_status[key];
            let n = s.success.len() + s.failure.len();
            if n == 0 {
                1.0
            } else {
                s.success.len() as f64 / n as f64
            }
        };
        let components = if r.tests_status.is_empty() {
            Default::default()
        } else {
            [
                ("fail_to_pass".to_string(), frac("FAIL_TO_PASS")),
                ("pass_to_pass".to_string(), frac("PASS_TO_PASS")),
            ]
            .into()
        };
        Ok(Evaluation {
            evaluator: "swe_tests".into(),
            reward: if r.resolved { 1.0 } else { 0.0 },
            success: r.resolved,
            components,
            details: json!({
                "report": r.to_harness_json(&inst.instance_id),
                "log_tail": result.log_tail,
            }),
        })
    }
    async fn shutdown(&self) {
        SweTestsEvaluator::shutdown(self).await;
    }
}

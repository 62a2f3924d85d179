//! The host's stand-ins for a plugin's components: each holds the plugin and a handle, and turns
//! every trait call into one request across the boundary, run off the async workers.

use std::io::Write;
use std::sync::Arc;

use async_trait::async_trait;
use serde_json::Value;
use trawl_core::model::{Completion, CompletionRequest, ModelDescription, ModelError};
use trawl_core::registry::Factory;
use trawl_core::sandbox::{
    ExecLimits, ExecResult, Sandbox, SandboxBackend, SandboxError, SandboxSpec,
};
use trawl_core::{
    Action, ActionSpace, AgentScaffold, Artifacts, BuildContext, ComponentError, Environment,
    EnvironmentError, Episode, Evaluation, Evaluator, EvaluatorError, ExportError, Exporter,
    LanguageModel, Message, Observation, Role, RolloutContext, ScaffoldError, ScaffoldOutcome,
    Task, ToolSchema, TrajectoryRecord,
};
use trawl_plugin_abi::wire::{
    Built, ErrorKind, HostAnswer, HostAsk, Reply, Request, ScaffoldStep, WireError,
};

use crate::plugin::Plugin;

/// Runs a blocking plugin call without stalling an async worker: in place on a multi-threaded
/// runtime (other tasks move to other workers), directly outside one.
fn blocking<T>(f: impl FnOnce() -> T) -> T {
    match tokio::runtime::Handle::try_current() {
        Ok(h) if h.runtime_flavor() == tokio::runtime::RuntimeFlavor::MultiThread => {
            tokio::task::block_in_place(f)
        }
        _ => f(),
    }
}

/// One call on the blocking pool, for async trait methods.
async fn call_async(plugin: &Arc<Plugin>, request: Request) -> Result<Reply, WireError> {
    let p = plugin.clone();
    tokio::task::spawn_blocking(move || p.call(&request))
        .await
        .unwrap_or_else(|e| {
            Err(WireError::new(
                ErrorKind::Panic,
                format!("the call's thread failed: {e}"),
            ))
        })
}

fn unexpected(plugin: &Plugin, op: &str, reply: &Reply) -> WireError {
    WireError::new(
        ErrorKind::Protocol,
        format!("{}: unexpected answer to `{op}`: {reply:?}", plugin.label()),
    )
}

/// Tells the plugin a handle is no longer used. From a destructor: never blocks an async worker.
fn release(plugin: &Arc<Plugin>, handle: u64) {
    let p = plugin.clone();
    let run = move || {
        if let Err(e) = p.call(&Request::Release { handle }) {
            tracing::warn!("{}", p.describe("release", &e));
        }
    };
    match tokio::runtime::Handle::try_current() {
        Ok(h) => {
            h.spawn_blocking(run);
        }
        Err(_) => run(),
    }
}

/// The registry factory of one plugin kind.
pub(crate) fn factory(plugin: &Arc<Plugin>, role: Role, kind: &str) -> Factory {
    let (p, k) = (plugin.clone(), kind.to_string());
    match role {
        Role::Environment => Factory::Environment(Arc::new(move |v, cx| {
            let (handle, built) = build(&p, role, &k, v, cx)?;
            match built {
                Built::Environment {
                    action_space,
                    default_evaluators,
                    facts,
                } => Ok(Arc::new(PluginEnvironment {
                    plugin: p.clone(),
                    handle,
                    action_space,
                    default_evaluators,
                    facts,
                })),
                other => Err(mismatch(&p, role, &other)),
            }
        })),
        Role::Evaluator => Factory::Evaluator(Arc::new(move |v, cx| {
            let (handle, built) = build(&p, role, &k, v, cx)?;
            match built {
                Built::Evaluator { name } => Ok(Arc::new(PluginEvaluator {
                    plugin: p.clone(),
                    handle,
                    name,
                })),
                other => Err(mismatch(&p, role, &other)),
            }
        })),
        Role::Exporter => Factory::Exporter(Arc::new(move |v, cx| {
            let (handle, built) = build(&p, role, &k, v, cx)?;
            match built {
                Built::Exporter {
                    extension,
                    file_name,
                } => Ok(Arc::new(PluginExporter {
                    plugin: p.clone(),
                    handle,
                    extension,
                    file_name,
                })),
                other => Err(mismatch(&p, role, &other)),
            }
        })),
        Role::Scaffold => Factory::Scaffold(Arc::new(move |v, cx| {
            let (handle, built) = build(&p, role, &k, v, cx)?;
            match built {
                Built::Scaffold { required_actions } => Ok(Arc::new(PluginScaffold {
                    plugin: p.clone(),
                    handle,
                    required_actions,
                })),
                other => Err(mismatch(&p, role, &other)),
            }
        })),
        Role::Model => Factory::Model(Arc::new(move |v, cx| {
            let (handle, built) = build(&p, role, &k, v, cx)?;
            match built {
                Built::Model { description } => Ok(Arc::new(PluginModel {
                    plugin: p.clone(),
                    handle,
                    description,
                })),
                other => Err(mismatch(&p, role, &other)),
            }
        })),
        Role::Sandbox => Factory::Sandbox(Arc::new(move |v, cx| {
            let (handle, built) = build(&p, role, &k, v, cx)?;
            match built {
                Built::Sandbox {
                    describe,
                    runs_images,
                } => Ok(Arc::new(PluginSandboxBackend {
                    plugin: p.clone(),
                    handle,
                    describe,
                    runs_images,
                })),
                other => Err(mismatch(&p, role, &other)),
            }
        })),
    }
}

fn mismatch(plugin: &Plugin, role: Role, built: &Built) -> ComponentError {
    ComponentError::new(format!(
        "{} built {built:?} when asked for a {role}",
        plugin.label()
    ))
}

fn build(
    plugin: &Arc<Plugin>,
    role: Role,
    kind: &str,
    settings: &Value,
    cx: &BuildContext,
) -> Result<(u64, Built), ComponentError> {
    let request = Request::Build {
        role,
        kind: kind.to_string(),
        settings: settings.clone(),
        context: cx.into(),
    };
    match blocking(|| plugin.call(&request)) {
        Ok(Reply::Built { handle, built }) => Ok((handle, built)),
        Ok(other) => Err(ComponentError::new(
            unexpected(plugin, "build", &other).message,
        )),
        Err(e) if e.kind == ErrorKind::Config => Err(ComponentError {
            path: e.path,
            message: e.message,
        }),
        Err(e) => Err(ComponentError::new(plugin.describe("build", &e))),
    }
}

/// A plugin's evaluator.
pub struct PluginEvaluator {
    plugin: Arc<Plugin>,
    handle: u64,
    name: String,
}

#[async_trait]
impl Evaluator for PluginEvaluator {
    fn name(&self) -> &str {
        &self.name
    }

    async fn evaluate(&self, record: &TrajectoryRecord) -> Result<Evaluation, EvaluatorError> {
        let request = Request::Evaluate {
            handle: self.handle,
            record: Box::new(record.clone()),
        };
        let failed = |message: String| EvaluatorError::Failed {
            evaluator: self.name.clone(),
            message,
        };
        match call_async(&self.plugin, request).await {
            Ok(Reply::Evaluation { evaluation }) => Ok(evaluation),
            Ok(other) => Err(failed(unexpected(&self.plugin, "evaluate", &other).message)),
            Err(e) if e.kind == ErrorKind::Unscorable => Err(EvaluatorError::Unscorable {
                evaluator: self.name.clone(),
                task: record.task.id.clone(),
                message: e.message,
            }),
            Err(e) => Err(failed(self.plugin.describe("evaluate", &e))),
        }
    }
}

impl Drop for PluginEvaluator {
    fn drop(&mut self) {
        release(&self.plugin, self.handle);
    }
}

/// A plugin's exporter.
pub struct PluginExporter {
    plugin: Arc<Plugin>,
    handle: u64,
    extension: String,
    file_name: Option<String>,
}

impl PluginExporter {
    fn bytes(
        &self,
        request: Request,
        key: &str,
        out: &mut dyn Write,
    ) -> Result<usize, ExportError> {
        let op = request.op();
        match blocking(|| self.plugin.call(&request)) {
            Ok(Reply::Exported { examples, bytes }) => {
                out.write_all(&bytes)?;
                Ok(examples)
            }
            Ok(other) => Err(ExportError::Record {
                key: key.to_string(),
                message: unexpected(&self.plugin, op, &other).message,
            }),
            Err(e) => Err(ExportError::Record {
                key: key.to_string(),
                message: self.plugin.describe(op, &e),
            }),
        }
    }
}

impl Exporter for PluginExporter {
    fn extension(&self) -> &str {
        &self.extension
    }

    fn file_name(&self) -> Option<&str> {
        self.file_name.as_deref()
    }

    fn write(&self, record: &TrajectoryRecord, out: &mut dyn Write) -> Result<usize, ExportError> {
        let request = Request::ExportRecord {
            handle: self.handle,
            record: Box::new(record.clone()),
        };
        self.bytes(request, &record.key.to_string(), out)
    }

    fn finish(&self, out: &mut dyn Write) -> Result<usize, ExportError> {
        let request = Request::ExportFinish {
            handle: self.handle,
        };
        self.bytes(request, "(end of export)", out)
    }
}

impl Drop for PluginExporter {
    fn drop(&mut self) {
        release(&self.plugin, self.handle);
    }
}

/// A plugin's environment.
pub struct PluginEnvironment {
    plugin: Arc<Plugin>,
    handle: u64,
    action_space: ActionSpace,
    default_evaluators: Vec<(String, Value)>,
    facts: Value,
}

fn env_error(plugin: &Plugin, op: &str, e: WireError) -> EnvironmentError {
    match e.kind {
        ErrorKind::Tasks => EnvironmentError::Tasks(e.message),
        _ => EnvironmentError::Runtime(plugin.describe(op, &e)),
    }
}

#[async_trait]
impl Environment for PluginEnvironment {
    fn action_space(&self) -> ActionSpace {
        self.action_space
    }

    async fn tasks(&self) -> Result<Vec<Task>, EnvironmentError> {
        let request = Request::Tasks {
            handle: self.handle,
        };
        match call_async(&self.plugin, request).await {
            Ok(Reply::Tasks { tasks }) => Ok(tasks),
            Ok(other) => Err(EnvironmentError::Tasks(
                unexpected(&self.plugin, "tasks", &other).message,
            )),
            Err(e) => Err(env_error(&self.plugin, "tasks", e)),
        }
    }

    async fn start(&self, task: &Task) -> Result<Box<dyn Episode>, EnvironmentError> {
        let request = Request::Start {
            handle: self.handle,
            task: task.clone(),
        };
        let failed = |message: String| EnvironmentError::Start {
            task: task.id.clone(),
            message,
        };
        match call_async(&self.plugin, request).await {
            Ok(Reply::Started {
                episode,
                opening,
                tools,
            }) => Ok(Box::new(PluginEpisode {
                plugin: self.plugin.clone(),
                id: episode,
                opening,
                tools,
            })),
            Ok(other) => Err(failed(unexpected(&self.plugin, "start", &other).message)),
            Err(e) if e.kind == ErrorKind::Start => Err(failed(e.message)),
            Err(e) => Err(failed(self.plugin.describe("start", &e))),
        }
    }

    fn default_evaluators(&self) -> Vec<(String, Value)> {
        self.default_evaluators.clone()
    }

    fn facts(&self) -> Value {
        self.facts.clone()
    }

    async fn shutdown(&self) {
        let request = Request::Shutdown {
            handle: self.handle,
        };
        if let Err(e) = call_async(&self.plugin, request).await {
            tracing::warn!("{}", self.plugin.describe("shutdown", &e));
        }
    }
}

impl Drop for PluginEnvironment {
    fn drop(&mut self) {
        release(&self.plugin, self.handle);
    }
}

/// An episode running inside a plugin.
struct PluginEpisode {
    plugin: Arc<Plugin>,
    id: u64,
    opening: Vec<Message>,
    tools: Vec<ToolSchema>,
}

#[async_trait]
impl Episode for PluginEpisode {
    fn opening(&self) -> Vec<Message> {
        self.opening.clone()
    }

    fn tools(&self) -> Vec<ToolSchema> {
        self.tools.clone()
    }

    async fn act(&mut self, action: &Action) -> Result<Observation, EnvironmentError> {
        let request = Request::Act {
            episode: self.id,
            action: action.clone(),
        };
        match call_async(&self.plugin, request).await {
            Ok(Reply::Observation { observation }) => Ok(observation),
            Ok(other) => Err(EnvironmentError::Runtime(
                unexpected(&self.plugin, "act", &other).message,
            )),
            Err(e) => Err(env_error(&self.plugin, "act", e)),
        }
    }

    async fn finish(&mut self) -> Result<Artifacts, EnvironmentError> {
        let request = Request::Finish { episode: self.id };
        match call_async(&self.plugin, request).await {
            Ok(Reply::Artifacts { artifacts }) => Ok(artifacts),
            Ok(other) => Err(EnvironmentError::Runtime(
                unexpected(&self.plugin, "finish", &other).message,
            )),
            Err(e) => Err(env_error(&self.plugin, "finish", e)),
        }
    }
}

impl Drop for PluginEpisode {
    fn drop(&mut self) {
        release(&self.plugin, self.id);
    }
}

/// A plugin's scaffold. The rollout runs inside the plugin; every model call and action it needs
/// comes back here as a [`HostAsk`], which this side carries out on the run's real model and
/// episode and records in the engine's transcript as it goes, so that a rollout cut short keeps
/// every call and action so far.
pub struct PluginScaffold {
    plugin: Arc<Plugin>,
    handle: u64,
    required_actions: ActionSpace,
}

/// Releases a rollout the host stopped driving before it ended (its time ran out).
struct RolloutGuard {
    plugin: Arc<Plugin>,
    id: Option<u64>,
}

impl Drop for RolloutGuard {
    fn drop(&mut self) {
        if let Some(id) = self.id {
            release(&self.plugin, id);
        }
    }
}

#[async_trait]
impl AgentScaffold for PluginScaffold {
    fn required_actions(&self) -> ActionSpace {
        self.required_actions
    }

    async fn run(&self, cx: RolloutContext<'_>) -> Result<ScaffoldOutcome, ScaffoldError> {
        let RolloutContext {
            episode,
            model,
            sampling,
            transcript,
        } = cx;
        let broken = |message: String| ScaffoldError::Scaffold(message);
        let mut request = Request::RunScaffold {
            handle: self.handle,
            model: model.describe(),
            sampling: sampling.clone(),
            transcript: Box::new(transcript.state()),
            elapsed_ms: transcript.elapsed_ms(),
        };
        let mut guard = RolloutGuard {
            plugin: self.plugin.clone(),
            id: None,
        };
        // The errors this side handed the scaffold: the only ones it may end with as the model's
        // or the environment's, so that a plugin can never pass its own failure off as theirs.
        let mut handed: Vec<ScaffoldError> = Vec::new();
        loop {
            let (rollout, step) = match call_async(&self.plugin, request).await {
                Ok(Reply::Scaffold { rollout, step }) => (rollout, step),
                Ok(other) => return Err(broken(unexpected(&self.plugin, "run", &other).message)),
                Err(e) => return Err(broken(self.plugin.describe("run", &e))),
            };
            let answer = match step {
                ScaffoldStep::Ask { ask } => {
                    guard.id = Some(rollout);
                    match ask {
                        HostAsk::Complete { request } => {
                            let t = std::time::Instant::now();
                            let result = model.complete(&request).await;
                            transcript.model_ms += t.elapsed().as_millis() as u64;
                            match &result {
                                Ok(c) => {
                                    transcript.messages = request.messages;
                                    transcript.record_completion(None, c);
                                }
                                Err(e) => handed.push(ScaffoldError::Model(e.clone())),
                            }
                            HostAnswer::Completion {
                                result: result.map(Box::new),
                            }
                        }
                        HostAsk::Act { action } => {
                            let result = transcript.act(&mut *episode, action).await;
                            if let Err(e) = &result {
                                handed.push(ScaffoldError::Environment(e.clone()));
                            }
                            HostAnswer::Observation { result }
                        }
                    }
                }
                ScaffoldStep::Done {
                    result,
                    transcript: theirs,
                } => {
                    guard.id = None;
                    self.take_over(transcript, *theirs);
                    return match result {
                        Ok(outcome) => Ok(outcome),
                        Err(e @ (ScaffoldError::Model(_) | ScaffoldError::Environment(_)))
                            if handed.contains(&e) =>
                        {
                            Err(e)
                        }
                        Err(ScaffoldError::Scaffold(m)) => {
                            Err(broken(format!("{}: {m}", self.plugin.label())))
                        }
                        Err(other) => Err(broken(format!(
                            "{} ended with an error this trawl never gave it: {other}",
                            self.plugin.label()
                        ))),
                    };
                }
            };
            request = Request::Resume { rollout, answer };
        }
    }
}

impl PluginScaffold {
    /// Takes the conversation and artifacts the scaffold ended with. What happened at the model
    /// and in the episode (usage, token data, finish reasons, steps and their observations)
    /// stays as this side recorded it; only the steps' links to their replies come from the
    /// scaffold's copy, whose messages they index.
    fn take_over(
        &self,
        transcript: &mut trawl_core::Transcript,
        theirs: trawl_core::TranscriptState,
    ) {
        let same_steps = theirs.steps.len() == transcript.steps.len()
            && theirs
                .steps
                .iter()
                .zip(&transcript.steps)
                .all(|(a, b)| a.action == b.action);
        if same_steps {
            for (mine, their) in transcript.steps.iter_mut().zip(&theirs.steps) {
                mine.reply = their.reply;
            }
        } else {
            tracing::warn!(
                "{}: the scaffold's record of its steps differs from the episode's; keeping the episode's",
                self.plugin.label()
            );
        }
        transcript.messages = theirs.messages;
        transcript.tools = theirs.tools;
        transcript.artifacts = theirs.artifacts;
    }
}

impl Drop for PluginScaffold {
    fn drop(&mut self) {
        release(&self.plugin, self.handle);
    }
}

/// A plugin's model backend.
pub struct PluginModel {
    plugin: Arc<Plugin>,
    handle: u64,
    description: ModelDescription,
}

impl PluginModel {
    fn error(&self, op: &str, e: WireError) -> ModelError {
        e.as_model()
            .unwrap_or_else(|| ModelError::Backend(self.plugin.describe(op, &e)))
    }
}

#[async_trait]
impl LanguageModel for PluginModel {
    fn describe(&self) -> ModelDescription {
        self.description.clone()
    }

    async fn complete(&self, request: &CompletionRequest) -> Result<Completion, ModelError> {
        let request = Request::Complete {
            handle: self.handle,
            request: Box::new(request.clone()),
        };
        match call_async(&self.plugin, request).await {
            Ok(Reply::Completion { completion }) => Ok(*completion),
            Ok(other) => Err(ModelError::Backend(
                unexpected(&self.plugin, "complete", &other).message,
            )),
            Err(e) => Err(self.error("complete", e)),
        }
    }

    async fn list_models(&self) -> Result<Option<Vec<String>>, ModelError> {
        let request = Request::ListModels {
            handle: self.handle,
        };
        match call_async(&self.plugin, request).await {
            Ok(Reply::Models { models }) => Ok(models),
            Ok(other) => Err(ModelError::Backend(
                unexpected(&self.plugin, "list_models", &other).message,
            )),
            Err(e) => Err(self.error("list_models", e)),
        }
    }
}

impl Drop for PluginModel {
    fn drop(&mut self) {
        release(&self.plugin, self.handle);
    }
}

fn sandbox_error(plugin: &Plugin, op: &str, e: WireError) -> SandboxError {
    e.as_sandbox()
        .unwrap_or_else(|| SandboxError::Infra(plugin.describe(op, &e)))
}

/// One sandbox call that answers `Done`.
async fn sandbox_done(plugin: &Arc<Plugin>, request: Request) -> Result<(), SandboxError> {
    let op = request.op();
    match call_async(plugin, request).await {
        Ok(Reply::Done) => Ok(()),
        Ok(other) => Err(SandboxError::Infra(unexpected(plugin, op, &other).message)),
        Err(e) => Err(sandbox_error(plugin, op, e)),
    }
}

/// A plugin's sandbox backend.
pub struct PluginSandboxBackend {
    plugin: Arc<Plugin>,
    handle: u64,
    describe: Value,
    runs_images: bool,
}

#[async_trait]
impl SandboxBackend for PluginSandboxBackend {
    fn describe(&self) -> Value {
        self.describe.clone()
    }

    async fn create(&self, spec: &SandboxSpec) -> Result<Box<dyn Sandbox>, SandboxError> {
        let request = Request::CreateSandbox {
            handle: self.handle,
            spec: spec.clone(),
        };
        match call_async(&self.plugin, request).await {
            Ok(Reply::Sandbox {
                sandbox,
                working_dir,
                endpoint,
            }) => Ok(Box::new(PluginSandbox {
                plugin: self.plugin.clone(),
                id: sandbox,
                working_dir,
                served: spec.serve.zip(endpoint),
            })),
            Ok(other) => Err(SandboxError::Infra(
                unexpected(&self.plugin, "create", &other).message,
            )),
            Err(e) => Err(sandbox_error(&self.plugin, "create", e)),
        }
    }

    fn runs_images(&self) -> bool {
        self.runs_images
    }

    async fn missing_images(&self, images: &[String]) -> Result<Vec<String>, SandboxError> {
        let request = Request::MissingImages {
            handle: self.handle,
            images: images.to_vec(),
        };
        match call_async(&self.plugin, request).await {
            Ok(Reply::Images { images }) => Ok(images),
            Ok(other) => Err(SandboxError::Infra(
                unexpected(&self.plugin, "missing_images", &other).message,
            )),
            Err(e) => Err(sandbox_error(&self.plugin, "missing_images", e)),
        }
    }

    async fn shutdown(&self) {
        let request = Request::Shutdown {
            handle: self.handle,
        };
        if let Err(e) = call_async(&self.plugin, request).await {
            tracing::warn!("{}", self.plugin.describe("shutdown", &e));
        }
    }
}

impl Drop for PluginSandboxBackend {
    fn drop(&mut self) {
        release(&self.plugin, self.handle);
    }
}

/// A sandbox made by a plugin's backend.
struct PluginSandbox {
    plugin: Arc<Plugin>,
    id: u64,
    working_dir: String,
    /// The port the spec asked to serve, and where it is reached.
    served: Option<(u16, String)>,
}

#[async_trait]
impl Sandbox for PluginSandbox {
    async fn exec(&self, command: &str, limits: &ExecLimits) -> Result<ExecResult, SandboxError> {
        let request = Request::Exec {
            sandbox: self.id,
            command: command.to_string(),
            limits: limits.clone(),
        };
        match call_async(&self.plugin, request).await {
            Ok(Reply::Exec { result }) => Ok(result),
            Ok(other) => Err(SandboxError::Infra(
                unexpected(&self.plugin, "exec", &other).message,
            )),
            Err(e) => Err(sandbox_error(&self.plugin, "exec", e)),
        }
    }

    async fn read_file(&self, path: &str) -> Result<Vec<u8>, SandboxError> {
        let request = Request::ReadFile {
            sandbox: self.id,
            path: path.to_string(),
        };
        match call_async(&self.plugin, request).await {
            Ok(Reply::Bytes { bytes }) => Ok(bytes),
            Ok(other) => Err(SandboxError::Infra(
                unexpected(&self.plugin, "read_file", &other).message,
            )),
            Err(e) => Err(sandbox_error(&self.plugin, "read_file", e)),
        }
    }

    async fn write_file(&self, path: &str, contents: &[u8]) -> Result<(), SandboxError> {
        let request = Request::WriteFile {
            sandbox: self.id,
            path: path.to_string(),
            bytes: contents.to_vec(),
        };
        sandbox_done(&self.plugin, request).await
    }

    async fn close(&self) -> Result<(), SandboxError> {
        sandbox_done(&self.plugin, Request::CloseSandbox { sandbox: self.id }).await
    }

    fn working_dir(&self) -> String {
        self.working_dir.clone()
    }

    fn endpoint(&self, port: u16) -> Option<String> {
        self.served
            .as_ref()
            .filter(|(p, _)| *p == port)
            .map(|(_, e)| e.clone())
    }
}

impl Drop for PluginSandbox {
    fn drop(&mut self) {
        release(&self.plugin, self.id);
    }
}

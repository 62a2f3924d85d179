//! The host's stand-ins for a plugin's components: each holds the plugin and a handle, and turns
//! every trait call into one request across the boundary, run off the async workers.

use std::io::Write;
use std::sync::Arc;

use async_trait::async_trait;
use serde_json::Value;
use trawl_core::registry::Factory;
use trawl_core::{
    Action, ActionSpace, Artifacts, BuildContext, ComponentError, Environment, EnvironmentError,
    Episode, Evaluation, Evaluator, EvaluatorError, ExportError, Exporter, Message, Observation,
    Role, Task, ToolSchema, TrajectoryRecord,
};
use trawl_plugin_abi::wire::{Built, ErrorKind, Reply, Request, WireError};

use crate::Plugin;

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
        // Refused when the library was checked; kept total for the compiler.
        Role::Scaffold => Factory::Scaffold(Arc::new(move |_, _| Err(unsupported(role)))),
        Role::Model => Factory::Model(Arc::new(move |_, _| Err(unsupported(role)))),
        Role::Sandbox => Factory::Sandbox(Arc::new(move |_, _| Err(unsupported(role)))),
    }
}

fn unsupported(role: Role) -> ComponentError {
    ComponentError::new(format!(
        "{role} kinds cannot come from plugins (only {})",
        crate::supported_roles().join(", ")
    ))
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

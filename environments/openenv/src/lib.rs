//! The `openenv` environment: any environment server that speaks OpenEnv's protocol, as
//! `openenv-core` 0.3 serves it with `create_app` (most environment authors in this field write
//! Python). trawl is the client:
//!
//! - `GET /health` answers `{"status": "healthy"}`; checked for every server before a run.
//! - One WebSocket session per episode at `/ws`: `{"type": "reset", "data": {seed, ...}}`,
//!   `{"type": "step", "data": <action>}`, `{"type": "state"}`, `{"type": "close"}`, each
//!   answered with `{"type": "observation", "data": {"observation", "reward", "done"}}`,
//!   `{"type": "state", "data"}` or `{"type": "error", "data": {"message", "code"}}`. (The
//!   server's plain HTTP `/reset` and `/step` make a fresh environment per request, so an
//!   episode of several steps needs the session.)
//!
//! An episode's task is a reset: its keyword arguments (`seed`, `episode_id`, anything the
//! server's `reset` takes). The first observation opens the conversation; each answer of the
//! agent becomes an action (a field of it, or the whole action as JSON), each observation the
//! next message, and the server's `done` ends the episode. The server's rewards are the steps'
//! rewards, and the `openenv_reward` evaluator turns them into the rollout's evaluation.
//!
//! The servers are either running already (`servers`, a list of URLs), or started one per
//! episode from an image (`image`) through the sandbox role: a backend that runs images (the
//! `docker` kind) starts a container of it serving `port`, trawl reaches it at the address the
//! backend gives, and the container is removed when the episode ends.
//!
//! A server that cannot be reached, dies, hangs past `timeout_secs`, answers something that is
//! not the protocol, or fails inside its own step is an infrastructure error, never the model's
//! failure. An action the server's schema refuses is the model's: it is told, and goes on.

use std::path::Path;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use futures_util::{SinkExt, StreamExt};
use serde::Deserialize;
use serde_json::{json, Map, Value};
use tokio::net::TcpStream;
use tokio_tungstenite::tungstenite::protocol::WebSocketConfig;
use tokio_tungstenite::tungstenite::Message as Ws;
use tokio_tungstenite::{connect_async_with_config, MaybeTlsStream, WebSocketStream};
use trawl_core::http::{error_chain, read_capped, BodyError};
use trawl_core::registry::{BuildContext, ComponentError, EnvironmentConfig, EvaluatorConfig};
use trawl_core::sandbox::{Sandbox, SandboxBackend, SandboxSpec};
use trawl_core::{
    async_trait, Action, ActionSpace, Artifacts, Environment, EnvironmentError, Episode,
    Evaluation, Evaluator, EvaluatorError, Message, Observation, Task, TrajectoryRecord,
};

/// `[[environments]] type = "openenv"`.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct OpenEnvConfig {
    /// The servers' base URLs (`http://host:8000`, `https://…`); episodes spread over them.
    #[serde(default)]
    pub servers: Vec<String>,
    /// An image whose own command serves the environment: one container per episode, through
    /// the sandbox role (instead of `servers`).
    #[serde(default)]
    pub image: Option<String>,
    /// The port the image's server listens on.
    #[serde(default = "default_port")]
    pub port: u16,
    /// The sandbox backend that starts the image: `{ type = "docker", memory_mb = 2048, … }`.
    #[serde(default = "default_sandbox")]
    pub sandbox: Value,
    /// Longest wait for a started container's server to answer `/health`.
    #[serde(default = "default_startup")]
    pub startup_timeout_secs: f64,
    /// Episodes one server runs at once: its `max_concurrent_envs`.
    #[serde(default = "one")]
    pub sessions_per_server: usize,
    /// Tasks as resets: `[{ id = "easy-1", reset = { seed = 1, level = "easy" } }]`.
    #[serde(default)]
    pub tasks: Vec<TaskSpec>,
    /// A JSON-lines file of tasks shaped like `tasks`, relative to the config file.
    #[serde(default)]
    pub tasks_file: Option<String>,
    /// N tasks `seed-0` … `seed-{N-1}`, each a reset with that seed.
    #[serde(default)]
    pub seeds: Option<u64>,
    /// How an answer becomes an action: `text` puts it in `action_field`; `json` reads the
    /// action object from it (the model writes the whole action).
    #[serde(default)]
    pub action_format: ActionFormat,
    /// The action's field the answer goes in, with `action_format = "text"`.
    #[serde(default = "default_action_field")]
    pub action_field: String,
    /// The observation's field shown to the model; the whole observation as JSON when unset.
    #[serde(default)]
    pub observation_field: Option<String>,
    /// Text put before the first observation.
    #[serde(default)]
    pub instruction: Option<String>,
    /// How the evaluation's reward comes from the step rewards: the `last` one, or their `sum`.
    #[serde(default)]
    pub reward: RewardMode,
    /// The reward from which a rollout counts as a success.
    #[serde(default = "one_f")]
    pub success_threshold: f64,
    /// Longest wait for the server's answer to one message (connect, reset, step, state).
    #[serde(default = "default_timeout")]
    pub timeout_secs: f64,
}

fn one() -> usize {
    1
}
fn one_f() -> f64 {
    1.0
}
fn default_action_field() -> String {
    "message".into()
}
fn default_timeout() -> f64 {
    60.0
}
fn default_port() -> u16 {
    8000
}
fn default_sandbox() -> Value {
    json!({ "type": "docker" })
}
fn default_startup() -> f64 {
    120.0
}

/// One task: an id and the reset's keyword arguments.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TaskSpec {
    pub id: String,
    #[serde(default)]
    pub reset: Map<String, Value>,
}

#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum ActionFormat {
    #[default]
    Text,
    Json,
}

#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Deserialize, serde::Serialize)]
#[serde(rename_all = "snake_case")]
pub enum RewardMode {
    #[default]
    Last,
    Sum,
}

impl EnvironmentConfig for OpenEnvConfig {
    fn build(self, cx: &BuildContext) -> Result<Arc<dyn Environment>, ComponentError> {
        let backend = match (&self.image, self.servers.is_empty()) {
            (Some(_), true) => {
                trawl_core::config::check_secs(self.startup_timeout_secs, false)
                    .map_err(|m| ComponentError::at("startup_timeout_secs", m))?;
                let backend = cx.build_sandbox(&self.sandbox, "docker")?;
                if !backend.runs_images() {
                    return Err(ComponentError::at(
                        "sandbox",
                        "`image` needs a sandbox backend that runs images (`type = \"docker\"`)",
                    ));
                }
                Some(backend)
            }
            (Some(_), false) => {
                return Err(ComponentError::at(
                    "image",
                    "give `servers` or `image`, not both",
                ))
            }
            (None, true) => {
                return Err(ComponentError::at(
                    "servers",
                    "name at least one OpenEnv server, for example [\"http://127.0.0.1:8000\"], or an `image` to start per episode",
                ))
            }
            (None, false) => None,
        };
        for (i, s) in self.servers.iter().enumerate() {
            ws_url(s).map_err(|m| ComponentError {
                path: vec!["servers".into(), i.to_string()],
                message: m,
            })?;
        }
        if self.sessions_per_server == 0 {
            return Err(ComponentError::at(
                "sessions_per_server",
                "must be at least 1",
            ));
        }
        trawl_core::config::check_secs(self.timeout_secs, false)
            .map_err(|m| ComponentError::at("timeout_secs", m))?;
        if !self.success_threshold.is_finite() {
            return Err(ComponentError::at("success_threshold", "must be a number"));
        }
        if self.action_field.is_empty() {
            return Err(ComponentError::at("action_field", "must not be empty"));
        }
        let mut tasks: Vec<Task> = self
            .tasks
            .iter()
            .map(|t| Task::new(&t.id, json!({ "reset": t.reset })))
            .collect();
        if let Some(file) = &self.tasks_file {
            tasks.extend(
                load_tasks(&cx.resolve(file)).map_err(|m| ComponentError::at("tasks_file", m))?,
            );
        }
        if let Some(n) = self.seeds {
            tasks.extend(
                (0..n).map(|i| Task::new(format!("seed-{i}"), json!({ "reset": { "seed": i } }))),
            );
        }
        if tasks.is_empty() {
            return Err(ComponentError::new(
                "no tasks: give `tasks`, `tasks_file` or `seeds`",
            ));
        }
        let mut seen = std::collections::HashSet::new();
        if let Some(dup) = tasks.iter().find(|t| !seen.insert(t.id.clone())) {
            return Err(ComponentError::at(
                "tasks",
                format!("task id `{}` appears twice", dup.id),
            ));
        }
        let pool = Pool::new(self.servers.len().max(1), self.sessions_per_server);
        Ok(Arc::new(OpenEnv {
            config: self,
            tasks,
            pool,
            backend,
            run_name: cx.run_name.clone(),
            http: reqwest::Client::new(),
        }))
    }
}

trawl_core::register!(
    environment,
    "openenv",
    "Any OpenEnv environment server (openenv-core 0.3): a WebSocket session per episode, the server's reward",
    OpenEnvConfig
);

/// Reads a JSON-lines task file; the error names the line.
fn load_tasks(path: &Path) -> Result<Vec<Task>, String> {
    let text = std::fs::read_to_string(path)
        .map_err(|e| format!("cannot read {}: {e}", path.display()))?;
    let mut out = Vec::new();
    for (i, line) in text.lines().enumerate() {
        if line.trim().is_empty() {
            continue;
        }
        let t: TaskSpec = serde_json::from_str(line).map_err(|e| {
            format!(
                "{}:{}: {e}\n  hint: each line is {{\"id\": \"…\", \"reset\": {{…}}}}",
                path.display(),
                i + 1
            )
        })?;
        out.push(Task::new(&t.id, json!({ "reset": t.reset })));
    }
    Ok(out)
}

/// The WebSocket address of a server's sessions.
fn ws_url(base: &str) -> Result<String, String> {
    let base = base.trim_end_matches('/');
    if let Some(rest) = base.strip_prefix("http://") {
        Ok(format!("ws://{rest}/ws"))
    } else if let Some(rest) = base.strip_prefix("https://") {
        Ok(format!("wss://{rest}/ws"))
    } else {
        Err(format!(
            "`{base}` is not an http:// or https:// URL of an OpenEnv server"
        ))
    }
}

/// Which server each episode uses: at most `per_server` sessions on each.
struct Pool {
    slots: Arc<tokio::sync::Semaphore>,
    busy: Arc<Mutex<Vec<usize>>>,
}

/// An episode's place on a server; given back when dropped.
struct Slot {
    server: usize,
    busy: Arc<Mutex<Vec<usize>>>,
    _permit: tokio::sync::OwnedSemaphorePermit,
}

impl Drop for Slot {
    fn drop(&mut self) {
        if let Ok(mut b) = self.busy.lock() {
            b[self.server] = b[self.server].saturating_sub(1);
        }
    }
}

impl Pool {
    fn new(servers: usize, per_server: usize) -> Self {
        Pool {
            slots: Arc::new(tokio::sync::Semaphore::new(servers * per_server)),
            busy: Arc::new(Mutex::new(vec![0; servers])),
        }
    }

    /// Waits for a free session and takes it on the least busy server.
    async fn take(&self) -> Result<Slot, EnvironmentError> {
        let permit = self
            .slots
            .clone()
            .acquire_owned()
            .await
            .map_err(|_| EnvironmentError::Runtime("the server pool is closed".into()))?;
        let mut busy = self
            .busy
            .lock()
            .map_err(|_| EnvironmentError::Runtime("the server pool is unusable".into()))?;
        let server = (0..busy.len()).min_by_key(|i| busy[*i]).unwrap_or(0);
        busy[server] += 1;
        Ok(Slot {
            server,
            busy: self.busy.clone(),
            _permit: permit,
        })
    }
}

pub struct OpenEnv {
    config: OpenEnvConfig,
    tasks: Vec<Task>,
    pool: Pool,
    /// Starts the image per episode, in image mode.
    backend: Option<Arc<dyn SandboxBackend>>,
    run_name: String,
    /// For `/health`: one client (and its connections) for every check of the run.
    http: reqwest::Client,
}

impl OpenEnv {
    fn timeout(&self) -> Duration {
        trawl_core::config::secs(self.config.timeout_secs)
    }
}

#[async_trait]
impl Environment for OpenEnv {
    fn action_space(&self) -> ActionSpace {
        ActionSpace {
            answer: true,
            ..ActionSpace::default()
        }
    }

    async fn tasks(&self) -> Result<Vec<Task>, EnvironmentError> {
        // Every server (or the image) must be there before a run spends anything on it.
        if let (Some(backend), Some(image)) = (&self.backend, &self.config.image) {
            let missing = backend
                .missing_images(std::slice::from_ref(image))
                .await
                .map_err(|e| EnvironmentError::Tasks(e.to_string()))?;
            if !missing.is_empty() {
                return Err(EnvironmentError::Tasks(format!(
                    "the OpenEnv image `{image}` is not on the sandbox's engine\n  hint: build it (docker build -t {image} .) or load it (docker load -i FILE); trawl never pulls images"
                )));
            }
        }
        for server in &self.config.servers {
            health(&self.http, server, self.timeout())
                .await
                .map_err(EnvironmentError::Tasks)?;
        }
        Ok(self.tasks.clone())
    }

    async fn start(&self, task: &Task) -> Result<Box<dyn Episode>, EnvironmentError> {
        let failed = |message: String| EnvironmentError::Start {
            task: task.id.clone(),
            message,
        };
        let (server, slot, sandbox) = match &self.backend {
            None => {
                let slot = self.pool.take().await?;
                (self.config.servers[slot.server].clone(), Some(slot), None)
            }
            Some(backend) => {
                let (server, sandbox) = self.serve(backend.as_ref()).await.map_err(&failed)?;
                (server, None, Some(sandbox))
            }
        };
        let url = ws_url(&server).map_err(&failed)?;
        let timeout = self.timeout();
        let limits = WebSocketConfig::default()
            .max_message_size(Some(MAX_MESSAGE_BYTES))
            .max_frame_size(Some(MAX_MESSAGE_BYTES));
        let stream = match tokio::time::timeout(
            timeout,
            connect_async_with_config(&url, Some(limits), false),
        )
        .await
        {
            Ok(Ok((stream, _))) => stream,
            Ok(Err(e)) => {
                return Err(failed(format!(
                    "OpenEnv server {server}: cannot open a session at {url}: {e}"
                )))
            }
            Err(_) => {
                return Err(failed(format!(
                    "OpenEnv server {server}: no session at {url} within {timeout:?}"
                )))
            }
        };
        let mut session = Session {
            stream,
            server,
            timeout,
            _slot: slot,
            sandbox,
        };
        let reset = task.data["reset"].clone();
        let reset = if reset.is_null() { json!({}) } else { reset };
        let first = match session
            .exchange(json!({ "type": "reset", "data": reset }))
            .await
        {
            Ok(Answer::Observation(o)) => o,
            Ok(Answer::Refused(m)) => return Err(failed(format!("the reset was refused: {m}"))),
            Err(e) => return Err(failed(e)),
        };
        let shown = render(&first.observation, self.config.observation_field.as_deref());
        let opening = match &self.config.instruction {
            Some(i) => format!("{i}\n\n{shown}"),
            None => shown,
        };
        Ok(Box::new(OpenEnvEpisode {
            session: Some(session),
            config: self.config.clone(),
            opening: vec![Message::user(opening)],
            rewards: Vec::new(),
            done: first.done,
            last: first.observation,
            answer: None,
        }))
    }

    fn default_evaluators(&self) -> Vec<(String, Value)> {
        vec![(
            "openenv_reward".into(),
            json!({
                "reward": self.config.reward,
                "success_threshold": self.config.success_threshold,
            }),
        )]
    }

    fn facts(&self) -> Value {
        json!({
            "servers": self.config.servers,
            "sessions_per_server": self.config.sessions_per_server,
            "image": self.config.image,
            "sandbox": self.backend.as_ref().map(|b| b.describe()),
            "protocol": "OpenEnv WebSocket sessions at /ws (openenv-core 0.3)",
        })
    }

    async fn shutdown(&self) {
        if let Some(b) = &self.backend {
            b.shutdown().await;
        }
    }
}

impl OpenEnv {
    /// Starts a container of the image serving its port, and waits until its server is
    /// healthy; returns its base URL and the sandbox (removed when dropped or closed).
    async fn serve(
        &self,
        backend: &dyn SandboxBackend,
    ) -> Result<(String, Box<dyn Sandbox>), String> {
        let image = self.config.image.clone().unwrap_or_default();
        let spec = SandboxSpec {
            image: Some(image.clone()),
            serve: Some(self.config.port),
            labels: [("trawl.run".to_string(), self.run_name.clone())].into(),
            ..SandboxSpec::default()
        };
        let sandbox = backend
            .create(&spec)
            .await
            .map_err(|e| format!("cannot start image `{image}`: {e}"))?;
        let Some(address) = sandbox.endpoint(self.config.port) else {
            let _ = sandbox.close().await;
            return Err(format!(
                "the sandbox backend gave no address for port {} of image `{image}`",
                self.config.port
            ));
        };
        let base = format!("http://{address}");
        let startup = trawl_core::config::secs(self.config.startup_timeout_secs);
        let deadline = tokio::time::Instant::now() + startup;
        loop {
            match health(&self.http, &base, Duration::from_secs(5)).await {
                Ok(()) => return Ok((base, sandbox)),
                Err(e) if tokio::time::Instant::now() >= deadline => {
                    let _ = sandbox.close().await;
                    return Err(format!(
                        "image `{image}` did not serve OpenEnv on port {} within {startup:?}: {e}",
                        self.config.port
                    ));
                }
                Err(_) => tokio::time::sleep(Duration::from_millis(250)).await,
            }
        }
    }
}

/// The largest `/health` answer read (openenv-core's is `{"status": "healthy"}`): a longer one
/// is refused as soon as it passes this, never read whole.
const MAX_HEALTH_BYTES: u64 = 1 << 20;

/// The largest WebSocket message read from a server (an observation): a longer one breaks the
/// session as an infrastructure error. The `openai` model's default cap on a reply.
const MAX_MESSAGE_BYTES: usize = 16 << 20;

/// Checks that `server` answers `GET /health` with `{"status": "healthy"}` within `timeout`
/// (its body included, read up to [`MAX_HEALTH_BYTES`]). A server that takes longer, even one
/// that never stops sending, has timed out and is told so.
async fn health(client: &reqwest::Client, server: &str, timeout: Duration) -> Result<(), String> {
    let url = format!("{}/health", server.trim_end_matches('/'));
    let timed_out = || {
        format!(
            "OpenEnv server {server}: GET /health timed out after {} s\n  hint: is the server overloaded or stuck? raise timeout_secs if it is only slow",
            timeout.as_secs_f64()
        )
    };
    let body = match client.get(&url).timeout(timeout).send().await {
        Ok(r) if r.status().is_success() => match read_capped(r, MAX_HEALTH_BYTES).await {
            Ok(body) => body,
            Err(BodyError::TimedOut) => return Err(timed_out()),
            Err(e) => return Err(format!("OpenEnv server {server}: GET /health {e}")),
        },
        Ok(r) => {
            return Err(format!(
                "OpenEnv server {server}: GET /health answered HTTP {}\n  hint: is it an OpenEnv server (openenv-core's create_app)?",
                r.status()
            ))
        }
        Err(e) if e.is_timeout() => return Err(timed_out()),
        Err(e) => {
            return Err(format!(
                "OpenEnv server {server} does not answer GET /health: {}\n  hint: start the server, or remove it from `servers`",
                error_chain(&e)
            ))
        }
    };
    let answer = serde_json::from_slice::<Value>(&body).ok();
    let status = answer
        .as_ref()
        .and_then(|v| v["status"].as_str())
        .unwrap_or_default();
    if status != "healthy" {
        let shown = match &answer {
            Some(v) => v.to_string().chars().take(200).collect(),
            None => format!(
                "no JSON ({} bytes: {:?})",
                body.len(),
                String::from_utf8_lossy(&body[..body.len().min(120)])
            ),
        };
        return Err(format!(
            "OpenEnv server {server} is not healthy: /health answered {shown}"
        ));
    }
    Ok(())
}

/// What the model sees of an observation: the named field, or the whole object as JSON.
fn render(observation: &Value, field: Option<&str>) -> String {
    let shown = match field {
        Some(f) => observation.get(f).unwrap_or(observation),
        None => observation,
    };
    match shown {
        Value::String(s) => s.clone(),
        other => serde_json::to_string_pretty(other).unwrap_or_default(),
    }
}

/// One observation message's data.
#[derive(Debug, Clone, PartialEq)]
struct Step {
    observation: Value,
    reward: Option<f64>,
    done: bool,
}

/// The server's answer to a message.
#[derive(Debug)]
enum Answer {
    Observation(Step),
    /// The server refused what was sent as invalid (`VALIDATION_ERROR`): the sender's fault.
    Refused(String),
}

/// One episode's WebSocket session.
struct Session {
    stream: WebSocketStream<MaybeTlsStream<TcpStream>>,
    server: String,
    timeout: Duration,
    /// Its place on a listed server.
    _slot: Option<Slot>,
    /// The container serving it, in image mode.
    sandbox: Option<Box<dyn Sandbox>>,
}

impl Session {
    /// Sends `message` and waits for its observation. An error is an infrastructure failure,
    /// as a sentence naming the server.
    async fn exchange(&mut self, message: Value) -> Result<Answer, String> {
        let data = self.send(message).await?;
        match data {
            Reply::Observation(d) => parse_step(&d)
                .map(Answer::Observation)
                .map_err(|m| format!("OpenEnv server {}: {m}", self.server)),
            Reply::Refused(m) => Ok(Answer::Refused(m)),
            Reply::State(_) => Err(format!(
                "OpenEnv server {}: answered with its state where an observation was due",
                self.server
            )),
        }
    }

    async fn send(&mut self, message: Value) -> Result<Reply, String> {
        let server = self.server.clone();
        let op = message["type"].as_str().unwrap_or("message").to_string();
        let timeout = self.timeout;
        let io = async {
            self.stream
                .send(Ws::text(message.to_string()))
                .await
                .map_err(|e| format!("the session broke while sending `{op}`: {e}"))?;
            loop {
                match self.stream.next().await {
                    Some(Ok(Ws::Text(t))) => return parse_reply(t.as_str()),
                    Some(Ok(Ws::Ping(_) | Ws::Pong(_) | Ws::Frame(_))) => continue,
                    Some(Ok(Ws::Binary(b))) => {
                        return Err(format!(
                            "answered `{op}` with {} bytes of binary data, not the protocol's JSON",
                            b.len()
                        ))
                    }
                    Some(Ok(Ws::Close(_))) | None => {
                        return Err(format!(
                            "closed the session before answering `{op}` (did the server die?)"
                        ))
                    }
                    Some(Err(e)) => {
                        return Err(format!(
                            "the session broke while waiting for the answer to `{op}`: {e}"
                        ))
                    }
                }
            }
        };
        match tokio::time::timeout(timeout, io).await {
            Ok(Ok(r)) => Ok(r),
            Ok(Err(m)) => Err(format!("OpenEnv server {server}: {m}")),
            Err(_) => Err(format!(
                "OpenEnv server {server}: no answer to `{op}` within {timeout:?}"
            )),
        }
    }

    /// Ends the session politely (the server drops the environment either way), and removes
    /// the container that served it.
    async fn close(mut self) {
        let _ = tokio::time::timeout(Duration::from_secs(2), async {
            let _ = self
                .stream
                .send(Ws::text(json!({ "type": "close" }).to_string()))
                .await;
            let _ = self.stream.close(None).await;
        })
        .await;
        if let Some(s) = self.sandbox.take() {
            if let Err(e) = s.close().await {
                tracing::warn!("removing an OpenEnv container: {e}");
            }
        }
    }
}

/// A message from the server, by its `type`.
#[derive(Debug)]
enum Reply {
    Observation(Value),
    State(Value),
    Refused(String),
}

/// Reads one message of the protocol; anything else is an error sentence.
fn parse_reply(text: &str) -> Result<Reply, String> {
    let short = || text.chars().take(120).collect::<String>();
    let v: Value = serde_json::from_str(text).map_err(|e| {
        format!(
            "answered with something that is not JSON ({e}): {:?}",
            short()
        )
    })?;
    let data = v.get("data").cloned().unwrap_or(Value::Null);
    match v["type"].as_str() {
        Some("observation") => Ok(Reply::Observation(data)),
        Some("state") => Ok(Reply::State(data)),
        Some("error") => {
            let code = data["code"].as_str().unwrap_or_default();
            let message = data["message"].as_str().unwrap_or_default();
            if code == "VALIDATION_ERROR" {
                let errors = data
                    .get("errors")
                    .and_then(Value::as_array)
                    .map(|errs| {
                        errs.iter()
                            .map(|e| {
                                let at: Vec<String> = e["loc"]
                                    .as_array()
                                    .map(|l| {
                                        l.iter()
                                            .map(|p| p.to_string().trim_matches('"').to_string())
                                            .collect()
                                    })
                                    .unwrap_or_default();
                                format!(
                                    "{}: {}",
                                    at.join("."),
                                    e["msg"].as_str().unwrap_or_default()
                                )
                            })
                            .collect::<Vec<_>>()
                            .join("; ")
                    })
                    .unwrap_or_default();
                Ok(Reply::Refused(if errors.is_empty() {
                    message.to_string()
                } else {
                    errors
                }))
            } else {
                Err(format!(
                    "answered with an error ({}): {message}",
                    if code.is_empty() { "no code" } else { code }
                ))
            }
        }
        _ => Err(format!(
            "answered with a message that is not OpenEnv's protocol: {:?}",
            short()
        )),
    }
}

/// An observation message's data: `{"observation": {…}, "reward": r | null, "done": bool}`.
fn parse_step(data: &Value) -> Result<Step, String> {
    let observation = data
        .get("observation")
        .filter(|o| o.is_object())
        .cloned()
        .ok_or_else(|| format!("an observation message without an observation object: {data}"))?;
    let reward = match data.get("reward") {
        None | Some(Value::Null) => None,
        Some(Value::Bool(b)) => Some(f64::from(u8::from(*b))),
        Some(r) => Some(
            r.as_f64()
                .filter(|r| r.is_finite())
                .ok_or_else(|| format!("a reward that is not a number: {r}"))?,
        ),
    };
    let done = match data.get("done") {
        None | Some(Value::Null) => false,
        Some(Value::Bool(b)) => *b,
        Some(other) => return Err(format!("`done` is not true or false: {other}")),
    };
    Ok(Step {
        observation,
        reward,
        done,
    })
}

/// Reads the first JSON object in `text` (inside a code fence or not).
fn action_object(text: &str) -> Result<Map<String, Value>, String> {
    for (i, _) in text.match_indices('{') {
        let mut de = serde_json::Deserializer::from_str(&text[i..]).into_iter::<Value>();
        if let Some(Ok(Value::Object(m))) = de.next() {
            return Ok(m);
        }
    }
    Err("Your reply holds no action: write the action as one JSON object.".into())
}

struct OpenEnvEpisode {
    session: Option<Session>,
    config: OpenEnvConfig,
    opening: Vec<Message>,
    rewards: Vec<f64>,
    done: bool,
    last: Value,
    answer: Option<String>,
}

impl OpenEnvEpisode {
    /// A step the server never saw (the action was unusable): reward 0, the episode goes on.
    fn told(&mut self, content: String) -> Observation {
        self.rewards.push(0.0);
        Observation::text(content)
    }
}

#[async_trait]
impl Episode for OpenEnvEpisode {
    fn opening(&self) -> Vec<Message> {
        self.opening.clone()
    }

    async fn act(&mut self, action: &Action) -> Result<Observation, EnvironmentError> {
        let text = match action {
            Action::Answer { text } => text.clone(),
            other => {
                return Err(EnvironmentError::Runtime(format!(
                    "the openenv environment takes answers, not {other:?}"
                )))
            }
        };
        self.answer = Some(text.clone());
        if self.done {
            let mut o = self.told("The episode is over.".into());
            o.done = true;
            return Ok(o);
        }
        let data = match self.config.action_format {
            ActionFormat::Text => {
                let mut m = Map::new();
                m.insert(self.config.action_field.clone(), Value::String(text));
                m
            }
            ActionFormat::Json => match action_object(&text) {
                Ok(m) => m,
                Err(m) => return Ok(self.told(m)),
            },
        };
        let session = self
            .session
            .as_mut()
            .ok_or_else(|| EnvironmentError::Runtime("the session is closed".into()))?;
        match session
            .exchange(json!({ "type": "step", "data": data }))
            .await
        {
            Ok(Answer::Observation(step)) => {
                self.rewards.push(step.reward.unwrap_or(0.0));
                self.done = step.done;
                let content = render(&step.observation, self.config.observation_field.as_deref());
                self.last = step.observation;
                Ok(Observation {
                    content,
                    done: step.done,
                    exit_code: None,
                })
            }
            Ok(Answer::Refused(m)) => {
                Ok(self.told(format!("The environment refused the action: {m}")))
            }
            Err(e) => Err(EnvironmentError::Runtime(e)),
        }
    }

    async fn finish(&mut self) -> Result<Artifacts, EnvironmentError> {
        let mut state = Value::Null;
        if let Some(mut session) = self.session.take() {
            // The final state is a courtesy of the server: a failure to give it spoils nothing.
            if let Ok(Reply::State(s)) = session.send(json!({ "type": "state" })).await {
                state = s;
            }
            session.close().await;
        }
        Ok(Artifacts {
            submission: self.answer.clone(),
            extra: json!({
                "rewards": self.rewards,
                "done": self.done,
                "observation": self.last,
                "state": state,
            }),
            step_rewards: self.rewards.clone(),
        })
    }
}

/// `[[evaluators]] type = "openenv_reward"`: the server's reward as the rollout's evaluation.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct OpenEnvRewardConfig {
    #[serde(default)]
    pub reward: RewardMode,
    #[serde(default = "one_f")]
    pub success_threshold: f64,
}

impl EvaluatorConfig for OpenEnvRewardConfig {
    fn build(self, _: &BuildContext) -> Result<Arc<dyn Evaluator>, ComponentError> {
        if !self.success_threshold.is_finite() {
            return Err(ComponentError::at("success_threshold", "must be a number"));
        }
        Ok(Arc::new(OpenEnvReward { config: self }))
    }
}

trawl_core::register!(
    evaluator,
    "openenv_reward",
    "An OpenEnv server's reward (the last step's, or the sum); success from a threshold",
    OpenEnvRewardConfig
);

pub struct OpenEnvReward {
    config: OpenEnvRewardConfig,
}

#[async_trait]
impl Evaluator for OpenEnvReward {
    fn name(&self) -> &str {
        "openenv_reward"
    }

    async fn evaluate(&self, record: &TrajectoryRecord) -> Result<Evaluation, EvaluatorError> {
        let artifacts = &record.outcome.artifacts;
        let rewards: Vec<f64> = artifacts["rewards"]
            .as_array()
            .ok_or_else(|| EvaluatorError::Unscorable {
                evaluator: "openenv_reward".into(),
                task: record.task.id.clone(),
                message: "the rollout has no OpenEnv rewards (not an openenv episode)".into(),
            })?
            .iter()
            .filter_map(Value::as_f64)
            .collect();
        let reward = match self.config.reward {
            RewardMode::Last => rewards.last().copied().unwrap_or(0.0),
            // A sum that overflows is the server's fault, never an infinity in the record.
            RewardMode::Sum => trawl_core::reward::checked_sum(&rewards).ok_or_else(|| {
                EvaluatorError::Failed {
                    evaluator: "openenv_reward".into(),
                    message: format!(
                        "the sum of the server's {} step rewards overflows: it is not finite, or beyond ±{:e}, the largest reward trawl records",
                        rewards.len(),
                        trawl_core::reward::MAX_REWARD
                    ),
                }
            })?,
        };
        let done = artifacts["done"].as_bool().unwrap_or(false);
        Ok(Evaluation {
            evaluator: "openenv_reward".into(),
            reward,
            success: reward >= self.config.success_threshold,
            components: [
                ("reward".to_string(), reward),
                ("done".to_string(), f64::from(u8::from(done))),
                ("steps".to_string(), rewards.len() as f64),
            ]
            .into(),
            details: json!({ "rewards": rewards, "mode": self.config.reward }),
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn urls_become_session_addresses() {
        assert_eq!(
            ws_url("http://127.0.0.1:8000/").unwrap(),
            "ws://127.0.0.1:8000/ws"
        );
        assert_eq!(ws_url("https://x.hf.space").unwrap(), "wss://x.hf.space/ws");
        assert!(ws_url("ftp://x").unwrap_err().contains("not an http"));
    }

    #[test]
    fn protocol_messages_are_read_and_garbage_is_named() {
        let r = parse_reply(r#"{"type":"observation","data":{"observation":{"prompt":"hi"},"reward":0.5,"done":false}}"#).unwrap();
        let Reply::Observation(d) = r else { panic!() };
        let step = parse_step(&d).unwrap();
        assert_eq!((step.reward, step.done), (Some(0.5), false));
        assert_eq!(render(&step.observation, Some("prompt")), "hi");
        let refused = parse_reply(r#"{"type":"error","data":{"message":"Invalid message","code":"VALIDATION_ERROR","errors":[{"loc":["guess"],"msg":"Field required"}]}}"#).unwrap();
        assert!(
            matches!(refused, Reply::Refused(ref m) if m == "guess: Field required"),
            "{refused:?}"
        );
        let e =
            parse_reply(r#"{"type":"error","data":{"message":"boom","code":"EXECUTION_ERROR"}}"#)
                .unwrap_err();
        assert!(e.contains("EXECUTION_ERROR") && e.contains("boom"), "{e}");
        assert!(parse_reply("<<<garbage>>>")
            .unwrap_err()
            .contains("not JSON"));
        assert!(parse_reply(r#"{"type":"weird"}"#)
            .unwrap_err()
            .contains("not OpenEnv's protocol"));
        assert!(parse_step(&json!({"observation": 3})).is_err());
        assert!(parse_step(&json!({"observation": {}, "reward": "high"})).is_err());
    }

    #[test]
    fn json_actions_are_found_in_prose_and_fences() {
        let m = action_object("I will guess.\n```json\n{\"guess\": \"7\"}\n```").unwrap();
        assert_eq!(m["guess"], "7");
        assert!(action_object("just 7").is_err());
    }

    #[test]
    fn configs_are_checked_field_by_field() {
        let build = |v: Value| {
            trawl_core::registry::parse_settings::<OpenEnvConfig>(&v)
                .and_then(|c| c.build(&BuildContext::default()))
                .err()
                .map(|e| (e.path, e.message))
        };
        let (path, _) = build(json!({"servers": ["localhost:8000"], "seeds": 2})).unwrap();
        assert_eq!(path, ["servers", "0"]);
        let (_, message) = build(json!({"servers": ["http://a"]})).unwrap();
        assert!(message.contains("no tasks"), "{message}");
        let (path, _) = build(json!({"servers": [], "seeds": 1})).unwrap();
        assert_eq!(path, ["servers"]);
        let (path, message) =
            build(json!({"servers": ["http://a"], "tasks": [{"id": "a"}, {"id": "a"}]})).unwrap();
        assert_eq!(path, ["tasks"]);
        assert!(message.contains("twice"));
        assert!(build(json!({"servers": ["http://a"], "seeds": 3})).is_none());
    }

    #[test]
    fn a_task_file_error_names_its_line() {
        let dir = tempfile::tempdir().unwrap();
        let f = dir.path().join("t.jsonl");
        std::fs::write(
            &f,
            "{\"id\": \"a\", \"reset\": {\"seed\": 1}}\n\n{\"id\": 3}\n",
        )
        .unwrap();
        let e = load_tasks(&f).unwrap_err();
        assert!(e.contains("t.jsonl:3:"), "{e}");
    }
}

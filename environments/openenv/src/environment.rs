//! The `openenv` environment: its settings checked into an [`OpenEnv`], the run's tasks (after
//! every server or the image is found), and each episode's start (a session and its reset).

use std::sync::Arc;
use std::time::Duration;

use serde_json::{json, Value};
use tokio_tungstenite::connect_async_with_config;
use tokio_tungstenite::tungstenite::protocol::WebSocketConfig;
use trawl_core::registry::{BuildContext, ComponentError, EnvironmentConfig};
use trawl_core::sandbox::SandboxBackend;
use trawl_core::{async_trait, ActionSpace, Environment, EnvironmentError, Episode, Message, Task};

use crate::config::{load_tasks, OpenEnvConfig};
use crate::episode::{render, OpenEnvEpisode};
use crate::health::health;
use crate::pool::Pool;
use crate::protocol::{ws_url, Answer};
use crate::session::{Session, MAX_MESSAGE_BYTES};

impl EnvironmentConfig for OpenEnvConfig {
    fn build(self, cx: &BuildContext) -> Result<Arc<dyn Environment>, ComponentError> {
        let backend = match (&self.image, self.servers.is_empty()) {
            (Some(_), true) => {
                trawl_core::values::check_secs(self.startup_timeout_secs, false)
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
        trawl_core::values::check_secs(self.timeout_secs, false)
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

pub struct OpenEnv {
    pub(crate) config: OpenEnvConfig,
    pub(crate) tasks: Vec<Task>,
    pub(crate) pool: Pool,
    /// Starts the image per episode, in image mode.
    pub(crate) backend: Option<Arc<dyn SandboxBackend>>,
    pub(crate) run_name: String,
    /// For `/health`: one client (and its connections) for every check of the run.
    pub(crate) http: reqwest::Client,
}

impl OpenEnv {
    fn timeout(&self) -> Duration {
        trawl_core::values::secs(self.config.timeout_secs)
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

//! A scaffold's rollout inside a plugin. The scaffold runs as a task on the plugin's runtime
//! with a model and an episode that stand for the host's: each of their calls becomes an event
//! that the current request answers with ([`ScaffoldStep::Ask`]), and waits until the host's
//! next request ([`crate::wire::Request::Resume`]) brings the result. The host owns the real
//! model, episode and transcript; the scaffold keeps a copy of the transcript, which it hands
//! back whole when it is done.

use std::sync::{Mutex, MutexGuard};

use tokio::sync::{mpsc, oneshot};
use trawl_core::model::{Completion, CompletionRequest, LanguageModel, ModelDescription};
use trawl_core::model::{ModelError, Sampling};
use trawl_core::{
    async_trait, Action, AgentScaffold, Artifacts, EnvironmentError, Episode, Message, Observation,
    RolloutContext, ScaffoldError, ScaffoldOutcome, ToolSchema, Transcript, TranscriptState,
};

use crate::wire::{ErrorKind, HostAnswer, HostAsk, ScaffoldStep, WireError};

enum Event {
    Ask(HostAsk, oneshot::Sender<HostAnswer>),
    Done(Result<ScaffoldOutcome, ScaffoldError>, TranscriptState),
}

/// One rollout in progress.
pub(crate) struct Rollout {
    events: tokio::sync::Mutex<mpsc::UnboundedReceiver<Event>>,
    pending: Mutex<Option<oneshot::Sender<HostAnswer>>>,
    task: Mutex<Option<tokio::task::JoinHandle<()>>>,
}

fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    // Only moves of whole values happen under these locks.
    m.lock().unwrap_or_else(|p| p.into_inner())
}

/// Starts `scaffold` on `transcript` (the episode's opening), `elapsed_ms` into the episode.
pub(crate) fn start(
    rt: &tokio::runtime::Runtime,
    scaffold: std::sync::Arc<dyn AgentScaffold>,
    model: ModelDescription,
    sampling: Sampling,
    transcript: TranscriptState,
    elapsed_ms: u64,
) -> Rollout {
    let (tx, rx) = mpsc::unbounded_channel();
    let host = Host { tx: tx.clone() };
    let task = rt.spawn(async move {
        let mut t = Transcript::new();
        t.started_before(elapsed_ms);
        let mut episode = HostEpisode {
            host: host.clone(),
            opening: transcript.messages.clone(),
            tools: transcript.tools.clone(),
        };
        t.restore(transcript);
        let model = HostModel {
            host,
            description: model,
        };
        let result = scaffold
            .run(RolloutContext {
                episode: &mut episode,
                model: &model,
                sampling: &sampling,
                transcript: &mut t,
            })
            .await;
        let _ = tx.send(Event::Done(result, t.state()));
    });
    Rollout {
        events: tokio::sync::Mutex::new(rx),
        pending: Mutex::new(None),
        task: Mutex::new(Some(task)),
    }
}

impl Rollout {
    /// Hands the host's answer to the scaffold that asked.
    pub(crate) fn answer(&self, answer: HostAnswer) -> Result<(), WireError> {
        let reply = lock(&self.pending).take().ok_or_else(|| {
            WireError::new(
                ErrorKind::Protocol,
                "an answer for a rollout that asked nothing",
            )
        })?;
        // A scaffold that stopped waiting shows up in the next step.
        let _ = reply.send(answer);
        Ok(())
    }

    /// Waits until the scaffold asks something or ends.
    pub(crate) fn next(&self, rt: &tokio::runtime::Runtime) -> Result<ScaffoldStep, WireError> {
        let event = rt.block_on(async { self.events.lock().await.recv().await });
        match event {
            Some(Event::Ask(ask, reply)) => {
                *lock(&self.pending) = Some(reply);
                Ok(ScaffoldStep::Ask { ask })
            }
            Some(Event::Done(result, transcript)) => Ok(ScaffoldStep::Done {
                result,
                transcript: Box::new(transcript),
            }),
            // Every sender is gone without an outcome: the scaffold's task panicked.
            None => {
                let task = lock(&self.task).take();
                let message = match task.map(|t| rt.block_on(t)) {
                    Some(Err(e)) if e.is_panic() => panic_message(e.into_panic().as_ref()),
                    Some(Err(e)) if e.is_cancelled() => ENDED.to_string(),
                    _ => "the scaffold's task ended without an outcome".to_string(),
                };
                Err(WireError::new(ErrorKind::Panic, message))
            }
        }
    }
}

impl Rollout {
    /// The host let go of the rollout (its time ran out, the run was interrupted): the scaffold
    /// stops at its next wait, and a call still waiting for its next step returns.
    pub(crate) fn stop(&self) {
        if let Some(t) = lock(&self.task).as_ref() {
            t.abort();
        }
    }
}

impl Drop for Rollout {
    fn drop(&mut self) {
        self.stop();
    }
}

/// The scaffold's way to the host.
#[derive(Clone)]
struct Host {
    tx: mpsc::UnboundedSender<Event>,
}

impl Host {
    /// `None`: the host ended the rollout.
    async fn ask(&self, ask: HostAsk) -> Option<HostAnswer> {
        let (reply, answer) = oneshot::channel();
        self.tx.send(Event::Ask(ask, reply)).ok()?;
        answer.await.ok()
    }
}

const ENDED: &str = "the host ended the rollout";

/// The host's model, as the scaffold sees it.
struct HostModel {
    host: Host,
    description: ModelDescription,
}

#[async_trait]
impl LanguageModel for HostModel {
    fn describe(&self) -> ModelDescription {
        self.description.clone()
    }

    async fn complete(&self, request: &CompletionRequest) -> Result<Completion, ModelError> {
        let ask = HostAsk::Complete {
            request: Box::new(request.clone()),
        };
        match self.host.ask(ask).await {
            Some(HostAnswer::Completion { result }) => result.map(|c| *c),
            Some(other) => Err(ModelError::Backend(format!(
                "the host answered a model call with {other:?}"
            ))),
            None => Err(ModelError::Backend(ENDED.into())),
        }
    }
}

/// The host's episode, as the scaffold sees it.
struct HostEpisode {
    host: Host,
    opening: Vec<Message>,
    tools: Vec<ToolSchema>,
}

#[async_trait]
impl Episode for HostEpisode {
    fn opening(&self) -> Vec<Message> {
        self.opening.clone()
    }

    fn tools(&self) -> Vec<ToolSchema> {
        self.tools.clone()
    }

    async fn act(&mut self, action: &Action) -> Result<Observation, EnvironmentError> {
        let ask = HostAsk::Act {
            action: action.clone(),
        };
        match self.host.ask(ask).await {
            Some(HostAnswer::Observation { result }) => result,
            Some(other) => Err(EnvironmentError::Runtime(format!(
                "the host answered an action with {other:?}"
            ))),
            None => Err(EnvironmentError::Runtime(ENDED.into())),
        }
    }

    async fn finish(&mut self) -> Result<Artifacts, EnvironmentError> {
        Err(EnvironmentError::Runtime(
            "a scaffold does not finish its episode; the host does, after the scaffold returns"
                .into(),
        ))
    }
}

/// The message a panic carried, for the error that reports it.
pub(crate) fn panic_message(payload: &(dyn std::any::Any + Send)) -> String {
    payload
        .downcast_ref::<&str>()
        .map(|s| s.to_string())
        .or_else(|| payload.downcast_ref::<String>().cloned())
        .unwrap_or_else(|| "(a panic without a message)".to_string())
}

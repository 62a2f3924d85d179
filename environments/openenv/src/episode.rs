//! One `openenv` episode: each answer of the agent becomes an action (a field of it, or the
//! whole action as JSON), each observation the next message, the step rewards kept.

use serde_json::{json, Map, Value};
use trawl_core::{async_trait, Action, Artifacts, EnvironmentError, Episode, Message, Observation};

use crate::config::{ActionFormat, OpenEnvConfig};
use crate::protocol::{Answer, Reply};
use crate::session::Session;

/// What the model sees of an observation: the named field, or the whole object as JSON.
pub(crate) fn render(observation: &Value, field: Option<&str>) -> String {
    let shown = match field {
        Some(f) => observation.get(f).unwrap_or(observation),
        None => observation,
    };
    match shown {
        Value::String(s) => s.clone(),
        other => serde_json::to_string_pretty(other).unwrap_or_default(),
    }
}

/// Reads the first JSON object in `text` (inside a code fence or not).
pub(crate) fn action_object(text: &str) -> Result<Map<String, Value>, String> {
    for (i, _) in text.match_indices('{') {
        let mut de = serde_json::Deserializer::from_str(&text[i..]).into_iter::<Value>();
        if let Some(Ok(Value::Object(m))) = de.next() {
            return Ok(m);
        }
    }
    Err("Your reply holds no action: write the action as one JSON object.".into())
}

pub(crate) struct OpenEnvEpisode {
    pub(crate) session: Option<Session>,
    pub(crate) config: OpenEnvConfig,
    pub(crate) opening: Vec<Message>,
    pub(crate) rewards: Vec<f64>,
    pub(crate) done: bool,
    pub(crate) last: Value,
    pub(crate) answer: Option<String>,
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

//! The `LanguageModel` role: one chat completion at a time, plus the decorators every backend
//! shares (retry with backoff and a total deadline).

use std::time::Duration;

use async_trait::async_trait;
use serde::{Deserialize, Serialize};

use crate::message::{Message, ToolSchema};

/// Sampling settings. `None` leaves the choice to the backend.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Sampling {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub temperature: Option<f64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub top_p: Option<f64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub top_k: Option<u32>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub min_p: Option<f64>,
    /// Largest completion, in tokens, of one call.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub max_tokens: Option<u32>,
    /// Fixed seed; when unset, trawl derives one per rollout from the run seed.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub seed: Option<u64>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub stop: Vec<String>,
    /// Ask for token ids and per-token logprobs where the backend can give them.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub logprobs: bool,
}

impl Sampling {
    /// Checks the values; names the first field that is out of range.
    pub fn validate(&self) -> Result<(), (&'static str, String)> {
        let fraction = |v: Option<f64>| v.map_or(Ok(()), crate::values::check_fraction);
        if let Some(t) = self.temperature {
            if !(t.is_finite() && (0.0..=100.0).contains(&t)) {
                return Err((
                    "temperature",
                    format!("must be a number from 0 to 100; got {t}"),
                ));
            }
        }
        fraction(self.top_p).map_err(|m| ("top_p", m))?;
        fraction(self.min_p).map_err(|m| ("min_p", m))?;
        if self.max_tokens == Some(0) {
            return Err(("max_tokens", "must be at least 1".into()));
        }
        Ok(())
    }
}

/// Token counts, summed over an episode's model calls.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Usage {
    pub prompt_tokens: u64,
    pub completion_tokens: u64,
    pub model_calls: u64,
}

impl Usage {
    pub fn add(&mut self, other: Usage) {
        self.prompt_tokens += other.prompt_tokens;
        self.completion_tokens += other.completion_tokens;
        self.model_calls += other.model_calls;
    }

    pub fn total_tokens(&self) -> u64 {
        self.prompt_tokens + self.completion_tokens
    }
}

/// Why generation stopped.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum FinishReason {
    Stop,
    Length,
    ToolCalls,
    ContentFilter,
    Other(String),
}

impl FinishReason {
    pub fn parse(s: &str) -> Self {
        match s {
            "stop" | "eos" => FinishReason::Stop,
            "length" => FinishReason::Length,
            "tool_calls" | "function_call" => FinishReason::ToolCalls,
            "content_filter" => FinishReason::ContentFilter,
            other => FinishReason::Other(other.to_string()),
        }
    }
}

/// Token ids and logprobs of a completion, when asked for and available.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct TokenDetail {
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub prompt_ids: Vec<u32>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub completion_ids: Vec<u32>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub logprobs: Vec<f32>,
}

impl TokenDetail {
    /// Whether the backend gave nothing for this turn.
    pub fn is_empty(&self) -> bool {
        self.prompt_ids.is_empty() && self.completion_ids.is_empty() && self.logprobs.is_empty()
    }
}

/// One request to a model.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct CompletionRequest {
    pub messages: Vec<Message>,
    pub tools: Vec<ToolSchema>,
    pub sampling: Sampling,
}

/// One reply.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Completion {
    /// The assistant message, tool calls included.
    pub message: Message,
    pub finish_reason: FinishReason,
    pub usage: Usage,
    pub tokens: Option<TokenDetail>,
}

/// What went wrong with a model call, classified by what the caller should do. Serializable, so
/// that a plugin on either side of the boundary sees the same class.
#[derive(Debug, Clone, PartialEq, thiserror::Error, Serialize, Deserialize)]
#[serde(tag = "kind", content = "detail", rename_all = "snake_case")]
pub enum ModelError {
    /// Worth retrying: connection refused or reset, timeout, 408/409/429/5xx, a cut-off or
    /// unreadable body.
    #[error("model server transient error: {message}")]
    Transient {
        message: String,
        /// What the server asked us to wait (Retry-After), if anything.
        retry_after: Option<Duration>,
    },
    /// The conversation no longer fits the model's context: end the episode as a truncation.
    #[error("context window exceeded: {0}")]
    ContextLength(String),
    /// The server refused the request for good (400, 401, 403, 404, 422): retrying cannot help.
    #[error("model server rejected the request (HTTP {status}): {message}")]
    Rejected { status: u16, message: String },
    /// Retries were spent or the total deadline passed.
    #[error("model server unavailable after {attempts} attempt(s) in {elapsed:?}: {last}")]
    Unavailable {
        attempts: u32,
        elapsed: Duration,
        last: String,
    },
    /// Anything else the backend could not do (a local model failed to load, ...).
    #[error("model backend error: {0}")]
    Backend(String),
    /// The episode's time ran out while this call was still waiting on the model: the server
    /// (or its queue) was too slow, which says nothing about the model's behaviour.
    #[error("the episode's time ran out after {waited:?} waiting on the model server")]
    EpisodeDeadline { waited: Duration },
}

impl ModelError {
    /// The short class recorded in a trajectory's error.
    pub fn kind(&self) -> &'static str {
        match self {
            ModelError::Transient { .. } | ModelError::Unavailable { .. } => "model_unavailable",
            ModelError::ContextLength(_) => "context_length",
            ModelError::Rejected { .. } => "model_rejected",
            ModelError::Backend(_) => "model_backend",
            ModelError::EpisodeDeadline { .. } => "model_timeout",
        }
    }
}

/// A chat model. Implementations are shared by every episode of a run, so `complete` takes
/// `&self` and must be safe to call concurrently.
#[async_trait]
pub trait LanguageModel: Send + Sync {
    /// The backend kind (`openai`, `llama`) and the model it serves, for provenance.
    fn describe(&self) -> ModelDescription;

    async fn complete(&self, request: &CompletionRequest) -> Result<Completion, ModelError>;

    /// The models the backend's server offers (an OpenAI-compatible server's `GET /models`),
    /// for `trawl check --ping`. `Ok(None)`: the backend has no server to ask.
    async fn list_models(&self) -> Result<Option<Vec<String>>, ModelError> {
        Ok(None)
    }
}

/// A shared model is a model: the stack's layers hold their inner model as an `Arc`.
#[async_trait]
impl<M: LanguageModel + ?Sized> LanguageModel for std::sync::Arc<M> {
    fn describe(&self) -> ModelDescription {
        (**self).describe()
    }

    async fn complete(&self, request: &CompletionRequest) -> Result<Completion, ModelError> {
        (**self).complete(request).await
    }

    async fn list_models(&self) -> Result<Option<Vec<String>>, ModelError> {
        (**self).list_models().await
    }
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ModelDescription {
    pub kind: String,
    pub model_id: String,
}

/// How the retry decorator behaves. Defaults keep the README's reliability promises 9 and 10 (capped backoff, deadlines).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct RetryPolicy {
    /// Attempts in all, the first included.
    pub max_attempts: u32,
    /// First backoff, doubled each attempt up to `max_backoff_secs`, with full jitter.
    pub initial_backoff_secs: f64,
    pub max_backoff_secs: f64,
    /// A server's Retry-After is honoured up to this many seconds.
    pub max_retry_after_secs: f64,
    /// No retry starts after this much time since the first attempt.
    pub total_deadline_secs: f64,
}

impl Default for RetryPolicy {
    fn default() -> Self {
        RetryPolicy {
            max_attempts: 6,
            initial_backoff_secs: 0.5,
            max_backoff_secs: 30.0,
            max_retry_after_secs: 60.0,
            total_deadline_secs: 600.0,
        }
    }
}

impl RetryPolicy {
    /// Checks the values; names the first field that is out of range.
    pub fn validate(&self) -> Result<(), (&'static str, String)> {
        if self.max_attempts == 0 {
            return Err(("max_attempts", "must be at least 1".into()));
        }
        for (field, v, zero_ok) in [
            ("initial_backoff_secs", self.initial_backoff_secs, true),
            ("max_backoff_secs", self.max_backoff_secs, true),
            ("max_retry_after_secs", self.max_retry_after_secs, true),
            ("total_deadline_secs", self.total_deadline_secs, false),
        ] {
            crate::values::check_secs(v, zero_ok).map_err(|m| (field, m))?;
        }
        Ok(())
    }

    /// The wait before attempt `attempt + 1` (attempt counts from 1), given the server's hint.
    pub fn backoff(&self, attempt: u32, retry_after: Option<Duration>) -> Duration {
        if let Some(ra) = retry_after {
            return ra.min(crate::values::secs(self.max_retry_after_secs));
        }
        let exp = self.initial_backoff_secs * 2f64.powi(attempt.saturating_sub(1).min(30) as i32);
        let cap = exp.min(self.max_backoff_secs);
        // Full jitter: spread simultaneous retries of thousands of episodes apart.
        crate::values::secs(rand::random::<f64>() * crate::values::secs(cap).as_secs_f64())
    }
}

/// Retries transient errors of the wrapped model with capped exponential backoff and jitter,
/// honours Retry-After up to a cap, and stops at a total deadline. Errors that retrying cannot
/// fix (rejections, context overflow) pass straight through.
pub struct Retry<M> {
    inner: M,
    policy: RetryPolicy,
}

impl<M> Retry<M> {
    pub fn new(inner: M, policy: RetryPolicy) -> Self {
        Retry { inner, policy }
    }
}

#[async_trait]
impl<M: LanguageModel> LanguageModel for Retry<M> {
    fn describe(&self) -> ModelDescription {
        self.inner.describe()
    }

    async fn list_models(&self) -> Result<Option<Vec<String>>, ModelError> {
        self.inner.list_models().await
    }

    async fn complete(&self, request: &CompletionRequest) -> Result<Completion, ModelError> {
        let start = tokio::time::Instant::now();
        let deadline = crate::values::secs(self.policy.total_deadline_secs);
        let mut attempt = 0;
        loop {
            attempt += 1;
            let remaining = deadline.saturating_sub(start.elapsed());
            let result = match tokio::time::timeout(remaining, self.inner.complete(request)).await {
                Ok(r) => r,
                Err(_) => Err(ModelError::Transient {
                    message: "total deadline passed".into(),
                    retry_after: None,
                }),
            };
            match result {
                Err(ModelError::Transient {
                    message,
                    retry_after,
                }) => {
                    let wait = self.policy.backoff(attempt, retry_after);
                    let out_of_time = start.elapsed() + wait >= deadline;
                    if attempt >= self.policy.max_attempts || out_of_time {
                        return Err(ModelError::Unavailable {
                            attempts: attempt,
                            elapsed: start.elapsed(),
                            last: message,
                        });
                    }
                    tracing::debug!(attempt, ?wait, %message, "retrying model call");
                    tokio::time::sleep(wait).await;
                }
                other => return other,
            }
        }
    }
}

/// Bounds the requests in flight to the wrapped model (a model server's own capacity), so that
/// one slow server cannot hold every episode slot of a run.
pub struct ConcurrencyLimit {
    inner: std::sync::Arc<dyn LanguageModel>,
    permits: tokio::sync::Semaphore,
}

impl ConcurrencyLimit {
    pub fn new(inner: std::sync::Arc<dyn LanguageModel>, max_in_flight: usize) -> Self {
        ConcurrencyLimit {
            inner,
            permits: tokio::sync::Semaphore::new(max_in_flight.max(1)),
        }
    }
}

#[async_trait]
impl LanguageModel for ConcurrencyLimit {
    fn describe(&self) -> ModelDescription {
        self.inner.describe()
    }

    async fn list_models(&self) -> Result<Option<Vec<String>>, ModelError> {
        self.inner.list_models().await
    }

    async fn complete(&self, request: &CompletionRequest) -> Result<Completion, ModelError> {
        let _permit = self
            .permits
            .acquire()
            .await
            .map_err(|_| ModelError::Backend("model closed".into()))?;
        self.inner.complete(request).await
    }
}

tokio::task_local! {
    /// The model watch of the rollout this task runs, if any.
    static MODEL_WATCH: std::sync::Arc<ModelWatch>;
}

/// What a rollout knows about its model calls: the episode's deadline, and whether a call was
/// waiting on the model when time ran out. The engine sets one per rollout
/// ([`ModelWatch::scope`]); [`EpisodeDeadline`] reads it.
#[derive(Debug)]
pub struct ModelWatch {
    deadline: tokio::time::Instant,
    waiting: std::sync::atomic::AtomicUsize,
    ran_out: std::sync::atomic::AtomicBool,
}

impl ModelWatch {
    pub fn new(deadline: tokio::time::Instant) -> std::sync::Arc<Self> {
        std::sync::Arc::new(ModelWatch {
            deadline,
            waiting: Default::default(),
            ran_out: Default::default(),
        })
    }

    /// Runs `fut` with this watch: every model call it makes through [`EpisodeDeadline`] is
    /// bounded by the deadline and counted.
    pub async fn scope<F: std::future::Future>(self: &std::sync::Arc<Self>, fut: F) -> F::Output {
        MODEL_WATCH.scope(self.clone(), fut).await
    }

    /// A model call is in flight, or one ran out of time.
    pub fn waited_on_model(&self) -> bool {
        use std::sync::atomic::Ordering::SeqCst;
        self.waiting.load(SeqCst) > 0 || self.ran_out.load(SeqCst)
    }
}

/// Counts one call in flight for as long as it lives.
struct Waiting<'a>(&'a ModelWatch);

impl Drop for Waiting<'_> {
    fn drop(&mut self) {
        self.0
            .waiting
            .fetch_sub(1, std::sync::atomic::Ordering::SeqCst);
    }
}

/// Fits every call inside the episode's remaining time (retries, backoff and queueing
/// included), and tells the engine when the episode's time ran out while a call was waiting, so
/// that a stalled server is recorded as an infrastructure error and not as the model's
/// `TimeExceeded`. Outside a rollout it passes calls through unchanged.
pub struct EpisodeDeadline {
    inner: std::sync::Arc<dyn LanguageModel>,
}

impl EpisodeDeadline {
    pub fn new(inner: std::sync::Arc<dyn LanguageModel>) -> Self {
        EpisodeDeadline { inner }
    }
}

#[async_trait]
impl LanguageModel for EpisodeDeadline {
    fn describe(&self) -> ModelDescription {
        self.inner.describe()
    }

    async fn list_models(&self) -> Result<Option<Vec<String>>, ModelError> {
        self.inner.list_models().await
    }

    async fn complete(&self, request: &CompletionRequest) -> Result<Completion, ModelError> {
        let Ok(watch) = MODEL_WATCH.try_with(|w| w.clone()) else {
            return self.inner.complete(request).await;
        };
        watch
            .waiting
            .fetch_add(1, std::sync::atomic::Ordering::SeqCst);
        let _waiting = Waiting(&watch);
        let start = tokio::time::Instant::now();
        match tokio::time::timeout_at(watch.deadline, self.inner.complete(request)).await {
            Ok(r) => r,
            Err(_) => {
                watch
                    .ran_out
                    .store(true, std::sync::atomic::Ordering::SeqCst);
                Err(ModelError::EpisodeDeadline {
                    waited: start.elapsed(),
                })
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::atomic::{AtomicU32, Ordering};

    struct Flaky {
        fail_first: u32,
        calls: AtomicU32,
        error: fn() -> ModelError,
    }

    #[async_trait]
    impl LanguageModel for Flaky {
        fn describe(&self) -> ModelDescription {
            ModelDescription {
                kind: "flaky".into(),
                model_id: "f".into(),
            }
        }
        async fn complete(&self, _: &CompletionRequest) -> Result<Completion, ModelError> {
            let n = self.calls.fetch_add(1, Ordering::SeqCst);
            if n < self.fail_first {
                return Err((self.error)());
            }
            Ok(Completion {
                message: Message::assistant("ok"),
                finish_reason: FinishReason::Stop,
                usage: Usage::default(),
                tokens: None,
            })
        }
    }

    fn req() -> CompletionRequest {
        CompletionRequest {
            messages: vec![Message::user("hi")],
            tools: vec![],
            sampling: Sampling::default(),
        }
    }

    fn fast() -> RetryPolicy {
        RetryPolicy {
            initial_backoff_secs: 0.001,
            max_backoff_secs: 0.002,
            ..RetryPolicy::default()
        }
    }

    #[tokio::test]
    async fn transient_errors_are_retried_until_success() {
        let m = Retry::new(
            Flaky {
                fail_first: 3,
                calls: AtomicU32::new(0),
                error: || ModelError::Transient {
                    message: "503".into(),
                    retry_after: None,
                },
            },
            fast(),
        );
        assert_eq!(m.complete(&req()).await.unwrap().message.text(), "ok");
        assert_eq!(m.inner.calls.load(Ordering::SeqCst), 4);
    }

    #[tokio::test]
    async fn rejections_are_not_retried() {
        let m = Retry::new(
            Flaky {
                fail_first: 9,
                calls: AtomicU32::new(0),
                error: || ModelError::Rejected {
                    status: 401,
                    message: "no".into(),
                },
            },
            fast(),
        );
        assert!(matches!(
            m.complete(&req()).await,
            Err(ModelError::Rejected { status: 401, .. })
        ));
        assert_eq!(m.inner.calls.load(Ordering::SeqCst), 1);
    }

    #[tokio::test]
    async fn attempts_are_capped() {
        let m = Retry::new(
            Flaky {
                fail_first: 100,
                calls: AtomicU32::new(0),
                error: || ModelError::Transient {
                    message: "500".into(),
                    retry_after: None,
                },
            },
            RetryPolicy {
                max_attempts: 3,
                ..fast()
            },
        );
        assert!(matches!(
            m.complete(&req()).await,
            Err(ModelError::Unavailable { attempts: 3, .. })
        ));
    }

    #[test]
    fn retry_after_is_capped_and_backoff_bounded() {
        let p = RetryPolicy {
            max_retry_after_secs: 5.0,
            max_backoff_secs: 2.0,
            ..RetryPolicy::default()
        };
        assert_eq!(
            p.backoff(1, Some(Duration::from_secs(3600))),
            Duration::from_secs(5)
        );
        assert_eq!(
            p.backoff(1, Some(Duration::from_secs(1))),
            Duration::from_secs(1)
        );
        for attempt in 1..40 {
            assert!(p.backoff(attempt, None) <= Duration::from_secs(2));
        }
    }
}

//! The one stack every model runs in, built here for every model a config names: each
//! `[[models]]` entry and each model a component builds for itself (a simulated user's, a
//! judge's), whatever its backend, built-in or plugin. From the outside in:
//!
//! 1. the episode's deadline ([`EpisodeDeadline`]): queueing, retries and backoff all fit in the
//!    episode's remaining time;
//! 2. the hooks a caller adds ([`Hook`]: a cache, a recorder), so that a hit skips the queue;
//! 3. the concurrency limit ([`ConcurrencyLimit`], `max_concurrency`): the server's capacity;
//! 4. retry with backoff ([`Retry`], `retry`): transient errors, Retry-After, a total deadline;
//! 5. the backend.
//!
//! A model's table carries the stack's keys (`max_concurrency`, `retry`) beside its backend's
//! own settings; [`StackSettings::take`] takes them out, so a backend never sees them.

use std::sync::Arc;

use serde_json::{Map, Value};

use crate::component::{parse_settings, ComponentError};
use crate::model::{ConcurrencyLimit, EpisodeDeadline, LanguageModel, Retry, RetryPolicy};

/// The most requests in flight to one model that a setting may ask for.
pub const MAX_CONCURRENCY: usize = 1 << 20;

/// A layer a caller adds around every model (a cache, a recorder), inside the deadline and
/// outside the concurrency limit.
pub type Hook = Arc<dyn Fn(Arc<dyn LanguageModel>) -> Arc<dyn LanguageModel> + Send + Sync>;

/// The stack's settings of one model.
#[derive(Debug, Clone, PartialEq)]
pub struct StackSettings {
    /// Requests in flight to this model at once.
    pub max_concurrency: usize,
    /// How transient errors are retried.
    pub retry: RetryPolicy,
}

impl StackSettings {
    /// Takes `max_concurrency` and `retry` out of a model's settings (the rest is its backend's),
    /// checked; `max_concurrency` defaults to `default_concurrency`. An error names the field
    /// (`retry.total_deadline_secs`).
    pub fn take(
        settings: &mut Map<String, Value>,
        default_concurrency: usize,
    ) -> Result<Self, ComponentError> {
        let max_concurrency = match settings.remove("max_concurrency") {
            None => default_concurrency.clamp(1, MAX_CONCURRENCY),
            Some(v) => v
                .as_u64()
                .filter(|n| (1..=MAX_CONCURRENCY as u64).contains(n))
                .ok_or_else(|| {
                    ComponentError::at(
                        "max_concurrency",
                        format!("must be a whole number from 1 to {MAX_CONCURRENCY}"),
                    )
                })? as usize,
        };
        let retry = match settings.remove("retry") {
            None => RetryPolicy::default(),
            Some(v) => parse_settings::<RetryPolicy>(&v).map_err(|mut e| {
                e.path.insert(0, "retry".into());
                e
            })?,
        };
        retry
            .validate()
            .map_err(|(field, m)| ComponentError::at(&format!("retry.{field}"), m))?;
        Ok(StackSettings {
            max_concurrency,
            retry,
        })
    }

    /// `backend` in the stack: deadline, `hooks` (the first outermost), concurrency limit,
    /// retry.
    pub fn wrap(&self, backend: Arc<dyn LanguageModel>, hooks: &[Hook]) -> Arc<dyn LanguageModel> {
        let retried: Arc<dyn LanguageModel> = Arc::new(Retry::new(backend, self.retry.clone()));
        let limited: Arc<dyn LanguageModel> =
            Arc::new(ConcurrencyLimit::new(retried, self.max_concurrency));
        let hooked = hooks.iter().rev().fold(limited, |inner, hook| hook(inner));
        Arc::new(EpisodeDeadline::new(hooked))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::model::{Completion, CompletionRequest, ModelDescription, ModelError};
    use serde_json::json;
    use std::sync::atomic::{AtomicUsize, Ordering};

    /// Fails transiently `fails` times, then answers; counts calls and the most in flight.
    struct Backend {
        fails: AtomicUsize,
        calls: AtomicUsize,
        in_flight: AtomicUsize,
        most: AtomicUsize,
    }

    #[async_trait::async_trait]
    impl LanguageModel for Backend {
        fn describe(&self) -> ModelDescription {
            ModelDescription {
                kind: "test".into(),
                model_id: "t".into(),
            }
        }

        async fn complete(&self, _: &CompletionRequest) -> Result<Completion, ModelError> {
            self.calls.fetch_add(1, Ordering::SeqCst);
            let now = self.in_flight.fetch_add(1, Ordering::SeqCst) + 1;
            self.most.fetch_max(now, Ordering::SeqCst);
            tokio::time::sleep(std::time::Duration::from_millis(20)).await;
            self.in_flight.fetch_sub(1, Ordering::SeqCst);
            if self
                .fails
                .fetch_update(Ordering::SeqCst, Ordering::SeqCst, |f| f.checked_sub(1))
                .is_ok()
            {
                return Err(ModelError::Transient {
                    message: "flaky".into(),
                    retry_after: None,
                });
            }
            Ok(Completion {
                message: crate::message::Message::assistant("ok"),
                finish_reason: crate::model::FinishReason::Stop,
                usage: crate::model::Usage::default(),
                tokens: None,
            })
        }
    }

    fn backend(fails: usize) -> Arc<Backend> {
        Arc::new(Backend {
            fails: AtomicUsize::new(fails),
            calls: AtomicUsize::new(0),
            in_flight: AtomicUsize::new(0),
            most: AtomicUsize::new(0),
        })
    }

    fn request() -> CompletionRequest {
        CompletionRequest {
            messages: vec![crate::message::Message::user("hi")],
            tools: vec![],
            sampling: crate::model::Sampling::default(),
        }
    }

    fn settings(table: Value) -> Result<StackSettings, ComponentError> {
        let Value::Object(mut m) = table else {
            unreachable!("a table")
        };
        StackSettings::take(&mut m, 3)
    }

    #[test]
    fn the_stack_keys_are_taken_out_and_checked() {
        let mut m = json!({"model": "x", "max_concurrency": 2, "retry": {"max_attempts": 3}})
            .as_object()
            .cloned()
            .unwrap();
        let s = StackSettings::take(&mut m, 8).unwrap();
        assert_eq!(s.max_concurrency, 2);
        assert_eq!(s.retry.max_attempts, 3);
        assert_eq!(
            Value::Object(m),
            json!({"model": "x"}),
            "the backend's own settings"
        );
        assert_eq!(
            settings(json!({})).unwrap().max_concurrency,
            3,
            "the default"
        );
        for (bad, path) in [
            (json!({"max_concurrency": 0}), vec!["max_concurrency"]),
            (json!({"max_concurrency": "4"}), vec!["max_concurrency"]),
            (
                json!({"retry": {"total_deadline_secs": -1.0}}),
                vec!["retry", "total_deadline_secs"],
            ),
            (
                json!({"retry": {"max_attempts": 0}}),
                vec!["retry", "max_attempts"],
            ),
            (json!({"retry": {"attempts": 2}}), vec!["retry", "attempts"]),
        ] {
            let e = settings(bad.clone()).unwrap_err();
            assert_eq!(e.path, path, "{bad}: {e}");
        }
    }

    #[tokio::test]
    async fn every_model_is_retried_and_limited() {
        let b = backend(2);
        let s = settings(json!({"max_concurrency": 2, "retry": {"max_attempts": 3, "initial_backoff_secs": 0.001, "max_backoff_secs": 0.002}})).unwrap();
        let m = s.wrap(b.clone(), &[]);
        let c = m.complete(&request()).await.unwrap();
        assert_eq!(c.message.text(), "ok");
        assert_eq!(
            b.calls.load(Ordering::SeqCst),
            3,
            "two transient failures retried"
        );

        let b = backend(0);
        let m = s.wrap(b.clone(), &[]);
        let calls = (0..6).map(|_| {
            let m = m.clone();
            async move { m.complete(&request()).await }
        });
        let mut set = tokio::task::JoinSet::new();
        for c in calls {
            set.spawn(c);
        }
        for r in set.join_all().await {
            r.unwrap();
        }
        assert_eq!(
            b.most.load(Ordering::SeqCst),
            2,
            "at most max_concurrency in flight"
        );
    }

    #[tokio::test]
    async fn hooks_sit_outside_the_limit_in_their_order() {
        let order = Arc::new(std::sync::Mutex::new(Vec::new()));
        let hook = |name: &'static str| -> Hook {
            let order = order.clone();
            Arc::new(move |inner: Arc<dyn LanguageModel>| {
                order.lock().unwrap().push(name);
                inner
            })
        };
        let s = settings(json!({})).unwrap();
        let _ = s.wrap(backend(0), &[hook("outer"), hook("inner")]);
        assert_eq!(
            *order.lock().unwrap(),
            vec!["inner", "outer"],
            "inner wraps first"
        );
    }
}

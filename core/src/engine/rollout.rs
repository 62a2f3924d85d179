//! One rollout: an episode of an environment driven by a scaffold on a model, within its time
//! limit, every failure of the infrastructure kept apart from the model's.

use std::sync::Arc;
use std::time::Duration;

use tokio_util::sync::CancellationToken;

use crate::model::ModelWatch;
use crate::scaffold::{RolloutContext, ScaffoldError, Transcript};
use crate::trajectory::{ExitStatus, TrajectoryRecord};

use super::build::Shared;
use super::plan::Plan;
use super::record::{flatten_timeout, infra, outcome, RecordBuilder};
use super::score::score;

/// Runs one rollout in its own task so that a panic in a scaffold, environment or evaluator
/// becomes an infrastructure-error record instead of taking the run down.
pub(super) async fn guarded_rollout(
    shared: Arc<Shared>,
    plan: Plan,
    hard: CancellationToken,
) -> TrajectoryRecord {
    let (key, at) = (plan.key.clone(), plan.at());
    let task = shared.environments[plan.env].tasks[plan.task].clone();
    let inner = tokio::spawn(rollout(shared.clone(), plan, hard));
    match inner.await {
        Ok(record) => record,
        Err(e) => {
            let message = if e.is_panic() {
                "a component panicked during the rollout".to_string()
            } else {
                e.to_string()
            };
            tracing::error!(%key, %message, "rollout crashed");
            let mut b = RecordBuilder::new(&shared, key, (*task).clone(), at);
            b.outcome = infra("panic", message);
            b.into_record(Transcript::new())
        }
    }
}

/// One rollout: start the episode, let the scaffold play it within the time limit, collect the
/// artifacts, score. Always returns a record.
pub(super) async fn rollout(
    shared: Arc<Shared>,
    plan: Plan,
    hard: CancellationToken,
) -> TrajectoryRecord {
    let slot = &shared.environments[plan.env];
    let task = slot.tasks[plan.task].clone();
    let mut b = RecordBuilder::new(&shared, plan.key.clone(), (*task).clone(), plan.at());
    let mut transcript = Transcript::new();
    let deadline = tokio::time::Instant::now() + shared.episode_timeout;
    // Model calls (the agent's, and a simulated user's) fit inside the episode's time, and the
    // watch tells a stalled server from a slow agent when the time runs out.
    let watch = ModelWatch::new(deadline);

    let started = tokio::select! {
        r = tokio::time::timeout_at(deadline, watch.scope(slot.env.live.start(&task))) => r,
        _ = hard.cancelled() => {
            b.outcome = outcome(ExitStatus::Interrupted, None, None);
            return b.into_record(transcript);
        }
    };
    let mut episode =
        match flatten_timeout(started, "episode start outlasted the episode time limit") {
            Ok(e) => e,
            Err(message) => {
                b.outcome = infra("environment", message);
                return b.into_record(transcript);
            }
        };
    transcript.messages = episode.opening();
    transcript.tools = episode.tools();

    let sampling = b.sampling.clone();
    let result = {
        let cx = RolloutContext {
            episode: episode.as_mut(),
            model: shared.models[plan.model].model.live.as_ref(),
            sampling: &sampling,
            transcript: &mut transcript,
        };
        tokio::select! {
            r = tokio::time::timeout_at(deadline, watch.scope(shared.scaffolds[plan.scaffold].live.run(cx))) => Some(r),
            _ = hard.cancelled() => None,
        }
    };
    b.outcome = match result {
        None => outcome(ExitStatus::Interrupted, None, None),
        // Time ran out while the model server had not answered: not the model's failure.
        Some(Err(_)) if watch.waited_on_model() => infra(
            "model_timeout",
            format!(
                "the episode's time limit ({:?}) ran out while waiting on the model server",
                shared.episode_timeout
            ),
        ),
        Some(Err(_)) => outcome(ExitStatus::TimeExceeded, None, None),
        Some(Ok(Ok(o))) => outcome(o.exit_status, o.submission, None),
        Some(Ok(Err(ScaffoldError::Model(e)))) => infra(e.kind(), e.to_string()),
        Some(Ok(Err(ScaffoldError::Environment(e)))) => infra("environment", e.to_string()),
        Some(Ok(Err(ScaffoldError::Scaffold(m)))) => infra("scaffold", m),
    };
    if !b.outcome.exit_status.is_final() {
        return b.into_record(transcript);
    }

    // Artifacts and scoring are bounded too: a wedged environment must not hold a slot forever.
    let grace = shared.episode_timeout.max(Duration::from_secs(30));
    match flatten_timeout(
        tokio::time::timeout(grace, episode.finish()).await,
        "collecting artifacts timed out",
    ) {
        Ok(artifacts) => {
            if b.outcome.submission.is_none() {
                b.outcome.submission = artifacts.submission;
            }
            b.outcome.artifacts = artifacts.extra;
            // A step reward trawl cannot record (NaN, infinite, absurd) is the environment's
            // fault, not the model's.
            if let Some((i, why)) = artifacts
                .step_rewards
                .iter()
                .enumerate()
                .find_map(|(i, r)| crate::reward::unsound(*r).map(|why| (i, why)))
            {
                b.outcome = infra(
                    "environment",
                    format!(
                        "environment `{}` gave step {i} a reward that is {why}",
                        slot.env.name
                    ),
                );
                return b.into_record(transcript);
            }
            // Step rewards are kept only when there is one for every step: a partial list
            // could not say which step earned what.
            if artifacts.step_rewards.len() == transcript.steps.len() {
                for (step, reward) in transcript.steps.iter_mut().zip(&artifacts.step_rewards) {
                    step.reward = Some(*reward);
                }
            } else if !artifacts.step_rewards.is_empty() {
                tracing::warn!(
                    steps = transcript.steps.len(),
                    rewards = artifacts.step_rewards.len(),
                    "the environment gave step rewards that do not match the steps; not recorded"
                );
            }
            if !transcript.artifacts.is_empty() {
                let mut merged = match std::mem::take(&mut b.outcome.artifacts) {
                    serde_json::Value::Object(m) => m,
                    serde_json::Value::Null => serde_json::Map::new(),
                    other => serde_json::Map::from_iter([("environment".to_string(), other)]),
                };
                merged.extend(std::mem::take(&mut transcript.artifacts));
                b.outcome.artifacts = serde_json::Value::Object(merged);
            }
        }
        Err(message) => {
            b.outcome = infra("environment", message);
            return b.into_record(transcript);
        }
    }
    drop(episode);
    let mut record = b.into_record(transcript);
    score(&shared.scoring, &slot.evaluators, &mut record, grace).await;
    record
}

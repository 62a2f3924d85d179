//! The trajectory record of a finished rollout, assembled from its transcript and outcome.

use std::collections::BTreeMap;
use std::time::Instant;

use crate::model::{Sampling, TokenDetail};
use crate::scaffold::Transcript;
use crate::task::Task;
use crate::trajectory::{
    ExitStatus, Outcome, Provenance, RecordedError, RolloutKey, Timing, TrajectoryRecord,
    TRAJECTORY_SCHEMA,
};

use super::build::Shared;
use super::summary::{now_rfc3339, rollout_seed, TRAWL_VERSION};

pub(super) struct RecordBuilder<'a> {
    pub(super) shared: &'a Shared,
    pub(super) key: RolloutKey,
    pub(super) task: Task,
    pub(super) model: usize,
    pub(super) env: usize,
    pub(super) scaffold: usize,
    pub(super) started_at: String,
    pub(super) t0: Instant,
    pub(super) sampling: Sampling,
    pub(super) seed: u64,
    pub(super) outcome: Outcome,
}

impl<'a> RecordBuilder<'a> {
    pub(super) fn new(
        shared: &'a Shared,
        key: RolloutKey,
        task: Task,
        (env, scaffold, model): (usize, usize, usize),
    ) -> Self {
        let seed = rollout_seed(shared.seed, &key);
        let mut sampling = shared.models[model].sampling.clone();
        let seed = *sampling.seed.get_or_insert(seed);
        RecordBuilder {
            shared,
            key,
            task,
            model,
            env,
            scaffold,
            started_at: now_rfc3339(),
            t0: Instant::now(),
            sampling,
            seed,
            outcome: outcome(ExitStatus::Interrupted, None, None),
        }
    }

    pub(super) fn into_record(self, transcript: Transcript) -> TrajectoryRecord {
        let m = &self.shared.models[self.model].model;
        let description = m.live.describe();
        let mut components = BTreeMap::new();
        components.insert(
            "environment".into(),
            self.shared.environments[self.env].env.label.clone(),
        );
        components.insert(
            "scaffold".into(),
            self.shared.scaffolds[self.scaffold].label.clone(),
        );
        components.insert("model".into(), m.label.clone());
        TrajectoryRecord {
            schema: TRAJECTORY_SCHEMA.into(),
            key: self.key,
            task: self.task,
            messages: transcript.messages,
            tools: transcript.tools,
            steps: transcript.steps,
            outcome: self.outcome,
            evaluations: Vec::new(),
            reward: 0.0,
            success: false,
            usage: transcript.usage,
            // No record claims token data when no turn had any.
            tokens: if transcript.tokens.iter().all(TokenDetail::is_empty) {
                Vec::new()
            } else {
                transcript.tokens
            },
            finish_reasons: transcript.finish_reasons,
            timing: Timing {
                started_at: self.started_at,
                duration_ms: self.t0.elapsed().as_millis() as u64,
                model_ms: transcript.model_ms,
            },
            provenance: Provenance {
                trawl_version: TRAWL_VERSION.into(),
                model_kind: description.kind,
                model_id: description.model_id,
                sampling: self.sampling,
                seed: self.seed,
                run_id: self.shared.run_id.clone(),
                components,
            },
        }
    }
}

/// An infrastructure-error outcome.
pub(super) fn infra(kind: &str, message: impl Into<String>) -> Outcome {
    outcome(ExitStatus::InfraError, None, Some((kind, message.into())))
}

/// A bounded fallible step as one result: its own error, or `timed_out` if the bound passed.
pub(super) fn flatten_timeout<T, E: std::fmt::Display>(
    r: Result<Result<T, E>, tokio::time::error::Elapsed>,
    timed_out: &str,
) -> Result<T, String> {
    match r {
        Ok(Ok(v)) => Ok(v),
        Ok(Err(e)) => Err(e.to_string()),
        Err(_) => Err(timed_out.to_string()),
    }
}

pub(super) fn outcome(
    exit_status: ExitStatus,
    submission: Option<String>,
    error: Option<(&str, String)>,
) -> Outcome {
    Outcome {
        exit_status,
        submission,
        error: error.map(|(kind, message)| RecordedError {
            kind: kind.into(),
            message,
        }),
        artifacts: serde_json::Value::Null,
    }
}

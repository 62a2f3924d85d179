//! `trawl check`: a config built without running it, and each model pinged.

use std::collections::BTreeMap;

use serde::Serialize;

use crate::config::{ExperimentConfig, SourceMap};
use crate::matrix::Skipped;
use crate::registry::Registry;
use crate::task::Task;

use super::build::build;
use super::summary::RunError;

/// What `trawl check` found: the run the config describes, without running it.
#[derive(Debug, Clone, Serialize)]
pub struct CheckReport {
    /// Rollouts the run would make (every sample of every combination and task).
    pub rollouts: u64,
    /// Environment name → its tasks, in the order the run starts them.
    pub tasks: BTreeMap<String, Vec<Task>>,
    /// The (environment, scaffold, model) combinations that run.
    pub combinations: Vec<(String, String, String)>,
    pub skipped_combinations: Vec<Skipped>,
    /// Environment name → the evaluators that score it (`environment` for its own).
    pub evaluators: BTreeMap<String, Vec<String>>,
    pub scoring: String,
    /// With `ping`: each model's answer to "which models do you serve?"
    pub ping: Vec<PingResult>,
}

/// One model server's answer to `trawl check --ping`.
#[derive(Debug, Clone, Serialize)]
pub struct PingResult {
    pub model: String,
    /// The model id the config asks for.
    pub model_id: String,
    /// `Ok(None)`: a backend with no server (the embedded model).
    pub served: Result<Option<Vec<String>>, String>,
}

/// Builds every component of the config (plugins, tasks, tool domains, images, pair
/// compatibility, evaluator scopes, scoring) and drops them: exactly the errors a run would
/// meet before its first rollout, without running one. With `ping`, each model server is asked
/// for its model list too.
pub async fn check(
    config: &ExperimentConfig,
    map: &SourceMap,
    registry: &Registry,
    ping: bool,
) -> Result<CheckReport, RunError> {
    let (shared, _) = build(config, map, registry).await?;
    let mut report = CheckReport {
        rollouts: u64::from(config.samples.max()).saturating_mul(shared.matrix_size()),
        tasks: BTreeMap::new(),
        combinations: Vec::new(),
        skipped_combinations: shared.skipped.clone(),
        evaluators: BTreeMap::new(),
        scoring: shared.scoring.describe(),
        ping: Vec::new(),
    };
    for slot in &shared.environments {
        report.tasks.insert(
            slot.env.name.clone(),
            slot.tasks.iter().map(|t| Task::clone(t)).collect(),
        );
        report.evaluators.insert(
            slot.env.name.clone(),
            slot.evaluators
                .iter()
                .map(|e| {
                    e.recorded_as.clone().unwrap_or_else(|| {
                        format!("{} ({})", crate::scoring::ENVIRONMENT, e.live.name())
                    })
                })
                .collect(),
        );
        for &(si, mi) in &slot.pairs {
            report.combinations.push((
                slot.env.name.clone(),
                shared.scaffolds[si].name.clone(),
                shared.models[mi].model.name.clone(),
            ));
        }
    }
    if ping {
        for m in &shared.models {
            let served = m.model.live.list_models().await.map_err(|e| e.to_string());
            report.ping.push(PingResult {
                model: m.model.name.clone(),
                model_id: m.model.live.describe().model_id,
                served,
            });
        }
        for (owner, model) in &shared.own_models {
            let served = model.list_models().await.map_err(|e| e.to_string());
            report.ping.push(PingResult {
                model: format!("{} (its own model)", owner),
                model_id: model.describe().model_id,
                served,
            });
        }
    }
    for slot in &shared.environments {
        slot.env.live.shutdown().await;
    }
    Ok(report)
}

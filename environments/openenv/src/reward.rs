//! The `openenv_reward` evaluator: the server's step rewards (the last one, or their sum) as
//! the rollout's evaluation.

use std::sync::Arc;

use serde::Deserialize;
use serde_json::{json, Value};
use trawl_core::registry::{BuildContext, ComponentError, EvaluatorConfig};
use trawl_core::{async_trait, Evaluation, Evaluator, EvaluatorError, TrajectoryRecord};

use crate::config::{one_f, RewardMode};

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

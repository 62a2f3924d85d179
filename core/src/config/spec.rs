//! The resolved experiment config: its sections as the run uses them, and the TOML that the
//! run directory keeps of it.

use std::path::PathBuf;

use serde::{Deserialize, Serialize};
use serde_json::{Map, Value};

use crate::matrix::Matrix;
use crate::model::Sampling;
use crate::scoring::Scoring;

/// One component as the config names it: its kind, its label, and its own settings.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct ComponentSpec {
    /// The registry kind (`math`, `chat`, `openai`).
    #[serde(rename = "type")]
    pub kind: String,
    /// The label used in rollout keys; defaults to the kind, made unique by the loader.
    pub name: String,
    /// Everything else in the table, for the kind to parse.
    #[serde(flatten)]
    pub settings: Map<String, Value>,
    /// Where the table starts, for errors found later (when the component is built).
    #[serde(skip)]
    pub field: String,
}

/// A model entry: the component plus what the engine handles for every backend.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct ModelSpec {
    #[serde(flatten)]
    pub component: ComponentSpec,
    /// Most requests in flight to this model at once.
    pub max_concurrency: usize,
    pub sampling: Sampling,
}

/// An `[[evaluators]]` entry: the component plus the environments it scores.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct EvaluatorSpec {
    #[serde(flatten)]
    pub component: ComponentSpec,
    /// The environments (by name) whose rollouts it scores; empty: every environment. Outside
    /// its scope an evaluator is not applicable: it is not asked, and nothing is recorded.
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub environments: Vec<String>,
}

impl EvaluatorSpec {
    /// Whether it scores rollouts of the environment named `environment`.
    pub fn applies_to(&self, environment: &str) -> bool {
        self.environments.is_empty() || self.environments.iter().any(|e| e == environment)
    }
}

/// A whole experiment, resolved: defaults filled, components found in the registry.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct ExperimentConfig {
    pub name: String,
    pub seed: u64,
    /// Samples per (environment, scaffold, model, task): a number, or sampling until enough
    /// succeed (`{ max = 16, until_successes = 2 }`).
    pub samples: Samples,
    /// Stop starting rollouts once the run's rollouts (every session's) have used this many
    /// tokens, prompt and completion.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub max_total_tokens: Option<u64>,
    /// Most episodes in flight at once.
    pub concurrency: usize,
    /// Wall-time limit of one episode, in seconds.
    pub episode_timeout_secs: f64,
    /// The run fails when more than this share of finished rollouts are infrastructure errors
    /// (checked once at least 20 have finished).
    pub max_infra_error_rate: f64,
    pub environments: Vec<ComponentSpec>,
    pub scaffolds: Vec<ComponentSpec>,
    pub models: Vec<ModelSpec>,
    /// Evaluators run after each environment's own, on the environments in their scope.
    pub evaluators: Vec<EvaluatorSpec>,
    /// Which combinations run (default: all of them).
    #[serde(skip_serializing_if = "Matrix::is_default")]
    pub matrix: Matrix,
    /// Which evaluations make a record's reward and success.
    pub scoring: Scoring,
    /// Whether the config has a `[scoring]` table: without one, the resolved config does not
    /// spell out the default, so runs started before `[scoring]` existed resume unchanged.
    #[serde(skip)]
    pub scoring_given: bool,
    /// Plugin libraries the config loads, as written (relative to the config's folder). The
    /// command line loads them (see [`plugin_refs`]) before the rest of the config is checked.
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub plugins: Vec<String>,
    /// The folder relative paths are read from.
    #[serde(skip)]
    pub base_dir: PathBuf,
    /// The `--set KEY=VALUE` arguments applied to the file, as given: the resolved config
    /// records them in its first lines (its values already hold them).
    #[serde(skip)]
    pub overrides: Vec<String>,
}

/// How many rollouts each (environment, scaffold, model, task) gets.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(untagged)]
pub enum Samples {
    /// Exactly this many (`samples = 4`).
    Fixed(u32),
    /// One at a time until `until_successes` of them succeeded, at most `max`
    /// (`samples = { max = 16, until_successes = 2 }`). Sample n + 1 starts when sample n has
    /// finished, so which samples run depends only on their outcomes: the same seeds give the
    /// same rollouts, and a resumed run goes on where it stopped.
    Until { max: u32, until_successes: u32 },
}

impl Samples {
    /// The most samples any cell gets.
    pub fn max(self) -> u32 {
        match self {
            Samples::Fixed(n) => n,
            Samples::Until { max, .. } => max,
        }
    }
}

impl std::fmt::Display for Samples {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Samples::Fixed(n) => write!(f, "{n} sample(s)"),
            Samples::Until {
                max,
                until_successes,
            } => write!(f, "up to {max} samples, until {until_successes} succeed"),
        }
    }
}

impl ExperimentConfig {
    /// The config as resolved, in TOML, for the run directory.
    pub fn to_toml(&self) -> String {
        let mut json = serde_json::to_value(self).unwrap_or(Value::Null);
        if !self.scoring_given {
            if let Value::Object(m) = &mut json {
                m.remove("scoring");
            }
        }
        let body = toml::to_string_pretty(&json)
            .unwrap_or_else(|e| format!("# could not render the resolved config: {e}\n"));
        // The overrides, as comments: their values are in the body already; these say where
        // they came from. A resumed run compares the body alone.
        let mut out = String::new();
        for arg in &self.overrides {
            let one_line = arg.replace('\n', "\\n");
            out.push_str(&format!("{OVERRIDE_COMMENT}{one_line}\n"));
        }
        out.push_str(&body);
        out
    }

    /// The resolved config text without the leading `--set` comments [`to_toml`](Self::to_toml)
    /// writes: what a resumed run compares.
    pub fn without_override_comments(resolved: &str) -> &str {
        let mut rest = resolved;
        while rest.starts_with(OVERRIDE_COMMENT) {
            rest = rest.split_once('\n').map_or("", |(_, r)| r);
        }
        rest
    }
}

/// How the resolved config's first lines record each `--set` argument.
const OVERRIDE_COMMENT: &str = "# --set ";

/// The most episodes (or requests to one model) in flight at once.
pub use crate::model_stack::MAX_CONCURRENCY;

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn resumes_compare_the_values_not_the_set_comments() {
        let from_set = "# --set name=a\n# --set seed=1\nname = \"a\"\nseed = 1\n";
        let from_file = "name = \"a\"\nseed = 1\n";
        assert_eq!(
            ExperimentConfig::without_override_comments(from_set),
            from_file
        );
        assert_eq!(
            ExperimentConfig::without_override_comments(from_file),
            from_file
        );
    }
}

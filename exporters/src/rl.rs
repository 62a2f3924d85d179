//! Formats for preference and reinforcement-learning trainers, built from groups of rollouts of
//! the same prompt:
//! - `dpo`: TRL's conversational preference rows `{"prompt", "chosen", "rejected"}`.
//! - `grpo`: one row per prompt with every completion, its reward and its group-normalised
//!   advantage.
//! - `tokens`: per assistant turn, the token ids the model saw and wrote, a response mask and the
//!   logprobs, from records that carry them.
//!
//! A group is every selected rollout of one task, played by one scaffold, whose prompt (the
//! messages before the first assistant turn: system prompt, task, tool schemas) is the same:
//! a scaffold decides what a reply means, so rollouts of different scaffolds are never compared,
//! while samples of several models under one scaffold are.

use std::collections::{BTreeMap, HashMap};
use std::io::Write;
use std::sync::{Arc, Mutex};

use serde::Deserialize;
use serde_json::{json, Value};
use statrs::statistics::Statistics;
use trawl_core::registry::{BuildContext, ComponentError, ExporterConfig};
use trawl_core::{ExportError, Exporter, Message, MessageRole, TrajectoryRecord};

use crate::{conversations, write_line, Counts, ToolsStyle};

/// One rollout's conversation split at its first assistant turn.
pub(crate) struct Rollout {
    pub id: String,
    pub sample: u32,
    pub model: String,
    pub completion: Value,
    pub reward: f64,
    pub success: bool,
    pub tokens: u64,
}

/// Rollouts of one task that share a prompt, in run order.
pub(crate) struct Group {
    pub environment: String,
    pub task: String,
    pub scaffold: String,
    /// The task's own data (its question and answer, its tests).
    pub task_data: Value,
    pub agent: Option<String>,
    /// The messages before the first assistant turn, as trainers read them.
    pub prompt: Value,
    pub tools: Value,
    pub rollouts: Vec<Rollout>,
}

/// Collects the selected records into groups as they come, in first-seen order.
#[derive(Default)]
pub(crate) struct Groups {
    order: Vec<Group>,
    index: HashMap<(String, String, String, Option<String>, String), usize>,
}

impl Groups {
    /// Adds each conversation of `r` (one per agent in a multi-agent rollout) to its group.
    /// Returns how many conversations had no assistant turn (nothing to learn from).
    pub fn add(&mut self, r: &TrajectoryRecord, agent: Option<&str>, tools: ToolsStyle) -> usize {
        let mut empty = 0;
        for (agent, messages) in conversations(r, agent) {
            let Some(first) = messages
                .iter()
                .position(|m| m.role == MessageRole::Assistant)
            else {
                empty += 1;
                continue;
            };
            let prompt = trawl_core::wire_messages(&messages[..first]);
            let completion = trawl_core::wire_messages(&messages[first..]);
            let key = (
                r.key.environment.clone(),
                r.key.task.clone(),
                r.key.scaffold.clone(),
                agent.clone(),
                format!("{prompt}{}", json!(r.tools)),
            );
            let next = self.order.len();
            let i = *self.index.entry(key).or_insert(next);
            if i == next {
                self.order.push(Group {
                    environment: r.key.environment.clone(),
                    task: r.key.task.clone(),
                    scaffold: r.key.scaffold.clone(),
                    task_data: r.task.data.clone(),
                    agent: agent.clone(),
                    prompt,
                    tools: tools.value(r),
                    rollouts: Vec::new(),
                });
            }
            self.order[i].rollouts.push(Rollout {
                id: r.key.to_string(),
                sample: r.key.sample,
                model: r.key.model.clone(),
                completion,
                reward: crate::agent_reward(r, agent.as_deref()),
                success: r.success,
                tokens: r.usage.total_tokens(),
            });
        }
        empty
    }

    pub fn take(&mut self) -> Vec<Group> {
        self.index.clear();
        std::mem::take(&mut self.order)
    }
}

/// What a group format keeps between `write` and `finish`: the groups so far and its counts.
#[derive(Default)]
pub(crate) struct Collector {
    groups: Mutex<Groups>,
    pub counts: Counts,
    agent: Option<String>,
    tools: ToolsStyle,
}

impl Collector {
    pub fn new(agent: Option<String>, tools: ToolsStyle) -> Self {
        Collector {
            agent,
            tools,
            ..Collector::default()
        }
    }

    /// Adds `r`'s conversations to their groups (no example is written yet).
    pub fn add(&self, r: &TrajectoryRecord) -> Result<usize, ExportError> {
        // A rollout no evaluator scored has no reward to compare (an imported trajectory
        // without a harness report): counted, never grouped as a 0.
        if !r.is_scored() {
            self.counts.add("unscored", 1);
            return Ok(0);
        }
        let mut groups = self.groups.lock().unwrap_or_else(|p| p.into_inner());
        let empty = groups.add(r, self.agent.as_deref(), self.tools);
        self.counts.add("conversations_without_reply", empty);
        Ok(0)
    }

    /// Every group, in first-seen order, leaving none behind.
    pub fn take(&self) -> Vec<Group> {
        self.groups.lock().unwrap_or_else(|p| p.into_inner()).take()
    }
}

/// The fields every group row carries.
fn group_fields(g: &Group) -> serde_json::Map<String, Value> {
    let mut m = serde_json::Map::new();
    m.insert("prompt".into(), g.prompt.clone());
    m.insert("tools".into(), g.tools.clone());
    m.insert("environment".into(), json!(g.environment));
    m.insert("task_id".into(), json!(g.task));
    m.insert("scaffold".into(), json!(g.scaffold));
    if let Some(a) = &g.agent {
        m.insert("agent".into(), json!(a));
    }
    m
}

/// `trawl export --format dpo`.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct DpoExporterConfig {
    /// The smallest reward difference between a chosen and a rejected completion.
    pub min_margin: f64,
    /// The most pairs drawn from one task's rollouts.
    pub max_pairs_per_task: usize,
    /// In multi-agent rollouts, pair only this agent's conversations (default: each agent's).
    pub agent: Option<String>,
    /// `objects` (default) or `json`: tool schemas as a JSON string.
    pub tools: ToolsStyle,
}

impl Default for DpoExporterConfig {
    fn default() -> Self {
        DpoExporterConfig {
            min_margin: 0.1,
            max_pairs_per_task: 4,
            agent: None,
            tools: ToolsStyle::default(),
        }
    }
}

impl ExporterConfig for DpoExporterConfig {
    fn build(self, _: &BuildContext) -> Result<Arc<dyn Exporter>, ComponentError> {
        if !self.min_margin.is_finite() || self.min_margin <= 0.0 {
            return Err(ComponentError::at(
                "min_margin",
                format!(
                    "{}: must be a positive number (a pair needs a better and a worse completion)",
                    self.min_margin
                ),
            ));
        }
        if self.max_pairs_per_task == 0 {
            return Err(ComponentError::at(
                "max_pairs_per_task",
                "0 would write nothing; give at least 1",
            ));
        }
        Ok(Arc::new(DpoExporter {
            groups: Collector::new(self.agent.clone(), self.tools),
            config: self,
        }))
    }
}

trawl_core::register!(
    exporter,
    "dpo",
    "Preference pairs {prompt, chosen, rejected} from rollouts of one task (TRL DPOTrainer)",
    DpoExporterConfig
);

pub struct DpoExporter {
    config: DpoExporterConfig,
    groups: Collector,
}

/// Pairs `(chosen, rejected)` of `rewards` (indices) whose margin is at least `min_margin`, the
/// largest margins first, at most `cap`. Each rollout is used once before any is used twice, so
/// the pairs of a task spread over its rollouts.
pub fn preference_pairs(rewards: &[f64], min_margin: f64, cap: usize) -> Vec<(usize, usize)> {
    let mut all: Vec<(usize, usize)> = Vec::new();
    for (i, a) in rewards.iter().enumerate() {
        for (j, b) in rewards.iter().enumerate() {
            if a - b >= min_margin {
                all.push((i, j));
            }
        }
    }
    all.sort_by(|x, y| {
        let mx = rewards[x.0] - rewards[x.1];
        let my = rewards[y.0] - rewards[y.1];
        my.total_cmp(&mx).then(x.cmp(y))
    });
    let mut used = vec![false; rewards.len()];
    let mut taken = vec![false; all.len()];
    let mut out = Vec::new();
    for fresh_only in [true, false] {
        for (n, &(i, j)) in all.iter().enumerate() {
            if out.len() == cap {
                return out;
            }
            if taken[n] || (fresh_only && (used[i] || used[j])) {
                continue;
            }
            taken[n] = true;
            used[i] = true;
            used[j] = true;
            out.push((i, j));
        }
    }
    out
}

impl Exporter for DpoExporter {
    fn write(&self, r: &TrajectoryRecord, _out: &mut dyn Write) -> Result<usize, ExportError> {
        self.groups.add(r)
    }

    fn finish(&self, out: &mut dyn Write) -> Result<usize, ExportError> {
        let groups = self.groups.take();
        let mut written = 0;
        for g in groups {
            let rewards: Vec<f64> = g.rollouts.iter().map(|x| x.reward).collect();
            if g.rollouts.len() < 2 {
                self.groups.counts.add("tasks_single_rollout", 1);
                continue;
            }
            if rewards.iter().all(|x| *x == rewards[0]) {
                self.groups.counts.add("tasks_all_same_reward", 1);
                continue;
            }
            let pairs = preference_pairs(
                &rewards,
                self.config.min_margin,
                self.config.max_pairs_per_task,
            );
            if pairs.is_empty() {
                self.groups.counts.add("tasks_below_margin", 1);
                continue;
            }
            self.groups.counts.add("tasks_paired", 1);
            for (c, rj) in pairs {
                let (chosen, rejected) = (&g.rollouts[c], &g.rollouts[rj]);
                let mut line = group_fields(&g);
                line.insert("chosen".into(), chosen.completion.clone());
                line.insert("rejected".into(), rejected.completion.clone());
                line.insert("chosen_reward".into(), json!(chosen.reward));
                line.insert("rejected_reward".into(), json!(rejected.reward));
                line.insert("margin".into(), json!(chosen.reward - rejected.reward));
                line.insert("chosen_id".into(), json!(chosen.id));
                line.insert("rejected_id".into(), json!(rejected.id));
                line.insert("chosen_model".into(), json!(chosen.model));
                line.insert("rejected_model".into(), json!(rejected.model));
                write_line(out, &Value::Object(line))?;
                written += 1;
            }
        }
        self.groups.counts.add("pairs", written);
        Ok(written)
    }

    fn counts(&self) -> BTreeMap<String, usize> {
        self.groups.counts.snapshot()
    }
}

/// `trawl export --format grpo`.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct GrpoExporterConfig {
    /// Added to the group's standard deviation before dividing (TRL's GRPOTrainer uses 1e-4).
    pub epsilon: f64,
    /// Groups with fewer rollouts are left out and counted.
    pub min_group_size: usize,
    /// In multi-agent rollouts, group only this agent's conversations (default: each agent's).
    pub agent: Option<String>,
    /// `objects` (default) or `json`: tool schemas as a JSON string.
    pub tools: ToolsStyle,
}

impl Default for GrpoExporterConfig {
    fn default() -> Self {
        GrpoExporterConfig {
            epsilon: 1e-4,
            min_group_size: 2,
            agent: None,
            tools: ToolsStyle::default(),
        }
    }
}

impl ExporterConfig for GrpoExporterConfig {
    fn build(self, _: &BuildContext) -> Result<Arc<dyn Exporter>, ComponentError> {
        if !self.epsilon.is_finite() || self.epsilon < 0.0 {
            return Err(ComponentError::at(
                "epsilon",
                format!("{}: must be a number >= 0", self.epsilon),
            ));
        }
        Ok(Arc::new(GrpoExporter {
            groups: Collector::new(self.agent.clone(), self.tools),
            config: GrpoExporterConfig {
                min_group_size: self.min_group_size.max(2),
                ..self
            },
        }))
    }
}

trawl_core::register!(
    exporter,
    "grpo",
    "One group per prompt: every completion with its reward and group-normalised advantage",
    GrpoExporterConfig
);

pub struct GrpoExporter {
    config: GrpoExporterConfig,
    groups: Collector,
}

/// Group-relative advantages `(r - mean) / (std + epsilon)`, with the sample standard deviation
/// (n - 1), as TRL's GRPOTrainer computes them; `None` when the rewards do not vary.
pub fn group_advantages(rewards: &[f64], epsilon: f64) -> Option<Vec<f64>> {
    if rewards.len() < 2 {
        return None;
    }
    let mean = rewards.mean();
    let std = rewards.std_dev();
    if std == 0.0 || !std.is_finite() {
        return None;
    }
    Some(
        rewards
            .iter()
            .map(|r| (r - mean) / (std + epsilon))
            .collect(),
    )
}

impl Exporter for GrpoExporter {
    fn write(&self, r: &TrajectoryRecord, _out: &mut dyn Write) -> Result<usize, ExportError> {
        self.groups.add(r)
    }

    fn finish(&self, out: &mut dyn Write) -> Result<usize, ExportError> {
        let groups = self.groups.take();
        let mut written = 0;
        for g in groups {
            if g.rollouts.len() < self.config.min_group_size {
                self.groups.counts.add("groups_too_small", 1);
                continue;
            }
            let rewards: Vec<f64> = g.rollouts.iter().map(|x| x.reward).collect();
            let Some(advantages) = group_advantages(&rewards, self.config.epsilon) else {
                self.groups.counts.add("groups_zero_variance", 1);
                continue;
            };
            let mut line = group_fields(&g);
            line.insert(
                "completions".into(),
                Value::Array(g.rollouts.iter().map(|x| x.completion.clone()).collect()),
            );
            line.insert("rewards".into(), json!(rewards));
            line.insert("advantages".into(), json!(advantages));
            line.insert(
                "successes".into(),
                json!(g.rollouts.iter().map(|x| x.success).collect::<Vec<_>>()),
            );
            line.insert(
                "completion_tokens".into(),
                json!(g.rollouts.iter().map(|x| x.tokens).collect::<Vec<_>>()),
            );
            line.insert(
                "samples".into(),
                json!(g.rollouts.iter().map(|x| x.sample).collect::<Vec<_>>()),
            );
            line.insert(
                "ids".into(),
                json!(g.rollouts.iter().map(|x| &x.id).collect::<Vec<_>>()),
            );
            write_line(out, &Value::Object(line))?;
            written += 1;
        }
        self.groups.counts.add("groups", written);
        Ok(written)
    }

    fn counts(&self) -> BTreeMap<String, usize> {
        self.groups.counts.snapshot()
    }
}

/// `trawl export --format tokens`.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TokensExporterConfig {}

impl ExporterConfig for TokensExporterConfig {
    fn build(self, _: &BuildContext) -> Result<Arc<dyn Exporter>, ComponentError> {
        Ok(Arc::new(TokensExporter::default()))
    }
}

trawl_core::register!(
    exporter,
    "tokens",
    "Per assistant turn: prompt_ids, response_ids, response_mask, logprobs (records with token data)",
    TokensExporterConfig
);

#[derive(Default)]
pub struct TokensExporter {
    counts: Counts,
}

impl Exporter for TokensExporter {
    fn write(&self, r: &TrajectoryRecord, out: &mut dyn Write) -> Result<usize, ExportError> {
        if r.tokens.is_empty() {
            self.counts.add("records_without_tokens", 1);
            return Ok(0);
        }
        let replies: Vec<&Message> = r
            .messages
            .iter()
            .filter(|m| m.role == MessageRole::Assistant)
            .collect();
        let mut written = 0;
        for (turn, m) in replies.iter().enumerate() {
            let t = r.tokens.get(turn).cloned().unwrap_or_default();
            if t.prompt_ids.is_empty() || t.completion_ids.is_empty() {
                self.counts.add("turns_without_token_ids", 1);
                continue;
            }
            // Logprobs that do not cover every response token are not guessed at.
            let logprobs = if t.logprobs.len() == t.completion_ids.len() {
                json!(t.logprobs)
            } else {
                self.counts.add("turns_without_logprobs", 1);
                Value::Null
            };
            let mut line = serde_json::Map::new();
            line.insert("id".into(), json!(r.key.to_string()));
            line.insert("turn_idx".into(), json!(turn));
            line.insert("prompt_ids".into(), json!(t.prompt_ids));
            line.insert("response_ids".into(), json!(t.completion_ids));
            line.insert(
                "response_mask".into(),
                json!(vec![1u8; t.completion_ids.len()]),
            );
            line.insert("logprobs".into(), logprobs);
            line.insert("response_text".into(), json!(m.text()));
            let mut meta = crate::metadata(r);
            meta.remove("id");
            line.extend(meta);
            write_line(out, &Value::Object(line))?;
            written += 1;
        }
        Ok(written)
    }

    fn counts(&self) -> BTreeMap<String, usize> {
        self.counts.snapshot()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn pairs_take_the_widest_margins_and_spread_over_rollouts() {
        let pairs = preference_pairs(&[1.0, 0.0, 1.0, 0.0], 0.5, 4);
        assert_eq!(pairs, [(0, 1), (2, 3), (0, 3), (2, 1)]);
        assert_eq!(preference_pairs(&[1.0, 0.0, 1.0, 0.0], 0.5, 1), [(0, 1)]);
        assert!(preference_pairs(&[0.5, 0.45], 0.1, 4).is_empty());
        assert_eq!(preference_pairs(&[0.2, 0.9, 0.5], 0.1, 9).len(), 3);
    }

    #[test]
    fn advantages_are_normalised_within_the_group() {
        let a = group_advantages(&[1.0, 0.0, 0.0, 1.0], 1e-4).unwrap();
        // mean 0.5, sample std sqrt(1/3)
        let std = (1.0f64 / 3.0).sqrt();
        assert!((a[0] - 0.5 / (std + 1e-4)).abs() < 1e-12, "{a:?}");
        assert!((a.iter().sum::<f64>()).abs() < 1e-12);
        assert!(group_advantages(&[0.3, 0.3, 0.3], 1e-4).is_none());
        assert!(group_advantages(&[1.0], 1e-4).is_none());
    }
}

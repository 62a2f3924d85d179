//! Building a run: every component of the config from the registry, into the shared state that
//! each rollout reads.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Duration;

use crate::config::{ConfigError, ExperimentConfig, SourceMap};
use crate::environment::{Environment, EnvironmentError};
use crate::evaluator::Evaluator;
use crate::matrix::Skipped;
use crate::model::{LanguageModel, Sampling};
use crate::model_stack::StackSettings;
use crate::registry::{BuildContext, Factory, Registry, Role};
use crate::scaffold::AgentScaffold;
use crate::task::Task;

use super::summary::RunError;

/// A component built from the config, with its label and version for provenance.
pub(super) struct Built<T: ?Sized> {
    pub(super) name: String,
    pub(super) label: String,
    pub(super) live: Arc<T>,
}

/// An evaluator as one environment uses it.
pub(super) struct ScoringEvaluator {
    /// The name `[scoring]` knows it by: `environment` for the environment's own.
    pub(super) source: String,
    /// The name its evaluations are recorded under: a config evaluator's `name`, or the kind's
    /// own name for an environment's evaluator.
    pub(super) recorded_as: Option<String>,
    pub(super) live: Arc<dyn Evaluator>,
}

pub(super) struct EnvironmentSlot {
    pub(super) env: Built<dyn Environment>,
    pub(super) evaluators: Vec<ScoringEvaluator>,
    pub(super) tasks: Vec<Arc<Task>>,
    /// The (scaffold, model) indexes this environment is played with.
    pub(super) pairs: Vec<(usize, usize)>,
}

pub(super) struct ModelSlot {
    pub(super) model: Built<dyn LanguageModel>,
    pub(super) sampling: Sampling,
}

/// Everything the rollouts of a run share.
pub(super) struct Shared {
    pub(super) environments: Vec<EnvironmentSlot>,
    pub(super) scaffolds: Vec<Built<dyn AgentScaffold>>,
    pub(super) models: Vec<ModelSlot>,
    pub(super) episode_timeout: Duration,
    pub(super) seed: u64,
    pub(super) run_id: String,
    pub(super) scoring: crate::scoring::Scoring,
    /// Combinations the run leaves out because they cannot work, when the config says to skip.
    pub(super) skipped: Vec<Skipped>,
    /// The models components built for themselves (a simulated user's, a judge's), each with
    /// the component that owns it (`environment usersim`), for `check --ping`.
    pub(super) own_models: Vec<(String, Arc<dyn LanguageModel>)>,
}

impl Shared {
    /// Rollouts per sample: each environment's tasks × the (scaffold, model) pairs it plays.
    pub(super) fn matrix_size(&self) -> u64 {
        self.environments
            .iter()
            .map(|e| (e.tasks.len() * e.pairs.len()) as u64)
            .sum()
    }
}

pub(super) fn entry_version(registry: &Registry, role: Role, kind: &str) -> String {
    registry
        .get(role, kind)
        .map(|e| format!("{kind} {}", e.version))
        .unwrap_or_else(|| kind.to_string())
}

/// A built component with its label, its version recorded under `role/name`.
pub(super) fn built<T: ?Sized>(
    registry: &Registry,
    versions: &mut BTreeMap<String, String>,
    role: Role,
    spec: &crate::config::ComponentSpec,
    live: Arc<T>,
) -> Built<T> {
    let label = entry_version(registry, role, &spec.kind);
    versions.insert(format!("{role}/{}", spec.name), label.clone());
    Built {
        name: spec.name.clone(),
        label,
        live,
    }
}

/// Builds every component of the config. Errors point at the component's table.
pub(super) async fn build(
    config: &ExperimentConfig,
    map: &SourceMap,
    registry: &Registry,
) -> Result<(Shared, BTreeMap<String, String>), RunError> {
    let mut cx = BuildContext {
        base_dir: config.base_dir.clone(),
        seed: config.seed,
        run_name: config.name.clone(),
        // Set once the run's own models are built (below), so that components can share them.
        models: None,
        sandboxes: Some(crate::registry::SandboxBuilder::from_registry(registry)),
    };
    let mut versions = BTreeMap::new();
    let factory = |role: Role, kind: &str| registry.get(role, kind).map(|e| e.factory.clone());
    let as_value =
        |s: &serde_json::Map<String, serde_json::Value>| serde_json::Value::Object(s.clone());

    let mut models = Vec::new();
    for spec in &config.models {
        let c = &spec.component;
        let Some(Factory::Model(f)) = factory(Role::Model, &c.kind) else {
            continue;
        };
        let mut settings = c.settings.clone();
        let stack = StackSettings::take(&mut settings, spec.max_concurrency)
            .map_err(|e| ExperimentConfig::component_error(map, c, e))?;
        let raw = f(&serde_json::Value::Object(settings), &cx)
            .map_err(|e| ExperimentConfig::component_error(map, c, e))?;
        let live = stack.wrap(raw, &[]);
        models.push(ModelSlot {
            model: built(registry, &mut versions, Role::Model, c, live),
            sampling: spec.sampling.clone(),
        });
    }

    // Components with a model of their own (a simulated user) may name one of these, to share
    // it rather than build another.
    let inline: Arc<std::sync::Mutex<Vec<Arc<dyn LanguageModel>>>> = Arc::default();
    let mut own_models = Vec::new();
    // The models built since the last call, owned by the component `owner` names.
    let mut take_own = |owner: String| {
        let mut new = inline.lock().unwrap_or_else(|p| p.into_inner());
        own_models.extend(new.drain(..).map(|m| (owner.clone(), m)));
    };
    cx.models = Some(
        crate::registry::ModelBuilder::from_registry(registry, config.concurrency)
            .recording(inline.clone())
            .with_named(
                models
                    .iter()
                    .map(|m| (m.model.name.clone(), m.model.live.clone()))
                    .collect(),
            ),
    );

    let mut extra_evaluators: Vec<(&crate::config::EvaluatorSpec, Arc<dyn Evaluator>)> = Vec::new();
    for spec in &config.evaluators {
        let c = &spec.component;
        let Some(Factory::Evaluator(f)) = factory(Role::Evaluator, &c.kind) else {
            continue;
        };
        let live = f(&as_value(&c.settings), &cx)
            .map_err(|e| ExperimentConfig::component_error(map, c, e))?;
        extra_evaluators.push((spec, live));
        take_own(format!("evaluator {}", c.name));
        versions.insert(
            format!("evaluator/{}", c.name),
            entry_version(registry, Role::Evaluator, &c.kind),
        );
    }

    let mut scaffolds = Vec::new();
    for spec in &config.scaffolds {
        let Some(Factory::Scaffold(f)) = factory(Role::Scaffold, &spec.kind) else {
            continue;
        };
        let live = f(&as_value(&spec.settings), &cx)
            .map_err(|e| ExperimentConfig::component_error(map, spec, e))?;
        scaffolds.push(built(registry, &mut versions, Role::Scaffold, spec, live));
        take_own(format!("scaffold {}", spec.name));
    }

    let mut environments = Vec::new();
    let mut skipped = Vec::new();
    for spec in &config.environments {
        let Some(Factory::Environment(f)) = factory(Role::Environment, &spec.kind) else {
            continue;
        };
        let env = f(&as_value(&spec.settings), &cx)
            .map_err(|e| ExperimentConfig::component_error(map, spec, e))?;
        let at = || {
            spec.field
                .split('/')
                .map(str::to_string)
                .collect::<Vec<_>>()
        };

        // The (scaffold, model) pairs it plays: what the matrix asks for, less what cannot work.
        let mut pairs = Vec::new();
        for (si, s) in scaffolds.iter().enumerate() {
            let wanted: Vec<usize> = models
                .iter()
                .enumerate()
                .filter(|(_, m)| config.matrix.wants(&spec.name, &s.name, &m.model.name))
                .map(|(mi, _)| mi)
                .collect();
            if wanted.is_empty() {
                continue;
            }
            let missing = env.action_space().missing(&s.live.required_actions());
            if !missing.is_empty() {
                if config.matrix.skip_incompatible {
                    skipped.push(Skipped {
                        environment: spec.name.clone(),
                        scaffold: s.name.clone(),
                        reason: format!(
                            "the scaffold needs {} actions, which the environment does not offer",
                            missing.join(", ")
                        ),
                    });
                    continue;
                }
                return Err(RunError::Mismatch {
                    scaffold: s.name.clone(),
                    environment: spec.name.clone(),
                    missing: missing.join(", "),
                });
            }
            pairs.extend(wanted.into_iter().map(|mi| (si, mi)));
        }

        let mut evaluators = Vec::new();
        for (kind, settings) in env.default_evaluators() {
            let Some(Factory::Evaluator(ef)) = factory(Role::Evaluator, &kind) else {
                return Err(ConfigError {
                    location: map.locate(&at()),
                    field: spec.field.replace('/', "."),
                    message: format!(
                        "environment `{}` scores with evaluator `{kind}`, which is not registered",
                        spec.kind
                    ),
                    hint: Some(format!(
                        "registered evaluators: {}",
                        registry.kind_list(Role::Evaluator)
                    )),
                }
                .into());
            };
            evaluators.push(ScoringEvaluator {
                source: crate::scoring::ENVIRONMENT.to_string(),
                recorded_as: None,
                live: ef(&settings, &cx)
                    .map_err(|e| ExperimentConfig::component_error(map, spec, e))?,
            });
            versions.insert(
                format!("evaluator/{kind}"),
                entry_version(registry, Role::Evaluator, &kind),
            );
        }
        for (es, live) in &extra_evaluators {
            if es.applies_to(&spec.name) {
                // Each verdict is recorded under one name: two evaluators with one name would
                // read as one in stats and selection.
                if let Some(own) = evaluators
                    .iter()
                    .find(|e| e.live.name() == es.component.name)
                {
                    return Err(ExperimentConfig::component_error(
                        map,
                        &es.component,
                        crate::registry::ComponentError::at(
                            "name",
                            format!(
                                "`{}` is also the name environment `{}` records its own evaluator's verdicts under; give this evaluator another `name`",
                                own.live.name(),
                                spec.name
                            ),
                        ),
                    )
                    .into());
                }
                evaluators.push(ScoringEvaluator {
                    source: es.component.name.clone(),
                    recorded_as: Some(es.component.name.clone()),
                    live: live.clone(),
                });
            }
        }
        if !pairs.is_empty()
            && !config
                .scoring
                .evaluators()
                .iter()
                .any(|name| evaluators.iter().any(|e| &e.source == name))
        {
            let why = if evaluators.is_empty() {
                "no evaluator scores it: it has none of its own and every [[evaluators]] entry leaves it out of its `environments`".to_string()
            } else {
                format!(
                    "none of the evaluators `[scoring]` reads ({}) scores it; those that do: {}",
                    config.scoring.evaluators().join(", "),
                    evaluators
                        .iter()
                        .map(|e| e.source.as_str())
                        .collect::<Vec<_>>()
                        .join(", ")
                )
            };
            return Err(ConfigError {
                location: map.locate(&["scoring".to_string()]).or_else(|| map.locate(&at())),
                field: "scoring".into(),
                message: format!("the rollouts of environment `{}` would have no reward: {why}", spec.name),
                hint: Some("add an evaluator whose `environments` include it, or name one that scores it in [scoring]".into()),
            }
            .into());
        }
        let tasks = env
            .tasks()
            .await
            .map_err(|source| RunError::Tasks {
                environment: spec.name.clone(),
                source,
            })?
            .into_iter()
            .map(Arc::new)
            .collect::<Vec<_>>();
        // Ids become parts of file paths (`trawl swe reports`, exports by task): one that could
        // reach outside a folder is refused here, whichever environment or plugin made it.
        if let Some((task, why)) = tasks.iter().find_map(|t| {
            crate::values::check_relative_path(&t.id)
                .err()
                .map(|e| (t, e))
        }) {
            return Err(RunError::Tasks {
                environment: spec.name.clone(),
                source: EnvironmentError::Tasks(format!(
                    "task id `{}` {why}\n  hint: give the task another id in its task file",
                    task.id.escape_debug()
                )),
            });
        }
        if tasks.is_empty() {
            return Err(ExperimentConfig::component_error(
                map,
                spec,
                crate::registry::ComponentError::new(
                    "the environment has no tasks (its task files are empty, or `limit` is 0); a run with nothing to do is refused",
                ),
            )
            .into());
        }
        environments.push(EnvironmentSlot {
            env: built(registry, &mut versions, Role::Environment, spec, env),
            evaluators,
            tasks,
            pairs,
        });
        take_own(format!("environment {}", spec.name));
    }
    if environments.iter().all(|e| e.pairs.is_empty()) {
        let why = if skipped.is_empty() {
            "the [matrix] leaves out every combination".to_string()
        } else {
            format!(
                "every combination the [matrix] asks for is incompatible ({})",
                skipped
                    .iter()
                    .map(|s| format!("{} × {}", s.environment, s.scaffold))
                    .collect::<Vec<_>>()
                    .join(", ")
            )
        };
        return Err(RunError::NothingToRun(why));
    }
    let shared = Shared {
        environments,
        scaffolds,
        models,
        episode_timeout: crate::values::secs(config.episode_timeout_secs),
        seed: config.seed,
        run_id: String::new(),
        scoring: config.scoring.clone(),
        skipped,
        own_models,
    };
    Ok((shared, versions))
}

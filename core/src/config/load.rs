//! Stage one and two of reading a config: the top level, then each section's components looked
//! up in the registry and checked, every error placed at its file, line and field.

use std::path::{Path, PathBuf};

use serde::Deserialize;
use serde_json::{Map, Value};

use super::error::ConfigError;
use super::overrides::apply_overrides;
use super::source::{parse_toml, read_config, SourceMap};
use super::spec::{
    ComponentSpec, EvaluatorSpec, ExperimentConfig, ModelSpec, Samples, MAX_CONCURRENCY,
};
use crate::component::ComponentError;
use crate::matrix::Matrix;
use crate::model::Sampling;
use crate::registry::{Registry, Role, DEFAULT_MODEL_KIND};

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct TopLevel {
    name: Option<String>,
    #[serde(default)]
    seed: u64,
    #[serde(default = "one")]
    samples: Value,
    #[serde(default)]
    max_total_tokens: Option<u64>,
    #[serde(default = "default_concurrency")]
    concurrency: usize,
    #[serde(default = "default_timeout")]
    episode_timeout_secs: f64,
    #[serde(default = "default_infra_rate")]
    max_infra_error_rate: f64,
    #[serde(default)]
    environments: Vec<Map<String, Value>>,
    #[serde(default)]
    scaffolds: Vec<Map<String, Value>>,
    #[serde(default)]
    models: Vec<Map<String, Value>>,
    #[serde(default)]
    evaluators: Vec<Map<String, Value>>,
    #[serde(default)]
    plugins: Vec<String>,
    #[serde(default)]
    matrix: Option<Value>,
    #[serde(default)]
    scoring: Option<Value>,
}

fn one() -> Value {
    Value::from(1)
}
fn default_concurrency() -> usize {
    32
}
fn default_timeout() -> f64 {
    600.0
}
fn default_infra_rate() -> f64 {
    0.2
}

impl ExperimentConfig {
    /// Reads and checks the config at `path` against the registry.
    pub fn load(path: &Path, registry: &Registry) -> Result<(Self, SourceMap), ConfigError> {
        Self::load_with(path, registry, &[])
    }

    /// [`load`](Self::load) with `--set KEY=VALUE` arguments applied to the file before it is
    /// checked (see [`crate::overrides`]); an error in a field they set names the argument.
    pub fn load_with(
        path: &Path,
        registry: &Registry,
        overrides: &[String],
    ) -> Result<(Self, SourceMap), ConfigError> {
        let text = read_config(path)?;
        let base_dir = path.parent().map(Path::to_path_buf).unwrap_or_default();
        let stem = path
            .file_stem()
            .map(|s| s.to_string_lossy().into_owned())
            .unwrap_or_else(|| "run".into());
        let (cfg, map) = Self::parse_with(path, &text, registry, &stem, overrides)?;
        Ok((ExperimentConfig { base_dir, ..cfg }, map))
    }

    /// Parses config text; `file` is only used in messages, `default_name` names an unnamed run.
    pub fn parse(
        file: &Path,
        text: &str,
        registry: &Registry,
        default_name: &str,
    ) -> Result<(Self, SourceMap), ConfigError> {
        Self::parse_with(file, text, registry, default_name, &[])
    }

    /// [`parse`](Self::parse) with `--set KEY=VALUE` arguments applied first.
    pub fn parse_with(
        file: &Path,
        text: &str,
        registry: &Registry,
        default_name: &str,
        overrides: &[String],
    ) -> Result<(Self, SourceMap), ConfigError> {
        let (mut json, mut map) = parse_toml(file, text)?;
        apply_overrides(&mut json, &mut map, overrides)?;
        let (config, map) = Self::from_json(json, map, registry, default_name)?;
        Ok((
            ExperimentConfig {
                overrides: overrides.to_vec(),
                ..config
            },
            map,
        ))
    }

    /// Checks the parsed (and overridden) config against the registry.
    fn from_json(
        json: Value,
        map: SourceMap,
        registry: &Registry,
        default_name: &str,
    ) -> Result<(Self, SourceMap), ConfigError> {
        let top: TopLevel = crate::component::parse_settings(&json).map_err(|e| {
            let hint = e.message.starts_with("unknown field").then(|| {
                "top-level keys are name, seed, samples, max_total_tokens, concurrency, episode_timeout_secs, max_infra_error_rate, \
                 plugins, [matrix], [scoring], [[environments]], [[scaffolds]], [[models]], [[evaluators]]"
                    .to_string()
            });
            map.error(&e.path, e.message, hint)
        })?;
        let root = |p: &[&str]| p.iter().map(|s| s.to_string()).collect::<Vec<_>>();
        // The run's folder is `runs/<name>`: a name that is not one folder name would put it
        // elsewhere.
        if let Some(name) = &top.name {
            if let Err(why) = crate::values::check_path_part(name) {
                return Err(map.error(
                    &root(&["name"]),
                    format!("`{}` {why}", name.escape_debug()),
                    Some("the default run folder is runs/<name>: use letters, digits, `-`, `_` and `.`".into()),
                ));
            }
        }
        let samples_hint = || {
            Some("write `samples = 4`, or `samples = { max = 16, until_successes = 2 }` to sample each task until enough rollouts succeed".to_string())
        };
        let samples = match &top.samples {
            Value::Number(n) => match n.as_u64().and_then(|n| u32::try_from(n).ok()) {
                Some(n) if n >= 1 => Samples::Fixed(n),
                _ => {
                    return Err(map.error(
                        &root(&["samples"]),
                        "must be a whole number, at least 1",
                        samples_hint(),
                    ))
                }
            },
            Value::Object(_) => {
                #[derive(Deserialize)]
                #[serde(deny_unknown_fields)]
                struct Adaptive {
                    max: u32,
                    until_successes: u32,
                }
                let a: Adaptive = crate::component::parse_settings(&top.samples).map_err(|e| {
                    let mut p = root(&["samples"]);
                    p.extend(e.path);
                    map.error(&p, e.message, samples_hint())
                })?;
                if a.max == 0 {
                    return Err(map.error(
                        &root(&["samples", "max"]),
                        "must be at least 1",
                        samples_hint(),
                    ));
                }
                if a.until_successes == 0 || a.until_successes > a.max {
                    return Err(map.error(
                        &root(&["samples", "until_successes"]),
                        format!("must be from 1 to max ({})", a.max),
                        samples_hint(),
                    ));
                }
                Samples::Until {
                    max: a.max,
                    until_successes: a.until_successes,
                }
            }
            _ => {
                return Err(map.error(
                    &root(&["samples"]),
                    "must be a number or a table",
                    samples_hint(),
                ))
            }
        };
        if top.max_total_tokens == Some(0) {
            return Err(map.error(
                &root(&["max_total_tokens"]),
                "must be at least 1 (leave it out for no budget)",
                None,
            ));
        }
        if top.concurrency == 0 || top.concurrency > MAX_CONCURRENCY {
            return Err(map.error(
                &root(&["concurrency"]),
                format!("must be from 1 to {MAX_CONCURRENCY}"),
                None,
            ));
        }
        if let Err(message) = crate::values::check_secs(top.episode_timeout_secs, false) {
            return Err(map.error(&root(&["episode_timeout_secs"]), message, None));
        }
        if let Err(message) = crate::values::check_fraction(top.max_infra_error_rate) {
            return Err(map.error(
                &root(&["max_infra_error_rate"]),
                message,
                Some("the share of recent rollouts that may fail on infrastructure before the run stops itself".into()),
            ));
        }
        let environments = components(
            &map,
            registry,
            Role::Environment,
            "environments",
            top.environments,
        )?;
        let scaffolds = components(&map, registry, Role::Scaffold, "scaffolds", top.scaffolds)?;
        let mut evaluators = Vec::new();
        for (i, mut spec) in components(
            &map,
            registry,
            Role::Evaluator,
            "evaluators",
            top.evaluators,
        )?
        .into_iter()
        .enumerate()
        {
            let at = |more: &[String]| {
                let mut p = vec!["evaluators".to_string(), i.to_string()];
                p.extend(more.iter().cloned());
                p
            };
            if spec.name == crate::scoring::ENVIRONMENT {
                return Err(map.error(
                    &at(&["name".into()]),
                    "`environment` is the name `[scoring]` gives each environment's own evaluator",
                    Some("give this evaluator another `name`".into()),
                ));
            }
            let environments = match spec.settings.remove("environments") {
                None => Vec::new(),
                Some(v) => {
                    let names: Vec<String> = crate::component::parse_settings(&v).map_err(|e| {
                        let mut p = at(&["environments".into()]);
                        p.extend(e.path);
                        map.error(&p, "must be a list of environment names", None)
                    })?;
                    for (j, n) in names.iter().enumerate() {
                        if !environments.iter().any(|e: &ComponentSpec| &e.name == n) {
                            return Err(map.error(
                                &at(&["environments".into(), j.to_string()]),
                                format!("no environment is named `{n}`"),
                                Some(format!(
                                    "the environment names are: {}",
                                    environments
                                        .iter()
                                        .map(|e| e.name.as_str())
                                        .collect::<Vec<_>>()
                                        .join(", ")
                                )),
                            ));
                        }
                    }
                    if names.is_empty() {
                        return Err(map.error(
                            &at(&["environments".into()]),
                            "an empty scope scores nothing",
                            Some("name at least one environment, or leave `environments` out to score every one".into()),
                        ));
                    }
                    names
                }
            };
            evaluators.push(EvaluatorSpec {
                component: spec,
                environments,
            });
        }
        let mut models = Vec::new();
        for (i, mut spec) in components(&map, registry, Role::Model, "models", top.models)?
            .into_iter()
            .enumerate()
        {
            let at = |field: &str| vec!["models".to_string(), i.to_string(), field.to_string()];
            // The stack's keys are checked here, at their lines. `max_concurrency` becomes the
            // spec's own field; `retry` stays in the settings, where the engine's stack reads it
            // (model_stack.rs).
            let stack = crate::model_stack::StackSettings::take(
                &mut spec.settings.clone(),
                top.concurrency,
            )
            .map_err(|e| ExperimentConfig::component_error(&map, &spec, e))?;
            spec.settings.remove("max_concurrency");
            let max_concurrency = stack.max_concurrency;
            let sampling = match spec.settings.remove("sampling") {
                None => Sampling::default(),
                Some(v) => crate::component::parse_settings::<Sampling>(&v).map_err(|e| {
                    let mut p = at("sampling");
                    p.extend(e.path);
                    map.error(
                        &p,
                        e.message,
                        Some("sampling keys: temperature, top_p, top_k, min_p, max_tokens, seed, stop, logprobs".into()),
                    )
                })?,
            };
            if let Err((field, message)) = sampling.validate() {
                let mut p = at("sampling");
                p.push(field.to_string());
                return Err(map.error(&p, message, None));
            }
            models.push(ModelSpec {
                component: spec,
                max_concurrency,
                sampling,
            });
        }
        if environments.is_empty() {
            return Err(map.error(
                &[],
                "the config names no environment",
                Some(format!(
                    "add an [[environments]] table with type = one of: {}",
                    registry.kind_list(Role::Environment)
                )),
            ));
        }
        if scaffolds.is_empty() {
            return Err(map.error(
                &[],
                "the config names no scaffold",
                Some(format!(
                    "add a [[scaffolds]] table with type = one of: {}",
                    registry.kind_list(Role::Scaffold)
                )),
            ));
        }
        if models.is_empty() {
            // No model named: run on the embedded default, so a config works with no server.
            if registry.get(Role::Model, DEFAULT_MODEL_KIND).is_none() {
                return Err(map.error(
                    &[],
                    "the config names no model",
                    Some(format!(
                        "add a [[models]] table with type = one of: {}",
                        registry.kind_list(Role::Model)
                    )),
                ));
            }
            models.push(ModelSpec {
                component: ComponentSpec {
                    kind: DEFAULT_MODEL_KIND.into(),
                    name: DEFAULT_MODEL_KIND.into(),
                    settings: Map::new(),
                    field: String::new(),
                },
                max_concurrency: top.concurrency,
                sampling: Sampling::default(),
            });
        }
        let matrix = match top.matrix {
            None => Matrix::default(),
            Some(v) => {
                let table: crate::matrix::MatrixTable = crate::component::parse_settings(&v)
                    .map_err(|e| {
                        let mut p = root(&["matrix"]);
                        p.extend(e.path);
                        map.error(
                            &p,
                            e.message,
                            Some("[matrix] keys: include, exclude, skip_incompatible; entries name environment, scaffold, model".into()),
                        )
                    })?;
                let axes = crate::matrix::Axes {
                    environment: environments.iter().map(|c| c.name.as_str()).collect(),
                    scaffold: scaffolds.iter().map(|c| c.name.as_str()).collect(),
                    model: models.iter().map(|m| m.component.name.as_str()).collect(),
                };
                crate::matrix::resolve(table, &axes)
                    .map_err(|(p, message, hint)| map.error(&p, message, hint))?
            }
        };
        let evaluator_names: Vec<String> = evaluators
            .iter()
            .map(|e| e.component.name.clone())
            .collect();
        let scoring_given = top.scoring.is_some();
        let scoring = {
            let table: crate::scoring::ScoringTable = match top.scoring {
                None => Default::default(),
                Some(v) => crate::component::parse_settings(&v).map_err(|e| {
                    let mut p = root(&["scoring"]);
                    p.extend(e.path);
                    map.error(
                        &p,
                        e.message,
                        Some("[scoring] keys: primary, or combine with evaluators, weights, success_threshold".into()),
                    )
                })?,
            };
            crate::scoring::resolve(table, &evaluator_names)
                .map_err(|(p, message)| map.error(&p, message, None))?
        };
        let config = ExperimentConfig {
            name: top.name.unwrap_or_else(|| default_name.to_string()),
            seed: top.seed,
            samples,
            max_total_tokens: top.max_total_tokens,
            concurrency: top.concurrency,
            episode_timeout_secs: top.episode_timeout_secs,
            max_infra_error_rate: top.max_infra_error_rate,
            environments,
            scaffolds,
            models,
            evaluators,
            matrix,
            scoring,
            scoring_given,
            plugins: top.plugins,
            base_dir: PathBuf::new(),
            overrides: Vec::new(),
        };
        Ok((config, map))
    }

    /// The error to show when a component fails to build from its settings.
    pub fn component_error(
        map: &SourceMap,
        spec: &ComponentSpec,
        err: ComponentError,
    ) -> ConfigError {
        let mut path: Vec<String> = spec.field.split('/').map(str::to_string).collect();
        path.extend(err.path);
        map.error(&path, err.message, None)
    }
}

/// Reads the `[[section]]` tables of one role: checks `type` against the registry, fills and
/// de-duplicates `name`.
fn components(
    map: &SourceMap,
    registry: &Registry,
    role: Role,
    section: &str,
    tables: Vec<Map<String, Value>>,
) -> Result<Vec<ComponentSpec>, ConfigError> {
    let mut out: Vec<ComponentSpec> = Vec::new();
    for (i, mut table) in tables.into_iter().enumerate() {
        let at = |field: &str| vec![section.to_string(), i.to_string(), field.to_string()];
        let valid = registry.kind_list(role);
        let kind = match table.remove("type") {
            None => {
                return Err(map.error(
                    &at("type"),
                    format!("missing `type` for this {role}"),
                    Some(format!("add type = one of: {valid}")),
                ))
            }
            Some(Value::String(s)) => s,
            Some(_) => {
                return Err(map.error(
                    &at("type"),
                    "`type` must be a string",
                    Some(format!("valid kinds: {valid}")),
                ))
            }
        };
        if registry.get(role, &kind).is_none() {
            return Err(map.error(
                &at("type"),
                format!("unknown {role} kind `{kind}`"),
                Some(format!(
                    "valid {role} kinds: {valid} (`trawl plugins` lists them)"
                )),
            ));
        }
        let name = match table.remove("name") {
            None => kind.clone(),
            Some(Value::String(s))
                if !s.contains('#') && crate::values::check_path_part(&s).is_ok() =>
            {
                s
            }
            Some(_) => {
                return Err(map.error(
                    &at("name"),
                    "`name` must be a non-empty string without `/`, `#` or NUL, and not `.` or `..` (names become parts of file paths)",
                    None,
                ))
            }
        };
        if out.iter().any(|c| c.name == name) {
            return Err(map.error(
                &at("name"),
                format!("two {section} are named `{name}`"),
                Some(
                    "give each one its own `name = \"...\"`: names are part of every rollout key"
                        .into(),
                ),
            ));
        }
        out.push(ComponentSpec {
            kind,
            name,
            settings: table,
            field: format!("{section}/{i}"),
        });
    }
    Ok(out)
}

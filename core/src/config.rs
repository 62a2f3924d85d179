//! The experiment config: TOML, read in two stages. Stage one reads the top level and finds each
//! component's `type`; stage two looks the kind up in the registry and lets the kind parse its
//! own settings with unknown fields refused. Every error names the file, line, column and field,
//! and lists the valid choices.

use std::collections::HashMap;
use std::fmt;
use std::ops::Range;
use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};
use serde_json::{Map, Value};
use toml::de::{DeTable, DeValue};
use toml::Spanned;

use crate::matrix::Matrix;
use crate::model::Sampling;
use crate::registry::{ComponentError, Registry, Role};
use crate::scoring::Scoring;

/// The model kind a config runs on when it names none: the embedded llama.cpp backend with its
/// default model, so that trawl works with no server and no API key.
pub const DEFAULT_MODEL_KIND: &str = "llama";

/// A place in a config file, or the `--set` argument that gave the value.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Location {
    pub file: PathBuf,
    pub line: u32,
    pub column: u32,
    /// The command line's `--set KEY=VALUE` argument the field comes from, when it does: the
    /// file's line would point at a value that is no longer there.
    pub set_arg: Option<Box<str>>,
}

impl fmt::Display for Location {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match &self.set_arg {
            Some(arg) => write!(f, "--set {arg}"),
            None => write!(f, "{}:{}:{}", self.file.display(), self.line, self.column),
        }
    }
}

/// A config that cannot be used, with where and what to do.
#[derive(Debug, Clone, thiserror::Error)]
pub struct ConfigError {
    pub location: Option<Location>,
    /// Dotted path of the field (`models[0].sampling.temperature`), empty for the whole file.
    pub field: String,
    pub message: String,
    pub hint: Option<String>,
}

impl fmt::Display for ConfigError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match &self.location {
            Some(l) => write!(f, "{l}: ")?,
            None => write!(f, "config: ")?,
        }
        if !self.field.is_empty() {
            write!(f, "field `{}`: ", self.field)?;
        }
        write!(f, "{}", self.message)?;
        if let Some(h) = &self.hint {
            write!(f, "\n  hint: {h}")?;
        }
        Ok(())
    }
}

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

/// The parsed TOML source with the span of every key and value, so that any field path can be
/// turned into a line and column.
pub struct SourceMap {
    file: PathBuf,
    text: String,
    spans: HashMap<Vec<String>, Range<usize>>,
    /// The `--set` overrides applied, as (field path, argument): a field under one of them is
    /// located at its argument.
    overrides: Vec<(Vec<String>, String)>,
}

impl SourceMap {
    /// The location of `path`, or of its nearest parent that the file spells out; for a field a
    /// `--set` gave (or one inside it), that argument.
    pub fn locate(&self, path: &[String]) -> Option<Location> {
        if let Some((_, arg)) = self
            .overrides
            .iter()
            .rev()
            .find(|(at, _)| path.starts_with(at))
        {
            return Some(Location {
                file: self.file.clone(),
                line: 0,
                column: 0,
                set_arg: Some(arg.as_str().into()),
            });
        }
        (0..=path.len())
            .rev()
            .find_map(|n| self.spans.get(&path[..n]))
            .map(|span| self.location_of(span.start))
    }

    fn location_of(&self, offset: usize) -> Location {
        let before = &self.text[..offset.min(self.text.len())];
        // A config is far shorter than 4 billion lines; u32 keeps errors small to pass around.
        let count = |n: usize| u32::try_from(n).unwrap_or(u32::MAX);
        let line = count(before.matches('\n').count() + 1);
        let column = count(before.rsplit('\n').next().map_or(0, |l| l.chars().count()) + 1);
        Location {
            file: self.file.clone(),
            line,
            column,
            set_arg: None,
        }
    }

    /// A `ConfigError` at `path`.
    pub fn error(
        &self,
        path: &[String],
        message: impl Into<String>,
        hint: Option<String>,
    ) -> ConfigError {
        ConfigError {
            location: self.locate(path),
            field: dotted(path),
            message: message.into(),
            hint,
        }
    }
}

/// `["models", "0", "sampling"]` → `models[0].sampling`.
pub fn dotted(path: &[String]) -> String {
    let mut out = String::new();
    for seg in path {
        if seg.parse::<usize>().is_ok() {
            out.push_str(&format!("[{seg}]"));
        } else {
            if !out.is_empty() {
                out.push('.');
            }
            out.push_str(seg);
        }
    }
    out
}

/// Where the file first writes a float that is not a finite number (`nan`, `inf`, `-inf`, or
/// one too large to hold), and what it wrote. No setting means anything by those: JSON cannot
/// carry them, and a check like `t <= 100` lets NaN through, so the whole file is refused.
pub(crate) type NonFinite = Option<(Vec<String>, String)>;

pub(crate) fn to_json(
    value: &Spanned<DeValue<'_>>,
    path: &mut Vec<String>,
    spans: &mut HashMap<Vec<String>, Range<usize>>,
    non_finite: &mut NonFinite,
) -> Value {
    spans.entry(path.clone()).or_insert_with(|| value.span());
    match value.get_ref() {
        DeValue::String(s) => Value::String(s.to_string()),
        DeValue::Integer(i) => i64::from_str_radix(i.as_str(), i.radix())
            .map(Value::from)
            .unwrap_or_else(|_| Value::String(i.as_str().to_string())),
        DeValue::Float(f) => {
            let s = f.as_str().replace('_', "");
            match s.parse::<f64>().ok().and_then(serde_json::Number::from_f64) {
                Some(n) => Value::Number(n),
                None => {
                    if non_finite.is_none() {
                        *non_finite = Some((path.clone(), f.as_str().to_string()));
                    }
                    Value::Null
                }
            }
        }
        DeValue::Boolean(b) => Value::Bool(*b),
        DeValue::Datetime(d) => Value::String(d.to_string()),
        DeValue::Array(items) => Value::Array(
            items
                .iter()
                .enumerate()
                .map(|(i, item)| {
                    path.push(i.to_string());
                    let v = to_json(item, path, spans, non_finite);
                    path.pop();
                    v
                })
                .collect(),
        ),
        DeValue::Table(t) => Value::Object(table_to_json(t, path, spans, non_finite)),
    }
}

fn table_to_json(
    t: &DeTable<'_>,
    path: &mut Vec<String>,
    spans: &mut HashMap<Vec<String>, Range<usize>>,
    non_finite: &mut NonFinite,
) -> Map<String, Value> {
    let mut out = Map::new();
    for (k, v) in t.iter() {
        path.push(k.get_ref().to_string());
        // Point at the key: that is where a person looks for a misspelt field.
        spans.insert(path.clone(), k.span());
        let value = to_json(v, path, spans, non_finite);
        path.pop();
        out.insert(k.get_ref().to_string(), value);
    }
    out
}

/// Parses TOML text into JSON plus a source map. Syntax errors name the line and column.
pub fn parse_toml(file: &Path, text: &str) -> Result<(Value, SourceMap), ConfigError> {
    let doc = DeTable::parse(text).map_err(|e| {
        let map = SourceMap {
            file: file.to_path_buf(),
            text: text.to_string(),
            spans: HashMap::new(),
            overrides: Vec::new(),
        };
        ConfigError {
            location: e.span().map(|s| map.location_of(s.start)),
            field: String::new(),
            message: format!("not valid TOML: {}", e.message()),
            hint: Some("see https://toml.io for the syntax".into()),
        }
    })?;
    let mut spans = HashMap::new();
    let mut non_finite = None;
    let json = Value::Object(table_to_json(
        doc.get_ref(),
        &mut Vec::new(),
        &mut spans,
        &mut non_finite,
    ));
    let map = SourceMap {
        file: file.to_path_buf(),
        text: text.to_string(),
        spans,
        overrides: Vec::new(),
    };
    if let Some((path, written)) = non_finite {
        return Err(map.error(
            &path,
            format!("must be a finite number; got `{written}`"),
            Some("write an ordinary number, or leave the setting out for its default".into()),
        ));
    }
    Ok((json, map))
}

/// Parses `--set` arguments and applies them, in order, to the parsed config; the source map
/// then locates the fields they set at their arguments. Errors name the argument and the field.
fn apply_overrides(
    json: &mut Value,
    map: &mut SourceMap,
    overrides: &[String],
) -> Result<(), ConfigError> {
    for arg in overrides {
        let at_arg = |path: &[String], message: String| ConfigError {
            location: Some(Location {
                file: map.file.clone(),
                line: 0,
                column: 0,
                set_arg: Some(arg.as_str().into()),
            }),
            field: dotted(path),
            message,
            hint: None,
        };
        let o = crate::overrides::Override::parse(arg).map_err(|m| at_arg(&[], m))?;
        o.apply(json).map_err(|m| at_arg(&o.path, m))?;
        map.overrides.push((o.path, o.arg));
    }
    Ok(())
}

/// One entry of a config's `plugins` list: the library's path (relative entries resolved against
/// the config's folder) and where the entry is written, for errors.
#[derive(Debug, Clone)]
pub struct PluginRef {
    pub path: PathBuf,
    pub field: String,
    pub location: Option<Location>,
}

impl PluginRef {
    /// An error about this entry (it could not be loaded), at its line.
    pub fn error(&self, message: impl Into<String>) -> ConfigError {
        ConfigError {
            location: self.location.clone(),
            field: self.field.clone(),
            message: message.into(),
            hint: None,
        }
    }
}

fn read_config(path: &Path) -> Result<String, ConfigError> {
    std::fs::read_to_string(path).map_err(|e| ConfigError {
        location: None,
        field: String::new(),
        message: format!("cannot read config file {}: {e}", path.display()),
        hint: Some("check the path; example configs live in examples/".into()),
    })
}

/// The `plugins` list of the config at `path`, read before the registry exists: the libraries
/// must be loaded before the kinds they offer can be checked.
pub fn plugin_refs(path: &Path) -> Result<Vec<PluginRef>, ConfigError> {
    plugin_refs_with(path, &[])
}

/// [`plugin_refs`] of the config with `--set` arguments applied.
pub fn plugin_refs_with(path: &Path, overrides: &[String]) -> Result<Vec<PluginRef>, ConfigError> {
    let text = read_config(path)?;
    let (mut json, mut map) = parse_toml(path, &text)?;
    apply_overrides(&mut json, &mut map, overrides)?;
    let base = path.parent().unwrap_or(Path::new(""));
    let Some(list) = json.get("plugins") else {
        return Ok(Vec::new());
    };
    let Some(items) = list.as_array() else {
        return Err(map.error(
            &["plugins".to_string()],
            "must be a list of paths to plugin libraries",
            Some("plugins = [\"target/debug/libmy_plugin.so\"]".into()),
        ));
    };
    let mut out = Vec::new();
    for (i, item) in items.iter().enumerate() {
        let at = vec!["plugins".to_string(), i.to_string()];
        let Some(p) = item.as_str() else {
            return Err(map.error(&at, "must be a path (a string)", None));
        };
        out.push(PluginRef {
            path: base.join(p),
            field: dotted(&at),
            location: map.locate(&at),
        });
    }
    Ok(out)
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
        let top: TopLevel = crate::registry::parse_settings(&json).map_err(|e| {
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
            if let Err(why) = crate::store::check_path_part(name) {
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
                let a: Adaptive = crate::registry::parse_settings(&top.samples).map_err(|e| {
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
        if let Err(message) = check_secs(top.episode_timeout_secs, false) {
            return Err(map.error(&root(&["episode_timeout_secs"]), message, None));
        }
        if let Err(message) = check_fraction(top.max_infra_error_rate) {
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
                    let names: Vec<String> = crate::registry::parse_settings(&v).map_err(|e| {
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
            let max_concurrency = match spec.settings.remove("max_concurrency") {
                None => top.concurrency,
                Some(v) => v
                    .as_u64()
                    .filter(|n| (1..=MAX_CONCURRENCY as u64).contains(n))
                    .ok_or_else(|| {
                        map.error(
                            &at("max_concurrency"),
                            format!("must be a whole number from 1 to {MAX_CONCURRENCY}"),
                            None,
                        )
                    })? as usize,
            };
            let sampling = match spec.settings.remove("sampling") {
                None => Sampling::default(),
                Some(v) => crate::registry::parse_settings::<Sampling>(&v).map_err(|e| {
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
                let table: crate::matrix::MatrixTable = crate::registry::parse_settings(&v)
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
                Some(v) => crate::registry::parse_settings(&v).map_err(|e| {
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
                if !s.contains('#') && crate::store::check_path_part(&s).is_ok() =>
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

/// How the resolved config's first lines record each `--set` argument.
const OVERRIDE_COMMENT: &str = "# --set ";

/// The most episodes (or requests to one model) in flight at once.
pub const MAX_CONCURRENCY: usize = 1 << 20;

/// The longest time any setting may ask for: a year. Longer is a typo, and `inf` would overflow
/// the clock.
pub const MAX_SECS: f64 = 365.0 * 24.0 * 3600.0;

/// Seconds from a setting as a `Duration`, never panicking: NaN and negatives are zero, and
/// anything past [`MAX_SECS`] (`inf` included) is `MAX_SECS`. Settings are checked with
/// [`check_secs`] when they load; this keeps a value that slipped past from crashing a run.
pub fn secs(value: f64) -> std::time::Duration {
    if value.is_nan() {
        return std::time::Duration::ZERO;
    }
    std::time::Duration::from_secs_f64(value.clamp(0.0, MAX_SECS))
}

/// Checks a number of seconds from a setting: finite, at most [`MAX_SECS`], not negative, and
/// above zero unless `zero_ok`. The error says what is allowed.
pub fn check_secs(value: f64, zero_ok: bool) -> Result<(), String> {
    let low_ok = if zero_ok { value >= 0.0 } else { value > 0.0 };
    if value.is_finite() && low_ok && value <= MAX_SECS {
        return Ok(());
    }
    let low = if zero_ok { "0" } else { "above 0" };
    Err(format!(
        "must be a number of seconds from {low} to {MAX_SECS} (a year); got {value}"
    ))
}

/// Checks a fraction from a setting: finite and within `[0, 1]`.
pub fn check_fraction(value: f64) -> Result<(), String> {
    if value.is_finite() && (0.0..=1.0).contains(&value) {
        Ok(())
    } else {
        Err(format!("must be a number from 0 to 1; got {value}"))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn syntax_errors_name_line_and_column() {
        let err = parse_toml(Path::new("x.toml"), "a = 1\nb = = 2\n")
            .err()
            .unwrap();
        assert_eq!(err.location.as_ref().map(|l| l.line), Some(2), "{err}");
        assert!(err.to_string().starts_with("x.toml:2:"), "{err}");
    }

    #[test]
    fn spans_point_at_keys_in_arrays_of_tables() {
        let text = "name = \"x\"\n\n[[models]]\ntype = \"openai\"\n\n[models.sampling]\ntemprature = 0.5\n";
        let (_, map) = parse_toml(Path::new("c.toml"), text).unwrap();
        let path: Vec<String> = ["models", "0", "sampling", "temprature"]
            .iter()
            .map(|s| s.to_string())
            .collect();
        assert_eq!(map.locate(&path).unwrap().line, 7);
        let missing: Vec<String> = ["models", "0", "nothing"]
            .iter()
            .map(|s| s.to_string())
            .collect();
        assert!(map.locate(&missing).is_some());
    }

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

    #[test]
    fn dotted_paths_render_indexes() {
        let p: Vec<String> = ["models", "0", "sampling"]
            .iter()
            .map(|s| s.to_string())
            .collect();
        assert_eq!(dotted(&p), "models[0].sampling");
    }
}

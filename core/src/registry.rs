//! The registry of component kinds: every built-in environment, scaffold, evaluator, exporter and
//! model backend registers itself with one `register!` line next to its config; plugins loaded at
//! run time are added beside them. Keyed by (role, kind), sorted, duplicates refused.

use std::collections::BTreeMap;
use std::fmt;
use std::path::PathBuf;
use std::sync::{Arc, Mutex};

use serde::de::DeserializeOwned;
use serde_json::Value;

pub use crate::component::{parse_settings, ComponentError};
use crate::environment::Environment;
use crate::evaluator::Evaluator;
use crate::export::Exporter;
use crate::model::LanguageModel;
use crate::sandbox::SandboxBackend;
use crate::scaffold::AgentScaffold;

/// The roles a component can play.
#[derive(
    Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, serde::Serialize, serde::Deserialize,
)]
#[serde(rename_all = "snake_case")]
pub enum Role {
    Environment,
    Scaffold,
    Evaluator,
    Exporter,
    Model,
    Sandbox,
}

impl Role {
    pub const ALL: [Role; 6] = [
        Role::Environment,
        Role::Scaffold,
        Role::Evaluator,
        Role::Exporter,
        Role::Model,
        Role::Sandbox,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            Role::Environment => "environment",
            Role::Scaffold => "scaffold",
            Role::Evaluator => "evaluator",
            Role::Exporter => "exporter",
            Role::Model => "model",
            Role::Sandbox => "sandbox",
        }
    }
}

impl Role {
    /// The role's name for more than one kind: `environments`, `sandboxes`.
    pub fn plural(self) -> &'static str {
        match self {
            Role::Environment => "environments",
            Role::Scaffold => "scaffolds",
            Role::Evaluator => "evaluators",
            Role::Exporter => "exporters",
            Role::Model => "models",
            Role::Sandbox => "sandboxes",
        }
    }
}

impl fmt::Display for Role {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// Builds a model backend from a table shaped like a `[[models]]` entry (`type` and the
/// backend's settings), for components that need a model of their own: a simulated user, a
/// judge. The engine hands one over that knows every registered model kind.
#[derive(Clone)]
pub struct ModelBuilder(pub BuildModel);

/// The function inside a [`ModelBuilder`].
pub type BuildModel =
    Arc<dyn Fn(&Value) -> Result<Arc<dyn LanguageModel>, ComponentError> + Send + Sync>;

impl fmt::Debug for ModelBuilder {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("ModelBuilder")
    }
}

impl ModelBuilder {
    /// Like `self`, but a model given as a string names one of the run's `[[models]]` entries,
    /// which is then shared (one instance, one batch queue) instead of built again.
    pub fn with_named(self, named: BTreeMap<String, Arc<dyn LanguageModel>>) -> Self {
        let inner = self.0;
        ModelBuilder(Arc::new(move |table: &Value| match table {
            Value::String(name) => named.get(name).cloned().ok_or_else(|| {
                ComponentError::new(format!(
                    "there is no [[models]] entry named `{name}` (names: {})",
                    named.keys().cloned().collect::<Vec<_>>().join(", ")
                ))
            }),
            other => inner(other),
        }))
    }

    /// Like `self`, but every model it builds is also added to `built`, so that `trawl check
    /// --ping` can ask the servers of components' own models (a simulated user's, a judge's)
    /// too, not only those of `[[models]]`.
    pub fn recording(self, built: Arc<Mutex<Vec<Arc<dyn LanguageModel>>>>) -> Self {
        let inner = self.0;
        ModelBuilder(Arc::new(move |table: &Value| {
            let model = inner(table)?;
            built
                .lock()
                .unwrap_or_else(|p| p.into_inner())
                .push(model.clone());
            Ok(model)
        }))
    }

    /// A builder over the model kinds of `registry`; a table without `type` gets the default
    /// (embedded) model kind. Every model it builds runs in the one model stack
    /// ([`crate::model_stack`]), at most `default_concurrency` requests in flight unless its
    /// table says `max_concurrency`.
    pub fn from_registry(registry: &Registry, default_concurrency: usize) -> Self {
        let registry = Arc::new(registry.clone());
        ModelBuilder(Arc::new(move |table: &Value| {
            let (kind, mut settings) = kind_and_settings(
                table,
                DEFAULT_MODEL_KIND,
                Role::Model,
                "a model is a table with `type` and its settings, or the name of a [[models]] entry",
            )?;
            let Some(Factory::Model(build)) =
                registry.get(Role::Model, &kind).map(|e| e.factory.clone())
            else {
                return Err(ComponentError::at(
                    "type",
                    format!(
                        "unknown model kind `{kind}`; valid: {}",
                        registry.kind_list(Role::Model)
                    ),
                ));
            };
            let stack =
                crate::model_stack::StackSettings::take(&mut settings, default_concurrency)?;
            let model = build(&Value::Object(settings), &BuildContext::default())?;
            Ok(stack.wrap(model, &[]))
        }))
    }
}

/// A component's table split into its kind (`type`, else `default_kind`) and its settings;
/// `not_a_table` is the error when it is no table at all.
fn kind_and_settings(
    table: &Value,
    default_kind: &str,
    role: Role,
    not_a_table: &str,
) -> Result<(String, serde_json::Map<String, Value>), ComponentError> {
    let mut settings = match table {
        Value::Object(m) => m.clone(),
        Value::Null => serde_json::Map::new(),
        _ => return Err(ComponentError::new(not_a_table)),
    };
    let kind = match settings.remove("type") {
        Some(Value::String(k)) => k,
        None => default_kind.to_string(),
        Some(_) => {
            return Err(ComponentError::at(
                "type",
                format!("must be a {role} kind name"),
            ))
        }
    };
    Ok((kind, settings))
}

/// Builds sandbox backends from `sandbox = { type = ... }` tables, by the registry's kinds.
#[derive(Clone)]
pub struct SandboxBuilder(Arc<Registry>);

impl fmt::Debug for SandboxBuilder {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("SandboxBuilder")
    }
}

impl SandboxBuilder {
    pub fn from_registry(registry: &Registry) -> Self {
        SandboxBuilder(Arc::new(registry.clone()))
    }

    /// The backend a `sandbox` table names (`type`, else `default_kind`), built with the rest
    /// of the table as its settings.
    pub fn build(
        &self,
        table: &Value,
        default_kind: &str,
        cx: &BuildContext,
    ) -> Result<Arc<dyn SandboxBackend>, ComponentError> {
        let (kind, settings) = kind_and_settings(
            table,
            default_kind,
            Role::Sandbox,
            "a sandbox is a table: { type = \"local\", ... }",
        )?;
        let Some(Factory::Sandbox(build)) =
            self.0.get(Role::Sandbox, &kind).map(|e| e.factory.clone())
        else {
            return Err(ComponentError::at(
                "type",
                format!(
                    "unknown sandbox kind `{kind}`; valid: {}",
                    self.0.kind_list(Role::Sandbox)
                ),
            ));
        };
        build(&Value::Object(settings), cx)
    }
}

/// The model kind a config runs on when it names none: the embedded llama.cpp backend with its
/// default model, so that trawl works with no server and no API key.
pub const DEFAULT_MODEL_KIND: &str = "llama";

/// What a factory knows about the run it builds for.
#[derive(Debug, Clone, Default)]
pub struct BuildContext {
    /// The folder of the config file: relative paths in component configs are read from here.
    pub base_dir: PathBuf,
    /// The run's seed.
    pub seed: u64,
    /// The experiment's name (its run directory's name by default); backends label what they
    /// create with it, so that a run can remove its own leftovers.
    pub run_name: String,
    /// Builds models for components that need their own (absent outside a run).
    pub models: Option<ModelBuilder>,
    /// Builds sandbox backends for environments that run commands (absent: the kinds built
    /// into this binary).
    pub sandboxes: Option<SandboxBuilder>,
}

impl BuildContext {
    /// A model of the component's own, from a `[[models]]`-shaped table.
    pub fn build_model(&self, table: &Value) -> Result<Arc<dyn LanguageModel>, ComponentError> {
        match &self.models {
            Some(b) => (b.0)(table),
            None => Err(ComponentError::new(
                "no model kinds are available here (this component needs a model of its own)",
            )),
        }
    }

    /// The sandbox backend a component's `sandbox` table names (`type`, else `default_kind`).
    /// Errors point inside the table (`sandbox.isolation`).
    pub fn build_sandbox(
        &self,
        table: &Value,
        default_kind: &str,
    ) -> Result<Arc<dyn SandboxBackend>, ComponentError> {
        let builder = match &self.sandboxes {
            Some(b) => b.clone(),
            None => SandboxBuilder::from_registry(
                &Registry::builtin().map_err(|e| ComponentError::new(e.to_string()))?,
            ),
        };
        builder.build(table, default_kind, self).map_err(|mut e| {
            e.path.insert(0, "sandbox".into());
            e
        })
    }

    /// `path` as given if absolute, else relative to the config's folder.
    pub fn resolve(&self, path: &str) -> PathBuf {
        let p = PathBuf::from(path);
        if p.is_absolute() {
            p
        } else {
            self.base_dir.join(p)
        }
    }
}

/// A config struct that builds a live environment (vector's `SourceConfig::build` shape).
pub trait EnvironmentConfig: DeserializeOwned {
    fn build(self, cx: &BuildContext) -> Result<Arc<dyn Environment>, ComponentError>;
}
/// A config struct that builds a live scaffold.
pub trait ScaffoldConfig: DeserializeOwned {
    fn build(self, cx: &BuildContext) -> Result<Arc<dyn AgentScaffold>, ComponentError>;
}
/// A config struct that builds a live evaluator.
pub trait EvaluatorConfig: DeserializeOwned {
    fn build(self, cx: &BuildContext) -> Result<Arc<dyn Evaluator>, ComponentError>;
}
/// A config struct that builds a live exporter.
pub trait ExporterConfig: DeserializeOwned {
    fn build(self, cx: &BuildContext) -> Result<Arc<dyn Exporter>, ComponentError>;
}
/// A config struct that builds a live model backend.
pub trait ModelConfig: DeserializeOwned {
    fn build(self, cx: &BuildContext) -> Result<Arc<dyn LanguageModel>, ComponentError>;
}
/// A config struct that builds a sandbox backend.
pub trait SandboxConfig: DeserializeOwned {
    fn build(self, cx: &BuildContext) -> Result<Arc<dyn SandboxBackend>, ComponentError>;
}

/// How a compiled-in kind is built: a plain function, so that registrations are statics.
pub type StaticFactory<T> = fn(&Value, &BuildContext) -> Result<Arc<T>, ComponentError>;
/// How any kind is built: a function or a closure (a plugin's factory holds its library).
pub type DynFactory<T> =
    Arc<dyn Fn(&Value, &BuildContext) -> Result<Arc<T>, ComponentError> + Send + Sync>;

pub type EnvironmentFactory = StaticFactory<dyn Environment>;
pub type ScaffoldFactory = StaticFactory<dyn AgentScaffold>;
pub type EvaluatorFactory = StaticFactory<dyn Evaluator>;
pub type ExporterFactory = StaticFactory<dyn Exporter>;
pub type ModelFactory = StaticFactory<dyn LanguageModel>;
pub type SandboxFactory = StaticFactory<dyn SandboxBackend>;

/// A config struct that builds a live `T` (one role's trait object): each role's `*Config`
/// trait above is one, so that one generic function builds every kind.
pub trait Builds<T: ?Sized>: DeserializeOwned {
    fn build_live(self, cx: &BuildContext) -> Result<Arc<T>, ComponentError>;
}

/// Says that `$config` (each role's config trait) builds `$live`.
macro_rules! builds {
    ($($config:ident => $live:ty),* $(,)?) => {$(
        impl<C: $config> Builds<$live> for C {
            fn build_live(self, cx: &BuildContext) -> Result<Arc<$live>, ComponentError> {
                self.build(cx)
            }
        }
    )*};
}

builds!(
    EnvironmentConfig => dyn Environment,
    ScaffoldConfig => dyn AgentScaffold,
    EvaluatorConfig => dyn Evaluator,
    ExporterConfig => dyn Exporter,
    ModelConfig => dyn LanguageModel,
    SandboxConfig => dyn SandboxBackend,
);

/// Builds a kind from its settings table: what [`register!`](crate::register) registers for a
/// config type of any role.
pub fn build<T: ?Sized, C: Builds<T>>(
    v: &Value,
    cx: &BuildContext,
) -> Result<Arc<T>, ComponentError> {
    parse_settings::<C>(v)?.build_live(cx)
}

/// How to build a compiled-in component, by role.
#[derive(Clone, Copy)]
pub enum StaticBuilder {
    Environment(EnvironmentFactory),
    Scaffold(ScaffoldFactory),
    Evaluator(EvaluatorFactory),
    Exporter(ExporterFactory),
    Model(ModelFactory),
    Sandbox(SandboxFactory),
}

impl StaticBuilder {
    pub fn role(&self) -> Role {
        match self {
            StaticBuilder::Environment(_) => Role::Environment,
            StaticBuilder::Scaffold(_) => Role::Scaffold,
            StaticBuilder::Evaluator(_) => Role::Evaluator,
            StaticBuilder::Exporter(_) => Role::Exporter,
            StaticBuilder::Model(_) => Role::Model,
            StaticBuilder::Sandbox(_) => Role::Sandbox,
        }
    }
}

impl From<StaticBuilder> for Factory {
    fn from(b: StaticBuilder) -> Self {
        match b {
            StaticBuilder::Environment(f) => Factory::Environment(Arc::new(f)),
            StaticBuilder::Scaffold(f) => Factory::Scaffold(Arc::new(f)),
            StaticBuilder::Evaluator(f) => Factory::Evaluator(Arc::new(f)),
            StaticBuilder::Exporter(f) => Factory::Exporter(Arc::new(f)),
            StaticBuilder::Model(f) => Factory::Model(Arc::new(f)),
            StaticBuilder::Sandbox(f) => Factory::Sandbox(Arc::new(f)),
        }
    }
}

/// How to build a component, by role: compiled in, or across a plugin boundary.
#[derive(Clone)]
pub enum Factory {
    Environment(DynFactory<dyn Environment>),
    Scaffold(DynFactory<dyn AgentScaffold>),
    Evaluator(DynFactory<dyn Evaluator>),
    Exporter(DynFactory<dyn Exporter>),
    Model(DynFactory<dyn LanguageModel>),
    Sandbox(DynFactory<dyn SandboxBackend>),
}

impl Factory {
    pub fn role(&self) -> Role {
        match self {
            Factory::Environment(_) => Role::Environment,
            Factory::Scaffold(_) => Role::Scaffold,
            Factory::Evaluator(_) => Role::Evaluator,
            Factory::Exporter(_) => Role::Exporter,
            Factory::Model(_) => Role::Model,
            Factory::Sandbox(_) => Role::Sandbox,
        }
    }
}

/// One compiled-in kind, submitted with [`register!`](crate::register).
pub struct Registration {
    pub kind: &'static str,
    pub description: &'static str,
    /// The version of the crate that defines it.
    pub version: &'static str,
    /// The crate that registered it (`CARGO_CRATE_NAME`): a plugin library exports only the
    /// kinds of its own crate, not those of trawl crates it links for their helpers.
    pub crate_name: &'static str,
    pub builder: StaticBuilder,
}

inventory::collect!(Registration);

/// Registers a config type as a component kind, next to its definition:
/// `trawl_core::register!(environment, "math", "Arithmetic and competition math", MathEnvironmentConfig);`
#[macro_export]
macro_rules! register {
    (environment, $kind:literal, $desc:literal, $config:ty) => {
        $crate::register!(@ Environment, $kind, $desc, $config);
    };
    (scaffold, $kind:literal, $desc:literal, $config:ty) => {
        $crate::register!(@ Scaffold, $kind, $desc, $config);
    };
    (evaluator, $kind:literal, $desc:literal, $config:ty) => {
        $crate::register!(@ Evaluator, $kind, $desc, $config);
    };
    (exporter, $kind:literal, $desc:literal, $config:ty) => {
        $crate::register!(@ Exporter, $kind, $desc, $config);
    };
    (model, $kind:literal, $desc:literal, $config:ty) => {
        $crate::register!(@ Model, $kind, $desc, $config);
    };
    (sandbox, $kind:literal, $desc:literal, $config:ty) => {
        $crate::register!(@ Sandbox, $kind, $desc, $config);
    };
    (@ $variant:ident, $kind:literal, $desc:literal, $config:ty) => {
        $crate::inventory::submit! {
            $crate::registry::Registration {
                kind: $kind,
                description: $desc,
                version: env!("CARGO_PKG_VERSION"),
                crate_name: env!("CARGO_CRATE_NAME"),
                builder: $crate::registry::StaticBuilder::$variant($crate::registry::build::<_, $config>),
            }
        }
    };
}

/// Where a kind came from.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Origin {
    BuiltIn,
    /// Loaded from the shared library at this path.
    Plugin(PathBuf),
}

/// One registered kind.
#[derive(Clone)]
pub struct Entry {
    pub role: Role,
    pub kind: String,
    pub description: String,
    pub version: String,
    pub origin: Origin,
    pub factory: Factory,
}

impl std::fmt::Display for Origin {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Origin::BuiltIn => f.write_str("built into trawl"),
            Origin::Plugin(p) => write!(f, "plugin {}", p.display()),
        }
    }
}

#[derive(Debug, thiserror::Error)]
pub enum RegistryError {
    #[error(
        "{role} kind `{kind}` is registered twice: {first}, and {second}\n  hint: kind names are global; rename the kind in one of them, or load only one"
    )]
    Duplicate {
        role: Role,
        kind: String,
        first: Origin,
        second: Origin,
    },
}

/// A shared library loaded as a plugin, as runs record it in their manifest.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct PluginLibrary {
    /// The name the plugin declares.
    pub name: String,
    /// The version the plugin declares.
    pub version: String,
    /// Where it was loaded from.
    pub path: PathBuf,
    /// The plugin ABI version it speaks.
    pub abi_version: u32,
    /// The trawl-core version it was built against.
    pub core_version: String,
    /// `role/kind` of everything it registered.
    pub kinds: Vec<String>,
    /// SHA-256 of the library file, as it was read before loading.
    #[serde(default)]
    pub sha256: String,
}

/// All known kinds, by role and name, and the plugin libraries some of them came from.
#[derive(Clone, Default)]
pub struct Registry {
    entries: BTreeMap<(Role, String), Entry>,
    libraries: Vec<PluginLibrary>,
}

impl Registry {
    /// Every compiled-in kind. Fails if two crates register the same (role, kind).
    pub fn builtin() -> Result<Self, RegistryError> {
        let mut r = Registry::default();
        for reg in inventory::iter::<Registration> {
            r.add(Entry {
                role: reg.builder.role(),
                kind: reg.kind.to_string(),
                description: reg.description.to_string(),
                version: reg.version.to_string(),
                origin: Origin::BuiltIn,
                factory: reg.builder.into(),
            })?;
        }
        Ok(r)
    }

    /// Adds one kind; refuses a (role, kind) that is already there.
    pub fn add(&mut self, entry: Entry) -> Result<(), RegistryError> {
        let key = (entry.role, entry.kind.clone());
        if let Some(first) = self.entries.get(&key) {
            return Err(RegistryError::Duplicate {
                role: entry.role,
                kind: entry.kind,
                first: first.origin.clone(),
                second: entry.origin,
            });
        }
        self.entries.insert(key, entry);
        Ok(())
    }

    pub fn get(&self, role: Role, kind: &str) -> Option<&Entry> {
        self.entries.get(&(role, kind.to_string()))
    }

    /// The kinds of one role, sorted by name.
    pub fn kinds(&self, role: Role) -> Vec<&Entry> {
        self.entries.values().filter(|e| e.role == role).collect()
    }

    /// The kind names of one role, comma-separated, for error messages.
    pub fn kind_list(&self, role: Role) -> String {
        let names: Vec<&str> = self.kinds(role).iter().map(|e| e.kind.as_str()).collect();
        if names.is_empty() {
            "(none registered)".to_string()
        } else {
            names.join(", ")
        }
    }

    pub fn entries(&self) -> impl Iterator<Item = &Entry> {
        self.entries.values()
    }

    /// Records a loaded plugin library (its kinds are added with [`Registry::add`]).
    pub fn add_library(&mut self, library: PluginLibrary) {
        self.libraries.push(library);
    }

    /// The plugin libraries loaded into this registry, in load order.
    pub fn libraries(&self) -> &[PluginLibrary] {
        &self.libraries
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn exporter_entry(kind: &str, origin: Origin) -> Entry {
        fn build(_: &Value, _: &BuildContext) -> Result<Arc<dyn Exporter>, ComponentError> {
            Err(ComponentError::new("not built in tests"))
        }
        Entry {
            role: Role::Exporter,
            kind: kind.into(),
            description: String::new(),
            version: "0".into(),
            origin,
            factory: Factory::Exporter(Arc::new(build)),
        }
    }

    #[test]
    fn duplicates_are_refused_with_both_origins_named() {
        let mut r = Registry::default();
        r.add(exporter_entry("x", Origin::BuiltIn)).unwrap();
        let err = r
            .add(exporter_entry("x", Origin::Plugin("/p/libx.so".into())))
            .unwrap_err();
        let msg = err.to_string();
        assert!(
            msg.contains("exporter kind `x` is registered twice"),
            "{msg}"
        );
        assert!(msg.contains("libx.so"), "{msg}");
    }

    #[test]
    fn kinds_are_sorted_and_scoped_by_role() {
        let mut r = Registry::default();
        r.add(exporter_entry("b", Origin::BuiltIn)).unwrap();
        r.add(exporter_entry("a", Origin::BuiltIn)).unwrap();
        assert_eq!(r.kind_list(Role::Exporter), "a, b");
        assert_eq!(r.kind_list(Role::Model), "(none registered)");
    }

    #[test]
    fn settings_errors_name_the_field() {
        #[derive(serde::Deserialize, Debug)]
        #[serde(deny_unknown_fields)]
        #[allow(dead_code)]
        struct C {
            inner: Inner,
        }
        #[derive(serde::Deserialize, Debug)]
        #[serde(deny_unknown_fields)]
        #[allow(dead_code)]
        struct Inner {
            count: u32,
        }
        let e = parse_settings::<C>(&serde_json::json!({"inner": {"cuont": 1}})).unwrap_err();
        assert_eq!(e.path, vec!["inner", "cuont"]);
        let e = parse_settings::<C>(&serde_json::json!({"inner": {"count": "x"}})).unwrap_err();
        assert_eq!(e.path, vec!["inner", "count"]);
    }
}

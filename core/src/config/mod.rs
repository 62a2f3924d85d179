//! The experiment config: TOML, read in two stages. Stage one reads the top level and finds each
//! component's `type`; stage two looks the kind up in the registry and lets the kind parse its
//! own settings with unknown fields refused. Every error names the file, line, column and field,
//! and lists the valid choices.
//!
//! The files, from the bottom up: `error` (what an unusable config says), `source` (the TOML
//! with the span of every value), `overrides` (`--set KEY=VALUE`), `plugins` (the `plugins`
//! list, read before the registry exists), `spec` (the resolved config) and `load` (the checks
//! that turn a file into a spec).

mod error;
mod load;
pub mod overrides;
mod plugins;
pub(crate) mod source;
mod spec;

pub use error::{ConfigError, Location};
pub use plugins::{plugin_refs, plugin_refs_with, PluginRef};
pub use source::{dotted, parse_toml, SourceMap};
pub use spec::{
    ComponentSpec, EvaluatorSpec, ExperimentConfig, ModelSpec, Samples, MAX_CONCURRENCY,
};

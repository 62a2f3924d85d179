//! The config's `plugins` list, read before the registry exists: the libraries must be loaded
//! before the kinds they offer can be checked.

use std::path::{Path, PathBuf};

use super::error::{ConfigError, Location};
use super::overrides::apply_overrides;
use super::source::{dotted, parse_toml, read_config};

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

//! A config that cannot be used: where (file, line, column, or the `--set` argument) and
//! what to do.

use std::fmt;
use std::path::PathBuf;

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

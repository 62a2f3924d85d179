//! The config file as parsed: TOML read into JSON with the span of every key and value, so that
//! any field path can be turned into a line and column.

use std::collections::HashMap;
use std::ops::Range;
use std::path::{Path, PathBuf};

use serde_json::{Map, Value};
use toml::de::{DeTable, DeValue};
use toml::Spanned;

use super::error::{ConfigError, Location};

/// The parsed TOML source with the span of every key and value, so that any field path can be
/// turned into a line and column.
pub struct SourceMap {
    pub(super) file: PathBuf,
    pub(super) text: String,
    pub(super) spans: HashMap<Vec<String>, Range<usize>>,
    /// The `--set` overrides applied, as (field path, argument): a field under one of them is
    /// located at its argument.
    pub(super) overrides: Vec<(Vec<String>, String)>,
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

pub(super) fn read_config(path: &Path) -> Result<String, ConfigError> {
    std::fs::read_to_string(path).map_err(|e| ConfigError {
        location: None,
        field: String::new(),
        message: format!("cannot read config file {}: {e}", path.display()),
        hint: Some("check the path; example configs live in examples/".into()),
    })
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
    fn dotted_paths_render_indexes() {
        let p: Vec<String> = ["models", "0", "sampling"]
            .iter()
            .map(|s| s.to_string())
            .collect();
        assert_eq!(dotted(&p), "models[0].sampling");
    }
}

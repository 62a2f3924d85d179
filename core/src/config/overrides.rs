//! `--set KEY=VALUE`: one config, many runs. Each override replaces (or adds) one field of the
//! config before it is checked, so a sweep over task files or temperatures is a shell loop over
//! one file. The key is a dotted path whose numeric parts index arrays (`models.0.sampling.
//! temperature`, `environments.1.files`, `name`); the value is read as a TOML value (`0.7`,
//! `true`, `["a.jsonl", "b.jsonl"]`, `{ max = 8, until_successes = 2 }`, `"quoted"`) and, when it
//! is not one, taken as a bare string (`runs/a`, `data/gsm8k.jsonl`).

use serde_json::{Map, Value};
use toml::de::DeTable;

use super::error::{ConfigError, Location};
use super::source::{dotted, SourceMap};

/// One parsed `--set` argument.
#[derive(Debug, Clone, PartialEq)]
pub struct Override {
    /// The argument as given, for errors and the run's resolved config.
    pub arg: String,
    /// The key's parts (`["models", "0", "sampling", "temperature"]`).
    pub path: Vec<String>,
    pub value: Value,
}

impl Override {
    /// Parses `KEY=VALUE`. Fails (with a message saying what to write) on a
    /// missing `=`, an empty key or an empty part of the key (`models..x`).
    pub fn parse(arg: &str) -> Result<Override, String> {
        let Some((key, raw)) = arg.split_once('=') else {
            return Err("expected KEY=VALUE\n  hint: for example --set models.0.sampling.temperature=0.7 or --set environments.0.files='[\"data/a.jsonl\"]'".to_string());
        };
        let key = key.trim();
        let path: Vec<String> = key.split('.').map(|p| p.trim().to_string()).collect();
        if key.is_empty() || path.iter().any(String::is_empty) {
            return Err(format!(
                "`{key}` is not a key; a key is field names joined by `.`, with numbers for list entries\n  hint: for example models.0.sampling.temperature"
            ));
        }
        Ok(Override {
            arg: arg.to_string(),
            path,
            value: toml_value(raw.trim()).unwrap_or_else(|| Value::String(raw.to_string())),
        })
    }

    /// Sets the field in `doc` (the config as JSON), making missing tables on the way. Fails
    /// (with the part of the key at fault) where the key goes through a value that is not a
    /// table or list, or indexes past a list's end.
    pub fn apply(&self, doc: &mut Value) -> Result<(), String> {
        let mut here = doc;
        for (i, part) in self.path.iter().enumerate() {
            let last = i + 1 == self.path.len();
            let so_far = self.path[..i].join(".");
            let within = if so_far.is_empty() {
                "the config".to_string()
            } else {
                format!("`{so_far}`")
            };
            here = match here {
                Value::Object(table) => {
                    if last {
                        table.insert(part.clone(), self.value.clone());
                        return Ok(());
                    }
                    table
                        .entry(part.clone())
                        .or_insert_with(|| Value::Object(Map::new()))
                }
                Value::Array(items) => {
                    let len = items.len();
                    let index = part.parse::<usize>().map_err(|_| {
                        format!(
                            "{within} is a list; `{part}` must be an entry's number (0 to {})",
                            len.saturating_sub(1)
                        )
                    })?;
                    let Some(item) = items.get_mut(index) else {
                        return Err(format!(
                            "{within} has {len} entr{}; there is no entry {index}\n  hint: entries are numbered from 0",
                            if len == 1 { "y" } else { "ies" }
                        ));
                    };
                    if last {
                        *item = self.value.clone();
                        return Ok(());
                    }
                    item
                }
                _ => {
                    return Err(format!(
                        "{within} is a single value, not a table or list; it has no field `{part}`"
                    ))
                }
            };
        }
        // An empty path is refused by `parse`.
        Ok(())
    }
}

/// `raw` as a TOML value, or `None` when it is not exactly one.
fn toml_value(raw: &str) -> Option<Value> {
    let text = format!("value = {raw}\n");
    let doc = DeTable::parse(&text).ok()?;
    let table = doc.get_ref();
    if table.len() != 1 {
        return None;
    }
    let (_, value) = table.iter().next()?;
    let mut spans = std::collections::HashMap::new();
    let mut non_finite = None;
    let json = crate::config::source::to_json(value, &mut Vec::new(), &mut spans, &mut non_finite);
    // `nan` and `inf` stay the words they are: no setting takes them as a number, so the
    // field's own type refuses them, naming the argument.
    match non_finite {
        Some(_) => Some(Value::String(raw.to_string())),
        None => Some(json),
    }
}

/// Parses `--set` arguments and applies them, in order, to the parsed config; the source map
/// then locates the fields they set at their arguments. Errors name the argument and the field.
pub(super) fn apply_overrides(
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
        let o = Override::parse(arg).map_err(|m| at_arg(&[], m))?;
        o.apply(json).map_err(|m| at_arg(&o.path, m))?;
        map.overrides.push((o.path, o.arg));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn set(doc: &mut Value, arg: &str) -> Result<(), String> {
        Override::parse(arg)?.apply(doc)
    }

    #[test]
    fn values_are_toml_or_else_bare_strings() {
        let v = |arg: &str| Override::parse(arg).map(|o| o.value);
        assert_eq!(v("a=0.5"), Ok(json!(0.5)));
        assert_eq!(v("a=3"), Ok(json!(3)));
        assert_eq!(v("a=true"), Ok(json!(true)));
        assert_eq!(
            v("a=[\"x.jsonl\", \"y.jsonl\"]"),
            Ok(json!(["x.jsonl", "y.jsonl"]))
        );
        assert_eq!(
            v("a={ max = 8, until_successes = 2 }"),
            Ok(json!({"max": 8, "until_successes": 2}))
        );
        assert_eq!(v("a=\"042\""), Ok(json!("042")));
        assert_eq!(v("a=data/x.jsonl"), Ok(json!("data/x.jsonl")));
        assert_eq!(v("a=run-1"), Ok(json!("run-1")));
        // One value only: a newline cannot smuggle in a second key.
        assert_eq!(v("a=1\nb = 2"), Ok(json!("1\nb = 2")));
        assert_eq!(v("a="), Ok(json!("")));
    }

    #[test]
    fn keys_are_dotted_paths_with_list_indexes() {
        let mut doc = json!({"name": "x", "models": [{"type": "openai"}], "environments": [{"type": "math", "files": ["a"]}]});
        set(&mut doc, "name=sweep-b").unwrap();
        set(&mut doc, "models.0.sampling.temperature=0.7").unwrap();
        set(&mut doc, "environments.0.files.0=b.jsonl").unwrap();
        set(&mut doc, "seed=7").unwrap();
        assert_eq!(
            doc,
            json!({"name": "sweep-b", "models": [{"type": "openai", "sampling": {"temperature": 0.7}}],
                   "environments": [{"type": "math", "files": ["b.jsonl"]}], "seed": 7})
        );
    }

    #[test]
    fn bad_keys_say_what_is_wrong() {
        let mut doc = json!({"name": "x", "models": [{"type": "openai"}]});
        let err = set(&mut doc, "models.3.type=openai").unwrap_err();
        assert!(
            err.starts_with("`models` has 1 entry; there is no entry 3"),
            "{err}"
        );
        let err = set(&mut doc, "models.first.type=x").unwrap_err();
        assert!(err.contains("`models` is a list; `first` must be"), "{err}");
        let err = set(&mut doc, "name.x=1").unwrap_err();
        assert!(err.contains("`name` is a single value"), "{err}");
        assert!(Override::parse("temperature")
            .unwrap_err()
            .contains("expected KEY=VALUE"));
        assert!(Override::parse("models..x=1")
            .unwrap_err()
            .contains("is not a key"));
        assert!(Override::parse("=1").unwrap_err().contains("is not a key"));
    }
}

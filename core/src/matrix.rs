//! Which (environment, scaffold, model) combinations a run plays: the config's `[matrix]`.
//!
//! By default every combination runs. A config narrows that with `include` (only these) and
//! `exclude` (never these) lists, whose entries name any of `environment`, `scaffold` and
//! `model` (a name or a list of names; a key left out matches everything); an entry naming all
//! three is an explicit combination. With `skip_incompatible = true`, a pair whose scaffold
//! needs actions the environment does not offer is skipped and listed instead of refusing the
//! run.

use serde::{Deserialize, Serialize};

use crate::scoring::OneOrMany;

/// One `include` or `exclude` entry: the names it matches on each axis (empty: any).
#[derive(Debug, Clone, Default, PartialEq, Serialize)]
pub struct Pattern {
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub environment: Vec<String>,
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub scaffold: Vec<String>,
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub model: Vec<String>,
}

impl Pattern {
    pub fn matches(&self, environment: &str, scaffold: &str, model: &str) -> bool {
        let on = |names: &[String], v: &str| names.is_empty() || names.iter().any(|n| n == v);
        on(&self.environment, environment) && on(&self.scaffold, scaffold) && on(&self.model, model)
    }
}

/// The resolved `[matrix]` table.
#[derive(Debug, Clone, Default, PartialEq, Serialize)]
pub struct Matrix {
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub include: Vec<Pattern>,
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub exclude: Vec<Pattern>,
    /// Skip (and list) incompatible environment × scaffold pairs instead of refusing the run.
    pub skip_incompatible: bool,
}

impl Matrix {
    /// Whether the config asks for this combination (compatibility aside).
    pub fn wants(&self, environment: &str, scaffold: &str, model: &str) -> bool {
        (self.include.is_empty()
            || self
                .include
                .iter()
                .any(|p| p.matches(environment, scaffold, model)))
            && !self
                .exclude
                .iter()
                .any(|p| p.matches(environment, scaffold, model))
    }

    pub fn is_default(&self) -> bool {
        self == &Matrix::default()
    }
}

/// A combination the run leaves out, and why: recorded in the manifest.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Skipped {
    pub environment: String,
    pub scaffold: String,
    pub reason: String,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct MatrixTable {
    #[serde(default)]
    pub include: Vec<PatternTable>,
    #[serde(default)]
    pub exclude: Vec<PatternTable>,
    #[serde(default)]
    pub skip_incompatible: bool,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct PatternTable {
    environment: Option<OneOrMany>,
    scaffold: Option<OneOrMany>,
    model: Option<OneOrMany>,
}

/// The names of each axis, to check patterns against.
pub(crate) struct Axes<'a> {
    pub environment: Vec<&'a str>,
    pub scaffold: Vec<&'a str>,
    pub model: Vec<&'a str>,
}

/// Checks a `[matrix]` table: every name exists. Errors are (field path, message, hint).
pub(crate) fn resolve(
    table: MatrixTable,
    axes: &Axes<'_>,
) -> Result<Matrix, (Vec<String>, String, Option<String>)> {
    let mut lists = Vec::new();
    for (list, items) in [("include", table.include), ("exclude", table.exclude)] {
        let mut out = Vec::new();
        for (i, item) in items.into_iter().enumerate() {
            let mut p = Pattern::default();
            let mut any = false;
            for (axis, names, valid) in [
                ("environment", item.environment, &axes.environment),
                ("scaffold", item.scaffold, &axes.scaffold),
                ("model", item.model, &axes.model),
            ] {
                let Some(names) = names else { continue };
                any = true;
                let names = names.into_vec();
                for (j, n) in names.iter().enumerate() {
                    if !valid.contains(&n.as_str()) {
                        let mut at = vec![
                            "matrix".to_string(),
                            list.to_string(),
                            i.to_string(),
                            axis.to_string(),
                        ];
                        if names.len() > 1 {
                            at.push(j.to_string());
                        }
                        return Err((
                            at,
                            format!("no {axis} is named `{n}`"),
                            Some(format!("the {axis} names are: {}", valid.join(", "))),
                        ));
                    }
                }
                match axis {
                    "environment" => p.environment = names,
                    "scaffold" => p.scaffold = names,
                    _ => p.model = names,
                }
            }
            if !any {
                return Err((
                    vec!["matrix".to_string(), list.to_string(), i.to_string()],
                    "an entry must name an environment, a scaffold or a model".into(),
                    Some("for example { environment = \"math\", scaffold = \"chat\" }".into()),
                ));
            }
            out.push(p);
        }
        lists.push(out);
    }
    let exclude = lists.pop().unwrap_or_default();
    let include = lists.pop().unwrap_or_default();
    Ok(Matrix {
        include,
        exclude,
        skip_incompatible: table.skip_incompatible,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn include_narrows_and_exclude_removes() {
        let m = Matrix {
            include: vec![Pattern {
                environment: vec!["math".into()],
                ..Pattern::default()
            }],
            exclude: vec![Pattern {
                scaffold: vec!["tools".into()],
                model: vec!["small".into()],
                ..Pattern::default()
            }],
            skip_incompatible: false,
        };
        assert!(m.wants("math", "chat", "small"));
        assert!(m.wants("math", "tools", "big"));
        assert!(!m.wants("math", "tools", "small"));
        assert!(!m.wants("code", "chat", "big"));
        assert!(Matrix::default().wants("x", "y", "z"));
    }
}

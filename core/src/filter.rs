//! jq filters over records (`trawl export --where`), run by jaq, a jq implementation in Rust.
//!
//! A record is kept when the filter yields at least one truthy value for it (jq's `select`
//! rule), so `.success and (.messages | length) <= 9` and
//! `.evaluations[] | select(.evaluator == "rubric") | .success` both read as users expect.

use std::fmt;
use std::sync::Arc;

use jaq_core::load::{Arena, File, Loader};
use jaq_core::{data, unwrap_valr, Compiler, Ctx, Vars};
use jaq_json::Val;

use crate::trajectory::TrajectoryRecord;

type JqFilter = jaq_core::compile::Filter<jaq_core::Native<data::JustLut<Val>>>;

/// A compiled jq filter and its source.
#[derive(Clone)]
pub struct RecordFilter {
    source: String,
    filter: Arc<JqFilter>,
}

impl fmt::Debug for RecordFilter {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "RecordFilter({:?})", self.source)
    }
}

impl serde::Serialize for RecordFilter {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(&self.source)
    }
}

impl<'de> serde::Deserialize<'de> for RecordFilter {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let source = String::deserialize(d)?;
        RecordFilter::compile(&source).map_err(serde::de::Error::custom)
    }
}

impl PartialEq for RecordFilter {
    fn eq(&self, other: &Self) -> bool {
        self.source == other.source
    }
}

/// Where in the filter text `part` (a slice of it) starts, 1-based.
fn column_of(code: &str, part: &str) -> usize {
    let start = part.as_ptr() as usize;
    let base = code.as_ptr() as usize;
    if start >= base && start <= base + code.len() {
        code[..start - base].chars().count() + 1
    } else {
        1
    }
}

impl RecordFilter {
    /// Compiles `source`; the error names the column and what was expected.
    pub fn compile(source: &str) -> Result<Self, String> {
        let code = source;
        let program = File { code, path: () };
        let defs = jaq_core::defs()
            .chain(jaq_std::defs())
            .chain(jaq_json::defs());
        let funs = jaq_core::funs()
            .chain(jaq_std::funs())
            .chain(jaq_json::funs());
        let loader = Loader::new(defs);
        let arena = Arena::default();
        let modules = loader.load(&arena, program).map_err(|errs| {
            let mut out = Vec::new();
            for (_, e) in errs {
                match e {
                    jaq_core::load::Error::Io(v) => {
                        out.extend(v.into_iter().map(|(_, m)| m));
                    }
                    jaq_core::load::Error::Lex(v) => {
                        out.extend(v.into_iter().map(|(expect, at)| {
                            format!("at column {}: expected {:?}", column_of(code, at), expect)
                        }))
                    }
                    jaq_core::load::Error::Parse(v) => {
                        out.extend(v.into_iter().map(|(expect, at)| {
                            let found = if at.is_empty() {
                                "the end".to_string()
                            } else {
                                format!("`{}`", at.chars().take(20).collect::<String>())
                            };
                            format!(
                                "at column {}: expected {}, found {found}",
                                column_of(code, at),
                                expect.as_str()
                            )
                        }))
                    }
                }
            }
            format!("not a valid jq filter: {}", out.join("; "))
        })?;
        let filter = Compiler::default()
            .with_funs(funs)
            .compile(modules)
            .map_err(|errs| {
                let out: Vec<String> = errs
                    .into_iter()
                    .flat_map(|(_, v)| v)
                    .map(|(name, undefined)| {
                        format!(
                            "`{name}` (column {}) is not a defined {}",
                            column_of(code, name),
                            undefined.as_str()
                        )
                    })
                    .collect();
                format!("not a valid jq filter: {}", out.join("; "))
            })?;
        Ok(RecordFilter {
            source: source.to_string(),
            filter: Arc::new(filter),
        })
    }

    pub fn source(&self) -> &str {
        &self.source
    }

    /// Whether the filter keeps `record`: at least one output is truthy. A runtime error (for
    /// example indexing a string) is returned, not taken as "no".
    pub fn keeps(&self, record: &TrajectoryRecord) -> Result<bool, String> {
        let bytes = serde_json::to_vec(record).map_err(|e| e.to_string())?;
        let input = jaq_json::read::parse_single(&bytes).map_err(|e| e.to_string())?;
        let ctx = Ctx::<data::JustLut<Val>>::new(&self.filter.lut, Vars::new([]));
        for out in self.filter.id.run((ctx, input)).map(unwrap_valr) {
            match out {
                Ok(v) => {
                    if jaq_core::ValT::as_bool(&v) {
                        return Ok(true);
                    }
                }
                Err(e) => return Err(format!("the filter failed: {e}")),
            }
        }
        Ok(false)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn record() -> TrajectoryRecord {
        crate::strategies::example_record()
    }

    #[test]
    fn filters_keep_what_jq_would_select() {
        let mut r = record();
        r.success = true;
        r.reward = 0.75;
        let keep = |f: &str| RecordFilter::compile(f).unwrap().keeps(&r).unwrap();
        assert!(keep(".success"));
        assert!(keep(".reward >= 0.5 and .success"));
        assert!(!keep(".reward > 0.8"));
        assert!(!keep("empty"));
        assert!(keep("[1, 2] | map(. * 2) | add == 6"));
        // jq's standard library: regexes, any/all, string functions.
        assert!(keep(r#""tool_calling" | test("^tool")"#));
        assert!(keep("[1, 2, 3] | any(. > 2) and all(. > 0)"));
        assert!(keep(r#""A,B" | split(",") | length == 2"#));
    }

    #[test]
    fn bad_filters_say_where() {
        let err = RecordFilter::compile(".success and (").unwrap_err();
        assert!(err.starts_with("not a valid jq filter: at column"), "{err}");
        let err = RecordFilter::compile("nosuchfn(1)").unwrap_err();
        assert!(err.contains("`nosuchfn`"), "{err}");
        let r = record();
        let err = RecordFilter::compile(".key.task | .[0]")
            .unwrap()
            .keeps(&r)
            .unwrap_err();
        assert!(err.starts_with("the filter failed"), "{err}");
    }
}

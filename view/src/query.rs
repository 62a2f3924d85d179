//! The list's filter, sort and paging, done on the server over the index.

use std::collections::BTreeMap;

use serde::Serialize;
use trawl_core::labels::Verdict;
use trawl_core::store::StoreError;
use trawl_core::ExitStatus;

use crate::index::{Entry, RunIndex};

/// Rows per page at most.
pub const MAX_LIMIT: usize = 500;

/// What the list shows, from the query string.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Filter {
    pub run: Option<usize>,
    pub environment: Option<String>,
    pub scaffold: Option<String>,
    pub model: Option<String>,
    /// success, failure, unscored or unfinished.
    pub outcome: Option<String>,
    pub exit_status: Option<ExitStatus>,
    pub min_reward: Option<f64>,
    pub max_reward: Option<f64>,
    /// accept, reject or none.
    pub label: Option<String>,
    /// Part of the task id.
    pub task: Option<String>,
    /// Text anywhere in the rollout (messages, tool results, answer), ASCII case folded.
    pub text: Option<String>,
    pub sort: Sort,
    pub offset: usize,
    pub limit: usize,
}

#[derive(Debug, Clone, Copy, Default, PartialEq)]
pub enum Sort {
    /// Run, then file order.
    #[default]
    File,
    Reward(bool),
    Turns(bool),
    Tokens(bool),
    Duration(bool),
    Task(bool),
}

impl Filter {
    /// Reads the query string; an unknown parameter or a bad value is an error naming it.
    pub fn parse(params: &[(String, String)]) -> Result<Self, String> {
        let mut f = Filter {
            limit: 50,
            ..Filter::default()
        };
        for (k, v) in params {
            let v = v.trim();
            if v.is_empty() {
                continue;
            }
            let text = || Some(v.to_string());
            let number = |what: &str| -> Result<f64, String> {
                v.parse::<f64>()
                    .ok()
                    .filter(|x| x.is_finite())
                    .ok_or_else(|| format!("`{what}` must be a number, not `{v}`"))
            };
            let count = |what: &str| -> Result<usize, String> {
                v.parse::<usize>()
                    .map_err(|_| format!("`{what}` must be a whole number, not `{v}`"))
            };
            match k.as_str() {
                "run" => f.run = Some(count("run")?),
                "environment" => f.environment = text(),
                "scaffold" => f.scaffold = text(),
                "model" => f.model = text(),
                "outcome" => {
                    if !["success", "failure", "unscored", "unfinished"].contains(&v) {
                        return Err(format!(
                            "`outcome` is success, failure, unscored or unfinished, not `{v}`"
                        ));
                    }
                    f.outcome = text();
                }
                "exit_status" => {
                    f.exit_status = Some(ExitStatus::parse(v).ok_or_else(|| {
                        format!(
                            "`exit_status` `{v}` is not an exit status; statuses: {}",
                            ExitStatus::ALL.map(|x| x.as_str()).join(", ")
                        )
                    })?)
                }
                "min_reward" => f.min_reward = Some(number("min_reward")?),
                "max_reward" => f.max_reward = Some(number("max_reward")?),
                "label" => {
                    if !["accept", "reject", "none"].contains(&v) {
                        return Err(format!("`label` is accept, reject or none, not `{v}`"));
                    }
                    f.label = text();
                }
                "task" => f.task = text(),
                "q" => f.text = Some(v.to_ascii_lowercase()),
                "sort" => {
                    let (desc, name) = match v.strip_prefix('-') {
                        Some(n) => (true, n),
                        None => (false, v),
                    };
                    f.sort = match name {
                        "file" => Sort::File,
                        "reward" => Sort::Reward(desc),
                        "turns" => Sort::Turns(desc),
                        "tokens" => Sort::Tokens(desc),
                        "duration" => Sort::Duration(desc),
                        "task" => Sort::Task(desc),
                        _ => {
                            return Err(format!(
                                "`sort` is file, reward, turns, tokens, duration or task (a leading - sorts high to low), not `{v}`"
                            ))
                        }
                    }
                }
                "offset" => f.offset = count("offset")?,
                "limit" => f.limit = count("limit")?.clamp(1, MAX_LIMIT),
                other => {
                    return Err(format!(
                        "unknown parameter `{other}`; the list takes run, environment, scaffold, model, outcome, exit_status, min_reward, max_reward, label, task, q, sort, offset, limit"
                    ))
                }
            }
        }
        Ok(f)
    }

    /// The part of the filter that decides which rollouts match (not their order or page).
    fn selection_key(&self) -> Filter {
        Filter {
            sort: Sort::File,
            offset: 0,
            limit: 0,
            ..self.clone()
        }
    }

    fn keeps(&self, e: &Entry, label: Option<Verdict>) -> bool {
        let eq = |want: &Option<String>, have: &str| want.as_deref().is_none_or(|w| w == have);
        eq(&self.environment, &e.key.environment)
            && eq(&self.scaffold, &e.key.scaffold)
            && eq(&self.model, &e.key.model)
            && eq(&self.outcome, e.outcome())
            && self.exit_status.is_none_or(|x| x == e.exit_status)
            && self.min_reward.is_none_or(|m| e.reward >= m)
            && self.max_reward.is_none_or(|m| e.reward <= m)
            && self.task.as_deref().is_none_or(|t| e.key.task.contains(t))
            && match self.label.as_deref() {
                None => true,
                Some("accept") => label == Some(Verdict::Accept),
                Some("reject") => label == Some(Verdict::Reject),
                Some(_) => label.is_none(),
            }
    }
}

/// The last selection made, so that paging through a text search reads the runs once.
#[derive(Default)]
pub struct ListCache {
    last: Option<CachedSelection>,
}

/// A selection, the runs' versions it was made at, and the (run, entry) ids it selected.
struct CachedSelection {
    filter: Filter,
    versions: Vec<crate::index::Version>,
    ids: Vec<(usize, usize)>,
}

impl ListCache {
    /// The rollouts `filter` selects, as (run, entry), in its order.
    pub fn select(
        &mut self,
        runs: &[&RunIndex],
        filter: &Filter,
    ) -> Result<Vec<(usize, usize)>, StoreError> {
        let key = filter.selection_key();
        let versions: Vec<_> = runs.iter().map(|r| r.version()).collect();
        let mut ids = match &self.last {
            Some(c) if c.filter == key && c.versions == versions => c.ids.clone(),
            _ => {
                let ids = matching(runs, filter)?;
                self.last = Some(CachedSelection {
                    filter: key,
                    versions,
                    ids: ids.clone(),
                });
                ids
            }
        };
        sort(runs, &mut ids, filter.sort);
        Ok(ids)
    }
}

fn matching(runs: &[&RunIndex], filter: &Filter) -> Result<Vec<(usize, usize)>, StoreError> {
    let mut out = Vec::new();
    for (run_no, run) in runs.iter().enumerate() {
        if filter.run.is_some_and(|r| r != run_no) {
            continue;
        }
        let candidates: Vec<usize> = run
            .entries
            .iter()
            .enumerate()
            .filter(|(i, e)| filter.keeps(e, run.label(*i).map(|l| l.verdict)))
            .map(|(i, _)| i)
            .collect();
        let kept = match &filter.text {
            Some(t) => {
                // Records are JSON lines: look for the text as JSON writes it (quotes,
                // newlines and backslashes escaped).
                let json = serde_json::to_string(t).unwrap_or_default();
                let needle = &json.as_bytes()[1..json.len() - 1];
                run.search(&candidates, needle)?
            }
            None => candidates,
        };
        out.extend(kept.into_iter().map(|i| (run_no, i)));
    }
    Ok(out)
}

fn sort(runs: &[&RunIndex], ids: &mut [(usize, usize)], sort: Sort) {
    let e = |&(r, i): &(usize, usize)| &runs[r].entries[i];
    let by = |desc: bool, o: std::cmp::Ordering| if desc { o.reverse() } else { o };
    match sort {
        Sort::File => ids.sort_unstable(),
        Sort::Reward(d) => ids.sort_by(|a, b| by(d, e(a).reward.total_cmp(&e(b).reward))),
        Sort::Turns(d) => ids.sort_by(|a, b| by(d, e(a).turns.cmp(&e(b).turns))),
        Sort::Tokens(d) => ids.sort_by(|a, b| by(d, e(a).tokens.cmp(&e(b).tokens))),
        Sort::Duration(d) => ids.sort_by(|a, b| by(d, e(a).duration_ms.cmp(&e(b).duration_ms))),
        Sort::Task(d) => ids.sort_by(|a, b| {
            by(
                d,
                (&e(a).key.task, e(a).key.sample).cmp(&(&e(b).key.task, e(b).key.sample)),
            )
        }),
    }
}

/// What the filters can choose from, with counts.
#[derive(Debug, Default, Serialize)]
pub struct Facets {
    pub environment: BTreeMap<String, usize>,
    pub scaffold: BTreeMap<String, usize>,
    pub model: BTreeMap<String, usize>,
    pub outcome: BTreeMap<String, usize>,
    pub exit_status: BTreeMap<String, usize>,
}

impl Facets {
    pub fn add(&mut self, run: &RunIndex) {
        for e in &run.entries {
            *self
                .environment
                .entry(e.key.environment.clone())
                .or_default() += 1;
            *self.scaffold.entry(e.key.scaffold.clone()).or_default() += 1;
            *self.model.entry(e.key.model.clone()).or_default() += 1;
            *self.outcome.entry(e.outcome().to_string()).or_default() += 1;
            *self
                .exit_status
                .entry(e.exit_status.as_str().to_string())
                .or_default() += 1;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn params(p: &[(&str, &str)]) -> Vec<(String, String)> {
        p.iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect()
    }

    #[test]
    fn bad_parameters_are_named() {
        let e = Filter::parse(&params(&[("min_reward", "lots")])).unwrap_err();
        assert!(e.contains("`min_reward` must be a number"), "{e}");
        let e = Filter::parse(&params(&[("outcome", "great")])).unwrap_err();
        assert!(e.contains("success, failure"), "{e}");
        let e = Filter::parse(&params(&[("colour", "red")])).unwrap_err();
        assert!(e.contains("unknown parameter `colour`"), "{e}");
        let e = Filter::parse(&params(&[("exit_status", "Done")])).unwrap_err();
        assert!(e.contains("Submitted"), "{e}");
        let f = Filter::parse(&params(&[
            ("sort", "-reward"),
            ("limit", "100000"),
            ("q", "Hello"),
        ]))
        .unwrap();
        assert_eq!(f.sort, Sort::Reward(true));
        assert_eq!(f.limit, MAX_LIMIT);
        assert_eq!(f.text.as_deref(), Some("hello"));
    }
}

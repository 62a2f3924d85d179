//! The static checks a tool's steps pass before any call: variables defined before use, tables
//! that exist, no writes in a read tool.

use std::collections::BTreeSet;

use super::ast::{Expr, Step};
use super::text::placeholders;

/// Checks a tool's steps before any call: every variable is defined before use, every table
/// exists, and a read tool writes nothing. `defined` holds the parameters and constants.
pub fn check_steps(
    steps: &[Step],
    mut defined: BTreeSet<String>,
    tables: &BTreeSet<String>,
    read_only: bool,
) -> Result<(), String> {
    for (i, step) in steps.iter().enumerate() {
        let at = |e: String| format!("steps[{i}]: {e}");
        if read_only && step.writes() {
            return Err(at(
                "a tool of kind \"read\" cannot change the database; make it \"write\"".into(),
            ));
        }
        let mut exprs: Vec<&Expr> = Vec::new();
        let mut table = None;
        match step {
            Step::Let(_, e) | Step::Return(e) => exprs.push(e),
            Step::Check(e, message) => {
                exprs.push(e);
                for p in placeholders(message) {
                    let name = p.split('.').next().unwrap_or_default();
                    if !defined.contains(name) {
                        return Err(at(format!(
                            "the message uses `{{{p}}}`, but `{name}` is not defined here"
                        )));
                    }
                }
            }
            Step::Set {
                table: t,
                id,
                fields,
            } => {
                table = Some(t);
                exprs.push(id);
                exprs.extend(fields.iter().map(|(_, e)| e));
            }
            Step::Insert {
                table: t,
                id,
                record,
            } => {
                table = Some(t);
                exprs.push(id);
                exprs.push(record);
            }
            Step::Delete { table: t, id } => {
                table = Some(t);
                exprs.push(id);
            }
        }
        if let Some(t) = table {
            check_table(t, tables).map_err(at)?;
        }
        for e in exprs {
            check_expr(e, &defined, tables).map_err(at)?;
        }
        if let Step::Let(name, _) = step {
            defined.insert(name.clone());
        }
    }
    Ok(())
}

fn check_table(t: &str, tables: &BTreeSet<String>) -> Result<(), String> {
    if tables.contains(t) {
        Ok(())
    } else {
        Err(format!(
            "there is no table `{t}` in the database (tables: {})",
            tables.iter().cloned().collect::<Vec<_>>().join(", ")
        ))
    }
}

fn check_expr(
    e: &Expr,
    defined: &BTreeSet<String>,
    tables: &BTreeSet<String>,
) -> Result<(), String> {
    let all = |es: &[Expr]| es.iter().try_for_each(|e| check_expr(e, defined, tables));
    match e {
        Expr::Lit(_) => Ok(()),
        Expr::Var { name, .. } if defined.contains(name) => Ok(()),
        Expr::Var { name, .. } => Err(format!(
            "`${name}` is not a parameter, an earlier `let` or a constant"
        )),
        Expr::Array(items) => all(items),
        Expr::Object(fields) => fields
            .iter()
            .try_for_each(|(_, e)| check_expr(e, defined, tables)),
        Expr::Op(_, args) => all(args),
        Expr::Get(t, id) => {
            check_table(t, tables)?;
            check_expr(id, defined, tables)
        }
        Expr::Find(t, filter) => {
            check_table(t, tables)?;
            filter
                .iter()
                .try_for_each(|(_, e)| check_expr(e, defined, tables))
        }
        Expr::Search(t, _, text) => {
            check_table(t, tables)?;
            check_expr(text, defined, tables)
        }
        Expr::NewId(t, _) => check_table(t, tables),
        Expr::Pick(v, _) => check_expr(v, defined, tables),
    }
}

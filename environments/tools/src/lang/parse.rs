//! Parsing: a tool's JSON steps and expressions into the syntax tree, with an error sentence
//! for anything that is not the language.

use serde_json::Value;

use super::ast::{Expr, Op, Step, FORMS};

fn string_of(v: &Value, what: &str) -> Result<String, String> {
    v.as_str()
        .map(str::to_string)
        .ok_or_else(|| format!("{what} must be a string, not {v}"))
}

fn args_of<'a>(op: &str, v: &'a Value, n: usize) -> Result<&'a [Value], String> {
    match v.as_array() {
        Some(a) if a.len() == n => Ok(a),
        _ => Err(format!("`{op}` takes an array of {n} arguments")),
    }
}

/// Parses an expression.
pub fn parse_expr(v: &Value) -> Result<Expr, String> {
    match v {
        Value::String(s) if s.starts_with("$$") => Ok(Expr::Lit(Value::String(s[1..].into()))),
        Value::String(s) if s.starts_with('$') => {
            let mut parts = s[1..].split('.').map(str::to_string);
            let name = parts.next().unwrap_or_default();
            if name.is_empty() {
                return Err(format!("`{s}` names no variable"));
            }
            Ok(Expr::Var {
                name,
                path: parts.collect(),
            })
        }
        Value::Array(items) => Ok(Expr::Array(
            items.iter().map(parse_expr).collect::<Result<_, _>>()?,
        )),
        Value::Object(m) if m.len() == 1 && m.keys().all(|k| k.starts_with('$')) => {
            let (op, arg) = m.iter().next().ok_or("empty operator")?;
            parse_op(op, arg)
        }
        Value::Object(m) => Ok(Expr::Object(
            m.iter()
                .map(|(k, v)| Ok((k.clone(), parse_expr(v)?)))
                .collect::<Result<_, String>>()?,
        )),
        lit => Ok(Expr::Lit(lit.clone())),
    }
}

fn parse_fields(v: &Value, what: &str) -> Result<Vec<(String, Expr)>, String> {
    let m = v
        .as_object()
        .ok_or_else(|| format!("{what} must be an object of field: value"))?;
    m.iter()
        .map(|(k, v)| Ok((k.clone(), parse_expr(v)?)))
        .collect()
}

fn parse_names(v: &Value, what: &str) -> Result<Vec<String>, String> {
    v.as_array()
        .ok_or_else(|| format!("{what} must be an array of field names"))?
        .iter()
        .map(|f| string_of(f, what))
        .collect()
}

fn parse_op(op: &str, arg: &Value) -> Result<Expr, String> {
    match op {
        "$get" => {
            let a = args_of(op, arg, 2)?;
            Ok(Expr::Get(
                string_of(&a[0], "the table")?,
                Box::new(parse_expr(&a[1])?),
            ))
        }
        "$find" => {
            let a = args_of(op, arg, 2)?;
            Ok(Expr::Find(
                string_of(&a[0], "the table")?,
                parse_fields(&a[1], "`$find`'s filter")?,
            ))
        }
        "$search" => {
            let a = args_of(op, arg, 3)?;
            Ok(Expr::Search(
                string_of(&a[0], "the table")?,
                parse_names(&a[1], "`$search`'s fields")?,
                Box::new(parse_expr(&a[2])?),
            ))
        }
        "$new_id" => {
            let a = args_of(op, arg, 2)?;
            Ok(Expr::NewId(
                string_of(&a[0], "the table")?,
                string_of(&a[1], "the prefix")?,
            ))
        }
        "$pick" => {
            let a = args_of(op, arg, 2)?;
            Ok(Expr::Pick(
                Box::new(parse_expr(&a[0])?),
                parse_names(&a[1], "`$pick`'s fields")?,
            ))
        }
        _ => {
            let Some((_, o, arity)) = Op::ALL.iter().find(|(name, ..)| *name == op) else {
                let mut known: Vec<&str> = Op::ALL.iter().map(|(n, ..)| *n).collect();
                known.extend(FORMS);
                return Err(format!(
                    "unknown operator `{op}` (known: {})",
                    known.join(", ")
                ));
            };
            let args: Vec<Expr> = match (arg, arity) {
                (Value::Array(items), Some(n)) if items.len() == *n => {
                    items.iter().map(parse_expr).collect::<Result<_, _>>()?
                }
                (Value::Array(items), None) if !items.is_empty() => {
                    items.iter().map(parse_expr).collect::<Result<_, _>>()?
                }
                (single, Some(1)) => vec![parse_expr(single)?],
                _ => {
                    return Err(match arity {
                        Some(n) => format!("`{op}` takes an array of {n} arguments"),
                        None => format!("`{op}` takes an array of arguments"),
                    })
                }
            };
            Ok(Expr::Op(*o, args))
        }
    }
}

/// Parses one step.
pub fn parse_step(v: &Value) -> Result<Step, String> {
    let m = v
        .as_object()
        .ok_or("a step is an object such as {\"let\": ..., \"be\": ...}")?;
    let only = |allowed: &[&str]| -> Result<(), String> {
        match m.keys().find(|k| !allowed.contains(&k.as_str())) {
            Some(k) => Err(format!(
                "unexpected key `{k}` in a `{}` step (it takes {})",
                allowed[0],
                allowed.join(", ")
            )),
            None => Ok(()),
        }
    };
    let need = |k: &str| m.get(k).ok_or_else(|| format!("the step needs `{k}`"));
    if let Some(name) = m.get("let") {
        only(&["let", "be"])?;
        let name = string_of(name, "`let`")?;
        return Ok(Step::Let(name, parse_expr(need("be")?)?));
    }
    if let Some(cond) = m.get("check") {
        only(&["check", "else"])?;
        return Ok(Step::Check(
            parse_expr(cond)?,
            string_of(need("else")?, "`else`")?,
        ));
    }
    if let Some(t) = m.get("set") {
        only(&["set", "id", "fields"])?;
        return Ok(Step::Set {
            table: string_of(t, "`set`")?,
            id: parse_expr(need("id")?)?,
            fields: parse_fields(need("fields")?, "`fields`")?,
        });
    }
    if let Some(t) = m.get("insert") {
        only(&["insert", "id", "record"])?;
        return Ok(Step::Insert {
            table: string_of(t, "`insert`")?,
            id: parse_expr(need("id")?)?,
            record: parse_expr(need("record")?)?,
        });
    }
    if let Some(t) = m.get("delete") {
        only(&["delete", "id"])?;
        return Ok(Step::Delete {
            table: string_of(t, "`delete`")?,
            id: parse_expr(need("id")?)?,
        });
    }
    if let Some(r) = m.get("return") {
        only(&["return"])?;
        return Ok(Step::Return(parse_expr(r)?));
    }
    Err("a step starts with one of let, check, set, insert, delete, return".into())
}

//! The evaluator: a tool's steps run on the database (all or nothing), and expressions and
//! operators evaluated over the scope and the database.

use serde_json::{Map, Value};

use super::ast::{Expr, Op, Scope, Step};
use super::date::{format_date, parse_date};
use super::text::{fill, same, text_of, walk};

/// Runs a tool's steps on `db` (changed in place only if every step succeeds). Returns the
/// value of the `return` step (`"done"` without one), or the message of the failure.
pub fn run(steps: &[Step], mut scope: Scope, db: &mut Value) -> Result<Value, String> {
    let writes = steps.iter().any(Step::writes);
    let mut work = if writes { Some(db.clone()) } else { None };
    let mut result = Value::String("done".into());
    for step in steps {
        let current = work.as_ref().unwrap_or(db);
        match step {
            Step::Let(name, e) => {
                let v = eval(e, &scope, current)?;
                scope.insert(name.clone(), v);
            }
            Step::Check(cond, message) => {
                if !truth(&eval(cond, &scope, current)?)? {
                    return Err(fill(message, &scope));
                }
            }
            Step::Return(e) => {
                result = eval(e, &scope, current)?;
                break;
            }
            Step::Set { table, id, fields } => {
                let id = key(&eval(id, &scope, current)?)?;
                let mut values = Vec::with_capacity(fields.len());
                for (f, e) in fields {
                    values.push((f.clone(), eval(e, &scope, current)?));
                }
                let w = work.as_mut().ok_or("internal: no working copy")?;
                let record = table_mut(w, table)?
                    .get_mut(&id)
                    .and_then(Value::as_object_mut)
                    .ok_or_else(|| not_found(table, &id))?;
                for (f, v) in values {
                    record.insert(f, v);
                }
            }
            Step::Insert { table, id, record } => {
                let id = key(&eval(id, &scope, current)?)?;
                let record = eval(record, &scope, current)?;
                if !record.is_object() {
                    return Err(format!("a record for `{table}` must be an object"));
                }
                let w = work.as_mut().ok_or("internal: no working copy")?;
                let t = table_mut(w, table)?;
                if t.contains_key(&id) {
                    return Err(format!("{table} already has a record `{id}`"));
                }
                t.insert(id, record);
            }
            Step::Delete { table, id } => {
                let id = key(&eval(id, &scope, current)?)?;
                let w = work.as_mut().ok_or("internal: no working copy")?;
                table_mut(w, table)?
                    .shift_remove(&id)
                    .ok_or_else(|| not_found(table, &id))?;
            }
        }
    }
    if let Some(w) = work {
        *db = w;
    }
    Ok(result)
}

fn not_found(table: &str, id: &str) -> String {
    format!("`{id}` not found in {table}")
}

fn table<'a>(db: &'a Value, t: &str) -> Result<&'a Map<String, Value>, String> {
    db.get(t)
        .and_then(Value::as_object)
        .ok_or_else(|| format!("the database has no table `{t}`"))
}

fn table_mut<'a>(db: &'a mut Value, t: &str) -> Result<&'a mut Map<String, Value>, String> {
    db.get_mut(t)
        .and_then(Value::as_object_mut)
        .ok_or_else(|| format!("the database has no table `{t}`"))
}

/// A record id from a value: strings as they are, numbers in decimal.
fn key(v: &Value) -> Result<String, String> {
    match v {
        Value::String(s) => Ok(s.clone()),
        Value::Number(n) => Ok(n.to_string()),
        other => Err(format!("an id must be a string, not {other}")),
    }
}

fn truth(v: &Value) -> Result<bool, String> {
    v.as_bool()
        .ok_or_else(|| format!("expected true or false, got {v}"))
}

fn num(v: &Value) -> Result<f64, String> {
    v.as_f64()
        .ok_or_else(|| format!("expected a number, got {v}"))
}

/// Integer arithmetic when both sides are integers, floating point otherwise.
fn arith(
    a: &Value,
    b: &Value,
    int: fn(i64, i64) -> Option<i64>,
    float: fn(f64, f64) -> f64,
) -> Result<Value, String> {
    if let (Some(x), Some(y)) = (a.as_i64(), b.as_i64()) {
        return int(x, y)
            .map(Value::from)
            .ok_or_else(|| "integer overflow".to_string());
    }
    let r = float(num(a)?, num(b)?);
    serde_json::Number::from_f64(r)
        .map(Value::Number)
        .ok_or_else(|| format!("{r} is not a finite number"))
}

fn compare(a: &Value, b: &Value) -> Result<std::cmp::Ordering, String> {
    match (a, b) {
        (Value::Number(_), Value::Number(_)) => num(a)?
            .partial_cmp(&num(b)?)
            .ok_or_else(|| "cannot compare NaN".to_string()),
        (Value::String(x), Value::String(y)) => Ok(x.cmp(y)),
        _ => Err(format!("cannot order {a} and {b}")),
    }
}

pub(super) fn eval(e: &Expr, scope: &Scope, db: &Value) -> Result<Value, String> {
    match e {
        Expr::Lit(v) => Ok(v.clone()),
        Expr::Var { name, path } => {
            let v = scope
                .get(name)
                .ok_or_else(|| format!("`${name}` is not defined"))?;
            walk(v, path)
        }
        Expr::Array(items) => Ok(Value::Array(
            items
                .iter()
                .map(|i| eval(i, scope, db))
                .collect::<Result<_, _>>()?,
        )),
        Expr::Object(fields) => {
            let mut m = Map::new();
            for (k, v) in fields {
                m.insert(k.clone(), eval(v, scope, db)?);
            }
            Ok(Value::Object(m))
        }
        Expr::Get(t, id) => {
            let id = key(&eval(id, scope, db)?)?;
            table(db, t)?
                .get(&id)
                .cloned()
                .ok_or_else(|| not_found(t, &id))
        }
        Expr::Find(t, filter) => {
            let mut wanted = Vec::with_capacity(filter.len());
            for (f, e) in filter {
                wanted.push((f, eval(e, scope, db)?));
            }
            Ok(Value::Array(
                table(db, t)?
                    .values()
                    .filter(|r| {
                        wanted
                            .iter()
                            .all(|(f, v)| r.get(f.as_str()).is_some_and(|x| same(x, v)))
                    })
                    .cloned()
                    .collect(),
            ))
        }
        Expr::Search(t, fields, text) => {
            let needle = text_of(&eval(text, scope, db)?).trim().to_lowercase();
            if needle.is_empty() {
                return Ok(Value::Array(Vec::new()));
            }
            Ok(Value::Array(
                table(db, t)?
                    .values()
                    .filter(|r| {
                        fields.iter().any(|f| {
                            r.get(f.as_str())
                                .is_some_and(|x| text_of(x).to_lowercase().contains(&needle))
                        })
                    })
                    .cloned()
                    .collect(),
            ))
        }
        Expr::NewId(t, prefix) => {
            let ids = table(db, t)?.keys();
            let mut next = 1u64;
            let mut width = 3;
            for id in ids {
                if let Some(n) = id.strip_prefix(prefix.as_str()) {
                    if let Ok(k) = n.parse::<u64>() {
                        next = next.max(k + 1);
                        width = width.max(n.len());
                    }
                }
            }
            Ok(Value::String(format!("{prefix}{next:0width$}")))
        }
        Expr::Pick(v, fields) => {
            let pick = |r: &Value| -> Value {
                match r {
                    Value::Object(m) => Value::Object(
                        fields
                            .iter()
                            .filter_map(|f| m.get(f).map(|v| (f.clone(), v.clone())))
                            .collect(),
                    ),
                    other => other.clone(),
                }
            };
            Ok(match eval(v, scope, db)? {
                Value::Array(items) => Value::Array(items.iter().map(pick).collect()),
                other => pick(&other),
            })
        }
        Expr::Op(op, args) => eval_op(*op, args, scope, db),
    }
}

fn eval_op(op: Op, args: &[Expr], scope: &Scope, db: &Value) -> Result<Value, String> {
    // Short-circuit forms first.
    match op {
        Op::And => {
            for a in args {
                if !truth(&eval(a, scope, db)?)? {
                    return Ok(Value::Bool(false));
                }
            }
            return Ok(Value::Bool(true));
        }
        Op::Or => {
            for a in args {
                if truth(&eval(a, scope, db)?)? {
                    return Ok(Value::Bool(true));
                }
            }
            return Ok(Value::Bool(false));
        }
        Op::If => {
            let c = truth(&eval(&args[0], scope, db)?)?;
            return eval(&args[if c { 1 } else { 2 }], scope, db);
        }
        _ => {}
    }
    let v: Vec<Value> = args
        .iter()
        .map(|a| eval(a, scope, db))
        .collect::<Result<_, _>>()?;
    let ord = |f: fn(std::cmp::Ordering) -> bool| compare(&v[0], &v[1]).map(|o| Value::Bool(f(o)));
    match op {
        Op::Add => arith(&v[0], &v[1], i64::checked_add, |a, b| a + b),
        Op::Sub => arith(&v[0], &v[1], i64::checked_sub, |a, b| a - b),
        Op::Mul => arith(&v[0], &v[1], i64::checked_mul, |a, b| a * b),
        Op::Min => arith(&v[0], &v[1], |a, b| Some(a.min(b)), f64::min),
        Op::Max => arith(&v[0], &v[1], |a, b| Some(a.max(b)), f64::max),
        Op::Round => {
            let digits = v[1]
                .as_i64()
                .filter(|d| (0..=9).contains(d))
                .ok_or("`$round` takes 0 to 9 digits")?;
            let scale = 10f64.powi(digits as i32);
            let r = (num(&v[0])? * scale).round() / scale;
            serde_json::Number::from_f64(r)
                .map(Value::Number)
                .ok_or_else(|| format!("{r} is not a finite number"))
        }
        Op::Eq => Ok(Value::Bool(same(&v[0], &v[1]))),
        Op::Ne => Ok(Value::Bool(!same(&v[0], &v[1]))),
        Op::Lt => ord(|o| o.is_lt()),
        Op::Le => ord(|o| o.is_le()),
        Op::Gt => ord(|o| o.is_gt()),
        Op::Ge => ord(|o| o.is_ge()),
        Op::Not => Ok(Value::Bool(!truth(&v[0])?)),
        Op::In => match &v[1] {
            Value::Array(items) => Ok(Value::Bool(items.iter().any(|x| same(x, &v[0])))),
            Value::Object(m) => Ok(Value::Bool(m.contains_key(&text_of(&v[0])))),
            Value::String(s) => Ok(Value::Bool(s.contains(&text_of(&v[0])))),
            other => Err(format!(
                "`$in` looks in an array, object or string, not {other}"
            )),
        },
        Op::Len => match &v[0] {
            Value::Array(a) => Ok(a.len().into()),
            Value::Object(m) => Ok(m.len().into()),
            Value::String(s) => Ok(s.chars().count().into()),
            Value::Null => Ok(0.into()),
            other => Err(format!("`$len` of {other}")),
        },
        Op::Append => match &v[0] {
            Value::Array(a) => {
                let mut a = a.clone();
                a.push(v[1].clone());
                Ok(Value::Array(a))
            }
            Value::Null => Ok(Value::Array(vec![v[1].clone()])),
            other => Err(format!("`$append` to {other}, which is not an array")),
        },
        Op::Remove => match &v[0] {
            Value::Array(a) => Ok(Value::Array(
                a.iter().filter(|x| !same(x, &v[1])).cloned().collect(),
            )),
            other => Err(format!("`$remove` from {other}, which is not an array")),
        },
        Op::Concat => Ok(Value::String(v.iter().map(text_of).collect())),
        Op::Sum => {
            let items = v[0]
                .as_array()
                .ok_or_else(|| format!("`$sum` over {}, which is not an array", v[0]))?;
            let field = v[1].as_str();
            let mut total = Value::from(0);
            for it in items {
                let x = match field {
                    Some(f) => it.get(f).cloned().unwrap_or(Value::Null),
                    None => it.clone(),
                };
                total = arith(&total, &x, i64::checked_add, |a, b| a + b)?;
            }
            Ok(total)
        }
        Op::AddDays => {
            let d = parse_date(&v[0])?;
            let n = v[1]
                .as_i64()
                .ok_or_else(|| format!("`$add_days` adds a whole number of days, not {}", v[1]))?;
            Ok(Value::String(format_date(d + n)))
        }
        Op::DaysBetween => Ok(Value::from(parse_date(&v[1])? - parse_date(&v[0])?)),
        Op::And | Op::Or | Op::If => unreachable!("handled above"),
    }
}

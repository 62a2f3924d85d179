//! The little language a domain's tools are written in, so that a domain is data: a tool is a
//! list of steps over the JSON database, and a third party adds a domain with files alone.
//!
//! - **Values** are JSON. A string `"$name"` or `"$name.field.sub"` reads a variable (a
//!   parameter, an earlier `let`, or one of the domain's constants); `"$$x"` is the literal `"$x"`.
//!   An object with a single key that starts with `$` is an operator: `{"$add": [a, b]}`.
//!   Arrays and other objects are built element by element.
//! - **Steps**: `{"let": name, "be": value}`, `{"check": condition, "else": "message {var}"}`,
//!   `{"set": table, "id": value, "fields": {field: value}}`, `{"insert": table, "id": value,
//!   "record": value}`, `{"delete": table, "id": value}` and `{"return": value}`.
//! - **A tool call is all or nothing**: a failed check or lookup answers `Error: ...` and leaves
//!   the database as it was.

use std::collections::BTreeSet;

use serde_json::{Map, Value};

/// An expression over the tool's scope and the database.
#[derive(Debug, Clone, PartialEq)]
pub enum Expr {
    Lit(Value),
    Var {
        name: String,
        path: Vec<String>,
    },
    Array(Vec<Expr>),
    Object(Vec<(String, Expr)>),
    Op(Op, Vec<Expr>),
    /// `{"$get": [table, id]}`: the record, or the call fails.
    Get(String, Box<Expr>),
    /// `{"$find": [table, {field: value, ...}]}`: the records whose fields equal those values.
    Find(String, Vec<(String, Expr)>),
    /// `{"$search": [table, [fields], text]}`: the records where any of the fields contains the
    /// text, case-insensitively.
    Search(String, Vec<String>, Box<Expr>),
    /// `{"$new_id": [table, prefix]}`: the prefix and the next free number, so that replaying
    /// the same calls gives the same ids.
    NewId(String, String),
    /// `{"$pick": [value, [fields]]}`: only those fields of a record (or of each record).
    Pick(Box<Expr>, Vec<String>),
}

/// Operators over evaluated arguments.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Op {
    Add,
    Sub,
    Mul,
    Min,
    Max,
    Round,
    Eq,
    Ne,
    Lt,
    Le,
    Gt,
    Ge,
    And,
    Or,
    Not,
    If,
    In,
    Len,
    Append,
    Remove,
    Concat,
    Sum,
    AddDays,
    DaysBetween,
}

impl Op {
    /// Name and arity (`None`: any number, at least one).
    const ALL: [(&'static str, Op, Option<usize>); 24] = [
        ("$add", Op::Add, Some(2)),
        ("$sub", Op::Sub, Some(2)),
        ("$mul", Op::Mul, Some(2)),
        ("$min", Op::Min, Some(2)),
        ("$max", Op::Max, Some(2)),
        ("$round", Op::Round, Some(2)),
        ("$eq", Op::Eq, Some(2)),
        ("$ne", Op::Ne, Some(2)),
        ("$lt", Op::Lt, Some(2)),
        ("$le", Op::Le, Some(2)),
        ("$gt", Op::Gt, Some(2)),
        ("$ge", Op::Ge, Some(2)),
        ("$and", Op::And, None),
        ("$or", Op::Or, None),
        ("$not", Op::Not, Some(1)),
        ("$if", Op::If, Some(3)),
        ("$in", Op::In, Some(2)),
        ("$len", Op::Len, Some(1)),
        ("$append", Op::Append, Some(2)),
        ("$remove", Op::Remove, Some(2)),
        ("$concat", Op::Concat, None),
        ("$sum", Op::Sum, Some(2)),
        ("$add_days", Op::AddDays, Some(2)),
        ("$days_between", Op::DaysBetween, Some(2)),
    ];
}

/// The special forms, for the list of known operators in errors.
const FORMS: [&str; 5] = ["$get", "$find", "$search", "$new_id", "$pick"];

/// One step of a tool.
#[derive(Debug, Clone, PartialEq)]
pub enum Step {
    Let(String, Expr),
    /// The condition, and the message when it is false (with `{var.path}` placeholders).
    Check(Expr, String),
    Set {
        table: String,
        id: Expr,
        fields: Vec<(String, Expr)>,
    },
    Insert {
        table: String,
        id: Expr,
        record: Expr,
    },
    Delete {
        table: String,
        id: Expr,
    },
    Return(Expr),
}

impl Step {
    pub fn writes(&self) -> bool {
        matches!(
            self,
            Step::Set { .. } | Step::Insert { .. } | Step::Delete { .. }
        )
    }
}

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

/// The `{var.path}` placeholders of a message.
fn placeholders(message: &str) -> Vec<&str> {
    let mut out = Vec::new();
    let mut rest = message;
    while let Some(start) = rest.find('{') {
        let after = &rest[start + 1..];
        match after.find('}') {
            Some(end) => {
                out.push(&after[..end]);
                rest = &after[end + 1..];
            }
            None => break,
        }
    }
    out
}

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

/// Variables in scope during a call.
pub type Scope = Map<String, Value>;

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

/// The message with `{var.path}` placeholders filled from the scope.
pub fn fill(message: &str, scope: &Scope) -> String {
    let mut out = message.to_string();
    for p in placeholders(message) {
        let mut parts = p.split('.');
        let name = parts.next().unwrap_or_default();
        let path: Vec<String> = parts.map(str::to_string).collect();
        let v = scope
            .get(name)
            .map(|v| walk(v, &path).unwrap_or(Value::Null))
            .unwrap_or(Value::Null);
        out = out.replacen(&format!("{{{p}}}"), &text_of(&v), 1);
    }
    out
}

/// A value as text: strings bare, anything else as JSON.
pub fn text_of(v: &Value) -> String {
    match v {
        Value::String(s) => s.clone(),
        other => other.to_string(),
    }
}

fn walk(v: &Value, path: &[String]) -> Result<Value, String> {
    let mut cur = v;
    for seg in path {
        cur = match cur {
            Value::Object(m) => match m.get(seg) {
                Some(x) => x,
                None => return Ok(Value::Null),
            },
            Value::Array(a) => match seg.parse::<usize>().ok().and_then(|i| a.get(i)) {
                Some(x) => x,
                None => return Ok(Value::Null),
            },
            Value::Null => return Ok(Value::Null),
            other => return Err(format!("cannot read `.{seg}` of {other}")),
        };
    }
    Ok(cur.clone())
}

/// JSON equality with numbers compared by value (`1` equals `1.0`).
pub fn same(a: &Value, b: &Value) -> bool {
    match (a, b) {
        (Value::Number(x), Value::Number(y)) => x.as_f64() == y.as_f64(),
        (Value::Array(x), Value::Array(y)) => {
            x.len() == y.len() && x.iter().zip(y).all(|(a, b)| same(a, b))
        }
        (Value::Object(x), Value::Object(y)) => {
            x.len() == y.len() && x.iter().all(|(k, v)| y.get(k).is_some_and(|w| same(v, w)))
        }
        _ => a == b,
    }
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

fn eval(e: &Expr, scope: &Scope, db: &Value) -> Result<Value, String> {
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

/// Days since 1970-01-01 of a `YYYY-MM-DD` date (Howard Hinnant's civil calendar algorithm).
fn parse_date(v: &Value) -> Result<i64, String> {
    let bad = || format!("expected a date YYYY-MM-DD, got {v}");
    let s = v.as_str().ok_or_else(bad)?;
    let mut it = s.splitn(3, '-');
    let mut part = |len: usize| {
        it.next()
            .filter(|p| p.len() == len && p.bytes().all(|b| b.is_ascii_digit()))
            .and_then(|p| p.parse::<i64>().ok())
            .ok_or_else(bad)
    };
    let (y, m, d) = (part(4)?, part(2)?, part(2)?);
    if !(1..=12).contains(&m) || d < 1 || d > days_in_month(y, m) {
        return Err(bad());
    }
    let y = if m <= 2 { y - 1 } else { y };
    let era = y.div_euclid(400);
    let yoe = y - era * 400;
    let mp = (m + 9) % 12;
    let doy = (153 * mp + 2) / 5 + d - 1;
    let doe = yoe * 365 + yoe / 4 - yoe / 100 + doy;
    Ok(era * 146_097 + doe - 719_468)
}

fn days_in_month(y: i64, m: i64) -> i64 {
    match m {
        2 if (y % 4 == 0 && y % 100 != 0) || y % 400 == 0 => 29,
        2 => 28,
        4 | 6 | 9 | 11 => 30,
        _ => 31,
    }
}

fn format_date(days: i64) -> String {
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z - era * 146_097;
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let d = doy - (153 * mp + 2) / 5 + 1;
    let m = if mp < 10 { mp + 3 } else { mp - 9 };
    let y = yoe + era * 400 + i64::from(m <= 2);
    format!("{y:04}-{m:02}-{d:02}")
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;
    use serde_json::json;

    fn steps(v: Value) -> Vec<Step> {
        v.as_array()
            .unwrap()
            .iter()
            .map(|s| parse_step(s).unwrap())
            .collect()
    }

    fn scope(v: Value) -> Scope {
        v.as_object().unwrap().clone()
    }

    #[test]
    fn a_write_applies_whole_or_not_at_all() {
        let mut db = json!({"books": {"B1": {"copies": 1}}, "loans": {}});
        let tool = steps(json!([
            {"let": "b", "be": {"$get": ["books", "$book"]}},
            {"check": {"$gt": ["$b.copies", 0]}, "else": "no copies of {b.title} left"},
            {"set": "books", "id": "$book", "fields": {"copies": {"$sub": ["$b.copies", 1]}}},
            {"let": "id", "be": {"$new_id": ["loans", "L"]}},
            {"insert": "loans", "id": "$id", "record": {"book": "$book", "due": {"$add_days": ["$today", 21]}}},
            {"return": {"$get": ["loans", "$id"]}}
        ]));
        let sc = scope(json!({"book": "B1", "today": "2026-02-20"}));
        let out = run(&tool, sc.clone(), &mut db).unwrap();
        assert_eq!(out, json!({"book": "B1", "due": "2026-03-13"}));
        assert_eq!(db["books"]["B1"]["copies"], 0);
        assert!(db["loans"]["L001"].is_object());
        let before = db.clone();
        let err = run(&tool, sc, &mut db).unwrap_err();
        assert_eq!(err, "no copies of null left");
        assert_eq!(db, before);
        let err = run(&tool, scope(json!({"book": "B9", "today": "x"})), &mut db).unwrap_err();
        assert_eq!(err, "`B9` not found in books");
    }

    #[test]
    fn operators_and_errors() {
        let db = json!({"t": {"a": {"n": "Ann Lee", "x": 2}, "b": {"n": "Bo", "x": 3.5}}});
        let e = |v: Value| eval(&parse_expr(&v).unwrap(), &Scope::new(), &db);
        assert_eq!(e(json!({"$add": [1, 2]})).unwrap(), json!(3));
        assert_eq!(e(json!({"$sub": [1.5, 0.25]})).unwrap(), json!(1.25));
        assert_eq!(e(json!({"$eq": [1, 1.0]})).unwrap(), json!(true));
        assert_eq!(
            e(json!({"$sum": [{"$find": ["t", {}]}, "x"]})).unwrap(),
            json!(5.5)
        );
        assert_eq!(
            e(json!({"$pick": [{"$search": ["t", ["n"], "lee"]}, ["x"]]})).unwrap(),
            json!([{"x": 2}])
        );
        assert_eq!(
            e(json!({"$days_between": ["2024-02-27", "2024-03-02"]})).unwrap(),
            json!(4)
        );
        assert_eq!(
            e(json!({"$round": [{"$mul": [0.25, 3]}, 2]})).unwrap(),
            json!(0.75)
        );
        assert_eq!(e(json!("$$literal")).unwrap(), json!("$literal"));
        assert!(e(json!({"$lt": ["a", 1]}))
            .unwrap_err()
            .contains("cannot order"));
        assert!(e(json!({"$and": [1]}))
            .unwrap_err()
            .contains("true or false"));
        assert!(parse_expr(&json!({"$plus": [1, 2]}))
            .unwrap_err()
            .starts_with("unknown operator `$plus`"));
        assert_eq!(
            parse_expr(&json!({"$add": [1]})).unwrap_err(),
            "`$add` takes an array of 2 arguments"
        );
        assert!(parse_step(&json!({"set": "t", "id": "a", "feilds": {}}))
            .unwrap_err()
            .contains("unexpected key `feilds`"));
    }

    #[test]
    fn static_checks_find_undefined_names_tables_and_writes_in_read_tools() {
        let tables: BTreeSet<String> = ["books".to_string()].into();
        let defined: BTreeSet<String> = ["book".to_string()].into();
        let s = steps(json!([{"let": "b", "be": {"$get": ["books", "$book"]}}, {"return": "$bk"}]));
        assert_eq!(
            check_steps(&s, defined.clone(), &tables, false).unwrap_err(),
            "steps[1]: `$bk` is not a parameter, an earlier `let` or a constant"
        );
        let s = steps(json!([{"delete": "books", "id": "$book"}]));
        assert!(check_steps(&s, defined.clone(), &tables, true)
            .unwrap_err()
            .contains("kind \"read\""));
        let s = steps(json!([{"return": {"$get": ["bookz", "$book"]}}]));
        assert!(check_steps(&s, defined, &tables, false)
            .unwrap_err()
            .contains("no table `bookz`"));
    }

    proptest! {
        #[test]
        fn dates_round_trip(days in -100_000i64..100_000) {
            let s = format_date(days);
            prop_assert_eq!(parse_date(&Value::String(s)).unwrap(), days);
        }
    }
}

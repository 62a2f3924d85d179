//! Values as text and as data: message placeholders and how they are filled, a value as text,
//! a path read inside a value, and JSON equality with numbers compared by value.

use serde_json::Value;

use super::ast::Scope;

/// The `{var.path}` placeholders of a message.
pub(super) fn placeholders(message: &str) -> Vec<&str> {
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

pub(super) fn walk(v: &Value, path: &[String]) -> Result<Value, String> {
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

//! OpenEnv's WebSocket protocol as data: a server's session address, and its messages read
//! into replies and steps (an error sentence for anything that is not the protocol).

use serde_json::Value;

/// The WebSocket address of a server's sessions.
pub(crate) fn ws_url(base: &str) -> Result<String, String> {
    let base = base.trim_end_matches('/');
    if let Some(rest) = base.strip_prefix("http://") {
        Ok(format!("ws://{rest}/ws"))
    } else if let Some(rest) = base.strip_prefix("https://") {
        Ok(format!("wss://{rest}/ws"))
    } else {
        Err(format!(
            "`{base}` is not an http:// or https:// URL of an OpenEnv server"
        ))
    }
}

/// One observation message's data.
#[derive(Debug, Clone, PartialEq)]
pub(crate) struct Step {
    pub(crate) observation: Value,
    pub(crate) reward: Option<f64>,
    pub(crate) done: bool,
}

/// The server's answer to a message.
#[derive(Debug)]
pub(crate) enum Answer {
    Observation(Step),
    /// The server refused what was sent as invalid (`VALIDATION_ERROR`): the sender's fault.
    Refused(String),
}

/// A message from the server, by its `type`.
#[derive(Debug)]
pub(crate) enum Reply {
    Observation(Value),
    State(Value),
    Refused(String),
}

/// Reads one message of the protocol; anything else is an error sentence.
pub(crate) fn parse_reply(text: &str) -> Result<Reply, String> {
    let short = || text.chars().take(120).collect::<String>();
    let v: Value = serde_json::from_str(text).map_err(|e| {
        format!(
            "answered with something that is not JSON ({e}): {:?}",
            short()
        )
    })?;
    let data = v.get("data").cloned().unwrap_or(Value::Null);
    match v["type"].as_str() {
        Some("observation") => Ok(Reply::Observation(data)),
        Some("state") => Ok(Reply::State(data)),
        Some("error") => {
            let code = data["code"].as_str().unwrap_or_default();
            let message = data["message"].as_str().unwrap_or_default();
            if code == "VALIDATION_ERROR" {
                let errors = data
                    .get("errors")
                    .and_then(Value::as_array)
                    .map(|errs| {
                        errs.iter()
                            .map(|e| {
                                let at: Vec<String> = e["loc"]
                                    .as_array()
                                    .map(|l| {
                                        l.iter()
                                            .map(|p| p.to_string().trim_matches('"').to_string())
                                            .collect()
                                    })
                                    .unwrap_or_default();
                                format!(
                                    "{}: {}",
                                    at.join("."),
                                    e["msg"].as_str().unwrap_or_default()
                                )
                            })
                            .collect::<Vec<_>>()
                            .join("; ")
                    })
                    .unwrap_or_default();
                Ok(Reply::Refused(if errors.is_empty() {
                    message.to_string()
                } else {
                    errors
                }))
            } else {
                Err(format!(
                    "answered with an error ({}): {message}",
                    if code.is_empty() { "no code" } else { code }
                ))
            }
        }
        _ => Err(format!(
            "answered with a message that is not OpenEnv's protocol: {:?}",
            short()
        )),
    }
}

/// An observation message's data: `{"observation": {…}, "reward": r | null, "done": bool}`.
pub(crate) fn parse_step(data: &Value) -> Result<Step, String> {
    let observation = data
        .get("observation")
        .filter(|o| o.is_object())
        .cloned()
        .ok_or_else(|| format!("an observation message without an observation object: {data}"))?;
    let reward = match data.get("reward") {
        None | Some(Value::Null) => None,
        Some(Value::Bool(b)) => Some(f64::from(u8::from(*b))),
        Some(r) => Some(
            r.as_f64()
                .filter(|r| r.is_finite())
                .ok_or_else(|| format!("a reward that is not a number: {r}"))?,
        ),
    };
    let done = match data.get("done") {
        None | Some(Value::Null) => false,
        Some(Value::Bool(b)) => *b,
        Some(other) => return Err(format!("`done` is not true or false: {other}")),
    };
    Ok(Step {
        observation,
        reward,
        done,
    })
}

//! The `openai` model backend: chat completions over HTTP against any OpenAI-compatible server.
//!
//! Every attempt has a connect timeout and a request timeout; the model stack every model runs
//! in (`trawl_core::model_stack`: its `retry` table) adds capped exponential backoff with jitter,
//! honours Retry-After, and stops at a total deadline.
//! Errors are classified here: connection failures, timeouts, 408/409/429/5xx and unreadable
//! bodies are transient; a context-length overflow ends the episode as a truncation; other 4xx
//! are rejections that no retry can fix.

#![forbid(unsafe_code)]

use std::sync::Arc;
use std::time::{Duration, SystemTime};

use serde::Deserialize;
use serde_json::{json, Map, Value};
use trawl_core::http::{error_chain, read_capped, BodyError};
use trawl_core::model::TokenDetail;
use trawl_core::registry::{BuildContext, ComponentError, ModelConfig};
use trawl_core::values::{check_secs, secs};
use trawl_core::{
    async_trait, Completion, CompletionRequest, FinishReason, LanguageModel, Message,
    ModelDescription, ModelError, Usage,
};

/// `[[models]] type = "openai"`.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct OpenAiConfig {
    /// The server's API root, for example `http://127.0.0.1:8000/v1`; `OPENAI_BASE_URL` when
    /// unset, as the OpenAI SDKs do.
    #[serde(default)]
    pub base_url: Option<String>,
    /// The model name the server expects.
    pub model: String,
    /// The environment variable that holds the API key; when unset, `OPENAI_API_KEY` if it is
    /// set (as the OpenAI SDKs do), else no `Authorization` header.
    #[serde(default)]
    pub api_key_env: Option<String>,
    /// `tool_choice` sent when tools are offered: `auto` (the default; llama.cpp's server calls
    /// no tool without it), `required`, `none`, or `omit` to send none.
    #[serde(default)]
    pub tool_choice: ToolChoice,
    #[serde(default = "default_connect")]
    pub connect_timeout_secs: f64,
    /// Limit on one attempt, response body included.
    #[serde(default = "default_request")]
    pub request_timeout_secs: f64,
    /// The largest response body read, in bytes (default 16 MiB). A longer one is an
    /// infrastructure error, not retried: trawl's memory and the run's files stay bounded
    /// whatever a server sends.
    #[serde(default = "default_max_response_bytes")]
    pub max_response_bytes: u64,
    /// Extra fields merged into every request body (`chat_template_kwargs`, `repetition_penalty`, ...).
    #[serde(default)]
    pub extra_body: Map<String, Value>,
    /// With `logprobs = true` sampling, also ask for the prompt's and the reply's token ids
    /// (`return_token_ids: true`, vLLM 0.10.2 and later). Off by default: servers that do not
    /// know the field (OpenAI's own) refuse the request. llama.cpp's server gives the reply's ids
    /// in its logprobs without it.
    #[serde(default)]
    pub return_token_ids: bool,
}

fn default_max_response_bytes() -> u64 {
    16 << 20
}

/// The `tool_choice` a request carries when tools are offered.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum ToolChoice {
    /// The model decides (llama.cpp's server calls no tool without it).
    #[default]
    Auto,
    /// The model must call a tool.
    Required,
    /// The model must not call a tool.
    None,
    /// Send no `tool_choice` at all (servers that refuse the field).
    Omit,
}

impl ToolChoice {
    /// The value sent, or `None` for [`ToolChoice::Omit`].
    fn sent(self) -> Option<&'static str> {
        match self {
            ToolChoice::Auto => Some("auto"),
            ToolChoice::Required => Some("required"),
            ToolChoice::None => Some("none"),
            ToolChoice::Omit => None,
        }
    }
}

fn default_connect() -> f64 {
    10.0
}
fn default_request() -> f64 {
    300.0
}

impl ModelConfig for OpenAiConfig {
    fn build(self, _: &BuildContext) -> Result<Arc<dyn LanguageModel>, ComponentError> {
        let base_url = match self.base_url.clone() {
            Some(u) => u,
            None => std::env::var("OPENAI_BASE_URL").map_err(|_| {
                ComponentError::at(
                    "base_url",
                    "missing: set base_url (for example http://127.0.0.1:8000/v1) or export OPENAI_BASE_URL",
                )
            })?,
        };
        let url = reqwest::Url::parse(&base_url).map_err(|e| {
            ComponentError::at("base_url", format!("`{base_url}` is not a URL: {e}"))
        })?;
        if self.max_response_bytes < 1024 {
            return Err(ComponentError::at(
                "max_response_bytes",
                "must be at least 1024 bytes",
            ));
        }
        if !matches!(url.scheme(), "http" | "https") {
            return Err(ComponentError::at(
                "base_url",
                "must start with http:// or https://",
            ));
        }
        let api_key = match &self.api_key_env {
            None => std::env::var("OPENAI_API_KEY")
                .ok()
                .filter(|k| !k.is_empty()),
            Some(var) => Some(std::env::var(var).map_err(|_| {
                ComponentError::at(
                    "api_key_env",
                    format!(
                        "environment variable `{var}` is not set; export it or remove api_key_env"
                    ),
                )
            })?),
        };
        for (field, v) in [
            ("connect_timeout_secs", self.connect_timeout_secs),
            ("request_timeout_secs", self.request_timeout_secs),
        ] {
            check_secs(v, false).map_err(|m| ComponentError::at(field, m))?;
        }
        let client = reqwest::Client::builder()
            .connect_timeout(secs(self.connect_timeout_secs))
            .timeout(secs(self.request_timeout_secs))
            .pool_idle_timeout(Duration::from_secs(90))
            .build()
            .map_err(|e| ComponentError::new(format!("cannot build HTTP client: {e}")))?;
        let base = base_url.trim_end_matches('/');
        let endpoint = if base.ends_with("/chat/completions") {
            base.to_string()
        } else {
            format!("{base}/chat/completions")
        };
        let model = OpenAiModel {
            client,
            models_url: format!("{}/models", endpoint.trim_end_matches("/chat/completions")),
            endpoint,
            api_key,
            model: self.model,
            tool_choice: self.tool_choice.sent(),
            max_response_bytes: self.max_response_bytes,
            extra_body: self.extra_body,
            return_token_ids: self.return_token_ids,
        };
        // Retries, the concurrency limit and the episode's deadline come from the model stack
        // every model runs in (trawl_core::model_stack), around this backend.
        Ok(Arc::new(model))
    }
}

trawl_core::register!(
    model,
    "openai",
    "Any OpenAI-compatible chat-completions server (vLLM, SGLang, llama.cpp server, OpenAI)",
    OpenAiConfig
);

/// One attempt at a time; the model stack retries it.
pub struct OpenAiModel {
    client: reqwest::Client,
    endpoint: String,
    /// `GET` lists the server's models (`trawl check --ping`).
    models_url: String,
    api_key: Option<String>,
    model: String,
    tool_choice: Option<&'static str>,
    max_response_bytes: u64,
    extra_body: Map<String, Value>,
    return_token_ids: bool,
}

impl OpenAiModel {
    /// The JSON body of a chat-completions request.
    pub fn request_body(&self, request: &CompletionRequest) -> Value {
        let mut b = Map::new();
        b.insert("model".into(), json!(self.model));
        b.insert(
            "messages".into(),
            trawl_core::wire_messages(&request.messages),
        );
        let s = &request.sampling;
        if !request.tools.is_empty() {
            b.insert("tools".into(), json!(request.tools));
            if let Some(choice) = &self.tool_choice {
                b.insert("tool_choice".into(), json!(choice));
            }
        }
        let mut put = |k: &str, v: Option<Value>| {
            if let Some(v) = v {
                b.insert(k.into(), v);
            }
        };
        put("temperature", s.temperature.map(Value::from));
        put("top_p", s.top_p.map(Value::from));
        put("top_k", s.top_k.map(Value::from));
        put("min_p", s.min_p.map(Value::from));
        put("max_tokens", s.max_tokens.map(Value::from));
        put("seed", s.seed.map(Value::from));
        put("stop", (!s.stop.is_empty()).then(|| json!(s.stop)));
        put("logprobs", s.logprobs.then_some(Value::Bool(true)));
        put(
            "return_token_ids",
            (s.logprobs && self.return_token_ids).then_some(Value::Bool(true)),
        );
        for (k, v) in &self.extra_body {
            b.insert(k.clone(), v.clone());
        }
        Value::Object(b)
    }
}

/// How long the server asked us to wait: delta-seconds or an HTTP date.
fn retry_after(headers: &reqwest::header::HeaderMap) -> Option<Duration> {
    let v = headers
        .get(reqwest::header::RETRY_AFTER)?
        .to_str()
        .ok()?
        .trim();
    if let Ok(secs) = v.parse::<f64>() {
        return (secs.is_finite() && secs >= 0.0).then(|| Duration::from_secs_f64(secs.min(1e9)));
    }
    let at = httpdate::parse_http_date(v).ok()?;
    Some(
        at.duration_since(SystemTime::now())
            .unwrap_or(Duration::ZERO),
    )
}

const CONTEXT_MARKERS: [&str; 8] = [
    "context_length_exceeded",
    "maximum context length",
    "context length",
    "context window",
    "prompt is too long",
    "too many tokens",
    "exceeds the context",
    "longer than the model",
];

fn is_context_overflow(body: &str) -> bool {
    let lower = body.to_lowercase();
    CONTEXT_MARKERS.iter().any(|m| lower.contains(m))
}

/// A short form of an error body for messages.
fn brief(body: &str) -> String {
    let b = body.trim();
    let cut: String = b.chars().take(300).collect();
    if cut.len() < b.len() {
        format!("{cut}…")
    } else {
        cut
    }
}

/// Turns a 200 response body into a completion. Unreadable bodies are transient: a proxy or an
/// overloaded server sends those, and the next attempt usually succeeds.
pub fn parse_completion(body: &str) -> Result<Completion, ModelError> {
    let v: Value = serde_json::from_str(body).map_err(|e| ModelError::Transient {
        message: format!("response is not JSON ({e}): {}", brief(body)),
        retry_after: None,
    })?;
    let choice = v
        .get("choices")
        .and_then(|c| c.get(0))
        .ok_or_else(|| ModelError::Transient {
            message: format!("response has no choices: {}", brief(body)),
            retry_after: None,
        })?;
    let message: Message = serde_json::from_value(
        choice.get("message").cloned().unwrap_or(Value::Null),
    )
    .map_err(|e| ModelError::Transient {
        message: format!("response message is malformed ({e}): {}", brief(body)),
        retry_after: None,
    })?;
    let finish_reason = FinishReason::parse(
        choice
            .get("finish_reason")
            .and_then(Value::as_str)
            .unwrap_or("stop"),
    );
    let usage = v.get("usage");
    let count = |k: &str| {
        usage
            .and_then(|u| u.get(k))
            .and_then(Value::as_u64)
            .unwrap_or(0)
    };
    let items: &[Value] = choice
        .get("logprobs")
        .and_then(|l| l.get("content"))
        .and_then(Value::as_array)
        .map(Vec::as_slice)
        .unwrap_or_default();
    let logprobs: Vec<f32> = items
        .iter()
        .filter_map(|t| t.get("logprob").and_then(Value::as_f64))
        .map(|x| x as f32)
        .collect();
    let ids = |v: Option<&Value>| -> Vec<u32> {
        v.and_then(Value::as_array)
            .map(|a| {
                a.iter()
                    .filter_map(|x| x.as_u64().and_then(|x| u32::try_from(x).ok()))
                    .collect()
            })
            .unwrap_or_default()
    };
    // vLLM (`return_token_ids`): the prompt's ids beside the choices, the reply's in the choice.
    let prompt_ids = ids(v.get("prompt_token_ids"));
    let mut completion_ids = ids(choice.get("token_ids"));
    if completion_ids.is_empty() {
        // llama.cpp's server: each logprob entry carries its token's `id`. Taken only when every
        // entry has one, so ids and logprobs stay aligned.
        let from_items: Vec<u32> = items
            .iter()
            .filter_map(|t| {
                t.get("id")
                    .and_then(Value::as_u64)
                    .and_then(|x| u32::try_from(x).ok())
            })
            .collect();
        if from_items.len() == items.len() {
            completion_ids = from_items;
        }
    }
    let tokens = TokenDetail {
        prompt_ids,
        completion_ids,
        logprobs,
    };
    Ok(Completion {
        message,
        finish_reason,
        usage: Usage {
            prompt_tokens: count("prompt_tokens"),
            completion_tokens: count("completion_tokens"),
            model_calls: 1,
        },
        tokens: (!tokens.is_empty()).then_some(tokens),
    })
}

impl OpenAiModel {
    /// Reads the body up to `max_response_bytes` ([`read_capped`]: chunk by chunk, refused as
    /// soon as it is known to be larger, never read whole).
    async fn read_body(&self, response: reqwest::Response) -> Result<String, ModelError> {
        match read_capped(response, self.max_response_bytes).await {
            Ok(body) => Ok(String::from_utf8_lossy(&body).into_owned()),
            Err(e @ BodyError::TooLarge { .. }) => Err(ModelError::Backend(format!(
                "the server at {} {e}, over max_response_bytes; raise it in the model table if such replies are expected",
                self.endpoint
            ))),
            Err(e) => Err(ModelError::Transient {
                message: format!("the server at {} {e}", self.endpoint),
                retry_after: None,
            }),
        }
    }
}

#[async_trait]
impl LanguageModel for OpenAiModel {
    fn describe(&self) -> ModelDescription {
        ModelDescription {
            kind: "openai".into(),
            model_id: self.model.clone(),
        }
    }

    async fn complete(&self, request: &CompletionRequest) -> Result<Completion, ModelError> {
        let mut http = self
            .client
            .post(&self.endpoint)
            .json(&self.request_body(request));
        if let Some(key) = &self.api_key {
            http = http.bearer_auth(key);
        }
        let response = http.send().await.map_err(|e| ModelError::Transient {
            message: format!("request to {} failed: {}", self.endpoint, error_chain(&e)),
            retry_after: None,
        })?;
        let status = response.status();
        let wait = retry_after(response.headers());
        let body = self.read_body(response).await?;
        match status.as_u16() {
            200..=299 => parse_completion(&body),
            408 | 409 | 429 | 500..=599 => Err(ModelError::Transient {
                message: format!("HTTP {status}: {}", brief(&body)),
                retry_after: wait,
            }),
            400 | 413 | 422 if is_context_overflow(&body) => {
                Err(ModelError::ContextLength(brief(&body)))
            }
            code => Err(ModelError::Rejected {
                status: code,
                message: brief(&body),
            }),
        }
    }

    async fn list_models(&self) -> Result<Option<Vec<String>>, ModelError> {
        let mut http = self.client.get(&self.models_url);
        if let Some(key) = &self.api_key {
            http = http.bearer_auth(key);
        }
        let response = http.send().await.map_err(|e| ModelError::Transient {
            message: format!("request to {} failed: {}", self.models_url, error_chain(&e)),
            retry_after: None,
        })?;
        let status = response.status();
        let body = self.read_body(response).await?;
        if !status.is_success() {
            return Err(ModelError::Rejected {
                status: status.as_u16(),
                message: brief(&body),
            });
        }
        let ids = serde_json::from_str::<Value>(&body)
            .ok()
            .and_then(|v| {
                v.get("data").and_then(Value::as_array).map(|items| {
                    items
                        .iter()
                        .filter_map(|m| m.get("id").and_then(Value::as_str).map(str::to_string))
                        .collect::<Vec<_>>()
                })
            })
            .ok_or_else(|| {
                ModelError::Backend(format!(
                    "{} did not answer with an OpenAI model list ({{\"data\": [{{\"id\": ...}}]}}): {}",
                    self.models_url,
                    brief(&body)
                ))
            })?;
        Ok(Some(ids))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_tool_calls_usage_and_reasoning() {
        let body = r#"{"choices":[{"message":{"role":"assistant","content":null,"reasoning_content":"think","tool_calls":[{"id":"a","type":"function","function":{"name":"calculator","arguments":"{\"expression\":\"1+1\"}"}}]},"finish_reason":"tool_calls"}],"usage":{"prompt_tokens":11,"completion_tokens":7}}"#;
        let c = parse_completion(body).unwrap();
        assert_eq!(c.finish_reason, FinishReason::ToolCalls);
        assert_eq!(c.message.tool_calls[0].function.name, "calculator");
        assert_eq!(c.message.reasoning_content.as_deref(), Some("think"));
        assert_eq!((c.usage.prompt_tokens, c.usage.completion_tokens), (11, 7));
    }

    #[test]
    fn garbage_and_empty_bodies_are_transient() {
        assert!(matches!(
            parse_completion("<html>bad gateway</html>"),
            Err(ModelError::Transient { .. })
        ));
        assert!(matches!(
            parse_completion(r#"{"choices":[]}"#),
            Err(ModelError::Transient { .. })
        ));
    }

    #[test]
    fn context_overflow_is_recognised() {
        assert!(is_context_overflow(
            r#"{"error":{"code":"context_length_exceeded"}}"#
        ));
        assert!(is_context_overflow(
            "This model's maximum context length is 4096 tokens"
        ));
        assert!(!is_context_overflow("invalid temperature"));
    }

    #[test]
    fn token_ids_come_from_vllm_fields_or_llama_cpp_logprob_ids() {
        let message = json!({"role": "assistant", "content": "hi there"});
        let vllm = json!({
            "prompt_token_ids": [1, 2, 3],
            "choices": [{"message": message, "finish_reason": "stop", "token_ids": [7, 8],
                "logprobs": {"content": [{"token": "hi", "logprob": -0.5}, {"token": " there", "logprob": -1.0}]}}],
        });
        let t = parse_completion(&vllm.to_string()).unwrap().tokens.unwrap();
        assert_eq!(
            (t.prompt_ids, t.completion_ids, t.logprobs),
            (vec![1, 2, 3], vec![7, 8], vec![-0.5, -1.0])
        );
        let llama_cpp = json!({
            "choices": [{"message": message, "finish_reason": "stop",
                "logprobs": {"content": [{"id": 9, "token": "hi", "logprob": -0.5}, {"id": 10, "token": " there", "logprob": -1.0}]}}],
        });
        let t = parse_completion(&llama_cpp.to_string())
            .unwrap()
            .tokens
            .unwrap();
        assert_eq!((t.prompt_ids.len(), t.completion_ids), (0, vec![9, 10]));
        let plain = json!({"choices": [{"message": message, "finish_reason": "stop"}]});
        assert!(parse_completion(&plain.to_string())
            .unwrap()
            .tokens
            .is_none());
    }

    #[test]
    fn request_body_carries_sampling_and_extras() {
        let m = OpenAiModel {
            client: reqwest::Client::new(),
            endpoint: String::new(),
            models_url: String::new(),
            api_key: None,
            model: "m".into(),
            tool_choice: Some("auto"),
            max_response_bytes: 1 << 20,
            extra_body: [("repetition_penalty".to_string(), json!(1.1))]
                .into_iter()
                .collect(),
            return_token_ids: true,
        };
        let req = CompletionRequest {
            messages: vec![Message::user("hi")],
            tools: vec![],
            sampling: trawl_core::Sampling {
                temperature: Some(0.5),
                seed: Some(3),
                stop: vec!["\n".into()],
                ..Default::default()
            },
        };
        let b = m.request_body(&req);
        assert_eq!(b["temperature"], 0.5);
        assert_eq!(b["seed"], 3);
        assert_eq!(b["stop"][0], "\n");
        assert_eq!(b["repetition_penalty"], 1.1);
        assert!(b.get("tools").is_none() && b.get("top_p").is_none());
        // Token ids are asked for only with logprobs.
        assert!(b.get("return_token_ids").is_none());
        let mut with_logprobs = req.clone();
        with_logprobs.sampling.logprobs = true;
        let b = m.request_body(&with_logprobs);
        assert_eq!(
            (&b["logprobs"], &b["return_token_ids"]),
            (&json!(true), &json!(true))
        );
    }
}

//! The `llama` model backend: GGUF models in-process on llama.cpp (through the `llama-cpp-2`
//! crate). It is trawl's default model: a config that names no model runs on
//! SmolLM2-135M-Instruct, fetched once into trawl's cache.
//!
//! One model per (file, context settings) is loaded per process and shared by every episode.
//! Requests from concurrent episodes are decoded together in one llama.cpp batch (continuous
//! batching); prompts are rendered with the model's own Jinja chat template; sampling is done in
//! Rust from a per-request seed, so greedy decoding is deterministic and a seed reproduces a
//! sample whatever else is in the batch.

#![forbid(unsafe_code)]

pub mod fetch;
pub mod sampler;
pub mod template;
pub mod worker;

use std::collections::HashMap;
use std::path::PathBuf;
use std::sync::{Arc, Mutex, OnceLock, Weak};

use serde::Deserialize;
use trawl_core::model::TokenDetail;
use trawl_core::registry::{BuildContext, ComponentError, ModelConfig};
use trawl_core::{
    async_trait, Completion, CompletionRequest, FinishReason, LanguageModel, Message,
    ModelDescription, ModelError, Usage,
};

use crate::sampler::SamplerParams;
use crate::template::ChatTemplate;
use crate::worker::{Request, Worker, WorkerConfig};

/// `[[models]] type = "llama"`.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct LlamaConfig {
    /// A GGUF file; the default model (SmolLM2-135M-Instruct Q4_1) when unset.
    #[serde(default)]
    pub path: Option<String>,
    /// Sequences decoded together in one batch.
    #[serde(default = "default_parallel")]
    pub parallel: u32,
    /// Context of one sequence (prompt + completion), in tokens.
    #[serde(default = "default_context")]
    pub context_size: u32,
    /// Most tokens in one decode step (prompt chunks and generated tokens together).
    #[serde(default = "default_batch")]
    pub batch_size: u32,
    /// CPU threads; all cores when unset.
    #[serde(default)]
    pub threads: Option<u32>,
    /// Layers offloaded to the GPU (with the `cuda` feature); all of them by default there.
    #[serde(default)]
    pub gpu_layers: Option<u32>,
    /// A Jinja chat template to use instead of the model's own.
    #[serde(default)]
    pub chat_template: Option<String>,
    /// Completion cap when the sampling settings give none.
    #[serde(default = "default_max_tokens")]
    pub default_max_tokens: u32,
    /// Keep each finished sequence in its slot's KV cache, so that a request sharing its prompt
    /// prefix (the next turn of a conversation, the same system prompt) decodes only the rest.
    #[serde(default = "default_prefix_cache")]
    pub prefix_cache: bool,
}

fn default_prefix_cache() -> bool {
    true
}

fn default_parallel() -> u32 {
    8
}
fn default_context() -> u32 {
    4096
}
fn default_batch() -> u32 {
    512
}
fn default_max_tokens() -> u32 {
    512
}

impl Default for LlamaConfig {
    fn default() -> Self {
        LlamaConfig {
            path: None,
            parallel: default_parallel(),
            context_size: default_context(),
            batch_size: default_batch(),
            threads: None,
            gpu_layers: None,
            chat_template: None,
            default_max_tokens: default_max_tokens(),
            prefix_cache: default_prefix_cache(),
        }
    }
}

/// Loaded models, so that two configs naming the same file share one copy.
fn loaded() -> &'static Mutex<HashMap<WorkerConfig, Weak<Worker>>> {
    static LOADED: OnceLock<Mutex<HashMap<WorkerConfig, Weak<Worker>>>> = OnceLock::new();
    LOADED.get_or_init(Default::default)
}

impl LlamaConfig {
    /// Loads (or reuses) the model and returns the backend.
    pub fn load(&self, cx: &BuildContext) -> Result<LlamaLanguageModel, ComponentError> {
        for (field, v) in [
            ("parallel", self.parallel),
            ("context_size", self.context_size),
            ("batch_size", self.batch_size),
        ] {
            if v == 0 {
                return Err(ComponentError::at(field, "must be at least 1"));
            }
        }
        let path = match &self.path {
            Some(p) => {
                let path = cx.resolve(p);
                if !path.exists() {
                    return Err(ComponentError::at(
                        "path",
                        format!("model file {} does not exist", path.display()),
                    ));
                }
                fetch::check_gguf(&path).map_err(|e| ComponentError::at("path", e))?;
                path
            }
            None => fetch::default_model().map_err(ComponentError::new)?,
        };
        let threads = self.threads.map_or_else(
            || {
                std::thread::available_parallelism()
                    .map(|n| n.get() as i32)
                    .unwrap_or(2)
            },
            |t| t.max(1) as i32,
        );
        let gpu_layers = self
            .gpu_layers
            .unwrap_or(if cfg!(feature = "cuda") { 999 } else { 0 });
        let config = WorkerConfig {
            path: path.clone(),
            parallel: self.parallel,
            context_size: self.context_size,
            batch_size: self.batch_size.max(self.parallel),
            threads,
            gpu_layers,
            prefix_cache: self.prefix_cache,
        };
        let worker = {
            let mut map = loaded().lock().unwrap_or_else(|p| p.into_inner());
            match map.get(&config).and_then(Weak::upgrade) {
                Some(w) => w,
                None => {
                    let w = Arc::new(
                        Worker::start(config.clone()).map_err(|e| ComponentError::at("path", e))?,
                    );
                    map.insert(config, Arc::downgrade(&w));
                    w
                }
            }
        };
        let source = match &self.chat_template {
            Some(t) => t.clone(),
            None => worker.info.chat_template.clone().ok_or_else(|| {
                ComponentError::at(
                    "chat_template",
                    format!(
                        "{} has no tokenizer.chat_template; give one with chat_template = \"...\"",
                        path.display()
                    ),
                )
            })?,
        };
        let template = ChatTemplate::new(&source, &worker.info.bos, &worker.info.eos)
            .map_err(|e| ComponentError::at("chat_template", e.to_string()))?;
        let model_id = path
            .file_name()
            .map(|n| n.to_string_lossy().into_owned())
            .unwrap_or_default();
        Ok(LlamaLanguageModel {
            worker,
            template,
            model_id,
            default_max_tokens: self.default_max_tokens as usize,
        })
    }
}

impl ModelConfig for LlamaConfig {
    fn build(self, cx: &BuildContext) -> Result<Arc<dyn LanguageModel>, ComponentError> {
        Ok(Arc::new(self.load(cx)?))
    }
}

trawl_core::register!(model, "llama", "GGUF models in-process on llama.cpp, batched; the default (SmolLM2-135M-Instruct) when a config names no model", LlamaConfig);

/// A loaded GGUF model.
pub struct LlamaLanguageModel {
    worker: Arc<Worker>,
    template: ChatTemplate,
    model_id: String,
    default_max_tokens: usize,
}

impl LlamaLanguageModel {
    /// The prompt text for a request, as the model's chat template renders it.
    pub fn render(&self, request: &CompletionRequest) -> Result<String, ModelError> {
        self.template
            .render(&request.messages, &request.tools)
            .map_err(|e| ModelError::Backend(e.to_string()))
    }

    /// The file the model was loaded from.
    pub fn path(&self) -> &PathBuf {
        &self.worker.config.path
    }
}

#[async_trait]
impl LanguageModel for LlamaLanguageModel {
    fn describe(&self) -> ModelDescription {
        ModelDescription {
            kind: "llama".into(),
            model_id: self.model_id.clone(),
        }
    }

    async fn complete(&self, request: &CompletionRequest) -> Result<Completion, ModelError> {
        let prompt = self.render(request)?;
        let s = &request.sampling;
        let params = SamplerParams {
            temperature: s.temperature.unwrap_or(0.7) as f32,
            top_k: s.top_k.unwrap_or(0) as usize,
            top_p: s.top_p.unwrap_or(1.0) as f32,
            min_p: s.min_p.unwrap_or(0.0) as f32,
            seed: s.seed.unwrap_or(0),
        };
        let (tx, rx) = tokio::sync::oneshot::channel();
        self.worker.submit(Request {
            prompt,
            params,
            max_tokens: s.max_tokens.map_or(self.default_max_tokens, |m| m as usize),
            stop: s.stop.clone(),
            reply: tx,
        })?;
        let generation = rx.await.map_err(|_| {
            ModelError::Backend("the llama.cpp decoding thread dropped the request".into())
        })??;
        let (content, tool_calls) = if request.tools.is_empty() {
            (generation.text.clone(), Vec::new())
        } else {
            template::parse_tool_calls(&generation.text, "call_")
        };
        let finish_reason = if tool_calls.is_empty() {
            generation.finish.clone()
        } else {
            FinishReason::ToolCalls
        };
        let mut message = Message::assistant(content);
        message.tool_calls = tool_calls;
        Ok(Completion {
            message,
            finish_reason,
            usage: Usage {
                prompt_tokens: generation.prompt_ids.len() as u64,
                completion_tokens: generation.completion_ids.len() as u64,
                model_calls: 1,
            },
            tokens: s.logprobs.then_some(TokenDetail {
                prompt_ids: generation.prompt_ids,
                completion_ids: generation.completion_ids,
                logprobs: generation.logprobs,
            }),
        })
    }
}

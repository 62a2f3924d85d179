//! The decoding thread: owns the llama.cpp model and context and runs continuous batching.
//! Every step decodes one batch holding the next token of every generating sequence plus chunks
//! of newly admitted prompts; sequences join and leave between steps. Each sequence has its own
//! KV-cache stream (`kv_unified = false`), so its attention sees only its own tokens, exactly as
//! if it ran alone.

use std::collections::VecDeque;
use std::num::NonZeroU32;
use std::path::PathBuf;
use std::sync::mpsc;
use std::sync::OnceLock;

use llama_cpp_2::context::params::LlamaContextParams;
use llama_cpp_2::llama_backend::LlamaBackend;
use llama_cpp_2::llama_batch::LlamaBatch;
use llama_cpp_2::model::params::LlamaModelParams;
use llama_cpp_2::model::LlamaModel;
use llama_cpp_2::token::LlamaToken;
use tokio::sync::oneshot;
use trawl_core::{FinishReason, ModelError};

use crate::sampler::{sample, Rng, SamplerParams};

/// One generation request.
pub struct Request {
    pub prompt: String,
    pub params: SamplerParams,
    pub max_tokens: usize,
    pub stop: Vec<String>,
    pub reply: oneshot::Sender<Result<Generation, ModelError>>,
}

/// What a request produced.
#[derive(Debug, Clone)]
pub struct Generation {
    pub prompt_ids: Vec<u32>,
    pub completion_ids: Vec<u32>,
    pub logprobs: Vec<f32>,
    pub text: String,
    pub finish: FinishReason,
}

/// How to load the model and size the context.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct WorkerConfig {
    pub path: PathBuf,
    /// Sequences decoded together.
    pub parallel: u32,
    /// Context (prompt + completion) of one sequence, in tokens.
    pub context_size: u32,
    /// Most tokens in one decode step.
    pub batch_size: u32,
    pub threads: i32,
    pub gpu_layers: u32,
    /// Reuse a free slot's cached prefix (see `LlamaConfig::prefix_cache`).
    pub prefix_cache: bool,
}

/// What the thread learned from the model file.
#[derive(Debug, Clone)]
pub struct ModelInfo {
    pub chat_template: Option<String>,
    pub bos: String,
    pub eos: String,
    pub n_ctx_train: u32,
}

/// A handle on the decoding thread; the thread ends when the last handle is dropped.
pub struct Worker {
    tx: mpsc::Sender<Request>,
    pub info: ModelInfo,
    pub config: WorkerConfig,
}

fn backend() -> Result<&'static LlamaBackend, String> {
    static BACKEND: OnceLock<Result<LlamaBackend, String>> = OnceLock::new();
    BACKEND
        .get_or_init(|| {
            // llama.cpp's own logging goes to `tracing` (visible with -vv), not straight to stderr.
            llama_cpp_2::send_logs_to_tracing(llama_cpp_2::LogOptions::default());
            LlamaBackend::init().map_err(|e| format!("cannot initialise llama.cpp: {e}"))
        })
        .as_ref()
        .map_err(Clone::clone)
}

impl Worker {
    /// Loads the model on a new thread; returns once it is loaded (or failed to load).
    pub fn start(config: WorkerConfig) -> Result<Self, String> {
        let backend = backend()?;
        let (tx, rx) = mpsc::channel::<Request>();
        let (ready_tx, ready_rx) = mpsc::channel::<Result<ModelInfo, String>>();
        let cfg = config.clone();
        std::thread::Builder::new()
            .name("llama-decode".into())
            .spawn(move || run(backend, cfg, rx, ready_tx))
            .map_err(|e| format!("cannot start the decoding thread: {e}"))?;
        let info = ready_rx
            .recv()
            .map_err(|_| "the decoding thread stopped while loading the model".to_string())??;
        Ok(Worker { tx, info, config })
    }

    /// Queues a request; the reply arrives on its channel.
    pub fn submit(&self, request: Request) -> Result<(), ModelError> {
        self.tx
            .send(request)
            .map_err(|_| ModelError::Backend("the llama.cpp decoding thread has stopped".into()))
    }
}

struct Sequence {
    request: Request,
    prompt: Vec<LlamaToken>,
    prefilled: usize,
    /// Tokens in this sequence's KV cache.
    n_past: i32,
    next: Option<LlamaToken>,
    completion: Vec<u32>,
    logprobs: Vec<f32>,
    bytes: Vec<u8>,
    rng: Rng,
    /// Index in the current batch whose logits belong to this sequence.
    logits_at: Option<i32>,
}

impl Sequence {
    /// The tokens in this sequence's KV cache: the prompt, then the completion tokens fed back.
    fn in_cache(&self) -> Vec<LlamaToken> {
        self.prompt
            .iter()
            .copied()
            .chain(self.completion.iter().map(|&t| LlamaToken(t as i32)))
            .take(self.n_past.max(0) as usize)
            .collect()
    }
}

/// How many leading tokens two sequences share.
fn common_prefix(a: &[LlamaToken], b: &[LlamaToken]) -> usize {
    a.iter().zip(b).take_while(|(x, y)| x == y).count()
}

fn run(
    backend: &'static LlamaBackend,
    cfg: WorkerConfig,
    rx: mpsc::Receiver<Request>,
    ready: mpsc::Sender<Result<ModelInfo, String>>,
) {
    let params = LlamaModelParams::default().with_n_gpu_layers(cfg.gpu_layers);
    let model = match LlamaModel::load_from_file(backend, &cfg.path, &params) {
        Ok(m) => m,
        Err(e) => {
            let _ = ready.send(Err(format!(
                "llama.cpp could not load {}: {e} (is it a complete GGUF file of an architecture llama.cpp supports?)",
                cfg.path.display()
            )));
            return;
        }
    };
    let n_ctx = cfg.parallel.saturating_mul(cfg.context_size);
    let ctx_params = LlamaContextParams::default()
        .with_n_ctx(NonZeroU32::new(n_ctx))
        .with_n_batch(cfg.batch_size)
        .with_n_ubatch(cfg.batch_size)
        .with_n_seq_max(cfg.parallel)
        .with_kv_unified(false)
        .with_n_threads(cfg.threads)
        .with_n_threads_batch(cfg.threads);
    let mut ctx = match model.new_context(backend, ctx_params) {
        Ok(c) => c,
        Err(e) => {
            let _ = ready.send(Err(format!(
                "llama.cpp could not create a context of {} × {} tokens: {e}; lower `parallel` or `context_size`",
                cfg.parallel, cfg.context_size
            )));
            return;
        }
    };
    let vocab = model.vocab();
    let piece =
        |t: LlamaToken| String::from_utf8_lossy(&vocab.token_to_piece(t, true, None)).into_owned();
    let info = ModelInfo {
        chat_template: model.meta_val_str("tokenizer.chat_template").ok(),
        bos: piece(vocab.bos()),
        eos: piece(vocab.eos()),
        n_ctx_train: model.n_ctx_train(),
    };
    if ready.send(Ok(info)).is_err() {
        return;
    }

    let mut batch = LlamaBatch::new(cfg.batch_size as usize, 1);
    let mut slots: Vec<Option<Sequence>> = (0..cfg.parallel).map(|_| None).collect();
    // What each free slot's KV cache holds, position by position.
    let mut cached: Vec<Vec<LlamaToken>> = (0..cfg.parallel).map(|_| Vec::new()).collect();
    // When each slot last took a request.
    let mut last_used: Vec<u64> = vec![0; cfg.parallel as usize];
    let mut uses = 0u64;
    let mut queue: VecDeque<Request> = VecDeque::new();
    let ctx_limit = cfg.context_size as usize;

    loop {
        if slots.iter().all(Option::is_none) && queue.is_empty() {
            match rx.recv() {
                Ok(r) => queue.push_back(r),
                Err(_) => return,
            }
        }
        while let Ok(r) = rx.try_recv() {
            queue.push_back(r);
        }
        // Requests whose caller gave up (an episode cut short) free their slot.
        for (i, slot) in slots.iter_mut().enumerate() {
            if slot.as_ref().is_some_and(|s| s.request.reply.is_closed()) {
                if let Some(s) = slot.take() {
                    cached[i] = s.in_cache();
                }
            }
        }
        // Each queued request takes the free slot whose cached tokens share the longest prefix
        // with its prompt: a multi-turn episode re-sends its whole conversation every turn, and
        // only what follows the shared prefix (the system prompt, the tools, earlier turns) is
        // decoded again.
        while slots.iter().any(Option::is_none) {
            let Some(request) = queue.pop_front() else {
                break;
            };
            if request.reply.is_closed() {
                continue;
            }
            let prompt = vocab.tokenize(request.prompt.as_bytes(), false, true);
            if prompt.is_empty() {
                let _ = request
                    .reply
                    .send(Err(ModelError::Backend("the prompt is empty".into())));
                continue;
            }
            if prompt.len() >= ctx_limit {
                let _ = request.reply.send(Err(ModelError::ContextLength(format!(
                    "the prompt has {} tokens; the context holds {ctx_limit} per sequence",
                    prompt.len()
                ))));
                continue;
            }
            // Free slots, with how many leading tokens each one's cache shares with the prompt.
            let free: Vec<(usize, usize)> = slots
                .iter()
                .enumerate()
                .filter(|(_, s)| s.is_none())
                .map(|(i, _)| {
                    let shared = if cfg.prefix_cache {
                        common_prefix(&cached[i], &prompt)
                    } else {
                        0
                    };
                    (i, shared)
                })
                .collect();
            // The slot sharing the longest prefix, if it covers at least half the prompt (as
            // llama-server's default slot similarity); otherwise the slot used longest ago, so
            // that an unrelated request does not evict a cache a conversation is about to use.
            let best = free
                .iter()
                .copied()
                .max_by_key(|(i, n)| (*n, std::cmp::Reverse(last_used[*i])))
                .filter(|(_, n)| 2 * n >= prompt.len());
            let Some((i, shared)) =
                best.or_else(|| free.iter().copied().min_by_key(|(i, _)| last_used[*i]))
            else {
                queue.push_front(request);
                break;
            };
            // The last prompt token is always decoded again: its logits start the completion.
            let mut reuse = shared.min(prompt.len() - 1);
            let trimmed = ctx
                .clear_kv_cache_seq(Some(i as u32), Some(reuse as u32), None)
                .unwrap_or(false);
            if !trimmed {
                let _ = ctx.clear_kv_cache_seq(Some(i as u32), None, None);
                reuse = 0;
            }
            tracing::debug!(
                slot = i,
                prompt = prompt.len(),
                reused = reuse,
                "llama.cpp: prompt prefix reused from the slot's cache"
            );
            cached[i].clear();
            uses += 1;
            last_used[i] = uses;
            let rng = Rng::new(request.params.seed);
            slots[i] = Some(Sequence {
                request,
                prompt,
                prefilled: reuse,
                n_past: reuse as i32,
                next: None,
                completion: Vec::new(),
                logprobs: Vec::new(),
                bytes: Vec::new(),
                rng,
                logits_at: None,
            });
        }

        // One decode step: every generating sequence's next token first, then prompt chunks.
        batch.clear();
        let budget = cfg.batch_size as usize;
        let mut used = 0usize;
        let mut add_failed = false;
        for (i, s) in slots
            .iter_mut()
            .enumerate()
            .filter_map(|(i, s)| s.as_mut().map(|s| (i, s)))
        {
            if let Some(t) = s.next.take() {
                add_failed |= batch.add(t, s.n_past, &[i as i32], true).is_err();
                s.logits_at = Some(batch.n_tokens() - 1);
                s.n_past += 1;
                used += 1;
            }
        }
        for (i, s) in slots
            .iter_mut()
            .enumerate()
            .filter_map(|(i, s)| s.as_mut().map(|s| (i, s)))
        {
            if s.prefilled >= s.prompt.len() || used >= budget {
                continue;
            }
            let take = (s.prompt.len() - s.prefilled).min(budget - used);
            for j in s.prefilled..s.prefilled + take {
                let last = j + 1 == s.prompt.len();
                add_failed |= batch.add(s.prompt[j], j as i32, &[i as i32], last).is_err();
                if last {
                    s.logits_at = Some(batch.n_tokens() - 1);
                }
            }
            s.prefilled += take;
            s.n_past = s.prefilled as i32;
            used += take;
        }
        if batch.n_tokens() == 0 {
            continue;
        }
        let decoded = if add_failed {
            Err("batch overflow".to_string())
        } else {
            ctx.decode(&mut batch).map_err(|e| e.to_string())
        };
        if let Err(e) = decoded {
            for (i, slot) in slots.iter_mut().enumerate() {
                if let Some(s) = slot.take() {
                    let _ = ctx.clear_kv_cache_seq(Some(i as u32), None, None);
                    cached[i].clear();
                    let _ = s.request.reply.send(Err(ModelError::Backend(format!(
                        "llama.cpp decode failed: {e}"
                    ))));
                }
            }
            continue;
        }

        for (i, slot) in slots.iter_mut().enumerate() {
            let Some(s) = slot.as_mut() else { continue };
            let Some(at) = s.logits_at.take() else {
                continue;
            };
            let (token, logprob) = sample(ctx.get_logits_ith(at), &s.request.params, &mut s.rng);
            let token = LlamaToken(token as i32);
            let finish = if vocab.is_eog(token) {
                Some(FinishReason::Stop)
            } else {
                s.completion.push(token.0 as u32);
                s.logprobs.push(logprob);
                s.bytes.extend(vocab.token_to_piece(token, false, None));
                if stop_hit(&s.bytes, &s.request.stop).is_some() {
                    Some(FinishReason::Stop)
                } else if s.completion.len() >= s.request.max_tokens
                    || s.n_past as usize + 1 >= ctx_limit
                {
                    Some(FinishReason::Length)
                } else {
                    s.next = Some(token);
                    None
                }
            };
            if let Some(finish) = finish {
                if let Some(s) = slot.take() {
                    // The sequence's tokens stay in its KV cache for the next request's prefix.
                    cached[i] = s.in_cache();
                    let mut text = String::from_utf8_lossy(&s.bytes).into_owned();
                    if let Some(cut) = stop_hit(&s.bytes, &s.request.stop) {
                        text.truncate(cut);
                    }
                    let generation = Generation {
                        prompt_ids: s.prompt.iter().map(|t| t.0 as u32).collect(),
                        completion_ids: s.completion,
                        logprobs: s.logprobs,
                        text,
                        finish,
                    };
                    let _ = s.request.reply.send(Ok(generation));
                }
            }
        }
    }
}

/// Where the earliest stop string starts in the text generated so far, if any has appeared.
fn stop_hit(bytes: &[u8], stop: &[String]) -> Option<usize> {
    if stop.is_empty() {
        return None;
    }
    let text = String::from_utf8_lossy(bytes);
    stop.iter()
        .filter(|s| !s.is_empty())
        .filter_map(|s| text.find(s.as_str()))
        .min()
}

//! The embedded backend on the real default model (SmolLM2-135M-Instruct Q4_1 on llama.cpp),
//! fetched once into trawl's cache.

#![allow(clippy::unwrap_used)] // tests: a failed unwrap is a failed test

use std::sync::Arc;

use trawl_core::registry::BuildContext;
use trawl_core::{CompletionRequest, FinishReason, LanguageModel, Message, ModelError, Sampling};
use trawl_llama::{LlamaConfig, LlamaLanguageModel};

fn model(parallel: u32, context_size: u32) -> Arc<LlamaLanguageModel> {
    let config = LlamaConfig {
        parallel,
        context_size,
        ..LlamaConfig::default()
    };
    Arc::new(
        config
            .load(&BuildContext::default())
            .unwrap_or_else(|e| panic!("loading the default model: {e}")),
    )
}

fn ask(question: &str, sampling: Sampling) -> CompletionRequest {
    CompletionRequest {
        messages: vec![
            Message::system("You are a helpful assistant. Answer concisely."),
            Message::user(question),
        ],
        tools: vec![],
        sampling,
    }
}

fn greedy(max_tokens: u32) -> Sampling {
    Sampling {
        temperature: Some(0.0),
        max_tokens: Some(max_tokens),
        logprobs: true,
        ..Sampling::default()
    }
}

const QUESTIONS: [&str; 6] = [
    "What is 7 + 5?",
    "Name a primary colour.",
    "Mia has 3 apples and buys 4 more. How many apples does she have?",
    "What is the capital of France?",
    "Write one word that rhymes with cat.",
    "What is 12 times 3?",
];

#[test]
fn the_models_own_template_renders_chatml_with_the_default_system_prompt() {
    let m = model(1, 512);
    let prompt = m
        .render(&CompletionRequest {
            messages: vec![Message::user("Hi")],
            tools: vec![],
            sampling: Sampling::default(),
        })
        .unwrap();
    assert_eq!(
        prompt,
        "<|im_start|>system\nYou are a helpful AI assistant named SmolLM, trained by Hugging Face<|im_end|>\n\
         <|im_start|>user\nHi<|im_end|>\n<|im_start|>assistant\n"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn greedy_decoding_is_deterministic_and_reports_tokens() {
    let m = model(2, 1024);
    let a = m.complete(&ask(QUESTIONS[0], greedy(24))).await.unwrap();
    let b = m.complete(&ask(QUESTIONS[0], greedy(24))).await.unwrap();
    assert_eq!(a.message.content, b.message.content);
    let (ta, tb) = (a.tokens.unwrap(), b.tokens.unwrap());
    assert_eq!(ta.completion_ids, tb.completion_ids);
    assert_eq!(ta.completion_ids.len() as u64, a.usage.completion_tokens);
    assert_eq!(ta.prompt_ids.len() as u64, a.usage.prompt_tokens);
    assert_eq!(ta.logprobs.len(), ta.completion_ids.len());
    assert!(ta.logprobs.iter().all(|lp| *lp <= 0.0 && lp.is_finite()));
    assert!(!a.message.text().is_empty());
}

/// A follow-up turn re-sends the conversation; the worker decodes only what follows the prefix
/// still in a slot's cache. The answer must be the one a fresh model gives.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_follow_up_turn_reuses_the_cached_prefix_and_answers_as_a_fresh_model_would() {
    let warm = model(2, 1024);
    let first = warm.complete(&ask(QUESTIONS[2], greedy(24))).await.unwrap();
    let mut follow = ask(QUESTIONS[2], greedy(24));
    follow.messages.push(first.message.clone());
    follow
        .messages
        .push(Message::user("Now add 2 more. How many?"));
    let again = warm.complete(&follow).await.unwrap();
    let cold = model(2, 1024).complete(&follow).await.unwrap();
    assert_eq!(again.message.content, cold.message.content);
    let (a, c) = (again.tokens.unwrap(), cold.tokens.unwrap());
    assert_eq!(a.completion_ids, c.completion_ids);
    // Usage still counts the whole prompt.
    assert_eq!(a.prompt_ids, c.prompt_ids);
    assert_eq!(again.usage.prompt_tokens, cold.usage.prompt_tokens);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn batched_output_equals_sequential_output_at_temperature_zero() {
    let m = model(8, 1024);
    let mut alone = Vec::new();
    for q in QUESTIONS {
        alone.push(m.complete(&ask(q, greedy(40))).await.unwrap());
    }
    let batched = futures_join_all(QUESTIONS.iter().map(|q| {
        let m = m.clone();
        let req = ask(q, greedy(40));
        async move { m.complete(&req).await.unwrap() }
    }))
    .await;
    for ((q, a), b) in QUESTIONS.iter().zip(&alone).zip(&batched) {
        assert_eq!(a.message.content, b.message.content, "{q}");
        assert_eq!(
            a.tokens.as_ref().unwrap().completion_ids,
            b.tokens.as_ref().unwrap().completion_ids,
            "{q}"
        );
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_seed_reproduces_a_sample_alone_or_in_a_batch() {
    let m = model(4, 1024);
    let sampled = |seed| Sampling {
        temperature: Some(1.0),
        top_p: Some(0.95),
        seed: Some(seed),
        max_tokens: Some(32),
        ..Sampling::default()
    };
    let alone = m.complete(&ask(QUESTIONS[1], sampled(42))).await.unwrap();
    let batch = futures_join_all((0..4u64).map(|i| {
        let m = m.clone();
        let req = ask(QUESTIONS[1], sampled(40 + i));
        async move { m.complete(&req).await.unwrap() }
    }))
    .await;
    assert_eq!(
        batch[2].message.content, alone.message.content,
        "seed 42 in a batch"
    );
    let distinct: std::collections::HashSet<_> =
        batch.iter().map(|c| c.message.content.clone()).collect();
    assert!(
        distinct.len() > 1,
        "four seeds gave one answer: {distinct:?}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn max_tokens_and_stop_strings_end_generation() {
    let m = model(2, 1024);
    let short = m
        .complete(&ask("Tell me a long story about a dragon.", greedy(5)))
        .await
        .unwrap();
    assert_eq!(short.usage.completion_tokens, 5);
    assert_eq!(short.finish_reason, FinishReason::Length);

    let full = m
        .complete(&ask("Tell me a long story about a dragon.", greedy(60)))
        .await
        .unwrap();
    let text = full.message.text().to_string();
    // Stop at a word from the middle of the greedy output: the output is the text before it.
    let word = text.split_whitespace().nth(6).unwrap().to_string();
    let cut = text.find(&word).unwrap();
    let stopped = m
        .complete(&ask(
            "Tell me a long story about a dragon.",
            Sampling {
                stop: vec![word.clone()],
                ..greedy(60)
            },
        ))
        .await
        .unwrap();
    assert_eq!(stopped.message.text(), &text[..cut], "stop {word:?}");
    assert_eq!(stopped.finish_reason, FinishReason::Stop);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_prompt_longer_than_the_context_is_a_context_error() {
    let m = model(1, 128);
    let long = "word ".repeat(400);
    match m.complete(&ask(&long, greedy(8))).await {
        Err(ModelError::ContextLength(msg)) => assert!(msg.contains("128"), "{msg}"),
        other => panic!("expected a context-length error, got {other:?}"),
    }
}

#[test]
fn a_missing_or_corrupt_gguf_file_is_a_clear_error() {
    let dir = tempfile::tempdir().unwrap();
    let missing = LlamaConfig {
        path: Some(dir.path().join("nope.gguf").display().to_string()),
        ..LlamaConfig::default()
    };
    let err = missing.load(&BuildContext::default()).err().unwrap();
    assert_eq!(err.path, vec!["path"]);
    assert!(
        err.message.contains("nope.gguf") && err.message.contains("does not exist"),
        "{}",
        err.message
    );

    let not_gguf = dir.path().join("notes.gguf");
    std::fs::write(&not_gguf, b"hello, this is not a model").unwrap();
    let err = LlamaConfig {
        path: Some(not_gguf.display().to_string()),
        ..LlamaConfig::default()
    }
    .load(&BuildContext::default())
    .err()
    .unwrap();
    assert!(
        err.message.contains("is not a GGUF model file"),
        "{}",
        err.message
    );

    // The right magic, then garbage: llama.cpp itself refuses it.
    let truncated = dir.path().join("truncated.gguf");
    let real = std::fs::read(trawl_llama::fetch::default_model().unwrap()).unwrap();
    std::fs::write(&truncated, &real[..4096]).unwrap();
    let err = LlamaConfig {
        path: Some(truncated.display().to_string()),
        ..LlamaConfig::default()
    }
    .load(&BuildContext::default())
    .err()
    .unwrap();
    assert!(
        err.message.contains("llama.cpp could not load") && err.message.contains("truncated.gguf"),
        "{}",
        err.message
    );
}

/// Runs futures concurrently on the current runtime and collects their outputs in order.
async fn futures_join_all<F, T>(futures: impl IntoIterator<Item = F>) -> Vec<T>
where
    F: std::future::Future<Output = T> + Send + 'static,
    T: Send + 'static,
{
    let handles: Vec<_> = futures.into_iter().map(tokio::spawn).collect();
    let mut out = Vec::new();
    for h in handles {
        out.push(h.await.unwrap());
    }
    out
}

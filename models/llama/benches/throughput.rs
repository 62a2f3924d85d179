//! Aggregate generation throughput of the embedded model at 1, 4, 8 and 16 concurrent
//! sequences (continuous batching), on the default model; then multi-turn conversations with a
//! long system prompt, with and without the prefix cache. `cargo bench -p trawl-llama --bench
//! throughput`; TRAWL_BENCH_MAX_TOKENS sets the completion length (default 128).

#![allow(clippy::unwrap_used)] // a benchmark harness: a failed unwrap is a failed run

use std::sync::Arc;
use std::time::Instant;

use trawl_core::registry::BuildContext;
use trawl_core::{CompletionRequest, LanguageModel, Message, Sampling};
use trawl_llama::LlamaConfig;

const TOPICS: [&str; 16] = [
    "a dragon",
    "the sea",
    "a robot",
    "a library",
    "winter",
    "a train",
    "a garden",
    "the moon",
    "a city",
    "a cat",
    "music",
    "a storm",
    "a mountain",
    "a bakery",
    "a river",
    "a clock",
];

fn main() {
    let smoke = !std::env::args().any(|a| a == "--bench");
    let max_tokens: u32 = std::env::var("TRAWL_BENCH_MAX_TOKENS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(if smoke { 16 } else { 128 });
    let runtime = tokio::runtime::Runtime::new().unwrap();
    let model = Arc::new(
        LlamaConfig {
            parallel: 16,
            context_size: 1024,
            ..LlamaConfig::default()
        }
        .load(&BuildContext::default())
        .unwrap(),
    );
    println!(
        "embedded model throughput ({}), {max_tokens} tokens per completion",
        model.path().display()
    );
    println!(
        "{:>11} {:>10} {:>9} {:>14} {:>10}",
        "concurrent", "requests", "tokens", "tokens/s", "speed-up"
    );
    let mut single = 0.0;
    for concurrency in [1usize, 4, 8, 16] {
        let requests = concurrency * 2;
        let t = Instant::now();
        let tokens: u64 = runtime.block_on(async {
            let mut done = 0u64;
            // Two waves of `concurrency` requests each.
            for wave in 0..2 {
                let handles: Vec<_> = (0..concurrency)
                    .map(|i| {
                        let m = model.clone();
                        let req = CompletionRequest {
                            messages: vec![Message::user(format!(
                                "Write a long story about {}.",
                                TOPICS[(i + wave * 7) % TOPICS.len()]
                            ))],
                            tools: vec![],
                            sampling: Sampling {
                                temperature: Some(0.8),
                                seed: Some((wave * 100 + i) as u64),
                                max_tokens: Some(max_tokens),
                                ..Sampling::default()
                            },
                        };
                        tokio::spawn(async move {
                            m.complete(&req).await.unwrap().usage.completion_tokens
                        })
                    })
                    .collect();
                for h in handles {
                    done += h.await.unwrap();
                }
            }
            done
        });
        let rate = tokens as f64 / t.elapsed().as_secs_f64();
        if concurrency == 1 {
            single = rate;
        }
        println!(
            "{concurrency:>11} {requests:>10} {tokens:>9} {rate:>14.1} {:>9.2}x",
            rate / single
        );
    }
    multi_turn(&runtime, smoke);
}

/// 4 conversations of 6 turns each, every request re-sending a ~1,900-token system prompt and
/// the conversation so far (as an agent scaffold does), on a fresh model with the prefix cache
/// on and off.
fn multi_turn(runtime: &tokio::runtime::Runtime, smoke: bool) {
    let turns = if smoke { 2 } else { 6 };
    let system = "You are a help desk agent. Follow the policy exactly. ".repeat(150);
    println!("\nmulti-turn: 4 conversations x {turns} turns, 32 tokens per reply");
    println!(
        "{:>13} {:>14} {:>12}",
        "prefix cache", "prompt tokens", "wall s"
    );
    for prefix_cache in [false, true] {
        let model = Arc::new(
            LlamaConfig {
                parallel: 4,
                context_size: 4096,
                prefix_cache,
                ..LlamaConfig::default()
            }
            .load(&BuildContext::default())
            .unwrap(),
        );
        let t = Instant::now();
        let prompt_tokens: u64 = runtime.block_on(async {
            let handles: Vec<_> = (0..4usize)
                .map(|c| {
                    let m = model.clone();
                    let system = system.clone();
                    tokio::spawn(async move {
                        let mut messages = vec![Message::system(system)];
                        let mut prompt_tokens = 0;
                        for turn in 0..turns {
                            messages.push(Message::user(format!(
                                "Question {turn} about {}.",
                                TOPICS[(c * 3 + turn) % TOPICS.len()]
                            )));
                            let req = CompletionRequest {
                                messages: messages.clone(),
                                tools: vec![],
                                sampling: Sampling {
                                    temperature: Some(0.0),
                                    max_tokens: Some(32),
                                    ..Sampling::default()
                                },
                            };
                            let done = m.complete(&req).await.unwrap();
                            prompt_tokens += done.usage.prompt_tokens;
                            messages.push(done.message);
                        }
                        prompt_tokens
                    })
                })
                .collect();
            let mut total = 0;
            for h in handles {
                total += h.await.unwrap();
            }
            total
        });
        println!(
            "{:>13} {prompt_tokens:>14} {:>12.1}",
            if prefix_cache { "on" } else { "off" },
            t.elapsed().as_secs_f64()
        );
    }
}

//! What the plugin boundary costs: the same evaluator (`keyword_rubric`) called in process
//! (linked as an rlib) and across the C ABI (loaded from its shared library), on the same
//! trajectory record; and one word-game episode step across the boundary.
//! `cargo bench -p trawl-tests --bench plugins`; figures go in BENCHMARKS.md.

#![allow(clippy::unwrap_used)]

use std::sync::Arc;
use std::time::Instant;

use serde_json::json;
use trawl_core::registry::{BuildContext, Factory, Registry, Role};
use trawl_core::{Action, Evaluator, Message, TrajectoryRecord};
use trawl_tests::plugin_library;

use trawl_keyword_rubric as _;

fn evaluator(registry: &Registry) -> Arc<dyn Evaluator> {
    let Factory::Evaluator(f) = registry
        .get(Role::Evaluator, "keyword_rubric")
        .unwrap()
        .factory
        .clone()
    else {
        panic!("not an evaluator")
    };
    f(
        &json!({ "keywords": ["answer", "because"] }),
        &BuildContext::default(),
    )
    .unwrap()
}

/// A record like a short multi-turn rollout: 10 messages of about 300 characters.
fn record() -> TrajectoryRecord {
    let mut r = trawl_core::strategies::example_record();
    r.messages = (0..10)
        .map(|i| {
            let text = format!("turn {i}: {}", "because the answer follows ".repeat(11));
            if i % 2 == 0 {
                Message::user(text)
            } else {
                Message::assistant(text)
            }
        })
        .collect();
    r.outcome.submission = Some("The answer is 42 because 6 times 7 is 42.".into());
    r
}

fn main() {
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap();
    let record = record();
    let bytes = serde_json::to_vec(&record).unwrap().len();
    let builtin = evaluator(&Registry::builtin().unwrap());
    let mut dynamic_registry = Registry::default();
    let rubric = trawl_plugin_loader::load(&plugin_library("trawl_keyword_rubric")).unwrap();
    trawl_plugin_loader::register(&mut dynamic_registry, &rubric).unwrap();
    let plugin = evaluator(&dynamic_registry);

    println!("record: {bytes} bytes of JSON");
    for (label, e) in [("in process (rlib)", &builtin), ("across the ABI", &plugin)] {
        let n = 20_000;
        rt.block_on(async {
            for _ in 0..200 {
                e.evaluate(&record).await.unwrap();
            }
            let t = Instant::now();
            for _ in 0..n {
                e.evaluate(&record).await.unwrap();
            }
            let per = t.elapsed().as_secs_f64() / n as f64;
            println!(
                "evaluate, {label:<18}: {:>8.2} µs/call, {:>9.0} calls/s (sequential)",
                per * 1e6,
                1.0 / per
            );
            // 64 concurrent callers.
            let t = Instant::now();
            let mut set = tokio::task::JoinSet::new();
            for _ in 0..64 {
                let (e, r) = (e.clone(), record.clone());
                set.spawn(async move {
                    for _ in 0..n / 64 {
                        e.evaluate(&r).await.unwrap();
                    }
                });
            }
            while set.join_next().await.is_some() {}
            let per = t.elapsed().as_secs_f64() / (n / 64 * 64) as f64;
            println!(
                "evaluate, {label:<18}: {:>9.0} calls/s with 64 concurrent callers",
                1.0 / per
            );
        });
    }

    // One episode step across the boundary (the word game, loaded from its library).
    let game = trawl_plugin_loader::load(&plugin_library("trawl_word_game")).unwrap();
    let mut reg = Registry::default();
    trawl_plugin_loader::register(&mut reg, &game).unwrap();
    let Factory::Environment(f) = reg
        .get(Role::Environment, "word_game")
        .unwrap()
        .factory
        .clone()
    else {
        panic!("not an environment")
    };
    let env = f(
        &json!({ "count": 1, "max_guesses": 1_000_000 }),
        &BuildContext::default(),
    )
    .unwrap();
    rt.block_on(async {
        let task = env.tasks().await.unwrap().remove(0);
        let n = 20_000;
        let t = Instant::now();
        let mut ep = env.start(&task).await.unwrap();
        for _ in 0..n {
            ep.act(&Action::Answer {
                text: "QQQQQ".into(),
            })
            .await
            .unwrap();
        }
        ep.finish().await.unwrap();
        let per = t.elapsed().as_secs_f64() / n as f64;
        println!(
            "episode step across the ABI: {:>8.2} µs/step ({} steps, the episode's history growing)",
            per * 1e6,
            n
        );
    });
}

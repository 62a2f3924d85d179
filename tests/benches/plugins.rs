//! What the plugin boundary costs: the same evaluator (`keyword_rubric`) called in process
//! (linked as an rlib) and across the C ABI (loaded from its shared library), on the same
//! trajectory record; one word-game episode step across the boundary; and one whole rollout of
//! the `plan_then_act` scaffold (three model calls, two actions) in process and in a plugin.
//! `cargo bench -p trawl-tests --bench plugins`; figures go in BENCHMARKS.md.

#![allow(clippy::unwrap_used)]

use std::sync::Arc;
use std::time::Instant;

use serde_json::json;
use trawl_core::registry::{BuildContext, Factory, Registry, Role};
use trawl_core::{Action, Evaluator, Message, TrajectoryRecord};
use trawl_tests::plugin_library;

use trawl_keyword_rubric as _;
use trawl_plan_act as _;

/// The `plan_then_act` scaffold of `registry`.
fn plan_then_act(registry: &Registry) -> Arc<dyn trawl_core::AgentScaffold> {
    let Factory::Scaffold(f) = registry
        .get(Role::Scaffold, "plan_then_act")
        .unwrap()
        .factory
        .clone()
    else {
        panic!("not a scaffold")
    };
    f(&json!({ "max_attempts": 2 }), &BuildContext::default()).unwrap()
}

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

    // One rollout of a scaffold: plan, a wrong answer, feedback, another answer. The model
    // answers at once (scripted), so the figure is the scaffold's and the boundary's cost.
    let math = {
        let Factory::Environment(f) = Registry::builtin()
            .unwrap()
            .get(Role::Environment, "math")
            .unwrap()
            .factory
            .clone()
        else {
            panic!("not an environment")
        };
        f(
            &json!({ "generator": { "count": 1, "levels": [1] }, "feedback": true }),
            &BuildContext::default(),
        )
        .unwrap()
    };
    let planner = trawl_plugin_loader::load(&plugin_library("trawl_plan_act")).unwrap();
    let mut reg = Registry::default();
    trawl_plugin_loader::register(&mut reg, &planner).unwrap();
    for (label, scaffold) in [
        (
            "in process (rlib)",
            plan_then_act(&Registry::builtin().unwrap()),
        ),
        ("in a plugin", plan_then_act(&reg)),
    ] {
        rt.block_on(async {
            let task = math.tasks().await.unwrap().remove(0);
            let rollout = || async {
                let model = trawl_core::testing::ScriptedModel::new([
                    "1. Read. 2. Add.",
                    "The answer is -1",
                    "The answer is -2",
                ]);
                let d = trawl_core::testing::drive(scaffold.as_ref(), math.as_ref(), &task, &model)
                    .await
                    .unwrap();
                assert_eq!(d.transcript.steps.len(), 2);
            };
            for _ in 0..100 {
                rollout().await;
            }
            let n = 5_000;
            let t = Instant::now();
            for _ in 0..n {
                rollout().await;
            }
            let per = t.elapsed().as_secs_f64() / n as f64;
            println!(
                "plan_then_act rollout, {label:<18}: {:>8.2} µs/rollout (3 model calls, 2 actions)",
                per * 1e6
            );
        });
    }
}

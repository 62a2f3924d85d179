//! What the `tools` environment costs besides the models: loading and checking the library
//! domain (every task's expected actions replayed), one read and one write tool call, and one
//! whole scripted episode (start with a scripted user, six actions, finish with the DB replay
//! and checks). `cargo bench -p trawl-tests --bench tools`; figures go in BENCHMARKS.md.

#![allow(clippy::unwrap_used)]

use std::time::Instant;

use serde_json::{json, Value};
use trawl_core::registry::{BuildContext, Factory, Registry, Role};
use trawl_core::{Action, Environment, ToolCall};
use trawl_tools_env::Domain;

fn per_call(label: &str, n: u32, mut f: impl FnMut()) {
    let t = Instant::now();
    for _ in 0..n {
        f();
    }
    let us = t.elapsed().as_secs_f64() * 1e6 / f64::from(n);
    println!("{label:<44} {us:>10.1} µs");
}

fn environment() -> std::sync::Arc<dyn Environment> {
    let registry = Registry::builtin().unwrap();
    let Factory::Environment(f) = registry
        .get(Role::Environment, "tools")
        .unwrap()
        .factory
        .clone()
    else {
        panic!("not an environment")
    };
    let user = json!({ "type": "scripted", "replies": ["Renew my book, I'm alice.moreau@example.com.", "Yes.", "Thanks ###STOP###"] });
    f(
        &json!({ "tasks": ["lib-001"], "user": user }),
        &BuildContext::default(),
    )
    .unwrap()
}

fn call(name: &str, args: Value) -> Action {
    Action::ToolCall {
        call: ToolCall::function("c", name, args.to_string()),
    }
}

fn main() {
    println!("tools environment, library domain (14 tools, 24 tasks)");
    per_call("load and check the domain (24 replays)", 200, || {
        Domain::builtin("library").unwrap();
    });
    let d = Domain::builtin("library").unwrap();
    let read = json!({ "member_id": "M006" });
    let write = json!({ "member_id": "M009", "book_id": "B013" });
    per_call("read call (get_member)", 20_000, || {
        let mut db = d.db.clone();
        d.call("get_member", read.as_object().unwrap(), &mut db)
            .unwrap();
    });
    per_call("database copy alone", 20_000, || {
        std::hint::black_box(d.db.clone());
    });
    per_call("write call (checkout_book), with its copy", 20_000, || {
        let mut db = d.db.clone();
        d.call("checkout_book", write.as_object().unwrap(), &mut db)
            .unwrap();
    });

    let rt = tokio::runtime::Runtime::new().unwrap();
    let env = environment();
    let task = rt.block_on(env.tasks()).unwrap().remove(0);
    let script = [
        call(
            "find_member",
            json!({ "query": "alice.moreau@example.com" }),
        ),
        call("get_member", json!({ "member_id": "M001" })),
        call("get_loan", json!({ "loan_id": "L001" })),
        Action::Answer {
            text: "Shall I renew loan L001?".into(),
        },
        call("renew_loan", json!({ "loan_id": "L001" })),
        Action::Answer {
            text: "Done, due 2026-03-31.".into(),
        },
    ];
    per_call("scripted episode (start, 6 actions, finish)", 2_000, || {
        rt.block_on(async {
            let mut ep = env.start(&task).await.unwrap();
            for a in &script {
                ep.act(a).await.unwrap();
            }
            let artifacts = ep.finish().await.unwrap();
            assert_eq!(artifacts.extra["db"]["match"], true);
        });
    });
}

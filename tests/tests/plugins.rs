//! Plugins inside one process: a plugin crate linked statically, and a shared library loaded
//! with the loader and driven directly, many episodes at once.

#![allow(clippy::unwrap_used)] // tests: a failed unwrap is a failed test

use serde_json::json;
use tokio::task::JoinSet;
use trawl_core::registry::{BuildContext, Factory, Origin, Registry, Role};
use trawl_core::Action;
use trawl_plugin_abi::wire::{ErrorKind, Request};
use trawl_tests::plugin_library;

// The example plugin crate as an rlib: nothing else is needed for its kinds to be built in.
use trawl_keyword_rubric as _;

#[test]
fn a_plugin_crate_linked_as_an_rlib_registers_like_a_builtin_kind() {
    let r = Registry::builtin().unwrap();
    for (role, kind) in [
        (Role::Evaluator, "keyword_rubric"),
        (Role::Exporter, "review_csv"),
    ] {
        let e = r.get(role, kind).unwrap_or_else(|| panic!("{role} {kind}"));
        assert_eq!(e.origin, Origin::BuiltIn);
    }
    assert!(r.libraries().is_empty());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn episodes_across_the_boundary_run_concurrently() {
    let mut registry = Registry::builtin().unwrap();
    let plugin = trawl_plugin_loader::load(&plugin_library("trawl_word_game")).unwrap();
    trawl_plugin_loader::register(&mut registry, &plugin).unwrap();
    // Loading it again is the same library, and registering it again adds nothing.
    let again = trawl_plugin_loader::load(&plugin_library("trawl_word_game")).unwrap();
    assert!(std::sync::Arc::ptr_eq(&plugin, &again));
    trawl_plugin_loader::register(&mut registry, &again).unwrap();
    assert_eq!(registry.libraries().len(), 1);

    let entry = registry.get(Role::Environment, "word_game").unwrap();
    assert!(matches!(&entry.origin, Origin::Plugin(p) if p.ends_with("libtrawl_word_game.so")));
    let Factory::Environment(build) = entry.factory.clone() else {
        panic!("not an environment")
    };
    let cx = BuildContext::default();

    // A config error keeps its field path across the boundary.
    let err = build(&json!({ "words": ["apple", "kiwi"] }), &cx)
        .err()
        .unwrap();
    assert_eq!(err.path, ["words", "1"]);
    assert!(err.message.contains("`kiwi` is not five ASCII letters"));

    let env = build(&json!({ "count": 48, "max_guesses": 3 }), &cx).unwrap();
    assert!(env.action_space().answer);
    assert_eq!(env.default_evaluators()[0].0, "word_game");
    let tasks = env.tasks().await.unwrap();
    assert_eq!(tasks.len(), 48);

    // Every game at once: a wrong guess, then the secret (read from the task).
    let mut games = JoinSet::new();
    for task in tasks {
        let env = env.clone();
        games.spawn(async move {
            let mut ep = env.start(&task).await.unwrap();
            assert!(ep.opening()[0]
                .content
                .as_deref()
                .unwrap()
                .contains("3 guesses"));
            let first = ep
                .act(&Action::Answer {
                    text: "QQQQQ".into(),
                })
                .await
                .unwrap();
            assert!(!first.done && first.content.contains("2 guesses left"));
            let secret = task.str_field("secret").unwrap().to_uppercase();
            let second = ep.act(&Action::Answer { text: secret }).await.unwrap();
            assert!(second.done, "{}", second.content);
            let artifacts = ep.finish().await.unwrap();
            (artifacts.extra["solved"] == true) && (artifacts.extra["guesses"] == 2)
        });
    }
    let mut won = 0;
    while let Some(r) = games.join_next().await {
        won += usize::from(r.unwrap());
    }
    assert_eq!(won, 48);

    // A request for something the plugin does not hold is an error answer, not a crash.
    let e = plugin
        .call(&Request::Act {
            episode: u64::MAX,
            action: Action::Answer { text: "x".into() },
        })
        .unwrap_err();
    assert_eq!(e.kind, ErrorKind::Protocol);
    assert!(e.message.contains("no object with handle"), "{}", e.message);
    env.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sandbox_and_model_plugins_keep_their_errors_and_survive_a_panic() {
    use trawl_core::model::{CompletionRequest, ModelError, Sampling};
    use trawl_core::sandbox::{ExecLimits, ExecOutcome, SandboxError, SandboxSpec};

    let mut registry = Registry::builtin().unwrap();
    let plugin = trawl_plugin_loader::load(&plugin_library("trawl_test_panicky")).unwrap();
    trawl_plugin_loader::register(&mut registry, &plugin).unwrap();
    let cx = BuildContext::default();

    let Factory::Sandbox(build) = registry
        .get(Role::Sandbox, "panicky")
        .unwrap()
        .factory
        .clone()
    else {
        panic!("not a sandbox backend")
    };
    let backend = build(&json!({}), &cx).unwrap();
    assert_eq!(backend.describe()["backend"], "panicky");
    let sandbox = backend.create(&SandboxSpec::default()).await.unwrap();
    assert_eq!(sandbox.working_dir(), "/memory");
    sandbox.write_file("a.txt", b"\x00bytes\xff").await.unwrap();
    assert_eq!(sandbox.read_file("a.txt").await.unwrap(), b"\x00bytes\xff");
    let limits = ExecLimits::default();
    let ok = sandbox.exec("echo hi", &limits).await.unwrap();
    assert_eq!(
        (ok.outcome, ok.stdout.as_str()),
        (ExecOutcome::Exited { code: 0 }, "echo hi")
    );
    // A panic fails that one call, as an infrastructure error naming the plugin.
    match sandbox.exec("panic now", &limits).await {
        Err(SandboxError::Infra(m)) => assert!(
            m.contains("plugin `panicky`")
                && m.contains("panicked in `exec`")
                && m.contains("told to panic on `panic now`"),
            "{m}"
        ),
        other => panic!("{other:?}"),
    }
    assert!(sandbox.exec("echo again", &limits).await.is_ok());
    // The backend's own errors cross whole, variant and all.
    assert_eq!(
        sandbox.read_file("missing.txt").await.unwrap_err(),
        SandboxError::OutsidePath("missing.txt".into())
    );
    let spec = SandboxSpec {
        image: Some("missing".into()),
        ..SandboxSpec::default()
    };
    assert_eq!(
        backend.create(&spec).await.err().unwrap(),
        SandboxError::Unavailable("no image `missing`".into())
    );
    sandbox.close().await.unwrap();

    let Factory::Model(build) = registry
        .get(Role::Model, "panicky")
        .unwrap()
        .factory
        .clone()
    else {
        panic!("not a model")
    };
    let model = build(&json!({ "panic_on_call": 1 }), &cx).unwrap();
    assert_eq!(model.describe().model_id, "panicky-42");
    let request = CompletionRequest {
        messages: vec![trawl_core::Message::user("hi")],
        tools: Vec::new(),
        sampling: Sampling::default(),
    };
    match model.complete(&request).await {
        Err(ModelError::Backend(m)) => {
            assert!(
                m.contains("panicked in `complete`: told to panic on call 1"),
                "{m}"
            )
        }
        other => panic!("{other:?}"),
    }
    let c = model.complete(&request).await.unwrap();
    assert_eq!(c.message.text(), "The answer is 42");
    assert_eq!(c.usage.prompt_tokens, 10);
    assert_eq!(model.list_models().await.unwrap(), None);
}

//! The LLM-played user against a real OpenAI-compatible server on 127.0.0.1: what the user model
//! is shown, how its control tokens end the conversation, and that its failures are the
//! simulator's (infrastructure), not the agent's.

#![allow(clippy::unwrap_used)] // tests: a failed unwrap is a failed test

use std::sync::Arc;

use serde_json::{json, Value};
use trawl_core::registry::{ModelBuilder, Registry};
use trawl_core::usersim::{LlmUser, UserScenario, UserSimulator, UserStop, DEFAULT_USER_PROMPT};
use trawl_core::{Message, Sampling};
use trawl_tests::{Reply, ScriptedServer};

use trawl_openai as _;

/// A user model: answers the colour when asked, and stops when thanked.
fn user_model(body: &Value) -> Reply {
    let last = body["messages"]
        .as_array()
        .and_then(|m| m.last())
        .and_then(|m| m["content"].as_str())
        .unwrap_or("")
        .to_lowercase();
    if last.contains("colour") {
        Reply::text("Blue, please.")
    } else if last.contains("thank") {
        Reply::text("Great, that's all. ###STOP###")
    } else {
        Reply::text("I don't know.")
    }
}

fn llm_user(base_url: &str) -> LlmUser {
    let builder = ModelBuilder::from_registry(&Registry::builtin().unwrap());
    let model = (builder.0)(&json!({
        "type": "openai",
        "base_url": base_url,
        "model": "user-sim",
        "retry": { "max_attempts": 1 },
    }))
    .unwrap();
    LlmUser {
        model,
        sampling: Sampling::default(),
        prompt: DEFAULT_USER_PROMPT.to_string(),
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_llm_user_answers_from_its_side_and_stops_with_a_token() {
    let server = ScriptedServer::start(Arc::new(user_model)).await.unwrap();
    let user = llm_user(&server.base_url());
    let scenario = UserScenario {
        persona: "A busy parent who writes short messages.".into(),
        instructions: "You want a blue umbrella. Reveal the colour only when asked.".into(),
    };
    let mut convo = vec![
        Message::system("You are a shop assistant."),
        Message::user("I need an umbrella."),
        Message::assistant("Which colour would you like?"),
    ];
    let turn = user.reply(&scenario, &convo).await.unwrap();
    assert_eq!((turn.text.as_str(), turn.stop), ("Blue, please.", None));

    // The user model saw its own system prompt and the conversation with roles flipped.
    let req = &server.requests()[0];
    let msgs = req["messages"].as_array().unwrap();
    let system = msgs[0]["content"].as_str().unwrap();
    assert!(system.contains("A busy parent who writes short messages."));
    assert!(system.contains("Reveal the colour only when asked."));
    assert!(system.contains("###STOP###"));
    let roles: Vec<&str> = msgs.iter().map(|m| m["role"].as_str().unwrap()).collect();
    assert_eq!(roles, ["system", "assistant", "user"]);
    assert!(!system.contains("You are a shop assistant."));
    assert_eq!(req["model"], "user-sim");

    convo.push(Message::user("Blue, please."));
    convo.push(Message::assistant("Done: one blue umbrella. Thank you!"));
    let end = user.reply(&scenario, &convo).await.unwrap();
    assert_eq!(end.stop, Some(UserStop::Stop));
    assert_eq!(end.text, "Great, that's all.");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_failing_user_model_is_a_simulator_error() {
    let server = ScriptedServer::scripted(vec![Reply::status(400, "bad request")])
        .await
        .unwrap();
    let user = llm_user(&server.base_url());
    let err = user
        .reply(
            &UserScenario::default(),
            &[Message::user("hi"), Message::assistant("hello")],
        )
        .await
        .unwrap_err();
    assert!(
        err.to_string()
            .starts_with("user simulator failed: the user model failed"),
        "{err}"
    );

    // Nothing listens here: connection refused, also the simulator's failure.
    let dead = llm_user("http://127.0.0.1:9/v1");
    assert!(dead
        .reply(&UserScenario::default(), &[Message::user("hi")])
        .await
        .is_err());
}

#[test]
fn a_model_table_with_an_unknown_kind_names_the_field() {
    let builder = ModelBuilder::from_registry(&Registry::builtin().unwrap());
    let err = (builder.0)(&json!({ "type": "nope" })).err().unwrap();
    assert_eq!(err.path, ["type"]);
    assert!(
        err.message.contains("unknown model kind `nope`"),
        "{}",
        err.message
    );
}

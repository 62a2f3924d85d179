//! The LLM-played user against a real OpenAI-compatible server on 127.0.0.1: what the user model
//! is shown, how its control tokens end the conversation, and that its failures are the
//! simulator's (infrastructure), not the agent's.

#![allow(clippy::unwrap_used)] // tests: a failed unwrap is a failed test

use std::sync::Arc;

use serde_json::{json, Value};

use trawl_core::registry::{ModelBuilder, Registry};
use trawl_core::usersim::{LlmUser, UserScenario, UserSimulator, UserStop, DEFAULT_USER_PROMPT};
use trawl_core::ExitStatus;
use trawl_core::{Message, Sampling};
use trawl_tests::{Reply, ScriptedServer};

use trawl_chat as _;
use trawl_exporters as _;
use trawl_openai as _;
use trawl_tool_calling as _;
use trawl_usersim as _;

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
    let builder = ModelBuilder::from_registry(&Registry::builtin().unwrap(), 4);
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
    let builder = ModelBuilder::from_registry(&Registry::builtin().unwrap(), 4);
    let err = (builder.0)(&json!({ "type": "nope" })).err().unwrap();
    assert_eq!(err.path, ["type"]);
    assert!(
        err.message.contains("unknown model kind `nope`"),
        "{}",
        err.message
    );
}

/// An agent that asks `questions` in order, then says `[finish]`.
fn asker(questions: &'static [&'static str]) -> trawl_tests::Handler {
    Arc::new(move |body: &Value| {
        let asked = trawl_tests::assistant_turns(body);
        Reply::text(questions.get(asked).copied().unwrap_or("[finish]"))
    })
}

const ALL_FOUR: &[&str] = &[
    "Where would you like to go?",
    "What budget do you have in mind?",
    "Who is coming with you?",
    "What kind of hotel do you like?",
];

/// Runs the first built-in task (a weekend trip: destination 3, budget 3, companions 2,
/// accommodation 1) with the `chat` scaffold; returns the one record.
async fn intention_run(agent: trawl_tests::Handler, extra: &str) -> trawl_core::TrajectoryRecord {
    intention_run_with(agent, extra, "type = \"chat\"\nmax_turns = 10").await
}

async fn intention_run_with(
    agent: trawl_tests::Handler,
    extra: &str,
    scaffold: &str,
) -> trawl_core::TrajectoryRecord {
    let server = ScriptedServer::start(agent).await.unwrap();
    let dir = tempfile::tempdir().unwrap();
    let config = format!(
        r#"name = "intent"

[[environments]]
type = "usersim"
limit = 1
{extra}

[[scaffolds]]
{scaffold}

[[models]]
type = "openai"
name = "agent"
base_url = "{}"
model = "agent"
retry = {{ max_attempts = 1 }}
"#,
        server.base_url()
    );
    trawl_tests::single_record(&config, dir.path()).await
}

fn ended(r: &trawl_core::TrajectoryRecord) -> Value {
    r.outcome.artifacts["ended"].clone()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn asking_about_every_detail_succeeds_with_the_full_reward() {
    let r = intention_run(asker(ALL_FOUR), "").await;
    assert_eq!(ended(&r), json!("all_uncovered"));
    assert!(r.success);
    let total = 1.0 + 1.0 + 0.7 + 0.4;
    assert!(
        (r.reward - (total - 4.0 * 0.01) / total).abs() < 1e-9,
        "{}",
        r.reward
    );
    let e = &r.evaluations[0];
    assert_eq!(e.components["coverage"], 1.0);
    assert_eq!(e.components["critical_coverage"], 1.0);
    // Each answer came from the task: the user said only what was asked.
    assert_eq!(
        r.messages[2].content.as_deref(),
        Some("Somewhere by the sea, ideally Lisbon.")
    );
    assert_eq!(
        r.outcome.artifacts["turn_rewards"]
            .as_array()
            .unwrap()
            .len(),
        4
    );
}

/// The `turns` export gives each reply the reward its question earned, not the episode's: a
/// question about nothing the user has in mind earns only the step penalty.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn turns_carry_each_questions_own_reward() {
    let r = intention_run(
        asker(&[
            "Do you like pineapple?",
            "Where would you like to go?",
            "What budget do you have in mind?",
        ]),
        "",
    )
    .await;
    assert!(r.reward > 0.0);
    let rows = trawl_tests::export_lines(std::slice::from_ref(&r), "turns", json!({}), false);
    let rewards: Vec<f64> = rows
        .iter()
        .map(|l| l["metadata"]["reward"].as_f64().unwrap())
        .collect();
    assert!(rows.iter().all(|l| l["metadata"]["reward_scope"] == "turn"));
    assert!(rows
        .iter()
        .all(|l| l["metadata"]["episode_reward"].as_f64() == Some(r.reward)));
    // Three questions, then [finish] (a step that earns nothing).
    assert_eq!(rewards.len(), 4, "{rewards:?}");
    assert!((rewards[0] - -0.01).abs() < 1e-9, "{rewards:?}");
    assert!((rewards[1] - 0.99).abs() < 1e-9, "{rewards:?}");
    assert!((rewards[2] - 0.99).abs() < 1e-9, "{rewards:?}");
    assert_eq!(rewards[3], 0.0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn finishing_early_is_a_partial_score() {
    let r = intention_run(asker(&["What is your budget?"]), "").await;
    assert_eq!(ended(&r), json!("finish"));
    assert!(!r.success);
    let e = &r.evaluations[0];
    assert!((e.components["coverage"] - 1.0 / 3.1).abs() < 1e-9);
    assert_eq!(e.components["critical_coverage"], 0.5);
    assert!((r.reward - 0.99 / 3.1).abs() < 1e-9);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_step_limit_ends_the_episode_and_asking_twice_at_once_costs() {
    let r = intention_run(
        asker(&[
            "Where do you want to go, and what is the budget?",
            "Who comes along?",
            "x",
        ]),
        "max_steps = 2",
    )
    .await;
    assert_eq!(ended(&r), json!("step_limit"));
    assert_eq!(r.outcome.exit_status, ExitStatus::Submitted);
    let turns: Vec<f64> = r.outcome.artifacts["turn_rewards"]
        .as_array()
        .unwrap()
        .iter()
        .map(|v| v.as_f64().unwrap())
        .collect();
    // Two details at once: 2.0 gained, 0.2 multi-detail penalty, 0.01 per question.
    assert!(
        (turns[0] - 1.79).abs() < 1e-9 && (turns[1] - 0.69).abs() < 1e-9,
        "{turns:?}"
    );
    assert!(!r.success);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_scripted_user_can_stop_the_conversation() {
    let r = intention_run(
        asker(ALL_FOUR),
        r#"user = { type = "scripted", replies = ["Lisbon.", "Never mind, I'll plan it myself. ###STOP###"] }"#,
    )
    .await;
    assert_eq!(ended(&r), json!({ "user": "stop" }));
    assert!(!r.success);
    assert_eq!(r.evaluations[0].components["questions"], 2.0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_llm_user_plays_the_task_and_its_failure_is_an_infrastructure_error() {
    // The user model answers the destination, then ends the conversation.
    let user_server = ScriptedServer::start(Arc::new(|body: &Value| {
        let turns = trawl_tests::assistant_turns(body);
        // Its own earlier replies are `assistant`; the opening request is one of them.
        Reply::text(if turns <= 1 {
            "Lisbon, by the sea."
        } else {
            "That's enough. ###STOP###"
        })
    }))
    .await
    .unwrap();
    let user = trawl_tests::llm_user_table(&user_server.base_url());
    let r = intention_run(asker(ALL_FOUR), &user).await;
    assert_eq!(ended(&r), json!({ "user": "stop" }));
    assert_eq!(
        r.messages[2].content.as_deref(),
        Some("Lisbon, by the sea.")
    );
    let first = &user_server.requests()[0];
    let system = first["messages"][0]["content"].as_str().unwrap();
    assert!(
        system.contains("budget: About 600 euros in total."),
        "{system}"
    );

    // A user model that fails: the rollout is an infrastructure error, not the agent's failure.
    let broken = ScriptedServer::scripted(vec![Reply::status(400, "no")])
        .await
        .unwrap();
    let user = trawl_tests::llm_user_table(&broken.base_url());
    let r = intention_run(asker(ALL_FOUR), &user).await;
    assert_eq!(r.outcome.exit_status, ExitStatus::InfraError);
    let msg = &r.outcome.error.as_ref().unwrap().message;
    assert!(msg.contains("user simulator failed"), "{msg}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_tool_calling_scaffold_talks_to_the_simulated_user_too() {
    let r = intention_run_with(asker(ALL_FOUR), "", "type = \"tool_calling\"").await;
    assert_eq!(ended(&r), json!("all_uncovered"));
    assert!(r.success);
    // The whole conversation: the opening, then four questions each followed by its answer.
    let roles: Vec<&str> = r
        .messages
        .iter()
        .map(|m| match m.role {
            trawl_core::MessageRole::User => "user",
            trawl_core::MessageRole::Assistant => "assistant",
            _ => "other",
        })
        .collect();
    assert_eq!(roles.len(), 8, "{roles:?}");
    assert_eq!(roles.iter().filter(|r| **r == "assistant").count(), 4);
}

/// An agent that asks through the `ask_user` tool, then calls `finish`.
fn tool_asker(questions: &'static [&'static str]) -> trawl_tests::Handler {
    Arc::new(move |body: &Value| {
        let asked = trawl_tests::assistant_turns(body);
        match questions.get(asked) {
            Some(q) => Reply::ToolCall {
                name: "ask_user".into(),
                arguments: json!({ "question": q }).to_string(),
            },
            None => Reply::ToolCall {
                name: "finish".into(),
                arguments: "{}".into(),
            },
        }
    })
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn questions_can_be_tool_calls() {
    let r = intention_run_with(
        tool_asker(&["What budget do you have?", "Where would you like to go?"]),
        "",
        "type = \"tool_calling\"",
    )
    .await;
    assert_eq!(ended(&r), json!("finish"));
    assert_eq!(r.tools.len(), 2, "the record keeps the tool schemas");
    assert_eq!(r.evaluations[0].components["critical_coverage"], 1.0);
    // The user's answer comes back as the tool result.
    let answer = r
        .messages
        .iter()
        .find(|m| m.role == trawl_core::MessageRole::Tool)
        .and_then(|m| m.content.as_deref());
    assert_eq!(answer, Some("About 600 euros in total."));
}

//! The `tools` environment (tau2-style) end to end: a scripted agent on a real OpenAI-compatible
//! server on 127.0.0.1 drives the `tool_calling` scaffold over the built-in library domain while
//! a scripted (or server-played) user talks to it; every ending, the reward's components, and
//! the record an exporter sees.

#![allow(clippy::unwrap_used)] // tests: a failed unwrap is a failed test

use std::sync::Arc;

use serde_json::{json, Value};
use trawl_core::engine::StopSignal;
use trawl_core::{ExitStatus, MessageRole, TrajectoryRecord};
use trawl_tests::{run_experiment, Handler, Reply, ScriptedServer};

use trawl_exporters as _;
use trawl_openai as _;
use trawl_tool_calling as _;
use trawl_tools_env as _;

fn call(name: &str, arguments: Value) -> Reply {
    Reply::ToolCall {
        name: name.into(),
        arguments: arguments.to_string(),
    }
}

/// An agent that plays `script` in order, one reply per model call.
fn agent(script: Vec<Reply>) -> Handler {
    Arc::new(move |body: &Value| {
        let step = trawl_tests::assistant_turns(body);
        script
            .get(step)
            .cloned()
            .unwrap_or_else(|| Reply::text("Is there anything else?"))
    })
}

/// Renews Alice's loan of The Left Hand of Darkness (task lib-001), by the policy's steps.
fn renewing_agent() -> Vec<Reply> {
    vec![
        call("find_member", json!({"query": "alice.moreau@example.com"})),
        call("get_member", json!({"member_id": "M001"})),
        call("get_loan", json!({"loan_id": "L001"})),
        Reply::text(
            "Alice, I can renew loan L001 (The Left Hand of Darkness) for 14 days. Shall I?",
        ),
        call("renew_loan", json!({"loan_id": "L001"})),
        Reply::text("Done: it is now due on 2026-03-31."),
    ]
}

const ALICE: &str = r####"["Hi, I'd like to renew The Left Hand of Darkness. My email is alice.moreau@example.com.", "Yes, please.", "Thank you! ###STOP###"]"####;

/// Runs one task of the library domain; returns its record.
async fn tools_run(task: &str, agent: Handler, extra: &str) -> TrajectoryRecord {
    let server = ScriptedServer::start(agent).await.unwrap();
    let dir = tempfile::tempdir().unwrap();
    let config = format!(
        r#"name = "tools"

[[environments]]
type = "tools"
tasks = ["{task}"]
{extra}

[[scaffolds]]
type = "tool_calling"
max_steps = 12

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

fn scripted(replies: &str) -> String {
    format!("user = {{ type = \"scripted\", replies = {replies} }}")
}

fn ended(r: &TrajectoryRecord) -> Value {
    r.outcome.artifacts["ended"].clone()
}

fn component(r: &TrajectoryRecord, name: &str) -> f64 {
    r.evaluations[0].components[name]
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn following_the_policy_succeeds_and_the_record_holds_the_whole_conversation() {
    let r = tools_run("lib-001", agent(renewing_agent()), &scripted(ALICE)).await;
    assert_eq!(ended(&r), json!({"user": "stop"}));
    assert_eq!(r.outcome.exit_status, ExitStatus::Submitted);
    assert!(r.success, "{:?}", r.evaluations);
    assert_eq!(r.reward, 1.0);
    assert_eq!(r.evaluations[0].evaluator, "tau");
    assert_eq!(component(&r, "db"), 1.0);
    assert!(r.outcome.artifacts["db"]["differences"]
        .as_array()
        .unwrap()
        .is_empty());

    // One system message: the scaffold has none of its own here, so it is the agent prompt
    // and the policy; then the user's opening, from the script.
    assert_eq!(r.messages[0].role, MessageRole::System);
    let system = r.messages[0].content.as_deref().unwrap();
    assert!(system.contains("<policy>") && system.contains("Riverside Public Library"));
    assert_eq!(
        r.messages[1].content.as_deref(),
        Some("Hi, I'd like to renew The Left Hand of Darkness. My email is alice.moreau@example.com.")
    );
    // Every tool call is answered by its tool message, holding what the database said.
    let tool_results: Vec<&str> = r
        .messages
        .iter()
        .filter(|m| m.role == MessageRole::Tool)
        .map(|m| m.content.as_deref().unwrap())
        .collect();
    assert_eq!(tool_results.len(), 4);
    assert!(tool_results[0].contains("\"member_id\":\"M001\""));
    assert!(
        tool_results[3].contains("\"due_date\":\"2026-03-31\""),
        "{}",
        tool_results[3]
    );
    // The user's reply to the agent's question comes back as the next user message.
    let users: Vec<&str> = r
        .messages
        .iter()
        .filter(|m| m.role == MessageRole::User)
        .map(|m| m.content.as_deref().unwrap())
        .collect();
    assert_eq!(users.len(), 2, "{users:?}");
    assert_eq!(users[1], "Yes, please.");
    assert_eq!(r.tools.len(), 14, "the record keeps the tool schemas");
    // Per-turn rewards: one per agent action, the task's reward on the last.
    let turns = r.outcome.artifacts["turn_rewards"].as_array().unwrap();
    assert_eq!(turns.len(), 6);
    assert_eq!(turns[5], 1.0);
    assert_eq!(turns[0], 0.0);
    // Recorded on the steps, and the `turns` export gives the reward to the reply that took
    // the last step, 0 to the others.
    assert_eq!(r.steps.len(), 6);
    assert_eq!(r.steps[5].reward, Some(1.0));
    let rows = trawl_tests::export_lines(std::slice::from_ref(&r), "turns", json!({}), false);
    let rewards: Vec<f64> = rows
        .iter()
        .map(|l| l["metadata"]["reward"].as_f64().unwrap())
        .collect();
    assert_eq!(rewards.iter().sum::<f64>(), 1.0, "{rewards:?}");
    assert_eq!(rewards.last(), Some(&1.0), "{rewards:?}");
    assert!(rows.iter().all(|l| l["metadata"]["reward_scope"] == "turn"));

    // The openai exporter writes the whole multi-turn conversation, tool calls and schemas.
    let sharegpt = trawl_tests::export_lines(std::slice::from_ref(&r), "sharegpt", json!({}), true);
    let froms: Vec<&str> = sharegpt[0]["conversations"]
        .as_array()
        .unwrap()
        .iter()
        .map(|t| t["from"].as_str().unwrap())
        .collect();
    assert_eq!(
        froms,
        [
            "human",
            "function_call",
            "observation",
            "function_call",
            "observation",
            "function_call",
            "observation",
            "gpt",
            "human",
            "function_call",
            "observation",
            "gpt"
        ]
    );
    assert!(sharegpt[0]["system"].as_str().unwrap().contains("<policy>"));
    let lines = trawl_tests::export_lines(&[r], "openai", json!({}), true);
    assert_eq!(lines.len(), 1);
    let l = &lines[0];
    assert_eq!(l["tools"].as_array().unwrap().len(), 14);
    let roles: Vec<&str> = l["messages"]
        .as_array()
        .unwrap()
        .iter()
        .map(|m| m["role"].as_str().unwrap())
        .collect();
    assert_eq!(
        roles,
        [
            "system",
            "user",
            "assistant",
            "tool",
            "assistant",
            "tool",
            "assistant",
            "tool",
            "assistant",
            "user",
            "assistant",
            "tool",
            "assistant"
        ]
    );
    assert_eq!(
        l["messages"][10]["tool_calls"][0]["function"]["name"],
        "renew_loan"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_right_database_without_the_required_information_is_partial() {
    // lib-023: renew Pride and Prejudice and tell the new due date; this agent never says it.
    let r = tools_run(
        "lib-023",
        agent(vec![
            call("get_member", json!({"member_id": "M005"})),
            Reply::text("Shall I renew loan L012?"),
            call("renew_loan", json!({"loan_id": "L012"})),
            Reply::text("All done."),
        ]),
        &scripted(r####"["Renew Pride and Prejudice please, I'm Eli Haddad, M005.", "Yes.", "OK. ###STOP###"]"####),
    )
    .await;
    assert_eq!(ended(&r), json!({"user": "stop"}));
    assert_eq!(component(&r, "db"), 1.0);
    assert_eq!(component(&r, "communicate"), 0.0);
    assert_eq!(r.reward, 0.0);
    assert!(!r.success);
    assert_eq!(
        r.evaluations[0].details["missing_info"],
        json!(["2026-04-12"])
    );

    // The wrong loan renewed: the database differs where it went wrong.
    let r = tools_run(
        "lib-023",
        agent(vec![
            call("renew_loan", json!({"loan_id": "L005"})),
            Reply::text("Renewed; the new due date is 2026-04-12."),
        ]),
        &scripted(r####"["Renew Pride and Prejudice please, I'm Eli Haddad, M005.", "Thanks. ###STOP###"]"####),
    )
    .await;
    assert_eq!(component(&r, "db"), 0.0);
    assert_eq!(component(&r, "communicate"), 1.0);
    assert_eq!(r.reward, 0.0);
    let diffs: Vec<&str> = r.outcome.artifacts["db"]["differences"]
        .as_array()
        .unwrap()
        .iter()
        .map(|d| d.as_str().unwrap())
        .collect();
    assert_eq!(
        diffs,
        [
            "loans.L005.due_date",
            "loans.L005.renewals",
            "loans.L012.due_date",
            "loans.L012.renewals"
        ]
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_step_limit_and_too_many_tool_errors_score_zero() {
    // lib-018 expects no change and no information: only the ending can fail it.
    let looping = agent(vec![call("get_member", json!({"member_id": "M001"})); 10]);
    let r = tools_run(
        "lib-018",
        looping,
        &format!(
            "max_steps = 3\n{}",
            scripted(r####"["I'm Ben Okafor, account M001."]"####)
        ),
    )
    .await;
    assert_eq!(ended(&r), json!("step_limit"));
    assert_eq!(component(&r, "db"), 1.0);
    assert_eq!(component(&r, "valid_ending"), 0.0);
    assert_eq!(r.reward, 0.0);

    let failing = agent(vec![call("get_loan", json!({"loan_id": "L999"})); 10]);
    let r = tools_run(
        "lib-018",
        failing,
        &format!(
            "max_errors = 2\n{}",
            scripted(r####"["I'm Ben Okafor, account M001."]"####)
        ),
    )
    .await;
    assert_eq!(ended(&r), json!("too_many_errors"));
    assert_eq!(r.outcome.artifacts["tool_errors"], 2);
    assert_eq!(r.reward, 0.0);
    let tool = r
        .messages
        .iter()
        .find(|m| m.role == MessageRole::Tool)
        .unwrap();
    assert_eq!(
        tool.content.as_deref(),
        Some("Error: `L999` not found in loans")
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_user_transfer_and_an_agent_stop_are_scored() {
    // lib-006: a suspended member insists; the agent transfers her (ACTION basis), and the
    // user ends with ###TRANSFER###.
    let r = tools_run(
        "lib-006",
        agent(vec![
            call("get_member", json!({"member_id": "M004"})),
            Reply::text("Your account is suspended, so I cannot lend books."),
            call(
                "transfer_to_human_agents",
                json!({"summary": "M004 wants her suspension lifted."}),
            ),
            Reply::text("You are being transferred to a human agent."),
        ]),
        &scripted(r####"["I'm Dana Silva, M004, I want to borrow Educated.", "Then lift the suspension!", "###TRANSFER###"]"####),
    )
    .await;
    assert_eq!(ended(&r), json!({"user": "transfer"}));
    assert_eq!(component(&r, "action"), 1.0);
    assert!(r.success);

    // The same without the transfer call: the ACTION component fails it.
    let r = tools_run(
        "lib-006",
        agent(vec![Reply::text(
            "Your account is suspended; I cannot help. ###STOP###",
        )]),
        &scripted(r####"["I'm Dana Silva, M004, I want to borrow Educated."]"####),
    )
    .await;
    assert_eq!(ended(&r), json!("agent_stop"));
    assert_eq!(component(&r, "action"), 0.0);
    assert_eq!(component(&r, "valid_ending"), 1.0);
    assert_eq!(r.reward, 0.0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_failing_simulator_is_an_infrastructure_error() {
    // The script runs out after the opening: the user fails on the agent's first message.
    let r = tools_run(
        "lib-001",
        agent(renewing_agent()),
        r#"user = { type = "scripted", replies = ["Hi, renew my book please."], fail_when_exhausted = true }"#,
    )
    .await;
    assert_eq!(r.outcome.exit_status, ExitStatus::InfraError);
    let msg = &r.outcome.error.as_ref().unwrap().message;
    assert!(msg.contains("user simulator failed"), "{msg}");
    assert!(r.evaluations.is_empty() || !r.success);

    // A user model that answers 500 before the conversation even starts.
    let broken = ScriptedServer::scripted(vec![Reply::status(500, "down")])
        .await
        .unwrap();
    let r = tools_run(
        "lib-001",
        agent(renewing_agent()),
        &trawl_tests::llm_user_table(&broken.base_url()),
    )
    .await;
    assert_eq!(r.outcome.exit_status, ExitStatus::InfraError);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_llm_user_sees_its_scenario_and_the_agent_text_only() {
    let user_server = ScriptedServer::start(Arc::new(|body: &Value| {
        // Its own earlier replies are `assistant`: the opening is the first.
        Reply::text(match trawl_tests::assistant_turns(body) {
            0 => "Hello, I want to renew a book. My email is alice.moreau@example.com.",
            1 => "Yes, go ahead.",
            _ => "Great, thanks! ###STOP###",
        })
    }))
    .await
    .unwrap();
    let user = trawl_tests::llm_user_table(&user_server.base_url());
    let r = tools_run("lib-001", agent(renewing_agent()), &user).await;
    assert!(r.success, "{:?}", r.outcome);
    let requests = user_server.requests();
    assert_eq!(requests.len(), 3);
    let first = requests[0]["messages"].as_array().unwrap();
    let system = first[0]["content"].as_str().unwrap();
    assert!(
        system.contains("Alice Moreau, a retired teacher"),
        "{system}"
    );
    assert!(
        system.contains(
            "Reason for call: You want to renew your loan of 'The Left Hand of Darkness'."
        ),
        "{system}"
    );
    // The greeting, as the user model reads it: the agent's words are `user`.
    assert_eq!(
        first[1],
        json!({"role": "user", "content": "Hi! How can I help you today?"})
    );
    // Later: only text turns, never tool traffic or the agent's policy.
    let last = requests[2]["messages"].as_array().unwrap();
    assert!(last.iter().all(|m| m["role"] != "tool"));
    assert!(!last[0]["content"].as_str().unwrap().contains("<policy>"));
    let roles: Vec<&str> = last.iter().map(|m| m["role"].as_str().unwrap()).collect();
    assert_eq!(
        roles,
        ["system", "user", "assistant", "user", "assistant", "user"]
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_domain_folder_in_the_same_layout_loads_and_bad_ones_are_named() {
    // A copy of the library domain with one task of its own.
    let dir = tempfile::tempdir().unwrap();
    let domain = dir.path().join("mini");
    std::fs::create_dir(&domain).unwrap();
    for (file, text) in trawl_tools_env::domain::LIBRARY {
        let text = if file == "tasks.json" {
            json!([{
                "id": "mini-1",
                "user_scenario": {"instructions": "You want to know if Dune is available."},
                "evaluation_criteria": {"communicate_info": ["available"], "reward_basis": ["COMMUNICATE"]}
            }])
            .to_string()
        } else {
            text.to_string()
        };
        std::fs::write(domain.join(file), text).unwrap();
    }
    let server = ScriptedServer::start(agent(vec![
        call("search_books", json!({"query": "dune"})),
        Reply::text("Yes, Dune is available. ###STOP###"),
    ]))
    .await
    .unwrap();
    let config = format!(
        r#"[[environments]]
type = "tools"
domain = "{}"
user = {{ type = "scripted", replies = ["Is Dune in?"] }}

[[scaffolds]]
type = "tool_calling"

[[models]]
type = "openai"
base_url = "{}"
model = "agent"
"#,
        domain.display(),
        server.base_url()
    );
    let r = trawl_tests::single_record(&config, dir.path()).await;
    assert_eq!(r.task.id, "mini-1");
    assert!(r.success);

    // A task whose expected action cannot run on the database: refused at load, with the file,
    // line and task named.
    std::fs::write(
        domain.join("tasks.json"),
        "[\n  {\n    \"id\": \"mini-2\",\n    \"user_scenario\": {\"instructions\": \"x\"},\n    \"evaluation_criteria\": {\"actions\": [{\"name\": \"renew_loan\", \"arguments\": {\"loan_id\": \"L404\"}}]}\n  }\n]\n",
    )
    .unwrap();
    let again = dir.path().join("again");
    std::fs::create_dir(&again).unwrap();
    let err = run_experiment(&config, &again, StopSignal::default())
        .await
        .expect_err("a broken domain is refused")
        .to_string();
    assert!(err.contains("tasks.json:3: task `mini-2`"), "{err}");
    assert!(
        err.contains("evaluation_criteria.actions[0] (renew_loan) fails on a fresh database: `L404` not found in loans"),
        "{err}"
    );
}

/// The four files of the bakery domain in `docs/tool-domains.md`, as the guide writes them.
fn guide_domain(into: &std::path::Path) {
    let guide = std::fs::read_to_string(
        std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../docs/tool-domains.md"),
    )
    .unwrap();
    let mut written = 0;
    let mut lines = guide.lines();
    while let Some(line) = lines.next() {
        let Some(file) = line
            .strip_prefix("```")
            .and_then(|info| info.split_whitespace().nth(1))
        else {
            continue;
        };
        let body: Vec<&str> = lines.by_ref().take_while(|l| *l != "```").collect();
        std::fs::write(into.join(file), body.join("\n")).unwrap();
        written += 1;
    }
    assert_eq!(
        written, 4,
        "the guide shows policy.md, db.json, tools.json, tasks.json"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_guide_domain_loads_runs_and_its_error_example_is_real() {
    let dir = tempfile::tempdir().unwrap();
    let bakery = dir.path().join("bakery");
    std::fs::create_dir(&bakery).unwrap();
    guide_domain(&bakery);
    let server = ScriptedServer::start(agent(vec![
        call("get_item", json!({"item": "sourdough"})),
        Reply::text("Two sourdough loaves for customer C1, shall I place the order?"),
        call(
            "place_order",
            json!({"customer_id": "C1", "item": "sourdough", "quantity": 2}),
        ),
        Reply::text("Done: your total is $13.00."),
    ]))
    .await
    .unwrap();
    let config = format!(
        r####"[[environments]]
type = "tools"
domain = "bakery"
user = {{ type = "scripted", replies = ["Two sourdough please, I'm C1.", "Yes.", "Thanks! ###STOP###"] }}

[[scaffolds]]
type = "tool_calling"

[[models]]
type = "openai"
base_url = "{}"
model = "agent"
"####,
        server.base_url()
    );
    let r = trawl_tests::single_record(&config, dir.path()).await;
    assert!(r.success, "{:?}", r.evaluations);
    assert_eq!(r.tools.len(), 2);

    // The guide's example of a load error is what trawl says.
    let tools = std::fs::read_to_string(bakery.join("tools.json")).unwrap();
    std::fs::write(
        bakery.join("tools.json"),
        tools.replacen("\"$quantity\"]}, \"else\"", "\"$qty\"]}, \"else\"", 1),
    )
    .unwrap();
    let err = trawl_tools_env::Domain::load(&bakery).unwrap_err();
    let err = err.replace(&format!("{}/", bakery.display()), "");
    let guide = std::fs::read_to_string(
        std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../docs/tool-domains.md"),
    )
    .unwrap();
    assert!(guide.contains(&format!("\n{err}\n")), "{err}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_user_can_share_the_agents_model_entry() {
    // One server plays both sides, told apart by the system prompt: the user's says it plays
    // a customer.
    let script = agent(renewing_agent());
    let both: Handler = Arc::new(move |body: &Value| {
        let system = body["messages"][0]["content"].as_str().unwrap_or("");
        if !system.contains("You are playing a customer") {
            return script(body);
        }
        Reply::text(match trawl_tests::assistant_turns(body) {
            0 => "Renew The Left Hand of Darkness please; alice.moreau@example.com.",
            1 => "Yes.",
            _ => "Thanks! ###STOP###",
        })
    });
    let r = tools_run(
        "lib-001",
        both,
        r#"user = { type = "llm", model = "agent" }"#,
    )
    .await;
    assert!(r.success, "{:?}", r.outcome);

    let server = ScriptedServer::start(agent(vec![])).await.unwrap();
    let dir = tempfile::tempdir().unwrap();
    let config = format!(
        "[[environments]]\ntype = \"tools\"\nuser = {{ type = \"llm\", model = \"nope\" }}\n\n[[scaffolds]]\ntype = \"tool_calling\"\n\n[[models]]\ntype = \"openai\"\nname = \"agent\"\nbase_url = \"{}\"\nmodel = \"agent\"\n",
        server.base_url()
    );
    let err = run_experiment(&config, dir.path(), StopSignal::default())
        .await
        .expect_err("an unknown model name is refused")
        .to_string();
    assert!(
        err.contains("field `environments[0].user.model`")
            && err.contains("there is no [[models]] entry named `nope` (names: agent)"),
        "{err}"
    );
}

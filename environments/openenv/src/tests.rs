//! Unit tests of the `openenv` environment: session addresses, protocol messages, JSON actions,
//! config checks and task files.

use serde_json::{json, Value};
use trawl_core::registry::{BuildContext, EnvironmentConfig};

use crate::config::{load_tasks, OpenEnvConfig};
use crate::episode::{action_object, render};
use crate::protocol::{parse_reply, parse_step, ws_url, Reply};

#[test]
fn urls_become_session_addresses() {
    assert_eq!(
        ws_url("http://127.0.0.1:8000/").unwrap(),
        "ws://127.0.0.1:8000/ws"
    );
    assert_eq!(ws_url("https://x.hf.space").unwrap(), "wss://x.hf.space/ws");
    assert!(ws_url("ftp://x").unwrap_err().contains("not an http"));
}

#[test]
fn protocol_messages_are_read_and_garbage_is_named() {
    let r = parse_reply(r#"{"type":"observation","data":{"observation":{"prompt":"hi"},"reward":0.5,"done":false}}"#).unwrap();
    let Reply::Observation(d) = r else { panic!() };
    let step = parse_step(&d).unwrap();
    assert_eq!((step.reward, step.done), (Some(0.5), false));
    assert_eq!(render(&step.observation, Some("prompt")), "hi");
    let refused = parse_reply(r#"{"type":"error","data":{"message":"Invalid message","code":"VALIDATION_ERROR","errors":[{"loc":["guess"],"msg":"Field required"}]}}"#).unwrap();
    assert!(
        matches!(refused, Reply::Refused(ref m) if m == "guess: Field required"),
        "{refused:?}"
    );
    let e = parse_reply(r#"{"type":"error","data":{"message":"boom","code":"EXECUTION_ERROR"}}"#)
        .unwrap_err();
    assert!(e.contains("EXECUTION_ERROR") && e.contains("boom"), "{e}");
    assert!(parse_reply("<<<garbage>>>")
        .unwrap_err()
        .contains("not JSON"));
    assert!(parse_reply(r#"{"type":"weird"}"#)
        .unwrap_err()
        .contains("not OpenEnv's protocol"));
    assert!(parse_step(&json!({"observation": 3})).is_err());
    assert!(parse_step(&json!({"observation": {}, "reward": "high"})).is_err());
}

#[test]
fn json_actions_are_found_in_prose_and_fences() {
    let m = action_object("I will guess.\n```json\n{\"guess\": \"7\"}\n```").unwrap();
    assert_eq!(m["guess"], "7");
    assert!(action_object("just 7").is_err());
}

#[test]
fn configs_are_checked_field_by_field() {
    let build = |v: Value| {
        trawl_core::registry::parse_settings::<OpenEnvConfig>(&v)
            .and_then(|c| c.build(&BuildContext::default()))
            .err()
            .map(|e| (e.path, e.message))
    };
    let (path, _) = build(json!({"servers": ["localhost:8000"], "seeds": 2})).unwrap();
    assert_eq!(path, ["servers", "0"]);
    let (_, message) = build(json!({"servers": ["http://a"]})).unwrap();
    assert!(message.contains("no tasks"), "{message}");
    let (path, _) = build(json!({"servers": [], "seeds": 1})).unwrap();
    assert_eq!(path, ["servers"]);
    let (path, message) =
        build(json!({"servers": ["http://a"], "tasks": [{"id": "a"}, {"id": "a"}]})).unwrap();
    assert_eq!(path, ["tasks"]);
    assert!(message.contains("twice"));
    assert!(build(json!({"servers": ["http://a"], "seeds": 3})).is_none());
}

#[test]
fn a_task_file_error_names_its_line() {
    let dir = tempfile::tempdir().unwrap();
    let f = dir.path().join("t.jsonl");
    std::fs::write(
        &f,
        "{\"id\": \"a\", \"reset\": {\"seed\": 1}}\n\n{\"id\": 3}\n",
    )
    .unwrap();
    let e = load_tasks(&f).unwrap_err();
    assert!(e.contains("t.jsonl:3:"), "{e}");
}

//! proptest strategies for every type that is stored or crosses a boundary (the run store, the
//! plugin ABI). Built for core's own tests, and for other crates with the `proptest` feature.

use std::collections::BTreeMap;

use proptest::prelude::*;
use serde_json::{json, Value};

use crate::environment::{Action, ActionSpace, Artifacts, Observation};
use crate::evaluator::Evaluation;
use crate::message::{Message, Role, ToolCall, ToolSchema};
use crate::model::{Sampling, TokenDetail, Usage};
use crate::task::Task;
use crate::trajectory::{
    ExitStatus, Outcome, Provenance, RecordedError, RolloutKey, Step, Timing, TrajectoryRecord,
    TRAJECTORY_SCHEMA,
};

/// Any JSON value, nested a few levels, with awkward strings and numbers that round-trip.
pub fn json_value() -> impl Strategy<Value = Value> {
    let leaf = prop_oneof![
        Just(Value::Null),
        any::<bool>().prop_map(Value::Bool),
        any::<i64>().prop_map(|n| json!(n)),
        (-1e12f64..1e12).prop_map(|x| json!(x)),
        "\\PC{0,16}".prop_map(Value::String),
    ];
    leaf.prop_recursive(3, 24, 4, |inner| {
        prop_oneof![
            proptest::collection::vec(inner.clone(), 0..4).prop_map(Value::Array),
            proptest::collection::btree_map("[a-z_]{1,6}", inner, 0..4)
                .prop_map(|m| Value::Object(m.into_iter().collect())),
        ]
    })
}

pub fn message() -> impl Strategy<Value = Message> {
    (
        prop_oneof![
            Just(Role::System),
            Just(Role::User),
            Just(Role::Assistant),
            Just(Role::Tool)
        ],
        proptest::option::of("\\PC{0,40}"),
        proptest::collection::vec(("[a-z0-9_]{1,8}", "[a-z_]{1,10}", "\\PC{0,30}"), 0..3),
        proptest::option::of("[a-z]{1,8}"),
    )
        .prop_map(|(role, content, calls, agent)| {
            let mut m = Message::user("");
            m.role = role;
            m.content = content;
            m.agent = agent;
            m.tool_calls = calls
                .into_iter()
                .map(|(id, name, args)| ToolCall::function(id, name, args))
                .collect();
            m
        })
}

pub fn tool_schema() -> impl Strategy<Value = ToolSchema> {
    ("[a-z_]{1,10}", "\\PC{0,30}", json_value()).prop_map(|(name, description, parameters)| {
        ToolSchema::function(name, description, parameters)
    })
}

pub fn action() -> impl Strategy<Value = Action> {
    prop_oneof![
        "\\PC{0,30}".prop_map(|text| Action::Answer { text }),
        "\\PC{0,30}".prop_map(|command| Action::Shell { command }),
        "\\PC{0,30}".prop_map(|text| Action::Message { text }),
        ("[a-z0-9]{1,6}", "[a-z]{1,6}", "\\PC{0,20}").prop_map(|(id, n, a)| Action::ToolCall {
            call: ToolCall::function(id, n, a)
        }),
    ]
}

pub fn action_space() -> impl Strategy<Value = ActionSpace> {
    (any::<bool>(), any::<bool>(), any::<bool>(), any::<bool>()).prop_map(
        |(answer, tool_calls, shell, user_messages)| ActionSpace {
            answer,
            tool_calls,
            shell,
            user_messages,
        },
    )
}

pub fn observation() -> impl Strategy<Value = Observation> {
    (
        "\\PC{0,40}",
        any::<bool>(),
        proptest::option::of(any::<i32>()),
    )
        .prop_map(|(content, done, exit_code)| Observation {
            content,
            done,
            exit_code,
        })
}

pub fn artifacts() -> impl Strategy<Value = Artifacts> {
    (proptest::option::of("\\PC{0,40}"), json_value()).prop_map(|(submission, extra)| Artifacts {
        submission,
        extra,
        step_rewards: Vec::new(),
    })
}

pub fn task() -> impl Strategy<Value = Task> {
    ("[a-zA-Z0-9_/-]{1,12}", json_value()).prop_map(|(id, data)| Task::new(id, data))
}

pub fn evaluation() -> impl Strategy<Value = Evaluation> {
    (
        "[a-z_]{1,10}",
        -10.0f64..10.0,
        any::<bool>(),
        proptest::collection::btree_map("[a-z_]{1,8}", 0.0f64..1.0, 0..4),
        json_value(),
    )
        .prop_map(
            |(evaluator, reward, success, components, details)| Evaluation {
                evaluator,
                reward,
                success,
                components,
                details,
            },
        )
}

prop_compose! {
    /// A whole trajectory record.
    pub fn record()(
        messages in proptest::collection::vec(message(), 0..6),
        tools in proptest::collection::vec(tool_schema(), 0..2),
        actions in proptest::collection::vec(action(), 0..4),
        status in proptest::sample::select(ExitStatus::ALL.to_vec()),
        evaluations in proptest::collection::vec(evaluation(), 0..2),
        reward in -10.0f64..10.0,
        success: bool,
        sample in 0u32..100,
        task in task(),
        submission in proptest::option::of("\\PC{0,30}"),
        error in proptest::option::of(("[a-z_]{1,10}", "\\PC{0,20}")),
        artifacts in json_value(),
        tokens in (0u64..1_000_000, 0u64..1_000_000),
    ) -> TrajectoryRecord {
        TrajectoryRecord {
            schema: TRAJECTORY_SCHEMA.into(),
            key: RolloutKey { environment: "math".into(), scaffold: "chat".into(), model: "m".into(), task: task.id.clone(), sample },
            task,
            messages,
            tools,
            steps: actions
                .into_iter()
                .enumerate()
                .map(|(i, action)| Step { index: i as u32, action, observation: "ok".into(), started_ms: i as u64, duration_ms: 1, exit_code: None, reply: None, reward: None })
                .collect(),
            outcome: Outcome {
                exit_status: status,
                submission,
                error: error.map(|(kind, message)| RecordedError { kind, message }),
                artifacts,
            },
            evaluations,
            reward,
            success,
            usage: Usage { prompt_tokens: tokens.0, completion_tokens: tokens.1, model_calls: 1 },
            tokens: vec![TokenDetail { prompt_ids: vec![1, 2], completion_ids: vec![3], logprobs: vec![-0.25] }],
            finish_reasons: vec![crate::model::FinishReason::Stop, crate::model::FinishReason::Length, crate::model::FinishReason::Other("eos_token".into())],
            timing: Timing { started_at: "2026-01-01T00:00:00.000Z".into(), duration_ms: 5, model_ms: 3 },
            provenance: Provenance {
                trawl_version: "0.1.0".into(),
                model_kind: "openai".into(),
                model_id: "m".into(),
                sampling: Sampling { temperature: Some(0.5), seed: Some(1), ..Default::default() },
                seed: 1,
                run_id: "r".into(),
                components: BTreeMap::from([("scaffold/chat".to_string(), "chat 0.1.0".to_string())]),
            },
        }
    }
}

/// One fixed record from [`record`] (the deterministic runner's first draw): the base that tests
/// and benchmarks shape by hand.
pub fn example_record() -> crate::trajectory::TrajectoryRecord {
    use proptest::strategy::ValueTree;
    record()
        .new_tree(&mut proptest::test_runner::TestRunner::deterministic())
        .expect("the record strategy draws a value")
        .current()
}

/// `n` records like short multi-turn math rollouts (three assistant turns with token ids, two
/// evaluators, 5,000 tasks in two scaffolds), for benchmarks of what reads a run.
pub fn short_rollouts(n: usize) -> Vec<TrajectoryRecord> {
    let base = crate::strategies::example_record();
    (0..n)
        .map(|i| {
            let mut r = base.clone();
            r.key.environment = "math".into();
            r.key.scaffold = if i % 2 == 0 { "chat" } else { "tool_calling" }.into();
            r.key.model = "m".into();
            r.key.task = format!("t{}", i / 2 % 5000);
            r.key.sample = (i / 10_000) as u32;
            r.task.data = serde_json::json!({"level": i % 5 + 1, "answer": "42"});
            r.outcome.exit_status = crate::ExitStatus::Submitted;
            r.messages = (0..6)
                .map(|j| {
                    let text = format!("turn {j}: {}", "because the answer follows ".repeat(11));
                    if j % 2 == 0 {
                        Message::user(text)
                    } else {
                        Message::assistant(text)
                    }
                })
                .collect();
            r.tokens = (0..3)
                .map(|j| crate::model::TokenDetail {
                    prompt_ids: (0..200 + 60 * j).collect(),
                    completion_ids: (0..50).collect(),
                    logprobs: vec![-0.5; 50],
                })
                .collect();
            // Samples of a task differ: groups have variance, pairs can be made.
            r.success = (i / 10_000 + i) % 3 == 0;
            r.reward = f64::from(u8::from(r.success));
            r.evaluations = vec![
                Evaluation {
                    evaluator: "math_answer".into(),
                    reward: r.reward,
                    success: r.success,
                    components: Default::default(),
                    details: serde_json::Value::Null,
                },
                Evaluation {
                    evaluator: "format".into(),
                    reward: (i % 4) as f64 / 3.0,
                    success: i % 4 != 0,
                    components: Default::default(),
                    details: serde_json::Value::Null,
                },
            ];
            r
        })
        .collect()
}

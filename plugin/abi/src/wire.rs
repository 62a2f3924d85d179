//! The requests and responses that cross the plugin boundary, as JSON. Every payload is one of
//! trawl-core's own serde types (tasks, actions, observations, artifacts, trajectory records,
//! evaluations), so a plugin sees exactly what a built-in kind sees.

use std::path::PathBuf;

use serde::{Deserialize, Serialize};
use serde_json::Value;
use trawl_core::model::{Completion, CompletionRequest, ModelDescription, ModelError, Sampling};
use trawl_core::sandbox::{ExecLimits, ExecResult, SandboxError, SandboxSpec};
use trawl_core::{
    Action, ActionSpace, Artifacts, EnvironmentError, Evaluation, Message, Observation, Role,
    ScaffoldError, ScaffoldOutcome, Task, ToolSchema, TrajectoryRecord, TranscriptState,
};

/// What a factory knows about the run (trawl-core's `BuildContext`).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Context {
    pub base_dir: PathBuf,
    pub seed: u64,
    pub run_name: String,
}

impl From<&trawl_core::BuildContext> for Context {
    fn from(cx: &trawl_core::BuildContext) -> Self {
        Context {
            base_dir: cx.base_dir.clone(),
            seed: cx.seed,
            run_name: cx.run_name.clone(),
        }
    }
}

impl From<Context> for trawl_core::BuildContext {
    fn from(cx: Context) -> Self {
        trawl_core::BuildContext {
            base_dir: cx.base_dir,
            seed: cx.seed,
            run_name: cx.run_name,
            models: None,
            sandboxes: None,
        }
    }
}

/// A call from the host.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "op", rename_all = "snake_case")]
pub enum Request {
    /// Every kind the plugin registers.
    Kinds,
    /// Builds a component from its config table; answers [`Reply::Built`].
    Build {
        role: Role,
        kind: String,
        settings: Value,
        context: Context,
    },
    /// The host is done with a component or an episode.
    Release {
        handle: u64,
    },
    Evaluate {
        handle: u64,
        record: Box<TrajectoryRecord>,
    },
    /// One record through an exporter; answers [`Reply::Exported`].
    ExportRecord {
        handle: u64,
        record: Box<TrajectoryRecord>,
    },
    /// The exporter's closing bytes; answers [`Reply::Exported`].
    ExportFinish {
        handle: u64,
    },
    Tasks {
        handle: u64,
    },
    /// Starts an episode; answers [`Reply::Started`].
    Start {
        handle: u64,
        task: Task,
    },
    Act {
        episode: u64,
        action: Action,
    },
    /// Ends an episode; answers [`Reply::Artifacts`].
    Finish {
        episode: u64,
    },
    /// Ends an environment's or a sandbox backend's run.
    Shutdown {
        handle: u64,
    },
    // ABI 2 and later.
    /// Starts a scaffold's rollout; answers [`Reply::Scaffold`] with its first [`ScaffoldStep`].
    RunScaffold {
        handle: u64,
        /// The host's model, as the scaffold's `describe` sees it.
        model: ModelDescription,
        sampling: Sampling,
        /// The episode's opening messages and tools.
        transcript: Box<TranscriptState>,
        /// How long the episode has been running.
        elapsed_ms: u64,
    },
    /// The host's answer to a rollout's [`HostAsk`]; answers with the rollout's next step.
    Resume {
        rollout: u64,
        answer: HostAnswer,
    },
    /// One chat completion from a model backend; answers [`Reply::Completion`].
    Complete {
        handle: u64,
        request: Box<CompletionRequest>,
    },
    /// The models a backend's server offers; answers [`Reply::Models`].
    ListModels {
        handle: u64,
    },
    /// A fresh sandbox from a backend; answers [`Reply::Sandbox`].
    CreateSandbox {
        handle: u64,
        spec: SandboxSpec,
    },
    /// Which of `images` the backend lacks; answers [`Reply::Images`].
    MissingImages {
        handle: u64,
        images: Vec<String>,
    },
    /// Runs a command in a sandbox; answers [`Reply::Exec`].
    Exec {
        sandbox: u64,
        command: String,
        limits: ExecLimits,
    },
    /// Reads a file in a sandbox; answers [`Reply::Bytes`].
    ReadFile {
        sandbox: u64,
        path: String,
    },
    WriteFile {
        sandbox: u64,
        path: String,
        #[serde(with = "base64_bytes")]
        bytes: Vec<u8>,
    },
    CloseSandbox {
        sandbox: u64,
    },
}

/// What a scaffold running in a plugin asks the host to do for it.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "ask", rename_all = "snake_case")]
pub enum HostAsk {
    /// Call the run's model; the host answers [`HostAnswer::Completion`].
    Complete { request: Box<CompletionRequest> },
    /// Act in the episode; the host answers [`HostAnswer::Observation`].
    Act { action: Action },
}

/// The host's answer to a [`HostAsk`].
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "answer", rename_all = "snake_case")]
pub enum HostAnswer {
    Completion {
        result: Result<Box<Completion>, ModelError>,
    },
    Observation {
        result: Result<Observation, EnvironmentError>,
    },
}

/// Where a scaffold's rollout stands after a request.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "step", rename_all = "snake_case")]
pub enum ScaffoldStep {
    /// The scaffold waits for the host to do this; the host answers with [`Request::Resume`].
    Ask { ask: HostAsk },
    /// The scaffold is done; `transcript` is everything it said and did.
    Done {
        result: Result<ScaffoldOutcome, ScaffoldError>,
        transcript: Box<TranscriptState>,
    },
}

impl Request {
    /// The operation's name, for messages.
    pub fn op(&self) -> &'static str {
        match self {
            Request::Kinds => "kinds",
            Request::Build { .. } => "build",
            Request::Release { .. } => "release",
            Request::Evaluate { .. } => "evaluate",
            Request::ExportRecord { .. } => "export_record",
            Request::ExportFinish { .. } => "export_finish",
            Request::Tasks { .. } => "tasks",
            Request::Start { .. } => "start",
            Request::Act { .. } => "act",
            Request::Finish { .. } => "finish",
            Request::Shutdown { .. } => "shutdown",
            Request::RunScaffold { .. } => "run",
            Request::Resume { .. } => "run",
            Request::Complete { .. } => "complete",
            Request::ListModels { .. } => "list_models",
            Request::CreateSandbox { .. } => "create",
            Request::MissingImages { .. } => "missing_images",
            Request::Exec { .. } => "exec",
            Request::ReadFile { .. } => "read_file",
            Request::WriteFile { .. } => "write_file",
            Request::CloseSandbox { .. } => "close",
        }
    }
}

/// One registered kind of the plugin.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct KindInfo {
    pub role: Role,
    pub kind: String,
    pub description: String,
    pub version: String,
}

/// What the host needs to know about a built component to stand in for it.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "role", rename_all = "snake_case")]
pub enum Built {
    Environment {
        action_space: ActionSpace,
        default_evaluators: Vec<(String, Value)>,
        facts: Value,
    },
    Evaluator {
        name: String,
    },
    Exporter {
        extension: String,
        file_name: Option<String>,
    },
    // ABI 2 and later.
    Scaffold {
        required_actions: ActionSpace,
    },
    Model {
        description: ModelDescription,
    },
    Sandbox {
        describe: Value,
        runs_images: bool,
    },
}

/// A successful answer.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "reply", rename_all = "snake_case")]
pub enum Reply {
    Kinds {
        kinds: Vec<KindInfo>,
    },
    Built {
        handle: u64,
        built: Built,
    },
    Done,
    Evaluation {
        evaluation: Evaluation,
    },
    /// Bytes an exporter wrote, and how many training examples they hold.
    Exported {
        examples: usize,
        #[serde(with = "base64_bytes")]
        bytes: Vec<u8>,
    },
    Tasks {
        tasks: Vec<Task>,
    },
    Started {
        episode: u64,
        opening: Vec<Message>,
        tools: Vec<ToolSchema>,
    },
    Observation {
        observation: Observation,
    },
    Artifacts {
        artifacts: Artifacts,
    },
    // ABI 2 and later.
    /// A scaffold's rollout `rollout` after a request.
    Scaffold {
        rollout: u64,
        step: ScaffoldStep,
    },
    Completion {
        completion: Box<Completion>,
    },
    Models {
        models: Option<Vec<String>>,
    },
    Sandbox {
        sandbox: u64,
        working_dir: String,
        /// `Sandbox::endpoint` of the port the spec asked to serve.
        #[serde(default, skip_serializing_if = "Option::is_none")]
        endpoint: Option<String>,
    },
    Images {
        images: Vec<String>,
    },
    Exec {
        result: ExecResult,
    },
    Bytes {
        #[serde(with = "base64_bytes")]
        bytes: Vec<u8>,
    },
}

/// Which of the host's error types an error becomes.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum ErrorKind {
    /// A component's config was refused; `path` names the field.
    Config,
    /// The environment could not list its tasks.
    Tasks,
    /// An episode could not start.
    Start,
    /// An environment or episode failed while running.
    Runtime,
    /// The task lacks what the evaluator needs.
    Unscorable,
    /// The evaluator failed.
    Evaluator,
    /// The exporter could not represent a record.
    Export,
    /// The plugin's code panicked.
    Panic,
    /// The request made no sense to the plugin (unknown handle, undecodable bytes).
    Protocol,
    /// A model backend's error; `detail` holds the `ModelError`.
    Model,
    /// A sandbox's error; `detail` holds the `SandboxError`.
    Sandbox,
}

/// A failed call.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct WireError {
    pub kind: ErrorKind,
    pub message: String,
    /// The config field, for [`ErrorKind::Config`].
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub path: Vec<String>,
    /// The error as its own serde type, for [`ErrorKind::Model`] and [`ErrorKind::Sandbox`].
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub detail: Option<Box<Value>>,
}

impl WireError {
    pub fn new(kind: ErrorKind, message: impl Into<String>) -> Self {
        WireError {
            kind,
            message: message.into(),
            path: Vec::new(),
            detail: None,
        }
    }

    /// A model backend's error, whole.
    pub fn model(e: &ModelError) -> Self {
        WireError {
            detail: serde_json::to_value(e).ok().map(Box::new),
            ..WireError::new(ErrorKind::Model, e.to_string())
        }
    }

    /// A sandbox's error, whole.
    pub fn sandbox(e: &SandboxError) -> Self {
        WireError {
            detail: serde_json::to_value(e).ok().map(Box::new),
            ..WireError::new(ErrorKind::Sandbox, e.to_string())
        }
    }

    /// The model error this carries, if it is one.
    pub fn as_model(&self) -> Option<ModelError> {
        let detail = self
            .detail
            .as_deref()
            .filter(|_| self.kind == ErrorKind::Model)?;
        serde_json::from_value(detail.clone()).ok()
    }

    /// The sandbox error this carries, if it is one.
    pub fn as_sandbox(&self) -> Option<SandboxError> {
        let detail = self
            .detail
            .as_deref()
            .filter(|_| self.kind == ErrorKind::Sandbox)?;
        serde_json::from_value(detail.clone()).ok()
    }
}

/// The answer to one request.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Response {
    Ok(Reply),
    Error(WireError),
}

impl From<Result<Reply, WireError>> for Response {
    fn from(r: Result<Reply, WireError>) -> Self {
        match r {
            Ok(reply) => Response::Ok(reply),
            Err(e) => Response::Error(e),
        }
    }
}

impl From<Response> for Result<Reply, WireError> {
    fn from(r: Response) -> Self {
        match r {
            Response::Ok(reply) => Ok(reply),
            Response::Error(e) => Err(e),
        }
    }
}

/// Encodes a request or response.
pub fn encode<T: Serialize>(value: &T) -> Vec<u8> {
    // The wire types hold only strings, numbers, maps with string keys and JSON values, which
    // serde_json always serializes.
    serde_json::to_vec(value).unwrap_or_else(|e| {
        serde_json::to_vec(&Response::Error(WireError::new(
            ErrorKind::Protocol,
            format!("cannot encode: {e}"),
        )))
        .unwrap_or_default()
    })
}

/// Decodes a request or response.
pub fn decode<T: for<'de> Deserialize<'de>>(bytes: &[u8]) -> Result<T, String> {
    serde_json::from_slice(bytes).map_err(|e| e.to_string())
}

mod base64_bytes {
    use base64::Engine as _;
    use serde::{Deserialize, Deserializer, Serializer};

    pub fn serialize<S: Serializer>(bytes: &[u8], s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(&base64::engine::general_purpose::STANDARD.encode(bytes))
    }

    pub fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<Vec<u8>, D::Error> {
        let text = String::deserialize(d)?;
        base64::engine::general_purpose::STANDARD
            .decode(text)
            .map_err(serde::de::Error::custom)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;
    use trawl_core::strategies as st;

    fn role() -> impl Strategy<Value = Role> {
        proptest::sample::select(Role::ALL.to_vec())
    }

    fn context() -> impl Strategy<Value = Context> {
        ("(/[a-z0-9 ._-]{1,8}){0,3}", any::<u64>(), "\\PC{0,12}").prop_map(
            |(base_dir, seed, run_name)| Context {
                base_dir: base_dir.into(),
                seed,
                run_name,
            },
        )
    }

    fn request() -> impl Strategy<Value = Request> {
        let h = any::<u64>();
        prop_oneof![
            Just(Request::Kinds),
            (role(), "[a-z_]{1,10}", st::json_value(), context()).prop_map(
                |(role, kind, settings, context)| Request::Build {
                    role,
                    kind,
                    settings,
                    context
                }
            ),
            h.prop_map(|handle| Request::Release { handle }),
            (h, st::record()).prop_map(|(handle, r)| Request::Evaluate {
                handle,
                record: Box::new(r)
            }),
            (h, st::record()).prop_map(|(handle, r)| Request::ExportRecord {
                handle,
                record: Box::new(r)
            }),
            h.prop_map(|handle| Request::ExportFinish { handle }),
            h.prop_map(|handle| Request::Tasks { handle }),
            (h, st::task()).prop_map(|(handle, task)| Request::Start { handle, task }),
            (h, st::action()).prop_map(|(episode, action)| Request::Act { episode, action }),
            h.prop_map(|episode| Request::Finish { episode }),
            h.prop_map(|handle| Request::Shutdown { handle }),
            (
                h,
                proptest::collection::vec(st::message(), 0..3),
                any::<u32>()
            )
                .prop_map(|(handle, messages, ms)| Request::RunScaffold {
                    handle,
                    model: ModelDescription {
                        kind: "openai".into(),
                        model_id: "m".into()
                    },
                    sampling: Sampling {
                        temperature: Some(0.5),
                        ..Sampling::default()
                    },
                    transcript: Box::new(TranscriptState {
                        messages,
                        ..TranscriptState::default()
                    }),
                    elapsed_ms: u64::from(ms),
                }),
            (h, host_answer()).prop_map(|(rollout, answer)| Request::Resume { rollout, answer }),
            (h, proptest::collection::vec(st::message(), 0..3)).prop_map(|(handle, messages)| {
                Request::Complete {
                    handle,
                    request: Box::new(CompletionRequest {
                        messages,
                        tools: Vec::new(),
                        sampling: Sampling::default(),
                    }),
                }
            }),
            (
                h,
                "\\PC{0,20}",
                proptest::collection::vec(any::<u8>(), 0..40)
            )
                .prop_map(|(sandbox, path, bytes)| Request::WriteFile {
                    sandbox,
                    path,
                    bytes
                }),
            (h, "\\PC{0,20}").prop_map(|(sandbox, command)| Request::Exec {
                sandbox,
                command,
                limits: ExecLimits::default()
            }),
        ]
    }

    fn host_answer() -> impl Strategy<Value = HostAnswer> {
        prop_oneof![
            (st::message(), any::<u32>()).prop_map(|(message, n)| HostAnswer::Completion {
                result: Ok(Box::new(Completion {
                    message,
                    finish_reason: trawl_core::model::FinishReason::Stop,
                    usage: trawl_core::model::Usage {
                        prompt_tokens: u64::from(n),
                        completion_tokens: 1,
                        model_calls: 1
                    },
                    tokens: None,
                }))
            }),
            "\\PC{0,20}".prop_map(|m| HostAnswer::Completion {
                result: Err(ModelError::ContextLength(m))
            }),
            (any::<u16>(), "\\PC{0,20}").prop_map(|(status, message)| HostAnswer::Completion {
                result: Err(ModelError::Rejected { status, message })
            }),
            st::observation().prop_map(|o| HostAnswer::Observation { result: Ok(o) }),
            "\\PC{0,20}".prop_map(|m| HostAnswer::Observation {
                result: Err(EnvironmentError::Runtime(m))
            }),
        ]
    }

    fn built() -> impl Strategy<Value = Built> {
        prop_oneof![
            (
                st::action_space(),
                proptest::collection::vec(("[a-z_]{1,8}", st::json_value()), 0..3),
                st::json_value()
            )
                .prop_map(|(action_space, default_evaluators, facts)| {
                    Built::Environment {
                        action_space,
                        default_evaluators,
                        facts,
                    }
                }),
            "\\PC{0,12}".prop_map(|name| Built::Evaluator { name }),
            ("[a-z]{1,5}", proptest::option::of("[a-z.]{1,12}")).prop_map(
                |(extension, file_name)| Built::Exporter {
                    extension,
                    file_name
                }
            ),
        ]
    }

    fn reply() -> impl Strategy<Value = Reply> {
        let kind = (role(), "[a-z_]{1,8}", "\\PC{0,20}", "[0-9.]{1,6}").prop_map(
            |(role, kind, description, version)| KindInfo {
                role,
                kind,
                description,
                version,
            },
        );
        prop_oneof![
            proptest::collection::vec(kind, 0..4).prop_map(|kinds| Reply::Kinds { kinds }),
            (any::<u64>(), built()).prop_map(|(handle, built)| Reply::Built { handle, built }),
            Just(Reply::Done),
            st::evaluation().prop_map(|evaluation| Reply::Evaluation { evaluation }),
            (
                any::<usize>(),
                proptest::collection::vec(any::<u8>(), 0..64)
            )
                .prop_map(|(examples, bytes)| Reply::Exported { examples, bytes }),
            proptest::collection::vec(st::task(), 0..4).prop_map(|tasks| Reply::Tasks { tasks }),
            (
                any::<u64>(),
                proptest::collection::vec(st::message(), 0..3),
                proptest::collection::vec(st::tool_schema(), 0..3)
            )
                .prop_map(|(episode, opening, tools)| Reply::Started {
                    episode,
                    opening,
                    tools
                }),
            st::observation().prop_map(|observation| Reply::Observation { observation }),
            st::artifacts().prop_map(|artifacts| Reply::Artifacts { artifacts }),
            (any::<u64>(), st::action()).prop_map(|(rollout, action)| Reply::Scaffold {
                rollout,
                step: ScaffoldStep::Ask {
                    ask: HostAsk::Act { action }
                }
            }),
            (any::<u64>(), proptest::collection::vec(st::message(), 0..3)).prop_map(
                |(rollout, messages)| Reply::Scaffold {
                    rollout,
                    step: ScaffoldStep::Done {
                        result: Ok(ScaffoldOutcome {
                            exit_status: trawl_core::ExitStatus::Submitted,
                            submission: Some("7".into()),
                        }),
                        transcript: Box::new(TranscriptState {
                            messages,
                            ..TranscriptState::default()
                        }),
                    }
                }
            ),
            "\\PC{0,20}".prop_map(|m| Reply::Scaffold {
                rollout: 1,
                step: ScaffoldStep::Done {
                    result: Err(ScaffoldError::Model(ModelError::Backend(m))),
                    transcript: Box::default(),
                }
            }),
            proptest::collection::vec(any::<u8>(), 0..40).prop_map(|bytes| Reply::Bytes { bytes }),
            (any::<u64>(), "\\PC{0,12}").prop_map(|(sandbox, working_dir)| Reply::Sandbox {
                sandbox,
                working_dir,
                endpoint: Some("172.18.0.2:8000".into()),
            }),
        ]
    }

    fn error() -> impl Strategy<Value = WireError> {
        (
            proptest::sample::select(vec![
                ErrorKind::Config,
                ErrorKind::Tasks,
                ErrorKind::Start,
                ErrorKind::Runtime,
                ErrorKind::Unscorable,
                ErrorKind::Evaluator,
                ErrorKind::Export,
                ErrorKind::Panic,
                ErrorKind::Protocol,
                ErrorKind::Model,
                ErrorKind::Sandbox,
            ]),
            "\\PC{0,30}",
            proptest::collection::vec("[a-z0-9_]{1,6}", 0..3),
        )
            .prop_map(|(kind, message, path)| WireError {
                kind,
                message,
                path,
                detail: None,
            })
    }

    proptest! {
        #[test]
        fn every_request_round_trips(r in request()) {
            let back: Request = decode(&encode(&r)).unwrap();
            prop_assert_eq!(back, r);
        }

        #[test]
        fn every_response_round_trips(
            r in prop_oneof![reply().prop_map(Response::Ok), error().prop_map(Response::Error)]
        ) {
            let back: Response = decode(&encode(&r)).unwrap();
            prop_assert_eq!(back, r);
        }

        #[test]
        fn truncated_bytes_are_an_error_not_a_panic(r in request(), cut in 0usize..1000) {
            let bytes = encode(&r);
            let cut = cut.min(bytes.len().saturating_sub(1));
            prop_assert!(decode::<Request>(&bytes[..cut]).is_err());
        }
    }

    #[test]
    fn model_and_sandbox_errors_cross_whole() {
        let e = ModelError::Unavailable {
            attempts: 3,
            elapsed: std::time::Duration::from_millis(1500),
            last: "connection refused".into(),
        };
        let back: Response = decode(&encode(&Response::Error(WireError::model(&e)))).unwrap();
        let Response::Error(w) = back else { panic!() };
        assert_eq!(w.as_model(), Some(e));
        assert_eq!(w.as_sandbox(), None);
        let s = SandboxError::OutsidePath("/etc".into());
        assert_eq!(WireError::sandbox(&s).as_sandbox(), Some(s));
    }

    #[test]
    fn the_wire_shape_is_stable() {
        // A plugin built by another compiler reads these exact bytes.
        let r = Request::Act {
            episode: 3,
            action: Action::Answer { text: "42".into() },
        };
        assert_eq!(
            String::from_utf8(encode(&r)).unwrap(),
            r#"{"op":"act","episode":3,"action":{"type":"answer","text":"42"}}"#
        );
        let ok = Response::Ok(Reply::Exported {
            examples: 1,
            bytes: b"hi\n".to_vec(),
        });
        assert_eq!(
            String::from_utf8(encode(&ok)).unwrap(),
            r#"{"ok":{"reply":"exported","examples":1,"bytes":"aGkK"}}"#
        );
    }
}

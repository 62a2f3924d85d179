//! The plugin side of the boundary: the five exported entry points, and the objects they keep
//! alive between calls. A plugin author never calls anything here; linking the crate is enough.
//!
//! Everything here is safe Rust. The host writes requests into buffers this side allocated, so
//! the plugin never reads memory it did not allocate; buffers are `Vec`s kept in a table and
//! freed by id. Every entry point runs under `catch_unwind`, so a panic in plugin code becomes an
//! error answer for that one call and never unwinds into the host.

use std::collections::HashMap;
use std::panic::{catch_unwind, AssertUnwindSafe};
use std::sync::{Arc, Mutex, MutexGuard, OnceLock};

use trawl_core::model::LanguageModel;
use trawl_core::registry::{Registration, StaticBuilder};
use trawl_core::sandbox::{Sandbox, SandboxBackend};
use trawl_core::{AgentScaffold, Environment, Episode, Evaluator, Exporter, Role};

use crate::rollout::{self, panic_message, Rollout};
use crate::wire::{
    decode, encode, Built, Context, ErrorKind, KindInfo, Reply, Request, Response, WireError,
};
use crate::{
    role_bit, CompatRecord, Declaration, RawBuffer, RawStr, ABI_VERSION, COMPAT_RECORD_SIZE,
    WIRE_FORMAT,
};

/// A live object the host refers to by handle. Cloning clones the handle's `Arc`, so a call takes
/// its own reference and the table's lock is not held while plugin code runs.
#[derive(Clone)]
enum Object {
    Environment(Arc<dyn Environment>),
    Evaluator(Arc<dyn Evaluator>),
    Exporter(Arc<dyn Exporter>),
    Episode(Arc<Mutex<Box<dyn Episode>>>),
    Scaffold(Arc<dyn AgentScaffold>),
    Rollout(Arc<Rollout>),
    Model(Arc<dyn LanguageModel>),
    SandboxBackend(Arc<dyn SandboxBackend>),
    Sandbox(Arc<dyn Sandbox>),
}

#[derive(Default)]
struct State {
    next_id: u64,
    buffers: HashMap<u64, Vec<u8>>,
    objects: HashMap<u64, Object>,
}

impl State {
    fn id(&mut self) -> u64 {
        self.next_id += 1;
        self.next_id
    }
}

fn state() -> MutexGuard<'static, State> {
    static STATE: OnceLock<Mutex<State>> = OnceLock::new();
    // A panic never happens while the lock is held (only map operations run under it), but a
    // poisoned table is still usable: every entry is whole.
    STATE
        .get_or_init(Mutex::default)
        .lock()
        .unwrap_or_else(|p| p.into_inner())
}

/// The plugin's own async runtime: the host's tokio is not this library's tokio.
fn runtime() -> Result<&'static tokio::runtime::Runtime, WireError> {
    static RT: OnceLock<Result<tokio::runtime::Runtime, String>> = OnceLock::new();
    RT.get_or_init(|| {
        tokio::runtime::Builder::new_multi_thread()
            .worker_threads(2)
            .thread_name("trawl-plugin")
            .enable_all()
            .build()
            .map_err(|e| e.to_string())
    })
    .as_ref()
    .map_err(|e| WireError::new(ErrorKind::Runtime, format!("plugin runtime: {e}")))
}

fn declarations() -> Vec<&'static Declaration> {
    inventory::iter::<Declaration>.into_iter().collect()
}

/// The kinds the plugin exports: those its own crate (the one with `declare_plugin!`)
/// registers. Kinds of other crates linked into the library (a built-in trawl crate used for
/// its helpers) stay inside it: the host has them already.
fn registrations() -> impl Iterator<Item = &'static Registration> {
    let own = declarations().first().map(|d| d.crate_name);
    inventory::iter::<Registration>
        .into_iter()
        .filter(move |r| own.is_none_or(|c| c == r.crate_name))
}

fn keep(bytes: Vec<u8>) -> RawBuffer {
    let mut st = state();
    let id = st.id();
    let buf = st.buffers.entry(id).or_insert(bytes);
    RawBuffer {
        ptr: buf.as_mut_ptr(),
        len: buf.len(),
        id,
    }
}

const NO_BUFFER: RawBuffer = RawBuffer {
    ptr: std::ptr::null_mut(),
    len: 0,
    id: 0,
};

/// Stage 1: the bare ABI version.
#[allow(unsafe_code)] // exporting a symbol; no unsafe operation
#[no_mangle]
pub extern "C" fn trawl_plugin_abi_version() -> u32 {
    ABI_VERSION
}

/// Stage 2: the compatibility record.
#[allow(unsafe_code)] // exporting a symbol; no unsafe operation
#[no_mangle]
pub extern "C" fn trawl_plugin_compat() -> CompatRecord {
    let found = catch_unwind(|| {
        let decls = declarations();
        let roles = registrations().fold(0, |bits, r| bits | role_bit(r.builder.role()));
        (
            decls.len() as u32,
            decls.first().map(|d| (d.name, d.version)),
            roles,
        )
    });
    let (declarations, (name, version), roles) = match found {
        Ok((n, Some(nv), roles)) => (n, nv, roles),
        Ok((n, None, roles)) => (n, ("", ""), roles),
        Err(_) => (0, ("", ""), 0),
    };
    CompatRecord {
        abi_version: ABI_VERSION,
        record_size: COMPAT_RECORD_SIZE,
        declarations,
        roles,
        plugin_name: RawStr::new(name),
        plugin_version: RawStr::new(version),
        core_version: RawStr::new(trawl_core::engine::TRAWL_VERSION),
        wire_format: RawStr::new(WIRE_FORMAT),
    }
}

/// A zeroed buffer for the host to write a request into; `id` 0 if it could not be made.
#[allow(unsafe_code)] // exporting a symbol; no unsafe operation
#[no_mangle]
pub extern "C" fn trawl_plugin_alloc(len: usize) -> RawBuffer {
    catch_unwind(|| keep(vec![0; len])).unwrap_or(NO_BUFFER)
}

/// Frees a buffer this side handed out. Unknown ids are ignored.
#[allow(unsafe_code)] // exporting a symbol; no unsafe operation
#[no_mangle]
pub extern "C" fn trawl_plugin_free(id: u64) {
    let _ = catch_unwind(|| state().buffers.remove(&id));
}

/// Runs the request in buffer `request` (freeing it) and returns the response's buffer.
#[allow(unsafe_code)] // exporting a symbol; no unsafe operation
#[no_mangle]
pub extern "C" fn trawl_plugin_call(request: u64) -> RawBuffer {
    let response: Response = match catch_unwind(AssertUnwindSafe(|| call(request))) {
        Ok(r) => r.into(),
        Err(payload) => Response::Error(WireError::new(
            ErrorKind::Panic,
            panic_message(payload.as_ref()),
        )),
    };
    catch_unwind(AssertUnwindSafe(|| keep(encode(&response)))).unwrap_or(NO_BUFFER)
}

fn call(request: u64) -> Result<Reply, WireError> {
    let bytes = state().buffers.remove(&request).ok_or_else(|| {
        WireError::new(ErrorKind::Protocol, format!("no request buffer {request}"))
    })?;
    let req: Request = decode(&bytes).map_err(|e| {
        WireError::new(
            ErrorKind::Protocol,
            format!("cannot decode the request: {e}"),
        )
    })?;
    let rt = runtime()?;
    let _entered = rt.enter();
    dispatch(rt, req)
}

fn object(handle: u64) -> Result<Object, WireError> {
    state().objects.get(&handle).cloned().ok_or_else(|| {
        WireError::new(
            ErrorKind::Protocol,
            format!("no object with handle {handle}"),
        )
    })
}

fn wrong(handle: u64, want: &str) -> WireError {
    WireError::new(
        ErrorKind::Protocol,
        format!("handle {handle} is not an {want}"),
    )
}

fn environment(handle: u64) -> Result<Arc<dyn Environment>, WireError> {
    match object(handle)? {
        Object::Environment(e) => Ok(e),
        _ => Err(wrong(handle, "environment")),
    }
}

fn episode(handle: u64) -> Result<Arc<Mutex<Box<dyn Episode>>>, WireError> {
    match object(handle)? {
        Object::Episode(e) => Ok(e),
        _ => Err(wrong(handle, "episode")),
    }
}

fn lock_episode(
    e: &Mutex<Box<dyn Episode>>,
) -> Result<MutexGuard<'_, Box<dyn Episode>>, WireError> {
    e.lock().map_err(|_| {
        WireError::new(
            ErrorKind::Runtime,
            "the episode is unusable: an earlier call on it panicked",
        )
    })
}

fn sandbox(handle: u64) -> Result<Arc<dyn Sandbox>, WireError> {
    match object(handle)? {
        Object::Sandbox(s) => Ok(s),
        _ => Err(wrong(handle, "sandbox")),
    }
}

fn sandbox_backend(handle: u64) -> Result<Arc<dyn SandboxBackend>, WireError> {
    match object(handle)? {
        Object::SandboxBackend(b) => Ok(b),
        _ => Err(wrong(handle, "sandbox backend")),
    }
}

fn insert(object: Object) -> u64 {
    let mut st = state();
    let id = st.id();
    st.objects.insert(id, object);
    id
}

fn env_error(e: trawl_core::EnvironmentError) -> WireError {
    use trawl_core::EnvironmentError as E;
    match e {
        E::Tasks(m) => WireError::new(ErrorKind::Tasks, m),
        E::Start { message, .. } => WireError::new(ErrorKind::Start, message),
        E::Runtime(m) => WireError::new(ErrorKind::Runtime, m),
    }
}

fn dispatch(rt: &tokio::runtime::Runtime, req: Request) -> Result<Reply, WireError> {
    match req {
        Request::Kinds => Ok(Reply::Kinds {
            kinds: registrations()
                .map(|r| KindInfo {
                    role: r.builder.role(),
                    kind: r.kind.to_string(),
                    description: r.description.to_string(),
                    version: r.version.to_string(),
                })
                .collect(),
        }),
        Request::Build {
            role,
            kind,
            settings,
            context,
        } => build(role, &kind, &settings, context),
        Request::Release { handle } => {
            let gone = state().objects.remove(&handle);
            // A rollout may still be waited on by a call in flight; stopping its task ends
            // that wait too.
            if let Some(Object::Rollout(r)) = &gone {
                r.stop();
            }
            // Dropped here, inside the runtime, outside the table's lock: an episode's teardown
            // may spawn tasks or take its time.
            drop(gone);
            Ok(Reply::Done)
        }
        Request::Evaluate { handle, record } => match object(handle)? {
            Object::Evaluator(e) => rt
                .block_on(e.evaluate(&record))
                .map(|evaluation| Reply::Evaluation { evaluation })
                .map_err(|err| match err {
                    trawl_core::EvaluatorError::Unscorable { message, .. } => {
                        WireError::new(ErrorKind::Unscorable, message)
                    }
                    trawl_core::EvaluatorError::Failed { message, .. } => {
                        WireError::new(ErrorKind::Evaluator, message)
                    }
                }),
            _ => Err(wrong(handle, "evaluator")),
        },
        Request::ExportRecord { handle, record } => match object(handle)? {
            Object::Exporter(e) => {
                let mut bytes = Vec::new();
                let examples = e
                    .write(&record, &mut bytes)
                    .map_err(|err| WireError::new(ErrorKind::Export, err.to_string()))?;
                Ok(Reply::Exported { examples, bytes })
            }
            _ => Err(wrong(handle, "exporter")),
        },
        Request::ExportFinish { handle } => match object(handle)? {
            Object::Exporter(e) => {
                let mut bytes = Vec::new();
                let examples = e
                    .finish(&mut bytes)
                    .map_err(|err| WireError::new(ErrorKind::Export, err.to_string()))?;
                Ok(Reply::Exported { examples, bytes })
            }
            _ => Err(wrong(handle, "exporter")),
        },
        Request::Tasks { handle } => {
            let env = environment(handle)?;
            let tasks = rt.block_on(env.tasks()).map_err(env_error)?;
            Ok(Reply::Tasks { tasks })
        }
        Request::Start { handle, task } => {
            let env = environment(handle)?;
            let ep = rt.block_on(env.start(&task)).map_err(env_error)?;
            let (opening, tools) = (ep.opening(), ep.tools());
            let episode = insert(Object::Episode(Arc::new(Mutex::new(ep))));
            Ok(Reply::Started {
                episode,
                opening,
                tools,
            })
        }
        Request::Act {
            episode: id,
            action,
        } => {
            let ep = episode(id)?;
            let mut guard = lock_episode(&ep)?;
            let observation = rt.block_on(guard.act(&action)).map_err(env_error)?;
            Ok(Reply::Observation { observation })
        }
        Request::Finish { episode: id } => {
            let ep = episode(id)?;
            let mut guard = lock_episode(&ep)?;
            let artifacts = rt.block_on(guard.finish()).map_err(env_error)?;
            Ok(Reply::Artifacts { artifacts })
        }
        Request::Shutdown { handle } => {
            match object(handle)? {
                Object::Environment(env) => rt.block_on(env.shutdown()),
                Object::SandboxBackend(b) => rt.block_on(b.shutdown()),
                _ => return Err(wrong(handle, "environment or sandbox backend")),
            }
            Ok(Reply::Done)
        }
        Request::RunScaffold {
            handle,
            model,
            sampling,
            transcript,
            elapsed_ms,
        } => {
            let scaffold = match object(handle)? {
                Object::Scaffold(s) => s,
                _ => return Err(wrong(handle, "scaffold")),
            };
            let run = Arc::new(rollout::start(
                rt,
                scaffold,
                model,
                sampling,
                *transcript,
                elapsed_ms,
            ));
            let id = insert(Object::Rollout(run.clone()));
            step(rt, id, &run)
        }
        Request::Resume {
            rollout: id,
            answer,
        } => {
            let run = match object(id)? {
                Object::Rollout(r) => r,
                _ => return Err(wrong(id, "rollout")),
            };
            run.answer(answer)?;
            step(rt, id, &run)
        }
        Request::Complete { handle, request } => match object(handle)? {
            Object::Model(m) => rt
                .block_on(m.complete(&request))
                .map(|c| Reply::Completion {
                    completion: Box::new(c),
                })
                .map_err(|e| WireError::model(&e)),
            _ => Err(wrong(handle, "model")),
        },
        Request::ListModels { handle } => match object(handle)? {
            Object::Model(m) => rt
                .block_on(m.list_models())
                .map(|models| Reply::Models { models })
                .map_err(|e| WireError::model(&e)),
            _ => Err(wrong(handle, "model")),
        },
        Request::CreateSandbox { handle, spec } => {
            let backend = sandbox_backend(handle)?;
            let made = rt
                .block_on(backend.create(&spec))
                .map_err(|e| WireError::sandbox(&e))?;
            let working_dir = made.working_dir();
            let endpoint = spec.serve.and_then(|port| made.endpoint(port));
            let sandbox = insert(Object::Sandbox(Arc::from(made)));
            Ok(Reply::Sandbox {
                sandbox,
                working_dir,
                endpoint,
            })
        }
        Request::MissingImages { handle, images } => {
            let backend = sandbox_backend(handle)?;
            rt.block_on(backend.missing_images(&images))
                .map(|images| Reply::Images { images })
                .map_err(|e| WireError::sandbox(&e))
        }
        Request::Exec {
            sandbox: id,
            command,
            limits,
        } => rt
            .block_on(sandbox(id)?.exec(&command, &limits))
            .map(|result| Reply::Exec { result })
            .map_err(|e| WireError::sandbox(&e)),
        Request::ReadFile { sandbox: id, path } => rt
            .block_on(sandbox(id)?.read_file(&path))
            .map(|bytes| Reply::Bytes { bytes })
            .map_err(|e| WireError::sandbox(&e)),
        Request::WriteFile {
            sandbox: id,
            path,
            bytes,
        } => rt
            .block_on(sandbox(id)?.write_file(&path, &bytes))
            .map(|()| Reply::Done)
            .map_err(|e| WireError::sandbox(&e)),
        Request::CloseSandbox { sandbox: id } => rt
            .block_on(sandbox(id)?.close())
            .map(|()| Reply::Done)
            .map_err(|e| WireError::sandbox(&e)),
    }
}

/// Waits for a rollout's next step; a finished (or panicked) rollout leaves the table.
fn step(rt: &tokio::runtime::Runtime, id: u64, run: &Rollout) -> Result<Reply, WireError> {
    let next = run.next(rt);
    if !matches!(next, Ok(crate::wire::ScaffoldStep::Ask { .. })) {
        let gone = state().objects.remove(&id);
        drop(gone);
    }
    next.map(|step| Reply::Scaffold { rollout: id, step })
}

fn build(
    role: Role,
    kind: &str,
    settings: &serde_json::Value,
    context: Context,
) -> Result<Reply, WireError> {
    let reg = registrations()
        .find(|r| r.builder.role() == role && r.kind == kind)
        .ok_or_else(|| {
            WireError::new(
                ErrorKind::Protocol,
                format!("this plugin registers no {role} kind `{kind}`"),
            )
        })?;
    let cx: trawl_core::BuildContext = context.into();
    let config = |e: trawl_core::ComponentError| WireError {
        path: e.path,
        ..WireError::new(ErrorKind::Config, e.message)
    };
    let (object, built) = match reg.builder {
        StaticBuilder::Environment(f) => {
            let env = f(settings, &cx).map_err(config)?;
            let built = Built::Environment {
                action_space: env.action_space(),
                default_evaluators: env.default_evaluators(),
                facts: env.facts(),
            };
            (Object::Environment(env), built)
        }
        StaticBuilder::Evaluator(f) => {
            let e = f(settings, &cx).map_err(config)?;
            let built = Built::Evaluator {
                name: e.name().to_string(),
            };
            (Object::Evaluator(e), built)
        }
        StaticBuilder::Exporter(f) => {
            let e = f(settings, &cx).map_err(config)?;
            let built = Built::Exporter {
                extension: e.extension().to_string(),
                file_name: e.file_name().map(str::to_string),
            };
            (Object::Exporter(e), built)
        }
        StaticBuilder::Scaffold(f) => {
            let s = f(settings, &cx).map_err(config)?;
            let built = Built::Scaffold {
                required_actions: s.required_actions(),
            };
            (Object::Scaffold(s), built)
        }
        StaticBuilder::Model(f) => {
            let m = f(settings, &cx).map_err(config)?;
            let built = Built::Model {
                description: m.describe(),
            };
            (Object::Model(m), built)
        }
        StaticBuilder::Sandbox(f) => {
            let b = f(settings, &cx).map_err(config)?;
            let built = Built::Sandbox {
                describe: b.describe(),
                runs_images: b.runs_images(),
            };
            (Object::SandboxBackend(b), built)
        }
    };
    Ok(Reply::Built {
        handle: insert(object),
        built,
    })
}

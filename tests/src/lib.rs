//! trawl's test kit: a real OpenAI-compatible chat-completions server on 127.0.0.1, speaking
//! HTTP/1.1 over a real socket, with scripted replies, tool calls and faults (429 with
//! Retry-After, 500, a garbage body, a hang, a dropped connection). Tests and benchmarks start
//! it in-process or as the `trawl-mock-server` binary.
//!
//! Over 800 lines, and test code only: the server plus the helpers the cross-crate tests share
//! (policies, run and export helpers, SWE fixes, plugin libraries, trainer venvs, the OpenEnv
//! server). The next split is by those groups, one file each.

/// What a test needs from the machine (a missing tool fails or is counted as a skip).
pub use trawl_test_needs as needs;

use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use serde_json::{json, Value};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};

/// What the server does with one request.
#[derive(Debug, Clone)]
pub enum Reply {
    /// A 200 chat completion whose assistant message has this content.
    Text(String),
    /// A 200 chat completion calling one tool.
    ToolCall { name: String, arguments: String },
    /// Any status and body, with optional extra headers.
    Raw {
        status: u16,
        body: String,
        headers: Vec<(String, String)>,
    },
    /// Read the request, then close the connection without answering.
    Drop,
    /// Read the request, then never answer.
    Hang,
    /// Send headers promising more body than is sent, then close.
    CutBody,
    /// Wait, then do the inner reply.
    Delayed(Duration, Box<Reply>),
    /// A 200 whose body is `bytes` long (the start of a completion, then filler), streamed in
    /// chunks and never held whole; with `declare_length` the size is in Content-Length, else
    /// it is sent chunked.
    Flood { bytes: u64, declare_length: bool },
    /// A 200 whose chunked body never ends: `{"status": "healthy", "padding": "` and then a
    /// kibibyte of filler every `every`, for as long as the client reads (a stuck or hostile
    /// server: the body stays small for a while and is never whole).
    Trickle { every: Duration },
}

impl Reply {
    pub fn text(s: impl Into<String>) -> Self {
        Reply::Text(s.into())
    }

    pub fn status(status: u16, body: impl Into<String>) -> Self {
        Reply::Raw {
            status,
            body: body.into(),
            headers: Vec::new(),
        }
    }

    /// 429 with a Retry-After header.
    pub fn too_many(retry_after: &str) -> Self {
        Reply::Raw {
            status: 429,
            body: r#"{"error":{"message":"rate limited"}}"#.into(),
            headers: vec![("Retry-After".into(), retry_after.into())],
        }
    }
}

/// The model ids the server lists at `GET /models`.
pub const SERVED_MODELS: [&str; 2] = ["mock", "mock-large"];

/// Decides the reply to each request body.
pub type Handler = Arc<dyn Fn(&Value) -> Reply + Send + Sync>;

/// A running server; stops when dropped.
pub struct ScriptedServer {
    pub addr: SocketAddr,
    requests: Arc<Mutex<Vec<Value>>>,
    task: tokio::task::JoinHandle<()>,
}

impl Drop for ScriptedServer {
    fn drop(&mut self) {
        self.task.abort();
    }
}

impl ScriptedServer {
    /// Starts a server on 127.0.0.1 with a free port.
    pub async fn start(handler: Handler) -> std::io::Result<Self> {
        Self::start_on("127.0.0.1:0", handler).await
    }

    pub async fn start_on(bind: &str, handler: Handler) -> std::io::Result<Self> {
        let listener = TcpListener::bind(bind).await?;
        let addr = listener.local_addr()?;
        let requests = Arc::new(Mutex::new(Vec::new()));
        let log = requests.clone();
        let task = tokio::spawn(async move {
            loop {
                let Ok((stream, _)) = listener.accept().await else {
                    continue;
                };
                let handler = handler.clone();
                let log = log.clone();
                tokio::spawn(async move {
                    let _ = serve_connection(stream, handler, log).await;
                });
            }
        });
        Ok(ScriptedServer {
            addr,
            requests,
            task,
        })
    }

    /// Replies from a fixed script, one per request, repeating the last one.
    pub async fn scripted(replies: Vec<Reply>) -> std::io::Result<Self> {
        let script = Arc::new(Mutex::new(
            replies
                .into_iter()
                .collect::<std::collections::VecDeque<_>>(),
        ));
        Self::start(Arc::new(move |_| {
            let mut s = script.lock().unwrap_or_else(|p| p.into_inner());
            if s.len() > 1 {
                s.pop_front().unwrap_or(Reply::Drop)
            } else {
                s.front().cloned().unwrap_or(Reply::Drop)
            }
        }))
        .await
    }

    /// `http://127.0.0.1:PORT/v1`
    pub fn base_url(&self) -> String {
        format!("http://{}/v1", self.addr)
    }

    /// Every request body received so far.
    pub fn requests(&self) -> Vec<Value> {
        self.requests
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .clone()
    }
}

/// A chat-completions response body.
pub fn completion_body(message: Value, finish_reason: &str) -> String {
    json!({
        "id": "chatcmpl-test",
        "object": "chat.completion",
        "model": "scripted",
        "choices": [{"index": 0, "message": message, "finish_reason": finish_reason}],
        "usage": {"prompt_tokens": 12, "completion_tokens": 5, "total_tokens": 17}
    })
    .to_string()
}

async fn serve_connection(
    mut stream: TcpStream,
    handler: Handler,
    log: Arc<Mutex<Vec<Value>>>,
) -> std::io::Result<()> {
    let mut buf = Vec::with_capacity(8192);
    loop {
        // Read one request: headers, then Content-Length bytes of body.
        let header_end = loop {
            if let Some(i) = find(&buf, b"\r\n\r\n") {
                break i + 4;
            }
            let mut chunk = [0u8; 8192];
            let n = stream.read(&mut chunk).await?;
            if n == 0 {
                return Ok(());
            }
            buf.extend_from_slice(&chunk[..n]);
        };
        let head = String::from_utf8_lossy(&buf[..header_end]).to_lowercase();
        let length: usize = head
            .lines()
            .find_map(|l| l.strip_prefix("content-length:"))
            .and_then(|v| v.trim().parse().ok())
            .unwrap_or(0);
        while buf.len() < header_end + length {
            let mut chunk = [0u8; 8192];
            let n = stream.read(&mut chunk).await?;
            if n == 0 {
                return Ok(());
            }
            buf.extend_from_slice(&chunk[..n]);
        }
        let body: Value =
            serde_json::from_slice(&buf[header_end..header_end + length]).unwrap_or(Value::Null);
        let buf_head = buf[..header_end].to_vec();
        buf.drain(..header_end + length);
        // `GET .../models` (what `trawl check --ping` asks): the models this server plays.
        if head.starts_with("get ") && head.lines().next().is_some_and(|l| l.contains("/models")) {
            let payload = json!({"object": "list", "data": SERVED_MODELS.iter().map(|id| json!({"id": id, "object": "model", "owned_by": "trawl-tests"})).collect::<Vec<_>>()}).to_string();
            let response = format!(
                "HTTP/1.1 200 OK\r\nContent-Type: application/json\r\nContent-Length: {}\r\n\r\n{payload}",
                payload.len()
            );
            stream.write_all(response.as_bytes()).await?;
            continue;
        }
        // The log keeps the Authorization header beside the body, for tests of API keys.
        let mut logged = body.clone();
        if let (Some(auth), Value::Object(o)) = (
            String::from_utf8_lossy(&buf_head).lines().find_map(|l| {
                let (k, v) = l.split_once(':')?;
                k.eq_ignore_ascii_case("authorization")
                    .then(|| v.trim().to_string())
            }),
            &mut logged,
        ) {
            o.insert("_authorization".into(), Value::String(auth));
        }
        log.lock().unwrap_or_else(|p| p.into_inner()).push(logged);
        let mut reply = handler(&body);
        while let Reply::Delayed(d, inner) = reply {
            tokio::time::sleep(d).await;
            reply = *inner;
        }
        let (status, payload, headers) = match reply {
            Reply::Text(content) => (
                200,
                completion_body(json!({"role": "assistant", "content": content}), "stop"),
                Vec::new(),
            ),
            Reply::ToolCall { name, arguments } => (
                200,
                completion_body(
                    json!({"role": "assistant", "content": null, "tool_calls": [
                        {"id": "call_1", "type": "function", "function": {"name": name, "arguments": arguments}}
                    ]}),
                    "tool_calls",
                ),
                Vec::new(),
            ),
            Reply::Raw {
                status,
                body,
                headers,
            } => (status, body, headers),
            Reply::Drop => return Ok(()),
            Reply::Hang => {
                tokio::time::sleep(Duration::from_secs(3600)).await;
                return Ok(());
            }
            Reply::Flood {
                bytes,
                declare_length,
            } => {
                let framing = if declare_length {
                    format!("Content-Length: {bytes}")
                } else {
                    "Transfer-Encoding: chunked".to_string()
                };
                let head = format!(
                    "HTTP/1.1 200 OK\r\nContent-Type: application/json\r\n{framing}\r\n\r\n"
                );
                stream.write_all(head.as_bytes()).await?;
                let start = br#"{"choices": [{"message": {"role": "assistant", "content": ""#;
                let filler = vec![b'a'; 64 << 10];
                let mut sent = 0u64;
                while sent < bytes {
                    let piece: &[u8] = if sent == 0 { start } else { &filler };
                    let piece = &piece[..piece.len().min((bytes - sent) as usize)];
                    let written = if declare_length {
                        stream.write_all(piece).await
                    } else {
                        let mut framed = format!("{:x}\r\n", piece.len()).into_bytes();
                        framed.extend_from_slice(piece);
                        framed.extend_from_slice(b"\r\n");
                        stream.write_all(&framed).await
                    };
                    if written.is_err() {
                        // The client stopped reading: what a capped reader does.
                        return Ok(());
                    }
                    sent += piece.len() as u64;
                }
                if !declare_length {
                    stream.write_all(b"0\r\n\r\n").await?;
                }
                continue;
            }
            Reply::Trickle { every } => {
                let head = "HTTP/1.1 200 OK\r\nContent-Type: application/json\r\nTransfer-Encoding: chunked\r\n\r\n";
                stream.write_all(head.as_bytes()).await?;
                let start = br#"{"status": "healthy", "padding": ""#;
                let filler = vec![b'a'; 1 << 10];
                let mut first = true;
                loop {
                    let piece: &[u8] = if first { start } else { &filler };
                    first = false;
                    let mut framed = format!("{:x}\r\n", piece.len()).into_bytes();
                    framed.extend_from_slice(piece);
                    framed.extend_from_slice(b"\r\n");
                    if stream.write_all(&framed).await.is_err() {
                        // The client gave up: what a deadline on the whole answer does.
                        return Ok(());
                    }
                    tokio::time::sleep(every).await;
                }
            }
            Reply::CutBody => {
                let head = "HTTP/1.1 200 OK\r\nContent-Type: application/json\r\nContent-Length: 1000\r\n\r\n{\"choices\": [";
                stream.write_all(head.as_bytes()).await?;
                stream.flush().await?;
                return Ok(());
            }
            Reply::Delayed(..) => unreachable!("delays are unwrapped above"),
        };
        let mut response = format!(
            "HTTP/1.1 {status} {}\r\nContent-Type: application/json\r\nContent-Length: {}\r\n",
            reason(status),
            payload.len()
        );
        for (k, v) in headers {
            response.push_str(&format!("{k}: {v}\r\n"));
        }
        response.push_str("\r\n");
        response.push_str(&payload);
        stream.write_all(response.as_bytes()).await?;
    }
}

fn find(hay: &[u8], needle: &[u8]) -> Option<usize> {
    hay.windows(needle.len()).position(|w| w == needle)
}

fn reason(status: u16) -> &'static str {
    match status {
        200 => "OK",
        400 => "Bad Request",
        401 => "Unauthorized",
        404 => "Not Found",
        429 => "Too Many Requests",
        500 => "Internal Server Error",
        503 => "Service Unavailable",
        _ => "Status",
    }
}

/// The first user message of a chat-completions request.
pub fn first_user_message(body: &Value) -> String {
    body["messages"]
        .as_array()
        .and_then(|m| m.iter().find(|m| m["role"] == "user"))
        .and_then(|m| m["content"].as_str())
        .unwrap_or("")
        .to_string()
}

/// How many assistant messages a chat-completions request holds: a scripted policy's step.
pub fn assistant_turns(body: &Value) -> usize {
    body["messages"]
        .as_array()
        .map(|m| m.iter().filter(|m| m["role"] == "assistant").count())
        .unwrap_or(0)
}

/// Whole numbers in `text`, in order.
pub fn numbers_in(text: &str) -> Vec<i64> {
    text.split(|c: char| !c.is_ascii_digit())
        .filter(|s| !s.is_empty())
        .filter_map(|s| s.parse().ok())
        .collect()
}

/// The shell-agent benchmark's policy: `steps` replies running `command`, then the submit
/// command, each in one fenced block tagged `fence` (`bash` for trawl's `bash` scaffold,
/// `mswea_bash_command` for mini-swe-agent's text mode).
pub fn shell_steps_policy(body: &Value, steps: usize, fence: &str, command: &str) -> Reply {
    let run = if assistant_turns(body) < steps {
        command
    } else {
        "echo COMPLETE_TASK_AND_SUBMIT_FINAL_OUTPUT"
    };
    Reply::Text(format!("THOUGHT: next step.\n\n```{fence}\n{run}\n```"))
}

/// A simple deterministic policy that makes runs with both outcomes: it answers the sum of the
/// first two numbers of the task (right for the "gets N more" problems, wrong for most others).
/// With tools offered and no tool result yet, it first calls `calculator` on that sum.
pub fn adder_policy(body: &Value) -> Reply {
    let nums = numbers_in(&first_user_message(body));
    let expr = match nums.as_slice() {
        [a, b, ..] => format!("{a} + {b}"),
        [a] => a.to_string(),
        [] => "0".into(),
    };
    let has_tools = body["tools"].as_array().is_some_and(|t| !t.is_empty());
    let messages = body["messages"].as_array().cloned().unwrap_or_default();
    let tool_result = messages
        .iter()
        .rev()
        .find(|m| m["role"] == "tool")
        .and_then(|m| m["content"].as_str());
    match (has_tools, tool_result) {
        (true, None) => Reply::ToolCall {
            name: "calculator".into(),
            arguments: json!({"expression": expr}).to_string(),
        },
        (_, Some(result)) => Reply::text(format!("The answer is {result}.")),
        (false, None) => {
            let sum: i64 = nums.iter().take(2).sum();
            Reply::text(format!("Let me add them up. The answer is {sum}."))
        }
    }
}

/// A deterministic coding "model" for the code environment. `solutions` maps each function name
/// to a correct program. It answers correctly for names of even length and with a stub that
/// returns None otherwise, fixes its answer once it is shown failing tests, plays the tester
/// (copying the asserts shown in the problem) when its system prompt says so, and with tools
/// offered first runs its program with `run_python`.
pub fn coder_policy(solutions: std::collections::HashMap<String, String>) -> Handler {
    Arc::new(move |body: &Value| {
        let messages = body["messages"].as_array().cloned().unwrap_or_default();
        let text_of = |role: &str| -> Vec<String> {
            messages
                .iter()
                .filter(|m| m["role"] == role)
                .filter_map(|m| m["content"].as_str().map(str::to_string))
                .collect()
        };
        let users = text_of("user");
        let problem = users.first().cloned().unwrap_or_default();
        let system = text_of("system").join("\n");
        let name = solutions
            .keys()
            .filter(|k| problem.contains(&format!("{k}(")))
            .max_by_key(|k| k.len())
            .cloned()
            .unwrap_or_else(|| "f".into());
        if system.contains("tester") {
            let asserts: Vec<&str> = problem
                .lines()
                .filter(|l| l.trim_start().starts_with("assert "))
                .collect();
            return Reply::text(format!("```python\n{}\n```", asserts.join("\n")));
        }
        let good = solutions.get(&name).cloned().unwrap_or_default();
        let shown_failure = users.iter().skip(1).any(|u| u.contains("FAIL"));
        let program = if name.len() % 2 == 0 || shown_failure {
            good
        } else {
            format!("def {name}(*args):\n    return None\n")
        };
        let has_tools = body["tools"].as_array().is_some_and(|t| !t.is_empty());
        let tool_result = messages.iter().any(|m| m["role"] == "tool");
        if has_tools && !tool_result {
            return Reply::ToolCall {
                name: "run_python".into(),
                arguments: json!({"code": format!("{program}\nprint('defined', {name}.__name__)")})
                    .to_string(),
            };
        }
        Reply::text(format!("Here is my solution.\n```python\n{program}```"))
    })
}

/// Loads the experiment config `text` (written to `dir/experiment.toml`) and runs it into
/// `dir/run` with the built-in registry.
pub async fn run_experiment(
    text: &str,
    dir: &std::path::Path,
    stop: trawl_core::engine::StopSignal,
) -> Result<trawl_core::engine::RunSummary, trawl_core::engine::RunError> {
    let registry = trawl_core::Registry::builtin().expect("the built-in registry");
    let file = dir.join("experiment.toml");
    std::fs::write(&file, text).expect("writing the test config");
    let (config, map) = trawl_core::ExperimentConfig::load(&file, &registry)?;
    trawl_core::engine::run(
        &config,
        &map,
        &registry,
        trawl_core::engine::RunOptions {
            out: dir.join("run"),
            force: false,
            stop,
            observer: Arc::new(trawl_core::engine::Silent),
        },
    )
    .await
}

/// The built-in exporter `format`, built with `settings`.
pub fn exporter(format: &str, settings: &Value) -> Arc<dyn trawl_core::Exporter> {
    let registry = trawl_core::Registry::builtin().expect("the built-in registry");
    let trawl_core::registry::Factory::Exporter(f) = registry
        .get(trawl_core::Role::Exporter, format)
        .unwrap_or_else(|| panic!("no exporter `{format}`"))
        .factory
        .clone()
    else {
        panic!("`{format}` is not an exporter")
    };
    f(settings, &trawl_core::BuildContext::default()).expect("the exporter builds")
}

/// Exports `records` with the built-in exporter `format` (and its settings) in memory; returns
/// the JSON lines it wrote.
pub fn export_lines(
    records: &[trawl_core::TrajectoryRecord],
    format: &str,
    settings: Value,
    success_only: bool,
) -> Vec<Value> {
    let exporter = exporter(format, &settings);
    let selection = trawl_core::Selection {
        success_only,
        ..trawl_core::Selection::default()
    };
    let mut out = Vec::new();
    trawl_core::export::export_records(records, &selection, exporter.as_ref(), format, &mut out)
        .expect("the export succeeds");
    String::from_utf8(out)
        .expect("UTF-8 output")
        .lines()
        .map(|l| serde_json::from_str(l).expect("a JSON line"))
        .collect()
}

/// Runs `config` (which must produce exactly one rollout) in `dir`; returns that record.
pub async fn single_record(config: &str, dir: &std::path::Path) -> trawl_core::TrajectoryRecord {
    run_experiment(config, dir, trawl_core::engine::StopSignal::default())
        .await
        .expect("the run succeeds");
    let mut records = run_records(dir);
    assert_eq!(records.len(), 1, "one rollout");
    records.remove(0)
}

/// The `user = {...}` line of an LLM user on the OpenAI-compatible server at `base_url`
/// (model `user`, no retries).
pub fn llm_user_table(base_url: &str) -> String {
    format!(
        r#"user = {{ type = "llm", model = {{ type = "openai", base_url = "{base_url}", model = "user", retry = {{ max_attempts = 1 }} }} }}"#
    )
}

/// The records of the run in `dir/run`.
pub fn run_records(dir: &std::path::Path) -> Vec<trawl_core::TrajectoryRecord> {
    trawl_core::store::read_records(&dir.join("run").join(trawl_core::store::TRAJECTORIES))
        .map(|(records, _)| records)
        .unwrap_or_default()
}

/// One scripted fix for a SWE task: the task whose text holds `marker` is fixed by replacing
/// `buggy` with `fixed` in `path` (or, with `solve = false`, submitted untouched).
#[derive(Debug, Clone)]
pub struct SweFix {
    pub marker: String,
    pub path: String,
    pub buggy: String,
    pub fixed: String,
    pub solve: bool,
}

impl SweFix {
    /// The fix that undoes a SWE-smith bug `patch` (one hunk), for the task whose statement
    /// starts with `problem`'s first line.
    pub fn undoing(patch: &str, problem: &str, solve: bool) -> Self {
        let lines: Vec<&str> = patch.lines().collect();
        let path = lines
            .iter()
            .find_map(|l| l.strip_prefix("+++ b/"))
            .unwrap_or_default()
            .to_string();
        // The hunk read both ways: context and `+` lines are the buggy text, context and `-`
        // lines the fixed one.
        let (mut buggy, mut fixed) = (Vec::new(), Vec::new());
        for l in lines.iter().skip_while(|l| !l.starts_with("@@")).skip(1) {
            match l.split_at(l.len().min(1)) {
                ("+", rest) => buggy.push(rest),
                ("-", rest) => fixed.push(rest),
                (_, rest) => {
                    buggy.push(rest);
                    fixed.push(rest);
                }
            }
        }
        SweFix {
            marker: problem.lines().next().unwrap_or_default().to_string(),
            path,
            buggy: buggy.join("\n"),
            fixed: fixed.join("\n"),
            solve,
        }
    }
}

/// How the scripted SWE agent writes its actions.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SweStyle {
    /// mini-swe-agent text mode: a fenced bash block per reply.
    BashText,
    /// mini-swe-agent tool mode: one `bash` tool call per reply.
    BashTool,
    /// SWE-agent function calling: view, str_replace, run the tests, submit.
    ToolsNative,
    /// SWE-agent's XML text format, same steps.
    ToolsXml,
}

/// A deterministic SWE "model": reads the task, looks at the file, makes the fix (as a shell
/// command or an editor call), runs the tests, and submits. Its step is the number of assistant
/// messages so far.
pub fn swe_policy(fixes: Vec<SweFix>, style: SweStyle) -> Handler {
    Arc::new(move |body: &Value| {
        let task = first_user_message(body);
        let step = assistant_turns(body);
        let Some(fix) = fixes.iter().find(|f| task.contains(&f.marker)) else {
            return Reply::text("I do not know this task.");
        };
        let py = |s: &str| serde_json::to_string(s).unwrap_or_default();
        let edit_cmd = format!(
            "python3 - <<'TRAWL_EOF'\nimport pathlib\np = pathlib.Path({path})\ns = p.read_text()\np.write_text(s.replace({old}, {new}, 1))\nTRAWL_EOF",
            path = py(&fix.path),
            old = py(&fix.buggy),
            new = py(&fix.fixed)
        );
        let shell_steps = [
            format!("grep -n '' {} | head -50", fix.path),
            if fix.solve {
                edit_cmd
            } else {
                "echo 'I think the code is fine.'".to_string()
            },
            "python3 -m pytest -q -p no:cacheprovider 2>&1 | tail -3".to_string(),
            "echo COMPLETE_TASK_AND_SUBMIT_FINAL_OUTPUT".to_string(),
        ];
        let tool_steps: [(&str, Value); 4] = [
            (
                "str_replace_editor",
                json!({"command": "view", "path": fix.path}),
            ),
            if fix.solve {
                (
                    "str_replace_editor",
                    json!({"command": "str_replace", "path": fix.path, "old_str": fix.buggy, "new_str": fix.fixed}),
                )
            } else {
                ("bash", json!({"command": "echo 'nothing to change'"}))
            },
            (
                "bash",
                json!({"command": "python3 -m pytest -q -p no:cacheprovider 2>&1 | tail -3"}),
            ),
            ("submit", json!({})),
        ];
        let i = step.min(3);
        match style {
            SweStyle::BashText => Reply::text(format!(
                "THOUGHT: step {} of my plan.\n\n```bash\n{}\n```",
                i + 1,
                shell_steps[i]
            )),
            SweStyle::BashTool => Reply::ToolCall {
                name: "bash".into(),
                arguments: json!({"command": shell_steps[i]}).to_string(),
            },
            SweStyle::ToolsNative => Reply::ToolCall {
                name: tool_steps[i].0.into(),
                arguments: tool_steps[i].1.to_string(),
            },
            SweStyle::ToolsXml => {
                let args = tool_steps[i].1.as_object().cloned().unwrap_or_default();
                Reply::text(format!(
                    "Step {} of my plan.\n\n{}",
                    i + 1,
                    trawl_core::actions::render_xml_call(tool_steps[i].0, &args)
                ))
            }
        }
    })
}

/// Whether the Docker engine answers and holds the bundled SWE images. Where it does not, the
/// calling test is recorded as skipped under `cargo xtask test` (and returns), and fails
/// anywhere else, naming the step that builds them ([`needs::missing`]).
pub fn swe_images_present() -> bool {
    let ok = std::process::Command::new("docker")
        .args(["image", "inspect", "trawl-swe/textkit:latest"])
        .output()
        .is_ok_and(|o| o.status.success());
    if !ok {
        needs::missing(needs::DOCKER_IMAGES, "no image trawl-swe/textkit:latest");
    }
    ok
}

/// Ids of the containers, running or not, labelled as run `run`'s.
pub fn containers_of(run: &str) -> Vec<String> {
    docker_ids(&[
        "ps",
        "-aq",
        "--filter",
        &format!("label=trawl.run_id={run}"),
    ])
}

/// Ids of the snapshot images run `run` made (prepared states its episodes start from).
pub fn snapshots_of(run: &str) -> Vec<String> {
    docker_ids(&[
        "images",
        "-q",
        "--filter",
        "label=trawl.snapshot",
        "--filter",
        &format!("label=trawl.run_id={run}"),
    ])
}

fn docker_ids(args: &[&str]) -> Vec<String> {
    std::process::Command::new("docker")
        .args(args)
        .output()
        .map(|o| {
            String::from_utf8_lossy(&o.stdout)
                .split_whitespace()
                .map(str::to_string)
                .collect()
        })
        .unwrap_or_default()
}

/// The example plugins and the test fixtures, built as shared libraries with cargo (once per
/// test process) for this profile; returns the folder that holds the `lib*.so` files.
pub fn plugin_libraries() -> &'static std::path::Path {
    static BUILT: std::sync::OnceLock<std::path::PathBuf> = std::sync::OnceLock::new();
    BUILT.get_or_init(|| {
        // A test or bench binary lives in <target>/<profile>/deps/.
        let exe = std::env::current_exe().expect("own path");
        let deps = exe.parent().expect("deps folder");
        let profile_dir = if deps.file_name().is_some_and(|n| n == "deps") {
            deps.parent().expect("profile folder").to_path_buf()
        } else {
            deps.to_path_buf()
        };
        let mut cmd = std::process::Command::new(env!("CARGO"));
        cmd.args(["build", "--locked"]);
        for p in plugin_packages() {
            cmd.args(["-p", p]);
        }
        if profile_dir.file_name().is_some_and(|n| n == "release") {
            cmd.arg("--release");
        }
        let out = cmd
            .current_dir(std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join(".."))
            .output()
            .expect("cargo runs");
        assert!(
            out.status.success(),
            "building the plugins failed:\n{}",
            String::from_utf8_lossy(&out.stderr)
        );
        profile_dir
    })
}

/// The plugin crates [`plugin_libraries`] builds, from `tests/plugin-packages.txt`.
pub fn plugin_packages() -> impl Iterator<Item = &'static str> {
    include_str!("../plugin-packages.txt")
        .lines()
        .map(str::trim)
        .filter(|l| !l.is_empty() && !l.starts_with('#'))
}

/// The path of one plugin library built by [`plugin_libraries`]: `name` is the crate's name with
/// underscores (`trawl_word_game`).
pub fn plugin_library(name: &str) -> std::path::PathBuf {
    plugin_libraries().join(format!("lib{name}.so"))
}

/// The Python of a virtualenv with the trainers' libraries pinned in `tests/python/`
/// (`datasets`, `pyarrow`, `transformers`, TRL), at `target/trainers-venv`: made by
/// `tests/python/venv.py` with the system `python3 -m venv` and pip from PyPI the first time,
/// and again only when its requirement files change. `cargo xtask test` makes it beside the
/// build; a plain `cargo test` makes it here.
pub fn trainer_python() -> std::path::PathBuf {
    static READY: std::sync::OnceLock<std::path::PathBuf> = std::sync::OnceLock::new();
    READY.get_or_init(|| venv_python("trainers-venv")).clone()
}

/// The Python of a virtualenv with `openenv-core` 0.3 (`tests/python/requirements-openenv.txt`,
/// pinned), at `target/openenv-venv`, made like [`trainer_python`]'s.
pub fn openenv_python() -> std::path::PathBuf {
    static READY: std::sync::OnceLock<std::path::PathBuf> = std::sync::OnceLock::new();
    READY.get_or_init(|| venv_python("openenv-venv")).clone()
}

/// The Python of virtualenv `name` of `tests/python/venv.py`, which makes it when it is
/// missing or out of date (one process at a time; the others wait for it).
fn venv_python(name: &str) -> std::path::PathBuf {
    let script = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("python/venv.py");
    let out = std::process::Command::new("python3")
        .arg(&script)
        .arg(name)
        .output()
        .unwrap_or_else(|e| panic!("cannot run python3 {}: {e}", script.display()));
    assert!(
        out.status.success(),
        "python3 {} {name} failed:\n{}",
        script.display(),
        String::from_utf8_lossy(&out.stderr)
    );
    std::path::PathBuf::from(String::from_utf8_lossy(&out.stdout).trim())
}

/// Runs the trainers' Python (see [`trainer_python`]) with `args` in `cwd`, offline (no model
/// hub, quiet transformers), and returns its output: a test asserts on its status and text.
pub fn run_trainer_python<I, S>(args: I, cwd: &std::path::Path) -> std::process::Output
where
    I: IntoIterator<Item = S>,
    S: AsRef<std::ffi::OsStr>,
{
    std::process::Command::new(trainer_python())
        .args(args)
        .current_dir(cwd)
        .env("HF_DATASETS_OFFLINE", "1")
        .env("HF_HUB_OFFLINE", "1")
        .env("TRANSFORMERS_VERBOSITY", "error")
        .output()
        .expect("running the trainers' Python")
}

/// Runs `tests/python/check_exports.py` on `files` (format, path) with the trainers' Python and
/// the tokenizer of the GGUF model at `gguf`; returns its report, failing with its output.
pub fn check_with_trainers(gguf: &std::path::Path, files: &[(&str, std::path::PathBuf)]) -> String {
    let script = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("python/check_exports.py");
    let mut args = vec![script.into_os_string(), gguf.as_os_str().to_owned()];
    args.extend(
        files
            .iter()
            .map(|(f, p)| format!("{f}={}", p.display()).into()),
    );
    let out = run_trainer_python(args, std::path::Path::new("."));
    let report = printed(&out);
    assert!(
        out.status.success(),
        "the trainers' libraries refused an export:\n{report}"
    );
    report
}

/// The math problems `trawl_math`'s generator makes for (`seed`, `levels`, `count`), as a
/// config's `generator = { count, levels }` under `seed = ...` gets them, with their answers: a
/// scripted policy looks its task up here to answer right or wrong on purpose.
pub fn generated_answers(seed: u64, levels: &[u8], count: usize) -> Vec<(String, i64)> {
    trawl_math::generator::generate(seed, levels, count)
        .into_iter()
        .filter_map(|t| {
            let question = t.data["question"].as_str()?.to_string();
            let answer = t.data["answer"].as_str()?.parse().ok()?;
            Some((question, answer))
        })
        .collect()
}

/// Which of the math problems `answers` (see [`generated_answers`]) a request asks: its index
/// and its answer ((0, 0) when none is).
pub fn task_asked(answers: &[(String, i64)], body: &Value) -> (usize, i64) {
    let first = first_user_message(body);
    answers
        .iter()
        .enumerate()
        .find(|(_, (q, _))| first.contains(q.as_str()))
        .map(|(i, (_, n))| (i, *n))
        .unwrap_or((0, 0))
}

/// A model that solves problem i of `answers` in `tenths(i)` of ten requests (by the last digit
/// of the request's seed, so a sample's outcome is fixed by its key), answering in `\boxed{}`.
pub fn rated_math_reply(
    answers: &[(String, i64)],
    tenths: fn(usize) -> u64,
    body: &Value,
) -> Reply {
    let seed = body["seed"].as_u64().unwrap_or(0);
    let (i, n) = task_asked(answers, body);
    let answer = if seed % 10 < tenths(i) { n } else { n + 1 };
    Reply::text(format!("The answer is \\boxed{{{answer}}}."))
}

/// A vLLM-like model for the math problems `answers` (see [`generated_answers`]): right on some
/// samples of a task and wrong on others (by the request's seed, so groups have variance), a
/// calculator call with a sentence beside it when tools are offered, and token ids and logprobs
/// when asked (`return_token_ids`).
pub fn seeded_math_policy(answers: &[(String, i64)], body: &Value) -> Reply {
    let seed = body["seed"].as_u64().unwrap_or(0);
    let (_, n) = task_asked(answers, body);
    let has_tools = body["tools"].as_array().is_some_and(|t| !t.is_empty());
    let called = body["messages"]
        .as_array()
        .is_some_and(|m| m.iter().any(|m| m["role"] == "tool"));
    let answer = if seed.is_multiple_of(3) { n + 1 } else { n };
    let (message, finish) = if has_tools && !called {
        (
            json!({"role": "assistant", "content": "Let me compute that.", "tool_calls": [
                {"id": "call_1", "type": "function",
                 "function": {"name": "calculator", "arguments": json!({"expression": format!("{n}")}).to_string()}}
            ]}),
            "tool_calls",
        )
    } else {
        (
            json!({"role": "assistant", "content": format!("The answer is \\boxed{{{answer}}}.")}),
            "stop",
        )
    };
    let mut reply = json!({
        "id": "chatcmpl-trainers",
        "object": "chat.completion",
        "model": "mock",
        "choices": [{"index": 0, "message": message, "finish_reason": finish}],
        "usage": {"prompt_tokens": 20, "completion_tokens": 8, "total_tokens": 28},
    });
    if body["logprobs"] == true && body["return_token_ids"] == true {
        let text = message["content"].as_str().unwrap_or("");
        let ids: Vec<u32> = text.bytes().map(u32::from).collect();
        let first = first_user_message(body);
        reply["prompt_token_ids"] = json!(first.bytes().map(u32::from).collect::<Vec<_>>());
        reply["choices"][0]["token_ids"] = json!(ids);
        reply["choices"][0]["logprobs"] = json!({"content": ids.iter().map(|i| json!({"token": i.to_string(), "logprob": -0.25})).collect::<Vec<_>>()});
    }
    Reply::status(200, reply.to_string())
}

/// An OpenEnv environment server: `examples/openenv/guess_env.py` served by `openenv-core` 0.3
/// (from [`openenv_python`]) on a free port of 127.0.0.1, killed when dropped.
pub struct OpenEnvServer {
    child: std::process::Child,
    port: u16,
}

impl OpenEnvServer {
    /// Starts it with room for `sessions` episodes at once and waits until `/health` answers.
    pub fn start(sessions: usize) -> Self {
        use std::io::BufRead;
        let script = std::path::Path::new(env!("CARGO_MANIFEST_DIR"))
            .join("../examples/openenv/guess_env.py");
        let mut child = std::process::Command::new(openenv_python())
            .arg(script)
            .args(["--port", "0", "--sessions", &sessions.to_string()])
            .stdout(std::process::Stdio::piped())
            // Its tracebacks for the faults the tests ask for are expected; keep them out.
            .stderr(std::process::Stdio::null())
            .spawn()
            .expect("starting the OpenEnv server");
        let stdout = child.stdout.take().expect("its stdout");
        let mut first = String::new();
        std::io::BufReader::new(stdout)
            .read_line(&mut first)
            .expect("reading its port");
        let port: u16 = first
            .trim()
            .strip_prefix("PORT ")
            .and_then(|p| p.parse().ok())
            .unwrap_or_else(|| panic!("the OpenEnv server said {first:?}, not its port"));
        let server = OpenEnvServer { child, port };
        let deadline = std::time::Instant::now() + std::time::Duration::from_secs(120);
        while !server.healthy() {
            assert!(
                std::time::Instant::now() < deadline,
                "the OpenEnv server on port {port} never answered /health"
            );
            std::thread::sleep(std::time::Duration::from_millis(200));
        }
        server
    }

    pub fn base_url(&self) -> String {
        format!("http://127.0.0.1:{}", self.port)
    }

    /// Whether `GET /health` answers `healthy` (a plain HTTP/1.0 request).
    pub fn healthy(&self) -> bool {
        use std::io::{Read, Write};
        let Ok(mut s) = std::net::TcpStream::connect(("127.0.0.1", self.port)) else {
            return false;
        };
        let _ = s.set_read_timeout(Some(std::time::Duration::from_secs(5)));
        if s.write_all(b"GET /health HTTP/1.0\r\nHost: 127.0.0.1\r\n\r\n")
            .is_err()
        {
            return false;
        }
        let mut answer = String::new();
        let _ = s.read_to_string(&mut answer);
        answer.contains("healthy")
    }
}

impl Drop for OpenEnvServer {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// Runs the binary `exe` (a test's `env!("CARGO_BIN_EXE_trawl")`) with `args` in `cwd`, with
/// `env` set, no `TRAWL_PLUGIN_PATH` and no input.
pub fn run_bin(
    exe: &str,
    args: &[&str],
    cwd: &std::path::Path,
    env: &[(&str, &str)],
) -> std::process::Output {
    std::process::Command::new(exe)
        .args(args)
        .current_dir(cwd)
        .envs(env.iter().copied())
        .env_remove("TRAWL_PLUGIN_PATH")
        .stdin(std::process::Stdio::null())
        .output()
        .expect("the binary runs")
}

/// What a command printed: its standard output, then its standard error.
pub fn printed(o: &std::process::Output) -> String {
    format!(
        "{}{}",
        String::from_utf8_lossy(&o.stdout),
        String::from_utf8_lossy(&o.stderr)
    )
}

/// A Docker image that serves `examples/openenv/guess_env.py` with openenv-core on port 8000
/// (on `0.0.0.0`, one session): the SWE images' Debian Python with the packages of
/// `tests/python/requirements-openenv.txt`, installed for it (CPython 3.11, manylinux wheels)
/// by the OpenEnv venv's pip. Built once, and again when the requirements or the script change.
/// Needs [`swe_images_present`].
pub fn openenv_image() -> String {
    static READY: std::sync::OnceLock<String> = std::sync::OnceLock::new();
    READY
        .get_or_init(|| {
            let root = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("..");
            let requirements = root.join("tests/python/requirements-openenv.txt");
            let script = root.join("examples/openenv/guess_env.py");
            let stamp: u64 = [&requirements, &script]
                .iter()
                .flat_map(|p| std::fs::read(p).expect("the image's inputs"))
                .fold(0xcbf29ce484222325, |h, b| {
                    (h ^ u64::from(b)).wrapping_mul(0x100000001b3)
                });
            let tag = format!("trawl-test/openenv-guess:{stamp:016x}");
            let present = std::process::Command::new("docker")
                .args(["image", "inspect", &tag])
                .output()
                .is_ok_and(|o| o.status.success());
            if present {
                return tag;
            }
            let ctx = tempfile::tempdir().expect("a build folder");
            let run = |cmd: &mut std::process::Command| {
                let out = cmd.output().expect("running a build step");
                assert!(
                    out.status.success(),
                    "{cmd:?} failed:\n{}{}",
                    String::from_utf8_lossy(&out.stdout),
                    String::from_utf8_lossy(&out.stderr)
                );
            };
            run(std::process::Command::new(openenv_python())
                .args(["-m", "pip", "install", "--quiet", "--disable-pip-version-check"])
                .arg("--target")
                .arg(ctx.path().join("site"))
                .args(["--python-version", "3.11", "--implementation", "cp", "--abi", "cp311"])
                .args(["--platform", "manylinux2014_x86_64", "--platform", "manylinux_2_28_x86_64"])
                .args(["--only-binary=:all:", "-r"])
                .arg(&requirements));
            std::fs::copy(&script, ctx.path().join("guess_env.py")).expect("copying the script");
            std::fs::write(
                ctx.path().join("Dockerfile"),
                "FROM trawl-swe/textkit:latest\n\
                 COPY site /opt/openenv-site\n\
                 COPY guess_env.py /opt/guess_env.py\n\
                 ENV PYTHONPATH=/opt/openenv-site\n\
                 ENTRYPOINT [\"python3\", \"/opt/guess_env.py\", \"--host\", \"0.0.0.0\", \"--port\", \"8000\", \"--sessions\", \"1\"]\n",
            )
            .expect("writing the Dockerfile");
            run(std::process::Command::new("docker")
                .args(["build", "--quiet", "-t", &tag])
                .arg(ctx.path()));
            tag
        })
        .clone()
}

/// CPU seconds the whole machine has spent (every process, the kernel's work included), from
/// `/proc/stat`: on an idle machine, what a measured stretch cost wherever it was spent.
pub fn machine_cpu_secs() -> f64 {
    let stat = std::fs::read_to_string("/proc/stat").unwrap_or_default();
    let cpu = stat.lines().next().unwrap_or_default();
    // user nice system idle iowait irq softirq steal ...: all but idle and iowait, in clock
    // ticks, which /proc always counts at 100 a second (USER_HZ).
    let f: Vec<f64> = cpu
        .split_whitespace()
        .skip(1)
        .map(|v| v.parse().unwrap_or(0.0))
        .collect();
    if f.len() < 5 {
        return 0.0;
    }
    (f.iter().sum::<f64>() - f[3] - f[4]) / 100.0
}

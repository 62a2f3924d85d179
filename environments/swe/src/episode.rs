//! One `swe` episode: the agent's shell commands and tools (`bash`, `str_replace_editor`,
//! `submit`) in its working copy, and the submission as the diff of the working tree.

use std::collections::HashMap;

use serde_json::{json, Value};
use trawl_core::sandbox::{ExecLimits, ExecOutcome, SandboxError};
use trawl_core::{
    async_trait, Action, Artifacts, EnvironmentError, Episode, Message, Observation, ToolCall,
    ToolSchema,
};

use crate::editor;
use crate::instance::SweInstance;
use crate::shell::{quote, tail, GIT};
use crate::workspace::Checkout;

/// Printed as the first line of a command's output, it ends the episode and submits.
pub const SUBMIT_SENTINEL: &str = "COMPLETE_TASK_AND_SUBMIT_FINAL_OUTPUT";

/// The task as the agent first reads it.
pub fn task_text(inst: &SweInstance, workdir: &str) -> String {
    format!(
        "<pr_description>\n{}\n</pr_description>\n\nThe repository is checked out at `{workdir}` (the current folder). Make the smallest change to its non-test source files that resolves the issue above.",
        inst.problem_statement.trim()
    )
}

pub(crate) struct SweEpisode {
    pub(crate) inst: SweInstance,
    pub(crate) checkout: Option<Checkout>,
    pub(crate) limits: ExecLimits,
    pub(crate) new_files: bool,
    pub(crate) exclude: Vec<String>,
    /// Earlier contents of files the editor changed, for `undo_edit`.
    pub(crate) history: HashMap<String, Vec<Vec<u8>>>,
}

fn tool_schemas() -> Vec<ToolSchema> {
    vec![
        ToolSchema::function(
            "bash",
            "Run one shell command in the repository (no network, no interactive programs) and get its exit code and output.",
            json!({
                "type": "object",
                "properties": {"command": {"type": "string", "description": "the command to run"}},
                "required": ["command"]
            }),
        ),
        ToolSchema::function(
            "str_replace_editor",
            "View, create and edit files. `view` shows a file with line numbers (or a folder's files two levels deep); `create` writes a new file; `str_replace` replaces `old_str`, which must occur exactly once, with `new_str`; `insert` puts `new_str` after line `insert_line`; `undo_edit` reverts the last edit of a file.",
            json!({
                "type": "object",
                "properties": {
                    "command": {"type": "string", "enum": ["view", "create", "str_replace", "insert", "undo_edit"]},
                    "path": {"type": "string", "description": "absolute path, or relative to the repository"},
                    "file_text": {"type": "string", "description": "for create: the file's contents"},
                    "old_str": {"type": "string", "description": "for str_replace: the exact text to replace"},
                    "new_str": {"type": "string", "description": "for str_replace and insert: the new text"},
                    "insert_line": {"type": "integer", "description": "for insert: the line after which new_str goes (0 = top)"},
                    "view_range": {"type": "array", "items": {"type": "integer"}, "description": "for view: [first, last] line, last -1 = to the end"}
                },
                "required": ["command", "path"]
            }),
        ),
        ToolSchema::function(
            "submit",
            "Submit the current state of the repository as the fix. Ends the task.",
            json!({"type": "object", "properties": {}}),
        ),
    ]
}

impl SweEpisode {
    fn checkout(&self) -> Result<&Checkout, EnvironmentError> {
        self.checkout
            .as_ref()
            .ok_or_else(|| EnvironmentError::Runtime("the episode is over".into()))
    }

    fn path(&self, p: &str) -> Result<String, EnvironmentError> {
        let c = self.checkout()?;
        Ok(if p.starts_with('/') {
            p.to_string()
        } else {
            format!(
                "{}/{}",
                c.workdir.trim_end_matches('/'),
                p.trim_start_matches("./")
            )
        })
    }

    async fn shell(&self, command: &str) -> Result<Observation, EnvironmentError> {
        let c = self.checkout()?;
        // Both streams in one, interleaved as the agent would see them in a terminal.
        let r = c
            .sandbox
            .exec(&format!("exec 2>&1\n{command}"), &self.limits)
            .await
            .map_err(|e| EnvironmentError::Runtime(e.to_string()))?;
        let mut output = r.stdout.clone();
        if !r.stderr.is_empty() {
            output.push_str(&r.stderr);
        }
        if r.success() {
            let mut lines = output.trim_start().lines();
            if lines.next().map(str::trim) == Some(SUBMIT_SENTINEL) {
                return Ok(Observation::finished(lines.collect::<Vec<_>>().join("\n")));
            }
        }
        let note = match r.outcome {
            ExecOutcome::Exited { .. } => None,
            ExecOutcome::TimedOut => Some(format!(
                "The command timed out after {} seconds and was killed. Avoid commands that run long or wait for input.",
                self.limits.wall_time_secs
            )),
            _ => Some(format!("The command ended abnormally: {}.", r.describe())),
        };
        if r.truncated() {
            output.push_str("\n[output truncated]");
        }
        if let Some(n) = note {
            if !output.is_empty() && !output.ends_with('\n') {
                output.push('\n');
            }
            output.push_str(&n);
        }
        Ok(Observation {
            content: output,
            done: false,
            exit_code: Some(r.exit_code().unwrap_or(-1)),
        })
    }

    async fn read(&self, path: &str) -> Result<Option<String>, EnvironmentError> {
        let c = self.checkout()?;
        match c.sandbox.read_file(path).await {
            Ok(b) => Ok(Some(String::from_utf8_lossy(&b).into_owned())),
            Err(SandboxError::OutsidePath(p)) => Err(EnvironmentError::Runtime(format!(
                "path {p} is outside the sandbox"
            ))),
            Err(_) => Ok(None),
        }
    }

    async fn write(
        &mut self,
        path: &str,
        text: &str,
        remember: Option<String>,
    ) -> Result<(), String> {
        let c = self.checkout().map_err(|e| e.to_string())?;
        c.sandbox
            .write_file(path, text.as_bytes())
            .await
            .map_err(|e| format!("cannot write {path}: {e}"))?;
        if let Some(old) = remember {
            self.history
                .entry(path.to_string())
                .or_default()
                .push(old.into_bytes());
        }
        Ok(())
    }

    async fn editor(&mut self, args: &Value) -> Result<String, EnvironmentError> {
        let s = |k: &str| args.get(k).and_then(Value::as_str);
        let Some(command) = s("command") else {
            return Ok("Error: the `command` parameter is required (view, create, str_replace, insert, undo_edit).".into());
        };
        let Some(raw_path) = s("path") else {
            return Ok("Error: the `path` parameter is required.".into());
        };
        let path = self.path(raw_path)?;
        let current = self.read(&path).await?;
        let result: Result<String, String> = match (command, current) {
            ("view", Some(text)) => {
                let range = args
                    .get("view_range")
                    .and_then(Value::as_array)
                    .and_then(|a| Some((a.first()?.as_i64()?, a.get(1)?.as_i64()?)));
                editor::view(&path, &text, range)
            }
            ("view", None) => {
                let out = self
                    .shell(&format!(
                        "find {} -maxdepth 2 -not -path '*/.*' | sort",
                        quote(&path)
                    ))
                    .await?;
                if out.exit_code == Some(0) && !out.content.trim().is_empty() {
                    Ok(format!(
                        "Here are the files and directories up to 2 levels deep in {path}, excluding hidden items:\n{}",
                        out.content
                    ))
                } else {
                    Err(format!("The path {path} does not exist."))
                }
            }
            ("create", Some(_)) => Err(format!(
                "File already exists at: {path}. Cannot overwrite files using command `create`."
            )),
            ("create", None) => match s("file_text") {
                None => Err("Parameter `file_text` is required for command: create".into()),
                Some(text) => self
                    .write(&path, text, None)
                    .await
                    .map(|()| format!("File created successfully at: {path}")),
            },
            ("str_replace", Some(text)) => {
                match editor::str_replace(&path, &text, s("old_str").unwrap_or(""), s("new_str").unwrap_or("")) {
                    Ok((updated, msg)) => self.write(&path, &updated, Some(text)).await.map(|()| msg),
                    Err(e) => Err(e),
                }
            }
            ("insert", Some(text)) => {
                let Some(line) = args.get("insert_line").and_then(Value::as_i64) else {
                    return Ok("Error: parameter `insert_line` is required for command: insert".into());
                };
                let Some(new) = s("new_str") else {
                    return Ok("Error: parameter `new_str` is required for command: insert".into());
                };
                match editor::insert(&path, &text, line, new) {
                    Ok((updated, msg)) => self.write(&path, &updated, Some(text)).await.map(|()| msg),
                    Err(e) => Err(e),
                }
            }
            ("undo_edit", Some(_)) => match self.history.get_mut(&path).and_then(Vec::pop) {
                None => Err(format!("No edit history found for {path}.")),
                Some(old) => {
                    let text = String::from_utf8_lossy(&old).into_owned();
                    self.write(&path, &text, None)
                        .await
                        .map(|()| format!("Last edit to {path} undone successfully."))
                }
            },
            ("str_replace" | "insert" | "undo_edit", None) => {
                Err(format!("The path {path} does not exist or is not a file."))
            }
            (other, _) => Err(format!(
                "Unrecognized command {other}. The allowed commands are: view, create, str_replace, insert, undo_edit"
            )),
        };
        Ok(result.unwrap_or_else(|e| format!("Error: {e}")))
    }

    async fn tool(&mut self, call: &ToolCall) -> Result<Observation, EnvironmentError> {
        let args: Value = serde_json::from_str(&call.function.arguments).unwrap_or(Value::Null);
        match call.function.name.as_str() {
            "bash" => match args.get("command").and_then(Value::as_str) {
                Some(cmd) => self.shell(cmd).await,
                None => Ok(Observation::text("Error: the `command` parameter is required.")),
            },
            "str_replace_editor" => Ok(Observation::text(self.editor(&args).await?)),
            "submit" => Ok(Observation::finished("Submitted.")),
            other => Ok(Observation::text(format!(
                "Error: there is no tool named `{other}`; the tools are bash, str_replace_editor and submit."
            ))),
        }
    }

    /// The submission: the diff of the working tree against the task's starting commit.
    async fn diff(&self) -> Result<String, EnvironmentError> {
        let c = self.checkout()?;
        let mut spec = String::from(" -- .");
        for pattern in &self.exclude {
            spec.push_str(&format!(" {}", quote(&format!(":(exclude){pattern}"))));
        }
        let stage = if self.new_files {
            format!("{GIT} add -A{spec}")
        } else {
            format!("{GIT} add -u{spec}")
        };
        let script = format!("set -e\n{stage}\n{GIT} diff --cached --binary HEAD");
        let limits = ExecLimits {
            wall_time_secs: 120.0,
            output_bytes: 16 << 20,
            ..self.limits.clone()
        };
        let r = c
            .sandbox
            .exec(&script, &limits)
            .await
            .map_err(|e| EnvironmentError::Runtime(e.to_string()))?;
        if !r.success() || r.stdout_truncated {
            return Err(EnvironmentError::Runtime(format!(
                "cannot take the diff ({}): {}",
                if r.stdout_truncated {
                    "larger than 16 MiB".to_string()
                } else {
                    r.describe()
                },
                tail(&r.stderr, 1000)
            )));
        }
        Ok(r.stdout)
    }
}

#[async_trait]
impl Episode for SweEpisode {
    fn opening(&self) -> Vec<Message> {
        let workdir = self
            .checkout
            .as_ref()
            .map(|c| c.workdir.as_str())
            .unwrap_or("");
        vec![Message::user(task_text(&self.inst, workdir))]
    }

    fn tools(&self) -> Vec<ToolSchema> {
        tool_schemas()
    }

    async fn act(&mut self, action: &Action) -> Result<Observation, EnvironmentError> {
        match action {
            Action::Shell { command } => self.shell(command).await,
            Action::ToolCall { call } => self.tool(call).await,
            Action::Answer { .. } | Action::Message { .. } => Ok(Observation::text(
                "This task is done in the repository: run shell commands (or call the tools), and submit when the fix is in place.",
            )),
        }
    }

    async fn finish(&mut self) -> Result<Artifacts, EnvironmentError> {
        let diff = self.diff().await;
        if let Some(c) = self.checkout.take() {
            c.sandbox
                .close()
                .await
                .map_err(|e| EnvironmentError::Runtime(e.to_string()))?;
        }
        let diff = diff?;
        Ok(Artifacts {
            submission: Some(diff),
            extra: Value::Null,
            ..Artifacts::default()
        })
    }
}

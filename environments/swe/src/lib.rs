//! The `swe` environment: fix a bug in a real repository. Each episode gets the repository at
//! the instance's `base_commit` (with a SWE-smith bug `patch` applied) in a fresh sandbox: a
//! container on the Docker engine (`sandbox = { type = "docker" }`, the default) or, where no
//! engine is present, a clone in a `local` sandbox (weaker isolation; a warning says so).
//!
//! The agent acts with shell commands (the `bash` scaffold) or with the `bash`,
//! `str_replace_editor` and `submit` tools (the `swe_tools` scaffold). A command whose output
//! starts with `COMPLETE_TASK_AND_SUBMIT_FINAL_OUTPUT` (and that exits 0) submits, as in
//! mini-swe-agent. The submission is the git diff of the working tree.
//!
//! The `swe_tests` evaluator applies that diff (and the instance's `test_patch`) to a fresh
//! checkout, runs FAIL_TO_PASS and PASS_TO_PASS with pytest, and reports in the SWE-smith /
//! SWE-bench harness shape; `resolved` is the success.

#![forbid(unsafe_code)]

pub mod editor;
pub mod import;
pub mod instance;
pub mod report;
pub mod repos;

mod config;
mod environment;
mod episode;
mod evaluator;
mod shell;
mod workspace;

pub use config::{SweConfig, DEFAULT_TEST_CMD, TESTBED};
pub use environment::SweEnvironment;
pub use episode::{task_text, SUBMIT_SENTINEL};
pub use evaluator::{HarnessResult, SweTestsEvaluator};
pub use shell::quote;
pub use workspace::{Checkout, Workspace};

trawl_core::register!(
    environment,
    "swe",
    "Fix a bug in a real repository (SWE-smith / SWE-bench instances) in a container; scored by its tests",
    SweConfig
);

trawl_core::register!(
    evaluator,
    "swe_tests",
    "SWE harness: the patch on a fresh checkout, FAIL_TO_PASS and PASS_TO_PASS with pytest; success = resolved",
    SweConfig
);

//! How the command line exits: the exit codes scripts rely on, and the error that is the user's
//! input (exit code 2) rather than trawl's fault.

/// Exit codes scripts can rely on.
pub mod code {
    /// Bad input: a config, task file or run directory that cannot be used.
    pub const INPUT: u8 = 2;
    /// The run stopped itself: too many infrastructure errors.
    pub const INFRA: u8 = 3;
    /// Stopped by Ctrl-C or SIGTERM; run again to resume.
    pub const INTERRUPTED: u8 = 130;
}

/// An error that is the user's input, not trawl's fault: exit code 2.
#[derive(Debug)]
pub struct InputError(String);

impl std::fmt::Display for InputError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.0)
    }
}
impl std::error::Error for InputError {}

pub fn input(e: impl std::fmt::Display) -> anyhow::Error {
    anyhow::Error::new(InputError(e.to_string()))
}

//! The `local` sandbox: model-written commands run in a fresh temporary folder, in their own
//! process group, under resource limits, and, when bubblewrap works on the machine, inside their
//! own namespaces (no network, read-only system, private `/tmp`, own pid namespace, killed with
//! their parent).
//!
//! Limits are set by util-linux's `prlimit` in the child before the command starts, so trawl
//! needs no `unsafe` code. When trawl runs as root, each sandbox runs as a user of its own (a uid
//! from a range no account uses, leased while the sandbox lives): root ignores the process-count
//! limit and may write anywhere, and one shared user would let concurrent sandboxes signal,
//! trace and write into each other. Without namespaces, closing a sandbox kills every process of
//! its user (a `setsid` daemon included) and removes what it left in the shared temporary
//! folders. The fallback without namespaces cannot isolate the network or the filesystem, so it
//! runs only when a config asks for it (`isolation = "process"`). Which isolation is in force is
//! detected once and reported by [`LocalSandboxFactory::isolation`], so a run can record it.
//!
//! Each episode's sandbox is started once, on its first command: bubblewrap (or, in the
//! fallback, nothing) around a small runner process (`trawl-sandbox-runner`, built from
//! `sandboxes/runner` and carried inside this library), and every command of the episode
//! is a framed request to that runner over its pipes. The runner starts the command in its own
//! process group under the command's limits, reads its output, stops it when a limit trips, and
//! kills what it left once it ends. A command costs a fork and two execs inside the sandbox, not
//! a new namespace; trawl itself never forks (as root it starts the sandbox through util-linux's
//! `setpriv`, which changes to the sandbox's user).
//!
//! A command that hits its wall-clock limit gets SIGTERM for its whole process group, then SIGKILL
//! after a grace period. A command that exits leaves nothing behind: its group is killed, and
//! where the runner can reach only the sandbox's processes (its own pid namespace, or a user of
//! its own) every other process too, so a background child holding stdout open cannot keep the
//! call waiting. A command that kills the runner ends its episode with a sandbox error.

#![forbid(unsafe_code)]

mod cgroup;
mod command;
mod config;
mod detect;
mod exec;
mod factory;
mod fallback;
mod runner;
mod sandbox;
mod snapshots;
mod teardown;
mod users;

pub use config::{Isolation, IsolationMode, LocalSandboxConfig};
pub use factory::LocalSandboxFactory;
pub use sandbox::LocalSandbox;

trawl_core::register!(
    sandbox,
    "local",
    "processes on this machine: a process group with rlimits, behind bubblewrap namespaces where they work",
    LocalSandboxConfig
);

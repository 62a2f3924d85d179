//! The `docker` sandbox: each sandbox is one container on a Docker engine, driven through
//! bollard.
//!
//! - Containers carry labels (`trawl.managed`, `trawl.run_id`, `trawl.created`,
//!   `trawl.version`, `trawl.owner`) and run with limits (memory, processes, CPUs, file size)
//!   and no network unless a config opts in.
//! - Every Docker call has a deadline. Streams get one too: bollard's own timeout covers only the
//!   response headers, and an attach stream can stay open after its process has exited.
//! - Every command of a sandbox goes to one `trawl-sandbox-runner` started in the container
//!   (`sandboxes/runner`, through one exec session): it runs the command in a process group of
//!   its own, kills the group when its time is up or it floods its output or fills the working
//!   folder, kills what the command left behind, and reads the container's cgroup counters, so
//!   a limit the program caught is still seen. Nothing is left orphaned.
//! - Output is capped where the runner reads it.
//! - Teardown (force-remove, each step with a deadline) never blocks the run. A sandbox dropped
//!   without `close` is removed in the background; [`DockerFactory::shutdown`] removes whatever
//!   this process still owns (Ctrl-C, SIGTERM, a panicking rollout), and
//!   [`DockerFactory::connect`] reaps what a killed process left behind.

#![forbid(unsafe_code)]

mod backend;
mod cleanup;
mod config;
mod container;
mod engine;
mod exec;
mod factory;
mod images;
mod owner;
mod sandbox;
mod session;
mod snapshots;
mod transfer;

pub use backend::DockerBackend;
pub use cleanup::{live_containers, Reaped};
pub use config::DockerSandboxConfig;
pub use container::SERVE_NETWORK;
pub use factory::{DockerFactory, EngineInfo};
pub use images::missing_image;
pub use owner::{
    LABEL_CREATED, LABEL_MANAGED, LABEL_OWNER, LABEL_RUN, LABEL_SNAPSHOT, LABEL_VERSION,
    SNAPSHOT_REPO,
};
pub use sandbox::DockerSandbox;
pub use transfer::{tar_dir, tar_file, tar_one_file};

trawl_core::register!(
    sandbox,
    "docker",
    "a fresh container per sandbox on a Docker engine: memory, process and CPU limits, no network unless opted in",
    DockerSandboxConfig
);

//! The `openenv` environment: any environment server that speaks OpenEnv's protocol, as
//! `openenv-core` 0.3 serves it with `create_app` (most environment authors in this field write
//! Python). trawl is the client:
//!
//! - `GET /health` answers `{"status": "healthy"}`; checked for every server before a run.
//! - One WebSocket session per episode at `/ws`: `{"type": "reset", "data": {seed, ...}}`,
//!   `{"type": "step", "data": <action>}`, `{"type": "state"}`, `{"type": "close"}`, each
//!   answered with `{"type": "observation", "data": {"observation", "reward", "done"}}`,
//!   `{"type": "state", "data"}` or `{"type": "error", "data": {"message", "code"}}`. (The
//!   server's plain HTTP `/reset` and `/step` make a fresh environment per request, so an
//!   episode of several steps needs the session.)
//!
//! An episode's task is a reset: its keyword arguments (`seed`, `episode_id`, anything the
//! server's `reset` takes). The first observation opens the conversation; each answer of the
//! agent becomes an action (a field of it, or the whole action as JSON), each observation the
//! next message, and the server's `done` ends the episode. The server's rewards are the steps'
//! rewards, and the `openenv_reward` evaluator turns them into the rollout's evaluation.
//!
//! The servers are either running already (`servers`, a list of URLs), or started one per
//! episode from an image (`image`) through the sandbox role: a backend that runs images (the
//! `docker` kind) starts a container of it serving `port`, trawl reaches it at the address the
//! backend gives, and the container is removed when the episode ends.
//!
//! A server that cannot be reached, dies, hangs past `timeout_secs`, answers something that is
//! not the protocol, or fails inside its own step is an infrastructure error, never the model's
//! failure. An action the server's schema refuses is the model's: it is told, and goes on.

mod config;
mod environment;
mod episode;
mod health;
mod launch;
mod pool;
mod protocol;
mod reward;
mod session;

pub use config::{ActionFormat, OpenEnvConfig, RewardMode, TaskSpec};
pub use environment::OpenEnv;
pub use reward::{OpenEnvReward, OpenEnvRewardConfig};

trawl_core::register!(
    environment,
    "openenv",
    "Any OpenEnv environment server (openenv-core 0.3): a WebSocket session per episode, the server's reward",
    OpenEnvConfig
);

trawl_core::register!(
    evaluator,
    "openenv_reward",
    "An OpenEnv server's reward (the last step's, or the sum); success from a threshold",
    OpenEnvRewardConfig
);

#[cfg(test)]
mod tests;

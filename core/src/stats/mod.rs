//! Metrics over a run: success rate and mean reward with 95% confidence intervals, pass@k and
//! pass^k, by environment × scaffold × model. Interrupted and infrastructure-error rollouts are
//! counted apart and left out of every rate.
//!
//! The files: `estimate` (the estimators and intervals), `compute` (records grouped into
//! [`RunStats`]) and `render` (the text, Markdown and table formats of [`RunStats`]).

mod compute;
mod estimate;
mod render;
#[cfg(test)]
mod tests;

pub use compute::{
    component_means, compute, compute_by, EvaluatorStats, GroupKey, GroupStats, Mean, Rate,
    RunStats, Spread,
};
pub use estimate::{mean_interval, pass_at_k, pass_hat_k, unsigned_zero, wilson_interval};

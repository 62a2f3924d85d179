//! The error budget: a run stops when infrastructure errors pass the configured rate over a
//! window of recent rollouts.

use crate::trajectory::ExitStatus;

/// How many recent rollouts the infrastructure-error budget looks at.
pub(super) const BUDGET_WINDOW: usize = 50;

/// The fewest rollouts in the window before the budget can stop a run mid-way.
pub(super) const BUDGET_MIN: usize = 10;

/// Judges infrastructure errors over the recent rollouts, so that a server that dies late in a
/// long run stops it quickly.
pub(super) struct ErrorBudget {
    pub(super) rate: f64,
    pub(super) recent: std::collections::VecDeque<bool>,
    pub(super) infra_in_window: usize,
}

impl ErrorBudget {
    pub(super) fn new(rate: f64) -> Self {
        ErrorBudget {
            rate,
            recent: std::collections::VecDeque::with_capacity(BUDGET_WINDOW),
            infra_in_window: 0,
        }
    }

    /// Counts one rollout; true when the recent ones pass the budget. Interrupted rollouts say
    /// nothing about the infrastructure and are not counted.
    pub(super) fn record(&mut self, status: ExitStatus) -> bool {
        let is_infra = match status {
            ExitStatus::Interrupted => return false,
            ExitStatus::InfraError => true,
            _ => false,
        };
        if self.recent.len() == BUDGET_WINDOW && self.recent.pop_front() == Some(true) {
            self.infra_in_window -= 1;
        }
        self.recent.push_back(is_infra);
        self.infra_in_window += usize::from(is_infra);
        self.recent.len() >= BUDGET_MIN
            && self.infra_in_window as f64 > self.rate * self.recent.len() as f64
    }
}

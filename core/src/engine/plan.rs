//! Planning a run: the rollouts to do, in cells of (environment, task, scaffold, model), and the
//! adaptive sampling that stops a cell once it has enough successes.

use tokio::sync::mpsc;

use crate::trajectory::{RolloutKey, TrajectoryRecord};

use super::build::Shared;
use super::summary::SamplingSummary;

/// One (environment, task, scaffold, model): the unit samples are drawn for.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub(super) struct Cell {
    pub(super) env: usize,
    pub(super) task: usize,
    pub(super) scaffold: usize,
    pub(super) model: usize,
}

/// Where the launcher takes its next rollout from: the whole matrix walked lazily (a fixed
/// number of samples), or the follow-ups the writer asks for (sampling until enough succeed).
pub(super) enum PlanSource {
    Fixed(Box<dyn Iterator<Item = Plan> + Send>),
    Adaptive(mpsc::UnboundedReceiver<Plan>),
}

impl PlanSource {
    pub(super) async fn next(&mut self) -> Option<Plan> {
        match self {
            PlanSource::Fixed(it) => it.next(),
            PlanSource::Adaptive(rx) => rx.recv().await,
        }
    }
}

/// Sampling until enough succeed: per cell, how far it got. Sample n + 1 of a cell is asked for
/// only once sample n has a final record, so the samples a cell runs depend only on outcomes.
pub(super) struct Adaptive {
    pub(super) max: u32,
    pub(super) until_successes: u32,
    pub(super) cells: std::collections::HashMap<(String, String, String, String), CellState>,
    /// Cells with a rollout in flight or due.
    pub(super) active: u64,
    /// Where follow-ups go; dropped when no cell is active, which ends the run.
    pub(super) plans: Option<mpsc::UnboundedSender<Plan>>,
}

#[derive(Debug, Clone, Copy)]
pub(super) struct CellState {
    pub(super) cell: Cell,
    /// Samples with a final record (this session's and earlier ones').
    pub(super) done: u32,
    pub(super) successes: u32,
}

pub(super) fn cell_key(k: &RolloutKey) -> (String, String, String, String) {
    (
        k.environment.clone(),
        k.task.clone(),
        k.scaffold.clone(),
        k.model.clone(),
    )
}

impl Adaptive {
    /// The starting state from what earlier sessions finished; sends each active cell's next
    /// sample.
    pub(super) fn start(
        shared: &Shared,
        max: u32,
        until_successes: u32,
        completed: &std::collections::HashSet<RolloutKey>,
        successes: &std::collections::HashSet<RolloutKey>,
        budget_spent: bool,
    ) -> (Self, mpsc::UnboundedReceiver<Plan>) {
        let (tx, rx) = mpsc::unbounded_channel();
        let mut a = Adaptive {
            max,
            until_successes,
            cells: std::collections::HashMap::new(),
            active: 0,
            plans: Some(tx),
        };
        for cell in shared.cells() {
            let mut st = CellState {
                cell,
                done: 0,
                successes: 0,
            };
            loop {
                let plan = shared.plan(cell, st.done);
                if st.done >= max || st.successes >= until_successes {
                    break;
                }
                if !completed.contains(&plan.key) {
                    if !budget_spent {
                        if let Some(tx) = &a.plans {
                            let _ = tx.send(plan);
                            a.active += 1;
                        }
                    }
                    break;
                }
                st.done += 1;
                st.successes += u32::from(successes.contains(&plan.key));
            }
            a.cells.insert(cell_key(&shared.plan(cell, 0).key), st);
        }
        if a.active == 0 {
            a.plans = None;
        }
        (a, rx)
    }

    /// A record came back: ask for the cell's next sample, or close the cell.
    pub(super) fn finished(
        &mut self,
        shared: &Shared,
        record: &TrajectoryRecord,
        stop_launching: bool,
    ) {
        let Some(st) = self.cells.get_mut(&cell_key(&record.key)) else {
            return;
        };
        let mut next = None;
        if record.is_final() {
            st.done += 1;
            st.successes += u32::from(record.success);
            if st.done < self.max && st.successes < self.until_successes && !stop_launching {
                next = Some(shared.plan(st.cell, st.done));
            }
        }
        // A rollout that is not final (infrastructure error, interrupted) stops its cell for
        // this session; the next one re-runs it.
        match (next, &self.plans) {
            (Some(plan), Some(tx)) => {
                let _ = tx.send(plan);
            }
            _ => {
                self.active = self.active.saturating_sub(1);
                if self.active == 0 {
                    self.plans = None;
                }
            }
        }
    }

    /// Stops asking for samples: the cells in flight finish, no new ones start.
    pub(super) fn close(&mut self) {
        self.plans = None;
    }

    pub(super) fn summary(&self) -> SamplingSummary {
        let mut s = SamplingSummary {
            max: self.max,
            until_successes: self.until_successes,
            cells: self.cells.len() as u64,
            ..SamplingSummary::default()
        };
        for st in self.cells.values() {
            s.samples += u64::from(st.done);
            if st.successes >= self.until_successes {
                s.reached_successes += 1;
            } else if st.done >= self.max {
                s.reached_max += 1;
            } else {
                s.unfinished += 1;
            }
        }
        s
    }
}

/// One rollout to do.
pub(super) struct Plan {
    pub(super) key: RolloutKey,
    pub(super) env: usize,
    pub(super) task: usize,
    pub(super) scaffold: usize,
    pub(super) model: usize,
}

impl Plan {
    /// Indexes of its (environment, scaffold, model).
    pub(super) fn at(&self) -> (usize, usize, usize) {
        (self.env, self.scaffold, self.model)
    }
}

impl Shared {
    /// Every (environment, task, scaffold, model) of the run, in run order.
    pub(super) fn cells(&self) -> impl Iterator<Item = Cell> + '_ {
        self.environments
            .iter()
            .enumerate()
            .flat_map(move |(ei, e)| {
                (0..e.tasks.len()).flat_map(move |ti| {
                    e.pairs.iter().map(move |&(si, mi)| Cell {
                        env: ei,
                        task: ti,
                        scaffold: si,
                        model: mi,
                    })
                })
            })
    }

    /// Sample `sample` of `cell`.
    pub(super) fn plan(&self, cell: Cell, sample: u32) -> Plan {
        let e = &self.environments[cell.env];
        Plan {
            key: RolloutKey {
                environment: e.env.name.clone(),
                scaffold: self.scaffolds[cell.scaffold].name.clone(),
                model: self.models[cell.model].model.name.clone(),
                task: e.tasks[cell.task].id.clone(),
                sample,
            },
            env: cell.env,
            task: cell.task,
            scaffold: cell.scaffold,
            model: cell.model,
        }
    }
}

//! Stages of a task, each announced when it starts and timed, for the cost table at the end.

use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

/// One finished stage: its name, what it cost, and a note ("beside the build").
type Done = (String, Duration, &'static str);

/// The stages run so far and what each cost. Clones share one table (background stages record
/// into it from their threads).
#[derive(Clone, Default)]
pub struct Stages {
    done: Arc<Mutex<Vec<Done>>>,
}

impl Stages {
    /// Runs `f` as stage `name`, announced and timed.
    pub fn run<T>(&self, name: &str, f: impl FnOnce() -> T) -> T {
        self.timed(name, "", f)
    }

    /// Runs `f` as stage `name` on its own thread, beside whatever runs next; join the handle
    /// for its result.
    pub fn beside<T: Send + 'static>(
        &self,
        name: &str,
        f: impl FnOnce() -> T + Send + 'static,
    ) -> std::thread::JoinHandle<T> {
        let me = self.clone();
        let name = name.to_string();
        std::thread::spawn(move || me.timed(&name, " (beside the build)", f))
    }

    fn timed<T>(&self, name: &str, note: &'static str, f: impl FnOnce() -> T) -> T {
        eprintln!("== {name}{note}");
        let start = Instant::now();
        let out = f();
        let took = start.elapsed();
        eprintln!("== {name}: {:.0} s", took.as_secs_f64());
        self.done
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .push((name.to_string(), took, note));
        out
    }

    /// One line per stage with its cost.
    pub fn table(&self) -> String {
        let done = self.done.lock().unwrap_or_else(|p| p.into_inner());
        let width = done.iter().map(|(n, _, _)| n.len()).max().unwrap_or(0);
        done.iter()
            .map(|(name, took, note)| {
                format!("  {name:<width$}  {:>6.0} s{note}\n", took.as_secs_f64())
            })
            .collect()
    }
}

//! How a run reports itself: a progress bar on a terminal, plain progress lines elsewhere (and
//! in `--log-file`, which also takes the log lines).

use std::io::Write;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use indicatif::ProgressBar;
use trawl_core::engine::RunObserver;
use trawl_core::{ExitStatus, TrajectoryRecord};

/// `--log-file`: where log and progress lines go besides stderr.
pub(crate) static LOG_FILE: std::sync::OnceLock<std::sync::Mutex<std::fs::File>> =
    std::sync::OnceLock::new();

/// Writes to the `--log-file` (tracing's second writer).
pub(crate) struct LogFileWriter;

impl Write for LogFileWriter {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        match LOG_FILE.get() {
            Some(f) => f.lock().unwrap_or_else(|p| p.into_inner()).write(buf),
            None => Ok(buf.len()),
        }
    }

    fn flush(&mut self) -> std::io::Result<()> {
        match LOG_FILE.get() {
            Some(f) => f.lock().unwrap_or_else(|p| p.into_inner()).flush(),
            None => Ok(()),
        }
    }
}

/// A line for stderr and the log file: what a run prints when no terminal shows its bar.
pub(crate) fn log_line(line: &str) {
    eprintln!("{line}");
    if let Some(f) = LOG_FILE.get() {
        let mut f = f.lock().unwrap_or_else(|p| p.into_inner());
        let _ = writeln!(f, "{line}");
    }
}

/// Progress: a live bar on a terminal; otherwise (a log file, a cluster job) a plain line every
/// `--progress-secs`.
pub(crate) struct Progress {
    bar: ProgressBar,
    done: AtomicU64,
    successes: AtomicU64,
    infra: AtomicU64,
    /// Rollouts to run this session (known once the run starts).
    pending: AtomicU64,
    /// The sum of scored rollouts' rewards, in millionths (an atomic integer).
    reward_micros: std::sync::atomic::AtomicI64,
    started: std::time::Instant,
}

impl Progress {
    pub(crate) fn new(bar: ProgressBar) -> Self {
        Progress {
            bar,
            done: AtomicU64::new(0),
            successes: AtomicU64::new(0),
            infra: AtomicU64::new(0),
            pending: AtomicU64::new(0),
            reward_micros: std::sync::atomic::AtomicI64::new(0),
            started: std::time::Instant::now(),
        }
    }

    /// success rate, mean reward and infrastructure errors so far.
    pub(crate) fn rates(&self) -> String {
        let done = self.done.load(Ordering::Relaxed);
        let ok = self.successes.load(Ordering::Relaxed);
        let infra = self.infra.load(Ordering::Relaxed);
        let scored = done.saturating_sub(infra);
        let (rate, mean) = if scored == 0 {
            (0.0, 0.0)
        } else {
            (
                100.0 * ok as f64 / scored as f64,
                self.reward_micros.load(Ordering::Relaxed) as f64 / 1e6 / scored as f64,
            )
        };
        format!("success {rate:.1}% ({ok}/{scored})  mean reward {mean:.3}  infra errors {infra}")
    }

    pub(crate) fn update_message(&self) {
        self.bar.set_message(self.rates());
    }

    /// The plain progress line: done/total, rates, throughput and time left.
    pub(crate) fn plain_line(&self) -> String {
        let done = self.done.load(Ordering::Relaxed);
        let total = self.pending.load(Ordering::Relaxed);
        let secs = self.started.elapsed().as_secs_f64();
        let per_sec = done as f64 / secs.max(1e-9);
        let left = if done == 0 || total <= done {
            "-".to_string()
        } else {
            humantime::format_duration(Duration::from_secs(
                ((total - done) as f64 / per_sec) as u64,
            ))
            .to_string()
        };
        format!(
            "progress {done}/{total} ({:.1}%)  {}  {per_sec:.2} rollouts/s  elapsed {}  left {left}",
            100.0 * done as f64 / total.max(1) as f64,
            self.rates(),
            humantime::format_duration(Duration::from_secs(secs as u64)),
        )
    }
}

impl RunObserver for Progress {
    fn started(&self, pending: u64, skipped: u64) {
        self.pending.store(pending, Ordering::Relaxed);
        self.bar.set_length(pending);
        if skipped > 0 {
            let line = format!("resuming: {skipped} rollouts already done, {pending} to run");
            if self.bar.is_hidden() {
                log_line(&line);
            } else {
                self.bar.println(line);
            }
        }
        self.update_message();
    }

    fn finished(&self, record: &TrajectoryRecord) {
        self.done.fetch_add(1, Ordering::Relaxed);
        match record.outcome.exit_status {
            ExitStatus::InfraError | ExitStatus::Interrupted => {
                self.infra.fetch_add(1, Ordering::Relaxed);
            }
            _ => {
                self.successes
                    .fetch_add(u64::from(record.success), Ordering::Relaxed);
                self.reward_micros
                    .fetch_add((record.reward * 1e6).round() as i64, Ordering::Relaxed);
            }
        }
        self.update_message();
        self.bar.inc(1);
    }
}

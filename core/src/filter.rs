//! jq filters over records (`trawl export --where`, `trawl show --where`), run by jaq, a jq
//! implementation in Rust.
//!
//! A record is kept when the filter yields at least one truthy value for it (jq's `select`
//! rule), so `.success and (.messages | length) <= 9` and
//! `.evaluations[] | select(.evaluator == "rubric") | .success` both read as users expect.
//!
//! A filter is a program, and a program can run forever (`repeat(.)`, `def f: f; f`), recurse
//! until the stack overflows (`def f: 1 + f; f`, which would abort trawl) or fill memory
//! (`[range(1e9)]`). jaq gives no hook inside its evaluation, so each filter runs on a thread of
//! its own with a stack larger than its memory bound, and the caller waits for its verdict with
//! a deadline ([`FilterLimits::time`]) while watching trawl's resident memory
//! ([`FilterLimits::memory_bytes`]): deep recursion touches stack pages, so it shows there before
//! the stack runs out. A filter past either bound is an error; its thread is abandoned (nothing
//! can stop it from outside) and the command that asked fails, which ends the process.
//!
//! What a filter may call is jq's language and standard library less what reaches outside the
//! record: `halt` and `halt_error` (jaq would end trawl itself, exit 0 with nothing written),
//! `env` and `$ENV` (the environment holds keys), `stderr` (it writes to trawl's stderr).

use std::fmt;
use std::sync::{mpsc, Arc, Mutex, PoisonError};
use std::time::{Duration, Instant};

use jaq_core::load::{Arena, File, Loader};
use jaq_core::{data, Compiler, Ctx, Vars};
use jaq_json::Val;

use crate::trajectory::TrajectoryRecord;

type JqFilter = jaq_core::compile::Filter<jaq_core::Native<data::JustLut<Val>>>;

/// Names a filter may not use, and why: each reaches outside the record.
const REFUSED: &[(&str, &str)] = &[
    ("halt", "it would end trawl itself"),
    ("halt_error", "it would end trawl itself"),
    ("env", "it would read trawl's environment"),
    ("$ENV", "it would read trawl's environment"),
    ("stderr", "it would write to trawl's stderr"),
    ("stderr_empty", "it would write to trawl's stderr"),
];

/// How much one filter may take on one record; past either bound [`RecordFilter::keeps`] fails.
/// The defaults are far above what a filter over a record needs (microseconds, a few MiB).
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct FilterLimits {
    /// Wall time on one record.
    pub time: Duration,
    /// How far trawl's resident memory may grow while the filter runs (checked on Linux, where
    /// `/proc/self/status` says; elsewhere only the time bound holds).
    pub memory_bytes: u64,
}

impl Default for FilterLimits {
    fn default() -> Self {
        FilterLimits {
            time: Duration::from_secs(5),
            memory_bytes: 512 << 20,
        }
    }
}

impl FilterLimits {
    /// The limits from a number of seconds and of MiB as a user gives them; refuses what is not
    /// a positive finite time or a positive memory bound that fits in bytes.
    pub fn new(secs: f64, mib: u64) -> Result<Self, String> {
        let time = Duration::try_from_secs_f64(secs)
            .ok()
            .filter(|t| !t.is_zero())
            .ok_or_else(|| {
                format!("a filter's time budget must be a positive number of seconds, not {secs}")
            })?;
        let memory_bytes = mib.checked_mul(1 << 20).filter(|b| *b > 0).ok_or_else(|| {
            format!(
                "a filter's memory bound must be between 1 and {} MiB, not {mib}",
                u64::MAX >> 20
            )
        })?;
        Ok(FilterLimits { time, memory_bytes })
    }

    /// The filter thread's stack: larger than the memory bound, so that recursion is caught by
    /// the memory watch before the stack overflows (which would abort the process).
    fn stack_bytes(&self) -> usize {
        usize::try_from(self.memory_bytes.saturating_add(STACK_MARGIN)).unwrap_or(usize::MAX)
    }
}

/// How much stack the filter thread has beyond the memory bound (reserved, not used, until a
/// filter recurses: the time the caller has to fail after seeing the bound passed).
const STACK_MARGIN: u64 = 512 << 20;

/// How often the caller looks at the clock and at memory while a filter runs.
const POLL: Duration = Duration::from_millis(10);

/// A compiled jq filter and its source.
#[derive(Clone)]
pub struct RecordFilter {
    source: String,
    filter: Arc<JqFilter>,
    limits: FilterLimits,
    /// The thread the filter runs on, started by the first [`RecordFilter::keeps`], shared by
    /// clones; `None` again after a filter passed a bound (its thread is left to the process).
    worker: Arc<Mutex<Option<Worker>>>,
}

impl fmt::Debug for RecordFilter {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "RecordFilter({:?})", self.source)
    }
}

impl serde::Serialize for RecordFilter {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(&self.source)
    }
}

impl<'de> serde::Deserialize<'de> for RecordFilter {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let source = String::deserialize(d)?;
        RecordFilter::compile(&source).map_err(serde::de::Error::custom)
    }
}

impl PartialEq for RecordFilter {
    fn eq(&self, other: &Self) -> bool {
        self.source == other.source
    }
}

/// Where in the filter text `part` (a slice of it) starts, 1-based.
fn column_of(code: &str, part: &str) -> usize {
    let start = part.as_ptr() as usize;
    let base = code.as_ptr() as usize;
    if start >= base && start <= base + code.len() {
        code[..start - base].chars().count() + 1
    } else {
        1
    }
}

impl RecordFilter {
    /// Compiles `source`; the error names the column and what was expected.
    pub fn compile(source: &str) -> Result<Self, String> {
        let code = source;
        let program = File { code, path: () };
        let refused = |name: &str| REFUSED.iter().any(|(n, _)| *n == name);
        let defs = jaq_core::defs()
            .chain(jaq_std::defs())
            .chain(jaq_json::defs())
            .filter(|d| !refused(d.name));
        let funs = jaq_core::funs()
            .chain(jaq_std::funs())
            .chain(jaq_json::funs())
            .filter(|(name, _, _)| !refused(name));
        let loader = Loader::new(defs);
        let arena = Arena::default();
        let modules = loader.load(&arena, program).map_err(|errs| {
            let mut out = Vec::new();
            for (_, e) in errs {
                match e {
                    jaq_core::load::Error::Io(v) => {
                        out.extend(v.into_iter().map(|(_, m)| m));
                    }
                    jaq_core::load::Error::Lex(v) => {
                        out.extend(v.into_iter().map(|(expect, at)| {
                            format!("at column {}: expected {:?}", column_of(code, at), expect)
                        }))
                    }
                    jaq_core::load::Error::Parse(v) => {
                        out.extend(v.into_iter().map(|(expect, at)| {
                            let found = if at.is_empty() {
                                "the end".to_string()
                            } else {
                                format!("`{}`", at.chars().take(20).collect::<String>())
                            };
                            format!(
                                "at column {}: expected {}, found {found}",
                                column_of(code, at),
                                expect.as_str()
                            )
                        }))
                    }
                }
            }
            format!("not a valid jq filter: {}", out.join("; "))
        })?;
        let filter = Compiler::default()
            .with_funs(funs)
            .compile(modules)
            .map_err(|errs| {
                let out: Vec<String> = errs
                    .into_iter()
                    .flat_map(|(_, v)| v)
                    .map(
                        |(name, undefined)| match REFUSED.iter().find(|(n, _)| *n == name) {
                            Some((_, why)) => format!(
                                "`{name}` (column {}) is not allowed in a trawl filter: {why}",
                                column_of(code, name)
                            ),
                            None => format!(
                                "`{name}` (column {}) is not a defined {}",
                                column_of(code, name),
                                undefined.as_str()
                            ),
                        },
                    )
                    .collect();
                format!("not a valid jq filter: {}", out.join("; "))
            })?;
        Ok(RecordFilter {
            source: source.to_string(),
            filter: Arc::new(filter),
            limits: FilterLimits::default(),
            worker: Arc::default(),
        })
    }

    /// The same filter under other limits.
    pub fn with_limits(self, limits: FilterLimits) -> Self {
        RecordFilter {
            limits,
            worker: Arc::default(),
            ..self
        }
    }

    /// The filter as the user wrote it.
    pub fn source(&self) -> &str {
        &self.source
    }

    /// The bounds it runs under on each record.
    pub fn limits(&self) -> FilterLimits {
        self.limits
    }

    /// Whether the filter keeps `record`: at least one output is truthy. A runtime error (for
    /// example indexing a string) is returned, not taken as "no", and so is a filter that passes
    /// its time or memory bound ([`FilterLimits`]).
    pub fn keeps(&self, record: &TrajectoryRecord) -> Result<bool, String> {
        let bytes = serde_json::to_vec(record).map_err(|e| e.to_string())?;
        let mut slot = self.worker.lock().unwrap_or_else(PoisonError::into_inner);
        let worker = match slot.take() {
            Some(w) => w,
            None => Worker::start(self.filter.clone(), self.limits)?,
        };
        let verdict = worker.verdict(bytes, self.limits)?;
        *slot = Some(worker);
        verdict
    }
}

/// The thread a filter runs on: records in as JSON, verdicts out.
struct Worker {
    records: mpsc::Sender<Vec<u8>>,
    verdicts: mpsc::Receiver<Result<bool, String>>,
    /// trawl's resident memory when the thread started (None where it cannot be read).
    baseline: Option<u64>,
}

impl Worker {
    fn start(filter: Arc<JqFilter>, limits: FilterLimits) -> Result<Self, String> {
        let (records, jobs) = mpsc::channel::<Vec<u8>>();
        let (answers, verdicts) = mpsc::channel();
        let baseline = resident_bytes();
        std::thread::Builder::new()
            .name("trawl-filter".into())
            .stack_size(limits.stack_bytes())
            .spawn(move || {
                for bytes in jobs {
                    if answers.send(evaluate(&filter, &bytes)).is_err() {
                        break;
                    }
                }
            })
            .map_err(|e| {
                format!(
                    "cannot start the filter's thread with a {} MiB stack (its memory bound and a margin): {e}",
                    limits.stack_bytes() >> 20
                )
            })?;
        Ok(Worker {
            records,
            verdicts,
            baseline,
        })
    }

    /// The filter's verdict on one record: the outer error says the filter passed a bound (or its
    /// thread is gone), and then this worker must not be used again.
    fn verdict(
        &self,
        bytes: Vec<u8>,
        limits: FilterLimits,
    ) -> Result<Result<bool, String>, String> {
        let gone = || "the filter's thread stopped".to_string();
        self.records.send(bytes).map_err(|_| gone())?;
        let started = Instant::now();
        loop {
            let left = limits.time.saturating_sub(started.elapsed());
            if left.is_zero() {
                return Err(format!(
                    "the filter ran past its time budget of {} s on this record (does it loop forever, like `repeat(.)` or `def f: f; f`?); --where-timeout SECS gives it more",
                    limits.time.as_secs_f64()
                ));
            }
            match self.verdicts.recv_timeout(left.min(POLL)) {
                Ok(verdict) => return Ok(verdict),
                Err(mpsc::RecvTimeoutError::Disconnected) => return Err(gone()),
                Err(mpsc::RecvTimeoutError::Timeout) => {}
            }
            if let (Some(before), Some(now)) = (self.baseline, resident_bytes()) {
                if now.saturating_sub(before) > limits.memory_bytes {
                    return Err(format!(
                        "the filter grew trawl's memory past its bound of {} MiB on this record (does it build a huge value, like `[range(1e9)]`, or recurse without end, like `def f: 1 + f; f`?); --where-memory MIB gives it more",
                        limits.memory_bytes >> 20
                    ));
                }
            }
        }
    }
}

/// Runs `filter` on one record (JSON bytes): whether any output is truthy.
fn evaluate(filter: &JqFilter, bytes: &[u8]) -> Result<bool, String> {
    let input = jaq_json::read::parse_single(bytes).map_err(|e| e.to_string())?;
    let ctx = Ctx::<data::JustLut<Val>>::new(&filter.lut, Vars::new([]));
    for out in filter.id.run((ctx, input)) {
        match out {
            Ok(v) => {
                if jaq_core::ValT::as_bool(&v) {
                    return Ok(true);
                }
            }
            // Not `jaq_core::unwrap_valr`: it ends the process on `halt`. `halt` is not defined
            // for filters, so this is a second line.
            Err(e) => {
                return Err(match e.get_err() {
                    Ok(e) => format!("the filter failed: {e}"),
                    Err(_) => "the filter tried to halt trawl".to_string(),
                })
            }
        }
    }
    Ok(false)
}

/// trawl's resident memory in bytes (`VmRSS` in `/proc/self/status`); `None` where there is no
/// such file.
fn resident_bytes() -> Option<u64> {
    let status = std::fs::read_to_string("/proc/self/status").ok()?;
    let kb = status
        .lines()
        .find_map(|l| l.strip_prefix("VmRSS:"))?
        .trim()
        .strip_suffix("kB")?
        .trim()
        .parse::<u64>()
        .ok()?;
    Some(kb << 10)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn record() -> TrajectoryRecord {
        crate::strategies::example_record()
    }

    #[test]
    fn filters_keep_what_jq_would_select() {
        let mut r = record();
        r.success = true;
        r.reward = 0.75;
        let keep = |f: &str| RecordFilter::compile(f).unwrap().keeps(&r).unwrap();
        assert!(keep(".success"));
        assert!(keep(".reward >= 0.5 and .success"));
        assert!(!keep(".reward > 0.8"));
        assert!(!keep("empty"));
        assert!(keep("[1, 2] | map(. * 2) | add == 6"));
        // jq's standard library: regexes, any/all, string functions.
        assert!(keep(r#""tool_calling" | test("^tool")"#));
        assert!(keep("[1, 2, 3] | any(. > 2) and all(. > 0)"));
        assert!(keep(r#""A,B" | split(",") | length == 2"#));
    }

    #[test]
    fn bad_filters_say_where() {
        let err = RecordFilter::compile(".success and (").unwrap_err();
        assert!(err.starts_with("not a valid jq filter: at column"), "{err}");
        let err = RecordFilter::compile("nosuchfn(1)").unwrap_err();
        assert!(err.contains("`nosuchfn`"), "{err}");
        let r = record();
        let err = RecordFilter::compile(".key.task | .[0]")
            .unwrap()
            .keeps(&r)
            .unwrap_err();
        assert!(err.starts_with("the filter failed"), "{err}");
    }

    #[test]
    fn filters_cannot_reach_outside_the_record() {
        for (filter, name) in [
            ("halt", "halt"),
            ("halt(0)", "halt"),
            ("halt_error", "halt_error"),
            ("halt_error(1)", "halt_error"),
            ("env.HOME", "env"),
            ("$ENV.HOME", "$ENV"),
            ("stderr", "stderr"),
            ("stderr_empty", "stderr_empty"),
        ] {
            let err = RecordFilter::compile(filter).unwrap_err();
            assert!(
                err.contains(&format!(
                    "`{name}` (column 1) is not allowed in a trawl filter: it would"
                )),
                "{filter}: {err}"
            );
        }
        // What stays: jq's own debugging and time functions.
        assert!(RecordFilter::compile("debug | now > 0").is_ok());
    }

    #[test]
    fn limits_refuse_what_is_not_a_bound() {
        let ok = FilterLimits::new(0.25, 64).unwrap();
        assert_eq!(ok.time, Duration::from_millis(250));
        assert_eq!(ok.memory_bytes, 64 << 20);
        for secs in [0.0, -1.0, f64::NAN, f64::INFINITY, 1e300] {
            let err = FilterLimits::new(secs, 64).unwrap_err();
            assert!(err.contains("time budget"), "{secs}: {err}");
        }
        for mib in [0, u64::MAX] {
            let err = FilterLimits::new(1.0, mib).unwrap_err();
            assert!(err.contains("memory bound"), "{mib}: {err}");
        }
        // The stack outlasts the memory bound, however large.
        assert!(ok.stack_bytes() as u64 > ok.memory_bytes);
        let huge = FilterLimits::new(1.0, u64::MAX >> 20).unwrap();
        assert!(huge.stack_bytes() as u64 >= huge.memory_bytes.min(usize::MAX as u64));
    }

    #[test]
    fn a_filter_runs_on_its_own_thread_record_after_record() {
        let r = record();
        let f = RecordFilter::compile(".reward >= 0")
            .unwrap()
            .with_limits(FilterLimits::new(0.5, 64).unwrap());
        for _ in 0..3 {
            assert!(f.keeps(&r).unwrap());
        }
        // Clones share the thread; a runtime error leaves it usable.
        let g = RecordFilter::compile(".key.task | .[0]").unwrap();
        assert!(g.keeps(&r).unwrap_err().starts_with("the filter failed"));
        assert!(g.keeps(&r).unwrap_err().starts_with("the filter failed"));
        assert!(f.clone().keeps(&r).unwrap());
    }
}

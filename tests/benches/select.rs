//! What looking at a run and exporting it cost: `stats` (default grouping and by a task field),
//! selection with the shorthands and with a jq `--where` filter, `diff` of two scaffolds, and
//! every built-in training format, over 100,000 records like short multi-turn rollouts (three
//! assistant turns with token ids, a tool schema). `cargo bench -p trawl-tests --bench select`;
//! figures go in BENCHMARKS.md.

#![allow(clippy::unwrap_used)]

use std::time::Instant;

use trawl_core::compare::{diff, pairing_keys, Selector};
use trawl_core::export::{select, Selection};
use trawl_core::filter::RecordFilter;
use trawl_core::stats::{compute, compute_by, GroupKey};
use trawl_core::TrajectoryRecord;
use trawl_exporters as _;

const RECORDS: usize = 100_000;

fn records() -> Vec<TrajectoryRecord> {
    trawl_core::strategies::short_rollouts(RECORDS)
}

fn timed<T>(what: &str, f: impl FnOnce() -> T) -> T {
    let t = Instant::now();
    let out = f();
    let secs = t.elapsed().as_secs_f64();
    println!(
        "{what:<48} {:>8.1} ms  {:>12.0} records/s",
        secs * 1e3,
        RECORDS as f64 / secs
    );
    out
}

fn main() {
    let recs = records();
    let bytes: usize = recs
        .iter()
        .map(|r| serde_json::to_vec(r).unwrap().len())
        .sum();
    println!(
        "{RECORDS} records, {:.0} bytes each on average",
        bytes as f64 / RECORDS as f64
    );
    let s = timed("stats by environment × scaffold × model", || {
        compute(&recs)
    });
    assert_eq!(s.groups.len(), 2);
    let s = timed("stats by level (a task data field)", || {
        compute_by(&recs, &[GroupKey::parse("level").unwrap()])
    });
    assert_eq!(s.groups.len(), 5);
    let shorthand = Selection {
        evaluator_success: vec!["format".into()],
        max_turns: Some(3),
        ..Selection::default()
    };
    let kept = timed("select: --evaluator-success format --max-turns 3", || {
        select(&recs, &shorthand).unwrap().kept.len()
    });
    let jq = Selection {
        where_filter: Some(
            RecordFilter::compile(r#".evaluations[] | select(.evaluator == "format") | .success"#)
                .unwrap(),
        ),
        ..Selection::default()
    };
    let kept_jq = timed("select: --where (jq, the same evaluator)", || {
        select(&recs, &jq).unwrap().kept.len()
    });
    assert_eq!(kept, kept_jq);
    let (sa, sb) = (
        Selector::parse("scaffold=chat").unwrap(),
        Selector::parse("scaffold=tool_calling").unwrap(),
    );
    let report = timed("diff --a scaffold=chat --b scaffold=tool_calling", || {
        let a: Vec<&TrajectoryRecord> = recs.iter().filter(|r| sa.matches(r)).collect();
        let b: Vec<&TrajectoryRecord> = recs.iter().filter(|r| sb.matches(r)).collect();
        let by = pairing_keys(&a, &b, &[&sa, &sb]);
        diff(("a", &a), ("b", &b), &by)
    });
    assert_eq!(report.shared_units, 5000);

    // Every format over every record, into a byte counter (the cost of formatting, not of a
    // disk).
    for (format, settings) in [
        ("openai", serde_json::json!({})),
        ("openai", serde_json::json!({"tools": "json"})),
        ("sharegpt", serde_json::json!({})),
        ("turns", serde_json::json!({})),
        ("dpo", serde_json::json!({})),
        ("grpo", serde_json::json!({})),
        ("verl", serde_json::json!({})),
        ("tokens", serde_json::json!({})),
        ("trajectory", serde_json::json!({})),
    ] {
        let exporter = trawl_tests::exporter(format, &settings);
        let mut out = Counter(0);
        let label = format!(
            "export {format} {}",
            if settings == serde_json::json!({}) {
                String::new()
            } else {
                settings.to_string()
            }
        );
        let stats = timed(&label, || {
            trawl_core::export::export_records(
                &recs,
                &Selection::default(),
                exporter.as_ref(),
                format,
                &mut out,
            )
            .unwrap()
        });
        println!(
            "{:<48} {:>8} examples, {:>7.1} MB",
            "",
            stats.total_sft_examples,
            out.0 as f64 / 1e6
        );
        assert!(stats.total_sft_examples > 0);
    }
}

/// Counts the bytes written to it.
struct Counter(u64);

impl std::io::Write for Counter {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        self.0 += buf.len() as u64;
        Ok(buf.len())
    }

    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

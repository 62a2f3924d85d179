//! Dataset hygiene at export: duplicate removal and decontamination against held-out data.
//!
//! - Duplicates are judged within a task (the same task's rollouts are where they come from): two
//!   rollouts whose model-written text is the same after normalisation (lower case, words only)
//!   are exact duplicates; two whose word 5-gram sets have a Jaccard similarity at or above a
//!   threshold are near duplicates. The first in run order is kept.
//! - Contamination is n-gram overlap (13 words by default, as GPT-3's and most decontamination
//!   since) between any text of a rollout (prompt and replies) and any text of the held-out files.

use std::collections::HashSet;
use std::path::Path;

use serde::{Deserialize, Serialize};
use serde_json::Value;

use crate::message::Role;
use crate::trajectory::TrajectoryRecord;

/// The words of `text`: lower-cased runs of letters and digits.
pub fn words(text: &str) -> Vec<String> {
    text.split(|c: char| !c.is_alphanumeric())
        .filter(|w| !w.is_empty())
        .map(str::to_lowercase)
        .collect()
}

/// A stable 64-bit hash (FNV-1a) of `n` consecutive words.
fn hash_words(ws: &[String]) -> u64 {
    let mut h: u64 = 0xcbf2_9ce4_8422_2325;
    for w in ws {
        for b in w.bytes().chain(std::iter::once(b' ')) {
            h ^= u64::from(b);
            h = h.wrapping_mul(0x0100_0000_01b3);
        }
    }
    h
}

/// The hashes of every run of `n` consecutive words; a text shorter than `n` words gives one
/// hash of all of them (so short texts still compare).
pub fn ngrams(ws: &[String], n: usize) -> HashSet<u64> {
    let n = n.max(1);
    if ws.len() < n {
        return if ws.is_empty() {
            HashSet::new()
        } else {
            HashSet::from([hash_words(ws)])
        };
    }
    ws.windows(n).map(hash_words).collect()
}

/// What the model wrote in a rollout: its replies' text and its tool calls.
pub fn model_text(r: &TrajectoryRecord) -> String {
    let mut out = String::new();
    for m in r.messages.iter().filter(|m| m.role == Role::Assistant) {
        out.push_str(m.text());
        out.push('\n');
        for c in &m.tool_calls {
            out.push_str(&c.function.name);
            out.push(' ');
            out.push_str(&c.function.arguments);
            out.push('\n');
        }
    }
    out
}

/// Every text of a rollout: each message and each tool call.
fn all_text(r: &TrajectoryRecord) -> String {
    let mut out = String::new();
    for m in &r.messages {
        out.push_str(m.text());
        out.push('\n');
        for c in &m.tool_calls {
            out.push_str(&c.function.arguments);
            out.push('\n');
        }
    }
    out
}

/// How duplicates are removed.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case", tag = "mode")]
pub enum Dedup {
    /// The same words, in the same order.
    Exact,
    /// Word 5-gram Jaccard similarity at or above `threshold` (exact duplicates included).
    Near { threshold: f64 },
}

/// Word n-grams a near-duplicate comparison uses.
pub const NEAR_DUP_NGRAM: usize = 5;

/// What a kept rollout leaves for later ones of its task to be compared with.
pub struct Fingerprint {
    exact: u64,
    shingles: HashSet<u64>,
}

impl Dedup {
    pub fn fingerprint(&self, r: &TrajectoryRecord) -> Fingerprint {
        let ws = words(&model_text(r));
        Fingerprint {
            exact: hash_words(&ws),
            shingles: match self {
                Dedup::Exact => HashSet::new(),
                Dedup::Near { .. } => ngrams(&ws, NEAR_DUP_NGRAM),
            },
        }
    }

    /// Whether `f` duplicates one of `kept`.
    pub fn duplicates(&self, f: &Fingerprint, kept: &[Fingerprint]) -> bool {
        kept.iter().any(|k| {
            k.exact == f.exact
                || match self {
                    Dedup::Exact => false,
                    Dedup::Near { threshold } => jaccard(&k.shingles, &f.shingles) >= *threshold,
                }
        })
    }
}

/// |a ∩ b| / |a ∪ b|; two empty sets are equal (1).
pub fn jaccard(a: &HashSet<u64>, b: &HashSet<u64>) -> f64 {
    if a.is_empty() && b.is_empty() {
        return 1.0;
    }
    let inter = a.intersection(b).count();
    inter as f64 / (a.len() + b.len() - inter) as f64
}

/// The n-grams of held-out files, to keep their text out of training data.
#[derive(Debug, Clone)]
pub struct HeldOut {
    pub n: usize,
    pub files: Vec<String>,
    grams: HashSet<u64>,
}

impl PartialEq for HeldOut {
    fn eq(&self, other: &Self) -> bool {
        self.n == other.n && self.files == other.files && self.grams.len() == other.grams.len()
    }
}

impl Serialize for HeldOut {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        serde_json::json!({"files": self.files, "ngram": self.n, "ngrams_held_out": self.grams.len()})
            .serialize(s)
    }
}

impl<'de> Deserialize<'de> for HeldOut {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        #[derive(Deserialize)]
        struct Described {
            files: Vec<String>,
            ngram: usize,
        }
        // A description read back (from export stats) names the files; their n-grams are not
        // re-read here.
        let x = Described::deserialize(d)?;
        Ok(HeldOut {
            n: x.ngram,
            files: x.files,
            grams: HashSet::new(),
        })
    }
}

/// Every string in a JSON value, joined by newlines.
fn strings_of(v: &Value, out: &mut String) {
    match v {
        Value::String(s) => {
            out.push_str(s);
            out.push('\n');
        }
        Value::Array(a) => a.iter().for_each(|x| strings_of(x, out)),
        Value::Object(o) => o.values().for_each(|x| strings_of(x, out)),
        _ => {}
    }
}

impl HeldOut {
    /// Reads held-out files: JSONL (every string of each line: questions, answers, tests) or
    /// plain text, line by line. `n` words make an n-gram.
    pub fn load(files: &[&Path], n: usize) -> Result<Self, String> {
        if n == 0 {
            return Err("the n-gram size must be at least 1 (13 is usual)".into());
        }
        let mut grams = HashSet::new();
        for path in files {
            let text = std::fs::read_to_string(path).map_err(|e| {
                format!(
                    "cannot read held-out file {}: {e}\n  hint: give JSONL or text files of the benchmark to keep out",
                    path.display()
                )
            })?;
            for line in text.lines().filter(|l| !l.trim().is_empty()) {
                let mut t = String::new();
                match serde_json::from_str::<Value>(line) {
                    Ok(v) => strings_of(&v, &mut t),
                    Err(_) => t.push_str(line),
                }
                let ws = words(&t);
                // Text shorter than n words cannot make an n-gram: too short to judge.
                if ws.len() >= n {
                    grams.extend(ngrams(&ws, n));
                }
            }
        }
        Ok(HeldOut {
            n,
            files: files.iter().map(|p| p.display().to_string()).collect(),
            grams,
        })
    }

    /// Whether any n-gram of the rollout's text is held out.
    pub fn contaminates(&self, r: &TrajectoryRecord) -> bool {
        let ws = words(&all_text(r));
        ws.len() >= self.n
            && ws
                .windows(self.n)
                .any(|w| self.grams.contains(&hash_words(w)))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn words_and_ngrams_ignore_case_and_punctuation() {
        assert_eq!(words("The ANSWER is 42."), ["the", "answer", "is", "42"]);
        let a = ngrams(&words("a b c d e f"), 5);
        assert_eq!(a.len(), 2);
        assert_eq!(ngrams(&words("a b"), 5).len(), 1);
        assert_eq!(a, ngrams(&words("A, b; c d E f!"), 5));
    }

    #[test]
    fn thirteen_words_in_common_contaminate_and_twelve_do_not() {
        let mut r = crate::strategies::example_record();
        let held = "Natalia sold clips to 48 of her friends in April and then half as many in May";
        let dir = tempfile::tempdir().unwrap();
        let file = dir.path().join("test.jsonl");
        std::fs::write(
            &file,
            format!(
                "{}\n",
                serde_json::json!({"question": held, "answer": "72"})
            ),
        )
        .unwrap();
        let h = HeldOut::load(&[file.as_path()], 13).unwrap();
        let ws = words(held);
        let with = |text: String| {
            let mut r = r.clone();
            r.messages = vec![crate::Message::user(text)];
            h.contaminates(&r)
        };
        assert!(with(format!("Q: {}?", ws[2..15].join(" "))));
        assert!(!with(format!("Q: {}?", ws[2..14].join(" "))));
        assert!(!with("something else entirely".into()));
        r.messages.clear();
        assert!(!h.contaminates(&r));
        assert!(HeldOut::load(&[file.as_path()], 0).is_err());
    }

    #[test]
    fn jaccard_of_near_texts_is_high_and_of_others_low() {
        let base = "first add the two numbers then subtract three and the answer is forty two";
        let near = "first add the two numbers then subtract three and the answer is forty one";
        let other = "multiply everything by seven and divide by the number of apples we have";
        let g = |t: &str| ngrams(&words(t), NEAR_DUP_NGRAM);
        assert!(jaccard(&g(base), &g(near)) >= 0.8);
        assert!(jaccard(&g(base), &g(other)) < 0.1);
    }
}

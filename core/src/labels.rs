//! A person's review of rollouts: `RUN/labels.jsonl`, one line per decision (accept or reject,
//! with a note), appended and never rewritten, so every decision stays on record; the last line
//! for a rollout is its label. `trawl view` writes it; `trawl export --labels` reads it.

use std::collections::HashMap;
use std::io::Write;
use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

use crate::store::StoreError;
pub use crate::store::LABELS;
use crate::trajectory::RolloutKey;

/// A reviewer's decision.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Verdict {
    Accept,
    Reject,
    /// Takes back an earlier decision: the rollout is unlabelled again.
    Clear,
}

impl Verdict {
    pub fn parse(s: &str) -> Option<Self> {
        match s {
            "accept" => Some(Self::Accept),
            "reject" => Some(Self::Reject),
            "clear" => Some(Self::Clear),
            _ => None,
        }
    }
}

/// One line of `labels.jsonl`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Label {
    pub key: RolloutKey,
    pub verdict: Verdict,
    /// Why, in the reviewer's words.
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub note: String,
    /// When it was made, RFC 3339 UTC.
    pub at: String,
}

/// The labels of one run: the last decision per rollout (cleared ones left out).
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Labels {
    pub by_key: HashMap<RolloutKey, Label>,
}

impl Labels {
    /// Reads `dir/labels.jsonl`; a run nobody has labelled has no file and no labels. A bad
    /// line is an error naming the file, line and field.
    pub fn read(dir: &Path) -> Result<Self, StoreError> {
        let path = dir.join(LABELS);
        let text = match std::fs::read(&path) {
            Ok(t) => t,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(Self::default()),
            Err(source) => return Err(StoreError::Io { path, source }),
        };
        let mut by_key = HashMap::new();
        for (i, raw) in text.split(|b| *b == b'\n').enumerate() {
            if raw.iter().all(u8::is_ascii_whitespace) {
                continue;
            }
            let line = std::str::from_utf8(raw)
                .map_err(|e| bad(&path, i + 1, String::new(), e.to_string()))?;
            let de = &mut serde_json::Deserializer::from_str(line);
            match serde_path_to_error::deserialize::<_, Label>(de) {
                Ok(label) => {
                    if label.verdict == Verdict::Clear {
                        by_key.remove(&label.key);
                    } else {
                        by_key.insert(label.key.clone(), label);
                    }
                }
                // A line cut off by a crash mid-append (its JSON ends early) is not a decision
                // anyone finished making; the next append starts on a fresh line after it.
                Err(e) if e.inner().is_eof() => {}
                Err(e) => {
                    let field = e.path().to_string();
                    let field = if field.is_empty() || field == "." {
                        String::new()
                    } else {
                        format!("field `{field}`: ")
                    };
                    return Err(bad(&path, i + 1, field, e.inner().to_string()));
                }
            }
        }
        Ok(Self { by_key })
    }

    pub fn get(&self, key: &RolloutKey) -> Option<&Label> {
        self.by_key.get(key)
    }

    pub fn is_empty(&self) -> bool {
        self.by_key.is_empty()
    }

    /// How many rollouts carry each verdict.
    pub fn count(&self, verdict: Verdict) -> usize {
        self.by_key
            .values()
            .filter(|l| l.verdict == verdict)
            .count()
    }
}

fn bad(path: &Path, line: usize, field: String, message: String) -> StoreError {
    StoreError::BadRecord {
        path: path.to_path_buf(),
        line,
        field,
        message,
        hint: format!(
            "each line of {LABELS} is {{\"key\": {{environment, scaffold, model, task, sample}}, \"verdict\": \"accept\"|\"reject\"|\"clear\", \"note\": \"…\", \"at\": \"RFC 3339\"}}; fix or delete the line"
        ),
    }
}

/// Appends one decision to `dir/labels.jsonl` as one write of one line, flushed to disk before
/// it returns.
pub fn append(dir: &Path, label: &Label) -> Result<PathBuf, StoreError> {
    let path = dir.join(LABELS);
    let io = |source| StoreError::Io {
        path: path.clone(),
        source,
    };
    let mut line = serde_json::to_vec(label).map_err(|e| io(std::io::Error::other(e)))?;
    line.push(b'\n');
    // Never through a link planted in the run directory: it would append outside the run.
    let mut file = crate::store::open_append(&path)?;
    // A line torn by an earlier crash would swallow this one: start on a fresh line. (Read
    // through the same handle; in append mode the write still goes to the end.)
    let len = file.metadata().map_err(io)?.len();
    if len > 0 {
        use std::io::{Read, Seek, SeekFrom};
        file.seek(SeekFrom::Start(len - 1)).map_err(io)?;
        let mut last = [0u8];
        file.read_exact(&mut last).map_err(io)?;
        if last[0] != b'\n' {
            line.insert(0, b'\n');
        }
    }
    file.write_all(&line).map_err(io)?;
    file.sync_data().map_err(io)?;
    Ok(path)
}

/// Which labelled rollouts an export keeps.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum LabelMode {
    /// Only rollouts a reviewer accepted.
    Accepted,
    /// Everything but the rollouts a reviewer rejected.
    NotRejected,
}

impl LabelMode {
    pub fn parse(s: &str) -> Option<Self> {
        match s {
            "accepted" => Some(Self::Accepted),
            "not-rejected" => Some(Self::NotRejected),
            _ => None,
        }
    }
}

/// The reviewers' labels as a selection criterion.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct LabelFilter {
    pub mode: LabelMode,
    #[serde(rename = "accepted", serialize_with = "count_accepted")]
    pub labels: Labels,
}

fn count_accepted<S: serde::Serializer>(labels: &Labels, s: S) -> Result<S::Ok, S::Error> {
    s.serialize_u64(labels.count(Verdict::Accept) as u64)
}

impl<'de> Deserialize<'de> for LabelFilter {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        #[derive(Deserialize)]
        struct Mode {
            mode: LabelMode,
        }
        let m = Mode::deserialize(d)?;
        Ok(Self {
            mode: m.mode,
            labels: Labels::default(),
        })
    }
}

/// Why the labels leave a rollout out, if they do.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum LabelDrop {
    Rejected,
    NotAccepted,
}

impl LabelFilter {
    pub fn check(&self, key: &RolloutKey) -> Option<LabelDrop> {
        match (self.labels.get(key).map(|l| l.verdict), self.mode) {
            (Some(Verdict::Reject), _) => Some(LabelDrop::Rejected),
            (Some(Verdict::Accept), _) => None,
            (_, LabelMode::Accepted) => Some(LabelDrop::NotAccepted),
            (_, LabelMode::NotRejected) => None,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::fs::OpenOptions;

    fn key(task: &str) -> RolloutKey {
        RolloutKey {
            environment: "math".into(),
            scaffold: "chat".into(),
            model: "m".into(),
            task: task.into(),
            sample: 0,
        }
    }

    fn label(task: &str, verdict: Verdict) -> Label {
        Label {
            key: key(task),
            verdict,
            note: format!("{verdict:?} {task}"),
            at: "2026-11-24T00:00:00Z".into(),
        }
    }

    #[test]
    fn the_last_decision_per_rollout_wins_and_clear_takes_it_back() {
        let dir = tempfile::tempdir().unwrap();
        append(dir.path(), &label("a", Verdict::Accept)).unwrap();
        append(dir.path(), &label("b", Verdict::Accept)).unwrap();
        append(dir.path(), &label("a", Verdict::Reject)).unwrap();
        append(dir.path(), &label("b", Verdict::Clear)).unwrap();
        append(dir.path(), &label("c", Verdict::Accept)).unwrap();
        let labels = Labels::read(dir.path()).unwrap();
        assert_eq!(labels.get(&key("a")).unwrap().verdict, Verdict::Reject);
        assert_eq!(labels.get(&key("a")).unwrap().note, "Reject a");
        assert!(labels.get(&key("b")).is_none());
        assert_eq!(labels.count(Verdict::Accept), 1);
        // Every decision is still on record.
        let text = std::fs::read_to_string(dir.path().join(LABELS)).unwrap();
        assert_eq!(text.lines().count(), 5);

        let accepted = LabelFilter {
            mode: LabelMode::Accepted,
            labels: labels.clone(),
        };
        assert_eq!(accepted.check(&key("a")), Some(LabelDrop::Rejected));
        assert_eq!(accepted.check(&key("b")), Some(LabelDrop::NotAccepted));
        assert_eq!(accepted.check(&key("c")), None);
        let not_rejected = LabelFilter {
            mode: LabelMode::NotRejected,
            labels,
        };
        assert_eq!(not_rejected.check(&key("a")), Some(LabelDrop::Rejected));
        assert_eq!(not_rejected.check(&key("b")), None);
    }

    #[test]
    fn a_torn_last_line_is_ignored_and_the_next_append_starts_afresh() {
        let dir = tempfile::tempdir().unwrap();
        append(dir.path(), &label("a", Verdict::Accept)).unwrap();
        let path = dir.path().join(LABELS);
        let mut f = OpenOptions::new().append(true).open(&path).unwrap();
        f.write_all(b"{\"key\": {\"environ").unwrap();
        drop(f);
        assert_eq!(Labels::read(dir.path()).unwrap().by_key.len(), 1);
        append(dir.path(), &label("b", Verdict::Reject)).unwrap();
        let labels = Labels::read(dir.path()).unwrap();
        assert_eq!(labels.by_key.len(), 2);
        assert_eq!(labels.get(&key("b")).unwrap().verdict, Verdict::Reject);
        let text = std::fs::read_to_string(&path).unwrap();
        assert_eq!(text.lines().count(), 3, "{text}");
    }

    #[cfg(unix)]
    #[test]
    fn a_planted_link_is_refused_and_its_target_untouched() {
        let dir = tempfile::tempdir().unwrap();
        let outside = dir.path().join("outside.txt");
        std::fs::write(&outside, "precious\n").unwrap();
        let run = dir.path().join("run");
        std::fs::create_dir(&run).unwrap();
        std::os::unix::fs::symlink(&outside, run.join(LABELS)).unwrap();
        let err = append(&run, &label("a", Verdict::Accept)).unwrap_err();
        assert!(matches!(err, StoreError::Refused { .. }), "{err:?}");
        let message = err.to_string();
        assert!(
            message.contains("labels.jsonl") && message.contains("symbolic link"),
            "{message}"
        );
        assert_eq!(std::fs::read_to_string(&outside).unwrap(), "precious\n");
        // A dangling link creates nothing at its target either.
        let nowhere = dir.path().join("nowhere.jsonl");
        std::fs::remove_file(run.join(LABELS)).unwrap();
        std::os::unix::fs::symlink(&nowhere, run.join(LABELS)).unwrap();
        assert!(append(&run, &label("a", Verdict::Accept)).is_err());
        assert!(!nowhere.exists());
    }

    #[test]
    fn a_bad_line_names_file_line_and_field() {
        let dir = tempfile::tempdir().unwrap();
        append(dir.path(), &label("a", Verdict::Accept)).unwrap();
        let path = dir.path().join(LABELS);
        let mut f = OpenOptions::new().append(true).open(&path).unwrap();
        f.write_all(b"{\"key\": {\"environment\": \"math\", \"scaffold\": \"chat\", \"model\": \"m\", \"task\": \"t\", \"sample\": 0}, \"verdict\": \"maybe\", \"at\": \"x\"}\n").unwrap();
        drop(f);
        let err = Labels::read(dir.path()).unwrap_err().to_string();
        assert!(err.contains("labels.jsonl:2: field `verdict`"), "{err}");
        assert!(err.contains("accept"), "{err}");
    }
}

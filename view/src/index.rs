//! What the viewer keeps of a run: one small summary per rollout and where its line is in
//! `trajectories.jsonl`, never the records themselves. A rollout is read from disk when it is
//! opened or searched, so a 100,000-record run costs tens of megabytes, not gigabytes. The index
//! follows the file: lines a running `trawl run` appends are added, and a rewritten file (a
//! resume) is indexed again.

use std::collections::HashMap;
use std::fs::File;
use std::io::{BufRead, BufReader, Seek, SeekFrom};
use std::os::unix::fs::{FileExt, MetadataExt};
use std::path::{Path, PathBuf};

use serde::Serialize;
use trawl_core::labels::{Label, Labels};
use trawl_core::store::{self, StoreError};
use trawl_core::{ExitStatus, RolloutKey, TrajectoryRecord};

/// Which file the index has read and how far, and the labels file's size: when any of them
/// changes, what was selected before may have changed.
pub type Version = (u64, u64, Option<u64>);

/// One rollout as the list shows it.
#[derive(Debug, Clone, Serialize)]
pub struct Entry {
    pub key: RolloutKey,
    #[serde(skip)]
    pub offset: u64,
    #[serde(skip)]
    pub len: u32,
    /// Its line in `trajectories.jsonl`.
    pub line: u32,
    pub success: bool,
    pub scored: bool,
    pub reward: f64,
    pub exit_status: ExitStatus,
    pub turns: u32,
    pub tokens: u64,
    pub duration_ms: u64,
}

impl Entry {
    fn of(r: &TrajectoryRecord, offset: u64, len: usize, line: usize) -> Self {
        Entry {
            key: r.key.clone(),
            offset,
            len: u32::try_from(len).unwrap_or(u32::MAX),
            line: u32::try_from(line).unwrap_or(u32::MAX),
            success: r.success,
            scored: r.is_scored(),
            reward: r.reward,
            exit_status: r.outcome.exit_status,
            turns: u32::try_from(r.assistant_turns()).unwrap_or(u32::MAX),
            tokens: r.usage.total_tokens(),
            duration_ms: r.timing.duration_ms,
        }
    }

    /// The outcome as the filter names it.
    pub fn outcome(&self) -> &'static str {
        if !self.exit_status.is_final() {
            "unfinished"
        } else if !self.scored {
            "unscored"
        } else if self.success {
            "success"
        } else {
            "failure"
        }
    }
}

/// One run being viewed.
pub struct RunIndex {
    /// As the user named it.
    pub name: String,
    /// Its `trajectories.jsonl` (or the trajectories file given).
    pub file: PathBuf,
    /// Where its labels are kept: the run directory (or the folder of the file given).
    pub dir: PathBuf,
    pub entries: Vec<Entry>,
    by_key: HashMap<RolloutKey, usize>,
    indexed_to: u64,
    lines: usize,
    inode: u64,
    /// Lines left out (damaged, or a second record of a key), each named by file and line.
    pub damaged: Vec<String>,
    pub labels: Labels,
    labels_len: Option<u64>,
    /// Why the labels file could not be read, if it could not.
    pub labels_error: Option<String>,
}

impl RunIndex {
    /// Opens a run directory or a trajectories file and indexes it.
    pub fn open(path: &Path) -> Result<Self, String> {
        let (file, dir) = if path.is_file() {
            let dir = match path.parent() {
                Some(p) if !p.as_os_str().is_empty() => p.to_path_buf(),
                _ => PathBuf::from("."),
            };
            (path.to_path_buf(), dir)
        } else {
            (path.join(store::TRAJECTORIES), path.to_path_buf())
        };
        if !file.is_file() {
            return Err(format!(
                "{} has no {}: is it a trawl run directory (or a trajectories .jsonl file)?",
                path.display(),
                store::TRAJECTORIES
            ));
        }
        let mut run = RunIndex {
            name: path.display().to_string(),
            file,
            dir,
            entries: Vec::new(),
            by_key: HashMap::new(),
            indexed_to: 0,
            lines: 0,
            inode: 0,
            damaged: Vec::new(),
            labels: Labels::default(),
            labels_len: None,
            labels_error: None,
        };
        run.refresh().map_err(|e| e.to_string())?;
        Ok(run)
    }

    /// Catches up with the files: new complete lines are indexed, a file replaced or cut
    /// short is indexed again, and the labels are read again when their file changed.
    pub fn refresh(&mut self) -> Result<(), StoreError> {
        let io = |source| StoreError::Io {
            path: self.file.clone(),
            source,
        };
        let meta = std::fs::metadata(&self.file).map_err(io)?;
        if meta.ino() != self.inode || meta.len() < self.indexed_to {
            self.entries.clear();
            self.by_key.clear();
            self.damaged.clear();
            self.indexed_to = 0;
            self.lines = 0;
            self.inode = meta.ino();
        }
        if meta.len() > self.indexed_to {
            self.index_from_end_of_index()?;
        }
        let labels_path = self.dir.join(trawl_core::labels::LABELS);
        let labels_len = std::fs::metadata(&labels_path).ok().map(|m| m.len());
        if labels_len != self.labels_len {
            self.reload_labels();
        }
        Ok(())
    }

    /// Reads the labels file again.
    pub fn reload_labels(&mut self) {
        let labels_path = self.dir.join(trawl_core::labels::LABELS);
        self.labels_len = std::fs::metadata(&labels_path).ok().map(|m| m.len());
        match Labels::read(&self.dir) {
            Ok(l) => {
                self.labels = l;
                self.labels_error = None;
            }
            Err(e) => self.labels_error = Some(e.to_string()),
        }
    }

    fn index_from_end_of_index(&mut self) -> Result<(), StoreError> {
        let path = self.file.clone();
        let io = |source| StoreError::Io {
            path: path.clone(),
            source,
        };
        let mut f = File::open(&path).map_err(io)?;
        f.seek(SeekFrom::Start(self.indexed_to)).map_err(io)?;
        let mut reader = BufReader::with_capacity(1 << 20, f);
        let mut buf = Vec::new();
        loop {
            buf.clear();
            let n = reader.read_until(b'\n', &mut buf).map_err(io)?;
            // A line still being written (no newline yet) waits for the next refresh.
            if n == 0 || buf.last() != Some(&b'\n') {
                return Ok(());
            }
            let offset = self.indexed_to;
            self.indexed_to += n as u64;
            self.lines += 1;
            let line_no = self.lines;
            let text = match std::str::from_utf8(&buf) {
                Ok(t) => t.trim_end(),
                Err(e) => {
                    self.damaged
                        .push(format!("{}:{line_no}: not UTF-8 ({e})", path.display()));
                    continue;
                }
            };
            if text.trim().is_empty() {
                continue;
            }
            match store::parse_record(&path, line_no, text) {
                Ok(r) => {
                    if let Some(first) = self.by_key.get(&r.key) {
                        let first_line = self.entries[*first].line;
                        self.damaged.push(format!(
                            "{}:{line_no}: rollout {} already has a record, on line {first_line}",
                            path.display(),
                            r.key
                        ));
                        continue;
                    }
                    self.by_key.insert(r.key.clone(), self.entries.len());
                    self.entries
                        .push(Entry::of(&r, offset, text.len(), line_no));
                }
                Err(e) => self
                    .damaged
                    .push(e.to_string().lines().next().unwrap_or_default().to_string()),
            }
        }
    }

    /// The raw line of entry `i`.
    pub fn raw(&self, i: usize) -> Result<Vec<u8>, StoreError> {
        let e = &self.entries[i];
        let io = |source| StoreError::Io {
            path: self.file.clone(),
            source,
        };
        let f = File::open(&self.file).map_err(io)?;
        let mut buf = vec![0u8; e.len as usize];
        f.read_exact_at(&mut buf, e.offset).map_err(io)?;
        Ok(buf)
    }

    /// The whole record of entry `i`, read from disk.
    pub fn record(&self, i: usize) -> Result<TrajectoryRecord, StoreError> {
        let raw = self.raw(i)?;
        let text = String::from_utf8_lossy(&raw);
        store::parse_record(&self.file, self.entries[i].line as usize, &text)
    }

    /// Entries whose line holds `needle` (ASCII case folded), among `candidates`, reading the
    /// file once in order.
    pub fn search(&self, candidates: &[usize], needle: &[u8]) -> Result<Vec<usize>, StoreError> {
        let finder = memchr::memmem::Finder::new(needle);
        let io = |source| StoreError::Io {
            path: self.file.clone(),
            source,
        };
        let f = File::open(&self.file).map_err(io)?;
        let mut buf = Vec::new();
        let mut out = Vec::new();
        for &i in candidates {
            let e = &self.entries[i];
            buf.resize(e.len as usize, 0);
            f.read_exact_at(&mut buf, e.offset).map_err(io)?;
            buf.make_ascii_lowercase();
            if finder.find(&buf).is_some() {
                out.push(i);
            }
        }
        Ok(out)
    }

    pub fn label(&self, i: usize) -> Option<&Label> {
        self.labels.get(&self.entries[i].key)
    }

    /// How far the index has read, for caches to notice growth.
    pub fn version(&self) -> Version {
        (self.inode, self.indexed_to, self.labels_len)
    }
}

//! The run directory: `trajectories.jsonl` (append-only, one whole record per line, flushed),
//! `config.toml` (as resolved), `manifest.json`, and a lock that keeps a second writer out.
//!
//! Resume rules: a record with a final exit status is kept and its key never re-run; interrupted
//! and infrastructure-error records, and a torn last line, are moved to `attempts.jsonl` (kept
//! for diagnosis, never read as data) and `trajectories.jsonl` is rewritten through a temporary
//! file, fsync and rename, so that it holds exactly one record per key after any number of
//! resumes.

use std::collections::HashSet;
use std::fs::{self, File, OpenOptions};
use std::io::{self, BufRead, BufReader, Write};
use std::path::{Path, PathBuf};

use crate::trajectory::{RolloutKey, TrajectoryRecord, TRAJECTORY_SCHEMA};

pub const TRAJECTORIES: &str = "trajectories.jsonl";
pub const ATTEMPTS: &str = "attempts.jsonl";
pub const CONFIG: &str = "config.toml";
pub const MANIFEST: &str = "manifest.json";
const LOCK: &str = ".lock";

#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    #[error("{path}: {source}")]
    Io {
        path: PathBuf,
        #[source]
        source: io::Error,
    },
    #[error("run directory {0} is in use by another trawl process (it holds {0}/.lock); wait for it to finish or use another --out")]
    Locked(PathBuf),
    #[error("{path}:{line}: {field}{message}\n  hint: {hint}")]
    BadRecord {
        path: PathBuf,
        line: usize,
        field: String,
        message: String,
        hint: String,
    },
    #[error("{0} has no {TRAJECTORIES}: is it a trawl run directory?")]
    NotARun(PathBuf),
    #[error("refusing to write {path}: {reason}\n  hint: {hint}")]
    Refused {
        path: PathBuf,
        reason: String,
        hint: String,
    },
}

/// The reviewers' labels of a run directory (`trawl view` appends to it; see `labels`).
pub const LABELS: &str = "labels.jsonl";

/// The files a run directory owns. No command but `trawl run` (and `trawl import` into a run)
/// writes them, and `trawl view` appends to the reviewers' labels.
pub const RUN_FILES: [&str; 6] = [TRAJECTORIES, ATTEMPTS, CONFIG, MANIFEST, LOCK, LABELS];

/// Whether `dir` is a run directory: it holds a run's data or manifest.
pub fn is_run_dir(dir: &Path) -> bool {
    dir.join(TRAJECTORIES).is_file() || dir.join(MANIFEST).is_file()
}

/// Checks that a command may write its output at `path`: never a run directory's own file (also
/// when reached through a symbolic link), never something that exists and is not a regular file
/// (a folder, a device, a pipe, a socket, or a link to one; `force` or not), and not an existing
/// file unless `force`.
pub fn check_output(path: &Path, force: bool) -> Result<(), StoreError> {
    let refused = |reason: String, hint: &str| StoreError::Refused {
        path: path.to_path_buf(),
        reason,
        hint: hint.to_string(),
    };
    let name = path
        .file_name()
        .ok_or_else(|| refused("it names no file".into(), "give a file name"))?;
    let parent = match path.parent() {
        Some(p) if !p.as_os_str().is_empty() => p,
        _ => Path::new("."),
    };
    // Where the write would really land: the link's target, or the folder's real path.
    let resolved = match fs::canonicalize(path) {
        Ok(p) => p,
        Err(_) => fs::canonicalize(parent)
            .map(|d| d.join(name))
            .unwrap_or_else(|_| path.to_path_buf()),
    };
    for candidate in [path, resolved.as_path()] {
        let (Some(dir), Some(file)) = (candidate.parent(), candidate.file_name()) else {
            continue;
        };
        let dir = if dir.as_os_str().is_empty() {
            Path::new(".")
        } else {
            dir
        };
        if RUN_FILES.iter().any(|f| file == *f) && is_run_dir(dir) {
            return Err(refused(
                format!(
                    "it is the run's own `{}` in {}",
                    file.to_string_lossy(),
                    dir.display()
                ),
                "write exports and reports to another file name (the default names never collide)",
            ));
        }
    }
    if resolved.is_dir() {
        return Err(refused("it is a folder".into(), "give a file name"));
    }
    // A device, a pipe or a socket (or a link to one) is no file to replace: renaming over it
    // would swap `/dev/null` for a regular file, so not even --force allows it.
    if let Ok(meta) = fs::metadata(path) {
        if !meta.is_file() {
            return Err(refused(
                "it exists and is not a regular file (a device, a pipe or a socket)".into(),
                "give the path of a regular file, or of one that does not exist yet",
            ));
        }
    }
    if !force && fs::symlink_metadata(path).is_ok() {
        return Err(refused(
            "it already exists".into(),
            "pass --force to replace it, or choose another --output",
        ));
    }
    Ok(())
}

/// Opens a run file for appending (created when missing, readable too), never through a
/// symbolic link: a link planted in a run directory (`labels.jsonl -> ~/.bashrc`) would carry
/// the append to a file outside the run. A link is refused with [`StoreError::Refused`]; the
/// file it points to is not touched.
pub fn open_append(path: &Path) -> Result<File, StoreError> {
    open_run_file(
        OpenOptions::new().create(true).read(true).append(true),
        path,
    )
}

/// Opens `path` with `options` but without following a symbolic link in its last component
/// (`O_NOFOLLOW`, so no check can be raced): a link is refused, naming the file.
fn open_run_file(options: &mut OpenOptions, path: &Path) -> Result<File, StoreError> {
    #[cfg(unix)]
    {
        use std::os::unix::fs::OpenOptionsExt;
        options.custom_flags(libc::O_NOFOLLOW);
    }
    let is_link = || fs::symlink_metadata(path).is_ok_and(|m| m.file_type().is_symlink());
    // Without O_NOFOLLOW (not unix) the check before opening is the best there is.
    if !cfg!(unix) && is_link() {
        return Err(link_refused(path));
    }
    options.open(path).map_err(|source| {
        if is_link() {
            link_refused(path)
        } else {
            StoreError::Io {
                path: path.to_path_buf(),
                source,
            }
        }
    })
}

fn link_refused(path: &Path) -> StoreError {
    let target = fs::read_link(path)
        .map(|t| format!(" (to {})", t.display()))
        .unwrap_or_default();
    StoreError::Refused {
        path: path.to_path_buf(),
        reason: format!(
            "it is a symbolic link{target}; trawl writes a run's files only as plain files inside the run directory, never through a link"
        ),
        hint: "remove the link; to keep a run elsewhere, link the run directory itself".into(),
    }
}

fn io_err(path: &Path) -> impl FnOnce(io::Error) -> StoreError + '_ {
    move |source| StoreError::Io {
        path: path.to_path_buf(),
        source,
    }
}

/// What reading a trajectories file found.
#[derive(Debug, Default)]
pub struct ReadReport {
    /// Raw text of a last line cut off mid-write (no newline, not valid JSON), if any.
    pub torn_tail: Option<String>,
    /// Lines left out under [`read_records_skipping`]: each error names its file and line.
    pub skipped: Vec<StoreError>,
    /// Records whose rewards break [`crate::reward`]'s rule (a `"reward": null` an older trawl
    /// wrote for an overflow), read as infrastructure errors: each note names file and line.
    pub repaired: Vec<String>,
}

/// Parses one line of `trajectories.jsonl`, naming the field that is wrong. A record whose
/// rewards break [`crate::reward`]'s rule is read as an infrastructure error (see
/// [`parse_record_noting`] for the note that says so).
pub fn parse_record(
    path: &Path,
    line_no: usize,
    line: &str,
) -> Result<TrajectoryRecord, StoreError> {
    parse_record_noting(path, line_no, line).map(|(r, _)| r)
}

/// [`parse_record`], with a note naming file, line and fields when the record's rewards broke
/// the rule and it was read as an infrastructure error: never a line that kills the reader.
pub fn parse_record_noting(
    path: &Path,
    line_no: usize,
    line: &str,
) -> Result<(TrajectoryRecord, Option<String>), StoreError> {
    let de = &mut serde_json::Deserializer::from_str(line);
    let rec: TrajectoryRecord = serde_path_to_error::deserialize(&mut *de).map_err(|e| {
        let field = e.path().to_string();
        StoreError::BadRecord {
            path: path.to_path_buf(),
            line: line_no,
            field: if field.is_empty() || field == "." { String::new() } else { format!("field `{field}`: ") },
            message: e.inner().to_string(),
            hint: "this line is not a trawl.trajectory/1 record; restore it from a backup or delete the line, then run again".into(),
        }
    })?;
    // One line is one record: anything after it (a second record glued on, garbage) is an
    // error, never silently dropped.
    de.end().map_err(|e| StoreError::BadRecord {
        path: path.to_path_buf(),
        line: line_no,
        field: String::new(),
        message: format!(
            "text after the record ({e}): two records glued on one line, or trailing garbage"
        ),
        hint: "each line must hold exactly one record; split or delete the line, then run again"
            .into(),
    })?;
    if rec.schema != TRAJECTORY_SCHEMA {
        return Err(StoreError::BadRecord {
            path: path.to_path_buf(),
            line: line_no,
            field: "field `schema`: ".into(),
            message: format!("`{}` is not a schema this trawl reads", rec.schema),
            hint: format!(
                "this trawl reads `{TRAJECTORY_SCHEMA}`; use the trawl version that wrote the run"
            ),
        });
    }
    let mut rec = rec;
    let note = rec.repair_unsound_rewards(path, line_no);
    Ok((rec, note))
}

/// Reads every record of a trajectories file. A last line cut off by a crash is reported in the
/// `ReadReport` and skipped; a bad line anywhere else (not UTF-8, not a record, two records
/// glued together, a rollout key that an earlier line already has) is an error naming its file,
/// line and field.
pub fn read_records(path: &Path) -> Result<(Vec<TrajectoryRecord>, ReadReport), StoreError> {
    read_all(path, false)
}

/// Like [`read_records`], but bad lines are left out and listed in `ReadReport::skipped`, for a
/// user who asked for that explicitly.
pub fn read_records_skipping(
    path: &Path,
) -> Result<(Vec<TrajectoryRecord>, ReadReport), StoreError> {
    read_all(path, true)
}

fn read_all(path: &Path, skip: bool) -> Result<(Vec<TrajectoryRecord>, ReadReport), StoreError> {
    let mut records = Vec::new();
    let mut report = ReadReport::default();
    let mut seen: std::collections::HashMap<RolloutKey, usize> = std::collections::HashMap::new();
    for_each_line(path, |line_no, line, is_last_unterminated| {
        let raw = line.raw();
        let parsed = line
            .and_then(|l| parse_record_noting(path, line_no, l))
            .and_then(|(r, note)| match seen.get(&r.key) {
                Some(first) => Err(StoreError::BadRecord {
                    path: path.to_path_buf(),
                    line: line_no,
                    field: "field `key`: ".into(),
                    message: format!("rollout {} already has a record, on line {first}", r.key),
                    hint: "a run holds one record per rollout; delete one of the two lines (`trawl run` keeps the first and moves the other to attempts.jsonl)".into(),
                }),
                None => {
                    seen.insert(r.key.clone(), line_no);
                    Ok((r, note))
                }
            });
        match parsed {
            Ok((r, note)) => {
                report.repaired.extend(note);
                records.push(r)
            }
            Err(_) if is_last_unterminated => {
                report.torn_tail = Some(String::from_utf8_lossy(raw).into_owned())
            }
            Err(e) if skip => report.skipped.push(e),
            Err(e) => return Err(e),
        }
        Ok(())
    })?;
    Ok((records, report))
}

/// One line of a trajectories file: its text, or why it is not text.
struct Line<'a> {
    raw: &'a [u8],
    text: Result<&'a str, StoreError>,
}

impl<'a> Line<'a> {
    fn and_then<T>(
        self,
        f: impl FnOnce(&'a str) -> Result<T, StoreError>,
    ) -> Result<T, StoreError> {
        self.text.and_then(f)
    }

    fn raw(&self) -> &'a [u8] {
        self.raw
    }
}

/// Calls `f(line_number, line, is_last_line_without_newline)` for every non-empty line. A line
/// that is not UTF-8 comes with its error (naming file and line) instead of its text.
fn for_each_line(
    path: &Path,
    mut f: impl FnMut(usize, Line<'_>, bool) -> Result<(), StoreError>,
) -> Result<(), StoreError> {
    let file = File::open(path).map_err(io_err(path))?;
    let mut reader = BufReader::with_capacity(1 << 20, file);
    let mut buf = Vec::new();
    let mut line_no = 0;
    loop {
        buf.clear();
        let n = reader.read_until(b'\n', &mut buf).map_err(io_err(path))?;
        if n == 0 {
            return Ok(());
        }
        line_no += 1;
        let terminated = buf.last() == Some(&b'\n');
        let mut end = buf.len();
        while end > 0 && matches!(buf[end - 1], b'\n' | b'\r') {
            end -= 1;
        }
        let raw = &buf[..end];
        if raw.iter().all(u8::is_ascii_whitespace) {
            continue;
        }
        let text = std::str::from_utf8(raw).map_err(|e| StoreError::BadRecord {
            path: path.to_path_buf(),
            line: line_no,
            field: String::new(),
            message: format!("not UTF-8 text ({e})"),
            hint: "records are UTF-8 JSON; the line was damaged: restore it from a backup or delete it, then run again".into(),
        });
        f(line_no, Line { raw, text }, !terminated)?;
    }
}

/// An open run directory, locked for writing for as long as this value lives.
pub struct RunDir {
    path: PathBuf,
    _lock: File,
}

/// What a resume found in a run directory.
#[derive(Debug, Default)]
pub struct ResumeState {
    /// Keys with a final record: never re-run.
    pub completed: HashSet<RolloutKey>,
    /// Records moved aside to be re-run (interrupted, infrastructure errors).
    pub moved_aside: usize,
    /// Whether a torn last line was dropped.
    pub dropped_torn_tail: bool,
    /// Extra records for a key that already had one (only if the file was edited by hand).
    pub duplicates_removed: usize,
    /// Completed keys whose rollout succeeded (sampling until enough succeed goes on from them).
    pub successes: HashSet<RolloutKey>,
    /// Tokens (prompt and completion) every record read used, those moved aside included: what
    /// the run has spent of its budget.
    pub tokens_used: u64,
    /// Records whose rewards broke [`crate::reward`]'s rule, moved aside to be re-run like any
    /// infrastructure error: one note each, naming file, line and fields.
    pub repaired: Vec<String>,
}

impl RunDir {
    /// Opens (creating if needed) the run directory and takes its lock.
    pub fn open(path: &Path) -> Result<Self, StoreError> {
        fs::create_dir_all(path).map_err(io_err(path))?;
        let lock_path = path.join(LOCK);
        let lock = open_run_file(
            OpenOptions::new().create(true).truncate(false).write(true),
            &lock_path,
        )?;
        match lock.try_lock() {
            Ok(()) => {}
            Err(fs::TryLockError::WouldBlock) => {
                return Err(StoreError::Locked(path.to_path_buf()))
            }
            Err(fs::TryLockError::Error(e)) => {
                return Err(StoreError::Io {
                    path: lock_path,
                    source: e,
                })
            }
        }
        Ok(RunDir {
            path: path.to_path_buf(),
            _lock: lock,
        })
    }

    pub fn path(&self) -> &Path {
        &self.path
    }

    pub fn file(&self, name: &str) -> PathBuf {
        self.path.join(name)
    }

    /// Reads what earlier sessions left, keeps the final records, moves the rest aside.
    pub fn prepare_resume(&self) -> Result<ResumeState, StoreError> {
        let path = self.file(TRAJECTORIES);
        let mut state = ResumeState::default();
        if !path.exists() {
            return Ok(state);
        }
        let mut keep: Vec<String> = Vec::new();
        let mut aside: Vec<String> = Vec::new();
        for_each_line(&path, |line_no, line, unterminated| {
            let raw = String::from_utf8_lossy(line.raw()).into_owned();
            let parsed = line
                .and_then(|l| parse_record_noting(&path, line_no, l))
                .map(|(rec, note)| {
                    state.repaired.extend(note);
                    rec
                });
            if let Ok(rec) = &parsed {
                state.tokens_used += rec.usage.total_tokens();
            }
            match parsed {
                Ok(rec) if rec.is_final() => {
                    if state.completed.insert(rec.key.clone()) {
                        if rec.success {
                            state.successes.insert(rec.key.clone());
                        }
                        keep.push(raw);
                    } else {
                        state.duplicates_removed += 1;
                        aside.push(raw);
                    }
                }
                Ok(_) => {
                    state.moved_aside += 1;
                    aside.push(raw);
                }
                Err(_) if unterminated => {
                    state.dropped_torn_tail = true;
                    aside.push(raw);
                }
                Err(e) => return Err(e),
            }
            Ok(())
        })?;
        if aside.is_empty() {
            return Ok(state);
        }
        // Keep what is moved aside first, then replace the data file: a crash in between leaves
        // a copy in both places, never in neither.
        let attempts = self.file(ATTEMPTS);
        let mut f = open_append(&attempts)?;
        let mut text = aside.join("\n");
        text.push('\n');
        f.write_all(text.as_bytes()).map_err(io_err(&attempts))?;
        f.sync_all().map_err(io_err(&attempts))?;
        let mut body = keep.join("\n");
        if !body.is_empty() {
            body.push('\n');
        }
        self.write_atomic(TRAJECTORIES, body.as_bytes())?;
        Ok(state)
    }

    /// Writes a whole file through a temporary file, fsync and rename.
    pub fn write_atomic(&self, name: &str, bytes: &[u8]) -> Result<(), StoreError> {
        write_atomic(&self.file(name), bytes)
    }

    /// Opens `trajectories.jsonl` for appending.
    pub fn appender(&self) -> Result<RecordWriter, StoreError> {
        let path = self.file(TRAJECTORIES);
        let file = open_append(&path)?;
        Ok(RecordWriter {
            file,
            path,
            buf: Vec::with_capacity(64 << 10),
        })
    }
}

/// Writes `bytes` to `path` through a temporary file in the same folder, fsync and rename.
pub fn write_atomic(path: &Path, bytes: &[u8]) -> Result<(), StoreError> {
    let dir = path.parent().unwrap_or(Path::new("."));
    let name = path
        .file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_default();
    let tmp = dir.join(format!(".{name}.tmp.{}", std::process::id()));
    // A new file, never an existing one or a link planted at the temporary name (`create_new`
    // follows no link): a leftover of a crash is removed first (the link, not its target).
    let _ = fs::remove_file(&tmp);
    let mut f = OpenOptions::new()
        .write(true)
        .create_new(true)
        .open(&tmp)
        .map_err(io_err(&tmp))?;
    f.write_all(bytes).map_err(io_err(&tmp))?;
    f.sync_all().map_err(io_err(&tmp))?;
    drop(f);
    fs::rename(&tmp, path).map_err(io_err(path))?;
    if let Ok(d) = File::open(dir) {
        // Make the rename itself durable; a failure here loses nothing already written.
        let _ = d.sync_all();
    }
    Ok(())
}

/// Appends records to `trajectories.jsonl`: each record is one `write` of one whole line, so a
/// crash can tear at most the line being written.
pub struct RecordWriter {
    file: File,
    path: PathBuf,
    buf: Vec<u8>,
}

impl RecordWriter {
    pub fn append(&mut self, record: &TrajectoryRecord) -> Result<(), StoreError> {
        self.buf.clear();
        serde_json::to_writer(&mut self.buf, record).map_err(|e| StoreError::Io {
            path: self.path.clone(),
            source: io::Error::other(e),
        })?;
        self.buf.push(b'\n');
        self.file.write_all(&self.buf).map_err(io_err(&self.path))
    }

    /// Flushes to stable storage (called periodically and at the end, not per record).
    pub fn sync(&mut self) -> Result<(), StoreError> {
        self.file.sync_data().map_err(io_err(&self.path))
    }
}

//! What the `local` sandbox and its runner say to each other, and the one check they share.
//!
//! The runner is started once per episode inside the sandbox (its namespaces, its user) and
//! then runs every command of the episode: trawl writes a [`Request`] to its stdin and reads a
//! [`Reply`] from its stdout. Every message is a frame: its length as four little-endian bytes,
//! then that many bytes. A command never writes to these pipes (its output goes to pipes of its
//! own, read by the runner and sent back as counted bytes), so nothing it prints can pass for a
//! reply. The runner first sends [`HELLO`], which names the protocol version, so that a trawl
//! never talks to a runner built from other code.

#![forbid(unsafe_code)]

use std::io::{Read, Write};
use std::path::Path;

/// The runner's first frame: the protocol and its version.
pub const HELLO: &[u8] = b"trawl-sandbox-runner/3";

/// The largest frame either side accepts (a command of a few MiB, two capped outputs).
pub const MAX_FRAME: usize = 256 << 20;

/// Resource limits set on a command before it starts (by util-linux's `prlimit`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Rlimits {
    pub cpu_secs: u64,
    /// The address-space limit; `None` where a memory cgroup bounds the sandbox instead (there
    /// an allocation past the cap is an OOM kill the kernel counts, not a `MemoryError` a
    /// program could catch).
    pub memory_bytes: Option<u64>,
    pub file_size_bytes: u64,
    pub open_files: u64,
    /// `None` where the kernel would count the sandbox's processes together with others.
    pub processes: Option<u64>,
}

impl Rlimits {
    /// `prlimit`'s arguments for these limits, up to the `--` before the command.
    pub fn prlimit_args(&self) -> Vec<String> {
        let mut a = vec![
            format!("--cpu={}:{}", self.cpu_secs, self.cpu_secs + 1),
            format!("--fsize={}", self.file_size_bytes),
            format!("--nofile={}", self.open_files),
            "--core=0".to_string(),
        ];
        if let Some(bytes) = self.memory_bytes {
            a.push(format!("--as={bytes}"));
        }
        if let Some(n) = self.processes {
            a.push(format!("--nproc={n}"));
        }
        a
    }

    /// A shell script that sets the limits a shell can set, then runs its `$0` with
    /// `/bin/sh -c` (the command, passed as the script's own argument, never spliced in): the
    /// CPU, file-size and open-file limits, and processes when given. Where this is used (a
    /// container) the container bounds memory and processes. A limit the shell refuses is left
    /// as it was.
    pub fn ulimit_script(&self) -> String {
        let mut s = format!(
            "ulimit -t {} 2>/dev/null; ulimit -f {} 2>/dev/null; ulimit -n {} 2>/dev/null; ",
            self.cpu_secs,
            self.file_size_bytes / 512,
            self.open_files
        );
        if let Some(n) = self.processes {
            s.push_str(&format!("ulimit -u {n} 2>/dev/null; "));
        }
        s.push_str("exec /bin/sh -c \"$0\"");
        s
    }
}

/// One command to run with `/bin/sh -c` in the sandbox's working folder.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Request {
    pub command: Vec<u8>,
    /// What the command reads on its stdin, then the end of input (a file trawl writes).
    pub stdin: Vec<u8>,
    pub rlimits: Rlimits,
    /// Wall-clock time; past it the command's process group gets SIGTERM, then SIGKILL.
    pub wall_ms: u64,
    /// Between that SIGTERM and SIGKILL.
    pub grace_ms: u64,
    /// How long, once the command's group is gone, the output pipes may stay open before
    /// what is in them is taken as all there is (only where a writer can outlive the group).
    pub drain_ms: u64,
    /// Bytes kept per output stream.
    pub output_cap: u64,
    /// Past this many bytes on one stream the command is stopped (it floods).
    pub flood: u64,
    /// The most the working folder may hold, in bytes.
    pub disk_cap: Option<u64>,
    /// After the command, kill every process the runner may signal (its own pid namespace, or
    /// a user of the sandbox's own): nothing the command started outlives it.
    pub kill_all: bool,
    /// Capped filesystems of the sandbox (its private `/tmp`, `/dev/shm`): one found full while
    /// the command ran or when it ended counts as the disk limit tripped, even when the command
    /// caught its `ENOSPC`.
    pub watch_full: Vec<Vec<u8>>,
    /// Where the sandbox shares the machine's temporary folders (the fallback): what its user
    /// owns there may hold at most this many bytes, measured like the working folder.
    pub shared_tmp: Option<SharedTmp>,
    /// The sandbox's cgroup folders as the runner sees them (a container's own): their counters
    /// (`pids.events`, `memory.events`, `memory.oom_control`) read before and after the
    /// command tell a limit the kernel enforced, even when the command caught the failure.
    pub cgroups: Vec<Vec<u8>>,
}

/// The machine's temporary folders, shared in the fallback, where a sandbox's user is capped.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct SharedTmp {
    pub uid: u32,
    pub cap: u64,
}

/// The folders [`SharedTmp`] measures.
pub const SHARED_TMP: [&str; 3] = ["/tmp", "/var/tmp", "/dev/shm"];

/// The limits a command ran into, as the kernel or the runner saw them, whatever the command
/// did about it (it may have caught the error and exited 0).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Tripped {
    /// A fork refused at the sandbox's process limit (`pids.events`).
    pub processes: bool,
    /// A process OOM-killed at the sandbox's memory limit.
    pub memory: bool,
    /// The working folder, the private `/tmp` or `/dev/shm` reached its cap.
    pub disk: bool,
}

impl Tripped {
    fn bits(self) -> u64 {
        u64::from(self.processes) | u64::from(self.memory) << 1 | u64::from(self.disk) << 2
    }

    fn from_bits(b: u64) -> Result<Self, String> {
        if b >> 3 != 0 {
            return Err(format!("unknown limit bits {b:#x}"));
        }
        Ok(Tripped {
            processes: b & 1 != 0,
            memory: b & 2 != 0,
            disk: b & 4 != 0,
        })
    }

    pub fn any(self) -> bool {
        self.bits() != 0
    }

    pub fn or(self, other: Tripped) -> Tripped {
        Tripped {
            processes: self.processes || other.processes,
            memory: self.memory || other.memory,
            disk: self.disk || other.disk,
        }
    }
}

/// The kernel's counts of limits enforced on a cgroup: forks refused at `pids.max`, processes
/// OOM-killed at the memory limit. Files that are missing (another cgroup version, a controller
/// not there) count 0.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct LimitCounts {
    pub pids_max: u64,
    pub oom_kills: u64,
}

impl LimitCounts {
    /// The counts summed over `dirs` (cgroup v1 keeps pids and memory in folders of their own).
    pub fn read<P: AsRef<Path>>(dirs: &[P]) -> Self {
        let field = |file: &Path, key: &str| -> u64 {
            std::fs::read_to_string(file)
                .ok()
                .and_then(|t| {
                    t.lines().find_map(|l| {
                        let (k, v) = l.split_once(' ')?;
                        (k == key).then(|| v.trim().parse().ok())?
                    })
                })
                .unwrap_or(0)
        };
        let mut c = LimitCounts::default();
        for d in dirs {
            let d = d.as_ref();
            c.pids_max += field(&d.join("pids.events"), "max");
            c.oom_kills += field(&d.join("memory.events"), "oom_kill");
            c.oom_kills += field(&d.join("memory.oom_control"), "oom_kill");
        }
        c
    }

    /// What went up since `before`.
    pub fn tripped_since(self, before: LimitCounts) -> Tripped {
        Tripped {
            processes: self.pids_max > before.pids_max,
            memory: self.oom_kills > before.oom_kills,
            disk: false,
        }
    }
}

/// Whether the filesystem at `path` is full: less than 1 MiB or 1% of it left (what a writer
/// that met `ENOSPC` leaves). A path that cannot be measured is not full.
pub fn filesystem_full(path: &Path) -> bool {
    match nix::sys::statvfs::statvfs(path) {
        Ok(s) => {
            let unit = s.fragment_size().max(1);
            let total = s.blocks().saturating_mul(unit);
            let free = s.blocks_available().saturating_mul(unit);
            total > 0 && free < (total / 100).max(1 << 20).min(total)
        }
        Err(_) => false,
    }
}

/// How a command ended.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Ending {
    Exited(i32),
    Signaled(i32),
    TimedOut,
    /// Stopped for writing more than [`Request::flood`] bytes to one stream.
    Flooded,
    /// Stopped for filling the working folder past [`Request::disk_cap`].
    DiskFull,
    /// The runner could not run it (it could not start a process): the sandbox's fault.
    Failed(String),
}

/// One output stream as kept: at most the cap, and how much went by.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Output {
    pub kept: Vec<u8>,
    pub seen: u64,
}

impl Output {
    pub fn push(&mut self, bytes: &[u8], cap: u64) {
        self.seen = self.seen.saturating_add(bytes.len() as u64);
        let room = (cap as usize).saturating_sub(self.kept.len());
        self.kept.extend_from_slice(&bytes[..bytes.len().min(room)]);
    }

    pub fn truncated(&self) -> bool {
        self.seen > self.kept.len() as u64
    }
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Reply {
    pub ending: Ending,
    pub stdout: Output,
    pub stderr: Output,
    /// The limits the command ran into, however it ended.
    pub tripped: Tripped,
}

/// Writes one frame.
pub fn write_frame(w: &mut impl Write, body: &[u8]) -> std::io::Result<()> {
    let len = u32::try_from(body.len())
        .ok()
        .filter(|n| (*n as usize) <= MAX_FRAME)
        .ok_or_else(|| std::io::Error::other("frame too large"))?;
    let mut frame = Vec::with_capacity(4 + body.len());
    frame.extend_from_slice(&len.to_le_bytes());
    frame.extend_from_slice(body);
    w.write_all(&frame)?;
    w.flush()
}

/// Reads one frame; `None` at a clean end of the stream (between frames).
pub fn read_frame(r: &mut impl Read) -> std::io::Result<Option<Vec<u8>>> {
    let mut len = [0u8; 4];
    match r.read_exact(&mut len) {
        Ok(()) => {}
        Err(e) if e.kind() == std::io::ErrorKind::UnexpectedEof => return Ok(None),
        Err(e) => return Err(e),
    }
    let len = frame_len(len)?;
    let mut body = vec![0u8; len];
    r.read_exact(&mut body)?;
    Ok(Some(body))
}

/// A frame's length from its four bytes, refused past [`MAX_FRAME`].
pub fn frame_len(bytes: [u8; 4]) -> std::io::Result<usize> {
    let len = u32::from_le_bytes(bytes) as usize;
    if len > MAX_FRAME {
        return Err(std::io::Error::other(format!(
            "a frame of {len} bytes is past the {MAX_FRAME}-byte limit"
        )));
    }
    Ok(len)
}

/// Bytes being put into a frame's body.
#[derive(Default)]
struct Put(Vec<u8>);

impl Put {
    fn u64(&mut self, v: u64) -> &mut Self {
        self.0.extend_from_slice(&v.to_le_bytes());
        self
    }
    fn i64(&mut self, v: i64) -> &mut Self {
        self.0.extend_from_slice(&v.to_le_bytes());
        self
    }
    fn bytes(&mut self, b: &[u8]) -> &mut Self {
        self.u64(b.len() as u64);
        self.0.extend_from_slice(b);
        self
    }
}

/// A frame's body being read; every read checks there is enough left.
struct Take<'a>(&'a [u8]);

impl<'a> Take<'a> {
    fn n(&mut self, n: usize) -> Result<&'a [u8], String> {
        if self.0.len() < n {
            return Err("the frame ends early".into());
        }
        let (head, rest) = self.0.split_at(n);
        self.0 = rest;
        Ok(head)
    }
    fn u64(&mut self) -> Result<u64, String> {
        let b = self.n(8)?;
        Ok(u64::from_le_bytes(b.try_into().map_err(|_| "short")?))
    }
    fn i64(&mut self) -> Result<i64, String> {
        Ok(self.u64()? as i64)
    }
    fn bytes(&mut self) -> Result<Vec<u8>, String> {
        let n = usize::try_from(self.u64()?).map_err(|_| "length out of range")?;
        Ok(self.n(n)?.to_vec())
    }
    /// A count, then that many byte strings (each at least its 8-byte length, so a count
    /// past what the frame holds is refused before anything is allocated for it).
    fn list(&mut self) -> Result<Vec<Vec<u8>>, String> {
        let n = usize::try_from(self.u64()?).map_err(|_| "count out of range")?;
        if n > self.0.len() / 8 {
            return Err("a list longer than its frame".into());
        }
        (0..n).map(|_| self.bytes()).collect()
    }
    fn end(&self) -> Result<(), String> {
        if self.0.is_empty() {
            Ok(())
        } else {
            Err(format!("{} bytes left over in the frame", self.0.len()))
        }
    }
}

/// `None` is sent as `u64::MAX`.
fn opt(v: Option<u64>) -> u64 {
    v.unwrap_or(u64::MAX)
}

fn unopt(v: u64) -> Option<u64> {
    (v != u64::MAX).then_some(v)
}

impl Request {
    pub fn encode(&self) -> Vec<u8> {
        let mut p = Put::default();
        let r = &self.rlimits;
        p.bytes(&self.command)
            .bytes(&self.stdin)
            .u64(r.cpu_secs)
            .u64(opt(r.memory_bytes))
            .u64(r.file_size_bytes)
            .u64(r.open_files)
            .u64(opt(r.processes))
            .u64(self.wall_ms)
            .u64(self.grace_ms)
            .u64(self.drain_ms)
            .u64(self.output_cap)
            .u64(self.flood)
            .u64(opt(self.disk_cap))
            .u64(u64::from(self.kill_all));
        p.u64(self.watch_full.len() as u64);
        for w in &self.watch_full {
            p.bytes(w);
        }
        match self.shared_tmp {
            Some(s) => p.u64(u64::from(s.uid)).u64(s.cap),
            None => p.u64(u64::MAX).u64(0),
        };
        p.u64(self.cgroups.len() as u64);
        for c in &self.cgroups {
            p.bytes(c);
        }
        p.0
    }

    pub fn decode(body: &[u8]) -> Result<Self, String> {
        let mut t = Take(body);
        let req = Request {
            command: t.bytes()?,
            stdin: t.bytes()?,
            rlimits: Rlimits {
                cpu_secs: t.u64()?,
                memory_bytes: unopt(t.u64()?),
                file_size_bytes: t.u64()?,
                open_files: t.u64()?,
                processes: unopt(t.u64()?),
            },
            wall_ms: t.u64()?,
            grace_ms: t.u64()?,
            drain_ms: t.u64()?,
            output_cap: t.u64()?,
            flood: t.u64()?,
            disk_cap: unopt(t.u64()?),
            kill_all: t.u64()? != 0,
            watch_full: t.list()?,
            shared_tmp: {
                let (uid, cap) = (t.u64()?, t.u64()?);
                match uid {
                    u64::MAX => None,
                    uid => Some(SharedTmp {
                        uid: u32::try_from(uid).map_err(|_| "uid out of range")?,
                        cap,
                    }),
                }
            },
            cgroups: t.list()?,
        };
        t.end()?;
        Ok(req)
    }
}

impl Reply {
    pub fn failed(why: impl Into<String>) -> Self {
        Reply {
            ending: Ending::Failed(why.into()),
            stdout: Output::default(),
            stderr: Output::default(),
            tripped: Tripped::default(),
        }
    }

    pub fn encode(&self) -> Vec<u8> {
        let mut p = Put::default();
        match &self.ending {
            Ending::Exited(c) => p.u64(0).i64(i64::from(*c)),
            Ending::Signaled(s) => p.u64(1).i64(i64::from(*s)),
            Ending::TimedOut => p.u64(2).i64(0),
            Ending::Flooded => p.u64(3).i64(0),
            Ending::DiskFull => p.u64(4).i64(0),
            Ending::Failed(why) => p.u64(5).i64(0).bytes(why.as_bytes()),
        };
        for o in [&self.stdout, &self.stderr] {
            p.bytes(&o.kept).u64(o.seen);
        }
        p.u64(self.tripped.bits());
        p.0
    }

    pub fn decode(body: &[u8]) -> Result<Self, String> {
        let mut t = Take(body);
        let kind = t.u64()?;
        let n = i32::try_from(t.i64()?).map_err(|_| "status out of range")?;
        let ending = match kind {
            0 => Ending::Exited(n),
            1 => Ending::Signaled(n),
            2 => Ending::TimedOut,
            3 => Ending::Flooded,
            4 => Ending::DiskFull,
            5 => Ending::Failed(String::from_utf8_lossy(&t.bytes()?).into_owned()),
            k => return Err(format!("unknown ending {k}")),
        };
        let mut out = || -> Result<Output, String> {
            Ok(Output {
                kept: t.bytes()?,
                seen: t.u64()?,
            })
        };
        let (stdout, stderr) = (out()?, out()?);
        let tripped = Tripped::from_bits(t.u64()?)?;
        t.end()?;
        Ok(Reply {
            ending,
            stdout,
            stderr,
            tripped,
        })
    }
}

/// The most entries a size check walks; a folder with more is over any sensible cap.
pub const MAX_ENTRIES: usize = 200_000;

/// Whether `dir` holds more than `cap` bytes (allocated blocks, so sparse files count as what
/// they use), or more than [`MAX_ENTRIES`] entries. Links are not followed.
pub fn size_over(dir: &Path, cap: u64) -> bool {
    allocated(&[dir.to_path_buf()], None, cap)
}

/// Whether what `uid` owns in the machine's temporary folders ([`SHARED_TMP`]) holds more than
/// `cap` bytes, leaving out `skip` (the sandbox's working folder, capped on its own). Only what
/// it made at their top is walked (a folder of another user it wrote into is not: the fallback
/// cannot see everything, see the `local` sandbox's docs).
pub fn owned_size_over(uid: u32, cap: u64, skip: &Path) -> bool {
    use std::os::unix::fs::MetadataExt;
    let mut tops = Vec::new();
    let mut top_bytes = 0u64;
    for root in SHARED_TMP {
        let Ok(read) = std::fs::read_dir(root) else {
            continue;
        };
        for entry in read.flatten().take(MAX_ENTRIES) {
            let Ok(meta) = entry.metadata() else {
                continue;
            };
            if meta.uid() != uid || entry.path() == skip {
                continue;
            }
            top_bytes = top_bytes.saturating_add(meta.blocks().saturating_mul(512));
            if meta.is_dir() {
                tops.push(entry.path());
            }
        }
    }
    top_bytes > cap || allocated(&tops, Some(uid), cap - top_bytes)
}

/// Whether the trees under `roots` (not counting the roots themselves) hold more than `cap`
/// allocated bytes (of `owner`'s files only, when given), or more than [`MAX_ENTRIES`] entries.
fn allocated(roots: &[std::path::PathBuf], owner: Option<u32>, cap: u64) -> bool {
    use std::os::unix::fs::MetadataExt;
    let mut total = 0u64;
    let mut entries = 0usize;
    let mut stack = roots.to_vec();
    while let Some(d) = stack.pop() {
        let Ok(read) = std::fs::read_dir(&d) else {
            continue;
        };
        for entry in read.flatten() {
            entries += 1;
            if entries > MAX_ENTRIES {
                return true;
            }
            let Ok(meta) = entry.metadata() else {
                continue;
            };
            if owner.is_none_or(|u| meta.uid() == u) {
                total = total.saturating_add(meta.blocks().saturating_mul(512));
                if total > cap {
                    return true;
                }
            }
            if meta.is_dir() {
                stack.push(entry.path());
            }
        }
    }
    false
}

/// How close to a cap counts as reaching it: a writer stopped by `ENOSPC` at a cap leaves at
/// most this much unused.
pub fn reach_margin(cap: u64) -> u64 {
    (cap / 100).clamp(1 << 20, 16 << 20).min(cap)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn request() -> Request {
        Request {
            command: b"echo 'hi'\n\0binary".to_vec(),
            stdin: b"\0in".to_vec(),
            rlimits: Rlimits {
                cpu_secs: 3,
                memory_bytes: Some(1 << 30),
                file_size_bytes: 1 << 20,
                open_files: 64,
                processes: None,
            },
            wall_ms: 1500,
            grace_ms: 1000,
            drain_ms: 2000,
            output_cap: 1 << 20,
            flood: 64 << 20,
            disk_cap: Some(5),
            kill_all: true,
            watch_full: vec![b"/tmp".to_vec(), b"/dev/shm".to_vec()],
            shared_tmp: Some(SharedTmp {
                uid: 70_001,
                cap: 1 << 28,
            }),
            cgroups: vec![b"/sys/fs/cgroup/pids/x".to_vec()],
        }
    }

    #[test]
    fn requests_and_replies_survive_the_trip() {
        let req = request();
        assert_eq!(Request::decode(&req.encode()), Ok(req));
        let bare = Request {
            watch_full: Vec::new(),
            shared_tmp: None,
            cgroups: Vec::new(),
            rlimits: Rlimits {
                memory_bytes: None,
                ..request().rlimits
            },
            ..request()
        };
        assert_eq!(Request::decode(&bare.encode()), Ok(bare));
        for ending in [
            Ending::Exited(-3),
            Ending::Signaled(9),
            Ending::TimedOut,
            Ending::Flooded,
            Ending::DiskFull,
            Ending::Failed("no fork".into()),
        ] {
            let reply = Reply {
                ending,
                stdout: Output {
                    kept: b"\0\xff".to_vec(),
                    seen: 9,
                },
                stderr: Output::default(),
                tripped: Tripped {
                    processes: true,
                    memory: false,
                    disk: true,
                },
            };
            assert_eq!(Reply::decode(&reply.encode()), Ok(reply));
        }
    }

    #[test]
    fn damaged_frames_are_refused_not_misread() {
        let body = request().encode();
        for cut in [0, 7, body.len() - 1] {
            assert!(Request::decode(&body[..cut]).is_err(), "cut at {cut}");
        }
        let mut longer = body.clone();
        longer.push(0);
        assert!(Request::decode(&longer).is_err());
        // A length that claims more than the frame holds.
        let mut lying = body;
        lying[..8].copy_from_slice(&u64::MAX.to_le_bytes());
        assert!(Request::decode(&lying).is_err());
        assert!(frame_len(u32::MAX.to_le_bytes()).is_err());
    }

    #[test]
    fn frames_are_read_back_whole() {
        let mut buf = Vec::new();
        write_frame(&mut buf, b"one").unwrap();
        write_frame(&mut buf, b"").unwrap();
        let mut r = &buf[..];
        assert_eq!(read_frame(&mut r).unwrap(), Some(b"one".to_vec()));
        assert_eq!(read_frame(&mut r).unwrap(), Some(Vec::new()));
        assert_eq!(read_frame(&mut r).unwrap(), None);
    }

    #[test]
    fn limit_counts_read_the_kernels_files_of_either_cgroup_version() {
        let dir = std::env::temp_dir().join(format!("trawl-runner-counts-{}", std::process::id()));
        let (v1p, v1m, v2) = (dir.join("pids"), dir.join("memory"), dir.join("unified"));
        for d in [&v1p, &v1m, &v2] {
            std::fs::create_dir_all(d).unwrap();
        }
        std::fs::write(v1p.join("pids.events"), "max 0\n").unwrap();
        std::fs::write(
            v1m.join("memory.oom_control"),
            "oom_kill_disable 0\nunder_oom 0\noom_kill 2\n",
        )
        .unwrap();
        std::fs::write(v2.join("pids.events"), "max 1\n").unwrap();
        std::fs::write(
            v2.join("memory.events"),
            "low 0\nhigh 0\nmax 7\noom 1\noom_kill 1\noom_group_kill 0\n",
        )
        .unwrap();
        let before = LimitCounts::read(&[&v1p, &v1m]);
        assert_eq!(
            before,
            LimitCounts {
                pids_max: 0,
                oom_kills: 2
            }
        );
        std::fs::write(v1p.join("pids.events"), "max 3\n").unwrap();
        let after = LimitCounts::read(&[&v1p, &v1m]);
        assert_eq!(
            after.tripped_since(before),
            Tripped {
                processes: true,
                memory: false,
                disk: false
            }
        );
        // `max` in memory.events counts reclaim at the limit, not a kill: not read.
        assert_eq!(
            LimitCounts::read(&[&v2]),
            LimitCounts {
                pids_max: 1,
                oom_kills: 1
            }
        );
        assert_eq!(
            LimitCounts::read(&[dir.join("missing")]),
            LimitCounts::default()
        );
        std::fs::remove_dir_all(&dir).unwrap();
    }

    #[test]
    fn tripped_limits_survive_the_trip_and_unknown_bits_are_refused() {
        for bits in 0..8 {
            assert_eq!(Tripped::from_bits(bits).map(Tripped::bits), Ok(bits));
        }
        assert!(Tripped::from_bits(8).is_err());
    }

    #[test]
    fn the_reach_margin_is_a_small_part_of_any_cap() {
        assert_eq!(reach_margin(1 << 30), 10_737_418);
        assert_eq!(reach_margin(64 << 20), 1 << 20);
        assert_eq!(reach_margin(256 << 20), 2_684_354);
        assert_eq!(reach_margin(100 << 30), 16 << 20);
        assert_eq!(reach_margin(4096), 4096);
    }

    #[test]
    fn output_keeps_the_cap_and_counts_the_rest() {
        let mut o = Output::default();
        o.push(b"abc", 4);
        assert!(!o.truncated());
        o.push(b"defg", 4);
        assert_eq!((o.kept.as_slice(), o.seen), (&b"abcd"[..], 7));
        assert!(o.truncated());
    }
}

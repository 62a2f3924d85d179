//! `trawl-sandbox-runner --workdir DIR [--prlimit PATH] [--uid UID] [--view BASE LAYER]`:
//! started once per episode inside its sandbox; runs each command it is sent (see the library
//! for the protocol) and exits when its stdin closes, killing what is still running.
//!
//! With `--view`, `DIR` becomes a copy-on-write view of the folder `BASE` (a prepared
//! repository, say): an overlay with `BASE` read-only below and `LAYER/upper` taking every
//! change, mounted by the runner before it answers (bubblewrap gives it the capabilities for
//! that in the sandbox's own namespaces), after which `BASE` and `LAYER` are unmounted from its
//! sight and the runner drops every capability, so no command ever holds one.
//!
//! The commands must not be able to stop it. In namespaces it is the pid namespace's init
//! (bubblewrap's `--as-pid-1`), which no process of the namespace can kill. In the fallback as
//! root it stays root and runs each command as `UID`. It reaps the orphans of its commands (as
//! init, or as their subreaper elsewhere). It is never dumpable, so a command of the same user
//! cannot trace it or open its pipes.
//!
//! Each command runs as `prlimit LIMITS -- /bin/sh -c COMMAND` in a process group of its own
//! (without `--prlimit`, as in a container image that may lack util-linux, the shell's own
//! `ulimit` sets the CPU, file-size and open-file limits, and the container bounds the rest).
//! The runner waits for it while reading its output, stops it (SIGTERM to the group, SIGKILL
//! after the grace) when it runs out of time, floods its output or fills the working folder,
//! and once it has ended kills its group (and, where that reaches only the sandbox, every
//! process it may signal), so nothing the command started runs on into the next one. One thread
//! does all of it with `poll`; a second one only waits for the command's exit.

#![forbid(unsafe_code)]

use std::ffi::OsStr;
use std::fs::File;
use std::io::{ErrorKind, Read};
use std::os::fd::AsFd;
use std::os::unix::ffi::OsStrExt;
use std::os::unix::process::{CommandExt, ExitStatusExt};
use std::path::PathBuf;
use std::process::{ExitCode, ExitStatus, Stdio};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use nix::fcntl::{fcntl, FcntlArg, OFlag};
use nix::poll::{poll, PollFd, PollFlags, PollTimeout};
use nix::sys::signal::{kill, killpg, Signal};
use nix::unistd::Pid;
use trawl_sandbox_runner::{
    filesystem_full, frame_len, owned_size_over, reach_margin, size_over, write_frame, Ending,
    LimitCounts, Output, Reply, Request, Tripped, HELLO,
};

/// How often the working folder is measured while a command runs.
const DISK_POLL: Duration = Duration::from_millis(100);
/// Where every writer is known to be dead, the most the pipes may still take to close (a
/// process stuck in the kernel); never reached in practice.
const DEAD_DRAIN: Duration = Duration::from_secs(30);

fn main() -> ExitCode {
    let mut args = std::env::args_os().skip(1);
    let (mut workdir, mut prlimit, mut uid, mut view) = (None, None, None, None);
    while let Some(a) = args.next() {
        match a.to_str() {
            Some("--version") => {
                println!("{}", String::from_utf8_lossy(HELLO));
                return ExitCode::SUCCESS;
            }
            Some("--workdir") => workdir = args.next().map(PathBuf::from),
            Some("--prlimit") => prlimit = args.next().map(PathBuf::from),
            Some("--view") => match (args.next(), args.next()) {
                (Some(base), Some(layer)) => {
                    view = Some((PathBuf::from(base), PathBuf::from(layer)))
                }
                _ => {
                    eprintln!("trawl-sandbox-runner: --view takes BASE and LAYER");
                    return ExitCode::from(2);
                }
            },
            Some("--uid") => match args.next().and_then(|u| u.to_str()?.parse().ok()) {
                Some(u) => uid = Some(u),
                None => {
                    eprintln!("trawl-sandbox-runner: --uid takes a number");
                    return ExitCode::from(2);
                }
            },
            _ => {
                eprintln!("trawl-sandbox-runner: unknown argument {a:?}");
                return ExitCode::from(2);
            }
        }
    }
    let Some(workdir) = workdir else {
        eprintln!("usage: trawl-sandbox-runner --workdir DIR [--prlimit PATH] [--uid UID] [--view BASE LAYER]");
        return ExitCode::from(2);
    };
    // The folder whose size counts against the disk cap: a view's own changes, not its base.
    let measured = match view {
        Some((base, layer)) => match mount_view(&workdir, &base, &layer) {
            Ok(upper) => Measured::Open(upper),
            Err(e) => {
                eprintln!(
                    "trawl-sandbox-runner: cannot set up the episode's view of {}: {e}",
                    base.display()
                );
                return ExitCode::FAILURE;
            }
        },
        None => Measured::Path(workdir.clone()),
    };
    // Not dumpable: the commands run as the same user, and must not open this process's pipes
    // through /proc or trace it.
    let _ = nix::sys::prctl::set_dumpable(false);
    // What a command leaves behind is reparented here, not to the machine's init, and reaped
    // after each command: a user's dead processes count against its process limit until then.
    let _ = nix::sys::prctl::set_child_subreaper(true);
    match serve(&Runner {
        workdir,
        measured,
        prlimit,
        uid,
    }) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("trawl-sandbox-runner: {e}");
            ExitCode::FAILURE
        }
    }
}

struct Runner {
    /// Where commands run.
    workdir: PathBuf,
    /// What the disk cap measures.
    measured: Measured,
    /// util-linux's `prlimit`; the shell's `ulimit` without it.
    prlimit: Option<PathBuf>,
    /// The user commands run as, when it is not the runner's.
    uid: Option<u32>,
}

fn serve(runner: &Runner) -> std::io::Result<()> {
    let mut control = Control::stdin()?;
    let mut replies = File::from(std::io::stdout().as_fd().try_clone_to_owned()?);
    write_frame(&mut replies, HELLO)?;
    loop {
        let Some(body) = control.next_frame(None)? else {
            return Ok(());
        };
        let request = Request::decode(&body).map_err(std::io::Error::other)?;
        match run(runner, &request, &mut control) {
            Ok(reply) => write_frame(&mut replies, &reply.encode())?,
            // trawl went away (or broke the protocol) mid-command: the command is dead.
            Err(Cancelled(why)) => return why.map_or(Ok(()), Err),
        }
    }
}

/// The request pipe, read without blocking so that one `poll` watches it with the command.
struct Control {
    pipe: File,
    buf: Vec<u8>,
    eof: bool,
}

impl Control {
    fn stdin() -> std::io::Result<Self> {
        let pipe = File::from(std::io::stdin().as_fd().try_clone_to_owned()?);
        nonblocking(&pipe)?;
        Ok(Control {
            pipe,
            buf: Vec::new(),
            eof: false,
        })
    }

    /// Reads what is there.
    fn fill(&mut self) -> std::io::Result<()> {
        let mut chunk = [0u8; 64 << 10];
        loop {
            match self.pipe.read(&mut chunk) {
                Ok(0) => {
                    self.eof = true;
                    return Ok(());
                }
                Ok(n) => self.buf.extend_from_slice(&chunk[..n]),
                Err(e) if e.kind() == ErrorKind::WouldBlock => return Ok(()),
                Err(e) if e.kind() == ErrorKind::Interrupted => {}
                Err(e) => return Err(e),
            }
        }
    }

    /// A whole frame, if one has arrived.
    fn take_frame(&mut self) -> std::io::Result<Option<Vec<u8>>> {
        let Some(head) = self.buf.first_chunk::<4>() else {
            return Ok(None);
        };
        let len = frame_len(*head)?;
        if self.buf.len() < 4 + len {
            return Ok(None);
        }
        let body = self.buf[4..4 + len].to_vec();
        self.buf.drain(..4 + len);
        Ok(Some(body))
    }

    /// Waits (up to `timeout`, forever when `None`) for the next frame; `None` at the end.
    fn next_frame(&mut self, timeout: Option<Duration>) -> std::io::Result<Option<Vec<u8>>> {
        loop {
            if let Some(f) = self.take_frame()? {
                return Ok(Some(f));
            }
            if self.eof {
                if !self.buf.is_empty() {
                    return Err(std::io::Error::other("the request pipe closed mid-frame"));
                }
                return Ok(None);
            }
            let mut fds = [PollFd::new(self.pipe.as_fd(), PollFlags::POLLIN)];
            let t = timeout.map_or(PollTimeout::NONE, poll_timeout);
            match poll(&mut fds, t) {
                Ok(0) => return Ok(None),
                Ok(_) | Err(nix::errno::Errno::EINTR) => self.fill()?,
                Err(e) => return Err(e.into()),
            }
        }
    }
}

fn poll_timeout(d: Duration) -> PollTimeout {
    // Rounded up, so that a wait never ends just before its deadline and spins.
    let ms = d.as_micros().div_ceil(1000).min(i32::MAX as u128) as i32;
    PollTimeout::try_from(ms).unwrap_or(PollTimeout::MAX)
}

fn nonblocking(f: &impl AsFd) -> std::io::Result<()> {
    let flags = OFlag::from_bits_truncate(fcntl(f, FcntlArg::F_GETFL)?);
    fcntl(f, FcntlArg::F_SETFL(flags | OFlag::O_NONBLOCK))?;
    Ok(())
}

/// trawl closed the request pipe (or broke the protocol) while a command ran.
struct Cancelled(Option<std::io::Error>);

/// One output stream of the running command.
struct Stream {
    pipe: Option<File>,
    out: Output,
    flooded: bool,
}

impl Stream {
    fn new(pipe: Option<impl Into<std::os::fd::OwnedFd>>) -> std::io::Result<Self> {
        let pipe = pipe.map(|p| File::from(p.into()));
        if let Some(p) = &pipe {
            nonblocking(p)?;
        }
        Ok(Stream {
            pipe,
            out: Output::default(),
            flooded: false,
        })
    }

    /// Reads what is in the pipe now. Past `flood` bytes the pipe is closed (the writer gets
    /// SIGPIPE) and the stream marked flooded.
    fn read_now(&mut self, cap: u64, flood: u64) {
        let mut chunk = [0u8; 64 << 10];
        while let Some(pipe) = self.pipe.as_mut() {
            match pipe.read(&mut chunk) {
                Ok(0) => self.pipe = None,
                Ok(n) => {
                    self.out.push(&chunk[..n], cap);
                    if self.out.seen > flood {
                        self.flooded = true;
                        self.pipe = None;
                    }
                }
                Err(e) if e.kind() == ErrorKind::Interrupted => {}
                Err(e) if e.kind() == ErrorKind::WouldBlock => return,
                Err(_) => self.pipe = None,
            }
        }
    }
}

/// Why the runner stopped a command before it ended by itself.
#[derive(Clone, Copy)]
enum Stop {
    Time,
    Flood,
    Disk,
}

fn run(runner: &Runner, req: &Request, control: &mut Control) -> Result<Reply, Cancelled> {
    let mut cmd = match &runner.prlimit {
        Some(prlimit) => {
            let mut c = std::process::Command::new(prlimit);
            c.args(req.rlimits.prlimit_args())
                .args(["--", "/bin/sh", "-c"])
                .arg(OsStr::from_bytes(&req.command));
            c
        }
        None => {
            let mut c = std::process::Command::new("/bin/sh");
            c.arg("-c")
                .arg(req.rlimits.ulimit_script())
                .arg(OsStr::from_bytes(&req.command));
            c
        }
    };
    cmd.stdin(if req.stdin.is_empty() {
        Stdio::null()
    } else {
        Stdio::piped()
    })
    .stdout(Stdio::piped())
    .stderr(Stdio::piped())
    .process_group(0);
    if let Some(uid) = runner.uid {
        cmd.uid(uid).gid(uid);
    }
    let cgroups: Vec<PathBuf> = req
        .cgroups
        .iter()
        .map(|c| PathBuf::from(OsStr::from_bytes(c)))
        .collect();
    let counts = LimitCounts::read(&cgroups);
    let mut disk = DiskWatch {
        runner,
        req,
        full_seen: false,
    };
    let started = Instant::now();
    let mut child = match cmd.spawn() {
        Ok(c) => c,
        Err(e) => return Ok(Reply::failed(format!("cannot start a command: {e}"))),
    };
    // From here on, however this ends, nothing of the command outlives it.
    let mut reaper = Reaper {
        group: Pid::from_raw(child.id() as i32),
        kill_all: req.kill_all,
    };
    let (stdout, stderr) = match (
        Stream::new(child.stdout.take()),
        Stream::new(child.stderr.take()),
    ) {
        (Ok(o), Ok(e)) => (o, e),
        (Err(e), _) | (_, Err(e)) => {
            reaper.kill();
            let _ = child.wait();
            return Ok(Reply::failed(format!(
                "cannot read the command's output: {e}"
            )));
        }
    };
    let mut streams = [stdout, stderr];
    // What the command reads is written by a thread of its own, so that a command that reads
    // slowly (or not at all) never stalls the watch; it ends with the command, whose death
    // closes the pipe.
    let feeder = child.stdin.take().map(|mut pipe| {
        let bytes = req.stdin.clone();
        std::thread::spawn(move || {
            use std::io::Write;
            let _ = pipe.write_all(&bytes);
        })
    });
    // A thread waits for the exit; it closes `exited_tx` when it has the status, which `poll`
    // sees as a hang-up on `exited`.
    let (exited, exited_tx) = match std::io::pipe() {
        Ok(p) => p,
        Err(e) => {
            reaper.kill();
            let _ = child.wait();
            return Ok(Reply::failed(format!("cannot make a pipe: {e}")));
        }
    };
    let status: Arc<Mutex<Option<std::io::Result<ExitStatus>>>> = Arc::default();
    let waiter = {
        let status = status.clone();
        std::thread::spawn(move || {
            let s = child.wait();
            *status.lock().unwrap_or_else(|p| p.into_inner()) = Some(s);
            drop(exited_tx);
        })
    };
    let mut w = Watch {
        req,
        streams: &mut streams,
        exited,
        done: false,
    };

    let deadline = started + Duration::from_millis(req.wall_ms);
    let mut next_disk = started + DISK_POLL;
    let mut stop = None;
    while !w.done {
        let now = Instant::now();
        if now >= deadline {
            stop = Some(Stop::Time);
            break;
        }
        if disk.watching() && now >= next_disk {
            if disk.over() {
                stop = Some(Stop::Disk);
                break;
            }
            next_disk = Instant::now() + DISK_POLL;
        }
        let until = if disk.watching() {
            deadline.min(next_disk)
        } else {
            deadline
        };
        w.step(control, Some(until.saturating_duration_since(now)))?;
        if w.streams.iter().any(|s| s.flooded) {
            stop = Some(Stop::Flood);
        }
        if stop.is_some() {
            break;
        }
    }
    if stop.is_some() && !w.done {
        let _ = killpg(reaper.group, Signal::SIGTERM);
        let grace = Instant::now() + Duration::from_millis(req.grace_ms);
        while !w.done {
            let left = grace.saturating_duration_since(Instant::now());
            if left.is_zero() {
                break;
            }
            w.step(control, Some(left))?;
        }
        let _ = killpg(reaper.group, Signal::SIGKILL);
        while !w.done {
            w.step(control, None)?;
        }
    }
    // Whatever the command left running goes now.
    reaper.kill();
    let _ = waiter.join();
    if let Some(f) = feeder {
        let _ = f.join();
    }
    // The writers are dead (or, without `kill_all`, outside the group): what they wrote is in
    // the pipes. Read it to the end; a pipe still held open after the drain time is read for
    // what it holds, without waiting.
    let drain = if req.kill_all {
        DEAD_DRAIN
    } else {
        Duration::from_millis(req.drain_ms)
    };
    let until = Instant::now() + drain;
    loop {
        for s in w.streams.iter_mut() {
            s.read_now(req.output_cap, req.flood);
        }
        let left = until.saturating_duration_since(Instant::now());
        if w.streams.iter().all(|s| s.pipe.is_none()) || left.is_zero() {
            break;
        }
        w.step(control, Some(left))?;
    }
    reap_orphans(req.kill_all, reaper.group);
    // The limits the command ran into, read where they are recorded once it is all gone: the
    // kernel's counters, and how full its capped folders came to be.
    let tripped = LimitCounts::read(&cgroups)
        .tripped_since(counts)
        .or(Tripped {
            disk: matches!(stop, Some(Stop::Disk)) || disk.reached(),
            ..Tripped::default()
        });
    let status = status.lock().unwrap_or_else(|p| p.into_inner()).take();
    let [stdout, stderr] = streams;
    let flooded = stdout.flooded || stderr.flooded;
    let ending = match (stop, status) {
        (Some(Stop::Time), _) => Ending::TimedOut,
        (Some(Stop::Disk), _) => Ending::DiskFull,
        (Some(Stop::Flood), _) => Ending::Flooded,
        (None, _) if flooded => Ending::Flooded,
        (None, Some(Ok(s))) => match (s.signal(), s.code()) {
            (Some(sig), _) => Ending::Signaled(sig),
            (None, Some(code)) => Ending::Exited(code),
            (None, None) => Ending::Failed(format!("the command ended oddly: {s:?}")),
        },
        (None, Some(Err(e))) => Ending::Failed(format!("lost the command's process: {e}")),
        (None, None) => Ending::Failed("lost the command's exit status".into()),
    };
    Ok(Reply {
        ending,
        stdout: stdout.out,
        stderr: stderr.out,
        tripped,
    })
}

/// The sandbox's capped folders, watched while a command runs and looked at when it ends.
struct DiskWatch<'a> {
    runner: &'a Runner,
    req: &'a Request,
    /// A capped filesystem was seen full while the command ran.
    full_seen: bool,
}

impl DiskWatch<'_> {
    fn watching(&self) -> bool {
        self.req.disk_cap.is_some()
            || self.req.shared_tmp.is_some()
            || !self.req.watch_full.is_empty()
    }

    /// Whether the command is past a cap it must be stopped at (the working folder, its share
    /// of the machine's temporary folders); notes a capped filesystem it has filled.
    fn over(&mut self) -> bool {
        if self.full() {
            self.full_seen = true;
        }
        self.req
            .disk_cap
            .is_some_and(|cap| size_over(&self.runner.measured.path(), cap))
            || self
                .req
                .shared_tmp
                .is_some_and(|s| owned_size_over(s.uid, s.cap, &self.runner.workdir))
    }

    fn full(&self) -> bool {
        self.req
            .watch_full
            .iter()
            .any(|p| filesystem_full(std::path::Path::new(OsStr::from_bytes(p))))
    }

    /// Whether a cap was reached: a capped filesystem full now or while the command ran, or a
    /// measured folder within [`reach_margin`] of its cap (a writer that met `ENOSPC` there and
    /// went on).
    fn reached(&self) -> bool {
        self.full_seen
            || self.full()
            || self
                .req
                .disk_cap
                .is_some_and(|cap| size_over(&self.runner.measured.path(), cap - reach_margin(cap)))
            || self.req.shared_tmp.is_some_and(|s| {
                owned_size_over(s.uid, s.cap - reach_margin(s.cap), &self.runner.workdir)
            })
    }
}

/// What one command's wait watches: its output, its exit, and the request pipe.
struct Watch<'a> {
    req: &'a Request,
    streams: &'a mut [Stream; 2],
    exited: std::io::PipeReader,
    done: bool,
}

impl Watch<'_> {
    /// Waits (up to `timeout`) for output, the exit or a word from trawl, and takes it in.
    fn step(&mut self, control: &mut Control, timeout: Option<Duration>) -> Result<(), Cancelled> {
        let mut fds = vec![PollFd::new(control.pipe.as_fd(), PollFlags::POLLIN)];
        let exited_at = (!self.done).then(|| {
            fds.push(PollFd::new(self.exited.as_fd(), PollFlags::POLLIN));
            fds.len() - 1
        });
        let mut which = Vec::with_capacity(2);
        for (i, s) in self.streams.iter().enumerate() {
            if let Some(p) = &s.pipe {
                fds.push(PollFd::new(p.as_fd(), PollFlags::POLLIN));
                which.push(i);
            }
        }
        let t = timeout.map_or(PollTimeout::NONE, poll_timeout);
        match poll(&mut fds, t) {
            Ok(0) => return Ok(()),
            Ok(_) => {}
            Err(nix::errno::Errno::EINTR) => return Ok(()),
            Err(e) => return Err(Cancelled(Some(e.into()))),
        }
        let ready = |f: &PollFd| f.revents().is_some_and(|r| !r.is_empty());
        let control_ready = ready(&fds[0]);
        let exit_ready = exited_at.is_some_and(|i| ready(&fds[i]));
        let base = fds.len() - which.len();
        let streams_ready: Vec<usize> = which
            .iter()
            .enumerate()
            .filter(|(k, _)| ready(&fds[base + k]))
            .map(|(_, i)| *i)
            .collect();
        drop(fds);
        if control_ready {
            control.fill().map_err(|e| Cancelled(Some(e)))?;
            // trawl sends nothing while a command runs: anything but silence ends it.
            if control.eof || !control.buf.is_empty() {
                return Err(Cancelled(None));
            }
        }
        for i in streams_ready {
            self.streams[i].read_now(self.req.output_cap, self.req.flood);
        }
        if exit_ready {
            self.done = true;
        }
        Ok(())
    }
}

/// Collects the exit of the command's processes, now killed (as init or subreaper, those it
/// left are the runner's children), waiting a bounded time for them to die, and of any other
/// orphan that has died. With `all` (everything was just killed) it waits until none is left,
/// so that the next command starts in an empty sandbox.
fn reap_orphans(all: bool, group: Pid) {
    use nix::sys::wait::{waitpid, WaitPidFlag, WaitStatus};
    let until = Instant::now() + Duration::from_secs(1);
    for target in [Pid::from_raw(-group.as_raw()), Pid::from_raw(-1)] {
        loop {
            let wait = all || target != Pid::from_raw(-1);
            match waitpid(target, Some(WaitPidFlag::WNOHANG)) {
                Ok(WaitStatus::StillAlive) if wait && Instant::now() < until => {
                    std::thread::sleep(Duration::from_micros(200));
                }
                Ok(WaitStatus::StillAlive) | Err(_) => break,
                Ok(_) => {}
            }
        }
    }
}

/// Kills a command's process group, and with `kill_all` every process the runner may signal
/// (its own pid namespace, or the sandbox's own user) but itself: on demand, and when dropped,
/// so that a cancelled wait leaves nothing running either.
struct Reaper {
    group: Pid,
    kill_all: bool,
}

impl Reaper {
    fn kill(&mut self) {
        // ESRCH (all gone already) is the usual answer.
        let _ = killpg(self.group, Signal::SIGKILL);
        if self.kill_all {
            let _ = kill(Pid::from_raw(-1), Signal::SIGKILL);
        }
    }
}

impl Drop for Reaper {
    fn drop(&mut self) {
        self.kill();
    }
}

/// Where the disk cap is measured: a path, or a folder opened before it was hidden (a view's
/// upper layer, reached through this process's own descriptor).
enum Measured {
    Path(PathBuf),
    Open(File),
}

impl Measured {
    fn path(&self) -> PathBuf {
        match self {
            Measured::Path(p) => p.clone(),
            Measured::Open(f) => {
                use std::os::fd::AsRawFd;
                PathBuf::from(format!("/proc/self/fd/{}", f.as_raw_fd()))
            }
        }
    }
}

/// Mounts `workdir` as an overlay of `base` (read-only) and `layer/upper` (the changes;
/// `layer/work` is the overlay's scratch), hides `base` and `layer`, and drops every
/// capability. Returns the upper layer, opened, for the disk cap.
fn mount_view(
    workdir: &std::path::Path,
    base: &std::path::Path,
    layer: &std::path::Path,
) -> Result<File, String> {
    use nix::mount::{mount, MsFlags};
    let upper = layer.join("upper");
    let work = layer.join("work");
    let mut options = String::from("lowerdir=");
    for (i, p) in [base, &upper, &work].into_iter().enumerate() {
        let p = p
            .to_str()
            .filter(|p| !p.contains([',', ':', '\\']))
            .ok_or_else(|| format!("{} cannot be named in overlay options", p.display()))?;
        if i > 0 {
            options.push_str([",upperdir=", ",workdir="][i - 1]);
        }
        options.push_str(p);
    }
    // Its extended attributes in the `user.` namespace, which a user namespace may write.
    options.push_str(",userxattr");
    // bubblewrap's mount namespace belongs to a user namespace above the runner's; a mount
    // namespace of the runner's own is one it may mount in.
    nix::sched::unshare(nix::sched::CloneFlags::CLONE_NEWNS)
        .map_err(|e| format!("making a mount namespace: {e}"))?;
    mount(
        Some("overlay"),
        workdir,
        Some("overlay"),
        MsFlags::MS_NOSUID | MsFlags::MS_NODEV,
        Some(options.as_str()),
    )
    .map_err(|e| format!("mounting the overlay: {e}"))?;
    let upper = File::open(&upper).map_err(|e| format!("opening {}: {e}", upper.display()))?;
    // They cannot be unmounted here (they came from the namespace above, locked to it):
    // an empty read-only folder covers each, which no command, holding no capability, can
    // take away.
    for hidden in [base, layer] {
        mount(
            Some("tmpfs"),
            hidden,
            Some("tmpfs"),
            MsFlags::MS_RDONLY | MsFlags::MS_NOSUID | MsFlags::MS_NODEV | MsFlags::MS_NOEXEC,
            Some("size=4k,mode=0500"),
        )
        .map_err(|e| format!("covering {}: {e}", hidden.display()))?;
    }
    // Commands start here: in the overlay, not in the folder it covers.
    std::env::set_current_dir(workdir).map_err(|e| format!("entering the view: {e}"))?;
    drop_capabilities()?;
    Ok(upper)
}

/// Drops every capability, for good: none left to use, to pass on through exec, or to regain.
fn drop_capabilities() -> Result<(), String> {
    use caps::CapSet;
    for set in [
        CapSet::Ambient,
        CapSet::Bounding,
        CapSet::Inheritable,
        CapSet::Effective,
        CapSet::Permitted,
    ] {
        caps::clear(None, set).map_err(|e| format!("dropping capabilities ({set:?}): {e}"))?;
    }
    let left = caps::read(None, CapSet::Permitted).map_err(|e| e.to_string())?;
    if !left.is_empty() {
        return Err(format!("capabilities left after dropping them: {left:?}"));
    }
    Ok(())
}

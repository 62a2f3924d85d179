# trawl's test harness. It runs inside the sandbox, never in trawl's process.
#
#   python3 harness.py SPEC.json
#
# Two processes, so that the program under test cannot reach or imitate its verdict:
#
# * The judge (this process, started by trawl) reads SPEC, deletes the file, makes itself
#   undumpable (no /proc/PID/mem or ptrace from the same user), and starts the runner. It never
#   runs candidate code. It alone knows the run's marker, and it alone writes to the stdout that
#   trawl reads: one line "MARKER{json}" with {"program_error", "results", "limit"}; `limit` is
#   a limit signal that killed the runner (cpu, file_size). Limits the program ran into and
#   reported (MemoryError, failed forks) are read by trawl from the errors themselves.
# * The runner (this file with --runner) gets the program, the tests and a per-runner token over a
#   pipe that it reads and closes before any candidate code runs. It runs the program and each
#   test in a worker thread (so the candidate cannot install signal handlers, whose frame
#   argument would lead back to the token) under an audit hook that refuses frame, tracer,
#   garbage-collector and ctypes introspection. It reports each test on a second pipe as
#   "TOKEN T index passed hex(error)". Its stdout and stderr go to the sandbox's stderr.
#
# A test passes only when the judge reads that test's line with the right token. A runner that
# exits, is killed, hangs past the per-test timeout or writes anything else leaves the tests it
# did not report failed; the judge restarts it (program included) after a hung test.
import os
import sys

RUNNER_FLAG = "--runner"


def hexed(text):
    return text.encode("utf-8", "replace").hex()


def unhexed(text):
    try:
        return bytes.fromhex(text).decode("utf-8", "replace")
    except ValueError:
        return "unreadable error"


def undumpable():
    """No ptrace and no /proc/PID/mem for other processes of the same user."""
    try:
        import ctypes

        ctypes.CDLL(None, use_errno=True).prctl(4, 0, 0, 0, 0)  # PR_SET_DUMPABLE = 4
    except Exception:  # noqa: BLE001 - a system without prctl keeps the other defences
        pass


# ---------------------------------------------------------------------------------------------
# The runner: candidate code runs here.


def runner_main(config_fd, result_fd):
    import _thread

    done = _thread.allocate_lock()
    done.acquire()

    def worker():
        try:
            run_worker(config_fd, result_fd)
        finally:
            done.release()

    # The main thread holds nothing: a signal handler's frame (only the main thread runs them)
    # leads to this frame alone.
    _thread.start_new_thread(worker, ())
    while True:
        try:
            done.acquire()
            break
        except BaseException:  # noqa: B902 - KeyboardInterrupt from interrupt_main and the like
            continue
    os._exit(0)


BLOCKED_EVENTS = frozenset(
    [
        "sys._current_exceptions",
        "sys.settrace",
        "sys.setprofile",
        "gc.get_objects",
        "gc.get_referrers",
        "gc.get_referents",
    ]
)
FRAME_EVENTS = frozenset(["sys._getframe", "sys._current_frames"])
BLOCKED_ATTRS = frozenset(["tb_frame", "gi_frame", "cr_frame", "ag_frame", "f_back"])


def install_guard():
    def guard(event, args):
        if event in FRAME_EVENTS:
            # ValueError is what the standard library expects when there is no such frame
            # (namedtuple, typing and warnings then carry on).
            raise ValueError("trawl's test harness does not allow %s" % event)
        if event in BLOCKED_EVENTS or event.startswith(("ctypes.", "sys.monitoring")):
            raise RuntimeError("trawl's test harness does not allow %s" % event)
        if event == "object.__getattr__" and len(args) > 1 and args[1] in BLOCKED_ATTRS:
            raise RuntimeError("trawl's test harness does not allow reading %s" % args[1])
        if event == "object.__setattr__" and len(args) > 1 and args[1] == "__code__":
            raise RuntimeError("trawl's test harness does not allow replacing __code__")
        if event == "open" and args and isinstance(args[0], (str, bytes)):
            path = args[0] if isinstance(args[0], str) else args[0].decode("utf-8", "replace")
            if path.startswith("/proc/") and (path.endswith("/mem") or "/fd/" in path):
                raise RuntimeError("trawl's test harness does not allow opening %s" % path)

    sys.addaudithook(guard)


def run_worker(config_fd, result_fd):
    # Everything the worker calls after candidate code has run is bound here, before it runs:
    # rebinding a module attribute later changes none of these.
    _write, _exec, _compile, _type, _str, _len = os.write, exec, compile, type, str, len
    _isinstance, _range, _dict = isinstance, range, dict
    import marshal  # built in: the runner spends no start-up time on json's imports

    chunks = []
    while True:
        chunk = os.read(config_fd, 1 << 16)
        if not chunk:
            break
        chunks.append(chunk)
    os.close(config_fd)
    config = marshal.loads(b"".join(chunks))
    token = config.pop("token")
    undumpable()
    install_guard()

    def report(kind, index, passed, error):
        line = token + " " + kind + " " + _str(index) + " " + ("1" if passed else "0") + " "
        line += _hexed(error) if error is not None else "-"
        _write(result_fd, (line + "\n").encode("utf-8"))

    def _hexed(text):
        return text.encode("utf-8", "replace").hex()

    def describe(exc):
        try:
            name = _type(exc).__name__
            text = _str(exc)
        except BaseException:  # noqa: B902 - an exception whose str() fails
            return "an exception that cannot be shown"
        if _isinstance(exc, SystemExit):
            return "the program called exit(%s)" % text
        if _isinstance(exc, AssertionError) and not text:
            return "AssertionError"
        out = name + ": " + text if text else name
        return out[-1000:]

    def run(code, globs, name):
        try:
            _exec(_compile(code, name, "exec"), globs)
            return None
        except BaseException as e:  # noqa: B902 - every failure of the candidate is a result
            return describe(e)

    globs = {"__name__": "__trawl_candidate__"}
    error = None
    for code, name in ((config["setup"], "<setup>"), (config["program"], "<program>")):
        if error is None and code:
            error = run(code, globs, name)
    if error is None and config["prelude"]:
        error = run(config["prelude"], globs, "<test setup>")
    space = globs
    entry = config["entry_point"]
    if error is None and config["check"]:
        # HumanEval: the check body runs in one namespace with `candidate` bound.
        space = _dict(globs)
        if entry and entry in globs:
            space["candidate"] = globs[entry]
        else:
            error = "the program does not define `%s`" % entry
    report("P", 0, error is None, error)
    if error is not None:
        return
    start = config["start"]
    statements = config["statements"]
    for i in _range(_len(statements)):
        source, is_test = statements[i]
        if is_test and i < start:
            continue
        err = run(source, space, "<test>")
        if is_test:
            report("T", i, err is None, err)
        elif err is not None:
            report("S", i, False, err)
            return
    report("D", 0, True, None)


# ---------------------------------------------------------------------------------------------
# The judge: starts runners, reads their reports, writes the verdict.


def label(src):
    src = " ".join(src.split())
    return src if len(src) <= 200 else src[:197] + "..."


def statements_of(spec):
    """The program's prelude and the (source, is_test) statements to run, in order."""
    import ast

    check = spec.get("check")
    if not check:
        return "", [(t, True) for t in spec.get("tests") or []]
    # HumanEval: `def check(candidate)` holds the asserts; each top-level statement of its body
    # that asserts something is one test, the others are its setup.
    tree = ast.parse(check)
    body, prelude = [], []
    for node in tree.body:
        if isinstance(node, ast.FunctionDef) and node.name == "check":
            body = node.body
        else:
            prelude.append(node)
    return ast.unparse(ast.Module(body=prelude, type_ignores=[])), [
        (ast.unparse(s), any(isinstance(n, ast.Assert) for n in ast.walk(s))) for s in body
    ]


def judge_main(spec_path):
    import json
    import marshal
    import select
    import signal
    import subprocess
    import time

    with open(spec_path) as f:
        spec = json.load(f)
    os.unlink(spec_path)
    marker = spec["marker"]
    undumpable()
    per_test = float(spec.get("per_test_timeout") or 5.0)
    prelude, statements = statements_of(spec)
    tests = [i for i, (_, is_test) in enumerate(statements) if is_test]
    results = {}
    program_error = None
    limit = None
    start = 0

    while True:
        token = os.urandom(16).hex()
        config_r, config_w = os.pipe()
        result_r, result_w = os.pipe()
        child = subprocess.Popen(
            [sys.executable, os.path.abspath(__file__), RUNNER_FLAG, str(config_r), str(result_w)],
            stdin=subprocess.DEVNULL,
            stdout=2,
            pass_fds=(config_r, result_w),
            close_fds=True,
        )
        os.close(config_r)
        os.close(result_w)
        payload = {
            "token": token,
            "setup": spec.get("setup") or "",
            "program": spec.get("program") or "",
            "prelude": prelude,
            "check": bool(spec.get("check")),
            "entry_point": spec.get("entry_point"),
            "statements": [list(x) for x in statements],
            "start": start,
        }
        with os.fdopen(config_w, "wb") as w:
            try:
                w.write(marshal.dumps(payload))
            except BrokenPipeError:
                pass
        # Loading gets one per-test allowance for each of setup, program and test prelude, plus
        # the interpreter's start; each test gets one.
        deadline = time.monotonic() + 3 * per_test + 2.0
        pending = b""
        loaded = False
        hung = None
        finished = False
        while not finished:
            left = deadline - time.monotonic()
            if left <= 0:
                hung = "load" if not loaded else "test"
                break
            ready, _, _ = select.select([result_r], [], [], left)
            if not ready:
                continue
            data = os.read(result_r, 1 << 16)
            if not data:
                break
            pending += data
            *lines, pending = pending.split(b"\n")
            for raw in lines:
                parts = raw.decode("utf-8", "replace").split(" ")
                if len(parts) != 5 or parts[0] != token:
                    continue  # anything without the token is the candidate's, never a verdict
                kind, index, passed, err = parts[1], parts[2], parts[3] == "1", parts[4]
                err = None if err == "-" else unhexed(err)
                if kind == "P":
                    loaded = True
                    if not passed:
                        program_error = err
                        finished = True
                elif kind == "T" and index.isdigit() and int(index) in tests:
                    results[int(index)] = (passed, err)
                elif kind == "S":
                    program_error = "test setup failed: " + (err or "")
                    finished = True
                elif kind == "D":
                    finished = True
                deadline = time.monotonic() + per_test + 0.5
        os.close(result_r)
        if child.poll() is None:
            child.kill()
        code = child.wait()
        if code in (-signal.SIGXCPU,):
            limit = limit or "cpu"
        elif code in (-signal.SIGXFSZ,):
            limit = limit or "file_size"
        if finished:
            break
        if hung == "load":
            program_error = "loading the program timed out after %gs" % per_test
            break
        waiting = next((i for i in tests if i >= start and i not in results), None)
        if hung == "test" and waiting is not None:
            results[waiting] = (False, "timed out after %gs" % per_test)
            start = waiting + 1
            if any(i >= start for i in tests):
                continue
            break
        # The runner ended without finishing: what it did not report failed, with the reason.
        how = "was killed by signal %d" % -code if code < 0 else "exited with code %d" % code
        program_error = program_error or "the program ended the test process (it %s)" % how
        break

    out = []
    for i in tests:
        passed, err = results.get(i, (False, program_error or "not run"))
        out.append({"test": label(statements[i][0]), "passed": passed, "error": err})
    line = marker + json.dumps({"program_error": program_error, "results": out, "limit": limit})
    os.write(1, (line + "\n").encode("utf-8"))


if __name__ == "__main__":
    if len(sys.argv) == 4 and sys.argv[1] == RUNNER_FLAG:
        runner_main(int(sys.argv[2]), int(sys.argv[3]))
    else:
        judge_main(sys.argv[1])

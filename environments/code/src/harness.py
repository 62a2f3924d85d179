# trawl's test harness. It runs inside the sandbox, never in trawl's process.
#
#   python3 harness.py SPEC.json MARKER
#
# SPEC: {"program", "setup", "tests": [assert statements], "check": HumanEval test code or null,
#        "entry_point", "per_test_timeout"}.
# Prints one line "MARKER{json}" on the real stdout: {"program_error": str|null,
# "results": [{"test", "passed", "error"}]}. The candidate's own prints go to stderr.
import ast
import json
import os
import signal
import sys
import traceback

spec_path, marker = sys.argv[1], sys.argv[2]
with open(spec_path) as f:
    spec = json.load(f)
real_stdout = os.dup(1)
os.dup2(2, 1)
sys.stdout = sys.stderr

per_test = float(spec.get("per_test_timeout") or 5.0)


class TestTimeout(BaseException):
    pass


def on_alarm(signum, frame):
    raise TestTimeout()


signal.signal(signal.SIGALRM, on_alarm)


def short_error(exc):
    if isinstance(exc, TestTimeout):
        return "timed out after %gs" % per_test
    if isinstance(exc, AssertionError) and not str(exc):
        return "AssertionError"
    lines = traceback.format_exception_only(type(exc), exc)
    return "".join(lines).strip()[-2000:]


def run(code, globs, name="<program>"):
    """Runs code in the namespace globs; returns None or an error string."""
    signal.setitimer(signal.ITIMER_REAL, per_test)
    try:
        exec(compile(code, name, "exec"), globs)
        return None
    except SystemExit as e:
        return "the program called exit(%r)" % (e.code,)
    except BaseException as e:  # noqa: B902 - every failure of the candidate is a result
        return short_error(e)
    finally:
        signal.setitimer(signal.ITIMER_REAL, 0)


def label(src):
    src = " ".join(src.split())
    return src if len(src) <= 200 else src[:197] + "..."


results = []
program_error = None
globs = {"__name__": "__trawl_candidate__"}
if spec.get("setup"):
    program_error = run(spec["setup"], globs, name="<setup>")
if program_error is None:
    program_error = run(spec.get("program") or "", globs)

tests = list(spec.get("tests") or [])
check = spec.get("check")
entry = spec.get("entry_point")

if check:
    # HumanEval: `def check(candidate)` holds the asserts; each top-level statement of its body
    # that asserts something is one test, the others are its setup.
    tree = ast.parse(check)
    check_fn = None
    prelude = []
    for node in tree.body:
        if isinstance(node, ast.FunctionDef) and node.name == "check":
            check_fn = node
        else:
            prelude.append(node)
    if program_error is None:
        program_error = run(ast.unparse(ast.Module(body=prelude, type_ignores=[])), globs, name="<test setup>")
    # One namespace for the check body: generator expressions inside exec see globals only.
    locs = dict(globs)
    if program_error is None:
        if entry and entry in globs:
            locs["candidate"] = globs[entry]
        else:
            program_error = "the program does not define `%s`" % entry
    for stmt in (check_fn.body if check_fn else []):
        src = ast.unparse(stmt)
        is_test = any(isinstance(n, ast.Assert) for n in ast.walk(stmt))
        if program_error is not None:
            if is_test:
                results.append({"test": label(src), "passed": False, "error": program_error})
            continue
        err = run(src, locs, name="<test>")
        if is_test:
            results.append({"test": label(src), "passed": err is None, "error": err})
        elif err is not None:
            # A setup statement failed: the tests after it cannot run.
            program_error = "test setup failed: " + err
else:
    for t in tests:
        if program_error is not None:
            results.append({"test": label(t), "passed": False, "error": program_error})
            continue
        err = run(t, globs, name="<test>")
        results.append({"test": label(t), "passed": err is None, "error": err})

line = marker + json.dumps({"program_error": program_error, "results": results}) + "\n"
os.write(real_stdout, line.encode())
os._exit(0)

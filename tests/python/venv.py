#!/usr/bin/env python3
"""The test suite's virtualenvs, made once and remade only when what defines them changes.

  venv.py NAME    makes target/NAME if needed and prints its Python's path
  venv.py --all   makes every one (`cargo xtask test` runs this beside the build)

Each venv is defined by its requirement files in this folder (pinned) and the Python that
makes it; their SHA-256 is the venv's key, kept in target/NAME/trawl-key. A venv whose key
matches is used as it is. Several test processes may ask at once: one makes it under a lock
while the others wait, and a half-made venv is never used (the key is written last).
"""

import fcntl
import hashlib
import os
import shutil
import subprocess
import sys

HERE = os.path.dirname(os.path.abspath(__file__))
TARGET = os.path.normpath(os.path.join(HERE, "..", "..", "target"))

# name: (what it is for, [(requirement file, install with --no-deps)])
VENVS = {
    "trainers-venv": (
        "the trainer checks (datasets, pyarrow, transformers, TRL)",
        [("requirements.txt", False), ("requirements-nodeps.txt", True)],
    ),
    "openenv-venv": (
        "the OpenEnv tests (openenv-core 0.3)",
        [("requirements-openenv.txt", False)],
    ),
}


def key(files):
    h = hashlib.sha256()
    h.update(sys.version.encode())
    h.update(os.path.realpath(sys.executable).encode())
    for name, no_deps in files:
        h.update(f"{name} {no_deps}\n".encode())
        with open(os.path.join(HERE, name), "rb") as f:
            h.update(f.read())
    return h.hexdigest()


def run(cmd, purpose):
    out = subprocess.run(cmd, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    if out.returncode != 0:
        sys.exit(
            f"{' '.join(cmd)} failed:\n{out.stdout}\n  hint: {purpose} need python3 with venv "
            "(Debian: apt-get install -y python3-venv) and PyPI"
        )


def make(name):
    purpose, files = VENVS[name]
    venv = os.path.join(TARGET, name)
    python = os.path.join(venv, "bin", "python")
    stamp = os.path.join(venv, "trawl-key")
    want = key(files)

    def ready():
        try:
            with open(stamp) as f:
                return f.read().strip() == want and os.path.exists(python)
        except OSError:
            return False

    if ready():
        return python
    os.makedirs(TARGET, exist_ok=True)
    with open(os.path.join(TARGET, f".{name}.lock"), "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        if ready():
            return python
        print(f"making {venv} for {purpose}", file=sys.stderr)
        shutil.rmtree(venv, ignore_errors=True)
        run([sys.executable, "-m", "venv", venv], purpose)
        for file, no_deps in files:
            cmd = [python, "-m", "pip", "install", "--quiet", "--disable-pip-version-check"]
            if no_deps:
                cmd.append("--no-deps")
            run(cmd + ["-r", os.path.join(HERE, file)], purpose)
        with open(stamp, "w") as f:
            f.write(want + "\n")
    return python


def main(argv):
    if argv[1:] == ["--all"]:
        for name in VENVS:
            print(make(name))
        return 0
    if len(argv) == 2 and argv[1] in VENVS:
        print(make(argv[1]))
        return 0
    print(__doc__, file=sys.stderr)
    print(f"venvs: {', '.join(VENVS)}", file=sys.stderr)
    return 2


if __name__ == "__main__":
    sys.exit(main(sys.argv))

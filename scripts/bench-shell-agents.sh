#!/usr/bin/env bash
# Shell-agent episodes side by side: trawl (namespaces, process-group fallback, Docker) and
# mini-swe-agent 2.4.6, against the same scripted server (250 ms per reply; 10 × `echo hi`, then
# submit), at concurrency 1, 8, 32, 128 and 512. Prints a markdown table (BENCHMARKS.md has the
# figures). Options go to scripts/bench_shell_agents.py (--help), for example:
#   scripts/bench-shell-agents.sh --systems trawl-namespaces,mini-swe-agent --concurrency 1,128
# Run it on an otherwise idle machine, as root for the Docker rows and users per sandbox.
set -euo pipefail
cd "$(dirname "$0")/.."
cargo build --release --quiet --locked -p trawl -p trawl-tests --bins
if docker info >/dev/null 2>&1; then
  target/release/trawl swe build-images >/dev/null
fi
venv=target/bench-venv
if ! "$venv/bin/python" -c 'import minisweagent' 2>/dev/null; then
  python3 -m venv "$venv"
  "$venv/bin/pip" install --quiet -r tests/python/requirements-bench.txt
fi
# Many episodes at once hold many files open.
ulimit -n 65536 2>/dev/null || true
exec python3 scripts/bench_shell_agents.py "$@"

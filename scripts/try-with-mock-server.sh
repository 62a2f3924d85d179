#!/usr/bin/env bash
# Runs trawl's main job end to end against trawl-mock-server, a scripted OpenAI-compatible
# server on 127.0.0.1 (no model needed): run → stats → export. Point examples/math-openai.toml at
# a real server (vLLM, SGLang, llama.cpp server, OpenAI) to do the same with a real model.
set -euo pipefail
cd "$(dirname "$0")/.."
cargo build --release --quiet -p trawl -p trawl-tests --bins
port=${PORT:-8000}
target/release/trawl-mock-server --port "$port" --delay-ms 50 >/dev/null &
server=$!
trap 'kill $server 2>/dev/null || true' EXIT
sleep 0.5
out=${OUT:-runs/mock-quickstart}
sed "s#http://127.0.0.1:8000/v1#http://127.0.0.1:$port/v1#" examples/math-openai.toml > /tmp/trawl-mock-quickstart.toml
target/release/trawl run /tmp/trawl-mock-quickstart.toml --out "$out" --force
target/release/trawl stats "$out"
target/release/trawl export "$out" --format openai --success-only --output "$out/sft.jsonl"

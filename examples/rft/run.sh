#!/usr/bin/env bash
# Rejection-sampling fine-tuning on trawl's data, end to end (examples/rft/README.md):
#   round 0: evaluate the embedded model (SmolLM2-135M-Instruct) on held-out arithmetic tasks;
#   round r: trawl samples the current model on the training tasks until `keep` answers per task
#            are correct (at most k samples), exports the correct ones (at most `keep` per task,
#            duplicates dropped, held-out tasks never), TRL fine-tunes the model on them, the
#            weights go back into a GGUF file, and trawl evaluates it on the same held-out tasks.
# Prints the held-out pass@1 of every round with its 95% interval.
#
#   examples/rft/run.sh                      # CPU defaults: 2 rounds (about 70 minutes on 2 cores)
#   examples/rft/run.sh --preset gpu         # the reference's sizes, CUDA for training and sampling
#   examples/rft/run.sh --preset smoke       # minutes: every phase once, plus the GGUF check
# Any size can be overridden: --rounds --train --heldout --k --keep --epochs --lr --batch-size
# --temperature --out DIR. Running again with the same --out resumes where it stopped.
set -euo pipefail
ROOT="$(cd "$(dirname "$0")/../.." && pwd)"
HERE="$ROOT/examples/rft"

PRESET=cpu
declare -A SET=()
while [ $# -gt 0 ]; do
  case "$1" in
    --preset) PRESET="$2"; shift 2 ;;
    --out|--rounds|--train|--heldout|--k|--keep|--epochs|--lr|--batch-size|--temperature|--seed)
      SET["${1#--}"]="$2"; shift 2 ;;
    -h|--help) sed -n '2,16p' "$0"; exit 0 ;;
    *) echo "run.sh: unknown argument $1 (see --help)" >&2; exit 2 ;;
  esac
done

case "$PRESET" in
  cpu)   ROUNDS=2; TRAIN=200;  HELDOUT=300; K=8;  KEEP=2; EPOCHS=2; LR=5e-5; BATCH=8;  PARALLEL=16; CONC=32 ;;
  gpu)   ROUNDS=3; TRAIN=1500; HELDOUT=300; K=16; KEEP=2; EPOCHS=2; LR=2e-5; BATCH=16; PARALLEL=64; CONC=128 ;;
  smoke) ROUNDS=1; TRAIN=12;   HELDOUT=8;   K=2;  KEEP=1; EPOCHS=1; LR=2e-5; BATCH=4;  PARALLEL=8;  CONC=8 ;;
  *) echo "run.sh: --preset is cpu, gpu or smoke" >&2; exit 2 ;;
esac
OUT="${SET[out]:-$ROOT/runs/rft-$PRESET}"
ROUNDS="${SET[rounds]:-$ROUNDS}"; TRAIN="${SET[train]:-$TRAIN}"; HELDOUT="${SET[heldout]:-$HELDOUT}"
K="${SET[k]:-$K}"; KEEP="${SET[keep]:-$KEEP}"; EPOCHS="${SET[epochs]:-$EPOCHS}"; LR="${SET[lr]:-$LR}"
BATCH="${SET[batch-size]:-$BATCH}"; TEMP="${SET[temperature]:-0.8}"; SEED="${SET[seed]:-2026}"
SYSTEM="You are a helpful assistant. Answer concisely."
MAX_TOKENS=160

mkdir -p "$OUT"
OUT="$(cd "$OUT" && pwd)"
SETTINGS="preset=$PRESET rounds=$ROUNDS train=$TRAIN heldout=$HELDOUT k=$K keep=$KEEP epochs=$EPOCHS lr=$LR batch=$BATCH temperature=$TEMP seed=$SEED max_tokens=$MAX_TOKENS"
if [ -f "$OUT/settings" ] && [ "$(cat "$OUT/settings")" != "$SETTINGS" ]; then
  echo "run.sh: $OUT was started with other settings:" >&2
  echo "  there: $(cat "$OUT/settings")" >&2
  echo "  now:   $SETTINGS" >&2
  echo "  give another --out, or the same settings to resume" >&2
  exit 2
fi
echo "$SETTINGS" > "$OUT/settings"
echo "== rft: $SETTINGS"
echo "   into $OUT"

# Wall time of each phase, for the table.
phase() { # phase NAME COMMAND...
  local name="$1"; shift
  local t0; t0=$(date +%s.%N)
  "$@"
  echo "{\"phase\": \"$name\", \"seconds\": $(awk -v a="$t0" -v b="$(date +%s.%N)" 'BEGIN { printf "%.1f", b - a }')}" >> "$OUT/times.jsonl"
}

echo "== trawl (release build)"
FEATURES=()
if [ "$PRESET" = gpu ] && command -v nvidia-smi >/dev/null; then FEATURES=(--features cuda); fi
(cd "$ROOT" && cargo build --release --locked --bin trawl "${FEATURES[@]}")
TRAWL="$ROOT/target/release/trawl"

echo "== the trainer's Python packages (pinned: examples/rft/requirements.txt)"
VENV="$ROOT/target/rft-venv"
if ! cmp -s "$HERE/requirements.txt" "$VENV/.installed" 2>/dev/null; then
  python3 -m venv "$VENV"
  "$VENV/bin/pip" install -q --upgrade pip
  "$VENV/bin/pip" install -q -r "$HERE/requirements.txt"
  cp "$HERE/requirements.txt" "$VENV/.installed"
fi
PY=("$VENV/bin/python" "$HERE/rft.py")

GPU_LAYERS=""
if [ ${#FEATURES[@]} -gt 0 ]; then GPU_LAYERS="gpu_layers = 99"; fi

# write_config FILE NAME MODEL TASKS SAMPLES TEMPERATURE
write_config() {
  cat > "$1" <<EOF
# Written by examples/rft/run.sh.
name = "$2"
seed = $SEED
samples = $5
concurrency = $CONC
episode_timeout_secs = 900

[[environments]]
type = "math"
files = ["$4"]

[[scaffolds]]
type = "chat"
system_prompt = "$SYSTEM"

[[models]]
type = "llama"
path = "$3"
parallel = $PARALLEL
context_size = 1024
$GPU_LAYERS

[models.sampling]
temperature = $6
top_p = 0.95
max_tokens = $MAX_TOKENS
EOF
}

echo "== tasks: generated two-number arithmetic (levels 1 and 2), split into training and held-out"
if [ ! -f "$OUT/train.jsonl" ]; then
  cat > "$OUT/tasks.toml" <<EOF
# Written by examples/rft/run.sh: the pool of generated tasks, split by rft.py.
name = "rft-tasks"
seed = $SEED
[[environments]]
type = "math"
generator = { count = $(( (TRAIN + HELDOUT) * 12 / 10 + 20 )), levels = [1, 2] }
[[scaffolds]]
type = "chat"
[[models]]
type = "llama"
EOF
  rm -f "$OUT/pool.jsonl"
  "$TRAWL" check "$OUT/tasks.toml" --tasks-out "$OUT/pool.jsonl"
  rm -f "$OUT/heldout.jsonl" "$OUT/heldout.ids"
  "${PY[@]}" split --pool "$OUT/pool.jsonl" --out "$OUT" --train "$TRAIN" --heldout "$HELDOUT" --seed "$SEED"
fi
BASE="${TRAWL_HOME:-${XDG_CACHE_HOME:-$HOME/.cache}/trawl}/models/SmolLM2-135M-Instruct.Q4_1.gguf"
[ -f "$BASE" ] || { echo "run.sh: the default model is not at $BASE" >&2; exit 1; }

evaluate() { # evaluate ROUND MODEL
  local dir="$OUT/round-$1"
  write_config "$dir/eval.toml" "rft-round-$1-eval" "$2" "$OUT/heldout.jsonl" 1 0
  if [ ! -f "$dir/eval.json" ]; then
    phase "round $1 evaluation" "$TRAWL" run "$dir/eval.toml" --out "$dir/eval" --quiet
    if [ "$1" != 0 ]; then
      "$TRAWL" diff "$OUT/round-0/eval" "$dir/eval" --format json > "$dir/diff.json"
    fi
    "$TRAWL" stats "$dir/eval" --json > "$dir/eval.json.partial"
    mv "$dir/eval.json.partial" "$dir/eval.json"
  fi
}

convert_base() {
  "${PY[@]}" checkpoint --model "$BASE" --out "$OUT/round-0/checkpoint"
  "${PY[@]}" to-gguf --checkpoint "$OUT/round-0/checkpoint" --template "$BASE" --out "$OUT/round-0/model.gguf"
}

echo "== round 0: the embedded model as it ships (Q4_1), and its weights through the converter (F16)"
mkdir -p "$OUT/round-0"
evaluate 0 "$BASE"
if [ ! -f "$OUT/round-0/model.gguf" ]; then
  rm -rf "$OUT/round-0/checkpoint"
  phase "round 0 conversion" convert_base
fi
mkdir -p "$OUT/round-0f"
evaluate 0f "$OUT/round-0/model.gguf"

for r in $(seq 1 "$ROUNDS"); do
  prev=$((r - 1))
  dir="$OUT/round-$r"
  mkdir -p "$dir"
  echo "== round $r: sample the round-$prev model until $KEEP correct per task (at most $K samples)"
  write_config "$dir/sample.toml" "rft-round-$r-sample" "$OUT/round-$prev/model.gguf" "$OUT/train.jsonl" \
    "{ max = $K, until_successes = $KEEP }" "$TEMP"
  if [ ! -f "$dir/train.jsonl" ]; then
    phase "round $r sampling" "$TRAWL" run "$dir/sample.toml" --out "$dir/sample" --quiet
    "$TRAWL" stats "$dir/sample" --json > "$dir/sample.json"
    rm -f "$dir/train.partial.jsonl" "$dir/train.partial_stats.json"
    "$TRAWL" export "$dir/sample" --format openai --success-only --max-per-task "$KEEP" --dedup exact \
      --exclude-tasks "$OUT/heldout.ids" --decontaminate "$OUT/heldout.jsonl" --output "$dir/train.partial.jsonl"
    mv "$dir/train.partial_stats.json" "$dir/train_stats.json"
    mv "$dir/train.partial.jsonl" "$dir/train.jsonl"
  fi
  echo "== round $r: fine-tune on $(wc -l < "$dir/train.jsonl") examples"
  if [ ! -f "$dir/checkpoint/trawl_rft_train.json" ]; then
    rm -rf "$dir/checkpoint"
    phase "round $r training" "${PY[@]}" train --model "$OUT/round-$prev/checkpoint" --data "$dir/train.jsonl" \
      --out "$dir/checkpoint" --epochs "$EPOCHS" --lr "$LR" --batch-size "$BATCH" --seed "$((SEED + r))"
  fi
  if [ ! -f "$dir/model.gguf" ]; then
    phase "round $r conversion" "${PY[@]}" to-gguf --checkpoint "$dir/checkpoint" --template "$BASE" --out "$dir/model.gguf"
  fi
  echo "== round $r: evaluate on the held-out tasks (greedy)"
  evaluate "$r" "$dir/model.gguf"
done

if [ "$PRESET" = smoke ]; then
  echo "== smoke check: the last GGUF holds the trained weights and answers as transformers does"
  last="$OUT/round-$ROUNDS"
  "${PY[@]}" check --checkpoint "$last/checkpoint" --gguf "$last/model.gguf" --template "$BASE" \
    --trawl-run "$last/eval" --max-tokens "$MAX_TOKENS" | tee "$OUT/check.jsonl"
fi

echo "== held-out pass@1 per round"
"${PY[@]}" table --out "$OUT" --rounds "$ROUNDS" | tee "$OUT/table.md"

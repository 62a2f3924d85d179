"""Loads each of trawl's export files with the trainers' own libraries and checks what they read.

usage: check_exports.py GGUF FORMAT=PATH [FORMAT=PATH ...]

FORMAT is the export format (openai, openai_tools_json, sharegpt, turns, dpo, grpo, tokens,
tokens_decoded, verl, trajectory). Prints one line per file; exits non-zero at the first check that fails.
"""

import json
import math
import sys

import datasets
import pyarrow as pa
import pyarrow.parquet as pq
from trl.data_utils import apply_chat_template, is_conversational, maybe_apply_chat_template

import gguf_tokenizer

datasets.disable_progress_bars()


def lines(path):
    with open(path, encoding="utf-8") as f:
        return [json.loads(l) for l in f if l.strip()]


def load(path):
    ds = datasets.load_dataset("json", data_files=path, split="train")
    assert len(ds) == len(lines(path)), f"{path}: datasets read {len(ds)} rows of {len(lines(path))}"
    assert len(ds) > 0, f"{path}: no rows to check"
    return ds


def tools_of(row):
    tools = row.get("tools")
    if isinstance(tools, str):
        tools = json.loads(tools)
    # datasets fills the fields one tool lacks and another has with None: drop them again.
    def clean(v):
        if isinstance(v, dict):
            return {k: clean(x) for k, x in v.items() if x is not None}
        if isinstance(v, list):
            return [clean(x) for x in v]
        return v
    return clean(tools) or None


def check_openai(path, tok, tools_json=False):
    ds = load(path)
    raw = lines(path)
    for row, orig in zip(ds, raw):
        assert is_conversational(row), "TRL sees a conversational row"
        if tools_json:
            assert isinstance(row["tools"], str), "tools kept as one JSON string"
            assert row["tools"] == orig["tools"], "the JSON string is read as written"
            tools = json.loads(row["tools"])
            assert all(t["type"] == "function" and "parameters" in t["function"] for t in tools)
        text = apply_chat_template({"messages": row["messages"]}, tok, tools=tools_of(row))["text"]
        last = [m for m in orig["messages"] if m["role"] == "assistant"][-1]["content"]
        assert last in text, f"the templated text holds the last reply {last!r}"
    return f"{len(ds)} rows, conversational, chat template applied"


def check_sharegpt(path, tok):
    ds = load(path)
    for row in ds:
        froms = [t["from"] for t in row["conversations"]]
        for i, f in enumerate(froms):
            model_turn = f in ("gpt", "function_call")
            assert model_turn == (i % 2 == 1), f"turns alternate: {froms}"
        assert isinstance(row["tools"], str)
        json.loads(row["tools"])
    return f"{len(ds)} rows, alternating, tools a JSON string"


def check_turns(path, tok):
    ds = load(path)
    for row in ds:
        assert [m["role"] for m in row["messages"]] == ["user", "assistant"]
        assert is_conversational(row)
        assert row["metadata"]["reward_scope"] in ("turn", "episode")
        for k in ("reward", "turn_idx", "env_name", "agent_name"):
            assert k in row["metadata"], k
    return f"{len(ds)} rows, one turn each"


def check_dpo(path, tok):
    ds = load(path)
    raw = lines(path)
    for row, orig in zip(ds, raw):
        assert is_conversational(row), "TRL sees a conversational preference row"
        assert orig["chosen_reward"] - orig["rejected_reward"] == orig["margin"] > 0
        out = maybe_apply_chat_template(
            {"prompt": row["prompt"], "chosen": row["chosen"], "rejected": row["rejected"], "tools": tools_of(row)}, tok
        )
        assert set(out) >= {"prompt", "chosen", "rejected"}, out.keys()
        first = orig["chosen"][0]["content"]
        if first:
            assert first in out["chosen"], f"the chosen text holds {first!r}"
        assert out["prompt"].endswith("assistant\n"), "the prompt ends with the generation prompt"
    return f"{len(ds)} pairs, conversational, chat template applied"


def check_grpo(path, tok):
    ds = load(path)
    for row in ds:
        assert is_conversational({"prompt": row["prompt"]})
        n = len(row["completions"])
        assert n >= 2 and len(row["rewards"]) == n == len(row["advantages"])
        assert abs(sum(row["advantages"])) < 1e-6, "advantages are centred in the group"
        assert len(set(row["rewards"])) > 1, "no zero-variance group"
        rewards = row["rewards"]
        mean = sum(rewards) / n
        std = math.sqrt(sum((r - mean) ** 2 for r in rewards) / (n - 1))
        for r, a in zip(rewards, row["advantages"]):
            assert abs(a - (r - mean) / (std + 1e-4)) < 1e-9
        maybe_apply_chat_template({"prompt": row["prompt"], "tools": tools_of(row)}, tok)
    return f"{len(ds)} groups, advantages (r - mean) / (std + 1e-4)"


def check_tokens(path, tok, decode=False):
    ds = load(path)
    decoded = 0
    for row in ds:
        n = len(row["response_ids"])
        assert n > 0 and len(row["prompt_ids"]) > 0
        assert len(row["response_mask"]) == n and set(row["response_mask"]) == {1}
        if row["logprobs"] is not None:
            assert len(row["logprobs"]) == n and all(lp <= 0 for lp in row["logprobs"])
        if decode:
            # Ids of the embedded model: SmolLM2's own tokenizer turns them back into the reply.
            text = tok.decode(row["response_ids"], skip_special_tokens=True)
            assert text.strip() == row["response_text"].strip(), (text, row["response_text"])
            decoded += 1
    return f"{len(ds)} turns, ids and masks aligned, {decoded} decoded back to their text"


def check_verl(path, tok):
    table = pq.read_table(path)
    s = table.schema
    msg = pa.struct([pa.field("role", pa.string(), False), pa.field("content", pa.string(), False)])
    assert s.field("data_source").type == pa.string()
    assert s.field("ability").type == pa.string()
    assert s.field("prompt").type.value_type == msg, s.field("prompt").type
    rm = s.field("reward_model").type
    assert rm.field("style").type == pa.string() and rm.field("ground_truth").type == pa.string()
    ei = s.field("extra_info").type
    assert ei.field("split").type == pa.string() and ei.field("index").type == pa.int64()
    assert ei.field("need_tools_kwargs").type == pa.bool_()
    assert table.num_rows > 0
    ds = datasets.load_dataset("parquet", data_files=path, split="train")
    assert len(ds) == table.num_rows
    for row in ds:
        assert row["reward_model"]["style"] == "rule" and row["reward_model"]["ground_truth"]
        assert is_conversational({"prompt": row["prompt"]})
        apply_chat_template({"prompt": row["prompt"]}, tok)
    return f"{table.num_rows} prompts, verl's column types"


def check_trajectory(path, tok):
    ds = load(path)
    assert all(r["schema"] == "trawl.trajectory/1" for r in ds)
    return f"{len(ds)} records"


def check_swe_smith(path, tok):
    ds = load(path)
    raw = lines(path)
    for row, orig in zip(ds, raw):
        assert {"messages", "instance_id", "resolved", "model", "traj_id", "patch"} <= set(orig)
        assert is_conversational(row)
        msgs = [{k: v for k, v in m.items() if v is not None} for m in orig["messages"]]
        text = apply_chat_template({"messages": msgs}, tok, tools=orig.get("tools"))["text"]
        assert msgs[-1]["content"][:40] in text
    return f"{len(ds)} rows, conversational, chat template applied"


def check_preds(path, tok):
    with open(path, encoding="utf-8") as f:
        preds = json.load(f)
    assert isinstance(preds, dict) and preds
    for iid, p in preds.items():
        assert set(p) == {"model_name_or_path", "instance_id", "model_patch"}, p.keys()
        assert p["instance_id"] == iid and isinstance(p["model_patch"], str)
    return f"{len(preds)} instances"


CHECKS = {
    "swe_smith": check_swe_smith,
    "preds": check_preds,
    "openai": check_openai,
    "openai_tools_json": lambda p, t: check_openai(p, t, tools_json=True),
    "sharegpt": check_sharegpt,
    "turns": check_turns,
    "dpo": check_dpo,
    "grpo": check_grpo,
    "tokens": check_tokens,
    "tokens_decoded": lambda p, t: check_tokens(p, t, decode=True),
    "verl": check_verl,
    "trajectory": check_trajectory,
}


def main():
    tok = gguf_tokenizer.load(sys.argv[1])
    for arg in sys.argv[2:]:
        fmt, path = arg.split("=", 1)
        print(f"{fmt}: {CHECKS[fmt](path, tok)}", flush=True)


if __name__ == "__main__":
    main()

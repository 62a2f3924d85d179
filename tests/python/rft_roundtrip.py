"""The parts of examples/rft that need no torch, checked with the trainers' own libraries.

  rft_roundtrip.py MODEL.gguf WORKDIR EXPORT.jsonl

1. The export is what the trainer reads: rft.py's rows are conversational prompt-completion
   examples, and TRL's own `apply_chat_template` makes of each a prompt ending where the model
   answers and a completion that is the answer and its end-of-turn token.
2. The converter keeps the weights: the GGUF's tensors as transformers holds them (dequantized,
   the rotary halves of q/k in transformers' order) go through `rft.py to-gguf` and come back the
   same to F16 rounding, in the same order, with the original metadata.
Prints one line per part; exits non-zero on the first difference.
"""

import argparse
import os
import sys

import numpy as np
from gguf import GGUFReader, MODEL_ARCH, get_tensor_name_map
from gguf.quants import dequantize
from safetensors.numpy import save_file

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, os.path.join(HERE, "..", "..", "examples", "rft"))
sys.path.insert(0, HERE)

import gguf_tokenizer  # noqa: E402
import rft  # noqa: E402


def fail(msg):
    print("FAIL:", msg)
    sys.exit(1)


def check_rows(gguf_path, export):
    from trl.data_utils import apply_chat_template, is_conversational

    tok = gguf_tokenizer.load(gguf_path)
    rows = rft.training_rows(export)
    for i, row in enumerate(rows, 1):
        if not is_conversational(row):
            fail(f"row {i}: TRL does not see a conversation")
        out = apply_chat_template(row, tok)
        answer = row["completion"][0]["content"]
        if not out["prompt"].endswith("<|im_start|>assistant\n"):
            fail(f"row {i}: the prompt does not end where the model answers: {out['prompt'][-60:]!r}")
        if row["prompt"][-1]["content"] not in out["prompt"]:
            fail(f"row {i}: the question is not in the prompt")
        if not out["completion"].startswith(answer) or "<|im_end|>" not in out["completion"][len(answer):]:
            fail(f"row {i}: the completion is not the answer and its end of turn: {out['completion']!r}")
    print(f"rows: {len(rows)} prompt-completion rows read by TRL's apply_chat_template")


def unpermute(w, n_head):
    """transformers' order of a q/k weight from llama.cpp's (inverse of rft.permute_rope)."""
    return w.reshape(n_head, w.shape[0] // n_head // 2, 2, *w.shape[1:]).swapaxes(1, 2).reshape(w.shape)


def check_converter(gguf_path, work):
    reader = GGUFReader(gguf_path)
    n_block = int(reader.fields["llama.block_count"].contents())
    n_head = int(reader.fields["llama.attention.head_count"].contents())
    n_kv = int(reader.fields["llama.attention.head_count_kv"].contents())
    names = get_tensor_name_map(MODEL_ARCH.LLAMA, n_block)
    hf_names = ["model.embed_tokens.weight", "model.norm.weight", "lm_head.weight"]
    for i in range(n_block):
        for part in ("input_layernorm", "post_attention_layernorm", "self_attn.q_proj",
                     "self_attn.k_proj", "self_attn.v_proj", "self_attn.o_proj", "mlp.gate_proj",
                     "mlp.up_proj", "mlp.down_proj"):
            hf_names.append(f"model.layers.{i}.{part}.weight")
    to_hf = {names.get_name(n, try_suffixes=(".weight",)): n for n in hf_names}
    state, original = {}, {}
    for t in reader.tensors:
        w = dequantize(t.data, t.tensor_type).astype(np.float32)
        original[t.name] = w
        if t.name.endswith("attn_q.weight"):
            w = unpermute(w, n_head)
        elif t.name.endswith("attn_k.weight"):
            w = unpermute(w, n_kv)
        state[to_hf[t.name]] = np.ascontiguousarray(w)
    ck = os.path.join(work, "checkpoint")
    os.makedirs(ck)
    save_file(state, os.path.join(ck, "model.safetensors"))
    out = os.path.join(work, "converted.gguf")
    rft.cmd_to_gguf(argparse.Namespace(checkpoint=ck, template=gguf_path, out=out, outtype="f16"))
    back = GGUFReader(out)
    if [t.name for t in back.tensors] != [t.name for t in reader.tensors]:
        fail("the converted file's tensors are not in the original order")
    worst = 0.0
    for t in back.tensors:
        w = dequantize(t.data, t.tensor_type).astype(np.float32)
        ref = original[t.name]
        if w.shape != ref.shape:
            fail(f"{t.name}: shape {w.shape}, the original's {ref.shape}")
        err = float(np.abs(w - ref).max() / max(float(np.abs(ref).max()), 1e-12))
        worst = max(worst, err)
        if err > 2e-3:
            fail(f"{t.name}: differs by {err:.2e} of its largest value")
    for key, field in reader.fields.items():
        if key.startswith("GGUF.") or key == "general.file_type":
            continue
        if key not in back.fields or back.fields[key].contents() != field.contents():
            fail(f"metadata {key}: not the original's")
    if back.fields["general.file_type"].contents() != 1:
        fail("general.file_type is not MOSTLY_F16")
    print(f"converter: {len(back.tensors)} tensors back to {worst:.1e} of their largest value, "
          f"metadata kept ({len(reader.fields)} fields)")


def main():
    gguf_path, work, export = sys.argv[1:4]
    check_rows(gguf_path, export)
    check_converter(gguf_path, work)


if __name__ == "__main__":
    main()

"""The Python half of trawl's rejection-sampling fine-tuning loop (examples/rft/run.sh).

trawl samples, scores, selects and evaluates; this file does what needs the model's weights:

  split     a pool of generated tasks (`trawl check --tasks-out`) -> train.jsonl + heldout.jsonl,
            no question in both
  train     fine-tune on a trawl export (`--format openai`) with TRL's SFTTrainer, loss on the
            answer only; starts from a GGUF file (transformers reads it) or a checkpoint
  checkpoint  a GGUF file's weights as a checkpoint folder (round 0)
  to-gguf   a checkpoint -> a GGUF file trawl's `llama` backend loads, with the original file's
            metadata (tokenizer, chat template) and tensor order
  table     the per-round table (Markdown) from what run.sh left
  check     the smoke check: the GGUF holds the checkpoint's weights, and transformers' greedy
            answers on the checkpoint match trawl's on the GGUF (a trawl run directory)
"""

import argparse
import json
import os
import random
import sys
import time


def log(*parts):
    print("[rft]", *parts, file=sys.stderr, flush=True)


def read_jsonl(path):
    with open(path, encoding="utf-8") as f:
        return [json.loads(line) for line in f if line.strip()]


def write_jsonl(path, rows):
    with open(path, "x", encoding="utf-8") as f:
        for r in rows:
            f.write(json.dumps(r, ensure_ascii=False) + "\n")


# ---------------------------------------------------------------------------------------------
# split


def cmd_split(a):
    pool = read_jsonl(a.pool)
    seen, unique = set(), []
    for t in pool:
        key = " ".join(t["question"].split()).lower()
        if key not in seen:
            seen.add(key)
            unique.append(t)
    random.Random(a.seed).shuffle(unique)
    need = a.heldout + a.train
    if len(unique) < need:
        sys.exit(f"rft split: {a.pool} has {len(unique)} distinct questions, {need} needed; generate more")
    keep = ("id", "question", "answer", "level")
    heldout = [{k: t[k] for k in keep if k in t} for t in unique[: a.heldout]]
    train = [{k: t[k] for k in keep if k in t} for t in unique[a.heldout : need]]
    write_jsonl(os.path.join(a.out, "heldout.jsonl"), heldout)
    write_jsonl(os.path.join(a.out, "train.jsonl"), train)
    with open(os.path.join(a.out, "heldout.ids"), "x", encoding="utf-8") as f:
        f.write("# held-out task ids: never exported for training\n")
        f.writelines(t["id"] + "\n" for t in heldout)
    log(f"{len(pool)} generated, {len(pool) - len(unique)} repeated questions dropped: "
        f"{len(train)} training tasks, {len(heldout)} held out")


# ---------------------------------------------------------------------------------------------
# loading weights


def load_model(path, dtype=None):
    """A GGUF file (transformers dequantizes it) or a checkpoint folder, in float32."""
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer

    dtype = dtype or torch.float32
    if path.endswith(".gguf"):
        folder, name = os.path.split(os.path.abspath(path))
        tok = AutoTokenizer.from_pretrained(folder, gguf_file=name)
        model = AutoModelForCausalLM.from_pretrained(folder, gguf_file=name, dtype=dtype)
        # transformers dequantizes every tensor to `dtype` but still marks the model as quantized,
        # which refuses save_pretrained; the weights are plain tensors, so drop the mark.
        model.hf_quantizer = None
        if hasattr(model.config, "quantization_config"):
            del model.config.quantization_config
    else:
        tok = AutoTokenizer.from_pretrained(path)
        model = AutoModelForCausalLM.from_pretrained(path, dtype=dtype)
    if tok.pad_token is None:
        tok.pad_token = tok.eos_token
    return model, tok


def cpu_has_bf16():
    try:
        with open("/proc/cpuinfo") as f:
            flags = f.read()
        return "avx512_bf16" in flags or "amx_bf16" in flags
    except OSError:
        return False


# ---------------------------------------------------------------------------------------------
# train


def training_rows(path):
    """A trawl export (`--format openai`) as TRL's conversational prompt-completion rows: the
    conversation up to the last answer is the prompt, the answer the completion, so the loss
    falls on the answer only."""
    rows = []
    for i, r in enumerate(read_jsonl(path), 1):
        msgs = r.get("messages")
        if not msgs or msgs[-1].get("role") != "assistant":
            sys.exit(f"{path}:{i}: field `messages`: expected a conversation ending with the "
                     "assistant's answer (export it with `trawl export --format openai`)")
        rows.append({"prompt": [{"role": m["role"], "content": m["content"]} for m in msgs[:-1]],
                     "completion": [{"role": "assistant", "content": msgs[-1]["content"]}]})
    if not rows:
        sys.exit(f"{path}: no training examples (did any rollout succeed?)")
    return rows


def cmd_train(a):
    import torch
    from datasets import Dataset
    from trl import SFTConfig, SFTTrainer

    torch.manual_seed(a.seed)
    if not torch.cuda.is_available():
        torch.set_num_threads(os.cpu_count() or 1)
    rows = training_rows(a.data)
    model, tok = load_model(a.model)
    cuda = torch.cuda.is_available()
    bf16 = cuda or cpu_has_bf16()
    cfg = SFTConfig(
        output_dir=a.out,
        num_train_epochs=a.epochs,
        learning_rate=a.lr,
        per_device_train_batch_size=a.batch_size,
        gradient_accumulation_steps=a.grad_accum,
        lr_scheduler_type="cosine",
        warmup_steps=0.1,
        weight_decay=0.0,
        max_length=512,
        completion_only_loss=True,
        bf16=bf16,
        logging_steps=max(1, len(rows) // (a.batch_size * a.grad_accum * 4)),
        save_strategy="no",
        report_to="none",
        seed=a.seed,
        dataloader_num_workers=0,
        use_cpu=not cuda,
    )
    trainer = SFTTrainer(model=model, args=cfg, train_dataset=Dataset.from_list(rows),
                         processing_class=tok)
    t0 = time.time()
    result = trainer.train()
    trainer.model.to(torch.float32)
    trainer.save_model(a.out)
    tok.save_pretrained(a.out)
    info = {"examples": len(rows), "epochs": a.epochs, "lr": a.lr,
            "batch": a.batch_size * a.grad_accum, "steps": result.global_step,
            "train_loss": result.training_loss, "seconds": round(time.time() - t0, 1),
            "device": "cuda" if cuda else "cpu", "bf16": bf16}
    with open(os.path.join(a.out, "trawl_rft_train.json"), "w") as f:
        json.dump(info, f, indent=1)
    log("trained:", json.dumps(info))


def cmd_checkpoint(a):
    """A GGUF file's weights as a checkpoint folder (the loop's round 0)."""
    if os.path.exists(a.out):
        sys.exit(f"rft checkpoint: {a.out} exists; nothing is overwritten")
    model, tok = load_model(a.model)
    model.save_pretrained(a.out + ".partial")
    tok.save_pretrained(a.out + ".partial")
    os.rename(a.out + ".partial", a.out)
    log(f"wrote {a.out} (the weights of {os.path.basename(a.model)}, float32)")


# ---------------------------------------------------------------------------------------------
# to-gguf


def permute_rope(w, n_head, n_head_kv=None):
    """llama.cpp's order of the rotary halves in attn_q / attn_k (its converter's `permute`)."""
    if n_head_kv is not None and n_head != n_head_kv:
        n_head = n_head_kv
    return w.reshape(n_head, 2, w.shape[0] // n_head // 2, *w.shape[1:]).swapaxes(1, 2).reshape(w.shape)


def checkpoint_tensors(path):
    """name -> float32 numpy array, from a checkpoint's safetensors files (no torch needed)."""
    from safetensors.numpy import load_file

    files = sorted(f for f in os.listdir(path) if f.endswith(".safetensors"))
    if not files:
        sys.exit(f"{path}: no .safetensors files (is it a checkpoint folder?)")
    out = {}
    for f in files:
        for k, v in load_file(os.path.join(path, f)).items():
            out[k] = v
    return out


def cmd_to_gguf(a):
    import numpy as np
    import gguf
    from gguf import GGUFReader, GGUFValueType, GGUFWriter

    if os.path.exists(a.out):
        sys.exit(f"rft to-gguf: {a.out} exists; nothing is overwritten")
    reader = GGUFReader(a.template)
    arch = reader.fields["general.architecture"].contents()
    if arch != "llama":
        sys.exit(f"{a.template}: general.architecture is {arch!r}; this converter writes llama models")
    n_block = int(reader.fields[f"{arch}.block_count"].contents())
    n_head = int(reader.fields[f"{arch}.attention.head_count"].contents())
    n_kv = int(reader.fields[f"{arch}.attention.head_count_kv"].contents())
    state = checkpoint_tensors(a.checkpoint)
    names = gguf.get_tensor_name_map(gguf.MODEL_ARCH.LLAMA, n_block)
    by_gguf = {}
    for hf in state:
        g = names.get_name(hf, try_suffixes=(".weight", ".bias"))
        if g is not None:
            by_gguf[g] = hf
    # Tied embeddings: the checkpoint may hold lm_head.weight too; the file says which it has.
    if "output.weight" not in by_gguf and "token_embd.weight" in by_gguf:
        by_gguf["output.weight"] = by_gguf["token_embd.weight"]

    tmp = a.out + ".partial"
    if os.path.exists(tmp):
        os.remove(tmp)
    writer = GGUFWriter(tmp, arch)
    for key, field in reader.fields.items():
        if key.startswith("GGUF.") or key in ("general.architecture", "general.file_type"):
            continue
        vtype = field.types[0]
        sub = field.types[-1] if vtype == GGUFValueType.ARRAY else None
        writer.add_key_value(key, field.contents(), vtype, sub)
    outtype = {"f16": gguf.LlamaFileType.MOSTLY_F16, "f32": gguf.LlamaFileType.ALL_F32}[a.outtype]
    writer.add_file_type(outtype)
    for t in reader.tensors:
        hf = by_gguf.get(t.name)
        if hf is None:
            sys.exit(f"{a.checkpoint}: no tensor for {t.name} of {a.template}")
        w = np.asarray(state[hf], dtype=np.float32)
        if t.name.endswith("attn_q.weight"):
            w = permute_rope(w, n_head, n_head)
        elif t.name.endswith("attn_k.weight"):
            w = permute_rope(w, n_head, n_kv)
        expect = tuple(int(x) for x in reversed(t.shape))
        if w.shape != expect:
            sys.exit(f"{a.checkpoint}: {hf} has shape {w.shape}, {a.template} wants {expect} for {t.name}")
        if a.outtype == "f16" and w.ndim > 1:
            w = w.astype(np.float16)
        writer.add_tensor(t.name, w)
    writer.write_header_to_file()
    writer.write_kv_data_to_file()
    writer.write_tensors_to_file()
    writer.close()
    os.rename(tmp, a.out)
    log(f"wrote {a.out} ({os.path.getsize(a.out) / 1e6:.0f} MB, {len(reader.tensors)} tensors, "
        f"{a.outtype}; metadata of {os.path.basename(a.template)})")


# ---------------------------------------------------------------------------------------------
# check


def cmd_check(a):
    """The GGUF holds the checkpoint's weights; transformers and trawl answer alike."""
    import numpy as np
    import torch
    from gguf import GGUFReader


    problems = []
    # 1. Weights: every tensor of the GGUF, read back, is the checkpoint's (to F16 rounding).
    state = checkpoint_tensors(a.checkpoint)
    model_g, _ = load_model(a.gguf)
    worst = 0.0
    for k, v in model_g.state_dict().items():
        ref = state.get(k)
        if ref is None:
            if k == "lm_head.weight":
                continue
            problems.append(f"{k}: in the GGUF's model, not in the checkpoint")
            continue
        ref = torch.from_numpy(np.asarray(ref, dtype=np.float32))
        err = ((v.float() - ref).abs().max() / ref.abs().max().clamp_min(1e-12)).item()
        worst = max(worst, err)
        if err > 2e-3:
            problems.append(f"{k}: differs from the checkpoint by {err:.2e} of its largest value")
    log(f"weights: {len(state)} tensors, largest difference {worst:.1e} of a tensor's largest value")
    reader = GGUFReader(a.gguf)
    template = GGUFReader(a.template)
    for key in ("tokenizer.chat_template", "tokenizer.ggml.tokens", "tokenizer.ggml.merges",
                "tokenizer.ggml.eos_token_id", "tokenizer.ggml.bos_token_id"):
        if template.fields[key].contents() != reader.fields[key].contents():
            problems.append(f"{key}: not the original file's")
    del model_g

    # 2. Answers: transformers on the checkpoint (greedy) against trawl on the GGUF (greedy).
    model, tok = load_model(a.checkpoint)
    model.eval()
    by_task = {}
    for r in read_jsonl(os.path.join(a.trawl_run, "trajectories.jsonl")):
        msgs = r["messages"]
        prompt = [{"role": m["role"], "content": m["content"]} for m in msgs if m["role"] in ("system", "user")][:2]
        answer = next((m["content"] for m in msgs if m["role"] == "assistant"), "")
        by_task[r["task"]["id"]] = (prompt, answer)
    same = 0
    for task, (prompt, trawl_answer) in sorted(by_task.items()):
        text = tok.apply_chat_template(prompt, tokenize=False, add_generation_prompt=True)
        ids = tok(text, return_tensors="pt", add_special_tokens=False)
        with torch.no_grad():
            out = model.generate(**ids, max_new_tokens=a.max_tokens, do_sample=False,
                                 pad_token_id=tok.pad_token_id)
        hf_answer = tok.decode(out[0][ids["input_ids"].shape[1]:], skip_special_tokens=True).strip()
        match = hf_answer == trawl_answer.strip()
        same += match
        print(json.dumps({"task": task, "same": match, "transformers": hf_answer, "trawl": trawl_answer}))
    log(f"greedy answers: {same} of {len(by_task)} identical (transformers on the checkpoint, "
        "trawl on the GGUF)")
    if same < len(by_task) * a.min_same:
        problems.append(f"only {same} of {len(by_task)} greedy answers identical")
    if problems:
        for p in problems:
            log("FAIL:", p)
        sys.exit(1)
    log("check passed")


# ---------------------------------------------------------------------------------------------
# table


def pct(x):
    return f"{100 * x:.1f}%"


def cmd_table(a):
    """The per-round table (Markdown) from what run.sh left in --out."""
    times = {}
    path = os.path.join(a.out, "times.jsonl")
    if os.path.exists(path):
        for t in read_jsonl(path):
            times[t["phase"]] = times.get(t["phase"], 0.0) + t["seconds"]

    def secs(name):
        s = times.get(name)
        return "" if s is None else (f"{s / 60:.1f} min" if s >= 90 else f"{s:.0f} s")

    head = ["round", "model", "held-out pass@1 (95% CI)", "vs round 0 (paired 95% CI, p)",
            "sampled", "kept for training", "sampling", "training", "conversion", "evaluation"]
    lines = ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    labels = [("0", "as shipped (Q4_1)"), ("0f", "converted (F16)")]
    labels += [(str(r), f"fine-tuned round {r} (F16)") for r in range(1, a.rounds + 1)]
    for key, what in labels:
        d = os.path.join(a.out, f"round-{key}")
        ev = os.path.join(d, "eval.json")
        if not os.path.exists(ev):
            continue
        g = json.load(open(ev))["groups"][0]
        rate = g.get("success") or {}
        cell = (f"{pct(rate['rate'])} ({pct(rate['ci95'][0])}–{pct(rate['ci95'][1])}), "
                f"{rate['successes']}/{rate['trials']}") if rate else "–"
        if g.get("infra_errors"):
            cell += f", {g['infra_errors']} infrastructure errors (not scored)"
        vs = ""
        diff = os.path.join(d, "diff.json")
        if os.path.exists(diff):
            c = json.load(open(diff))
            sr = c.get("success_rate")
            if sr:
                vs = (f"{100 * sr['delta']:+.1f} pts ({100 * sr['ci95'][0]:+.1f}…{100 * sr['ci95'][1]:+.1f}), "
                      f"p = {c['p_value']:.2g}")
        sampled = kept = ""
        st = os.path.join(d, "sample.json")
        if os.path.exists(st):
            sg = json.load(open(st))["groups"][0]
            sampled = f"{sg['rollouts']} on {sg['tasks']} tasks, {sg['successes']} correct"
        tr = os.path.join(d, "train.jsonl")
        if os.path.exists(tr):
            with open(tr) as f:
                n = sum(1 for line in f if line.strip())
            kept = f"{n}"
        conv = "round 0 conversion" if key == "0f" else f"round {key} conversion"
        lines.append("| " + " | ".join([
            key, what, cell, vs, sampled, kept, secs(f"round {key} sampling"),
            secs(f"round {key} training"), secs(conv) if key != "0" else "",
            secs(f"round {key} evaluation")]) + " |")
    print("\n".join(lines))


def main():
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = p.add_subparsers(dest="cmd", required=True)

    s = sub.add_parser("split")
    s.add_argument("--pool", required=True)
    s.add_argument("--out", required=True)
    s.add_argument("--train", type=int, required=True)
    s.add_argument("--heldout", type=int, required=True)
    s.add_argument("--seed", type=int, default=0)
    s.set_defaults(fn=cmd_split)

    s = sub.add_parser("train")
    s.add_argument("--model", required=True, help="a GGUF file or a checkpoint folder")
    s.add_argument("--data", required=True, help="trawl export --format openai")
    s.add_argument("--out", required=True)
    s.add_argument("--epochs", type=float, default=2)
    s.add_argument("--lr", type=float, default=2e-5)
    s.add_argument("--batch-size", type=int, default=8)
    s.add_argument("--grad-accum", type=int, default=1)
    s.add_argument("--seed", type=int, default=0)
    s.set_defaults(fn=cmd_train)

    s = sub.add_parser("checkpoint")
    s.add_argument("--model", required=True, help="a GGUF file")
    s.add_argument("--out", required=True)
    s.set_defaults(fn=cmd_checkpoint)

    s = sub.add_parser("to-gguf")
    s.add_argument("--checkpoint", required=True)
    s.add_argument("--template", required=True, help="the original GGUF: metadata and tensor order")
    s.add_argument("--out", required=True)
    s.add_argument("--outtype", choices=("f16", "f32"), default="f16")
    s.set_defaults(fn=cmd_to_gguf)

    s = sub.add_parser("check")
    s.add_argument("--checkpoint", required=True)
    s.add_argument("--gguf", required=True)
    s.add_argument("--template", required=True)
    s.add_argument("--trawl-run", required=True, help="a trawl run of the GGUF, greedy")
    s.add_argument("--max-tokens", type=int, default=64)
    s.add_argument("--min-same", type=float, default=1.0)
    s.set_defaults(fn=cmd_check)

    s = sub.add_parser("table")
    s.add_argument("--out", required=True, help="run.sh's output folder")
    s.add_argument("--rounds", type=int, required=True)
    s.set_defaults(fn=cmd_table)

    a = p.parse_args()
    a.fn(a)


if __name__ == "__main__":
    main()

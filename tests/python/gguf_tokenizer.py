"""SmolLM2's tokenizer and chat template, read from the embedded model's GGUF file.

transformers reads GGUF tokenizers only with torch installed; this builds the same byte-level BPE
tokenizer from the file's own vocabulary and merges with `tokenizers`, and takes the chat
template stored in the file, so TRL's chat-template utilities run without torch or a model hub.
"""

from gguf import GGUFReader
from tokenizers import Tokenizer, decoders, models, pre_tokenizers
from transformers import PreTrainedTokenizerFast


def _field(reader, name):
    f = reader.fields[name]
    if len(f.data) == 1 and f.types and f.types[0].name != "ARRAY":
        part = f.parts[f.data[0]]
        return bytes(part).decode("utf-8") if part.dtype.kind == "u" and part.dtype.itemsize == 1 else part[0].item()
    return [bytes(f.parts[i]).decode("utf-8") for i in f.data]


def load(path):
    reader = GGUFReader(path)
    assert _field(reader, "tokenizer.ggml.model") == "gpt2", "a byte-level BPE tokenizer"
    tokens = _field(reader, "tokenizer.ggml.tokens")
    merges = [tuple(m.split(" ", 1)) for m in _field(reader, "tokenizer.ggml.merges")]
    bpe = Tokenizer(models.BPE(vocab={t: i for i, t in enumerate(tokens)}, merges=merges))
    bpe.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    bpe.decoder = decoders.ByteLevel()
    bos = tokens[_field(reader, "tokenizer.ggml.bos_token_id")]
    eos = tokens[_field(reader, "tokenizer.ggml.eos_token_id")]
    tok = PreTrainedTokenizerFast(tokenizer_object=bpe, bos_token=bos, eos_token=eos, pad_token=eos)
    tok.add_special_tokens({"additional_special_tokens": [t for t in tokens if t.startswith("<|") and t.endswith("|>")]})
    tok.chat_template = _field(reader, "tokenizer.chat_template")
    return tok


if __name__ == "__main__":
    import sys

    t = load(sys.argv[1])
    text = t.apply_chat_template([{"role": "user", "content": "2+2?"}], tokenize=False, add_generation_prompt=True)
    print(text)
    print(t(text)["input_ids"])

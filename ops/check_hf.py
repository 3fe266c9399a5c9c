"""ops/check-hf's comparison: a Switchyard HF export loaded by transformers, against Switchyard.

usage: check_hf.py HF_DIR DATA PROMPT EVAL_JSON SAMPLE_BIN
  DATA: the text file (a byte-level model) or llm.c .bin (a tokenizer's ids) evaluated on
  EVAL_JSON: the output of `switchyard eval RUN --data DATA --windows 64 --json`
  SAMPLE_BIN: the stdout of `switchyard sample RUN --prompt PROMPT --tokens 64 --temperature 0`
Exits 1 when the losses differ by more than 1e-4 or the continuations differ.
"""
import array
import json
import os
import platform
import sys

import torch
import transformers
from transformers import AutoModelForCausalLM, AutoTokenizer

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import swy  # noqa: E402


def token_bytes(tok, ids):
    """The exact bytes of byte-level tokens (GPT-2's alphabet back to bytes), partial UTF-8 included."""
    table = swy.byte_decoder()
    return bytes(table[ch] for t in tok.convert_ids_to_tokens(ids) for ch in t)


def main():
    hf, corpus, prompt, eval_json, sample_bin = sys.argv[1:6]
    torch.set_num_threads(2)
    model = AutoModelForCausalLM.from_pretrained(hf, torch_dtype=torch.float32)
    model.eval()
    tok = AutoTokenizer.from_pretrained(hf)
    print(f"transformers {transformers.__version__}, torch {torch.__version__}, {platform.processor() or 'cpu'}")
    print(f"loaded {type(model).__name__} ({sum(p.numel() for p in model.parameters())} parameters) from {hf}")

    ids = tok(prompt, add_special_tokens=False)["input_ids"]
    if corpus.endswith(".bin"):  # llm.c: a 256 x int32 header (magic 20240520: uint16 ids), then the ids
        raw = open(corpus, "rb").read()
        wide = int.from_bytes(raw[:4], "little") != 20240520
        data = array.array("I" if wide else "H", raw[1024:]).tolist()
    else:  # a byte-level model: its tokenizer maps every byte to its own id
        assert ids == list(prompt.encode()), (ids, list(prompt.encode()))
        data = open(corpus, "rb").read()

    # Mean loss over 64 windows, window i at i * (len - T - 1) // 64, as `switchyard eval` defines it.
    t, n = model.config.max_position_embeddings, 64
    total, count = 0.0, 0
    with torch.no_grad():
        for i in range(n):
            o = i * (len(data) - t - 1) // n
            w = torch.tensor(list(data[o : o + t + 1]), dtype=torch.long)[None]
            logits = model(input_ids=w[:, :-1]).logits.double()
            total += torch.nn.functional.cross_entropy(logits[0], w[0, 1:], reduction="sum").item()
            count += t
    hf_loss = total / count
    ours = json.load(open(eval_json))["meanLoss"]
    loss_ok = abs(hf_loss - ours) <= 1e-4
    print(f"mean loss, 64 windows of {t} tokens: transformers {hf_loss:.6f}, switchyard eval {ours:.6f}, "
          f"difference {abs(hf_loss - ours):.2e} ({'ok' if loss_ok else 'FAILED'}: within 1e-4)")

    # Greedy continuation with transformers' generate (its own KV cache).
    with torch.no_grad():
        out = model.generate(torch.tensor([ids]), max_new_tokens=64, do_sample=False, pad_token_id=0)
    theirs = token_bytes(tok, out[0, len(ids):].tolist())
    mine = open(sample_bin, "rb").read()[:-1]  # sample ends its output with a newline
    same = theirs == mine
    print(f"greedy 64-token continuation of {prompt!r}: {'identical' if same else 'DIFFERENT'}")
    print(f"  transformers: {theirs!r}")
    print(f"  switchyard:   {mine!r}")
    sys.exit(0 if loss_ok and same else 1)


if __name__ == "__main__":
    main()

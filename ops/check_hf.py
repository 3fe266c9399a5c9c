"""ops/check-hf's comparison: a Switchyard HF export loaded by transformers, against Switchyard.

usage: check_hf.py HF_DIR CORPUS PROMPT EVAL_JSON SAMPLE_BIN
  EVAL_JSON: the output of `switchyard eval RUN --data CORPUS --windows 64 --json`
  SAMPLE_BIN: the stdout of `switchyard sample RUN --prompt PROMPT --tokens 64 --temperature 0`
Exits 1 when the losses differ by more than 1e-4 or the continuations differ.
"""
import json
import platform
import sys

import torch
import transformers
from transformers import AutoModelForCausalLM, AutoTokenizer


def main():
    hf, corpus, prompt, eval_json, sample_bin = sys.argv[1:6]
    torch.set_num_threads(2)
    model = AutoModelForCausalLM.from_pretrained(hf, torch_dtype=torch.float32)
    model.eval()
    tok = AutoTokenizer.from_pretrained(hf)
    print(f"transformers {transformers.__version__}, torch {torch.__version__}, {platform.processor() or 'cpu'}")
    print(f"loaded {type(model).__name__} ({sum(p.numel() for p in model.parameters())} parameters) from {hf}")

    # The tokenizer maps every byte to its own id.
    ids = tok(prompt, add_special_tokens=False)["input_ids"]
    assert ids == list(prompt.encode()), (ids, list(prompt.encode()))
    assert tok.decode(list(range(32, 127))) == bytes(range(32, 127)).decode()

    # Mean loss over 64 windows, window i at i * (len - T - 1) // 64, as `switchyard eval` defines it.
    data = open(corpus, "rb").read()
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
    theirs = bytes(out[0, len(ids):].tolist())
    mine = open(sample_bin, "rb").read()[:-1]  # sample ends its output with a newline
    same = theirs == mine
    print(f"greedy 64-byte continuation of {prompt!r}: {'identical' if same else 'DIFFERENT'}")
    print(f"  transformers: {theirs!r}")
    print(f"  switchyard:   {mine!r}")
    sys.exit(0 if loss_ok and same else 1)


if __name__ == "__main__":
    main()

"""Opt-in check of `ckpt import --format hf` against transformers (ops/check-hf-import).

usage: check_hf_import.py SWITCHYARD CORPUS WORKDIR

For each family (Mixtral, Qwen3-MoE, OLMoE), transformers makes a tiny model with random weights
(grouped-query attention, the family's q/k norm and top-k rule) and a Switchyard BPE tokenizer
beside it; Switchyard imports it and must give
  - `switchyard eval`'s mean loss over 64 windows equal to transformers' within 1e-4,
  - the same greedy continuation as transformers' generate,
  - every tensor bitwise after exporting it back,
  - a lower loss after fine-tuning under mpirun -np 2 (experts split) for 50 steps,
  - an export of the fine-tuned model that transformers loads with a loss equal to `switchyard eval`.
"""

import json
import os
import shutil
import subprocess
import sys

import torch
from safetensors.torch import load_file
from transformers import (
    AutoModelForCausalLM,
    AutoTokenizer,
    MixtralConfig,
    MixtralForCausalLM,
    OlmoeConfig,
    OlmoeForCausalLM,
    PreTrainedTokenizerFast,
    Qwen3MoeConfig,
    Qwen3MoeForCausalLM,
)

VOCAB, SEQ = 512, 64
COMMON = dict(
    vocab_size=VOCAB, hidden_size=64, num_hidden_layers=2, num_attention_heads=4, num_key_value_heads=2,
    max_position_embeddings=SEQ, rms_norm_eps=1e-6, tie_word_embeddings=False, initializer_range=0.1,
    num_experts_per_tok=2,
)
FAMILIES = {
    "mixtral": lambda: MixtralForCausalLM(
        MixtralConfig(**COMMON, intermediate_size=48, num_local_experts=4, rope_theta=1e6, sliding_window=None)),
    "qwen3_moe": lambda: Qwen3MoeForCausalLM(
        Qwen3MoeConfig(**COMMON, intermediate_size=96, moe_intermediate_size=48, num_experts=4, head_dim=24,
                       norm_topk_prob=False, decoder_sparse_step=1, mlp_only_layers=[], rope_theta=1e6)),
    "olmoe": lambda: OlmoeForCausalLM(
        OlmoeConfig(**COMMON, intermediate_size=48, num_experts=4, norm_topk_prob=False, rope_theta=1e4)),
}
sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import swy  # noqa: E402

ENV = dict(os.environ, OMPI_ALLOW_RUN_AS_ROOT="1", OMPI_ALLOW_RUN_AS_ROOT_CONFIRM="1", OPENBLAS_NUM_THREADS="1")


def sy(*args, mpi=0, raw=False):
    cmd = (["mpirun", "-np", str(mpi), "--oversubscribe", "--bind-to", "none"] if mpi else []) + [SY, *map(str, args)]
    r = subprocess.run(cmd, capture_output=True, env=ENV)
    if r.returncode != 0:
        raise SystemExit(f"{' '.join(cmd)} failed:\n{r.stdout.decode(errors='replace')}\n{r.stderr.decode()}")
    return r.stdout if raw else r.stdout.decode()


def hf_loss(model_dir, tokens):
    """Mean loss over 64 windows, window i at i * (len - T - 1) // 64, as `switchyard eval` defines it."""
    m = AutoModelForCausalLM.from_pretrained(model_dir, dtype=torch.float32).eval()
    total, n = 0.0, 64
    with torch.no_grad():
        for i in range(n):
            o = i * (len(tokens) - SEQ - 1) // n
            w = torch.tensor(tokens[o:o + SEQ + 1])[None]
            logits = m(input_ids=w[:, :-1]).logits.double()
            total += torch.nn.functional.cross_entropy(logits[0], w[0, 1:], reduction="sum").item()
    return m, total / (n * SEQ)


def check_family(family, work, tok_path, data, tokens):
    d = os.path.join(work, family)
    torch.manual_seed(1)
    model = FAMILIES[family]().eval()
    model.save_pretrained(d)
    shutil.copy(tok_path, os.path.join(d, "tokenizer.json"))
    with open(os.path.join(d, "tokenizer_config.json"), "w") as f:
        json.dump({"tokenizer_class": "PreTrainedTokenizerFast"}, f)
    run = os.path.join(work, "runs", family)
    print(sy("ckpt", "import", d, "--format", "hf", "--out", run).splitlines()[0])
    ok = True

    _, theirs = hf_loss(d, tokens)
    ours = json.loads(sy("eval", run, "--data", data, "--windows", 64, "--json"))["meanLoss"]
    ok &= abs(theirs - ours) <= 1e-4
    print(f"  eval over 64 windows: transformers {theirs:.6f}, switchyard {ours:.6f}, |diff| {abs(theirs - ours):.2e}")

    tok = PreTrainedTokenizerFast(tokenizer_file=tok_path)
    prompt = "The secret of life is"
    ids = tok(prompt, add_special_tokens=False)["input_ids"]
    with torch.no_grad():
        out = model.generate(torch.tensor([ids]), max_new_tokens=24, do_sample=False, pad_token_id=0)
    table = swy.byte_decoder()
    theirs_bytes = bytes(table[ch] for t in tok.convert_ids_to_tokens(out[0, len(ids):].tolist()) for ch in t)
    ours_bytes = sy("sample", run, "--prompt", prompt, "--tokens", 24, "--temperature", 0, raw=True)[:-1]
    ok &= theirs_bytes == ours_bytes
    print(f"  greedy 24-token continuation identical: {theirs_bytes == ours_bytes}: {ours_bytes!r}")

    back = os.path.join(work, family + "-back")
    sy("ckpt", "export", run, "--format", "hf", "--out", back)
    a, b = load_file(os.path.join(d, "model.safetensors")), load_file(os.path.join(back, "model.safetensors"))
    same = a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)
    ok &= same
    print(f"  export of the import: {len(b)} tensors, every one bitwise equal: {same}")

    sy("train", run + "/job.json", "--set", f"data.path={data}", "--set", "train.steps=50", "--set", "train.lr=0.003",
       "--set", "train.warmupSteps=5", "--set", "train.evalEvery=0", "--set", "train.logEvery=10",
       "--set", "train.batchSize=8", "--set", "checkpoint.every=50", mpi=2)
    losses = [json.loads(line)["loss"] for line in open(run + "/log.jsonl") if '"event":"step"' in line]
    ok &= losses[-1] < losses[0]
    print(f"  fine-tune np 2, 50 steps (experts split): loss {losses[0]:.4f} -> {losses[-1]:.4f}")

    tuned = os.path.join(work, family + "-tuned")
    sy("ckpt", "export", run, "--format", "hf", "--out", tuned)
    _, theirs = hf_loss(tuned, tokens)
    ours = json.loads(sy("eval", run, "--data", data, "--windows", 64, "--json"))["meanLoss"]
    ok &= abs(theirs - ours) <= 1e-4
    print(f"  fine-tuned export in transformers: {theirs:.6f}, switchyard eval {ours:.6f}, "
          f"|diff| {abs(theirs - ours):.2e}")
    # The export carries the tokenizer: transformers' AutoTokenizer gives Switchyard's ids.
    text_path = os.path.join(work, "text.txt")
    with open(text_path, "w") as f:
        f.write("Hello, world! It's 2026; naïve café 日本 <|endoftext|> done.\n")
    auto = AutoTokenizer.from_pretrained(tuned)
    ids_ok = auto(open(text_path).read(), add_special_tokens=False)["input_ids"] == json.loads(
        sy("tokenizer", "encode", tok_path, text_path, "--json"))["ids"]
    ok &= ids_ok
    print(f"  the export's tokenizer in transformers gives Switchyard's ids: {ids_ok}")
    print(f"{family}: {'PASS' if ok else 'FAIL'}")
    return ok


def main():
    global SY
    SY, corpus, work = sys.argv[1:4]
    torch.set_num_threads(2)
    tok = os.path.join(work, "tokenizer.json")
    sy("tokenizer", "train", corpus, "--vocab", VOCAB, "--out", tok)
    data = os.path.join(work, "data.bin")
    sy("data", "prepare", "--tokenizer", tok, corpus, "--out", data)
    import numpy as np
    tokens = np.fromfile(data, dtype=np.uint16, offset=1024).astype(np.int64).tolist()
    results = [check_family(f, work, tok, data, tokens) for f in FAMILIES]
    print("check-hf-import: " + ("PASS" if all(results) else "FAIL"))
    return 0 if all(results) else 1


if __name__ == "__main__":
    sys.exit(main())

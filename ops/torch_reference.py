#!/usr/bin/env python3
"""The PyTorch eager reference for `ops/bench --compare-torch`: Switchyard's model, optimizer and
data sampling written in plain PyTorch, timed on the same cores. Opt-in only (ops/bench makes its
venv when asked); never used by ops/test or at run time.

Same as Switchyard: byte tokens of the job's text file, the same sample windows (CounterRNG and
BatchSampler reimplemented below, so both read the same batches), learned positions, RMSNorm
(eps 1e-5, weight only), causal multi-head attention without biases (F.scaled_dot_product_attention,
PyTorch's fastest CPU kernel), top-k MoE with renormalised weights and exact-erf GELU experts, the
Switch balance loss (auxLossCoef), final RMSNorm and head, AdamW (beta1, beta2, eps, decoupled
weight decay on matrices and embeddings only), global-norm clipping, warmup + cosine learning rate.
Not the same: the initial weights (drawn by torch), hence the losses after step 0.

With --compile the model runs through torch.compile (inductor, its default mode; the compile
happens in the 2 warmup steps, which are not timed; routing's data-dependent shapes are marked
dynamic so a step's new expert counts do not recompile).

Prints one JSON object: tokensPerSec (mean over the steps after 2 warmup steps), stepMs, losses,
peakRssMB, threads, torch version, compiled.
"""
import argparse
import json
import math
import resource
import time

import torch
import torch.nn.functional as F

M64 = (1 << 64) - 1


def mix(z):
    z = (z + 0x9E3779B97F4A7C15) & M64
    z = ((z ^ (z >> 30)) * 0xBF58476D1CE4E5B9) & M64
    z = ((z ^ (z >> 27)) * 0x94D049BB133111EB) & M64
    return z ^ (z >> 31)


def counter_hash(*keys):
    h = 0x5157495443485944
    for k in keys:
        h = mix(h ^ mix(k & M64))
    return h


# What the reference models; a resolved job asking for anything else is refused, not approximated.
SUPPORTED = {("model", "moeEvery"): 1, ("model", "positions"): "learned", ("model", "ffn"): "gelu",
             ("model", "nSharedExperts"): 0, ("model", "router"): "learned", ("model", "attention"): "mha",
             ("train", "capacityFactor"): 0, ("train", "zLossCoef"): 0, ("train", "routerBiasRate"): 0,
             ("train", "microBatches"): 1, ("train", "topKSchedule"): ""}


def load_job(path):
    """The resolved job (`switchyard train JOB --check --print-job`): every key present, so the
    reference runs Switchyard's defaults, not its own."""
    job = json.load(open(path))
    for (section, key), want in SUPPORTED.items():
        if job[section][key] != want:
            raise SystemExit(f"torch_reference: {section}.{key} = {job[section][key]!r} is not modelled here "
                             f"(only {want!r})")
    return job


class Block(torch.nn.Module):
    def __init__(self, c, h, f, e, k):
        super().__init__()
        self.h, self.k = h, k
        self.norm1 = torch.nn.Parameter(torch.ones(c))
        self.norm2 = torch.nn.Parameter(torch.ones(c))
        self.wq, self.wk, self.wv, self.wo = (torch.nn.Linear(c, c, bias=False) for _ in range(4))
        self.router = torch.nn.Linear(c, e, bias=False)
        self.w1 = torch.nn.Parameter(torch.randn(e, f, c) * 0.02)
        self.w2 = torch.nn.Parameter(torch.randn(e, c, f) * 0.02)

    def forward(self, x):
        b, t, c = x.shape
        a = F.rms_norm(x, (c,), self.norm1, 1e-5)
        q, k, v = (w(a).view(b, t, self.h, c // self.h).transpose(1, 2) for w in (self.wq, self.wk, self.wv))
        y = F.scaled_dot_product_attention(q, k, v, is_causal=True).transpose(1, 2).reshape(b, t, c)
        x = x + self.wo(y)
        z = F.rms_norm(x, (c,), self.norm2, 1e-5).view(b * t, c)
        probs = torch.softmax(self.router(z).float(), dim=-1)
        top_w, top_i = probs.topk(self.k, dim=-1)
        top_w = top_w / top_w.sum(-1, keepdim=True)
        e = probs.shape[1]
        share = torch.bincount(top_i.flatten(), minlength=e).float() / top_i.numel()
        aux = e * (share * probs.mean(0)).sum()
        out = torch.zeros_like(z)
        for ex in range(e):
            rows, slot = (top_i == ex).nonzero(as_tuple=True)
            if rows.numel() == 0:
                continue
            hid = F.gelu(z[rows] @ self.w1[ex].t()) @ self.w2[ex].t()
            out.index_add_(0, rows, hid * top_w[rows, slot].unsqueeze(1))
        return x + out.view(b, t, c), aux


class Model(torch.nn.Module):
    def __init__(self, m):
        super().__init__()
        c = m["nEmbd"]
        self.wte = torch.nn.Parameter(torch.randn(m["vocabSize"], c) * 0.02)
        self.wpe = torch.nn.Parameter(torch.randn(m["seqLen"], c) * 0.02)
        self.blocks = torch.nn.ModuleList(
            Block(c, m["nHead"], m["ffHidden"], m["nExpert"], m["topK"]) for _ in range(m["nLayer"]))
        self.norm = torch.nn.Parameter(torch.ones(c))
        self.head = torch.nn.Linear(c, m["vocabSize"], bias=False)

    def forward(self, x, y):
        h = self.wte[x] + self.wpe[: x.shape[1]]
        aux = 0.0
        for blk in self.blocks:
            h, a = blk(h)
            aux = aux + a
        logits = self.head(F.rms_norm(h, (h.shape[-1],), self.norm, 1e-5))
        return F.cross_entropy(logits.reshape(-1, logits.shape[-1]), y.reshape(-1)), aux / len(self.blocks)


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("job", help="a resolved job: switchyard train JOB --check --print-job > job.json")
    ap.add_argument("--steps", type=int, default=10, help="timed steps after 2 warmup steps")
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--compile", action="store_true", help="run the model through torch.compile")
    args = ap.parse_args()
    torch.set_num_threads(args.threads)
    job = load_job(args.job)
    m, tr = job["model"], job["train"]
    seed, t, bsz = job["seed"], m["seqLen"], tr["batchSize"]
    torch.manual_seed(seed)
    data = open(job["data"]["path"], "rb").read()
    train_end = len(data) - int(len(data) * job["data"]["valFraction"])
    tokens = torch.tensor(list(data), dtype=torch.long)
    model = Model(m)
    run_model = torch.compile(model, dynamic=True) if args.compile else model
    decay = [p for n, p in model.named_parameters() if "norm" not in n]
    no_decay = [p for n, p in model.named_parameters() if "norm" in n]
    lr, min_lr = tr["lr"], tr["minLr"]
    warmup, steps = tr["warmupSteps"], args.steps + 2
    opt = torch.optim.AdamW(
        [{"params": decay, "weight_decay": tr["weightDecay"]}, {"params": no_decay, "weight_decay": 0.0}],
        lr=lr, betas=(tr["beta1"], tr["beta2"]), eps=tr["eps"])
    aux_coef, clip = tr["auxLossCoef"], tr["gradClip"]
    times, losses = [], []
    for step in range(steps):
        t0 = time.perf_counter()
        starts = [(counter_hash(seed, 0x44415441, step, i) * (train_end - t)) >> 64 for i in range(bsz)]
        win = torch.stack([tokens[s : s + t + 1] for s in starts])
        cur = lr * (step + 1) / warmup if step < warmup else (
            min_lr + 0.5 * (lr - min_lr) * (1 + math.cos(math.pi * (step - warmup) / max(steps - warmup, 1))))
        for g in opt.param_groups:
            g["lr"] = cur
        loss, aux = run_model(win[:, :-1], win[:, 1:])
        opt.zero_grad(set_to_none=True)
        (loss + aux_coef * aux).backward()
        if clip > 0:
            torch.nn.utils.clip_grad_norm_(model.parameters(), clip)
        opt.step()
        times.append(time.perf_counter() - t0)
        losses.append(loss.item())
    timed = times[2:]
    print(json.dumps({
        "tokensPerSec": bsz * t * len(timed) / sum(timed), "stepMs": [1000 * s for s in times], "losses": losses,
        "peakRssMB": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024, "threads": args.threads,
        "torch": torch.__version__, "compiled": args.compile}))


if __name__ == "__main__":
    main()

"""An independent Mixtral forward in numpy (float64), written from Hugging Face's
modeling_mixtral.py: RMSNorm, rotate-half RoPE, causal softmax attention, a router softmax over
all experts in full precision, top-k, renormalised weights, SwiGLU experts, lm_head.

Reads a `switchyard ckpt export --format hf` directory (config.json + model.safetensors, parsed
here by hand: an 8-byte header length, a JSON header, raw little-endian data), windows of token
ids and Switchyard's logits for them, and compares.

usage: mixtral_numpy.py HF_DIR WINDOWS.json LOGITS.f32 TOLERANCE
  WINDOWS.json: [[token ids of window 0], ...] (all windows the same length T)
  LOGITS.f32:   Switchyard's logits, float32 [windows, T, vocab], little-endian
prints "ok: max |logit difference| ..." and exits 0 within TOLERANCE, else exits 1.
"""
import json
import struct
import sys

import numpy as np


def read_safetensors(path):
    with open(path, "rb") as f:
        raw = f.read()
    (n,) = struct.unpack("<Q", raw[:8])
    header = json.loads(raw[8 : 8 + n])
    base = 8 + n
    out = {}
    for name, e in header.items():
        if name == "__metadata__":
            continue
        assert e["dtype"] == "F32", (name, e["dtype"])
        b, end = e["data_offsets"]
        out[name] = np.frombuffer(raw[base + b : base + end], dtype="<f4").reshape(e["shape"]).astype(np.float64)
    return out


def rms_norm(x, w, eps):
    return w * (x / np.sqrt(np.mean(x * x, axis=-1, keepdims=True) + eps))


def rotate_half(x):
    half = x.shape[-1] // 2
    return np.concatenate([-x[..., half:], x[..., :half]], axis=-1)


def softmax(x):
    e = np.exp(x - x.max(axis=-1, keepdims=True))
    return e / e.sum(axis=-1, keepdims=True)


def forward(cfg, w, tokens):
    t = len(tokens)
    h, d = cfg["num_attention_heads"], cfg["head_dim"]
    eps, k = cfg["rms_norm_eps"], cfg["num_experts_per_tok"]
    inv_freq = 1.0 / (cfg["rope_theta"] ** (np.arange(0, d, 2) / d))
    freqs = np.arange(t)[:, None] * inv_freq[None, :]
    emb = np.concatenate([freqs, freqs], axis=-1)
    cos, sin = np.cos(emb)[:, None, :], np.sin(emb)[:, None, :]  # [T, 1, D]
    mask = np.triu(np.full((t, t), -np.inf), 1)
    x = w["model.embed_tokens.weight"][tokens]
    for i in range(cfg["num_hidden_layers"]):
        p = f"model.layers.{i}."
        a = rms_norm(x, w[p + "input_layernorm.weight"], eps)
        q = (a @ w[p + "self_attn.q_proj.weight"].T).reshape(t, h, d)
        kk = (a @ w[p + "self_attn.k_proj.weight"].T).reshape(t, h, d)
        v = (a @ w[p + "self_attn.v_proj.weight"].T).reshape(t, h, d)
        q = q * cos + rotate_half(q) * sin
        kk = kk * cos + rotate_half(kk) * sin
        scores = np.einsum("thd,shd->hts", q, kk) / np.sqrt(d) + mask
        y = np.einsum("hts,shd->thd", softmax(scores), v).reshape(t, h * d)
        x = x + y @ w[p + "self_attn.o_proj.weight"].T
        a = rms_norm(x, w[p + "post_attention_layernorm.weight"], eps)
        probs = softmax(a @ w[p + "block_sparse_moe.gate.weight"].T)
        out = np.zeros_like(x)
        for r in range(t):
            top = np.argsort(-probs[r], kind="stable")[:k]
            weights = probs[r, top] / probs[r, top].sum()
            for e, wt in zip(top, weights):
                ex = p + f"block_sparse_moe.experts.{e}."
                g = a[r] @ w[ex + "w1.weight"].T
                u = a[r] @ w[ex + "w3.weight"].T
                out[r] += wt * ((g / (1 + np.exp(-g)) * u) @ w[ex + "w2.weight"].T)
        x = x + out
    return rms_norm(x, w["model.norm.weight"], eps) @ w["lm_head.weight"].T


def main():
    hf, windows_path, logits_path, tol = sys.argv[1], sys.argv[2], sys.argv[3], float(sys.argv[4])
    cfg = json.load(open(hf + "/config.json"))
    assert cfg["model_type"] == "mixtral" and cfg["architectures"] == ["MixtralForCausalLM"], cfg
    w = read_safetensors(hf + "/model.safetensors")
    windows = json.load(open(windows_path))
    t, v = len(windows[0]), cfg["vocab_size"]
    ours = np.fromfile(logits_path, dtype="<f4").reshape(len(windows), t, v)
    worst, loss, count = 0.0, 0.0, 0
    for i, tokens in enumerate(windows):
        ref = forward(cfg, w, np.array(tokens))
        worst = max(worst, float(np.abs(ref - ours[i]).max()))
        logp = ref[:-1] - np.log(np.exp(ref[:-1] - ref[:-1].max(-1, keepdims=True)).sum(-1, keepdims=True)) \
            - ref[:-1].max(-1, keepdims=True)
        loss -= float(logp[np.arange(t - 1), tokens[1:]].sum())
        count += t - 1
    scale = float(np.abs(ours).max())
    verdict = "ok" if worst <= tol else "FAILED"
    print(f"{verdict}: max |logit difference| {worst:.3g} (tolerance {tol:g}, logits up to {scale:.3g}) over "
          f"{len(windows)} windows of {t} tokens; reference next-token loss {loss / count:.6f}")
    sys.exit(0 if worst <= tol else 1)


if __name__ == "__main__":
    main()

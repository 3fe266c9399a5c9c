"""An independent forward of Hugging Face's MoE families in numpy (float64), written from
transformers' modeling_mixtral.py, modeling_qwen3_moe.py and modeling_olmoe.py: RMSNorm,
rotate-half RoPE, causal softmax attention with grouped key/value heads (repeat_kv), the q/k
RMSNorm (Qwen3: per head over head_dim; OLMoE: over the whole q and k projections), a router
softmax over all experts in full precision, top-k, weights renormalised (Mixtral; the others when
norm_topk_prob), SwiGLU experts, lm_head.

Reads a `switchyard ckpt export --format hf` directory (config.json + model.safetensors, parsed
here by hand: an 8-byte header length, a JSON header, raw little-endian data), windows of token
ids and Switchyard's logits for them, and compares.

usage: moe_numpy.py HF_DIR WINDOWS.json LOGITS.f32 TOLERANCE
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


def expert_names(family, p, e):
    """Gate (w1), up (w3) and down (w2) projections of expert e of the block at prefix p."""
    if family == "mixtral":
        ex = p + f"block_sparse_moe.experts.{e}."
        return ex + "w1.weight", ex + "w3.weight", ex + "w2.weight"
    ex = p + f"mlp.experts.{e}."
    return ex + "gate_proj.weight", ex + "up_proj.weight", ex + "down_proj.weight"


def attention(cfg, w, p, a, cos, sin, mask):
    family, t = cfg["model_type"], a.shape[0]
    h, g = cfg["num_attention_heads"], cfg.get("num_key_value_heads") or cfg["num_attention_heads"]
    d, eps = cfg.get("head_dim") or cfg["hidden_size"] // h, cfg["rms_norm_eps"]
    q, kk, v = (a @ w[p + f"self_attn.{n}_proj.weight"].T for n in "qkv")
    if family == "olmoe":  # q_norm / k_norm over the whole projections, before the heads split
        q, kk = rms_norm(q, w[p + "self_attn.q_norm.weight"], eps), rms_norm(kk, w[p + "self_attn.k_norm.weight"], eps)
    q, kk, v = q.reshape(t, h, d), kk.reshape(t, g, d), v.reshape(t, g, d)
    if family == "qwen3_moe":  # per head, over head_dim
        q, kk = rms_norm(q, w[p + "self_attn.q_norm.weight"], eps), rms_norm(kk, w[p + "self_attn.k_norm.weight"], eps)
    q = q * cos + rotate_half(q) * sin
    kk = kk * cos + rotate_half(kk) * sin
    kk, v = np.repeat(kk, h // g, axis=1), np.repeat(v, h // g, axis=1)  # repeat_kv
    scores = np.einsum("thd,shd->hts", q, kk) / np.sqrt(d) + mask
    y = np.einsum("hts,shd->thd", softmax(scores), v).reshape(t, h * d)
    return y @ w[p + "self_attn.o_proj.weight"].T


def moe(cfg, w, p, a):
    family, k = cfg["model_type"], cfg["num_experts_per_tok"]
    renorm = family == "mixtral" or cfg.get("norm_topk_prob", False)
    gate = p + ("block_sparse_moe." if family == "mixtral" else "mlp.") + "gate.weight"
    probs = softmax(a @ w[gate].T)
    out = np.zeros_like(a)
    for r in range(a.shape[0]):
        top = np.argsort(-probs[r], kind="stable")[:k]
        weights = probs[r, top] / probs[r, top].sum() if renorm else probs[r, top]
        for e, wt in zip(top, weights):
            w1, w3, w2 = expert_names(family, p, e)
            gt, up = a[r] @ w[w1].T, a[r] @ w[w3].T
            out[r] += wt * ((gt / (1 + np.exp(-gt)) * up) @ w[w2].T)
    return out


def forward(cfg, w, tokens):
    t, eps = len(tokens), cfg["rms_norm_eps"]
    d = cfg.get("head_dim") or cfg["hidden_size"] // cfg["num_attention_heads"]
    theta = cfg.get("rope_theta") or cfg["rope_parameters"]["rope_theta"]
    inv_freq = 1.0 / (theta ** (np.arange(0, d, 2) / d))
    freqs = np.arange(t)[:, None] * inv_freq[None, :]
    emb = np.concatenate([freqs, freqs], axis=-1)
    cos, sin = np.cos(emb)[:, None, :], np.sin(emb)[:, None, :]  # [T, 1, D]
    mask = np.triu(np.full((t, t), -np.inf), 1)
    x = w["model.embed_tokens.weight"][tokens]
    for i in range(cfg["num_hidden_layers"]):
        p = f"model.layers.{i}."
        x = x + attention(cfg, w, p, rms_norm(x, w[p + "input_layernorm.weight"], eps), cos, sin, mask)
        x = x + moe(cfg, w, p, rms_norm(x, w[p + "post_attention_layernorm.weight"], eps))
    return rms_norm(x, w["model.norm.weight"], eps) @ w["lm_head.weight"].T


def main():
    hf, windows_path, logits_path, tol = sys.argv[1], sys.argv[2], sys.argv[3], float(sys.argv[4])
    cfg = json.load(open(hf + "/config.json"))
    families = {"mixtral": "MixtralForCausalLM", "qwen3_moe": "Qwen3MoeForCausalLM", "olmoe": "OlmoeForCausalLM"}
    assert cfg["architectures"] == [families[cfg["model_type"]]], cfg
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

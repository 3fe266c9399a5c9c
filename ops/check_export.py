#!/usr/bin/env python3
"""Reads a `switchyard ckpt export` file with the safetensors library and numpy, independently
of Switchyard's reader, and checks it against expectations written by the Swift test:
{"name": {"shape": [...], "sum": s, "first": f}, ...}. Exit 0 when everything matches."""
import json
import sys
import numpy as np
from safetensors.numpy import load_file

tensors = load_file(sys.argv[1])
expected = json.load(open(sys.argv[2]))
problems = []
if set(tensors) != set(expected):
    extra, missing = sorted(set(tensors) - set(expected)), sorted(set(expected) - set(tensors))
    problems.append(f"names differ: extra {extra}, missing {missing}")
for name, e in expected.items():
    t = tensors.get(name)
    if t is None:
        continue
    if t.dtype != np.float32:
        problems.append(f"{name}: dtype {t.dtype}")
    if list(t.shape) != e["shape"]:
        problems.append(f"{name}: shape {list(t.shape)} != {e['shape']}")
    s = float(t.astype(np.float64).sum())
    if abs(s - e["sum"]) > 1e-6 * max(1.0, abs(e["sum"])):
        problems.append(f"{name}: sum {s} != {e['sum']}")
    if float(t.reshape(-1)[0]) != e["first"]:
        problems.append(f"{name}: first value {float(t.reshape(-1)[0])} != {e['first']}")
versions = f"safetensors {__import__('safetensors').__version__} + numpy {np.__version__}"
print("\n".join(problems) if problems else f"ok: {len(tensors)} tensors read with {versions}")
sys.exit(1 if problems else 0)

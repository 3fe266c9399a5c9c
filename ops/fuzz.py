#!/usr/bin/env python3
"""Generated bad inputs (ops/test-faults runs the full counts, ops/test a small subset): job files
for `train --check`, mutated checkpoints for `ckpt verify` / `ckpt inspect` / `eval`, mutated logs
for `tail` / `status` / `plot` / `tb`, mutated Hugging Face models (config.json, index, safetensors)
for `ckpt import` and tokenizer.json for `tokenizer encode` / `data prepare`, and random command
lines for every subcommand. Fixed seeds.

Every run must end by itself (no hang) with exit 0, 1 or 64 and no crash (no signal, no Swift
fatal error or backtrace); every rejection (1 or 64) must say why on stderr; every checkpoint
whose bytes changed must fail `ckpt verify`. Prints one line per kind and the first failures.
Standard library only."""
import argparse
import json
import os
import random
import shutil
import subprocess
import sys
import tempfile

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import swy  # noqa: E402

ENV = swy.env(OMPI_MCA_rmaps_base_oversubscribe="1")
CRASH_SIGNS = ("Fatal error", "Stack dump", "Segmentation fault", "Illegal instruction", "backtrace", "SIGSEGV",
               "SIGILL", "SIGABRT", "Current stack trace")


class Tally:
    def __init__(self, kind):
        self.kind, self.runs, self.accepted, self.rejected, self.failures = kind, 0, 0, 0, []

    def add(self, label, ok, why):
        self.runs += 1
        if not ok:
            self.failures.append(f"{label}: {why}")

    def line(self):
        return (f"{self.kind:28} {self.runs:5} runs, {self.accepted:5} accepted, {self.rejected:5} rejected cleanly, "
                f"{len(self.failures)} failures")


def run(binary, args, tally, label, timeout=60, expect_reject=False, cwd=None):
    """Runs the binary; records a failure for a hang, a crash, an exit other than 0/1/64, a
    rejection without a message, or (expect_reject) an acceptance. Returns the exit code."""
    try:
        r = subprocess.run([binary] + args, capture_output=True, timeout=timeout, env=ENV, cwd=cwd)
    except subprocess.TimeoutExpired:
        tally.add(label, False, f"hang: no exit within {timeout} s")
        return None
    err = r.stderr.decode("utf-8", "replace")
    said = (err + r.stdout.decode("utf-8", "replace")).strip()  # ckpt verify reports on stdout
    if r.returncode < 0 or r.returncode >= 128 or any(s in err for s in CRASH_SIGNS):
        tally.add(label, False, f"crash: exit {r.returncode}: {err.strip()[-300:]}")
    elif r.returncode not in (0, 1, 64):
        tally.add(label, False, f"exit {r.returncode}: {err.strip()[-300:]}")
    elif r.returncode != 0 and not said:
        tally.add(label, False, f"exit {r.returncode} without a message")
    elif r.returncode == 0 and expect_reject:
        tally.add(label, False, "accepted a corrupt input")
    else:
        tally.add(label, True, "")
        if r.returncode == 0:
            tally.accepted += 1
        else:
            tally.rejected += 1
    return r.returncode


# ---- job files -------------------------------------------------------------------------------

def base_job(corpus):
    return {
        "name": "fuzz", "seed": 1, "model": {"vocabSize": 256, "seqLen": 16, "nLayer": 1, "nEmbd": 16, "nHead": 2,
                                             "nExpert": 2, "topK": 1, "ffHidden": 16, "moeEvery": 1},
        "data": {"path": corpus, "valFraction": 0.1},
        "train": {"steps": 2, "batchSize": 2, "lr": 0.001, "evalEvery": 0},
        "checkpoint": {"every": 0}, "layout": {"dp": 0, "tp": 1},
    }


ODD_VALUES = [None, True, False, "", "x" * 5000, "1e9", [], {}, [1, 2], 0, -1, -2**31, 2**31, 2**63 - 1, 2**64,
              10**30, 1.5, -0.0, 1e308, -1e308, 5e-324, 3.0, "rope", "moh", "random", "linear", "0:1,3:2", "\u00e9"]


def mutate_job(rng, job):
    """One mutation of the job as text (some produce invalid JSON on purpose)."""
    j = json.loads(json.dumps(job))
    kind = rng.randrange(12)
    sections = [k for k, v in j.items() if isinstance(v, dict)]
    sec = rng.choice(sections)
    if kind == 0 and j[sec]:
        del j[sec][rng.choice(list(j[sec]))]
    elif kind == 1:
        j[sec]["unknown" + str(rng.randrange(99))] = rng.choice(ODD_VALUES)
    elif kind in (2, 3, 4) and j[sec]:
        j[sec][rng.choice(list(j[sec]))] = rng.choice(ODD_VALUES)
    elif kind == 5:
        key = rng.choice(["model.nHead", "model.mohActiveHeads", "model.topK", "train.topKSchedule",
                          "model.attention", "model.router", "train.microBatches", "train.recompute",
                          "layout.tp", "placement", "train.capacityFactor", "model.nSharedExperts"])
        s, k = key.split(".") if "." in key else (None, key)
        (j[s] if s else j)[k] = rng.choice(ODD_VALUES)
    text = json.dumps(j)
    if kind == 6:
        return text[:rng.randrange(len(text))].encode()
    if kind == 7:
        depth = rng.choice([100, 1000, 100000])
        return ('{"model": ' + "[" * depth + "]" * depth + "}").encode()
    if kind == 8:
        b = bytearray(text.encode())
        for _ in range(rng.randrange(1, 4)):
            b[rng.randrange(len(b))] = rng.randrange(256)
        return bytes(b)
    if kind == 9:  # duplicate keys
        return text.replace('"seed": 1', '"seed": 1, "seed": 2', 1).encode()
    if kind == 10:  # non-finite literals (not JSON)
        return text.replace('"lr": 0.001', '"lr": ' + rng.choice(["NaN", "Infinity", "-Infinity", "1e999"])).encode()
    if kind == 11:
        return rng.choice([b"", b"\xff\xfe\x00", b"[]", b"null", b"\"job\"", b"{", b"\xc3\x28"])
    return text.encode()


def jobs(binary, tmp, corpus, count, rng):
    t = Tally("job files (train --check)")
    base = base_job(corpus)
    for i in range(count):
        path = os.path.join(tmp, f"job-{i}.json")
        data = mutate_job(rng, base)
        open(path, "wb").write(data)
        run(binary, ["train", path, "--check"], t, f"job {i} ({data[:80]!r})", timeout=60)
    return t


# ---- checkpoints -----------------------------------------------------------------------------

def mutate_checkpoint(rng, src, dst):
    """Copies checkpoint src to dst with one corruption; returns (whether the bytes changed, what
    was done)."""
    shutil.copytree(src, dst)
    files = sorted(os.listdir(dst))
    shard = os.path.join(dst, rng.choice([f for f in files if f.endswith(".safetensors")]))
    manifest = os.path.join(dst, "manifest.json")
    kind = rng.randrange(9)
    if kind <= 4:
        b = bytearray(open(shard, "rb").read())
        before = bytes(b)
        header = int.from_bytes(b[:8], "little")
        if kind == 0:  # header length
            b[:8] = rng.choice([0, 1, header - 1, header + 1, len(b), 2**63, 2**64 - 1]).to_bytes(8, "little")
        elif kind == 1:  # header bytes (dtype, shapes, offsets, names live here)
            h = b[8:8 + header].decode("utf-8", "replace")
            for old, new in [("F32", rng.choice(["F16", "I32", "F64", "XX"])), ("data_offsets", "data_offsetz"),
                             ('"shape":[', '"shape":[3,'), ('"dtype"', '"dtypo"')]:
                if old in h and rng.random() < 0.5:
                    h = h.replace(old, new, 1)
                    break
            else:
                i = rng.randrange(len(h))
                h = h[:i] + chr(rng.randrange(32, 127)) + h[i + 1:]
            enc = h.encode()[:header].ljust(header, b" ")
            b[8:8 + header] = enc
        elif kind == 2:  # data bits
            for _ in range(rng.randrange(1, 5)):
                i = rng.randrange(8 + header, len(b))
                b[i] ^= 1 << rng.randrange(8)
        elif kind == 3:  # truncation
            b = b[:rng.randrange(len(b))]
        else:  # appended bytes
            b += bytes(rng.randrange(256) for _ in range(rng.randrange(1, 64)))
        open(shard, "wb").write(bytes(b))
        what = ["header length", "header bytes", "data bits", "truncated", "appended bytes"][kind]
        return bytes(b) != before, f"{os.path.basename(shard)}: {what}"
    if kind == 5:  # a deleted or renamed shard
        if rng.random() < 0.5:
            os.remove(shard)
            return True, f"{os.path.basename(shard)} deleted"
        os.rename(shard, shard + ".moved")
        return True, f"{os.path.basename(shard)} renamed"
    text = open(manifest).read()
    m = json.loads(text)
    if kind == 6:  # a tensor field
        t = rng.choice(m["tensors"])
        s = rng.choice(t["slices"])
        field = rng.choice(["shape", "name", "file", "key", "ranges", "crc32c"])
        what = f"manifest: tensor {t['name']} {field}"
        if field == "shape":
            t["shape"][rng.randrange(len(t["shape"]))] += rng.choice([-1, 1, 7])
        elif field == "name":
            t["name"] = rng.choice(["", t["name"] + "x", "layers.99.x"])
        elif field == "ranges":
            r = s["ranges"][rng.randrange(len(s["ranges"]))]
            r[rng.randrange(2)] += rng.choice([-1, 1])
        elif field == "crc32c":
            s["crc32c"] = (s["crc32c"] + 1) % 2**32
        else:
            s[field] = rng.choice(["", "../etc/passwd", "rank-00009.safetensors", s[field] + "x"])
    elif kind == 7:  # top-level fields
        key = rng.choice(["format", "step", "layout", "tensors", "job"])
        m[key] = rng.choice([None, -1, "x", [], {}, 10**20])
        what = f"manifest: {key} = {m[key]!r}"
    else:  # garbled bytes
        b = bytearray(text.encode())
        for _ in range(rng.randrange(1, 4)):
            b[rng.randrange(len(b))] = rng.randrange(256)
        open(manifest, "wb").write(bytes(b))
        return bytes(b) != text.encode(), "manifest: garbled bytes"
    new = json.dumps(m)
    open(manifest, "w").write(new)
    return json.loads(new) != json.loads(text), what


def checkpoints(binary, tmp, corpus, count, rng):
    t = Tally("checkpoints (verify/inspect/eval)")
    job = os.path.join(tmp, "ckpt-job.json")
    j = base_job(corpus)
    j["checkpoint"] = {"every": 2}
    j["runsDir"] = os.path.join(tmp, "runs")
    open(job, "w").write(json.dumps(j))
    subprocess.run([binary, "train", job], check=True, capture_output=True, env=ENV)
    root = os.path.join(tmp, "runs", "fuzz", "checkpoints")
    src = os.path.join(root, open(os.path.join(root, "LATEST")).read().strip())
    for i in range(count):
        dst = os.path.join(tmp, f"ckpt-{i}")
        changed, what = mutate_checkpoint(rng, src, dst)
        label = f"checkpoint {i} ({what})"
        run(binary, ["ckpt", "verify", dst], t, label + " verify", timeout=60, expect_reject=changed)
        if i % 4 == 0:
            run(binary, ["ckpt", "inspect", dst], t, label + " inspect", timeout=60)
            run(binary, ["eval", dst, "--data", corpus, "--windows", "2"], t, label + " eval", timeout=60,
                expect_reject=changed)
        shutil.rmtree(dst)
    return t


# ---- logs ------------------------------------------------------------------------------------

def mutate_log(rng, lines):
    ls = list(lines)
    kind = rng.randrange(8)
    i = rng.randrange(len(ls))
    if kind == 0:
        ls[i] = ls[i][:rng.randrange(len(ls[i]) + 1)]
    elif kind == 1:
        b = bytearray(ls[i].encode())
        for _ in range(rng.randrange(1, 4)):
            b[rng.randrange(len(b))] = rng.randrange(256)
        ls[i] = b.decode("latin-1")
    elif kind == 2:
        ls.insert(i, rng.choice(["garbage", "{}", "[]", "{\"event\": 3}", "{\"event\": \"step\"}", "\x00\x01", "null"]))
    elif kind == 3:
        e = json.loads(ls[i])
        k = rng.choice(list(e))
        e[k] = rng.choice(ODD_VALUES)
        ls[i] = json.dumps(e)
    elif kind == 4:
        e = json.loads(ls[i])
        del e[rng.choice(list(e))]
        ls[i] = json.dumps(e)
    elif kind == 5:
        ls = ls[:i] + ls[i:] + ls[i:]
    elif kind == 6:
        ls = rng.sample(ls, len(ls))
    else:
        ls = [] if rng.random() < 0.5 else [ls[0]]
    return "\n".join(ls) + ("\n" if rng.random() < 0.7 else "")


def logs(binary, tmp, corpus, count, rng):
    t = Tally("logs (tail/status/plot/tb)")
    job = os.path.join(tmp, "log-job.json")
    j = base_job(corpus)
    j["train"].update({"steps": 12, "evalEvery": 4, "logEvery": 1})
    j["checkpoint"] = {"every": 6}
    j["runsDir"] = os.path.join(tmp, "logruns")
    j["name"] = "base"
    open(job, "w").write(json.dumps(j))
    subprocess.run([binary, "train", job], check=True, capture_output=True, env=ENV)
    lines = open(os.path.join(tmp, "logruns", "base", "log.jsonl")).read().splitlines()
    for i in range(count):
        d = os.path.join(tmp, "logruns", f"m{i}")
        os.makedirs(d)
        open(os.path.join(d, "log.jsonl"), "w", encoding="latin-1").write(mutate_log(rng, lines))
        cmd = rng.choice([["tail", d], ["tail", d, "--json"], ["status", d],
                          ["plot", d, "--out", os.path.join(d, "p.svg")],
                          ["plot", d, "--out", os.path.join(d, "p.svg"), "--metric", "expertLoad"],
                          ["plot", d, "--out", os.path.join(d, "p.svg"), "--smooth", "0.9", "--log"], ["tb", d]])
        run(binary, cmd, t, f"log {i} {cmd[0]}", timeout=30)
        shutil.rmtree(d)
    return t


# ---- imported models and tokenizers ----------------------------------------------------------

def hf_model(binary, tmp, corpus):
    """A tiny OLMoE-shaped model exported to Hugging Face's format, with a Switchyard BPE tokenizer."""
    job = os.path.join(tmp, "hf-job.json")
    j = base_job(corpus)
    j["runsDir"] = os.path.join(tmp, "hfruns")
    j["model"].update({"positions": "rope", "ffn": "swiglu", "nKVHead": 1, "qkNorm": "full", "normTopK": False,
                       "family": "olmoe"})
    j["checkpoint"] = {"every": 2}
    open(job, "w").write(json.dumps(j))
    subprocess.run([binary, "train", job], check=True, capture_output=True, env=ENV)
    hf = os.path.join(tmp, "hf")
    subprocess.run([binary, "ckpt", "export", os.path.join(tmp, "hfruns", "fuzz"), "--format", "hf", "--out", hf],
                   check=True, capture_output=True, env=ENV)
    os.remove(os.path.join(hf, "tokenizer.json"))
    tok = os.path.join(hf, "tokenizer.json")
    subprocess.run([binary, "tokenizer", "train", corpus, "--vocab", "300", "--out", tok], check=True,
                   capture_output=True, env=ENV)
    return hf


def mutate_json_file(rng, path):
    """One change to a JSON file: a field deleted, replaced by an odd value, or garbled bytes."""
    text = open(path).read()
    if rng.random() < 0.2:
        b = bytearray(text.encode())
        for _ in range(rng.randrange(1, 4)):
            b[rng.randrange(len(b))] = rng.randrange(256)
        open(path, "wb").write(bytes(b))
        return "garbled bytes"
    doc = json.loads(text)
    node, where = doc, []
    while isinstance(node, (dict, list)) and node and rng.random() < 0.6:
        key = rng.choice(list(node)) if isinstance(node, dict) else rng.randrange(len(node))
        if not isinstance(node[key], (dict, list)) or not node[key]:
            break
        node, where = node[key], where + [key]
    if not isinstance(node, (dict, list)) or not node:
        node = doc
    key = rng.choice(list(node)) if isinstance(node, dict) else rng.randrange(len(node))
    if rng.random() < 0.3:
        del node[key]
        what = f"{where + [key]} deleted"
    else:
        node[key] = rng.choice(ODD_VALUES)
        what = f"{where + [key]} = {node[key]!r}"[:120]
    open(path, "w").write(json.dumps(doc))
    return what


def imports(binary, tmp, corpus, count, rng):
    """ckpt import of mutated config.json, index, safetensors; tokenizer encode and data prepare
    of mutated tokenizer.json."""
    t = Tally("imports and tokenizers")
    src = hf_model(binary, tmp, corpus)
    for i in range(count):
        dst = os.path.join(tmp, f"hf-{i}")
        shutil.copytree(src, dst)
        kind = rng.randrange(4)
        if kind == 0:
            what = "config.json: " + mutate_json_file(rng, os.path.join(dst, "config.json"))
        elif kind == 1:
            what = "tokenizer.json: " + mutate_json_file(rng, os.path.join(dst, "tokenizer.json"))
        elif kind == 2:  # shards: an index over the one file, then mutated
            index = os.path.join(dst, "model.safetensors.index.json")
            names = json.loads(open(os.path.join(src, "model.safetensors"), "rb").read()[8:][
                :int.from_bytes(open(os.path.join(src, "model.safetensors"), "rb").read(8), "little")])
            json.dump({"weight_map": {n: "model.safetensors" for n in names if n != "__metadata__"}}, open(index, "w"))
            what = "index: " + mutate_json_file(rng, index)
        else:
            st = os.path.join(dst, "model.safetensors")
            b = bytearray(open(st, "rb").read())
            header = int.from_bytes(b[:8], "little")
            choice = rng.randrange(3)
            if choice == 0:
                b = b[:rng.randrange(len(b))]
            elif choice == 1:
                dtype = rng.choice(["BF16", "F16", "I8", "F64"])
                h = b[8:8 + header].decode("utf-8", "replace").replace("F32", dtype, 1)
                b[8:8 + header] = h.encode()[:header].ljust(header, b" ")
            else:
                b[:8] = rng.choice([0, header + 9, 2**63]).to_bytes(8, "little")
            open(st, "wb").write(bytes(b))
            what = f"safetensors: {['truncated', 'dtype', 'header length'][choice]}"
        label = f"hf {i} ({what})"
        run(binary, ["ckpt", "import", dst, "--format", "hf", "--out", os.path.join(tmp, f"imp-{i}")], t,
            label + " import", timeout=60)
        if kind == 1:
            tok = os.path.join(dst, "tokenizer.json")
            run(binary, ["tokenizer", "encode", tok, corpus], t, label + " encode", timeout=60)
            run(binary, ["data", "prepare", "--tokenizer", tok, corpus, "--out", os.path.join(dst, "d.bin")], t,
                label + " prepare", timeout=60)
        shutil.rmtree(dst)
        shutil.rmtree(os.path.join(tmp, f"imp-{i}"), ignore_errors=True)
    return t


# ---- command lines ---------------------------------------------------------------------------

def command_lines(binary, tmp, corpus, count, rng):
    t = Tally("command lines")
    job = os.path.join(tmp, "cli-job.json")
    j = base_job(corpus)
    j["runsDir"] = os.path.join(tmp, "cliruns")
    open(job, "w").write(json.dumps(j))
    run_dir = os.path.join(tmp, "cliruns", "fuzz")
    subcommands = {
        "train": [job, "--set", "--threads", "--no-resume", "--resume-from", "--check", "--print-job", "--help"],
        "eval": [run_dir, "--data", "--windows", "--seq", "--top-k", "--json"],
        "sample": [run_dir, "--prompt", "--prompts", "--tokens", "--temperature", "--top-k", "--top-p", "--seed",
                   "--set", "--top-k-experts"],
        "tail": [run_dir, "--json", "--every"], "status": [run_dir],
        "plot": [run_dir, "--out", "--metric", "--smooth", "--log"], "tb": [run_dir],
        "plan": [job, "--cluster", "--set", "--out", "--world", "--load", "cluster/local.json"],
        "ckpt": ["verify", "inspect", "export", run_dir, "--format", "--out", "--tensor", "hf", "flat"],
        "bench": [job, "--steps", "--attention", "--threads", "--sgemm-n"], "calibrate": ["--out", "--threads"],
        "supervise": ["--max-restarts", "--backoff", "--min-ranks", "--"],
        "tokenizer": ["train", "encode", corpus, "--vocab", "--out", "--special", "--json"],
        "data": ["prepare", corpus, "--tokenizer", "--out", "--eot", "--text-key", "--shard-tokens"],
    }
    values = ["", "0", "-1", "1", "2", "9999999999999999999999", "abc", "1.5", "nan", "-", "--", "/nonexistent",
              corpus, job, run_dir, "train.steps=1", "model.nHead=3", "layout.tp=2", "x=y", "\u00e9", "%s%n"]
    for i in range(count):
        sub = rng.choice(list(subcommands))
        args = [sub]
        for _ in range(rng.randrange(0, 6)):
            args.append(rng.choice(subcommands[sub] + values))
        if sub == "supervise":
            args = ["supervise", "--backoff", "0", "--max-restarts", "0"] + args[1:] + ["--", "false"]
        if sub == "train" and "--check" not in args and rng.random() < 0.9:
            args.append("--check")  # keeps most runs short; the rest train 2 tiny steps
        run(binary, args, t, "argv " + " ".join(args), timeout=120)
    return t


def main():
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--bin", default=".build/release/switchyard")
    p.add_argument("--count", type=int, default=1000, help="inputs of each kind (default 1000)")
    p.add_argument("--seed", type=int, default=20261201)
    p.add_argument("--kinds", default="jobs,checkpoints,logs,imports,cli")
    a = p.parse_args()
    binary = os.path.abspath(a.bin)
    tmp = tempfile.mkdtemp(prefix="switchyard-fuzz.")
    try:
        corpus = os.path.join(tmp, "corpus.txt")
        open(corpus, "w").write("the quick brown fox jumps over the lazy dog. " * 40)
        kinds = {"jobs": jobs, "checkpoints": checkpoints, "logs": logs, "imports": imports, "cli": command_lines}
        tallies = []
        for k in a.kinds.split(","):
            tallies.append(kinds[k](binary, tmp, corpus, a.count, random.Random(f"{a.seed}-{k}")))
            print(tallies[-1].line(), flush=True)
        bad = [f for t in tallies for f in t.failures]
        for f in bad[:40]:
            print("  FAIL " + f)
        return 1 if bad else 0
    finally:
        shutil.rmtree(tmp, ignore_errors=True)


if __name__ == "__main__":
    sys.exit(main())

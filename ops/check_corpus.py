"""Opt-in check that a corpus of billions of tokens trains like a small one (ops/check-corpus).

usage: check_corpus.py SWITCHYARD CORPUS WORKDIR [TOKENS]

Trains a 4096-token BPE on CORPUS, prepares it, and writes TOKENS tokens (default 2e9: 4 GB of
uint16) twice: as 100M-token shards and as one file (the same tokens: the prepared corpus
repeated). Trains the same job under mpirun -np 2 on the shards, on the single file, and on a
1 MB file, and prints each run's start-up (launch to the start event), the ranks' peak RSS and
losses. Passes when the shards and the single file give the same losses and each rank's peak
RSS on the shards is within 100 MB of the 1 MB run's.
"""

import json
import os
import subprocess
import sys
import time

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import swy  # noqa: E402

HEADER = 1024
SHARD = 100_000_000


def write_bin(path, body, tokens, first=0):
    """An llm.c uint16 .bin of tokens [first, first + tokens) of `body` (token bytes) repeated."""
    with open(path, "wb") as f:
        header = bytearray(HEADER)
        header[0:12] = (20240520).to_bytes(4, "little") + (1).to_bytes(4, "little") + tokens.to_bytes(4, "little")
        f.write(header)
        at, left = (2 * first) % len(body), 2 * tokens
        while left > 0:
            chunk = body[at:at + left]
            f.write(chunk)
            left -= len(chunk)
            at = 0


def train(sy, job, name, data, work):
    args = swy.mpirun(2) + [sy, "train", job, "--set", f"name={name}", "--set", f"runsDir={work}/runs",
                            "--set", f"data.path={data}", "--threads", "1"]
    t0 = time.time()
    r = subprocess.run(args, capture_output=True, text=True, env=swy.env())
    if r.returncode != 0:
        raise SystemExit(f"{name}: train failed:\n{r.stderr[-2000:]}")
    events = [json.loads(line) for line in open(f"{work}/runs/{name}/log.jsonl")]
    start = next(e for e in events if e["event"] == "start")
    end = next(e for e in events if e["event"] == "end")
    losses = [e["loss"] for e in events if e["event"] == "step"]
    return {"startup": start["time"] - t0, "rss": end["rankPeakRssMB"], "losses": losses}


def main():
    sy, corpus, work = sys.argv[1:4]
    tokens = int(float(sys.argv[4])) if len(sys.argv) > 4 else 2_000_000_000
    tok, small = f"{work}/tok.json", f"{work}/small.bin"
    subprocess.run([sy, "tokenizer", "train", corpus, "--vocab", "4096", "--out", tok], check=True)
    subprocess.run([sy, "data", "prepare", "--tokenizer", tok, corpus, "--out", small], check=True)
    body = open(small, "rb").read()[HEADER:]
    t0 = time.time()
    os.makedirs(f"{work}/shards")
    for i, first in enumerate(range(0, tokens, SHARD)):
        write_bin(f"{work}/shards/train_{i:06d}.bin", body, min(SHARD, tokens - first), first)
    write_bin(f"{work}/one.bin", body, tokens)
    write_bin(f"{work}/mb.bin", body, 500_000)  # 1 MB of tokens
    print(f"wrote {tokens} tokens twice ({4 * tokens / 1e9:.1f} GB) in {time.time() - t0:.0f} s", flush=True)
    job = f"{work}/job.json"
    j = json.load(open(os.path.join(os.path.dirname(__file__), "..", "jobs", "fortunes-mixtral.json")))
    j["model"]["vocabSize"] = 4096
    j["data"] = {"tokenizer": tok, "valFraction": 0.0001}
    j["train"].update({"steps": 30, "evalEvery": 0, "logEvery": 10})
    j["checkpoint"] = {"every": 0}
    json.dump(j, open(job, "w"))
    runs = {
        "shards": train(sy, job, "shards", f"{work}/shards/train_*.bin", work),
        "one file": train(sy, job, "one", f"{work}/one.bin", work),
        "1 MB": train(sy, job, "mb", f"{work}/mb.bin", work),
    }
    for name, r in runs.items():
        print(f"{name:9}: start-up {r['startup']:.2f} s, peak RSS per rank {r['rss']} MB, "
              f"loss {r['losses'][0]:.4f} -> {r['losses'][-1]:.4f}")
    same = runs["shards"]["losses"] == runs["one file"]["losses"]
    rss = all(a - b <= 100 for a, b in zip(runs["shards"]["rss"], runs["1 MB"]["rss"]))
    print(f"shards and one file give the same losses: {same}; each rank's RSS within 100 MB of the 1 MB run: {rss}")
    return 0 if same and rss else 1


if __name__ == "__main__":
    sys.exit(main())

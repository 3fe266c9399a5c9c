#!/usr/bin/env python3
"""The sparse designs of issue 16 side by side on the demo job (ops/bench-designs runs this).

Part "designs": jobs/fortunes-mixtral.json under mpirun -np 2, one run per design, same steps,
seed and data: train loss at steps 0, 100, 300 and the last, val loss at the evals nearest them,
tokens/s (steps after the first, from the end event) and expert load max/mean at the last step;
then the SMoE-Dropout run evaluated with 1, 2, E/2 and E experts per token on the held-out tail.

Part "skew": small.json with skewed routing (train.routerSkew=3) at 2 ranks, static placement
vs re-placement (replan.every=5), each with the balance loss and with aux-loss-free balancing
(auxLossCoef 0, routerBiasRate 0.01): plans adopted and tokens/s over steps 12 to the end.
"""
import argparse
import os
import subprocess
import sys
import tempfile

import swy
from swy import BIN as SY, sets
DESIGNS = [
    ("baseline", []),
    ("MoH (1 shared + 2 of 3 routed heads)",
     ["model.attention=moh", "model.mohSharedHeads=1", "model.mohActiveHeads=2"]),
    ("SMoE-Dropout (random router, k 1->8)",
     ["model.router=random", "train.topKSchedule=linear", "train.auxLossCoef=0"]),
    ("shared expert (1)", ["model.nSharedExperts=1"]),
    ("aux-loss-free (bias 0.001, aux 0)", ["train.routerBiasRate=0.001", "train.auxLossCoef=0"]),
    ("z-loss 0.001", ["train.zLossCoef=0.001"]),
]


def mpirun(np_, args):
    cmd = swy.mpirun(np_, bind_none=False) + [SY, *args, "--threads", "1"]
    print("command:", " ".join(cmd), flush=True)
    subprocess.run(cmd, check=True, stdout=subprocess.DEVNULL, env=swy.env())


events = swy.read_log


def nearest(rows, step, key):
    best = min(rows, key=lambda e: abs(e["step"] - step))
    return best[key], best["step"]


def designs(runs, steps):
    rows = []
    for label, extra in DESIGNS:
        name = "d-" + "".join(c for c in label.split(" ")[0] if c.isalnum())
        mpirun(2, ["train", "jobs/fortunes-mixtral.json", *sets([
            f"runsDir={runs}", f"name={name}", f"train.steps={steps}", "train.logEvery=100000",
            f"checkpoint.every={steps}", *extra])])
        ev = events(os.path.join(runs, name))
        st, evals, end = swy.of_kind(ev, "step"), swy.of_kind(ev, "eval"), swy.of_kind(ev, "end")[-1]
        load = st[-1]["expertLoad"]
        imbalance = max(max(row) / (sum(row) / len(row)) for row in load)
        marks = [0, min(100, steps - 1), min(300, steps - 1), steps - 1]
        rows.append((label, name, [nearest(st, m, "loss")[0] for m in marks],
                     [nearest(evals, m, "valLoss") for m in marks[1:]], end["tokensPerSec"], imbalance,
                     st[-1].get("topK")))
    print()
    print(f"demo job jobs/fortunes-mixtral.json, {steps} steps, mpirun -np 2 x 1 thread, seed 1337; "
          f"{os.cpu_count()} cores: {cpu()}")
    marks = [0, min(100, steps - 1), min(300, steps - 1), steps - 1]
    head = " ".join(f"train@{m:<4}" for m in marks)
    print(f"{'design':40} {head} {'val@99/299/last':>22} {'tok/s':>7} {'vs base':>7} {'load max/mean':>13}")
    base = rows[0][4]
    for label, _, tr, va, tps, imb, k in rows:
        v = "/".join(f"{x[0]:.3f}" for x in va)
        print(f"{label:40} " + " ".join(f"{x:<10.4f}" for x in tr)
              + f" {v:>22} {tps:7.0f} {tps / base:7.2f} {imb:13.2f}" + (f"  (k {k} at the end)" if k else ""))
    smoe = [r for r in rows if r[0].startswith("SMoE")][0]
    base_dir = os.path.join(runs, rows[0][1])
    tail = held_out_tail(runs)
    print()
    print(f"SMoE-Dropout at inference: eval --top-k K on the held-out tail ({tail}, 64 windows of 128)")
    for k in (1, 2, 4, 8):
        print("  " + evaluate(os.path.join(runs, smoe[1]), tail, k))
    print("  baseline (trained at k 2): " + evaluate(base_dir, tail, None))


def held_out_tail(runs):
    data = open("data/fortunes.txt", "rb").read()
    held = int(len(data) * 0.02)  # the demo job's data.valFraction: its last 2% is never trained on
    path = os.path.join(runs, "val-tail.txt")
    open(path, "wb").write(data[len(data) - held:])
    return path


def evaluate(run, data, k):
    args = [SY, "eval", run, "--data", data, "--windows", "64"] + (["--top-k", str(k)] if k else [])
    out = subprocess.run(args, check=True, capture_output=True, text=True, env=swy.env())
    return out.stdout.strip().split(": ", 1)[-1]


def skew(runs, steps):
    print()
    print(f"skewed routing: jobs/small.json, train.routerSkew=3 (stride 2), mpirun -np 2 x 1 thread, {steps} steps, "
          "tokens/s over steps 12 to the end (re-planning time counted)")
    results = []
    for balance in ("balance loss 0.01", "aux-loss-free 0.01"):
        for mode in ("static", "replan"):
            name = f"s-{balance.split()[0]}-{mode}"
            extra = ["train.routerSkew=3", "train.routerSkewStride=2"]
            if balance.startswith("aux"):
                extra += ["train.auxLossCoef=0", "train.routerBiasRate=0.01"]
            if mode == "replan":
                extra += ["replan.every=5", "replan.emaDecay=0.5", "replan.horizon=1000"]
            mpirun(2, ["train", "jobs/small.json", *sets([
                f"runsDir={runs}", f"name={name}", f"train.steps={steps}", "train.logEvery=100000",
                "checkpoint.every=0", "train.evalEvery=0", *extra])])
            ev = events(os.path.join(runs, name))
            st = [e for e in swy.of_kind(ev, "step") if e["step"] >= 12]
            decisions = [e for e in swy.of_kind(ev, "placement") if e.get("phase") == "decision"]
            replan_ms = sum(e["replanMs"] for e in decisions if e["step"] >= 11)
            tokens = sum(e["tokensPerSec"] * e["stepMs"] / 1000 for e in st)
            tps = tokens / ((sum(e["stepMs"] for e in st) + replan_ms) / 1000)
            load = st[-1]["expertLoad"]
            imb = max(max(row) / (sum(row) / len(row)) for row in load)
            adopted = sum(1 for e in decisions if e["adopted"])
            results.append((balance, mode, tps, adopted, len(decisions), imb))
    for balance, mode, tps, adopted, decided, imb in results:
        static = [r[2] for r in results if r[0] == balance and r[1] == "static"][0]
        plans = f"{adopted} of {decided} plans adopted" if mode == "replan" else "no re-planning"
        print(f"  {balance:20} {mode:7} {tps:7.0f} tokens/s ({tps / static:.2f}x static), {plans}, "
              f"load max/mean at the end {imb:.2f}")


def cpu():
    for line in open("/proc/cpuinfo"):
        if line.startswith("model name"):
            return line.split(":", 1)[1].strip()
    return "unknown CPU"


def main():
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--part", choices=["designs", "skew", "all"], default="all")
    p.add_argument("--steps", type=int, default=600, help="demo job steps (default 600, as ops/demo)")
    p.add_argument("--skew-steps", type=int, default=60)
    a = p.parse_args()
    with tempfile.TemporaryDirectory(prefix="switchyard-designs.") as runs:
        if a.part in ("designs", "all"):
            designs(runs, a.steps)
        if a.part in ("skew", "all"):
            skew(runs, a.skew_steps)


if __name__ == "__main__":
    sys.exit(main())

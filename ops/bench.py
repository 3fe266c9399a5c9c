#!/usr/bin/env python3
"""The driver of ops/bench: runs every measurement in one run on this machine and prints one table
(and, with --json FILE, writes it). Rows: jobs/small.json and jobs/medium.json at 1 rank x 1 thread,
1 rank x 2 threads and 2 ranks x 1 thread (mpirun; also with every expert on both ranks); attention
at T = 256, 1024, 4096; checkpoint save throughput against a plain write + fsync of the same bytes.
With --compare-torch, the PyTorch reference (ops/torch_reference.py) runs beside each row with the same
threads in total, eager and through torch.compile; the ratio is against the better of the two.
Standard library only; the switchyard binary must be built (ops/bench builds it)."""
import argparse
import json
import os
import subprocess
import sys
import tempfile

import swy
from swy import BIN


def run(cmd, env=None):
    print("command: " + " ".join(cmd), flush=True)
    out = subprocess.run(cmd, env=swy.env(**(env or {})), capture_output=True, text=True)
    if out.returncode != 0:
        sys.exit(f"ops/bench: command failed ({out.returncode}):\n{out.stdout[-2000:]}\n{out.stderr[-2000:]}")
    return out.stdout


def bench_row(job, threads, steps, tmp, extra=()):
    path = os.path.join(tmp, f"bench-{os.path.basename(job)}-{threads}.json")
    text = run([BIN, "bench", job, "--threads", str(threads), "--steps", str(steps), "--json", path, *extra])
    for line in text.splitlines():
        if line.startswith(("sgemm peak", "  step", "  save of", "    plain O_DIRECT", "  async", "  throughput")):
            print("  " + line.strip())
    return json.load(open(path))


def train_cmd(job, steps, runs, name, sets=()):
    """switchyard train at 1 thread, no checkpoints or eval, logging to runs/name/log.jsonl."""
    return swy.train_args(job, runs, name, steps, ["checkpoint.every=0", *sets])


def run_log(runs, name):
    return swy.read_log(os.path.join(runs, name))


def train_log(job, ranks, steps, tmp, name, sets=()):
    runs = os.path.join(tmp, "runs")
    run(swy.mpirun(ranks) + train_cmd(job, steps, runs, name, sets))
    return run_log(runs, name)


def side_by_side_ones(job, steps, tmp):
    """Two independent 1 rank x 1 thread runs at once, pinned to cores 0 and 1: what this machine's
    two cores give together right now, the ceiling a 2-rank run is measured against in the same run."""
    runs = os.path.join(tmp, "runs")
    procs = []
    for core in (0, 1):
        name = f"pair{core}-{os.path.basename(job)}"
        cmd = ["taskset", "-c", str(core)] + train_cmd(job, steps, runs, name)
        print("command (side by side): " + " ".join(cmd), flush=True)
        procs.append((name, subprocess.Popen(cmd, env=swy.env(),
                                             stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)))
    total = 0.0
    for name, p in procs:
        _, err = p.communicate()
        if p.returncode != 0:
            sys.exit(f"ops/bench: side-by-side run failed ({p.returncode}):\n{err[-2000:]}")
        total += summarise_train(run_log(runs, name))["tokensPerSec"]
    return total


def two_rank_row(job, layout, s, one):
    """A 2 ranks x 1 thread row from summarise_train's `s`; its peak is twice the 1-thread one."""
    return {"job": job, "layout": layout, "tokensPerSec": s["tokensPerSec"],
            "modelGflops": s["tokensPerSec"] * s["flopsPerToken"] / 1e9,
            "peakGflops": 2 * one["sgemmPeakGflops"], "fmaPeakGflops": 2 * one["fmaPeakGflops"],
            "peakRssMB": s["peakRssMB"], "commShare": s["commShare"]}


def summarise_train(events):
    start = swy.first(events, "start")
    steps = [e for e in swy.of_kind(events, "step") if e["step"] >= 2]
    # Re-placement (planning and migration, slowest rank) between timed steps is training time too.
    replans = [e for e in swy.of_kind(events, "placement") if e.get("phase") == "decision" and e["step"] >= 2]
    replan_ms = sum(e["replanMs"] for e in replans)
    secs = (sum(e["stepMs"] for e in steps) + replan_ms) / 1000
    tps = start["tokensPerStep"] * len(steps) / secs
    ranks = len(steps[0]["rankStepMs"])
    comm = sum((e["rankAlltoallvMs"][r] + e["rankAllreduceMs"][r]) / e["rankStepMs"][r]
               for e in steps for r in range(ranks)) / (len(steps) * ranks)
    end = swy.first(events, "end")
    steps_only = start["tokensPerStep"] * len(steps) / (secs - replan_ms / 1000)
    return {"tokensPerSec": tps, "stepMs": 1000 * secs / len(steps), "flopsPerToken": start["flopsPerToken"],
            "replanMs": replan_ms, "migrations": sum(1 for e in replans if e["adopted"]),
            "tokensPerSecStepsOnly": steps_only,
            "parameters": start["parameters"], "peakRssMB": max(end["rankPeakRssMB"]), "commShare": comm,
            "lastLoss": steps[-1]["loss"]}


def memory_rows(job, steps, tmp):
    """Predicted (the start event's estimate for the busiest rank) vs measured peak resident memory
    per rank, and tokens/s, for the memory options at 1 rank (and dp 2 without options)."""
    start_job = json.load(open(job))
    batch = start_job.get("train", {}).get("batchSize", 8)
    cases = [("none", 1, []), ("recompute attention", 1, ["train.recompute=attention"]),
             ("recompute block", 1, ["train.recompute=block"]),
             (f"microBatches 4, batch {4 * batch}", 1, ["train.microBatches=4", f"train.batchSize={4 * batch}"]),
             ("none, dp 2", 2, []), ("shardOptimizer, dp 2", 2, ["train.shardOptimizer=true"]),
             ("none, dp 4 (oversubscribed)", 4, []),
             ("shardOptimizer, dp 4 (oversubscribed)", 4, ["train.shardOptimizer=true"])]
    rows = []
    for i, (label, ranks, sets) in enumerate(cases):
        name = f"mem{i}-" + os.path.basename(job)
        events = train_log(job, ranks, steps, tmp, name, sets)
        start = swy.first(events, "start")
        t = summarise_train(events)
        rows.append({"job": job, "case": label, "ranks": ranks, "tokensPerSec": t["tokensPerSec"],
                     "predictedMB": start["memoryEstimateBytesPerRank"]["total"] / 1e6,
                     "activationsMB": start["memoryEstimateBytesPerRank"]["activations"] / 1e6,
                     "measuredMB": t["peakRssMB"]})
    return rows


def torch_row(python, job, threads, steps, sets=()):
    """The PyTorch reference on the job as train resolves it (every key, Switchyard's defaults), eager
    and compiled: {"eager": ..., "compiled": ..., "tokensPerSec": the better}. A compile that fails
    is reported and left out."""
    resolved = os.path.join(tempfile.mkdtemp(), "job.json")
    json.dump(swy.resolved_job(job, sets), open(resolved, "w"))
    base = [python, "ops/torch_reference.py", resolved, "--steps", str(steps), "--threads", str(threads)]
    out = {"eager": json.loads(run(base).strip().splitlines()[-1])}
    try:
        out["compiled"] = json.loads(run(base + ["--compile"]).strip().splitlines()[-1])
    except SystemExit as e:
        print(f"torch.compile failed on {job} at {threads} thread(s); eager only: {e}", flush=True)
    out["tokensPerSec"] = max(r["tokensPerSec"] for k, r in out.items() if k in ("eager", "compiled"))
    return out


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--json")
    ap.add_argument("--compare-torch", metavar="PYTHON", help="python of a venv with torch")
    ap.add_argument("--steps", type=int, default=10)
    ap.add_argument("--quick", action="store_true", help="small.json only, T up to 1024 (a smoke run)")
    args = ap.parse_args()
    tmp = tempfile.mkdtemp(prefix="switchyard-bench.")
    jobs = ["jobs/small.json"] + ([] if args.quick else ["jobs/medium.json"])
    result = {"rows": [], "attention": [], "machine": {}}
    for job in jobs:
        print(f"== {job}", flush=True)
        ckpt = ["--checkpoints", os.path.abspath("runs")] if job == jobs[0] else []
        one = bench_row(job, 1, args.steps, tmp, ckpt)
        two = bench_row(job, 2, args.steps, tmp, ckpt)
        result["machine"] = {k: one[k] for k in ("cpu", "cores", "blasCore", "blasCoreChosenBy")}
        if "checkpoint" in one:
            result["checkpoint"] = {"1x1": one["checkpoint"], "1x2": two["checkpoint"]}
        dp = summarise_train(train_log(job, 2, args.steps + 2, tmp, "dp2-" + os.path.basename(job)))
        # The same 2 ranks with every expert on both (data-parallel experts: no exchange, a larger allreduce).
        everywhere = "placement=" + json.dumps([[0, 1]] * json.load(open(job))["model"]["nExpert"]).replace(" ", "")
        rep = summarise_train(train_log(job, 2, args.steps + 2, tmp, "rep2-" + os.path.basename(job), [everywhere]))
        # The default placement re-placed from the measured load every 3 steps (migration steps counted).
        moved = summarise_train(train_log(job, 2, args.steps + 2, tmp, "replan2-" + os.path.basename(job),
                                          ["replan.every=3"]))
        pair = side_by_side_ones(job, args.steps + 2, tmp) if (os.cpu_count() or 1) >= 2 else None
        rows = [
            {"job": job, "layout": "1x1", "tokensPerSec": one["tokensPerSec"], "modelGflops": one["modelGflops"],
             "mfu": one["mfu"], "peakGflops": one["sgemmPeakGflops"], "fmaPeakGflops": one["fmaPeakGflops"],
             "peakRssMB": one["trainingPeakRssMB"], "split": one["profiledMsPerStep"]},
            {"job": job, "layout": "1x2", "tokensPerSec": two["tokensPerSec"], "modelGflops": two["modelGflops"],
             "mfu": two["mfu"], "peakGflops": two["sgemmPeakGflops"], "fmaPeakGflops": two["fmaPeakGflops"],
             "peakRssMB": two["trainingPeakRssMB"], "split": two["profiledMsPerStep"]},
            two_rank_row(job, "2x1", dp, one),
            dict(two_rank_row(job, "2x1r", moved, one), replanMs=moved["replanMs"], migrations=moved["migrations"],
                 tokensPerSecStepsOnly=moved["tokensPerSecStepsOnly"]),
            two_rank_row(job, "2x1*", rep, one),
        ]
        if pair:
            for r in rows[2:]:
                r["vsSideBySide"] = r["tokensPerSec"] / pair
            rows[0]["sideBySideTokensPerSec"] = pair
        if args.compare_torch:
            t1 = torch_row(args.compare_torch, job, 1, args.steps)
            t2 = torch_row(args.compare_torch, job, 2, args.steps)
            rows[0]["torch"] = t1
            for r in rows[1:]:
                r["torch"] = t2
        result["rows"] += rows
    result["memory"] = []
    for job in jobs:
        print(f"== memory options: {job}", flush=True)
        result["memory"] += memory_rows(job, args.steps + 2, tmp)
    if not args.quick:
        # Fits 2 ranks on 24 GB only with its options (train.recompute = block, train.microBatches = 4):
        # without them the estimate is 15 GB per rank (switchyard plan says so).
        print("== jobs/wide-batch.json at 2 ranks (3 steps)", flush=True)
        events = train_log("jobs/wide-batch.json", 2, 3, tmp, "wide-batch")
        start = swy.first(events, "start")
        end = swy.first(events, "end")
        steps = swy.of_kind(events, "step")
        result["memory"].append({
            "job": "jobs/wide-batch.json", "case": "block + microBatches 4, dp 2", "ranks": 2,
            "tokensPerSec": steps[-1]["tokensPerSec"],
            "predictedMB": start["memoryEstimateBytesPerRank"]["total"] / 1e6,
            "activationsMB": start["memoryEstimateBytesPerRank"]["activations"] / 1e6,
            "measuredMB": max(end["rankPeakRssMB"])})
    print("== attention: the core alone (B 4), then small.json trained at B 4 (3 steps, 1 rank x 1 thread)", flush=True)
    lengths = [256, 1024] if args.quick else [256, 1024, 4096]
    core = os.path.join(tmp, "attention.json")
    run([BIN, "bench", "jobs/small.json", "--threads", "1", "--attention", ",".join(map(str, lengths)),
         "--json", core])
    core_rows = {r["t"]: r for r in json.load(open(core))["attention"]}
    for t in lengths:
        tr = summarise_train(train_log("jobs/small.json", 1, 3, tmp, f"attn-{t}",
                                       [f"model.seqLen={t}", "train.batchSize=4"]))
        state_mb = 16 * tr["parameters"] / 1e6  # parameters, gradients, two moments (Float32)
        result["attention"].append({"t": t, "forwardMs": core_rows[t]["forwardMs"],
                                    "backwardMs": core_rows[t]["backwardMs"], "trainStepMs": tr["stepMs"],
                                    "peakRssMB": tr["peakRssMB"], "stateMB": state_mb})
    # One peak per thread count for the whole table: the best measured in this run (the machine is
    # noisy; the best is the conservative choice for MFU).
    peaks = {"1x1": max(r["peakGflops"] for r in result["rows"] if r["layout"] == "1x1"),
             "1x2": max(r["peakGflops"] for r in result["rows"] if r["layout"] == "1x2")}
    peaks["2x1"] = peaks["2x1r"] = peaks["2x1*"] = 2 * peaks["1x1"]
    fma = {"1x1": max(r["fmaPeakGflops"] for r in result["rows"] if r["layout"] == "1x1"),
           "1x2": max(r["fmaPeakGflops"] for r in result["rows"] if r["layout"] == "1x2")}
    fma["2x1"] = fma["2x1r"] = fma["2x1*"] = 2 * fma["1x1"]
    for r in result["rows"]:
        r["peakGflops"] = peaks[r["layout"]]
        r["mfu"] = r["modelGflops"] / r["peakGflops"]
        r["fmaPeakGflops"] = fma[r["layout"]]
        r["mfuFma"] = r["modelGflops"] / r["fmaPeakGflops"]
    result["machine"]["sgemmPeak1ThreadGflops"] = peaks["1x1"]
    result["machine"]["sgemmPeak2ThreadsGflops"] = peaks["1x2"]
    result["machine"]["fmaPeak1ThreadGflops"] = fma["1x1"]
    result["machine"]["fmaPeak2ThreadsGflops"] = fma["1x2"]
    report(result, args)
    if args.json:
        json.dump(result, open(args.json, "w"), indent=2)
        print(f"written: {args.json}")


def report(result, args):
    m = result["machine"]
    print(f"\n== ops/bench table: {m['cpu']}, {m['cores']} cores, OpenBLAS core {m['blasCore']} "
          f"(chosen by {m['blasCoreChosenBy']}), "
          f"sgemm peak (n = 2048, best measured in this run) {m['sgemmPeak1ThreadGflops']:.1f} GFLOP/s at 1 thread, "
          f"{m['sgemmPeak2ThreadsGflops']:.1f} at 2; FMA peak (independent FMAs of the widest vectors) "
          f"{m['fmaPeak1ThreadGflops']:.1f} at 1 thread, {m['fmaPeak2ThreadsGflops']:.1f} at 2")
    print("layout RxT = ranks x threads per rank; MFU against the sgemm peak of the cores used, MFU/FMA against "
          "their FMA peak (1x2: the 2-thread peaks; "
          "2x1: twice the 1-thread peak); 2x1 on 2 cores is not oversubscribed; 2x1: the default placement "
          "(experts split over the ranks), 2x1r: that placement re-placed from the measured load every 3 steps "
          "(replan.every = 3; the steps that migrate are counted), 2x1*: every expert on both ranks (data parallel, "
          "no exchange)")
    head = (f"{'job':18} {'RxT':4} {'tokens/s':>9} {'GFLOP/s':>8} {'MFU':>6} {'MFU/FMA':>7} {'peak RSS MB':>12} "
            f"{'vs 1x1':>7}")
    if args.compare_torch:
        head += f" {'eager tok/s':>12} {'compile tok/s':>13} {'vs better':>9}"
    print(head)
    base = {}
    for r in result["rows"]:
        if r["layout"] == "1x1":
            base[r["job"]] = r["tokensPerSec"]
        line = (f"{r['job']:18} {r['layout']:4} {r['tokensPerSec']:9.0f} {r['modelGflops']:8.1f} {r['mfu']:6.3f} "
                f"{r['mfuFma']:7.3f} {r['peakRssMB']:12.0f} {r['tokensPerSec'] / base[r['job']]:7.2f}")
        if "torch" in r:
            t = r["torch"]
            compiled = f"{t['compiled']['tokensPerSec']:13.0f}" if "compiled" in t else f"{'-':>13}"
            line += (f" {t['eager']['tokensPerSec']:12.0f} {compiled} "
                     f"{r['tokensPerSec'] / t['tokensPerSec']:9.2f}")
        print(line)
    for r in result["rows"]:
        if "sideBySideTokensPerSec" in r:
            print(f"  {r['job']}: two 1x1 runs side by side (cores 0 and 1, at once) {r['sideBySideTokensPerSec']:.0f} "
                  f"tok/s together = {r['sideBySideTokensPerSec'] / r['tokensPerSec']:.2f}x the 1x1 row; 2x1, 2x1r, "
                  "2x1* against them: " + ", ".join(f"{x['vsSideBySide']:.2f}" for x in result["rows"]
                                                     if x["job"] == r["job"] and "vsSideBySide" in x))
        if r["layout"] == "2x1r":
            print(f"  {r['job']} 2x1r: {r['migrations']} migration(s); re-placement took {r['replanMs']:.0f} ms of the "
                  f"timed steps (counted above); the steps alone: {r['tokensPerSecStepsOnly']:.0f} tok/s")
    print("time split (profiled pass, ms/step):")
    for r in result["rows"]:
        if "split" in r:
            total = sum(r["split"].values())
            parts = ", ".join(f"{k.split(' (')[0]} {100 * v / total:.1f}%" for k, v in r["split"].items())
            print(f"  {r['job']} {r['layout']}: {parts}")
        else:
            print(f"  {r['job']} {r['layout']}: communication {100 * r['commShare']:.1f}% of step time")
    if args.compare_torch:
        print("torch columns: PyTorch eager and torch.compile (inductor), same model, optimizer and batches; 1x1 vs "
              "torch 1 thread, 1x2, 2x1, 2x1r and 2x1* vs torch 2 threads; 'vs better': Switchyard / the faster of "
              "the two")
    print("attention (B 4): core alone fwd/bwd ms; small.json at that T: step ms, peak RSS, RSS above the "
          "parameters + gradients + moments")
    for a in result["attention"]:
        print(f"  T {a['t']:5}: core {a['forwardMs']:8.1f} / {a['backwardMs']:8.1f} ms; "
              f"step {a['trainStepMs']:9.0f} ms; "
              f"peak RSS {a['peakRssMB']:7.0f} MB ({a['peakRssMB'] - a['stateMB']:7.0f} MB above the state)")
    by_t = {a["t"]: a for a in result["attention"]}
    if 1024 in by_t and 4096 in by_t:
        g = (by_t[4096]["peakRssMB"] - by_t[4096]["stateMB"]) / (by_t[1024]["peakRssMB"] - by_t[1024]["stateMB"])
        print(f"  T 1024 -> 4096: resident memory above the state grows {g:.2f}x (linear: 4x)")
    print("memory per rank: predicted (start event, busiest rank) vs measured peak RSS; 1 thread per rank")
    for r in result.get("memory", []):
        print(f"  {r['job']:18} {r['case']:40} predicted {r['predictedMB']:7.0f} MB (activations "
              f"{r['activationsMB']:6.0f}), measured {r['measuredMB']:7.0f} MB, "
              f"{r['measuredMB'] / r['predictedMB']:5.2f}x; "
              f"{r['tokensPerSec']:7.0f} tok/s")
    for layout, c in result.get("checkpoint", {}).items():
        direct = (f"; vs a plain O_DIRECT write {c['plainDirectWriteSeconds']:.3f} s: {c['directRatio']:.2f}x"
                  if "directRatio" in c else "")
        print(f"checkpoint save ({layout}, small.json; best of 3): {c['bytes'] / 1e6:.1f} MB in "
              f"{c['saveSeconds']:.3f} s vs plain write + fsync {c['plainWriteSeconds']:.3f} s: "
              f"{c['ratio']:.2f}x of the plain write's throughput{direct}")


if __name__ == "__main__":
    main()

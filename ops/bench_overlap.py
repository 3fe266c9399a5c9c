"""Opt-in benchmark of train.overlapReduce (ops/bench-overlap; needs root for cluster/netns).

usage: bench_overlap.py [--job JOB] [--steps N] [--rounds R] [--rates 1gbit,5gbit] [--progress poll|thread]

2 ranks x 1 thread with every expert on both ranks (data-parallel experts: the gradient sum is
the only communication). For each link: loopback (both ranks on this host), then 2 netns nodes
shaped at each rate. Runs without and with overlap alternate R rounds; each run's step time is the
median of its steps after the first two. Prints step ms, exposed all-reduce ms, communication
share without overlap, speed-up, and whether the losses are bitwise equal.
"""
import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import swy  # noqa: E402

NETNS = os.path.abspath("cluster/netns")
PROGRESS = ["poll"]  # SWITCHYARD_MPI_PROGRESS for the ranks (--progress)


def netns_prefix():
    return [NETNS, "run", "--"] + swy.netns_mpirun(2, [
        "--bind-to", "none", "--map-by", "node", "-x", "OMPI_ALLOW_RUN_AS_ROOT", "-x", "OMPI_ALLOW_RUN_AS_ROOT_CONFIRM",
        "-x", "SWITCHYARD_MPI_PROGRESS"])


def run(prefix, job, steps, overlap, work, name):
    experts = json.load(open(job))["model"]["nExpert"]
    placement = json.dumps([[0, 1]] * experts).replace(" ", "")
    args = prefix + swy.train_args(os.path.abspath(job), work, name, steps,
                                   [f"placement={placement}", f"train.overlapReduce={str(overlap).lower()}",
                                    "checkpoint.every=0"], binary=os.path.abspath(swy.BIN))
    r = subprocess.run(args, capture_output=True, text=True, env=swy.env(SWITCHYARD_MPI_PROGRESS=PROGRESS[0]))
    if r.returncode != 0:
        raise SystemExit(f"{name}: train failed:\n{r.stdout[-1500:]}{r.stderr[-1500:]}")
    st = swy.of_kind(swy.read_log(os.path.join(work, name)), "step")[2:]
    return {"stepMs": statistics.median(e["stepMs"] for e in st),
            "allreduceMs": statistics.median(max(e["rankAllreduceMs"]) for e in st),
            "losses": [e["loss"] for e in swy.of_kind(swy.read_log(os.path.join(work, name)), "step")]}


def compare(label, prefix, args, work):
    rows = {False: [], True: []}
    for r in range(args.rounds):
        for overlap in (False, True):
            rows[overlap].append(run(prefix, args.job, args.steps, overlap, work, f"{label}-{overlap}-{r}"))
    off, on = rows[False], rows[True]
    same = all(a["losses"] == b["losses"] for a, b in zip(off, on))
    share = statistics.median(o["allreduceMs"] / o["stepMs"] for o in off)
    def times(rows):
        return " ".join(f"{o['stepMs']:7.1f}" for o in rows)

    def median(rows, key):
        return statistics.median(o[key] for o in rows)

    print(f"{label:>10}  off {times(off)} ms (all-reduce {median(off, 'allreduceMs'):6.1f}, {share:.0%} of the "
          f"step)  on {times(on)} ms (exposed {median(on, 'allreduceMs'):6.1f})  speed-up "
          f"{median(off, 'stepMs') / median(on, 'stepMs'):.2f}x  losses {'bitwise equal' if same else 'DIFFER'}",
          flush=True)
    return same


def main():
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--job", default="jobs/small.json")
    p.add_argument("--steps", type=int, default=8)
    p.add_argument("--rounds", type=int, default=2)
    p.add_argument("--rates", default="1gbit,5gbit")
    p.add_argument("--progress", choices=["poll", "thread"], default="poll",
                   help="how non-blocking sums progress: MPI_Test between work items, or a progress thread")
    args = p.parse_args()
    PROGRESS[0] = args.progress
    cpu = next((line.split(":", 1)[1].strip() for line in open("/proc/cpuinfo") if line.startswith("model name")), "?")
    print(f"== ops/bench-overlap: {args.job}, 2 ranks x 1 thread, every expert on both ranks; {cpu}, "
          f"{os.cpu_count()} cores; {args.steps} steps a run (median of steps 2..), {args.rounds} rounds alternated; "
          f"progress: {args.progress}")
    ok = True
    with tempfile.TemporaryDirectory() as work:
        ok &= compare("loopback", swy.mpirun(2), args, work)
        subprocess.run([NETNS, "up", "2"], check=True, capture_output=True)
        try:
            for rate in args.rates.split(","):
                subprocess.run([NETNS, "rate", rate], check=True, capture_output=True)
                ok &= compare(rate, netns_prefix(), args, work)
        finally:
            subprocess.run([NETNS, "down"], capture_output=True)
    sys.exit(0 if ok else 1)


if __name__ == "__main__":
    main()

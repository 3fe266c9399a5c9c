#!/usr/bin/env python3
"""The driver of ops/test-faults: real faults injected into `mpirun -np 2` training runs of
jobs/tiny.json, each checked against what must happen, printed as one table. Standard library
only; the release binary must be built (ops/test-faults builds it). Exit 0 when every row passes."""
import json
import os
import signal
import subprocess
import sys
import tempfile
import time

BIN = os.path.abspath(".build/release/switchyard")
MPI = ["mpirun", "--bind-to", "none", "-x", "OPENBLAS_NUM_THREADS=1", "-np", "2"]
ENV = dict(os.environ, OMPI_ALLOW_RUN_AS_ROOT="1", OMPI_ALLOW_RUN_AS_ROOT_CONFIRM="1", OPENBLAS_NUM_THREADS="1")


def train_args(tmp, name, steps, *sets):
    args = [BIN, "train", "jobs/tiny.json", "--threads", "1", "--set", f"runsDir={tmp}", "--set", f"name={name}",
            "--set", f"train.steps={steps}", "--set", "train.evalEvery=0", "--set", "train.logEvery=1000"]
    for s in sets:
        args += ["--set", s]
    return args


def events(tmp, name):
    path = os.path.join(tmp, name, "log.jsonl")
    return [json.loads(l) for l in open(path)] if os.path.exists(path) else []


def wait_for_step(tmp, name, step, timeout=120):
    t0 = time.time()
    while time.time() - t0 < timeout:
        if any(e["event"] == "step" and e["step"] >= step for e in events(tmp, name)):
            return True
        time.sleep(0.05)
    return False


def ranks_of(pid):
    out = subprocess.run(["pgrep", "-P", str(pid)], capture_output=True, text=True).stdout
    kids = [int(x) for x in out.split()]
    # Under supervise the launch is mpirun; its children are the ranks.
    nested = [int(x) for k in kids for x in subprocess.run(["pgrep", "-P", str(k)], capture_output=True,
                                                             text=True).stdout.split()]
    return nested or kids


def stopped_rank(tmp):
    p = subprocess.Popen(MPI + train_args(tmp, "stop", 100000, "checkpoint.every=0", "timeouts.collectiveSeconds=5"),
                         env=ENV, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
    wait_for_step(tmp, "stop", 20)
    victim = max(ranks_of(p.pid))
    os.kill(victim, signal.SIGSTOP)
    t0 = time.time()
    try:
        _, err = p.communicate(timeout=60)
    except subprocess.TimeoutExpired:
        os.kill(victim, signal.SIGCONT)
        p.kill()
        return False, "still running 60 s after the stop"
    took = time.time() - t0
    ok = p.returncode != 0 and "no progress from the other rank(s)" in err and took < 30
    return ok, f"exit {p.returncode} {took:.1f} s after SIGSTOP of one rank; message: {'yes' if 'no progress' in err else 'no'}"


def killed_rank_under_supervise(tmp):
    cmd = [BIN, "supervise", "--backoff", "1", "--"] + MPI + train_args(tmp, "kill", 300, "checkpoint.every=25")
    p = subprocess.Popen(cmd, env=ENV, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    wait_for_step(tmp, "kill", 60)
    last_before = max(e["step"] for e in events(tmp, "kill") if e["event"] == "step")
    os.kill(max(ranks_of(p.pid)), signal.SIGKILL)
    try:
        out, _ = p.communicate(timeout=300)
    except subprocess.TimeoutExpired:
        p.kill()
        return False, "supervise still running after 300 s"
    ev = events(tmp, "kill")
    restarts = [e for e in ev if e["event"] == "restart"]
    resumed = [e for e in ev if e["event"] == "start"][-1].get("resumedFrom") or {}
    done = any(e["event"] == "end" for e in ev)
    lost = last_before - resumed.get("step", 0) + 1 if resumed else None
    ok = p.returncode == 0 and len(restarts) == 1 and done and bool(resumed)
    return ok, (f"supervise exit {p.returncode}, {len(restarts)} restart, resumed at step {resumed.get('step')}, "
                f"about {lost} steps redone, completed: {done}")


def straggler(tmp):
    p = subprocess.Popen(MPI + train_args(tmp, "slow", 60, "checkpoint.every=0", "train.stragglerWindow=10",
                                          "model.nEmbd=256", "model.ffHidden=512", "model.seqLen=128"),
                         env=ENV, stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True)
    wait_for_step(tmp, "slow", 1)
    victim = max(ranks_of(p.pid))
    while p.poll() is None:
        try:
            os.kill(victim, signal.SIGSTOP)
            time.sleep(0.05)
            os.kill(victim, signal.SIGCONT)
            time.sleep(0.05)
        except ProcessLookupError:
            break
    warned = [e for e in events(tmp, "slow") if e["event"] == "warning" and e.get("kind") == "straggler"]
    ok = p.returncode == 0 and bool(warned) and all(e["rank"] == 1 for e in warned)
    ratios = ", ".join(f"{e['ratio']:.2f}x" for e in warned)
    return ok, f"exit {p.returncode}; straggler warnings naming rank(s) {sorted({e['rank'] for e in warned})}: {ratios}"


def injected_nan(tmp):
    r = subprocess.run(MPI + train_args(tmp, "nan", 30, "checkpoint.every=10", "train.testNaNStep=12",
                                        "train.testNaNRank=1"), env=ENV, capture_output=True, text=True)
    ev = events(tmp, "nan")
    skipped = [e["step"] for e in ev if e["event"] == "warning" and "non-finite" in e.get("message", "")]
    saves = [e["step"] for e in ev if e["event"] == "checkpoint"]
    verify = subprocess.run([BIN, "ckpt", "verify", os.path.join(tmp, "nan")], env=ENV,
                            capture_output=True, text=True)
    ok = r.returncode == 0 and skipped == [12] and len(saves) == 3 and verify.returncode == 0
    return ok, f"exit {r.returncode}; skipped steps {skipped}; saves {saves}; ckpt verify exit {verify.returncode}"


def too_big(tmp):
    t0 = time.time()
    r = subprocess.run(MPI + train_args(tmp, "big", 10, "model.nEmbd=65536", "model.nHead=1"), env=ENV,
                       capture_output=True, text=True, timeout=120)
    took = time.time() - t0
    lines = [l for l in r.stderr.splitlines() if l.startswith("switchyard: error")]
    ok = r.returncode != 0 and len(lines) == 1 and "the job needs about" in lines[0] and "Fatal" not in r.stderr
    return ok, f"exit {r.returncode} in {took:.1f} s; {len(lines)} error line; nothing allocated"


def main():
    tmp = tempfile.mkdtemp(prefix="switchyard-faults.")
    rows = [
        ("a rank stops (SIGSTOP)", "the job ends non-zero within the deadline, naming the call", stopped_rank),
        ("a rank is killed (SIGKILL), supervised", "restart, resume from the checkpoint, complete", killed_rank_under_supervise),
        ("a rank is slowed (50% SIGSTOP)", "a straggler warning names rank 1", straggler),
        ("a NaN gradient on rank 1 at step 12", "one skipped step everywhere, checkpoints verify", injected_nan),
        ("a model too big for memory", "one line, exit 1 on every rank, nothing allocated", too_big),
    ]
    results = []
    for fault, expect, fn in rows:
        print(f"== {fault}", flush=True)
        try:
            ok, seen = fn(tmp)
        except Exception as e:  # a harness failure is a failed row, never a crash of the suite
            ok, seen = False, f"harness error: {e}"
        results.append((fault, expect, ok, seen))
    print("\n== ops/test-faults (mpirun -np 2, jobs/tiny.json)")
    print(f"{'fault':40} {'pass':5} {'expected':58} observed")
    for fault, expect, ok, seen in results:
        print(f"{fault:40} {'yes' if ok else 'NO':5} {expect:58} {seen}")
    sys.exit(0 if all(r[2] for r in results) else 1)


if __name__ == "__main__":
    main()

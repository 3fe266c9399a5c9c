#!/usr/bin/env python3
"""The driver of ops/test-faults: real faults injected into `mpirun -np 2` training runs of
jobs/tiny.json (and a 2-node cluster of network namespaces), each checked against what must
happen, printed as one table: times injected, runs recovered, steps of work lost, seconds to
detect. Then the generated bad inputs of ops/fuzz.py. Standard library only; the release binary
must be built (ops/test-faults builds it). Exit 0 when every row passes."""
import json
import re
import os
import signal
import subprocess
import sys
import tempfile
import time
import random
import shutil

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import fuzz  # noqa: E402
import swy  # noqa: E402

BIN = os.path.abspath(swy.BIN)
MPI = swy.mpirun(2)
ENV = swy.env()


def train_args(tmp, name, steps, *sets):
    """jobs/tiny.json into tmp/name; resumes (no --no-resume: the faults test resuming)."""
    return swy.train_args("jobs/tiny.json", tmp, name, steps, sets, binary=BIN, extra=())


def events(tmp, name):
    return swy.read_log(os.path.join(tmp, name))


def wait_for_step(tmp, name, step, timeout=120):
    t0 = time.time()
    while time.time() - t0 < timeout:
        if any(e["step"] >= step for e in swy.of_kind(events(tmp, name), "step")):
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


def rank_of(pid):
    """The MPI rank of a rank process, from the launcher's environment (-1 when unreadable)."""
    try:
        env = open(f"/proc/{pid}/environ", "rb").read().split(b"\0")
    except OSError:
        return -1
    rank = [v.split(b"=", 1)[1] for v in env if v.startswith(b"OMPI_COMM_WORLD_RANK=")]
    return int(rank[0]) if rank else -1


def names(text, rank):
    """Whether a deadline message names `rank` as the one waited for."""
    return re.search(rf"no progress from rank\(s\) ([0-9, ]*\b{rank}\b)", text) is not None


def stopped_rank(tmp):
    p = subprocess.Popen(MPI + train_args(tmp, "stop", 100000, "checkpoint.every=0", "timeouts.collectiveSeconds=5"),
                         env=ENV, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
    wait_for_step(tmp, "stop", 20)
    victim = max(ranks_of(p.pid))
    rank = rank_of(victim)
    os.kill(victim, signal.SIGSTOP)
    t0 = time.time()
    try:
        _, err = p.communicate(timeout=60)
    except subprocess.TimeoutExpired:
        os.kill(victim, signal.SIGCONT)
        p.kill()
        return False, "still running 60 s after the stop"
    took = time.time() - t0
    ok = p.returncode != 0 and names(err, rank) and took < 30
    named = "yes" if names(err, rank) else "no"
    return ok, f"exit {p.returncode} {took:.1f} s after SIGSTOP of rank {rank}; named: {named}"


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
    warned = [e for e in swy.of_kind(events(tmp, "slow"), "warning") if e.get("kind") == "straggler"]
    ok = p.returncode == 0 and bool(warned) and all(e["rank"] == 1 for e in warned)
    ratios = ", ".join(f"{e['ratio']:.2f}x" for e in warned)
    return ok, f"exit {p.returncode}; straggler warnings naming rank(s) {sorted({e['rank'] for e in warned})}: {ratios}"


def injected_nan(tmp):
    r = subprocess.run(MPI + train_args(tmp, "nan", 30, "checkpoint.every=10", "train.testNaNStep=12",
                                        "train.testNaNRank=1"), env=ENV, capture_output=True, text=True)
    ev = events(tmp, "nan")
    skipped = [e["step"] for e in swy.of_kind(ev, "warning") if e.get("kind") == "nonFiniteStep"]
    saves = [e["step"] for e in swy.of_kind(ev, "checkpoint")]
    verify = subprocess.run([BIN, "ckpt", "verify", os.path.join(tmp, "nan")], env=ENV,
                            capture_output=True, text=True)
    ok = r.returncode == 0 and skipped == [12] and len(saves) == 3 and verify.returncode == 0
    return ok, f"exit {r.returncode}; skipped steps {skipped}; saves {saves}; ckpt verify exit {verify.returncode}"


def too_big(tmp):
    t0 = time.time()
    r = subprocess.run(MPI + train_args(tmp, "big", 10, "model.nEmbd=65536", "model.nHead=1"), env=ENV,
                       capture_output=True, text=True, timeout=120)
    took = time.time() - t0
    lines = [line for line in r.stderr.splitlines() if line.startswith("switchyard: error")]
    ok = r.returncode != 0 and len(lines) == 1 and "the job needs about" in lines[0] and "Fatal" not in r.stderr
    return ok, f"exit {r.returncode} in {took:.1f} s; {len(lines)} error line; nothing allocated"




class Row:
    """One line of the table."""

    def __init__(self, fault, expect):
        self.fault, self.expect = fault, expect
        self.injected = self.recovered = 0
        self.lost = []  # steps of work redone per fault
        self.detect = []  # seconds from the fault to the job's end
        self.ok, self.note = True, ""

    def fail(self, why):
        self.ok = False
        self.note = (self.note + "; " if self.note else "") + why


def launch_log(tmp, name):
    """Events of the newest launch (after the last start event)."""
    ev = events(tmp, name)
    starts = [i for i, e in enumerate(ev) if e["event"] == "start"]
    return ev[starts[-1]:] if starts else []


def starts(tmp, name):
    """Launches so far (start events in the log)."""
    return len(swy.of_kind(events(tmp, name), "start"))


def last_step(tmp, name):
    steps = [e["step"] for e in swy.of_kind(launch_log(tmp, name), "step")]
    return max(steps) if steps else -1


def final_crcs(tmp, name):
    """(tensor, slice file, crc32c) of the run's newest checkpoint: parameters and both moments."""
    root = os.path.join(tmp, name, "checkpoints")
    m = json.load(open(os.path.join(root, open(os.path.join(root, "LATEST")).read().strip(), "manifest.json")))
    return m["step"], sorted((t["name"], s["file"], s["crc32c"]) for t in m["tensors"] for s in t["slices"])


def supervised(tmp, name, steps, faults, row, signal_kind, *sets, reference=None, deadline=None, named=False):
    """A supervised run of `steps` steps with `faults` injections of `signal_kind` into a random
    rank at random steps (seeded); fills `row`. With `reference`, the final checkpoint must equal
    it bitwise (parameters and moments, through the manifest's checksums). With `named`, each
    job's deadline message must name the rank hit."""
    rng = random.Random(f"faults-{name}")
    out_path = os.path.join(tmp, name + ".out")
    out = open(out_path, "w")
    cmd = [BIN, "supervise", "--backoff", "1", "--max-restarts", "3", "--"] + MPI + train_args(
        tmp, name, steps, *sets)
    p = subprocess.Popen(cmd, env=ENV, stdout=out, stderr=subprocess.STDOUT, text=True)
    every = steps // (faults + 1)
    for k in range(faults):
        target = rng.randrange(k * every + every // 2, (k + 1) * every + every // 2)
        t0 = time.time()
        while last_step(tmp, name) < target and p.poll() is None and time.time() - t0 < 300:
            time.sleep(0.02)
        before = last_step(tmp, name)
        victims = ranks_of(p.pid)
        if not victims or p.poll() is not None:
            row.fail(f"no ranks to hit at fault {k + 1}")
            break
        victim = rng.choice(victims)
        rank = rank_of(victim)
        os.kill(victim, signal_kind)
        row.injected += 1
        hit = time.time()
        ended = k + 1
        while open(out_path).read().count("restarting in") < ended and time.time() - hit < 120:
            time.sleep(0.05)
        row.detect.append(time.time() - hit)
        if deadline is not None and row.detect[-1] > deadline:
            row.fail(f"fault {k + 1} took {row.detect[-1]:.1f} s to end the job")
        said = open(out_path).read().split("restarting in")[k]
        if named and not names(said, rank):
            row.fail(f"fault {k + 1}: the deadline message does not name rank {rank}")
        while starts(tmp, name) <= k + 1 and p.poll() is None and time.time() - hit < 120:
            time.sleep(0.05)  # until the relaunch's start event (launch k + 2) is in the log
        resumed = (launch_log(tmp, name)[0].get("resumedFrom") or {}).get("step", 0) if launch_log(tmp, name) else 0
        row.lost.append(before + 1 - resumed)
    try:
        p.wait(timeout=600)
    except subprocess.TimeoutExpired:
        p.kill()
        row.fail("supervise still running after 600 s")
    out.close()
    restarts = swy.of_kind(events(tmp, name), "restart")
    done = any(e.get("reason") == "completed" for e in swy.of_kind(launch_log(tmp, name), "end"))
    row.recovered = len(restarts) if p.returncode == 0 and done else 0
    if p.returncode != 0 or not done or len(restarts) != row.injected:
        row.fail(f"supervise exit {p.returncode}, {len(restarts)} restarts for {row.injected} faults, "
                 f"completed: {done}")
    if reference is not None and final_crcs(tmp, name) != reference:
        row.fail("final parameters and moments differ from the uninterrupted run")
    elif reference is not None:
        row.note = ((row.note + "; " if row.note else "")
                    + "final parameters and moments bitwise the uninterrupted run's")


def kills(tmp):
    row = Row("SIGKILL a rank at a random step (x10), supervised", "restart, resume, final state bitwise")
    # tiny trains ~130 steps/s at np 2 here: 3000 steps leave room for 10 kills and restarts.
    ref = subprocess.run(MPI + train_args(tmp, "kill-ref", 3000, "checkpoint.every=100"), env=ENV,
                         capture_output=True)
    if ref.returncode != 0:
        row.fail("the uninterrupted run failed")
        return row
    supervised(tmp, "kill10", 3000, 10, row, signal.SIGKILL, "checkpoint.every=100",
               reference=final_crcs(tmp, "kill-ref"))
    if row.lost and max(row.lost) > 100:
        row.fail(f"lost {max(row.lost)} steps, more than checkpoint.every = 100")
    return row


def stops(tmp):
    row = Row("SIGSTOP a rank at a random step (x5), supervised", "ends within deadline + 10 s, run completes")
    supervised(tmp, "stop5", 1500, 5, row, signal.SIGSTOP, "checkpoint.every=100", "timeouts.collectiveSeconds=5",
               deadline=5 + 10, named=True)
    if row.ok:
        row.note = "each deadline message named the stopped rank"
    return row


def kills_during_saves(tmp):
    row = Row("SIGKILL during checkpoint writes (x20)", "every kept checkpoint verifies, resume works")
    rng = random.Random("saves")
    newest = -1
    for k in range(20):
        p = subprocess.Popen(MPI + train_args(tmp, "saves", 100000, "checkpoint.every=1"), env=ENV,
                             stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        time.sleep(1.0 + rng.random())
        victims = ranks_of(p.pid)
        os.kill(rng.choice(victims) if victims else p.pid, signal.SIGKILL)
        hit = time.time()
        p.wait(timeout=60)
        row.injected += 1
        row.detect.append(time.time() - hit)
        root = os.path.join(tmp, "saves", "checkpoints")
        kept = sorted(d for d in os.listdir(root) if d.startswith("step-") and d[5:].isdigit()) \
            if os.path.isdir(root) else []
        bad = [d for d in kept if subprocess.run([BIN, "ckpt", "verify", os.path.join(root, d)], env=ENV,
                                                capture_output=True).returncode != 0]
        if bad:
            row.fail(f"round {k}: {bad} do not verify")
        if kept:
            step = int(kept[-1][5:])
            if step < newest:
                row.fail(f"round {k}: newest checkpoint went back from {newest} to {step}")
            newest = max(newest, step)
            row.recovered += 1
    r = subprocess.run(MPI + train_args(tmp, "saves", newest + 1, "checkpoint.every=1"), env=ENV, capture_output=True,
                       text=True)
    if r.returncode != 0 or "resumed from" not in r.stdout:
        row.fail(f"resume after the kills: exit {r.returncode}")
    row.note = f"newest checkpoint step {newest} after 20 kills; resume exit {r.returncode}"
    return row


def disk_full(tmp):
    row = Row("disk full during a save", "clear message, previous checkpoint verifies")
    mnt = os.path.join(tmp, "small-disk")
    os.makedirs(mnt)
    if subprocess.run(["mount", "-t", "tmpfs", "-o", "size=6m", "tmpfs", mnt], capture_output=True).returncode != 0:
        row.note = "skipped: cannot mount a tmpfs (needs root)"
        return row
    try:
        r = subprocess.run(MPI + train_args(mnt, "full", 12, "checkpoint.every=2", "checkpoint.keep=5"), env=ENV,
                           capture_output=True, text=True)
        row.injected = 1
        root = os.path.join(mnt, "full", "checkpoints")
        kept = sorted(d for d in os.listdir(root) if d.startswith("step-") and d[5:].isdigit()) \
            if os.path.isdir(root) else []
        ok = all(subprocess.run([BIN, "ckpt", "verify", os.path.join(root, d)], env=ENV,
                                capture_output=True).returncode == 0 for d in kept)
        said = "disk is full" in r.stdout + r.stderr or "No space left" in r.stdout + r.stderr
        if r.returncode != 1 or not kept or not ok or not said or "Fatal" in r.stderr:
            row.fail(f"exit {r.returncode}, {len(kept)} kept, verify {ok}, message {said}")
        else:
            row.recovered = 1
            row.note = f"exit 1 with the message; {len(kept)} earlier checkpoints verify"
    finally:
        subprocess.run(["umount", mnt], capture_output=True)
    return row


NETNS = os.path.abspath("cluster/netns")


def two_nodes(tmp, name, supervise, steps, *sets):
    cmd = ([NETNS, "run", "--", BIN, "supervise", *supervise, "--"]
           + swy.netns_mpirun(4, ["--mca", "mpi_yield_when_idle", "1"])
           + train_args(tmp, name, steps, "layout.tp=2", *sets))
    out = open(os.path.join(tmp, name + ".out"), "w")
    return subprocess.Popen(cmd, env=ENV, stdout=out, stderr=subprocess.STDOUT, text=True)


def on_two_nodes(tmp, row, name, supervise, sets, inject, restore=None):
    """A supervised 4-rank run on two netns nodes: `inject` after step 25, `restore` once the
    job has ended; fills row (detect = fault to the job's end). Returns the newest launch's events."""
    if subprocess.run([NETNS, "check"], capture_output=True).returncode != 0:
        row.note = "skipped: no network namespaces here"
        return None
    subprocess.run([NETNS, "up", "2"], check=True, capture_output=True)
    try:
        p = two_nodes(tmp, name, supervise, 60, *sets)
        wait_for_step(tmp, name, 25, timeout=240)
        before = last_step(tmp, name)
        inject()
        hit = time.time()
        row.injected = 1
        while "restarting in" not in open(os.path.join(tmp, name + ".out")).read() and time.time() - hit < 60:
            time.sleep(0.05)
        row.detect.append(time.time() - hit)
        if restore:
            restore()
        p.wait(timeout=300)
        launch = launch_log(tmp, name)
        row.lost.append(before + 1 - (launch[0].get("resumedFrom") or {}).get("step", 0))
        done = any(e.get("reason") == "completed" for e in swy.of_kind(launch, "end"))
        if p.returncode == 0 and done:
            row.recovered = 1
        else:
            row.fail(f"supervise exit {p.returncode}, completed {done}")
        return launch
    finally:
        subprocess.run([NETNS, "down"], capture_output=True)


def cut_link(tmp):
    row = Row("a cut link between 2 netns nodes", "ends within deadline + 10 s; resumes with the link back")
    link = ["ip", "-n", "sy-node1", "link", "set", "syv1"]
    on_two_nodes(tmp, row, "cut", ["--backoff", "8"], ["checkpoint.every=10", "timeouts.collectiveSeconds=5"],
                 lambda: subprocess.run(link + ["down"], check=True),
                 lambda: subprocess.run(link + ["up"], check=True))
    if row.detect and row.detect[-1] > 15:
        row.fail(f"the job ended {row.detect[-1]:.1f} s after the cut")
    said = open(os.path.join(tmp, "cut.out")).read().split("restarting in")[0]
    if row.detect and not (names(said, 2) and names(said, 3) and "on sy-node1: no heartbeat" in said):
        row.fail("no deadline message names node sy-node1's ranks 2 and 3")
    elif row.detect:
        row.note = "named ranks 2, 3 on sy-node1"
    return row


def node_lost(tmp):
    row = Row("a node lost for good (4 ranks on 2 netns nodes)", "supervise --min-ranks 2 relaunches at world 2")

    def kill_node():
        for pid in subprocess.run(["ip", "netns", "pids", "sy-node1"], capture_output=True, text=True).stdout.split():
            os.kill(int(pid), signal.SIGKILL)
        subprocess.run(["ip", "netns", "del", "sy-node1"], check=True)

    launch = on_two_nodes(tmp, row, "lost", ["--min-ranks", "2", "--backoff", "1", "--probe-timeout", "20"],
                          ["checkpoint.every=10", "timeouts.collectiveSeconds=10"], kill_node)
    if launch and launch[0].get("world") != 2:
        row.fail(f"relaunched at world {launch[0].get('world')}, not 2")
    elif launch:
        row.note = "relaunched at world 2 on sy-node0"
    return row


def single(fn, fault, expect):
    """Wraps the one-shot rows (ok, seen) into a Row."""
    def make(tmp):
        print(f"   {fault}", flush=True)
        row = Row(fault, expect)
        ok, seen = fn(tmp)
        row.injected, row.recovered, row.note = 1, 1 if ok else 0, seen
        if not ok:
            row.ok = False
        return row
    make.__name__ = fn.__name__
    return make


def fuzz_rows(tmp, count):
    rows = []
    corpus = os.path.join(tmp, "fuzz-corpus.txt")
    open(corpus, "w").write("the quick brown fox jumps over the lazy dog. " * 40)
    for kind, fn in [("jobs", fuzz.jobs), ("checkpoints", fuzz.checkpoints), ("logs", fuzz.logs),
                     ("cli", fuzz.command_lines)]:
        d = os.path.join(tmp, "fuzz-" + kind)
        os.makedirs(d)
        t = fn(BIN, d, corpus, count, random.Random(f"20261201-{kind}"))
        row = Row(f"generated bad inputs: {t.kind}", "no crash or hang; clear rejection; corruption detected")
        row.injected, row.recovered = t.runs, t.runs - len(t.failures)
        row.note = f"{t.accepted} accepted, {t.rejected} rejected cleanly, {len(t.failures)} failures"
        if t.failures:
            row.fail("; ".join(t.failures[:3]))
        rows.append(row)
    return rows


def main():
    quick = "--quick" in sys.argv
    only = next((a.split("=", 1)[1].split(",") for a in sys.argv if a.startswith("--only=")), None)
    tmp = tempfile.mkdtemp(prefix="switchyard-faults.")
    makers = [
        single(stopped_rank, "a rank stops (SIGSTOP), unsupervised", "ends non-zero within the deadline"),
        kills, stops, kills_during_saves, disk_full,
        single(straggler, "a rank is slowed (50% SIGSTOP)", "a straggler warning names rank 1"),
        single(injected_nan, "a NaN gradient on rank 1 at step 12", "one skipped step, checkpoints verify"),
        single(too_big, "a model too big for memory", "one line, exit 1 on every rank"),
        cut_link, node_lost,
    ]
    rows = []
    for make in makers:
        if only is not None and make.__name__ not in only:
            continue
        print(f"== {make.__name__}", flush=True)
        try:
            rows.append(make(tmp))
        except Exception as e:  # a harness failure is a failed row, never a crash of the suite
            r = Row(make.__name__, "")
            r.fail(f"harness error: {e}")
            rows.append(r)
    if only is None or "fuzz" in only:
        print("== generated bad inputs", flush=True)
        rows += fuzz_rows(tmp, 100 if quick else 1000)
    print(f"\n== ops/test-faults (mpirun -np 2, jobs/tiny.json; {os.cpu_count()} cores)")
    print(f"{'fault':52} {'pass':4} {'injected':>8} {'recovered':>9} {'lost steps':>10} {'detect s':>8}  observed")
    for r in rows:
        lost = str(max(r.lost)) if r.lost else "-"
        det = f"{max(r.detect):.1f}" if r.detect else "-"
        print(f"{r.fault:52} {'yes' if r.ok else 'NO':4} {r.injected:8} {r.recovered:9} {lost:>10} {det:>8}  {r.note}")
    shutil.rmtree(tmp, ignore_errors=True)
    sys.exit(0 if all(r.ok for r in rows) else 1)


if __name__ == "__main__":
    main()

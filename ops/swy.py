"""Shared by the Python in ops/ (bench, bench_designs, bench_skew, bench_overlap, faults, fuzz): the binary, the
environment every launch gets, mpirun and train command lines, and a run directory's log and
resolved job. The log's event kinds and keys are Switchyard's (Sources/RunEvents): scripts read
them from the events, never from the human-readable lines. Standard library only."""
import json
import os
import subprocess

BIN = ".build/release/switchyard"

# mpirun as root needs the first two; every rank runs OpenBLAS single-threaded (the rank's own
# threads are Switchyard's --threads).
LAUNCH_ENV = {"OMPI_ALLOW_RUN_AS_ROOT": "1", "OMPI_ALLOW_RUN_AS_ROOT_CONFIRM": "1", "OPENBLAS_NUM_THREADS": "1"}


def env(**extra):
    """os.environ with LAUNCH_ENV and `extra`."""
    return dict(os.environ, **LAUNCH_ENV, **extra)


def oversubscribe(np_):
    """mpirun's flags for more ranks than cores (timings then measure nothing fair)."""
    return ["--oversubscribe", "--mca", "mpi_yield_when_idle", "1"] if np_ > os.cpu_count() else []


def mpirun(np_, bind_none=True):
    """The mpirun prefix for np_ ranks, each with OPENBLAS_NUM_THREADS=1."""
    return (["mpirun"] + (["--bind-to", "none"] if bind_none else []) + oversubscribe(np_)
            + ["-np", str(np_), "-x", "OPENBLAS_NUM_THREADS=1"])


def netns_mpirun(np_, extra=()):
    """mpirun over cluster/netns's nodes (TCP on their subnet), up to the program; `extra` goes
    before -np (timed runs need --bind-to none: each node's first rank is bound to core 0 otherwise)."""
    return ["mpirun", "--hostfile", os.path.abspath("cluster/netns.hostfile"), "--mca", "plm_rsh_agent",
            os.path.abspath("cluster/netns-agent"), "--mca", "btl", "tcp,self", "--mca", "btl_tcp_if_include",
            "10.77.0.0/24", "--mca", "oob_tcp_if_include", "10.77.0.0/24", *extra, "-x", "OPENBLAS_NUM_THREADS=1",
            "-np", str(np_)]


def sets(pairs):
    """--set KEY=VALUE for each pair."""
    return [a for p in pairs for a in ("--set", p)]


def train_args(job, runs, name, steps, pairs=(), threads=1, binary=BIN, extra=("--no-resume",)):
    """switchyard train of `job` for `steps` steps into runs/name, quiet (no eval, no progress lines)."""
    return [binary, "train", job, "--threads", str(threads), *extra,
            *sets([f"train.steps={steps}", "train.evalEvery=0", "train.logEvery=1000",
                   f"runsDir={runs}", f"name={name}", *pairs])]


def read_log(run_dir):
    """The events of run_dir/log.jsonl, in order ([] when there is no log yet). Only complete
    lines: a line still being written (no newline yet) is left for the next read, as `tail` does."""
    path = os.path.join(run_dir, "log.jsonl")
    if not os.path.exists(path):
        return []
    return [json.loads(line) for line in open(path) if line.endswith("\n")]


def of_kind(events, kind):
    """The events of one kind ("start", "step", "eval", "checkpoint", "placement", ...)."""
    return [e for e in events if e["event"] == kind]


def first(events, kind):
    return next(e for e in events if e["event"] == kind)


def resolved_job(job, pairs=(), binary=BIN):
    """The job as train would run it (every key, defaults filled in): `train --check --print-job`."""
    out = subprocess.run([binary, "train", job, "--check", "--print-job", *sets(pairs)], env=env(),
                         capture_output=True, text=True)
    if out.returncode != 0:
        raise SystemExit(f"switchyard could not resolve {job}: {out.stderr.strip()}")
    return json.loads(out.stdout)


def byte_decoder():
    """GPT-2's byte-level alphabet, character -> byte: the exact bytes of a byte-level BPE token
    (a partial UTF-8 sequence included), as Switchyard's sample prints them."""
    bs = list(range(33, 127)) + list(range(161, 173)) + list(range(174, 256))
    cs, n = bs[:], 0
    for b in range(256):
        if b not in bs:
            bs.append(b)
            cs.append(256 + n)
            n += 1
    return {chr(c): b for b, c in zip(bs, cs)}

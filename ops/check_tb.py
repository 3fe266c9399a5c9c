"""ops/check-tb's comparison: TensorBoard's EventAccumulator on RUN/tb against RUN/log.jsonl.

usage: check_tb.py RUN
Every scalar the log implies (see Sources/TensorBoard/LogScalars.swift for the tags) must be in
the event files with the log's step and value (as float32). Exits 1 on any difference.
"""
import sys

import numpy as np
from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

sys.path.insert(0, __file__.rsplit("/", 1)[0])
import swy  # noqa: E402

STEP = {"train/loss": "loss", "train/aux_loss": "auxLoss", "train/z_loss": "zLoss", "train/lr": "lr",
        "train/grad_norm": "gradNorm", "perf/tokens_per_sec": "tokensPerSec", "perf/mfu": "mfu",
        "perf/step_ms": "stepMs"}


def expected(events):
    """(tag, step) -> value, from the log's events."""
    want = {}
    for e in swy.of_kind(events, "step"):
        for tag, key in STEP.items():
            want[(tag, e["step"])] = e[key]
        for b, row in enumerate(e["expertLoad"]):
            mean = sum(row) / len(row)
            want[(f"moe/block{b}/max_over_mean_load", e["step"])] = max(row) / mean if mean > 0 else 0
        for b, d in enumerate(e["droppedTokens"]):
            want[(f"moe/block{b}/dropped_tokens", e["step"])] = d
        for r, ms in enumerate(e["rankStepMs"]):
            want[(f"ranks/rank{r}/step_ms", e["step"])] = ms
    for e in swy.of_kind(events, "eval"):
        want[("eval/val_loss", e["step"])] = e["valLoss"]
    for e in swy.of_kind(events, "checkpoint"):
        want[("checkpoint/seconds", e["step"])] = e["seconds"]
        want[("checkpoint/GBps", e["step"])] = e["GBps"]
    return want


def main():
    run = sys.argv[1]
    acc = EventAccumulator(f"{run}/tb", size_guidance={"scalars": 0})
    acc.Reload()
    got = {(tag, s.step): s.value for tag in acc.Tags()["scalars"] for s in acc.Scalars(tag)}
    want = expected(swy.read_log(run))
    missing = [k for k in want if k not in got]
    wrong = [k for k in want if k in got and got[k] != np.float32(want[k])]
    extra = [k for k in got if k not in want]
    tags = sorted({t for t, _ in want})
    print(f"TensorBoard's EventAccumulator read {len(got)} scalars over {len(acc.Tags()['scalars'])} tags from "
          f"{run}/tb; the log implies {len(want)} over {len(tags)} tags")
    for label, keys in (("missing", missing), ("different", wrong), ("not in the log", extra)):
        if keys:
            print(f"  {label}: {len(keys)}, e.g. {sorted(keys)[:5]}")
    ok = not (missing or wrong or extra)
    print("ok: every scalar with the log's step and value" if ok else "FAILED")
    sys.exit(0 if ok else 1)


if __name__ == "__main__":
    main()

#!/usr/bin/env python3
"""ops/bench-skew's driver: jobs/small.json under skewed routing at 2 and 4 ranks, static
round-robin placement vs re-placement vs no skew, then the table from the runs' logs
(usage: bench_skew.py RUNS_DIR). Standard library only."""
import os
import subprocess
import sys

import swy

MODES = {
    "static": ["train.routerSkew=3"],
    "replan": ["train.routerSkew=3", "replan.every=5", "replan.emaDecay=0.5", "replan.horizon=1000"],
    "uniform": ["train.routerSkew=0"],
}


def widths(np_):
    """ffHidden 2C and 4C, and 8C where there is a core per rank."""
    return (512, 1024) + ((2048,) if np_ <= os.cpu_count() else ())


def run_all(runs):
    for np_ in (2, 4):
        for ff in widths(np_):
            for mode, pairs in MODES.items():
                cmd = swy.mpirun(np_, bind_none=False) + swy.train_args(
                    "jobs/small.json", runs, f"skew-{np_}-{ff}-{mode}", 30,
                    ["checkpoint.every=0", f"model.ffHidden={ff}", f"train.routerSkewStride={np_}", *pairs],
                    extra=())
                print("command: " + " ".join(cmd), flush=True)
                out = subprocess.run(cmd, env=swy.env(), capture_output=True, text=True)
                for line in out.stdout.splitlines():
                    if "done" in line or "placement" in line:
                        print(line, flush=True)
                if out.returncode != 0:
                    sys.exit(f"ops/bench-skew: command failed ({out.returncode}):\n{out.stderr[-2000:]}")


def load(runs, name):
    return swy.read_log(os.path.join(runs, name))


def table(runs):
    cores = os.cpu_count()
    for np in (2, 4):
        for ff in (512, 1024, 2048):
            if not os.path.exists(f"{runs}/skew-{np}-{ff}-static"):
                continue
            tps = {}
            for mode in ("static", "replan", "uniform"):
                ev = load(runs, f"skew-{np}-{ff}-{mode}")
                steps = [e for e in swy.of_kind(ev, "step") if 12 <= e["step"] <= 29]
                # A re-plan after step s runs before step s + 1: count those inside the window.
                decisions = [e for e in swy.of_kind(ev, "placement") if e.get("phase") == "decision"]
                replan_ms = sum(e["replanMs"] for e in decisions if 11 <= e["step"] <= 28)
                tokens = sum(e["tokensPerSec"] * e["stepMs"] / 1000 for e in steps)
                tps[mode] = tokens / ((sum(e["stepMs"] for e in steps) + replan_ms) / 1000)
                for e in swy.of_kind(ev, "placement"):
                    if e.get("phase") == "decision" and e["adopted"]:
                        print(f"  {np} ranks, ffHidden {ff}: adopted after step {e['step']}: predicted "
                              f"{e['predictedStepMsBefore']:.1f} -> {e['predictedStepMsAfter']:.1f} ms/step, "
                              f"{e['migrationBytes']/1e6:.1f} MB moved in {e['migrationMs']:.1f} ms "
                              f"(predicted {e['predictedMigrationMs']:.1f})")
                    if e.get("phase") == "measured":
                        err = (e["predictedStepMs"] - e["measuredStepMs"]) / e["measuredStepMs"]
                        print(f"  {np} ranks, ffHidden {ff}: plan of step {e['adoptedAtStep']}: predicted "
                              f"{e['predictedStepMs']:.1f} ms/step, "
                              f"measured {e['measuredStepMs']:.1f} ({100*err:+.0f}%)")
            note = " (more ranks than cores: oversubscribed, not a fair measure)" if np > cores else ""
            print(f"  {np} ranks, ffHidden {ff}{note}: static {tps['static']:.0f}, re-placement {tps['replan']:.0f}, "
                  f"no skew {tps['uniform']:.0f} tokens/s: re-placement / static {tps['replan']/tps['static']:.2f}x "
                  f"(ceiling no skew / static {tps['uniform']/tps['static']:.2f}x; "
                  f"re-placement reaches {100*tps['replan']/tps['uniform']:.0f}% of no skew)")


def main():
    runs = sys.argv[1]
    run_all(runs)
    table(runs)


if __name__ == "__main__":
    main()

"""How much the toy world's numbers move with the floating-point set-up: one thread, two, AVX2 kernels.

    python bench/toy_spread.py                 # the README's main command under three set-ups
    python bench/toy_spread.py --pretrain      # and pretraining the toy base from scratch under each

Each set-up runs, in a subprocess with a fresh cache (its own CLIP_MIN_CACHE) and a fresh run
folder, `python train.py --objective behavioral --lora-rank 64`: it generates the toy world,
unpacks the shipped base and fine-tunes. The set-ups differ only in the environment:

  1 thread       OMP_NUM_THREADS=1
  2 threads      OMP_NUM_THREADS=2
  2 threads AVX2 OMP_NUM_THREADS=2 and ATEN_CPU_CAPABILITY=avx2 MKL_CBWR=AVX2 ONEDNN_MAX_CPU_ISA=AVX2

The table gives the base's test preference accuracy (Desc>Cap) and zero-shot F1 per task, the
same after fine-tuning, and the transfer score, and below it the spread (largest minus
smallest) of each column against its target: 0.03 for accuracies, 0.05 for F1. With --pretrain,
each set-up also runs `python -m clip_min.train.toybase` (pretraining from scratch, a few minutes)
and the table gains the rows of those freshly pretrained bases: the spread the shipped base avoids.
Wall times are printed too; they are the machine's, and not a target here (no other load is
controlled for).
"""

from __future__ import annotations

import argparse
import json
import os
import re
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
SETUPS = {
    "1 thread": {"OMP_NUM_THREADS": "1", "MKL_NUM_THREADS": "1"},
    "2 threads": {"OMP_NUM_THREADS": "2", "MKL_NUM_THREADS": "2"},
    "2 threads AVX2": {"OMP_NUM_THREADS": "2", "MKL_NUM_THREADS": "2", "ATEN_CPU_CAPABILITY": "avx2",
                       "MKL_CBWR": "AVX2", "ONEDNN_MAX_CPU_ISA": "AVX2"},
}
TARGETS = {"accuracy": 0.03, "f1": 0.05}
PRETRAINED = re.compile(r"unpacked: test preference accuracy ([0-9.]+), transfer F1 (\{.*\})")


def run(command: list[str], env: dict[str, str]) -> tuple[str, float]:
    started = time.perf_counter()
    done = subprocess.run(command, cwd=ROOT, env=env, capture_output=True, text=True)
    if done.returncode != 0:
        sys.exit(f"{' '.join(command)} failed ({done.returncode}):\n{done.stderr[-2000:]}")
    return done.stdout, time.perf_counter() - started


def measure(name: str, extra_env: dict[str, str], scratch: Path, with_pretraining: bool) -> list[dict]:
    cache = scratch / name.replace(" ", "-")
    env = {**os.environ, **extra_env, "CLIP_MIN_CACHE": str(cache)}
    for key in ("ATEN_CPU_CAPABILITY", "MKL_CBWR", "ONEDNN_MAX_CPU_ISA"):
        if key not in extra_env:
            env.pop(key, None)
    _, wall = run([sys.executable, "train.py", "--objective", "behavioral", "--lora-rank", "64",
                   "--out", str(cache / "run")], env)
    summary = json.loads((cache / "run" / "summary.json").read_text())
    rows = [dict(setup=name, what="shipped base, fine-tuned", wall=wall,
                 base=summary["concadia_accuracy_before"], f1=summary["transfer_f1_before"],
                 after=summary["concadia_accuracy"], f1_after=summary["transfer_f1"], score=summary["transfer_score"])]
    if with_pretraining:
        out, wall = run([sys.executable, "-m", "clip_min.train.toybase", "--out", str(cache / "pretrain")], env)
        found = PRETRAINED.search(out)
        f1 = json.loads(found.group(2).replace("'", '"'))
        rows.append(dict(setup=name, what="pretrained here", wall=wall, base=float(found.group(1)), f1=f1,
                         after=None, f1_after=None, score=None))
    return rows


def table(rows: list[dict]) -> str:
    tasks = sorted(rows[0]["f1"])
    lines = ["| set-up | base | base Desc>Cap | " + " | ".join(f"base {t} F1" for t in tasks)
             + " | after fine-tuning | " + " | ".join(f"after {t} F1" for t in tasks) + " | transfer score | wall s |",
             "|---|---|" + "---:|" * (2 * len(tasks) + 4)]
    cell = lambda x: "-" if x is None else f"{x:.3f}"  # noqa: E731
    for r in rows:
        lines.append(f"| {r['setup']} | {r['what']} | {cell(r['base'])} | " + " | ".join(cell(r["f1"][t]) for t in tasks)
                     + f" | {cell(r['after'])} | "
                     + " | ".join(cell(r["f1_after"] and r["f1_after"][t]) for t in tasks)
                     + f" | {cell(r['score'])} | {r['wall']:.0f} |")
    for what in dict.fromkeys(r["what"] for r in rows):
        group = [r for r in rows if r["what"] == what]
        spreads = {"base Desc>Cap": ([r["base"] for r in group], TARGETS["accuracy"])}
        spreads.update({f"base {t} F1": ([r["f1"][t] for r in group], TARGETS["f1"]) for t in tasks})
        if group[0]["after"] is not None:
            spreads["after fine-tuning"] = ([r["after"] for r in group], TARGETS["accuracy"])
            spreads.update({f"after {t} F1": ([r["f1_after"][t] for r in group], TARGETS["f1"]) for t in tasks})
        lines.append(f"\nspread over the set-ups ({what}): " + ", ".join(
            f"{column} {max(v) - min(v):.3f} ({'within' if max(v) - min(v) <= target else 'OVER'} {target})"
            for column, (v, target) in spreads.items()))
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--pretrain", action="store_true", help="also pretrain the toy base from scratch under each set-up")
    args = parser.parse_args()
    rows = []
    with tempfile.TemporaryDirectory(prefix="toy-spread-") as scratch:
        for name, env in SETUPS.items():
            print(f"{name} ...", flush=True)
            rows += measure(name, env, Path(scratch), args.pretrain)
    print(table(rows))


if __name__ == "__main__":
    main()

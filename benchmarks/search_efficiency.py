"""Does the default sampler beat random search, and how much time does the host itself take?

On the demo task with the real all-MiniLM-L6-v2 teacher and a small recovery budget (a faster
proxy of the default search), runs the default sampler (multi-objective TPE, constraint-aware)
and random search with the same trial count and seeds, and prints for every run:

- the hypervolume of the feasible trials, objectives normalised by the teacher
  (1 - accuracy/teacher accuracy, latency/teacher latency, memory/teacher memory; reference
  point (0.5, 1, 1): see autocompress/study/results.py), and its ratio default/random;
- the host's share of the optimisation wall time: everything that is not applying
  techniques, training, measuring or evaluating (``work_s`` of each trial), i.e. sampling,
  pruning decisions, storage writes, saving candidates, callbacks.

    python benchmarks/search_efficiency.py                  # the published table (~1.5 h on 2 cores)
    python benchmarks/search_efficiency.py --quick          # smoke run (a few minutes)
"""

from __future__ import annotations

import argparse
import dataclasses
import statistics
import tempfile
import time
from pathlib import Path

import pandas as pd
import yaml

from autocompress.config import settings_from_options
from autocompress.search import run_search
from autocompress.study import results

#: Recovery kept short so one trial takes seconds, not minutes (the proxy's "small recovery budget").
PROXY_SPACE = {
    "distillation": {"epochs": {"type": "float", "low": 0.05, "high": 0.15, "step": 0.05}},
    "lora": {"epochs": {"type": "float", "low": 0.05, "high": 0.15, "step": 0.05}},
}


def one_run(sampler: str, seed: int, trials: int, root: Path, options: dict) -> dict:
    out = root / f"{sampler}-{seed}"
    settings = settings_from_options({**options, "sampler": sampler, "trials": trials, "out": out,
                                      "study": f"efficiency-{sampler}-{seed}"})
    # The seed varies the sampler (and training shuffles) only: the task's splits and its cached
    # teacher stay the same across runs, so hypervolumes compare like with like.
    settings = dataclasses.replace(settings, seed=seed)
    started = time.perf_counter()
    outcome = run_search(settings)
    total = time.perf_counter() - started
    frame = pd.read_csv(out / "trials.csv")
    baseline = outcome.document["baseline"]
    # Hypervolume after each trial; the last is the run's.
    history = results.hypervolume_history(frame.sort_values("number"), baseline)["hypervolume"].tolist()
    import optuna

    study = optuna.load_study(study_name=settings.study_name, storage=settings.storage_url)
    wall = float(study.user_attrs["last_run_seconds"])
    work = float(frame["work_s"].fillna(0).sum())
    # Anytime quality: the hypervolume after each third of the budget.
    checkpoints = {f"hv@{k}": history[k - 1] for k in sorted({max(1, trials // 3), max(1, 2 * trials // 3), trials})
                   if k <= len(history)}
    return {"sampler": sampler, "seed": seed, "trials": len(frame), "feasible": int(frame["feasible"].sum()),
            "hypervolume": history[-1] if history else 0.0, **checkpoints, "optimize_s": wall, "work_s": work,
            "host_fraction": (wall - work) / wall, "run_s": total,
            "ended": frame["ended"].value_counts().to_dict()}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--quick", action="store_true", help="1 seed x 2 trials on a small slice (smoke run)")
    parser.add_argument("--seeds", type=int, default=3)
    parser.add_argument("--first-seed", type=int, default=0, help="seeds first-seed .. first-seed+seeds-1 "
                        "(to add seeds to an earlier run)")
    parser.add_argument("--merge", type=Path, action="append", default=[],
                        help="an earlier run's search_efficiency.csv: its rows join this run's table")
    # TPE's first 6 trials are random (its startup); 30 leaves 24 guided ones to tell the samplers apart.
    parser.add_argument("--trials", type=int, default=30)
    parser.add_argument("--out", type=Path, help="keep the runs here (default: a temporary directory)")
    args = parser.parse_args()
    seeds, trials = (1, 2) if args.quick else (args.seeds, args.trials)
    root = args.out or Path(tempfile.mkdtemp(prefix="search-efficiency-"))
    root.mkdir(parents=True, exist_ok=True)
    space = root / "proxy-space.yaml"
    space.write_text(yaml.safe_dump(PROXY_SPACE))
    # No starting points: both samplers start from nothing, so the comparison is of the samplers alone
    # (the built-in starting points also fix recovery epochs outside this proxy's short range).
    options = {"search_space": space, "starting_points": "none", "max_accuracy_drop": 0.05,
               "eval_limit": 200 if args.quick else 500, "repeats": 10, "warmup": 3, "no_progress": True}
    if args.quick:  # the smoke demo task the test suite shares (one cached teacher), few timed runs
        from autocompress.testing.smoke import SMOKE_DEMO_OPTIONS

        options.update(SMOKE_DEMO_OPTIONS, repeats=3, warmup=1)

    rows = []
    for seed in range(args.first_seed, args.first_seed + seeds):
        for sampler in ("tpe", "random"):
            row = one_run(sampler, seed, trials, root, options)
            rows.append(row)
            print(f"{sampler:>6} seed {seed}: hypervolume {row['hypervolume']:.4f}, {row['feasible']}/{row['trials']} "
                  f"feasible, optimize {row['optimize_s']:.0f} s, host {100 * row['host_fraction']:.2f}% "
                  f"{row['ended']}; " + ", ".join(f"{k} {v:.4f}" for k, v in row.items() if k.startswith("hv@")),
                  flush=True)

    table = pd.concat([*(pd.read_csv(path) for path in args.merge), pd.DataFrame(rows)], ignore_index=True)
    seed_list = sorted(table["seed"].unique())
    print("\n| seed | default (TPE) hypervolume | random hypervolume | ratio | host share TPE | host share random |")
    print("|---:|---:|---:|---:|---:|---:|")
    ratios = []
    for seed in seed_list:
        tpe = table[(table["seed"] == seed) & (table["sampler"] == "tpe")].iloc[0]
        rnd = table[(table["seed"] == seed) & (table["sampler"] == "random")].iloc[0]
        if rnd["hypervolume"] > 0:
            ratio = tpe["hypervolume"] / rnd["hypervolume"]
        else:  # nothing to compare against: both empty is no evidence either way
            ratio = float("inf") if tpe["hypervolume"] > 0 else float("nan")
        ratios.append(ratio)
        print(f"| {seed} | {tpe['hypervolume']:.4f} | {rnd['hypervolume']:.4f} | {ratio:.2f}x | "
              f"{100 * tpe['host_fraction']:.2f}% | {100 * rnd['host_fraction']:.2f}% |")
    feasible = table.groupby("sampler")["feasible"].mean()
    print(f"\nmean feasible trials per run: default {feasible['tpe']:.1f}, random {feasible['random']:.1f} "
          f"(of {trials})")
    for column in [c for c in table.columns if c.startswith("hv@")]:
        by = table.groupby("sampler")[column].mean()
        print(f"mean {column.replace('hv@', 'hypervolume after ')} trials: default {by['tpe']:.4f}, random "
              f"{by['random']:.4f}")
    mean_tpe = table[table["sampler"] == "tpe"]["hypervolume"].mean()
    mean_rnd = table[table["sampler"] == "random"]["hypervolume"].mean()
    print(f"\nmean hypervolume: default {mean_tpe:.4f}, random {mean_rnd:.4f}, ratio of means "
          f"{mean_tpe / mean_rnd if mean_rnd else float('inf'):.2f}x (target >= 1.2x); median per-seed ratio "
          f"{statistics.median([r for r in ratios if r == r] or [float('nan')]):.2f}x (seeds where both are 0: "
          f"{sum(r != r for r in ratios)})")
    print(f"host share of optimisation wall time: median {100 * table['host_fraction'].median():.2f}%, max "
          f"{100 * table['host_fraction'].max():.2f}% (target <= 2%)")
    print(f"{len(seed_list)} seeds x {trials} trials per sampler; runs kept in {root}"
          + "".join(f" and {path.parent}" for path in args.merge))
    table.to_csv(root / "search_efficiency.csv", index=False)


if __name__ == "__main__":
    main()

"""Sample efficiency of optiloop's tuner, and the per-trial cost of its study storages.

    .venv/bin/python bench/tuning.py                 # full run (about 20 minutes on 2 cores)
    .venv/bin/python bench/tuning.py --quick         # reduced run for `make bench`

Part 1 drives the product's own engine (``optiloop.jobs.search.search``) with the product's
search space and training code on bundled datasets, for several seeds. The objective is the
validation loss (cross-entropy or MSE): smoother than accuracy on small validation splits,
so the comparison measures the samplers rather than rounding. For each algorithm it prints
the best loss after 10, 25 and 50 trials as a ratio to random search at the same count
(below 1 is better), and how many trials TPE and GP need to match random search's best
after 100 trials.

Part 2 times a trivial objective under each storage (in memory, journal file, PostgreSQL
when its server is installed) to show what persistence costs per trial.
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import time
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

import numpy as np  # noqa: E402
import optuna  # noqa: E402
import torch  # noqa: E402

from optiloop.api.jobs import StageInput  # noqa: E402
from optiloop.jobs.prepare import prepare_data  # noqa: E402
from optiloop.jobs.search import Budget, Choice, FloatParam, IntParam, Reporter, search  # noqa: E402
from optiloop.jobs.space import decode, search_space  # noqa: E402
from optiloop.jobs.storage import open_store  # noqa: E402
from optiloop.jobs.training import build_model, train_model  # noqa: E402

CHECKPOINTS = (10, 25, 50)
ALGORITHMS = ("random", "grid", "tpe", "gp")


def bench_spec(uri: str, task: str) -> dict[str, Any]:
    return {
        "dataset": {"uri": uri, "task": task, "seed": 0},
        "dataQuality": {"minRows": 20},
        "deployment": {"storageUri": "pvc://bench/x"},
        "model": {
            "family": "mlp",
            "search": {
                "layers": {"min": 1, "max": 3},
                "width": {"min": 8, "max": 256, "log": True},
                "dropout": {"min": 0.0, "max": 0.5},
            },
        },
        "tuning": {
            "search": {
                "learningRate": {"min": 1e-4, "max": 0.3, "log": True},
                "batchSize": [16, 32, 64, 128],
                "optimizers": ["adamw", "sgd"],
                "weightDecay": {"min": 1e-6, "max": 0.1, "log": True},
                "epochs": {"min": 5, "max": 30},
            }
        },
        "regularization": {"earlyStopping": {"patience": 5}},
    }


def loss_objective(workdir: Path, uri: str, task: str) -> tuple[Any, dict[str, Any]]:
    stage = StageInput.model_validate({"name": "bench", "artifacts": str(workdir), "spec": bench_spec(uri, task)})
    data = prepare_data(stage, open_store(str(workdir)))
    spec = stage.spec

    def objective(params: dict[str, Any], reporter: Reporter) -> float:
        architecture, training = decode(params, spec, data.transform)
        model = build_model(data.transform, architecture, data.splits["train"], training.seed)
        outcome = train_model(model, data.splits["train"], data.splits["validation"], training)
        loss = outcome.validation["loss"]
        return loss if np.isfinite(loss) else float("nan")

    return objective, search_space(spec)


def best_so_far(trials: list[optuna.trial.FrozenTrial], count: int) -> float:
    values = [t.values[0] for t in trials[:count] if t.state == optuna.trial.TrialState.COMPLETE]
    return min(values) if values else float("inf")


def trials_to_reach(trials: list[optuna.trial.FrozenTrial], target: float) -> int | None:
    best = float("inf")
    for index, trial in enumerate(trials, start=1):
        if trial.state == optuna.trial.TrialState.COMPLETE:
            best = min(best, trial.values[0])
        if best <= target:
            return index
    return None


def sample_efficiency(datasets: list[tuple[str, str]], seeds: list[int], trials: int, workdir: Path) -> dict[str, Any]:
    rows: dict[str, Any] = {}
    for uri, task in datasets:
        name = uri.split("://")[1]
        objective, space = loss_objective(workdir / name, uri, task)
        for seed in seeds:
            runs = {}
            for algorithm in ALGORITHMS:
                budget = 2 * trials if algorithm == "random" else trials
                started = time.perf_counter()
                result = search(
                    objective,
                    space,
                    budget=Budget(budget),
                    algorithm=algorithm,
                    directions=["minimize"],
                    seed=seed,
                    grid_points=3,
                )  # type: ignore[arg-type]
                runs[algorithm] = sorted(result.trials, key=lambda t: t.number)
                seconds = time.perf_counter() - started
                best = best_so_far(runs[algorithm], budget)
                label = f"{name:14s} seed {seed} {algorithm:6s}"
                print(f"  {label} {len(result.trials):4d} trials {seconds:6.1f}s best {best:.4f}", flush=True)
            random_at_double = best_so_far(runs["random"], 2 * trials)
            rows[f"{name}/{seed}"] = {
                "best": {a: {str(c): best_so_far(runs[a], c) for c in CHECKPOINTS if c <= trials} for a in ALGORITHMS},
                "random_at_double": random_at_double,
                "trials_to_match_random_double": {a: trials_to_reach(runs[a], random_at_double) for a in ("tpe", "gp")},
            }
    return rows


LOSS_FLOOR = 1e-3
"""Losses below this are treated as equal: the model already separates the validation split,
and ratios of near-zero losses would measure noise."""


def _ratio(value: float, baseline: float) -> float:
    return max(value, LOSS_FLOOR) / max(baseline, LOSS_FLOOR)


def summarize_efficiency(rows: dict[str, Any], trials: int) -> list[str]:
    checkpoints = [c for c in CHECKPOINTS if c <= trials]
    datasets = sorted({key.split("/")[0] for key in rows})
    lines = [
        "| dataset | algorithm | " + " | ".join(f"loss / random's @{c}" for c in checkpoints) + " |",
        "|---|---|" + "---|" * len(checkpoints),
    ]
    for dataset in [*datasets, "all"]:
        selected = [row for key, row in rows.items() if dataset in ("all", key.split("/")[0])]
        for algorithm in ALGORITHMS:
            cells = []
            for checkpoint in checkpoints:
                ratios = [
                    _ratio(row["best"][algorithm][str(checkpoint)], row["best"]["random"][str(checkpoint)])
                    for row in selected
                ]
                cells.append(f"{statistics.geometric_mean(ratios):.2f}")
            lines.append(f"| {dataset} | {algorithm} | " + " | ".join(cells) + " |")
    lines.append("")
    for algorithm in ("tpe", "gp"):
        reached = [row["trials_to_match_random_double"][algorithm] for row in rows.values()]
        hits = sorted(r for r in reached if r is not None)
        median = statistics.median(hits) if hits else "-"
        lines.append(
            f"- {algorithm}: reached random search's best-after-{2 * trials} within {trials} trials in "
            f"{len(hits)} of {len(reached)} runs; trials needed: {hits} (median {median})"
        )
    return lines


def storage_overhead(trials: int, workdir: Path) -> dict[str, float]:
    space = {"x": FloatParam(-1.0, 1.0), "n": IntParam(1, 10), "c": Choice(("a", "b"))}

    def trivial(params: dict[str, Any], reporter: Reporter) -> float:
        return params["x"] ** 2

    timings: dict[str, float] = {}

    def run(label: str, storage: Any) -> None:
        started = time.perf_counter()
        search(
            trivial,
            space,
            budget=Budget(trials),
            algorithm="random",
            directions=["minimize"],
            storage=storage,
            study_name=label,
            seed=0,
        )
        timings[label] = (time.perf_counter() - started) / trials * 1000.0

    run("in-memory", None)
    run("journal", workdir / "study.journal")
    try:
        from tests.support.postgres import running_postgres

        with running_postgres() as url:
            run("postgresql", url)
    except RuntimeError as exc:
        print(f"  PostgreSQL skipped: {exc}")
    return timings


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="two datasets, two seeds, 25 trials")
    parser.add_argument("--out", type=Path, default=REPO / "bench" / "results" / "tuning.json")
    parser.add_argument(
        "--summarize", type=Path, metavar="JSON", help="only print the summary of an earlier run's results"
    )
    args = parser.parse_args()
    if args.summarize:
        saved = json.loads(args.summarize.read_text())
        trials = max(int(c) for row in saved["efficiency"].values() for c in row["best"]["tpe"])
        print("\n".join(summarize_efficiency(saved["efficiency"], trials)))
        return 0
    torch.set_num_threads(1)
    optuna.logging.set_verbosity(optuna.logging.ERROR)  # diverging trials are expected here; their tracebacks are noise
    datasets = [
        ("builtin://breast_cancer", "classification"),
        ("builtin://wine", "classification"),
        ("builtin://diabetes", "regression"),
    ]
    seeds, trials = [0, 1, 2], 50
    if args.quick:
        datasets, seeds, trials = datasets[::2], [0, 1], 25

    import tempfile

    with tempfile.TemporaryDirectory() as tmp:
        print(
            f"sample efficiency: {len(datasets)} datasets x {len(seeds)} seeds, {trials} trials (random: {2 * trials})"
        )
        rows = sample_efficiency(datasets, seeds, trials, Path(tmp))
        print("storage overhead per trial (trivial objective, 200 trials)")
        overhead = storage_overhead(200, Path(tmp))
    summary = summarize_efficiency(rows, trials)
    summary += ["", "| storage | ms per trial | ratio to in-memory |", "|---|---|---|"]
    summary += [f"| {label} | {ms:.2f} | {ms / overhead['in-memory']:.1f}x |" for label, ms in overhead.items()]
    print("\n".join(summary))
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(
        json.dumps({"efficiency": rows, "storage_ms_per_trial": overhead, "summary": summary}, indent=2)
    )
    print(f"\nwrote {args.out}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())

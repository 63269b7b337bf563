"""Swarm settings: the swarm's defaults (size, speed cap) and the flat encoding for each relative
sampler (tpe, gp, cmaes, nsga2; with and without), compared on a made-up objective over the
default space, where a trial costs microseconds (GP's fitting aside).

No training: each candidate drawn from the default space (through the worker's own sampling,
`sample_flat` or `sample_architecture`) scores how close it is to a made-up target network
(40,000 parameters at 1x28x28, 4 convs, global average pooling, dropout 0.2, batch 64, lr 4e-3,
weight decay 1e-3); candidates that cannot be built end PRUNED, as in a search. The figure is
the best score after `--trials` trials (0 is the target), mean and sd over `--seeds` seeds.
It says how well each setting steers through this space's mix of choices, ranges and
conditional stages, not how well it finds accurate networks: that is bench/search_efficiency.py
(`--methods pso+asha,tpe+asha,random+asha`).

    .venv/bin/python bench/swarm_settings.py                 # 30 seeds x 40 trials
    .venv/bin/python bench/swarm_settings.py --quick         # 6 seeds
    .venv/bin/python bench/swarm_settings.py --contenders "gp,gp flat,cmaes,cmaes flat" --seeds 10
"""

from __future__ import annotations

import argparse
import math
import statistics
import sys
import time
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent))
import _common  # noqa: E402

_common.setup_paths()

NAME = "swarm_settings"


def score(arch: Any) -> float | None:
    """Minus the distance to the made-up target network; None when it cannot be built."""
    from cnnsearch.errors import InfeasibleArchitecture
    from cnnsearch.spec import ConvLayer, count_params

    try:
        params = count_params(arch, (1, 28, 28), 10)
    except InfeasibleArchitecture:
        return None
    convs = sum(isinstance(layer, ConvLayer) for layer in arch.layers)
    return -(
        abs(math.log(params / 40_000))
        + abs(math.log(arch.train.lr / 4e-3))
        + abs(math.log(arch.train.weight_decay / 1e-3)) / 2
        + abs(convs - 4) / 2
        + (arch.head.pooling != "gap")
        + 2 * abs(arch.head.dropout - 0.2)
        + (arch.train.batch_size != 64) / 2
    )


def contenders(flat: dict[str, Any]) -> dict[str, tuple[Any, bool]]:
    """name -> (sampler for a seed, whether it gets the flat encoding)."""
    import optuna

    from cnnsearch.search.pso import SwarmSampler
    from cnnsearch.search.strategies import make_sampler

    def tpe(seed: int) -> Any:  # as make_sampler builds it
        return optuna.samplers.TPESampler(
            seed=seed, multivariate=True, group=True, constant_liar=True, n_startup_trials=8
        )

    found: dict[str, tuple[Any, bool]] = {
        "random": (lambda seed: optuna.samplers.RandomSampler(seed=seed), False),
        "tpe": (tpe, False),
        "tpe flat": (tpe, True),
    }
    for name in ("gp", "cmaes", "nsga2"):  # as the search builds them, without and with the encoding
        build = lambda seed, name=name: make_sampler(name, seed, multi_objective=False)  # noqa: E731
        found[name] = (build, False)
        found[f"{name} flat"] = (build, True)
    for size in (5, 10):
        for speed in (0.15, 0.3, 0.5):
            found[f"pso {size} particles, speed {speed}"] = (
                lambda seed, size=size, speed=speed: SwarmSampler(flat, seed=seed, swarm_size=size, max_speed=speed),
                True,
            )
    return found


def search(sampler: Any, flat_encoding: bool, trials: int) -> float:
    import optuna

    from cnnsearch.space.flat import sample_flat
    from cnnsearch.space.parse import load_space
    from cnnsearch.space.sample import sample_architecture

    space = load_space("default")
    study = optuna.create_study(direction="maximize", sampler=sampler)
    sample = sample_flat if flat_encoding else sample_architecture
    best = -math.inf
    for _ in range(trials):
        trial = study.ask()
        value = score(sample(space, trial, epochs=3))
        if value is None:
            study.tell(trial, state=optuna.trial.TrialState.PRUNED)
        else:
            study.tell(trial, value)
            best = max(best, value)
    return best


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seeds", type=int, default=30)
    parser.add_argument("--trials", type=int, default=40)
    parser.add_argument("--quick", action="store_true", help="6 seeds")
    parser.add_argument("--contenders", help="Comma-separated names (default: all), e.g. 'gp,gp flat'.")
    args = parser.parse_args()
    seeds = 6 if args.quick else args.seeds

    import warnings

    import optuna

    from cnnsearch.space.flat import flat_dimensions
    from cnnsearch.space.parse import load_space

    optuna.logging.set_verbosity(optuna.logging.ERROR)
    warnings.filterwarnings("ignore", category=optuna.exceptions.ExperimentalWarning)
    flat = flat_dimensions(load_space("default"), epochs=3)
    table = contenders(flat)
    chosen = args.contenders.split(",") if args.contenders else list(table)
    unknown = [name for name in chosen if name not in table]
    if unknown:
        raise SystemExit(f"unknown contender(s) {', '.join(unknown)}; known: {', '.join(table)}")
    rows = []
    for name in chosen:
        make, flat_encoding = table[name]
        started = time.perf_counter()
        bests = [search(make(seed), flat_encoding, args.trials) for seed in range(seeds)]
        row = {
            "contender": name,
            "trials": args.trials,
            "seeds": seeds,
            "mean_best": statistics.mean(bests),
            "sd_best": statistics.stdev(bests),
            "seconds": time.perf_counter() - started,
        }
        rows.append(row)
        _common.echo(f"{name}: best {row['mean_best']:.3f} ± {row['sd_best']:.3f} ({row['seconds']:.0f} s)")
    _common.append_rows(NAME, rows)
    _common.append_section(
        "Swarm settings (made-up objective, default space)",
        f"Best score after {args.trials} trials (0 = the target network), mean ± sd over {seeds} seeds.\n\n"
        + _common.markdown_table(
            ["contender", "best (mean ± sd)"],
            [(r["contender"], f"{r['mean_best']:.3f} ± {r['sd_best']:.3f}") for r in rows],
        ),
        note="no training: says how each setting steers through the space, not how it finds accurate networks",
    )


if __name__ == "__main__":
    main()

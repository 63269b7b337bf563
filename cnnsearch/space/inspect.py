"""Owns looking at a space outside a search: sampled candidates with their costs, and the
share that cannot be trained at a given input size (`cnnsearch space sample|check`).

Knows space, model and train's pre-training check; uses a throw-away in-memory study so
conditional sampling is exactly what a search would do.
"""

from __future__ import annotations

from collections import Counter
from dataclasses import dataclass, field

from rich.table import Table
from rich.text import Text

from cnnsearch.errors import UserError
from cnnsearch.space.parse import SearchSpace
from cnnsearch.spec import count_params, forward_flops


@dataclass
class Feasibility:
    """How many of N random candidates can be trained, and the reasons the others can't."""

    total: int
    input_shape: tuple[int, int, int]
    infeasible: Counter = field(default_factory=Counter)  # reason -> count
    over_budget: Counter = field(default_factory=Counter)

    def summary(self) -> str:
        shape = "x".join(map(str, self.input_shape))
        bad = sum(self.infeasible.values())
        heavy = sum(self.over_budget.values())
        lines = [
            f"{self.total} candidates at {shape}: {bad / self.total:.1%} cannot fit the image size, "
            f"{heavy / self.total:.1%} exceed max_params/max_flops"
        ]
        for reason, count in (self.infeasible + self.over_budget).most_common(5):
            lines.append(f"  {count:4d} × {reason}")
        return "\n".join(lines)


def _candidates(space: SearchSpace, n: int, seed: int):
    import optuna

    optuna.logging.set_verbosity(optuna.logging.WARNING)
    study = optuna.create_study(sampler=optuna.samplers.RandomSampler(seed=seed))
    for _ in range(n):
        trial = study.ask()
        yield space.sample(trial)
        study.tell(trial, 0.0)


def generic_reason(reason: str) -> str:
    """Group reasons that differ only in numbers ('conv3: …' and 'conv4: …')."""
    import re

    return re.sub(r"\d[\d,]*", "N", reason)


def feasibility(
    space: SearchSpace, input_shape: tuple[int, int, int], num_classes: int, *, n: int, seed: int = 0
) -> Feasibility:
    from cnnsearch.errors import InfeasibleArchitecture

    report = Feasibility(total=n, input_shape=input_shape)
    for arch in _candidates(space, n, seed):
        try:
            params = count_params(arch, input_shape, num_classes)
        except InfeasibleArchitecture as error:
            report.infeasible[generic_reason(str(error))] += 1
            continue
        if space.max_params is not None and params > space.max_params:
            report.over_budget["over max_params"] += 1
        elif space.max_flops is not None and forward_flops(arch, input_shape, num_classes) > space.max_flops:
            report.over_budget["over max_flops"] += 1
    return report


FIT_SAMPLES = 200  # candidates sampled before a run starts, to refuse a space that cannot fit the data


def describe_causes(reasons: Counter, *, top: int = 3) -> str:
    """`12 × reason; 8 × other reason`: the most common reasons first."""
    return "; ".join(f"{count} × {reason}" for reason, count in reasons.most_common(top))


def untrainable_error(run: str, data: str, causes: Counter, streak: int) -> UserError:
    """What stops a search after `streak` candidates in a row could not be trained."""
    return UserError(
        f"stopped run {run!r}: the last {streak} candidates could not be trained ({describe_causes(causes)}); "
        f"narrow the space (see `cnnsearch space check SPACE --data {data}`) or raise max_params/max_flops"
    )


def require_trainable(
    space: SearchSpace,
    input_shape: tuple[int, int, int],
    num_classes: int,
    *,
    data: str,
    n: int = FIT_SAMPLES,
    seed: int = 0,
) -> Feasibility:
    """Sample `n` candidates for the data and refuse the space when none of them can be trained."""
    from cnnsearch.errors import UserError

    report = feasibility(space, input_shape, num_classes, n=n, seed=seed)
    if sum(report.infeasible.values()) + sum(report.over_budget.values()) >= n:
        shape = "x".join(map(str, input_shape))
        raise UserError(
            f"{space.path}: none of {n} sampled candidates can be trained on {data} ({shape} images, "
            f"{num_classes} classes): {describe_causes(report.infeasible + report.over_budget)}; use fewer stages "
            f"or pools for small images, or raise max_params/max_flops"
        )
    return report


def sample_candidates(
    space: SearchSpace, input_shape: tuple[int, int, int], num_classes: int, *, n: int, seed: int = 0
) -> Table:
    """A table of N sampled candidates: compact form, params and FLOPs, or why infeasible."""
    from cnnsearch.train.loop import check_candidate

    table = Table(title=f"{n} candidates for {'x'.join(map(str, input_shape))} input, {num_classes} classes")
    for column in ("#", "architecture", "params", "FLOPs", "status"):
        table.add_column(column)
    for index, arch in enumerate(_candidates(space, n, seed), start=1):
        rejected = check_candidate(
            arch, input_shape, num_classes, max_params=space.max_params, max_flops=space.max_flops
        )
        if rejected is not None and rejected.outcome == "infeasible":
            table.add_row(str(index), Text(arch.compact()), "—", "—", Text(rejected.reason, style="red"))
            continue
        if rejected is not None:
            table.add_row(
                str(index),
                Text(arch.compact()),
                f"{rejected.params:,}",
                f"{rejected.flops:,}",
                Text(rejected.reason, style="yellow"),
            )
            continue
        params = count_params(arch, input_shape, num_classes)
        table.add_row(
            str(index),
            Text(arch.compact()),
            f"{params:,}",
            f"{forward_flops(arch, input_shape, num_classes):,}",
            Text("ok", style="green"),
        )
    return table

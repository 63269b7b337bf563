"""Owns the sequence form of a space: a range of layer positions, each choosing its own kind
(conv, pool, residual, separable) and that kind's settings. Its sampler and its inverse (the
answers that sample back to a given architecture) sit side by side, with the list of every
parameter the form can ever ask for (`sequence_dimensions`).

Parameter names are fixed by position: `sequence.layers`, `layer3.kind`, `layer3.conv.filters`,
`head.dense2.units`. The kind is part of a setting's name, so each name has one distribution
in every trial (Optuna refuses a name whose choices change) and exists only when its kind is
chosen at its position.

Knows the spec and parse's `SearchSpace`; must not import torch, and needs no Optuna import.
"""

from __future__ import annotations

from dataclasses import fields
from typing import TYPE_CHECKING, Any

from cnnsearch.space.rules import KIND_TABLES, SEQUENCE_TABLES
from cnnsearch.spec import LAYER_TYPES, Architecture, Layer

if TYPE_CHECKING:
    from cnnsearch.space.parse import Dimension, SearchSpace
    from cnnsearch.space.sample import SuggestingTrial


def setting_name(position: int | str, kind: str, key: str) -> str:
    """The Optuna name of one setting of one position, e.g. `layer3.conv.filters`."""
    return f"layer{position}.{kind}.{key}"


def dense_name(index: int) -> str:
    """The Optuna name of the width of hidden dense layer `index` (from 1), e.g. `head.dense2.units`."""
    return f"head.dense{index}.units"


def sample_sequence_layers(space: SearchSpace, trial: SuggestingTrial) -> tuple[Layer, ...]:
    """The layers of one candidate: positions first, then at each position its kind and only that
    kind's settings."""
    count = space.dimension("sequence", "layers").sample(trial, "sequence.layers")
    kinds = space.dimension("sequence", "kinds")
    layers = []
    for position in range(1, count + 1):
        kind = kinds.sample(trial, f"layer{position}.kind")
        settings = {
            key: space.dimension(kind, key).sample(trial, setting_name(position, kind, key))
            for key in KIND_TABLES[kind]
        }
        layers.append(LAYER_TYPES[kind](**settings))
    return tuple(layers)


def sequence_answers(arch: Architecture) -> dict[str, Any]:
    """The inverse of `sample_sequence_layers` (and of the per-layer dense widths): the value each
    question would have to be answered with to give `arch`."""
    answers: dict[str, Any] = {"sequence.layers": len(arch.layers)}
    for position, layer in enumerate(arch.layers, start=1):
        answers[f"layer{position}.kind"] = layer.kind
        for spec_field in fields(layer):
            if spec_field.name != "kind":
                answers[setting_name(position, layer.kind, spec_field.name)] = getattr(layer, spec_field.name)
    for index, units in enumerate(arch.head.dense, start=1):
        answers[dense_name(index)] = units
    return answers


def _largest(dim: Dimension) -> int:
    if dim.kind == "fixed":
        return int(dim.value)
    if dim.kind == "choice":
        return int(max(dim.choices))
    return int(dim.high)


def _can_be(dim: Dimension, predicate: Any) -> bool:
    values = (dim.value,) if dim.kind == "fixed" else dim.choices
    return any(predicate(value) for value in values)


def sequence_dimensions(space: SearchSpace) -> dict[str, Dimension]:
    """Every parameter name the sequence form can ever ask for, with its choices or range: what
    a flat encoding (every parameter sampled every trial) would enumerate. A fixed key is never
    asked, so it is not listed."""
    if space.form != "sequence":
        raise ValueError(f"{space.path} uses the {space.form} form; sequence_dimensions needs the sequence form")
    found: dict[str, Dimension] = {}

    def add(name: str, dim: Dimension) -> None:
        if dim.searched:
            found[name] = dim

    add("sequence.layers", space.dimension("sequence", "layers"))
    for position in range(1, _largest(space.dimension("sequence", "layers")) + 1):
        add(f"layer{position}.kind", space.dimension("sequence", "kinds"))
        for kind in space.kinds():
            for key in KIND_TABLES[kind]:
                add(setting_name(position, kind, key), space.dimension(kind, key))
    dense_layers = space.dimension("head", "dense_layers")
    add("head.dense_layers", dense_layers)
    for index in range(1, _largest(dense_layers) + 1):
        add(dense_name(index), space.dimension("head", "dense_units"))
    for key in SEQUENCE_TABLES["head"]:
        if key not in ("dense_layers", "dense_units") and (key != "activation" or _largest(dense_layers) > 0):
            add(f"head.{key}", space.dimension("head", key))
    optimizer, schedule = space.dimension("train", "optimizer"), space.dimension("train", "schedule")
    for key in SEQUENCE_TABLES["train"]:
        if key == "momentum" and not _can_be(optimizer, lambda value: value == "sgd"):
            continue
        if key == "warmup" and not _can_be(schedule, lambda value: value != "constant"):
            continue
        add(f"train.{key}", space.dimension("train", key))
    for key in SEQUENCE_TABLES["augment"]:
        add(f"augment.{key}", space.dimension("augment", key))
    return found


def unchosen_kind_problems(raw: dict[str, Any]) -> list[str]:
    """A setting of a kind that no position can be is a mistake (a typo in kinds, or a kind
    dropped from it): one located problem per such key (unknown keys are reported as unknown)."""
    table = raw["sequence"]
    declared = table.get("kinds", SEQUENCE_TABLES["sequence"]["kinds"].default) if isinstance(table, dict) else None
    if not isinstance(declared, (list, str)):
        return []  # kinds itself is wrong, and reported as such
    kinds = tuple(declared) if isinstance(declared, list) else (declared,)
    problems = []
    for kind, rules in KIND_TABLES.items():
        content = raw.get(kind)
        if kind in kinds or not isinstance(content, dict):
            continue
        wheres = [f"[{kind}] {key}" for key in content if key in rules] or [f"[{kind}]"]
        shown = ", ".join(str(name) for name in kinds)
        problems += [
            f"{where}: {kind} is not one of [sequence] kinds ({shown}); add {kind!r} to kinds or drop [{kind}]"
            for where in wheres
        ]
    return problems


def sequence_rows(space: SearchSpace) -> list[tuple[str, str, str, str]]:
    """(name as stored, kind, values, meaning) for `space show`: every setting of every kind a
    position may be, the undeclared ones with their defaults."""
    rows = []
    for table, rules in SEQUENCE_TABLES.items():
        if table in KIND_TABLES and table not in space.kinds():
            continue
        for key, rule in rules.items():
            dim = space.dimensions[table].get(key)
            if dim is None and table not in KIND_TABLES:
                continue
            values = dim.describe() if dim is not None else f"{rule.default!r} (default)"
            searched = dim is not None and dim.searched
            if table == "sequence":
                name = "sequence.layers" if key == "layers" else "layer<i>.kind"
            elif table in KIND_TABLES:
                name = setting_name("<i>", table, key)
            elif (table, key) == ("head", "dense_units"):
                name = "head.dense<i>.units"
            else:
                name = f"{table}.{key}"
            rows.append((name, dim.kind if searched and dim is not None else "fixed", values, rule.meaning))
    return rows


def misplaced_table(table: str, form: str, top_level: tuple[str, ...]) -> str:
    """Why a table does not belong here: it is the other form's, or it is not a table at all."""
    if form == "sequence" and table in ("network", "stage"):
        return (
            f"[{table}]: a table of the stage form, but [sequence] makes this file the sequence form; "
            f"a space uses one form: drop [{table}], or drop [sequence] and the layer-kind tables"
        )
    if form == "stages" and table in KIND_TABLES:
        return (
            f"[{table}]: a table of the sequence form; add [sequence] with kinds = [...] and drop [network] "
            f"and [stage] to use it, or drop [{table}]"
        )
    from cnnsearch.space.parse import _suggest

    return f"[{table}]: unknown table{_suggest(table, top_level)}; valid tables: {', '.join(top_level)}"

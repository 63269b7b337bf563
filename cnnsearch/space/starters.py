"""Owns a space's starters: whole candidates written in the space file (`[[starter]]` tables)
that a search trains first, so that a short search has a known-good network from its first
minutes. AutoKeras tries its known-good initial settings first and SMAC its default
configuration for the same reason: with a budget of a dozen trained candidates, a search that
starts at random spends most of them before its model of the space can help.

A starter names the value of every parameter its candidate asks for, grouped by the part of
the parameter name before the dot (`stage1 = { convs = 2 }` is `stage1.convs`). It is checked
by replaying the space's own sampler with those values: a missing value, a value outside its
dimension and a value the candidate never asks for are each reported with the starter's number.

Knows the spec and the space; no torch, no Optuna.
"""

from __future__ import annotations

import difflib
import math
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from cnnsearch.space.parse import SearchSpace
    from cnnsearch.spec import Architecture

STARTER_TABLE = "starter"  # [[starter]]: an array of tables, one per starter


class _Replay:
    """Answers a sampler's questions from a starter's values, noting every problem on the way."""

    def __init__(self, values: dict[str, Any]) -> None:
        self.values = values
        self.asked: dict[str, Any] = {}  # name -> the value as the space declares it
        self.problems: list[str] = []

    def _given(self, name: str, allowed: str) -> tuple[bool, Any]:
        if name not in self.values:
            self.problems.append(f"{name} is not set; it may be {allowed}")
            return False, None
        return True, self.values[name]

    def suggest_categorical(self, name: str, choices: Any) -> Any:
        choices = list(choices)
        allowed = "one of " + ", ".join(_toml(choice) for choice in choices)
        found, value = self._given(name, allowed)
        # bool is an int in Python: true must not match 1, nor 1 match true.
        same = [c for c in choices if isinstance(c, bool) == isinstance(value, bool) and c == value]
        if found and not same:
            self.problems.append(f"{name} = {_toml(value)} is not {allowed}")
        answer = same[0] if same else choices[0]
        self.asked[name] = answer
        return answer

    def suggest_int(self, name: str, low: int, high: int, *, step: int = 1, log: bool = False) -> int:
        allowed = f"a whole number from {low} to {high}" + (f" in steps of {step}" if step != 1 else "")
        found, value = self._given(name, allowed)
        good = isinstance(value, int) and not isinstance(value, bool) and low <= value <= high
        if found and (not good or (value - low) % step):
            self.problems.append(f"{name} = {_toml(value)} is not {allowed}")
        answer = value if found and good else low
        self.asked[name] = answer
        return answer

    def suggest_float(
        self, name: str, low: float, high: float, *, step: float | None = None, log: bool = False
    ) -> float:
        allowed = f"a number from {low:g} to {high:g}" + (f" in steps of {step:g}" if step else "")
        found, value = self._given(name, allowed)
        good = isinstance(value, (int, float)) and not isinstance(value, bool) and low <= value <= high
        if found and good and step:
            units = (value - low) / step
            good = math.isclose(units, round(units), abs_tol=1e-9)
        if found and not good:
            self.problems.append(f"{name} = {_toml(value)} is not {allowed}")
        answer = float(value) if found and good else float(low)
        self.asked[name] = answer
        return answer


def _toml(value: Any) -> str:
    """A value as the space file writes it (true, "relu", 0.003)."""
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, str):
        return f'"{value}"'
    return f"{value:g}" if isinstance(value, float) else str(value)


def _flatten(number: int, starter: Any) -> tuple[dict[str, Any], list[str]]:
    """A starter's tables as parameter names (`stage1.convs`; nested tables of the sequence form,
    `layer1 = { conv = { filters = 32 } }`, as `layer1.conv.filters`), with its shape's problems."""
    where = f"[[{STARTER_TABLE}]] {number}"
    if not isinstance(starter, dict):
        return {}, [f"{where}: must be a table of parameter groups, e.g. network = {{ stages = 2 }}"]
    values: dict[str, Any] = {}
    problems = []

    def walk(prefix: str, content: dict[str, Any]) -> None:
        for key, value in content.items():
            name = f"{prefix}.{key}"
            if isinstance(value, dict):
                walk(name, value)
            else:
                values[name] = value

    for group, content in starter.items():
        if not isinstance(content, dict):
            problems.append(
                f"{where}: {group} must be a table of values, e.g. {group} = {{ key = value }}, "
                f"but got {_toml(content)}"
            )
            continue
        walk(group, content)
    return values, problems


def parse_starters(raw: Any, space: SearchSpace) -> tuple[tuple[dict[str, Any], ...], list[str]]:
    """The starters of a space file (`raw`: its [[starter]] value) as Optuna parameter dicts, in
    the order written, and every problem found in them (each names its starter by number)."""
    from cnnsearch.space.sample import sample_architecture

    if raw is None:
        return (), []
    if not isinstance(raw, list):
        return (), [f"{STARTER_TABLE}: write each starter as its own [[{STARTER_TABLE}]] table"]
    starters: list[dict[str, Any]] = []
    problems: list[str] = []
    for number, starter in enumerate(raw, start=1):
        values, shape_problems = _flatten(number, starter)
        if shape_problems:
            problems.extend(shape_problems)
            continue
        replay = _Replay(values)
        try:
            sample_architecture(space, replay)
        except Exception as error:  # a combination the space's sampler cannot build
            replay.problems.append(f"cannot be built: {error}")
        unasked = [name for name in replay.asked if name not in values]
        for name in (name for name in values if name not in replay.asked):
            close = difflib.get_close_matches(name, unasked, n=1)
            hint = f"; did you mean {close[0]!r}?" if close else "; remove it"
            replay.problems.append(
                f"{name} is never asked for by this candidate (a fixed key, or a part it does not have){hint}"
            )
        problems.extend(f"[[{STARTER_TABLE}]] {number}: {problem}" for problem in replay.problems)
        if not replay.problems:
            starters.append(replay.asked)
    return tuple(starters), problems


def starter_architectures(space: SearchSpace) -> list[Architecture]:
    """The candidates the space's starters sample to, in order (for `space show`)."""
    from cnnsearch.space.sample import sample_architecture

    return [sample_architecture(space, _Replay(params)) for params in space.starters]
